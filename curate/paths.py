"""One path policy: where curate reads from and where it may write.

**Reading.** A file named *inside* an annotation file or a list (COCO
``file_name``, VOC ``<filename>``, CSV/TXT rows, Darknet lists, ``data.yaml``
folders, per-image JSON ``image``) is resolved, stored normalised (no ``..``)
and must lie inside its source (the source folder, or the folder of a list
given as a file), or in ``--images-dir``. One that lands outside is treated as
a symbolic link out of the source is: a row dropped as ``outside_source``,
unless ``--follow-links`` allows it. What walks a folder already applies the
same rule (:mod:`curate.walk`), so :func:`confine` is for the names readers
take from files. Special files (FIFOs, devices) are caught where files are
opened (:func:`curate.imageio.probe_file`), so nothing ever blocks on one.

**Writing.** Every output option (``export --out``, ``convert --out``,
``dedupe --report``, ``report --out``, ``train classify|compare|yolo --out``)
passes :func:`check_output`: nothing is written inside a source, over a source
file, or over the workspace's own files, and no output folder holds or lies in
the workspace or a source. ``ingest --into`` and ``relocate --source`` pass
:func:`check_source_place`: a workspace and a source never overlap.
tests/test_output_paths.py lists every path option of every command.

    >>> confine("/data/set/images/../images/a.jpg", ["/data/set"], follow_links=False)
    ('/data/set/images/a.jpg', None, None)
    >>> confine("/data/set/../../etc/passwd", ["/data/set"], follow_links=False)[1]
    'outside_source'
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from curate.errors import CurateError


def inside(child: str | Path, parent: str | Path) -> bool:
    """Is ``child`` the folder ``parent`` or below it (both resolved, links followed)?"""
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


@functools.lru_cache(maxsize=64)
def _real_root(root: str | Path) -> str:
    return os.path.realpath(root)


def confine(path: str, roots: Sequence[str | Path], *, follow_links: bool) -> tuple[str, str | None, str | None]:
    """``(normalised path, reason, detail)`` for a file named by an annotation file or list.

    ``reason`` is ``outside_source`` when the path, with links resolved, is
    not inside any of ``roots`` (and ``follow_links`` is off); otherwise None.
    A file that does not exist is left to the reader and the probe
    (``missing_file``).
    """
    norm = os.path.normpath(os.path.abspath(path))
    if follow_links:
        return norm, None, None
    real = os.path.realpath(norm)  # one resolution per name; the roots' are cached (a COCO file names millions)
    if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in map(_real_root, roots)):
        return norm, None, None
    return norm, "outside_source", (f"named by an annotation file or list, but it is {real}, outside the source "
                                    "(pass --images-dir with its folder, or --follow-links, to read it)")


# What a workspace holds of its own (curate.workspace): an output file never replaces one of them.
WORKSPACE_FILES = frozenset({"manifest.parquet", "annotations.parquet", "curate.json", "sources.json", ".lock"})
WORKSPACE_DIRS = ("objects", "runs", "exports", "tables", ".partial", ".tmp")


def check_output(out: str | Path, *, sources: Sequence[str | Path] = (), workspace: str | Path | None = None,
                 option: str = "--out", folder: bool = False) -> Path:
    """``out`` as an absolute path, or a :class:`CurateError` when writing there could touch a source.

    Refused: a path inside a source folder (or the folder of a file source),
    a source file itself, and, for a folder output, one that would hold the
    workspace or a source, or lie inside the workspace. A file output inside
    the workspace is refused where it would replace one of curate's own files
    (its tables, ``curate.json``, ``sources.json``, anything under
    ``objects/``, ``runs/``, ``exports/``).
    """
    target = Path(out).expanduser().absolute()
    for src in sources:
        s = Path(src)
        root = s if s.is_dir() else s.parent
        if inside(target, root) or (s.is_file() and os.path.realpath(target) == os.path.realpath(s)):
            raise CurateError("", field=option, expected="a path outside the sources", found=f"{target}, inside "
                              f"the source {s}", hint="sources are never written to; choose another path")
        if folder and inside(root, target):
            raise CurateError("", field=option, expected="a folder that does not hold a source",
                              found=f"{target}, which holds the source {s}", hint="choose another path")
    if workspace is not None:
        ws = Path(workspace).absolute()
        if folder and inside(ws, target):
            raise CurateError("", field=option, expected="a folder that does not hold the workspace",
                              found=f"{target}, which holds {ws}", hint="choose another path")
        if folder and inside(target, ws):
            raise CurateError("", field=option, expected="a folder outside the workspace", found=f"{target}, inside {ws}",
                              hint="the workspace holds curate's own files; choose another path")
        if not folder and (any(inside(target, ws / d) for d in WORKSPACE_DIRS)
                           or (target.parent == ws and target.name in WORKSPACE_FILES)):
            raise CurateError("", field=option, expected="a path that is not one of the workspace's own files",
                              found=str(target), hint="choose another path")
    return target


def check_source_place(source: str | Path, workspace: str | Path) -> None:
    """A :class:`SourceError` when ``source`` and the workspace overlap: a source inside the
    workspace, or a workspace inside a source (its folder, or the folder of a list or annotation
    file given as the source), since the next ingest would read curate's own files as images.

    >>> check_source_place("/data/photos", "/data/ws")
    >>> check_source_place("/data/photos", "/data/photos/ws")
    Traceback (most recent call last):
    ...
    curate.errors.SourceError: /data/photos: expected a workspace outside the source, found the workspace /data/photos/ws inside it (choose an --into folder outside /data/photos)
    """
    from curate.errors import SourceError

    src, ws = Path(source).expanduser().absolute(), Path(workspace).expanduser().absolute()
    root = src.parent if src.is_file() else src
    if inside(src, ws):
        raise SourceError("", file=src, expected="a source outside the workspace", found=f"a path inside the "
                          f"workspace {ws}", hint="curate never reads its own files as a source")
    if inside(ws, root):
        raise SourceError("", file=root, expected="a workspace outside the source",
                          found=f"the workspace {ws} inside it", hint=f"choose an --into folder outside {root}")


def check_output_for(out: str | Path, inputs: Sequence[str | Path], *, option: str = "--out",
                     folder: bool = True) -> Path:
    """:func:`check_output` for a command whose inputs are exports or workspaces (``curate train``):
    every input is a source not to write into, and an input that is a workspace brings its own sources."""
    sources: list[Path] = []
    workspace: Path | None = None
    for i in inputs:
        p = Path(i).expanduser().absolute()
        if (p / "curate.json").is_file():
            workspace = p
            sources += workspace_sources(p)
        else:
            sources.append(p)
    return check_output(out, sources=sources, workspace=workspace, option=option, folder=folder)


def workspace_sources(ws_root: str | Path) -> list[Path]:
    """The source paths a workspace has recorded (``sources.json``), for output checks; [] when it has none.

    A ``sources.json`` that cannot be read is a :class:`~curate.errors.DamagedWorkspaceError`, not "no
    sources": an output check without the sources would let ``--out`` land on one (issue 13).
    """
    import json

    from curate.workspace import damaged

    path = Path(ws_root) / "sources.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise damaged(path, "a JSON object of sources", f"{type(e).__name__}: {e.strerror}", Path(ws_root)) from e
    try:
        known = json.loads(text)
        return [Path(v["path"]) for v in known.values()]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise damaged(path, "a JSON object of sources", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                      Path(ws_root)) from e
