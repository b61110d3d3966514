"""Walking a source folder: which files become rows, and how links are treated.

The rules (also in docs/ingest.md):

- Every regular file under the source becomes a row, including non-images
  (they are dropped with a reason, never silently skipped).
- Hidden files (name starts with ``.``) become rows dropped as ``hidden``;
  OS by-products (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, anything
  under ``__MACOSX/``) are dropped as ``system_file``. Neither is decoded.
- The marker curate writes into each export (``.curate-export.json`` at its
  top) is not a row: reading a curate export back gives its images only.
- Hidden folders (``.git``, ``.ipynb_checkpoints``, ...) are not entered; they
  are listed in the run record so the user can see what was passed over.
- Symbolic links to files are followed when the target lies inside the source;
  a link that points outside is a row dropped as ``outside_source`` (pass
  ``--follow-links`` to accept those), a dangling link is ``broken_link``.
- Linked folders are entered only when they resolve inside the source (or with
  ``--follow-links``), and each real folder is entered once, so link loops end.
- A curate workspace (a folder holding ``curate.json`` and ``objects/`` or a
  manifest) is never entered, and a linked file inside one is never read,
  links followed or not: curate never ingests its own files.
- Names are kept exactly as the file system gives them (any script, spaces).
  A name that is not valid UTF-8 (bytes from a zip made with a Windows code
  page, such as CP949 for Korean) cannot be stored or opened by name later:
  the file is a row dropped as ``bad_filename``, its path shown with the bad
  bytes escaped (``\\xb0``).

    >>> from curate.demo import bundled_photos_dir
    >>> files = list(walk(bundled_photos_dir()))
    >>> any(f.rel_path == "astronaut.png" for f in files)
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from curate.imageio import SYSTEM_DIRS, SYSTEM_FILES

WORKSPACE_MARKER = "curate.json"  # curate.workspace.MARKER
EXPORT_MARKER = ".curate-export.json"  # curate.stages.export.MARKER_NAME (kept here: walk imports no stages)


@dataclass
class WalkedFile:
    path: str  # absolute, as seen (not resolved)
    rel_path: str  # relative to the source root, with "/" separators
    reason: str | None = None  # pre-decided drop: hidden, system_file, broken_link, outside_source
    detail: str | None = None


@dataclass
class WalkReport:
    skipped_dirs: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)


def _inside(path: str, root_real: str) -> bool:
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def printable(path: str) -> str:
    """``path`` as valid UTF-8: bytes the file system name could not decode
    (held by Python as surrogates) shown as ``\\xNN`` escapes.

    >>> printable(os.fsdecode(b"caf\\xe9.jpg"))
    'caf\\\\xe9.jpg'
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def classify_name(rel_parts: tuple[str, ...]) -> tuple[str | None, str | None]:
    """Pre-decided reason for a file from its path parts alone."""
    name = rel_parts[-1]
    if any(p.lower() in SYSTEM_DIRS for p in rel_parts[:-1]) or name.lower() in SYSTEM_FILES:
        return "system_file", "operating-system or archive by-product"
    if name.startswith("._"):
        return "system_file", "macOS AppleDouble resource file"
    if name.startswith("."):
        return "hidden", "hidden file (name starts with '.')"
    return None, None


def is_workspace(folder: str | Path) -> bool:
    """Is ``folder`` a curate workspace (its marker next to its objects or its manifest)?"""
    return os.path.isfile(os.path.join(folder, WORKSPACE_MARKER)) and (
        os.path.isdir(os.path.join(folder, "objects")) or os.path.exists(os.path.join(folder, "manifest.parquet")))


def in_workspace(path: str) -> str | None:
    """The workspace folder that holds ``path`` (resolved), or None."""
    d = os.path.dirname(os.path.realpath(path))
    while True:
        if is_workspace(d):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def walk(root: str | Path, *, follow_links: bool = False, report: WalkReport | None = None) -> Iterator[WalkedFile]:
    """Yield every file under ``root`` in a stable (sorted) order."""
    root_abs = os.path.abspath(root)
    root_real = os.path.realpath(root_abs)
    report = report if report is not None else WalkReport()
    seen_dirs: set[str] = set()

    def visit(dir_abs: str, rel: tuple[str, ...]) -> Iterator[WalkedFile]:
        real = os.path.realpath(dir_abs)
        if real in seen_dirs:
            report.loops.append("/".join(rel) or ".")
            return
        seen_dirs.add(real)
        if is_workspace(real):
            report.skipped_dirs.append(f"{'/'.join(rel) or '.'}: a curate workspace (never read as a source)")
            return
        try:
            entries = sorted(os.scandir(dir_abs), key=lambda e: e.name)
        except OSError as e:
            report.skipped_dirs.append(f"{'/'.join(rel) or '.'}: {e.strerror}")
            return
        for entry in entries:
            parts = (*rel, printable(entry.name))
            rel_path = "/".join(parts)
            is_link = entry.is_symlink()
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                if entry.name.startswith(".") and entry.name.lower() not in SYSTEM_DIRS:
                    report.skipped_dirs.append(f"{rel_path}: hidden folder")
                    continue
                if is_link and not follow_links and not _inside(os.path.realpath(entry.path), root_real):
                    report.skipped_dirs.append(f"{rel_path}: link to a folder outside the source")
                    continue
                yield from visit(entry.path, parts)
                continue
            shown = printable(entry.path)  # what the manifest can hold: the path itself when it is UTF-8
            if is_link:
                target = os.path.realpath(entry.path)
                if not os.path.exists(target):
                    yield WalkedFile(shown, rel_path, "broken_link", f"link target {os.readlink(entry.path)!r} is missing")
                    continue
                if not follow_links and not _inside(target, root_real):
                    yield WalkedFile(shown, rel_path, "outside_source",
                                     f"link points to {printable(target)}; use --follow-links")
                    continue
                held_by = in_workspace(target)
                if held_by is not None:
                    yield WalkedFile(shown, rel_path, "outside_source",
                                     f"link points into the curate workspace {printable(held_by)}, never a source")
                    continue
            try:
                regular = entry.is_file(follow_symlinks=True)
            except OSError:
                regular = False
            if not regular:  # sockets, fifos, devices: never opened
                report.skipped_dirs.append(f"{rel_path}: not a regular file")
                continue
            if shown != entry.path:
                yield WalkedFile(shown, rel_path, "bad_filename",
                                 "the name is not valid UTF-8; rename it (e.g. `convmv -f cp949 -t utf-8 -r --notest "
                                 "FOLDER` for Korean names from a Windows zip)")
                continue
            if entry.name == EXPORT_MARKER and not rel:  # curate's own note on an export it wrote: not data
                continue
            reason, detail = classify_name(parts)
            yield WalkedFile(entry.path, rel_path, reason, detail)

    yield from visit(root_abs, ())
