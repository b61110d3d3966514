"""Writing a dataset: the plan, the write, the read-back, and the atomic publish next to ``--out``.

What ``curate export`` and ``curate convert`` share (they are stages, and a stage imports no other stage):
the options (:class:`ExportOptions`, with the format's own options from its declaration), the plan of kept
rows (:func:`plan_export`), the write through the format's writer and its verification by reading the export
back (:func:`write_dataset`, :func:`verify_export`), and the staging folder, publish and recovery
(:func:`export_to`, :func:`publish`, :func:`recover`). docs/formats.md describes what an export guarantees;
:mod:`curate.stages.export` is the stage.

    >>> unique_names(["a/x.jpg", "b/x.jpg", "c/y.png"], ["11111111aa", "22222222bb", "33333333cc"])
    ['x-11111111.jpg', 'x-22222222.jpg', 'y.png']
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from curate.console import terminate_as_interrupt  # noqa: F401  (importable here as before)
from curate.errors import CurateError, ExportError, OptionError
from curate.formats.base import Entry, Format, ReadOptions, WriteOptions, WriteResult
from curate.formats.output import LINK_MODES, image_action
from curate.geometry import Box
from curate.schema import SPLITS
from curate.walk import EXPORT_MARKER
from curate.workspace import utc_now

SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}
BOX_TOLERANCE_FRAC = 1e-6  # read-back boxes must match within this fraction of the image size


@dataclass(frozen=True)
class ExportOptions:
    """What to write and where; every option after ``format`` and ``out`` is keyword-only.

    ``format_options`` are the options the format declares (``curate.formats.REGISTRY[format].options``,
    e.g. ``{"voc_one_based": True}``, ``{"split_dirs": False}``, ``{"json_mapping": "aihub-vehicle-damage"}``);
    an option of another format is refused unless it has its default value.

        >>> ExportOptions("voc", "out", format_options={"voc_one_based": True}).link
        'copy'
    """

    format: str
    out: str | Path
    _: KW_ONLY
    overwrite: bool = False
    force: bool = False  # with overwrite: replace a non-empty --out that is not a curate export
    link: str = "copy"
    verify: bool = True
    default_split: str = "train"
    classes: list[str] | None = None  # class order (ids); default: natural order of the labels used
    format_options: dict[str, Any] = field(default_factory=dict)
    engine: str | None = None  # who writes the images: "local" threads or "ray" workers (None: $CURATE_ENGINE)
    ray_address: str | None = None  # with engine "ray": a cluster to use (None: start a local one)
    dry_run: bool = False  # plan only: count what would be written; write nothing (docs/scale.md)


# -- options and target ------------------------------------------------------

def writer_for(name: str) -> Format:
    from curate.formats import REGISTRY, writable_formats

    fmt = REGISTRY.get(name)
    if fmt is None or fmt.write is None:
        raise OptionError("", field="--format", expected=f"one of {writable_formats()}", found=repr(name))
    return fmt


def check_options(options: ExportOptions) -> None:
    from curate.formats import check_format_options

    writer_for(options.format)
    check_format_options(options.format_options, write=options.format)
    if options.link not in LINK_MODES:
        raise OptionError("", field="--link", expected=f"one of {list(LINK_MODES)}", found=repr(options.link))
    if options.default_split not in SPLITS:
        raise OptionError("", field="--default-split", expected=f"one of {list(SPLITS)}",
                          found=repr(options.default_split))


MARKER_NAME = EXPORT_MARKER  # written into every export: what --overwrite may replace


def check_target(out: Path, overwrite: bool, protected: Sequence[Path] = (), *, force: bool = False,
                 option: str = "--out") -> None:
    """Refuse an ``--out`` that is a file, non-empty (without ``overwrite``), not a curate export
    (with ``overwrite`` but without ``force``), or that could touch a protected path when written or
    replaced (the workspace, the sources: :func:`curate.paths.check_output`)."""
    from curate.paths import check_output

    ws = next((p for p in protected if (p / "curate.json").is_file()), None)
    try:
        check_output(out, sources=[p for p in protected if p != ws], workspace=ws, option=option, folder=True)
    except CurateError as e:
        raise ExportError("", field=e.field, expected=e.expected, found=e.found, hint=e.hint) from None
    if out.exists() and not out.is_dir():
        raise ExportError("", file=out, expected="a folder for the export", found="a file")
    if out.is_dir() and any(out.iterdir()):
        n = sum(1 for _ in out.iterdir())
        if not overwrite:
            raise ExportError("", file=out, expected="an empty or new folder", found=f"a folder with {n} entries",
                              hint="pass --overwrite to replace it")
        if not force and not (out / MARKER_NAME).is_file():
            raise ExportError("", file=out, expected=f"a curate export to replace (one holding {MARKER_NAME})",
                              found=f"a folder with {n} entries that curate did not export",
                              hint="--overwrite replaces only curate's own exports; add --force to replace "
                                   "this folder and everything in it")


# -- staging and publishing ----------------------------------------------------
# Every hidden sibling of --out that curate makes is named
# ``.<out name>.curate-[old-]<pid>-<random>[.tmp]`` and is held by an OS lock
# (flock on the folder) while its process runs: a sibling nobody holds was left
# by a killed run, and the next export or convert to that --out removes it
# (restoring an old export first if --out itself is missing).

_SIBLING = re.compile(r"^\.(?P<name>.+)\.curate-(?P<old>old-)?(?:(?P<pid>\d+)-)?[0-9a-f]{8}(?:\.tmp)?$")


def _hold(path: Path) -> int | None:
    """An open descriptor of folder ``path`` with an exclusive lock; None when someone else holds it."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock


def siblings(out: Path) -> list[Path]:
    """The hidden staging and old-export folders curate made next to ``out`` (held or not)."""
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    found = []
    for n in names:
        m = _SIBLING.match(n)
        if m and m.group("name") == out.name:
            found.append(out.parent / n)
    return sorted(found)


def recover(out: Path) -> list[str]:
    """Clean up after exports to ``out`` that were killed; return what was done (for the summary).

    A sibling that no running process holds is stale. When ``out`` is missing
    (a kill between the two renames of a publish without an atomic exchange),
    the old export it was renamed to is put back first; every other stale
    sibling (staging folders, old exports) is removed.
    """
    done: list[str] = []
    stale: list[tuple[Path, int]] = []
    try:
        for p in siblings(out):
            if p.is_symlink() or not p.is_dir():
                continue
            try:
                fd = _hold(p)
            except (OSError, ImportError):
                continue
            if fd is not None:
                stale.append((p, fd))
        olds = [p for p, _ in stale if _SIBLING.match(p.name).group("old")]  # type: ignore[union-attr]
        if not os.path.lexists(out) and olds:
            back = max(olds, key=lambda p: p.stat().st_mtime_ns)
            os.replace(back, out)
            done.append(f"restored {out} from {back.name}, left by an interrupted export")
        for p, _ in stale:
            if p.exists() and p != out:
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed {p.name}, left by an interrupted export")
    finally:
        for _, fd in stale:
            _release(fd)
    return done


def make_staging(out: Path) -> tuple[Path, int | None]:
    """A hidden folder next to ``out`` (same file system, so the final rename is atomic), and the
    descriptor that holds it (release it with :func:`_release` when done)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.curate-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        fd = _hold(staging)
    except (OSError, ImportError):
        fd = None
    return staging, fd


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    False where the platform or file system cannot; then nothing changed.
    """
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is replaced only with ``overwrite``.

    ``out`` is never missing: an existing one is swapped with the staging
    folder in one atomic exchange, and the old export (now under the staging
    name) removed. Where no exchange exists, ``out`` is renamed aside to a
    held ``.curate-old-`` folder first; a kill between the two renames is
    undone by :func:`recover` at the next export to ``out``.
    """
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
    if not os.path.lexists(out):
        os.replace(staging, out)
        return
    if not overwrite:  # something appeared while we were writing
        raise ExportError("", file=out, expected="an empty or new folder", found="a non-empty folder",
                          hint="pass --overwrite to replace it")
    held = _hold(out) if out.is_dir() and not out.is_symlink() else None
    if out.is_dir() and not out.is_symlink() and held is None:
        raise ExportError("", file=out, expected="an --out no other export is replacing", found="one being replaced",
                          hint="wait for the other curate command to finish")
    try:
        if out.is_dir() and not out.is_symlink() and _exchange(staging, out):
            shutil.rmtree(staging)  # the old export, swapped out
            return
        old = out.parent / f".{out.name}.curate-old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        try:
            os.replace(staging, out)
        except BaseException:
            os.replace(old, out)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    finally:
        _release(held)


# -- the plan ----------------------------------------------------------------

def unique_names(rel_paths: Sequence[str], sample_ids: Sequence[str], exts: Sequence[str] | None = None) -> list[str]:
    """One output file name per row, unique by case-insensitive stem."""
    stems = [Path(p).stem for p in rel_paths]
    exts = list(exts) if exts is not None else [Path(p).suffix for p in rel_paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    names = [f"{s}-{sid[:8]}" if counts[s.lower()] > 1 else s for s, sid in zip(stems, sample_ids, strict=True)]
    taken: dict[str, int] = {}
    for n in names:
        taken[n.lower()] = taken.get(n.lower(), 0) + 1
    # A suffixed name can meet a real one ("x-11111111" next to "x"): fall back to the full id.
    names = [f"{s}-{sid}" if taken[n.lower()] > 1 else n for n, s, sid in zip(names, stems, sample_ids, strict=True)]
    return [n + e for n, e in zip(names, exts, strict=True)]


def output_rel_paths(rows: pd.DataFrame) -> list[str]:
    """The path each row's output name is made from: its ``rel_path``, except that an augmented copy
    made by ``curate balance`` is named ``<stem>-aug<k>`` after its parent (``k``: the copy number its
    ``transform`` records, from 0),
    so copies are visible as such in an export.

    >>> rows = pd.DataFrame({"rel_path": ["cat/a.jpg", "cat/a.jpg"], "layout": ["folder", "augment"],
    ...                      "transform": [None, '{"op": "augment", "copy": 2}']})
    >>> output_rel_paths(rows)
    ['cat/a.jpg', 'cat/a-aug2.jpg']
    """
    import json

    from curate.lineage import AUGMENT_LAYOUT

    out = []
    for rel, layout, transform in zip(rows["rel_path"].astype(str), rows["layout"], rows["transform"], strict=True):
        if layout == AUGMENT_LAYOUT and isinstance(transform, str):
            copy = json.loads(transform).get("copy")
            p = Path(rel)
            rel = str(p.with_name(f"{p.stem}-aug{copy}{p.suffix}"))
        out.append(rel)
    return out


def plan_export(manifest: pd.DataFrame, annotations: pd.DataFrame | None, default_split: str = "train"
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(plan, boxes): the kept rows with split, output name and action; their boxes."""
    kept = manifest[manifest["status"] == "kept"].copy()
    if not len(kept):
        raise ExportError("", field="status", expected="at least one kept row to export", found="none",
                          hint="see `curate status WS`")
    no_size = kept["width"].isna() | kept["height"].isna()
    if no_size.any():
        raise ExportError("", field="width/height", expected="a probed size on every kept row",
                          found=f"{int(no_size.sum())} rows without one", hint="re-run `curate ingest`")
    kept["split"] = kept["split"].where(kept["split"].notna(), default_split)
    kept["_order"] = kept["split"].map(SPLIT_ORDER).fillna(len(SPLIT_ORDER))
    kept = kept.sort_values(["_order", "rel_path", "sample_id"], kind="mergesort").drop(columns="_order")
    actions, exts, whys = [], [], []
    for row in kept[["path", "format", "exif_orientation"]].itertuples(index=False):
        orientation = None if pd.isna(row.exif_orientation) else int(row.exif_orientation)
        action, ext, why = image_action(row.format if isinstance(row.format, str) else None, orientation,
                                        Path(row.path).suffix)
        actions.append(action)
        exts.append(ext)
        whys.append(why)
    kept["action"], kept["why"] = actions, whys
    kept["name"] = unique_names(output_rel_paths(kept), kept["sample_id"].tolist(), exts)
    kept["width"] = kept["width"].astype("int64")
    kept["height"] = kept["height"].astype("int64")
    cols = ["sample_id", "path", "origin_path", "rel_path", "split", "label", "width", "height", "mode",
            "file_size", "sha256", "action", "why", "name"]
    plan = kept[cols].reset_index(drop=True)
    ann = annotations if annotations is not None else pd.DataFrame(columns=["sample_id"])
    boxes = ann[ann["sample_id"].isin(set(plan["sample_id"]))].reset_index(drop=True) if len(ann) else ann.iloc[0:0]
    if len(boxes) and boxes["label"].isna().any():
        raise ExportError("", field="annotations.label", expected="a label on every box",
                          found=f"{int(boxes['label'].isna().sum())} boxes without one")
    return plan, boxes


# -- write and verify --------------------------------------------------------

def write_options(options: ExportOptions) -> WriteOptions:
    from curate.formats import options_for

    extra: dict[str, Any] = options_for(options.format, "write", options.format_options)
    if options.classes is not None:
        extra["classes"] = list(options.classes)
    return WriteOptions(link=options.link, default_split=options.default_split, extra=extra)


def write_dataset(plan: pd.DataFrame, boxes: pd.DataFrame, target: Path, options: ExportOptions) -> dict[str, Any]:
    """Write ``plan`` into the (staging) folder ``target`` and verify it; return the summary."""
    fmt = writer_for(options.format)
    assert fmt.write is not None  # writer_for checked it; a registry invariant
    from curate.engine import engine_scope

    with engine_scope(options.engine, options.ray_address):  # the format's FileWriter places the images there
        result = fmt.write(plan, boxes, target, write_options(options))
    checked = 0
    if options.verify:
        problems, checked = verify_export(fmt, plan, boxes, target, result, options)
        stale = [p for p in problems if CHANGED in p]
        if stale:
            shown = "; ".join(stale[:5]) + (f"; and {len(stale) - 5} more" if len(stale) > 5 else "")
            raise ExportError(f"{len(stale)} source files changed since ingest: {shown}", file=options.out,
                              hint="nothing was written; re-run `curate ingest` on their sources to record the "
                                   "files as they are now, then export again")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise ExportError(f"the export did not read back as written ({len(problems)} differences): {shown}",
                              file=options.out, hint="nothing was written; see docs/formats.md, Verification")
    splits = plan["split"].value_counts()
    summary: dict[str, Any] = {
        "format": options.format,
        "out": str(Path(options.out).absolute()),
        "images": len(plan),
        "boxes": len(boxes),
        "splits": {s: int(splits[s]) for s in sorted(splits.index, key=lambda s: SPLIT_ORDER.get(s, 9))},
        "classes": len(result.classes),
        {"copy": "copied", "hardlink": "hardlinked", "symlink": "symlinked"}[options.link]:
            int((plan["action"] == "link").sum()),
        "reencoded": {str(k): int(v) for k, v in plan.loc[plan["action"] == "encode", "why"].value_counts().items()},
        "verified": f"{checked} images read back" if options.verify else "skipped (--no-verify)",
    }
    if result.warnings:
        summary["warnings"] = list(result.warnings)
    summary["_files"] = result.files
    summary["_classes"] = result.classes
    return summary


def _displayed_size(path: str) -> tuple[int, int] | None:
    from PIL import Image

    from curate.imageio import displayed_size, exif_orientation, register_openers

    register_openers()
    try:
        with Image.open(path) as im:
            return displayed_size(im.size, exif_orientation(im))
    except Exception:  # an unreadable export file is reported as a difference
        return None


def _corners(b: Box) -> tuple[str | None, float, float, float, float]:
    return b.label, b.x1, b.y1, b.x2, b.y2  # one tuple per box, not two per comparison (dataclass order)


def boxes_match(want: list[Box], got: list[Box], wh: tuple[int, int]) -> Box | None:
    """None when every wanted box has its own read-back box (same label, each edge within
    BOX_TOLERANCE_FRAC of the image size); else the first wanted box left without one.

    Sorted order pairs them in one pass; boxes closer than the tolerance can sort
    differently on the two sides, so a failed pass falls back to a greedy search.
    """
    tx, ty = BOX_TOLERANCE_FRAC * wh[0], BOX_TOLERANCE_FRAC * wh[1]

    def close(a: Box, b: Box) -> bool:
        return (a.label == b.label and abs(a.x1 - b.x1) <= tx and abs(a.y1 - b.y1) <= ty
                and abs(a.x2 - b.x2) <= tx and abs(a.y2 - b.y2) <= ty)

    want, got = sorted(want, key=_corners), sorted(got, key=_corners)
    if all(close(a, b) for a, b in zip(want, got, strict=True)):
        return None
    left = list(got)
    for a in want:
        j = next((j for j, b in enumerate(left) if close(a, b)), None)
        if j is None:
            return a
        left.pop(j)
    return None


def verify_export(fmt: Format, plan: pd.DataFrame, boxes: pd.DataFrame, root: Path, result: WriteResult,
                  options: ExportOptions) -> tuple[list[str], int]:
    """Read ``root`` back with ``fmt``'s reader and list every difference from the plan."""
    from curate.formats import options_for

    assert fmt.read is not None  # every writable format is readable
    read_path = root / result.read_path
    extra = options_for(fmt.name, "read", options.format_options)
    back = fmt.read(read_path, ReadOptions(follow_links=True, extra=extra))
    carries = result.carries
    files: dict[str, str] = result.files
    by_rel: dict[str, Entry] = {}
    prefix = str(root.absolute()).rstrip(os.sep) + os.sep
    for entry in back.entries:
        rel = entry.path[len(prefix):] if entry.path.startswith(prefix) else os.path.relpath(entry.path, root)
        by_rel[rel.replace(os.sep, "/")] = entry
    problems: list[str] = []
    expected_rel = set(files.values())
    # Lists the writer puts next to the images (classes.txt), not images.
    extra_rel = {str(root_rel) for root_rel in result.extra_files}
    for rel in sorted(set(by_rel) - expected_rel - extra_rel):
        problems.append(f"{rel}: not an exported image, found in the export")
    grouped: dict[str, list[Box]] = {}
    if len(boxes):  # columns as lists, not a namedtuple per row: this runs once per box
        coords = boxes[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float).tolist()
        for sid, label, (x1, y1, x2, y2) in zip(boxes["sample_id"].tolist(), boxes["label"].tolist(), coords,
                                                strict=True):
            grouped.setdefault(sid, []).append(Box(str(label), x1, y1, x2, y2))
    changed = {sid: msg for sid, msg in content_changes(plan, files, prefix)}
    for row in plan.itertuples(index=False):
        out_rel = files.get(row.sample_id, "")
        if row.sample_id in changed:
            problems.append(changed[row.sample_id])
            continue
        back_entry = by_rel.get(out_rel)
        if back_entry is None:
            problems.append(f"{out_rel or row.sample_id}: written but not read back")
            continue
        e = back_entry
        if e.reason is not None:
            problems.append(f"{out_rel}: read back as {e.reason}")
            continue
        w, h = int(row.width), int(row.height)
        if row.action == "link" and not pd.isna(row.file_size):
            # Unchanged bytes: the probed size holds if the file is the same length (a stat, not a decode).
            n = os.stat(prefix + out_rel).st_size
            if n != int(row.file_size):
                problems.append(f"{out_rel}: expected the source's {int(row.file_size)} bytes, found {n}")
        else:
            size = _displayed_size(prefix + out_rel)
            if size != (w, h):
                problems.append(f"{out_rel}: expected a {w}x{h} image, found {size}")
        if "splits" in carries and e.split != row.split:
            problems.append(f"{out_rel}: expected split {row.split}, found {e.split}")
        label = None if pd.isna(row.label) else str(row.label)
        if "labels" in carries and e.label != label:
            problems.append(f"{out_rel}: expected label {label!r}, found {e.label!r}")
        if "boxes" in carries:
            want = grouped.get(row.sample_id, [])
            got = [b.to_pixels((w, h)) for b in e.boxes]
            if len(want) != len(got):
                problems.append(f"{out_rel}: expected {len(want)} boxes, found {len(got)}")
                continue
            missing = boxes_match(want, got, (w, h))
            if missing is not None:
                near = min(got, key=lambda b: (b.label != missing.label,
                                               sum(abs(x - y) for x, y in zip(b.xyxy, missing.xyxy, strict=True))))
                problems.append(f"{out_rel}: expected box {_shown(missing)}, found {_shown(near)}")
    return problems, len(plan)


CHANGED = "changed since ingest"  # marks a content problem among the read-back differences
HASH_THREADS = 4  # hashlib releases the GIL while it hashes: threads overlap reads and hashing


def _file_sha256(path: str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def content_changes(plan: pd.DataFrame, files: dict[str, str], prefix: str) -> list[tuple[str, str]]:
    """(sample_id, problem) for each row whose bytes are not the ones ingest hashed.

    A byte-for-byte image is hashed as written into the export (for hard and
    symbolic links that is the source itself); a re-encoded one by its source
    file, which is what was decoded. Either differs from the manifest's
    ``sha256`` only when the source changed after ingest (same size or not),
    or the copy went wrong.
    """
    from concurrent.futures import ThreadPoolExecutor

    rows = [(sid, files.get(sid, ""), str(path), action, sha)
            for sid, path, action, sha in zip(plan["sample_id"], plan["path"], plan["action"], plan["sha256"],
                                              strict=True)
            if isinstance(sha, str) and files.get(sid)]
    targets = [prefix + rel if action == "link" else path for _, rel, path, action, _ in rows]
    with ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="curate-hash") as pool:
        digests = list(pool.map(_file_sha256, targets, chunksize=64))
    out = []
    for (sid, rel, path, _, sha), got in zip(rows, digests, strict=True):
        if got is not None and got != sha:
            out.append((sid, f"{rel}: its source {path} {CHANGED} (sha256 {got[:12]}..., the manifest has "
                             f"{sha[:12]}...)"))
    return out


def _shown(b: Box) -> tuple[str | None, float, float, float, float]:
    """A box as the read-back report shows it: ``(label, x1, y1, x2, y2)``."""
    return (b.label, *b.xyxy)


def export_to(plan: pd.DataFrame, boxes: pd.DataFrame, options: ExportOptions, protected: Sequence[Path] = (),
              staging: tuple[Path, int | None] | None = None, marker: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Write, verify and publish; nothing is left at ``--out`` (or in staging) on failure,
    Ctrl-C or SIGTERM. Folders left next to ``--out`` by killed runs are cleaned up first."""
    out = Path(options.out).expanduser().absolute()
    recovered = recover(out)
    check_target(out, options.overwrite, protected, force=options.force)
    folder, held = staging if staging is not None else make_staging(out)  # a caller's staging stays the caller's
    try:
        with terminate_as_interrupt():
            summary = write_dataset(plan, boxes, folder, options)
            write_marker(folder, summary, marker)
            publish(folder, out, options.overwrite)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        if staging is None:
            _release(held)
    if recovered:
        summary["recovered"] = recovered
    return summary


def write_marker(folder: Path, summary: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write :data:`MARKER_NAME` into the export: it says curate wrote this folder (so a later
    ``--overwrite`` may replace it) and what it holds. Written after verification, so readers
    and the read-back never see it; every reader skips hidden files."""
    import json

    from curate import __version__

    record = {"curate_export": 1, "curate_version": __version__, "written": utc_now(), **(extra or {}),
              **{k: v for k, v in summary.items() if not k.startswith("_")}}
    (folder / MARKER_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
