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
``dedupe --report``, ``report --out``, ``train --out``) passes
:func:`check_output`: nothing is written inside a source, over a source file, or
(for files) inside the workspace's own tables.

    >>> confine("/data/set/images/../images/a.jpg", ["/data/set"], follow_links=False)
    ('/data/set/images/a.jpg', None, None)
    >>> confine("/data/set/../../etc/passwd", ["/data/set"], follow_links=False)[1]
    'outside_source'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from curate.errors import CurateError


def inside(child: str | Path, parent: str | Path) -> bool:
    """Is ``child`` the folder ``parent`` or below it (both resolved, links followed)?"""
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def confine(path: str, roots: Sequence[str | Path], *, follow_links: bool) -> tuple[str, str | None, str | None]:
    """``(normalised path, reason, detail)`` for a file named by an annotation file or list.

    ``reason`` is ``outside_source`` when the path, with links resolved, is
    not inside any of ``roots`` (and ``follow_links`` is off); otherwise None.
    A file that does not exist is left to the reader and the probe
    (``missing_file``).
    """
    norm = os.path.normpath(os.path.abspath(path))
    if follow_links or any(inside(norm, r) for r in roots):
        return norm, None, None
    real = os.path.realpath(norm)
    return norm, "outside_source", (f"named by an annotation file or list, but it is {real}, outside the source "
                                    "(pass --images-dir with its folder, or --follow-links, to read it)")


def check_output(out: str | Path, *, sources: Sequence[str | Path] = (), workspace: str | Path | None = None,
                 option: str = "--out", folder: bool = False) -> Path:
    """``out`` as an absolute path, or a :class:`CurateError` when writing there could touch a source.

    Refused: a path inside a source folder (or the folder of a file source),
    a source file itself, and, for a folder output, one that would hold the
    workspace or a source. A file output inside the workspace is refused only
    where it would replace one of curate's own tables.
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
        own = {"manifest.parquet", "annotations.parquet", "curate.json", "sources.json", ".lock", "tables"}
        if not folder and target.parent == ws and target.name in own:
            raise CurateError("", field=option, expected="a path that is not one of the workspace's own files",
                              found=str(target), hint="choose another path")
    return target


def workspace_sources(ws_root: str | Path) -> list[Path]:
    """The source paths a workspace has recorded (``sources.json``), for output checks; [] when unreadable."""
    import json

    try:
        known = json.loads((Path(ws_root) / "sources.json").read_text())
        return [Path(v["path"]) for v in known.values()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []
