"""Boxes across rows: the boxes of dropped duplicates move to the copy that is kept.

When the same picture comes from two sources, one copy is kept and the others
are dropped as ``duplicate``. An export writes only kept rows, so the boxes a
dropped copy carried would be lost. :func:`merge_duplicate_boxes` moves them:

- a duplicate's box that matches a box of the keeper (same class, IoU at
  least ``iou_min``) is the same object and adds nothing;
- one that lies on a keeper's box of another class (IoU at least ``iou_min``)
  is a **conflict**: it is not added, and it is reported (file, classes, IoU)
  so a person can settle it;
- any other box is added to the keeper, with ``origin`` ``dup:<origin>``.

Boxes are moved only between rows whose pixel frames agree: the same
displayed size, or the same aspect ratio (within 1 %), when the box is scaled.
A duplicate of another shape (a crop found by ``curate dedupe``) keeps its boxes
on its own row, and that is reported too. Never silently dropped.

    >>> import pandas as pd
    >>> m = pd.DataFrame({"sample_id": ["a", "b"], "status": ["kept", "dropped"], "reason": [None, "duplicate"],
    ...                   "duplicate_of": [None, "a"], "width": [100, 100], "height": [50, 50],
    ...                   "rel_path": ["a.jpg", "b.jpg"], "source": ["s1", "s2"]})
    >>> ann = pd.DataFrame({"sample_id": ["a", "b", "b"], "label": ["cat", "cat", "dog"],
    ...                     "x1": [0., 1., 60.], "y1": [0., 0., 10.], "x2": [40., 40., 90.], "y2": [40., 40., 40.],
    ...                     "origin": ["coco", "voc", "voc"]})
    >>> out, report = merge_duplicate_boxes(m, ann)
    >>> out[out["sample_id"] == "a"][["label", "origin"]].values.tolist()
    [['cat', 'coco'], ['dog', 'dup:voc']]
    >>> report["added"], report["same"], report["conflicts"]
    (1, 1, [])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DUP_ORIGIN_PREFIX = "dup:"


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4) with every box in ``b`` (M x 4), xyxy."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def merge_duplicate_boxes(manifest: pd.DataFrame, annotations: pd.DataFrame, *, iou_min: float = 0.5
                          ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Annotations with every dropped duplicate's boxes moved to its keeper; and what was done.

    The report has ``added``, ``same`` (already on the keeper), ``conflicts``
    (one line per box on a keeper's box of another class) and ``not_moved``
    (one line per duplicate whose frame differs from its keeper's). Running it
    again adds nothing: moved boxes match themselves.
    """
    report: dict[str, Any] = {"added": 0, "same": 0, "conflicts": [], "not_moved": []}
    if not len(annotations):
        return annotations, report
    dups = manifest[(manifest["reason"] == "duplicate") & manifest["duplicate_of"].notna()]
    dups = dups[dups["sample_id"].isin(set(annotations["sample_id"]))]
    if not len(dups):
        return annotations, report
    info = manifest.set_index("sample_id")[["width", "height", "rel_path", "source", "status"]]
    by_row = {sid: g for sid, g in annotations.groupby("sample_id", sort=False)}
    added: list[pd.DataFrame] = []
    for d in dups.itertuples(index=False):
        keeper = str(d.duplicate_of)
        if keeper not in info.index or info.at[keeper, "status"] != "kept":
            continue
        mine = by_row[d.sample_id]
        kw, kh = info.at[keeper, "width"], info.at[keeper, "height"]
        name = f"{d.source}/{d.rel_path}"
        if pd.isna(kw) or pd.isna(kh) or pd.isna(d.width) or pd.isna(d.height):
            continue
        sx, sy = float(kw) / float(d.width), float(kh) / float(d.height)
        if abs(sx - sy) > 0.01 * max(sx, sy):
            report["not_moved"].append(f"{name}: {len(mine)} boxes stay on this duplicate: its frame "
                                       f"{d.width}x{d.height} does not scale to its keeper's {kw}x{kh}")
            continue
        theirs = pd.concat([by_row.get(keeper, mine.iloc[0:0]), *[a for a in added if a["sample_id"].iat[0] == keeper]])
        boxes = mine[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64) * np.array([sx, sy, sx, sy])
        kept_boxes = theirs[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        overlap = _iou_matrix(boxes, kept_boxes) if len(kept_boxes) else np.zeros((len(boxes), 0))
        new = []
        for i, label in enumerate(mine["label"].astype(str)):
            hits = np.flatnonzero(overlap[i] >= iou_min) if overlap.shape[1] else np.array([], dtype=int)
            same = [j for j in hits if str(theirs["label"].iat[j]) == label]
            if same:
                report["same"] += 1
            elif len(hits):
                j = int(hits[np.argmax(overlap[i][hits])])
                report["conflicts"].append(
                    f"{name}: box {i} ({label}) lies on a {theirs['label'].iat[j]} box of the copy kept "
                    f"(IoU {overlap[i][j]:.2f}); not added: settle the class, e.g. in `curate review`")
            else:
                new.append(i)
        if new:
            part = mine.iloc[new].copy()
            part[["x1", "y1", "x2", "y2"]] = boxes[new]
            part["sample_id"] = keeper
            part["origin"] = [DUP_ORIGIN_PREFIX + str(o) if not str(o).startswith(DUP_ORIGIN_PREFIX) else o
                              for o in part["origin"].fillna("")]
            added.append(part)
            report["added"] += len(new)
    if not added:
        return annotations, report
    return pd.concat([annotations, *added], ignore_index=True), report
