"""Where a workspace's files are, and what to say when one is not there.

Every stage that opens a row's file (export, faces, square, crop, review)
words a missing file the same way, naming the fix that applies:

- a source file (outside the workspace): its folder moved, so
  ``curate relocate WS --source NAME=NEW_FOLDER`` (or ``--search FOLDER`` to
  find the files by content); or it is gone, so re-run ``curate ingest``
  (which marks it ``missing_file``) and ``curate prune WS --missing``;
- an ``objects/`` file (inside the workspace): the workspace lost it, so the
  stage that made it has to run again.

    >>> missing_file_message("/data/cats/a.jpg", "cats", "/ws")  # doctest: +NORMALIZE_WHITESPACE
    '/data/cats/a.jpg: the source image is missing (source cats; if its folder moved, run
    `curate relocate /ws --source cats=NEW_FOLDER`, or `curate relocate /ws --search FOLDER` to find
    the files by content; if the file is gone, re-run `curate ingest` on the source and then
    `curate prune /ws --missing`)'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from curate.errors import CurateError

if TYPE_CHECKING:
    import pandas as pd


class MissingFileError(CurateError):
    """Files that rows of the manifest name are not there."""


def relocate_hint(ws_root: str | Path, source: str | None) -> str:
    """The fix for a missing source file of ``source`` (any source when None)."""
    lead = f"source {source}; if its folder moved" if source else "if a source folder moved"
    name = source if source else "NAME"
    return (f"{lead}, run `curate relocate {ws_root} --source {name}=NEW_FOLDER`, "
            f"or `curate relocate {ws_root} --search FOLDER` to find the files by content; if the file is gone, "
            f"re-run `curate ingest` on the source and then `curate prune {ws_root} --missing`")


def objects_hint(ws_root: str | Path) -> str:
    return (f"the workspace {ws_root} lost a derived image it made; re-run the stage that made it "
            "(faces, square, crop or balance)")


def is_inside(path: str | Path, root: str | Path) -> bool:
    p, r = os.path.abspath(path), os.path.abspath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def missing_file_message(path: str | Path, source: str | None, ws_root: str | Path) -> str:
    """One line about one missing file, naming its fix."""
    if is_inside(path, ws_root):
        return f"{path}: the derived image is missing ({objects_hint(ws_root)})"
    return f"{path}: the source image is missing ({relocate_hint(ws_root, source)})"


def missing_rows(rows: pd.DataFrame) -> pd.Series:
    """Boolean mask: rows whose ``path`` is not a file now (one ``stat`` each)."""
    import pandas as pd

    return pd.Series([not os.path.isfile(p) for p in rows["path"].astype(str)], index=rows.index, dtype=bool)


def known_files(manifest: pd.DataFrame) -> pd.Series:
    """Boolean mask: rows whose file was read once (a sha256) and not since recorded as gone."""
    return manifest["sha256"].notna() & (manifest["reason"] != "missing_file").to_numpy()


def missing_error(rows: pd.DataFrame, ws_root: str | Path, *, what: str = "export") -> MissingFileError | None:
    """The error for the rows whose file is missing (how many, per source, and the fix); None when none is."""
    gone = rows[missing_rows(rows)]
    if not len(gone):
        return None
    inside = gone["path"].astype(str).map(lambda p: is_inside(p, ws_root))
    if inside.any():
        first = gone.loc[inside, "path"].iloc[0]
        return MissingFileError("", file=first, expected=f"every derived image of the rows to {what}",
                                found=f"{int(inside.sum())} missing", hint=objects_hint(ws_root))
    per_source = gone["source"].value_counts().sort_index()
    counts = ", ".join(f"{n} of source {s}" for s, n in per_source.items())
    source = str(per_source.index[0]) if len(per_source) == 1 else None
    return MissingFileError("", file=gone["path"].iloc[0], expected=f"the source image of every row to {what}",
                            found=f"{len(gone)} missing ({counts})", hint=relocate_hint(ws_root, source))


def require_files(rows: pd.DataFrame, ws_root: str | Path, *, what: str = "export") -> None:
    """Raise :class:`MissingFileError` when a row's file is missing.

    Checked before any work starts, so a moved source fails at once, with
    one message, instead of half-way through.
    """
    error = missing_error(rows, ws_root, what=what)
    if error is not None:
        raise error
