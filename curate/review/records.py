"""What the review App shows for each manifest row, as plain records: testable without FiftyOne.

One record per row (kept *and* dropped) with every sample field, boxes as
FiftyOne's relative ``[x, y, w, h]`` (:func:`sample_records`), and what the
App shows for it (:func:`media_kind`): the file itself, a preview, or a
placeholder card. :mod:`curate.review.app` turns the records into FiftyOne
samples; ``curate review`` (:mod:`curate.stages.review`) runs both.

    >>> from pathlib import Path
    >>> dataset_name(Path("/data/ws/shoes")).startswith("curate-shoes-")
    True
    >>> xyxy_px_to_fo_box(0, 0, 50, 100, 100, 200)
    [0.0, 0.0, 0.5, 0.5]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

FACE_ORIGIN = "faces"  # annotations.parquet rows with this origin are face boxes

# Formats every current browser shows in an <img> as-is (MPO is a JPEG with extra frames).
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "ICO", "AVIF"})
MIME_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
              "WEBP": "image/webp", "BMP": "image/bmp", "ICO": "image/x-icon", "AVIF": "image/avif"}

# Scalar sample fields copied from the manifest (besides filepath and the label fields).
STR_FIELDS = ("sample_id", "path", "origin_path", "rel_path", "source", "split", "status", "reason",
               "detail", "decided_by", "label_origin", "dup_group", "duplicate_of", "format",
               "parent_id", "parent_filepath", "transform", "media", "record_hash")
INT_FIELDS = ("width", "height")
BOOL_FIELDS = ("label_conflict", "is_representative")


# -- names -----------------------------------------------------------------

def dataset_name(ws_root: Path) -> str:
    """The FiftyOne dataset of a workspace: ``curate-<folder>-<8 hex of the absolute path>``.

    Stable for one folder, different for two folders with the same name.

        >>> dataset_name(Path("/a/ws")) == dataset_name(Path("/a/ws"))
        True
        >>> dataset_name(Path("/a/ws")) != dataset_name(Path("/b/ws"))
        True
    """
    root = os.path.abspath(ws_root)
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(root).name) or "ws"
    return f"curate-{folder}-{hashlib.sha1(root.encode()).hexdigest()[:8]}"


# -- records and boxes ------------------------------------------------------

def xyxy_px_to_fo_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> list[float]:
    """Pixel ``xyxy`` in a ``width`` x ``height`` image -> FiftyOne's relative ``[x, y, w, h]``.

        >>> xyxy_px_to_fo_box(10, 20, 60, 120, 200, 400)
        [0.05, 0.05, 0.25, 0.25]
    """
    return [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height]


def py_value(value: Any) -> Any:
    """A manifest cell as a plain Python value (pandas NA/NaN -> None, numpy -> builtins)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # lists and other containers are not NA
        pass
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class Media:
    """What the App shows for a row: a file, how it was chosen, and its size in pixels."""

    filepath: str
    kind: str  # original, preview, placeholder
    width: int
    height: int
    mime_type: str
    size_bytes: int | None = None


def media_kind(row: Mapping[str, Any]) -> str:
    """``original``, ``preview`` or ``placeholder`` for one manifest row (see the module docstring).

        >>> media_kind({"width": 640, "height": 480, "format": "JPEG", "exif_orientation": 1,
        ...             "reason": None, "path": __file__})
        'original'
    """
    width, height, reason = py_value(row.get("width")), py_value(row.get("height")), py_value(row.get("reason"))
    # too_large: a decode is the danger; worker_crashed: its decode killed a worker process (issue 18)
    if width is None or height is None or reason in ("too_large", "worker_crashed") \
            or not os.path.isfile(str(row.get("path"))):
        return "placeholder"
    if py_value(row.get("format")) in BROWSER_FORMATS and py_value(row.get("exif_orientation")) in (None, 1):
        return "original"
    return "preview"


def sample_records(
    manifest: pd.DataFrame, annotations: pd.DataFrame, media: Mapping[str, Media]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One plain dict per manifest row with every sample field (boxes as relative ``[x, y, w, h]``).

    ``media`` maps sample_id -> :class:`Media`. Returns (records, problems);
    boxes of a row without a known size cannot be placed and are reported.
    """
    paths = dict(zip(manifest["sample_id"], manifest["path"], strict=True))
    boxes_by_id: dict[str, list[dict[str, Any]]] = {}
    for b in annotations.to_dict("records"):
        boxes_by_id.setdefault(b["sample_id"], []).append(b)
    records, problems = [], []
    for row in manifest.to_dict("records"):
        sid = row["sample_id"]
        rec: dict[str, Any] = {k: py_value(row.get(k)) for k in STR_FIELDS + INT_FIELDS + BOOL_FIELDS if k in row}
        m = media[sid]
        parent = rec.get("parent_id")
        rec.update(
            filepath=m.filepath, media=m.kind,
            label=py_value(row["label"]),
            is_representative=rec.get("dup_group") is not None and rec.get("dup_group") == sid,
            label_conflict=bool(rec.get("label_conflict")),
            parent_filepath=paths.get(parent) if parent else None,
            metadata={"width": m.width, "height": m.height, "mime_type": m.mime_type, "size_bytes": m.size_bytes},
            faces=[], boxes=[],
        )
        width, height = rec.get("width"), rec.get("height")
        for b in boxes_by_id.get(sid, []):
            if not width or not height:
                problems.append(f"{sid}: box {b['label']} not shown: the image size is unknown")
                continue
            det = {
                "label": b["label"],
                "bounding_box": xyxy_px_to_fo_box(b["x1"], b["y1"], b["x2"], b["y2"], width, height),
                "confidence": py_value(b.get("score")),
                "origin": py_value(b.get("origin")),
                "iscrowd": bool(b.get("iscrowd")),
            }
            rec["faces" if b.get("origin") == FACE_ORIGIN else "boxes"].append(det)
        # A refresh rewrites only the samples whose record changed.
        rec["record_hash"] = None
        key = json.dumps(rec, sort_keys=True, default=str, separators=(",", ":"))
        rec["record_hash"] = hashlib.sha1(key.encode()).hexdigest()[:16]
        records.append(rec)
    return records, problems
