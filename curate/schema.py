"""The manifest and annotation table schemas, declared once.

``MANIFEST_COLUMNS`` / ``ANNOTATION_COLUMNS`` are the single source of truth:
the validation run on every write (all problems reported at once), the pyarrow
schemas used to write parquet, and the generated JSON copies in ``schemas/``
all come from them.

    >>> import pandas as pd
    >>> df = empty_manifest()
    >>> list(df.columns)[:4]
    ['sample_id', 'source', 'path', 'origin_path']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from curate.errors import SchemaError

SPLITS = ("train", "val", "test")
STATUSES = ("kept", "dropped")

# The closed set of drop reasons. Each stage may only use these; docs/manifest.md
# explains each one. Order is the order the docs list them in.
REASONS: dict[str, str] = {
    "empty_file": "the file has zero bytes",
    "not_an_image": "the content is not an image (text, HTML, JSON, archive, ...)",
    "unknown_format": "named like an image, but no decoder recognises the bytes (random data, a destroyed header, or a format without a plugin)",
    "unreadable": "recognised as an image format but cannot be decoded",
    "truncated": "the image data ends early; the decoder ran out of bytes",
    "too_small": "shorter side below --min-side pixels",
    "too_large": "more pixels than --max-pixels (decompression-bomb guard), or more bytes than --max-file-mb",
    "special_file": "not a regular file: a FIFO, socket, device or folder named by a list or annotation file (never read)",
    "bad_aspect": "long side / short side above --max-aspect",
    "system_file": "an OS or tool by-product (.DS_Store, Thumbs.db, __MACOSX/, desktop.ini)",
    "hidden": "a hidden file (name starts with '.')",
    "bad_filename": "the file's name is not valid UTF-8 (e.g. unzipped from a Windows code page); rename it to ingest it",
    "broken_link": "a symbolic link whose target does not exist",
    "outside_source": "a symbolic link that points outside the source folder",
    "missing_file": "a list (CSV/TXT/annotation file) names a file that does not exist",
    "worker_crashed": "the worker process died on this file every time it was tried (a decoder crash, the "
                      "out-of-memory killer); detail says how. Not necessarily the file's fault: a re-run tries it again",
    "duplicate": "a copy of another kept row (see duplicate_of)",
    "no_face": "no face found by `curate faces`",
    "rejected_in_review": "tagged `reject` in the review app",
    "balanced_out": "removed by `curate balance` to even out class counts",
    "mislabelled": "flagged as a likely mislabel by `curate labels --find-issues` and dropped with `--apply drop`",
    "superseded": "replaced by derived rows (face crops, box patches with `curate crop --supersede`, squares); see parent_id",
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "str", "int", "bool", "float"
    nullable: bool
    doc: str
    contract: bool = False  # part of the stable contract (docs/manifest.md)


MANIFEST_COLUMNS: tuple[Column, ...] = (
    Column("sample_id", "str", False, "stable, unique id of the row", True),
    Column("source", "str", False, "source name given at ingest (defaults to the source folder's name)", True),
    Column("path", "str", False, "absolute path of the file this row is about", True),
    Column("origin_path", "str", False, "absolute path of the original source file this row descends from", True),
    Column("parent_id", "str", True, "the row this one was derived from", True),
    Column("sha256", "str", True, "sha256 of the file's bytes (null when the file could not be read)", True),
    Column("width", "int", True, "displayed width after EXIF orientation; null when unreadable", True),
    Column("height", "int", True, "displayed height after EXIF orientation; null when unreadable", True),
    Column("label", "str", True, "class label", True),
    Column("split", "str", True, "train, val or test", True),
    Column("status", "str", False, "kept or dropped", True),
    Column("reason", "str", True, "why the row was dropped (closed set, see REASONS); null when kept", True),
    Column("duplicate_of", "str", True, "sample_id of the kept representative of this row's duplicate group", True),
    # --- additions (free to extend; see docs/manifest.md) ---
    Column("rel_path", "str", False, "path relative to the source root (derived rows: the parent's)"),
    Column("label_origin", "str", True, "who set the label: source (the reader), review, or a stage name"),
    Column("layout", "str", False, "layout or format that produced the row, or the transform for derived rows"),
    Column("file_size", "int", True, "size of the file in bytes"),
    Column("mtime_ns", "int", True, "modification time of the file in nanoseconds"),
    Column("format", "str", True, "image format found by content (JPEG, PNG, WEBP, HEIF, ...)"),
    Column("mode", "str", True, "Pillow mode of the stored image (RGB, L, CMYK, RGBA, P, I;16, ...)"),
    Column("n_frames", "int", True, "number of frames (animated GIF/WebP, multi-page TIFF); the first is used"),
    Column("exif_orientation", "int", True, "EXIF orientation tag of the file (1-8), null when absent"),
    Column("detail", "str", True, "human-readable detail for the decision (error text, measured value)"),
    Column("decided_by", "str", True, "the stage that set status/reason (ingest, dedupe, review, ...)"),
    Column("phash", "str", True, "64-bit perceptual hash (DCT), 16 hex digits, of the displayed image"),
    Column("dhash", "str", True, "64-bit difference hash, 16 hex digits, of the displayed image"),
    Column("hash_version", "int", True, "version of the hashing code that filled the hash columns"),
    Column("d4hash", "str", True, "64-bit flip/rotation-aware DCT-sign hash (16 hex digits) of the letterbox-trimmed displayed image; see docs/dedupe.md"),
    Column("crop_hashes", "str", True, "d4hash of 13 sub-windows (curate.hashing.CROP_WINDOWS), 16 hex digits each, concatenated"),
    Column("hash_contrast", "float", True, "grey-level standard deviation of the hashed thumbnail; near 0 the hashes carry no information"),
    Column("keypoints", "str", True, "local features for copy detection (curate.copydetect): up to 128 ORB keypoints "
                                     "with positions and plain and mirrored descriptors, base64; see docs/dedupe.md"),
    Column("contained_in", "str", True, "sample_id of the row whose picture contains this one's (this row is a crop "
                                        "of it, or it is a screenshot/frame holding this row); set by dedupe"),
    Column("match_region", "str", True, "where this row's picture lies in contained_in's: JSON list of 4 [x, y] "
                                        "corners in that row's displayed pixels; set by dedupe"),
    Column("dup_group", "str", True, "sample_id of the representative for every member of a duplicate group"),
    Column("label_conflict", "bool", False, "member of a duplicate group whose rows carry different labels"),
    Column("transform", "str", True, "JSON record of the transform that made a derived row"),
    Column("split_pinned", "bool", False, "split given by `curate ingest --split`: `curate split` never changes it"),
    Column("group", "str", True, "rows that must share a split, e.g. one person (`curate split --group-from`); "
                                 "derived rows carry their source row's value"),
    Column("original_label", "str", True, "the label as first read from the source; set once, never overwritten "
                                          "(`curate labels --unmap/--reset` restores it)"),
    Column("label_detail", "str", True, "why the label differs from original_label: the label map, conflict "
                                        "policy or mislabel fix that set it (each change is also in runs/)"),
    Column("label_issue_score", "float", True, "`curate labels --find-issues`: how likely the label is wrong "
                                               "(0-1, higher = more likely); null when not scored"),
    Column("suggested_label", "str", True, "`curate labels --find-issues`: the class the image's content points "
                                           "to, when it is not its label"),
)

ANNOTATION_COLUMNS: tuple[Column, ...] = (
    Column("sample_id", "str", False, "row of the manifest this box belongs to", True),
    Column("label", "str", False, "box class", True),
    Column("x1", "float", False, "left edge, pixels of the displayed image", True),
    Column("y1", "float", False, "top edge, pixels of the displayed image", True),
    Column("x2", "float", False, "right edge, pixels of the displayed image", True),
    Column("y2", "float", False, "bottom edge, pixels of the displayed image", True),
    Column("score", "float", True, "detector confidence, null for human boxes"),
    Column("origin", "str", True, "where the box came from (coco, yolo, voc, json, csv, faces, augment, ...)"),
    Column("iscrowd", "bool", False, "COCO iscrowd flag"),
    Column("original_label", "str", True, "the box class as first read from its source (`curate labels "
                                          "--unmap/--reset` restores it); null for boxes curate made"),
)

_PANDAS_DTYPES = {"str": "object", "int": "Int64", "bool": "bool", "float": "float64"}
_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_(), "float": pa.float64()}


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.dtype], nullable=c.nullable) for c in columns])


MANIFEST_ARROW = arrow_schema(MANIFEST_COLUMNS)
ANNOTATION_ARROW = arrow_schema(ANNOTATION_COLUMNS)


def _empty(columns: tuple[Column, ...]) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series([], dtype=_PANDAS_DTYPES[c.dtype]) for c in columns})


def empty_manifest() -> pd.DataFrame:
    return _empty(MANIFEST_COLUMNS)


def empty_annotations() -> pd.DataFrame:
    return _empty(ANNOTATION_COLUMNS)


def conform(df: pd.DataFrame, columns: tuple[Column, ...]) -> pd.DataFrame:
    """Return ``df`` with exactly the declared columns, in order, with declared dtypes.

    Missing optional columns are added as null (``False`` for bool). Columns not
    declared are kept at the end, so that a later stage's extras survive.
    """
    out = df.copy()
    for c in columns:
        if c.name not in out.columns:
            out[c.name] = False if c.dtype == "bool" else None
        if c.dtype == "int":
            out[c.name] = pd.array(out[c.name], dtype="Int64")
        elif c.dtype == "float":
            out[c.name] = pd.to_numeric(out[c.name], errors="coerce").astype("float64")
        elif c.dtype == "bool":
            out[c.name] = out[c.name].fillna(False).astype(bool)
        else:
            s = out[c.name].astype(object)
            out[c.name] = s.where(s.notna(), None)
    declared = [c.name for c in columns]
    extra = [c for c in out.columns if c not in declared]
    return out[declared + extra].reset_index(drop=True)


def _problems_common(df: pd.DataFrame, columns: tuple[Column, ...]) -> list[str]:
    problems: list[str] = []
    for c in columns:
        if c.name not in df.columns:
            problems.append(f"column {c.name!r}: expected present, found missing")
            continue
        if not c.nullable:
            n = int(df[c.name].isna().sum())
            if n:
                problems.append(f"column {c.name!r}: expected no nulls, found {n}")
    return problems


def _rows(df: pd.DataFrame, mask: pd.Series, limit: int = 5) -> str:
    ids = df.loc[mask, "sample_id"].astype(str).head(limit).tolist()
    more = int(mask.sum()) - len(ids)
    return ", ".join(ids) + (f" and {more} more" if more > 0 else "")


def manifest_problems(df: pd.DataFrame) -> list[str]:
    """Every way ``df`` breaks the manifest contract, all at once (empty if valid)."""
    problems = _problems_common(df, MANIFEST_COLUMNS)
    if problems:
        return problems
    dup = df["sample_id"].duplicated(keep=False)
    if dup.any():
        problems.append(f"sample_id: expected unique, found repeats ({_rows(df, dup)})")
    bad = ~df["status"].isin(STATUSES)
    if bad.any():
        problems.append(f"status: expected one of {STATUSES}, found {sorted(set(df.loc[bad, 'status']))}")
    split = df["split"]
    bad = split.notna() & ~split.isin(SPLITS)
    if bad.any():
        problems.append(f"split: expected one of {SPLITS} or null, found {sorted(set(split[bad]))}")
    reason = df["reason"]
    bad = reason.notna() & ~reason.isin(list(REASONS))
    if bad.any():
        problems.append(f"reason: expected one of the documented reasons, found {sorted(set(reason[bad]))}")
    kept = df["status"] == "kept"
    bad = kept & reason.notna()
    if bad.any():
        problems.append(f"reason: expected null on kept rows, found a reason on {_rows(df, bad)}")
    bad = (df["status"] == "dropped") & reason.isna()
    if bad.any():
        problems.append(f"reason: expected a reason on dropped rows, found none on {_rows(df, bad)}")
    bad = (reason == "duplicate") & df["duplicate_of"].isna()
    if bad.any():
        problems.append(f"duplicate_of: expected set on duplicate rows, found null on {_rows(df, bad)}")
    ids = set(df["sample_id"])
    parents = df["parent_id"].dropna()
    bad_parents = parents[~parents.isin(ids)]
    if len(bad_parents):
        problems.append(f"parent_id: expected an existing sample_id, found {sorted(set(bad_parents))[:5]}")
    for col in ("phash", "dhash", "d4hash"):
        h = df[col].dropna()
        bad_h = h[h.str.len() != 16]
        if len(bad_h):
            problems.append(f"{col}: expected 16 hex digits, found {bad_h.iloc[0]!r}")
    return problems


def annotation_problems(df: pd.DataFrame, manifest: pd.DataFrame | None = None) -> list[str]:
    problems = _problems_common(df, ANNOTATION_COLUMNS)
    if problems:
        return problems
    bad = (df["x2"] < df["x1"]) | (df["y2"] < df["y1"])
    if bad.any():
        problems.append(f"box: expected x1<=x2 and y1<=y2, found {int(bad.sum())} inverted boxes")
    if manifest is not None:
        unknown = ~df["sample_id"].isin(set(manifest["sample_id"]))
        if unknown.any():
            problems.append(
                f"sample_id: expected rows of the manifest, found {int(unknown.sum())} boxes of unknown samples"
            )
    return problems


def validate_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Conform and validate; raise :class:`SchemaError` listing every problem."""
    out = conform(df, MANIFEST_COLUMNS)
    problems = manifest_problems(out)
    if problems:
        raise SchemaError("manifest does not match its schema: " + "; ".join(problems))
    return out


def validate_annotations(df: pd.DataFrame, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    out = conform(df, ANNOTATION_COLUMNS)
    problems = annotation_problems(out, manifest)
    if problems:
        raise SchemaError("annotations do not match their schema: " + "; ".join(problems))
    return out


def json_schema(columns: tuple[Column, ...], title: str) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) describing one row of a table."""
    types = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}
    props: dict[str, Any] = {}
    for c in columns:
        t: Any = types[c.dtype]
        prop: dict[str, Any] = {"type": [t, "null"] if c.nullable else t, "description": c.doc}
        if c.contract:
            prop["x-contract"] = True
        props[c.name] = prop
    if title == "manifest":
        props["status"]["enum"] = list(STATUSES)
        props["split"]["enum"] = [*SPLITS, None]
        props["reason"]["enum"] = [*REASONS, None]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"curate {title} row",
        "type": "object",
        "required": [c.name for c in columns],
        "properties": props,
    }


def schema_files() -> dict[str, str]:
    """The generated files kept in ``schemas/``: name -> text."""
    out = {}
    for name, cols in (("manifest", MANIFEST_COLUMNS), ("annotations", ANNOTATION_COLUMNS)):
        out[f"{name}.schema.json"] = json.dumps(json_schema(cols, name), indent=2) + "\n"
    out["reasons.json"] = json.dumps(REASONS, indent=2) + "\n"
    return out
