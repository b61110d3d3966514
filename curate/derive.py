"""Derived images: encoding, storing in ``objects/``, and their manifest rows.

Every stage that makes new images (face crops, squares, augmented copies)
goes through this module, so lineage is recorded the same way everywhere:

- the image is stored by content hash in ``WS/objects/`` (re-running a
  transform with the same options writes nothing new);
- the derived row's ``sample_id`` is a hash of the parent id and the transform
  record, so re-running never duplicates rows;
- ``parent_id`` points at the parent row, ``origin_path`` at the source file,
  and ``transform`` holds a JSON record of what was done (e.g. crop box and
  pad offsets in the parent's pixel frame).

Encoding: sources stored losslessly (PNG, TIFF, BMP, WebP-lossless, GIF...)
give PNG objects; JPEG-like sources give JPEG at ``quality`` (default 95,
4:4:4 chroma), so no stage adds a second round of heavy loss.

**The transform-stage skeleton** (``curate faces``, ``curate square``,
``curate crop``), shared so the rules cannot drift apart between them:

1. inputs: :func:`curate.lineage.transform_inputs` with :data:`REREAD` (plus
   the stage's own reasons), one review rule for every transform;
2. plan, per parent (:func:`parent_dicts`): the derived rows' identities
   (:func:`derived_id`); a parent whose rows are all stored already
   (:func:`all_stored`) gets a ``DeriveResult(reused=ids)`` and no pixel work;
3. per image, a plain function of one file run by ``parallel.stream_map``:
   :func:`open_parent` (``unreadable`` / ``missing_file``, and a size check),
   :func:`store_derived`, :func:`with_hashes`; it returns a
   :class:`DeriveResult`; a worker that died on the file gives
   :meth:`DeriveResult.crashed` (``worker_crashed``);
4. apply, table operations only (:class:`Outcome`): a failed parent is
   dropped with its reason (:meth:`Outcome.failed`), produced rows are
   collected (:meth:`Outcome.add`), then :func:`commit` sets the decisions,
   adds the new rows, carries boxes into them, keeps again the rows a re-run
   produced again and marks stale those it no longer produces.

    >>> encode_image_format("PNG")
    'png'
    >>> encode_image_format("JPEG")
    'jpg'
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from PIL import Image

from curate.errors import CurateError
from curate.workspace import Workspace

if TYPE_CHECKING:  # pandas is imported where tables are built: pool workers that store images start without it
    import pandas as pd

    from curate.lineage import Decision
    from curate.parallel import WorkerCrash

@dataclass
class DeriveResult:
    """What a per-image transform returns for one parent row.

    ``rows``: the derived rows it stored (manifest dicts); ``error`` and
    ``reason`` (``unreadable``, ``missing_file``, ``worker_crashed``) when the
    parent could not be used, in which case ``rows`` is empty; ``reused``: the
    ids of derived rows already stored, when the plan found nothing to make.

        >>> DeriveResult("p1", reused=["c1"]).produced_ids(), DeriveResult("p2", rows=[{"sample_id": "c2"}]).produced_ids()
        (['c1'], ['c2'])
    """

    sample_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    reused: list[str] | None = None

    def produced_ids(self) -> list[str]:
        """The derived rows this parent has after the run: the reused ones, else the new ones."""
        return self.reused or [r["sample_id"] for r in self.rows]

    @classmethod
    def crashed(cls, parent: Mapping[str, Any], crash: WorkerCrash, doing: str, command: str) -> Self:
        """The result for a parent whose worker process died on it every time: dropped as ``worker_crashed``.

        ``doing`` says what the worker was doing ("squaring it"); ``command`` is the stage to re-run.
        """
        return cls(parent["sample_id"], reason="worker_crashed",
                   error=f"{parent['path']}: {crash.message()} while {doing} (re-run `curate {command}` to try again)")


# Reasons a transform gives the inputs it could not use (or replaced); a re-run reads those rows again
# (a worker crash need not be the file's fault). Stages add their own (faces: no_face).
REREAD = ("superseded", "unreadable", "missing_file", "worker_crashed")

# The fields of a parent row a per-image function needs (sent to pool workers as plain dicts).
PARENT_FIELDS = ("sample_id", "source", "path", "origin_path", "sha256", "label", "label_origin", "split",
                 "rel_path", "format")


LOSSY_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "AVIF", "JPEG2000"})
DEFAULT_QUALITY = 95


def encode_image_format(source_format: str | None) -> str:
    """File extension derived images of a source with this Pillow format get."""
    return "jpg" if (source_format or "").upper() in LOSSY_FORMATS else "png"


def encode_image(img: Image.Image, ext: str, quality: int = DEFAULT_QUALITY) -> bytes:
    buf = io.BytesIO()
    if ext == "jpg":
        img.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    else:
        img.save(buf, format="PNG", compress_level=1)  # fast; PNG is lossless at any level
    return buf.getvalue()


def derived_id(parent_id: str, transform: dict[str, Any]) -> str:
    """Stable id for the row made from ``parent_id`` by ``transform``."""
    key = json.dumps(transform, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(f"{parent_id}\0{key}".encode()).hexdigest()[:16]


def store_derived(
    ws: Workspace,
    parent: pd.Series | dict[str, Any],
    img: Image.Image,
    transform: dict[str, Any],
    *,
    layout: str,
    quality: int = DEFAULT_QUALITY,
    ext: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Encode ``img``, store it in objects/, and return its manifest row (a dict).

    ``transform`` must describe the operation fully (name and parameters, in
    the parent's pixel frame), because it is part of the row's identity.
    """
    ext = ext or encode_image_format(parent.get("format") if hasattr(parent, "get") else None)
    data = encode_image(img, ext, quality)
    path, digest = ws.put_object(data, ext)
    record = {**transform, "encoding": {"ext": ext, "quality": quality if ext == "jpg" else None}}
    parent_label = parent["label"] if label is None else label
    return {
        "sample_id": derived_id(str(parent["sample_id"]), transform),
        "source": parent["source"],
        "path": str(path),
        "origin_path": parent["origin_path"],
        "parent_id": parent["sample_id"],
        "sha256": digest,
        "width": img.width,
        "height": img.height,
        "label": parent_label,
        "label_origin": parent.get("label_origin") if label is None else layout,
        "split": parent["split"],
        "status": "kept",
        "reason": None,
        "duplicate_of": None,
        "rel_path": parent["rel_path"],
        "layout": layout,
        "file_size": len(data),
        "mtime_ns": None,
        "format": "JPEG" if ext == "jpg" else "PNG",
        "mode": img.mode,
        "n_frames": 1,
        "exif_orientation": None,
        "detail": None,
        "decided_by": layout,
        "phash": None,
        "dhash": None,
        "hash_version": None,
        "dup_group": None,
        "label_conflict": False,
        "transform": json.dumps(record, sort_keys=True, default=str),
    }


def with_hashes(row: dict[str, Any], img: Image.Image) -> dict[str, Any]:
    """Fill a derived row's perceptual hashes from its (displayed) image."""
    from curate.hashing import HASH_VERSION, compute_hashes, hash_thumbnail

    row.update(compute_hashes(hash_thumbnail(img)))
    row["hash_version"] = HASH_VERSION
    return row


def upsert_rows(manifest: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Add derived rows. A row whose sample_id already exists (same parent, same
    transform, so same image) is left as it is, so decisions made on it stand."""
    import pandas as pd

    from curate.schema import MANIFEST_COLUMNS, conform

    existing = set(manifest["sample_id"])
    new_rows = [r for r in rows if r["sample_id"] not in existing]
    if not new_rows:
        return manifest
    return conform(pd.concat([manifest, pd.DataFrame(new_rows)], ignore_index=True), MANIFEST_COLUMNS)


def carry_boxes_into_crops(ann: pd.DataFrame, rows: list[dict[str, Any]], created: set[str]) -> pd.DataFrame:
    """Boxes of each parent, moved into the frames of its new crops (``crop_xyxy`` of their transform).

    Boxes are clipped to the crop; boxes with no area inside it are not
    carried. Only rows in ``created`` get boxes, so a re-run never doubles them.
    One gather over the parents' boxes, not a table per crop (a per-crop
    pandas copy took 20 % of `curate crop`).
    """
    import numpy as np
    import pandas as pd

    from curate.geometry import boxes_into_crop

    todo = [r for r in rows if r["sample_id"] in created]
    if not len(ann) or not todo:
        return ann
    parent_ids = ann["sample_id"].to_numpy(dtype=object)
    positions: dict[str, list[int]] = {}
    wanted = {r["parent_id"] for r in todo}
    for i in np.flatnonzero(ann["sample_id"].isin(wanted).to_numpy()):
        positions.setdefault(parent_ids[i], []).append(int(i))
    xyxy = ann[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
    take: list[np.ndarray] = []
    moved: list[np.ndarray] = []
    owner: list[str] = []
    for r in todo:
        pos = positions.get(r["parent_id"])
        if not pos:
            continue
        idx = np.asarray(pos)
        boxes, keep = boxes_into_crop(xyxy[idx], json.loads(r["transform"])["crop_xyxy"])
        take.append(idx[keep])
        moved.append(boxes[keep])
        owner += [r["sample_id"]] * int(keep.sum())
    if not owner:
        return ann
    extra = ann.iloc[np.concatenate(take)].copy()
    extra[["x1", "y1", "x2", "y2"]] = np.concatenate(moved)
    extra["sample_id"] = owner
    return pd.concat([ann, extra], ignore_index=True)


# -- the transform-stage skeleton: plan, per image, apply ---------------------------------------


def parent_dicts(rows: pd.DataFrame, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The :data:`PARENT_FIELDS` (and ``extra`` columns) of each row, nulls as None (to_dict: iterrows is
    slow at scale)."""
    sub = rows[[*PARENT_FIELDS, *extra]].astype(object)
    return sub.where(sub.notna(), None).to_dict("records")


def stored_paths(manifest: pd.DataFrame) -> dict[str, str]:
    """sample_id -> path of every row, to find derived rows made by an earlier run."""
    return dict(zip(manifest["sample_id"], manifest["path"], strict=True))


def all_stored(ids: Iterable[str], paths: Mapping[str, str]) -> bool:
    """Whether every derived row in ``ids`` is in the manifest and its object is on disk (nothing to make)."""
    return all(i in paths and Path(paths[i]).exists() for i in ids)


def open_parent(res: DeriveResult, parent: Mapping[str, Any], ws_root: str,
                expected_wh: Sequence[int] | None = None) -> Image.Image | None:
    """Decode a parent in its displayed frame, or record on ``res`` why it cannot be used (and return None).

    ``unreadable``: the decode failed, or the image is no longer ``expected_wh`` (the size the manifest
    measured, in which its boxes and plan are); ``missing_file``: the file is gone.
    """
    from curate.imageio import load_display
    from curate.locate import missing_file_message

    try:
        img = load_display(parent["path"])
    except CurateError as e:
        if Path(parent["path"]).exists():
            res.error, res.reason = str(e), "unreadable"
        else:
            res.error, res.reason = missing_file_message(parent["path"], parent["source"], ws_root), "missing_file"
        return None
    if expected_wh is not None and img.size != tuple(expected_wh):  # the file changed since it was measured
        res.error = (f"{parent['path']}: size: expected {expected_wh[0]}x{expected_wh[1]} as in the manifest, "
                     f"found {img.width}x{img.height} (re-run `curate ingest`)")
        res.reason = "unreadable"
        return None
    return img


R = TypeVar("R", bound=DeriveResult)


def in_input_order(results: list[R], ids: Iterable[str]) -> list[R]:
    """``results`` sorted by their parent's place among the inputs: a pool returns in any order, the
    manifest must not depend on it."""
    order = {sid: n for n, sid in enumerate(ids)}
    return sorted(results, key=lambda r: order[r.sample_id])


@dataclass
class Outcome:
    """What the apply step of a transform stage decided, before it touches the tables.

    ``decisions``: parent sample_id -> (status, reason, detail, decided_by);
    ``produced``: parent -> the derived ids it has after the run; ``counts``
    holds ``unreadable`` and ``worker_crashed`` (and, after :func:`commit`,
    ``revived`` and ``stale``) next to the stage's own counts.
    """

    layout: str
    decisions: dict[str, Decision] = field(default_factory=dict)
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    produced: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def failed(self, res: DeriveResult) -> bool:
        """Drop a parent that could not be used (with its reason and message); False when it could."""
        if res.error is None:
            return False
        self.decisions[res.sample_id] = ("dropped", res.reason, res.error, self.layout)
        self.warnings.append(res.error)
        self.counts["worker_crashed" if res.reason == "worker_crashed" else "unreadable"] += 1
        return True

    def add(self, res: DeriveResult) -> list[str]:
        """Collect a parent's derived rows (new ones to add); returns the ids it has after the run."""
        ids = res.produced_ids()
        self.new_rows += res.rows
        self.produced[res.sample_id] = ids
        return ids

    def produced_ids(self) -> set[str]:
        return {i for ids in self.produced.values() for i in ids}


Carry = Callable[["pd.DataFrame", list[dict[str, Any]], set[str]], "pd.DataFrame"]


def commit(manifest: pd.DataFrame, annotations: pd.DataFrame, outcome: Outcome, *, stale_parents: Iterable[str],
           carry: Carry | None = carry_boxes_into_crops) -> tuple[pd.DataFrame, pd.DataFrame, set[str]]:
    """Apply an :class:`Outcome` to the tables: ``(manifest, annotations, created ids)``.

    Sets the decisions, adds the new rows (:func:`upsert_rows`), carries the parents' boxes into the rows
    created now (``carry``; None: no boxes), keeps again the stale rows this run produced again, and marks
    stale (with their kept descendants) the rows of this layout made from ``stale_parents`` that it no
    longer produces. Counts ``revived`` and ``stale`` in ``outcome.counts``.
    """
    from curate.lineage import mark_stale, revive, set_decisions

    out = set_decisions(manifest, outcome.decisions)
    before = set(out["sample_id"])
    out = upsert_rows(out, outcome.new_rows)
    created = {r["sample_id"] for r in outcome.new_rows if r["sample_id"] not in before}
    if carry is not None:
        annotations = carry(annotations, outcome.new_rows, created)
    produced = outcome.produced_ids()
    out, outcome.counts["revived"] = revive(out, produced, outcome.layout)
    previous = out[(out["layout"] == outcome.layout) & out["parent_id"].isin(list(stale_parents))]
    out, outcome.counts["stale"] = mark_stale(out, set(previous["sample_id"]) - produced, outcome.layout)
    return out, annotations, created
