"""The workspace: one folder that holds everything curate knows and makes.

::

    WS/
      curate.json           marker and metadata (format version, the folder it was last written at)
      manifest.parquet      one row per file ever seen (schema: curate.schema)
      annotations.parquet   boxes, in the pixel frame of their sample's image
      objects/ab/<sha>.ext  derived images, content-addressed
      runs/<run_id>.json    one record per command
      .lock                 held while a command changes the workspace

Writes are atomic (write to a temporary file in the same folder, then
``os.replace``), so a killed process leaves either the old or the new table.

A workspace can be moved or copied as a folder. The manifest keeps absolute
paths (DESIGN.md's contract: plain pandas reads them), so ``curate.json``
records the folder the manifest was written at; when the folder is found
elsewhere, every path under the old folder (``objects/`` files) is read as
the same path under the new one, and written so at the next write. Source
files stay where they are; ``curate relocate`` re-roots them.

    >>> import tempfile
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> ws.read_manifest().shape[0], ws.manifest_path.name
    (0, 'manifest.parquet')
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate import __version__
from curate.errors import WorkspaceError, WorkspaceLockedError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# pandas, pyarrow and curate.schema are imported where the tables are read or
# written: a pool worker that only stores objects (faces) then starts
# without them (about 0.8 s per worker, docs/benchmarks.md#faces).

MARKER = "curate.json"
WORKSPACE_FORMAT = 1


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    ``fsync=False`` leaves flushing to the caller (see :func:`sync_filesystem`):
    one flush for thousands of small files instead of one each.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sync_filesystem(path: Path) -> None:
    """Flush every written file of the file system holding ``path`` to disk (``syncfs``; ``sync`` elsewhere).

    Derived images are written without one ``fsync`` each (measured: an fsync
    per crop took 26 % of `curate crop`, docs/benchmarks.md#crop); this one
    flush before the manifest names them keeps the guarantee that a committed
    manifest never points at an object a power cut could lose.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):  # no syncfs (not Linux): flush everything
        pass
    os.sync()


def atomic_write_parquet(df: pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        declared = [f.name for f in schema]
        extra = [c for c in df.columns if c not in declared]
        table = pa.Table.from_pandas(df[declared], schema=schema, preserve_index=False)
        for c in extra:  # a stage's own extra columns survive, with inferred types
            table = table.append_column(c, pa.array(df[c].tolist(), from_pandas=True))
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class StageResult:
    """What a stage returns: the new tables, a summary to print, details to record."""

    manifest: pd.DataFrame
    annotations: pd.DataFrame | None = None  # None: unchanged
    summary: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # extra fields for runs/
    write: bool = True  # False for dry runs
    objects_written: bool = False  # new files in objects/ (written unsynced): flushed before the manifest
    log_run: bool = False  # record the run in runs/ even though write is False (a read-only check)
    # Other workspace files (name relative to the root -> bytes, e.g. sources.json), written atomically
    # after the tables, so a stage that fails leaves them as they were.
    files: dict[str, bytes] = field(default_factory=dict)


class Workspace:
    """A curate workspace folder. Use :meth:`create` or :meth:`open`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    # -- paths --------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def annotations_path(self) -> Path:
        return self.root / "annotations.parquet"

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def name(self) -> str:
        return self.root.name

    # -- lifecycle ----------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, *, exist_ok: bool = True) -> Workspace:
        root = Path(root).absolute()
        if (root / MARKER).exists():
            if not exist_ok:
                raise WorkspaceError("workspace already exists", file=root)
            return cls.open(root)
        if root.exists() and any(root.iterdir()):
            raise WorkspaceError(
                "", file=root, expected="an empty or new folder for the workspace",
                found="a non-empty folder that is not a curate workspace",
                hint="choose another --into folder",
            )
        root.mkdir(parents=True, exist_ok=True)
        (root / "objects").mkdir(exist_ok=True)
        (root / "runs").mkdir(exist_ok=True)
        meta = {"format": WORKSPACE_FORMAT, "created": utc_now(), "curate_version": __version__, "root": str(root)}
        atomic_write_bytes(root / MARKER, (json.dumps(meta, indent=2) + "\n").encode())
        return cls(root)

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        root = Path(root).absolute()
        marker = root / MARKER
        if not marker.exists():
            raise WorkspaceError(
                "", file=root, expected="a curate workspace", found="no curate.json",
                hint="create one with `curate ingest SOURCE --into WS`",
            )
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError) as e:
            raise WorkspaceError(f"cannot read {MARKER}: {e}", file=root) from e
        if meta.get("format") != WORKSPACE_FORMAT:
            raise WorkspaceError(
                "", file=marker, field="format", expected=WORKSPACE_FORMAT, found=meta.get("format")
            )
        return cls(root)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace for one writer. A second writer is refused at once.

        The lock is an OS file lock, so it is released when the process dies,
        even by SIGKILL.
        """
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise WorkspaceLockedError(
                "another curate command is changing this workspace", file=self.root,
                hint="wait for it to finish; the lock is released when that process ends",
            ) from None
        try:
            yield
        finally:
            lock.release()

    # -- tables -------------------------------------------------------------
    def read_manifest(self) -> pd.DataFrame:
        import pandas as pd

        from curate.schema import MANIFEST_COLUMNS, conform, empty_manifest

        if not self.manifest_path.exists():
            return empty_manifest()
        df = conform(pd.read_parquet(self.manifest_path), MANIFEST_COLUMNS)
        old = self.moved_from(df)
        return rebase_paths(df, old, str(self.root)) if old is not None else df

    # -- moving -------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The contents of ``curate.json`` ({} when it cannot be read)."""
        try:
            return dict(json.loads((self.root / MARKER).read_text()))
        except (OSError, ValueError):
            return {}

    def moved_from(self, manifest: pd.DataFrame | None = None) -> str | None:
        """The folder this workspace was last written at, when it is not this one (moved or copied).

        Read from ``curate.json``; a workspace written before curate recorded it
        is recognised by the ``objects/`` paths of its derived rows.
        """
        old = self.meta().get("root")
        if old is None and manifest is not None:
            old = root_from_objects(manifest)
        if old is None or old == str(self.root):
            return None
        with contextlib.suppress(OSError):
            if os.path.samefile(old, self.root):  # the same folder under another name (a symbolic link)
                return None
        return str(old)

    def _record_root(self) -> None:
        """Write this folder into ``curate.json`` (after the tables that hold its paths)."""
        meta = self.meta()
        if meta and meta.get("root") != str(self.root):
            meta["root"] = str(self.root)
            atomic_write_bytes(self.root / MARKER, (json.dumps(meta, indent=2) + "\n").encode())

    def read_annotations(self) -> pd.DataFrame:
        import pandas as pd

        from curate.schema import ANNOTATION_COLUMNS, conform, empty_annotations

        if not self.annotations_path.exists():
            return empty_annotations()
        return conform(pd.read_parquet(self.annotations_path), ANNOTATION_COLUMNS)

    def write_manifest(self, df: pd.DataFrame) -> pd.DataFrame:
        from curate.schema import MANIFEST_ARROW, validate_manifest

        df = validate_manifest(df)
        atomic_write_parquet(df, self.manifest_path, MANIFEST_ARROW)
        self._record_root()
        return df

    def write_annotations(self, df: pd.DataFrame, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
        from curate.schema import ANNOTATION_ARROW, validate_annotations

        df = validate_annotations(df, manifest)
        atomic_write_parquet(df, self.annotations_path, ANNOTATION_ARROW)
        return df

    # -- objects ------------------------------------------------------------
    def put_object(self, data: bytes, ext: str) -> tuple[Path, str]:
        """Store derived image bytes by content; return (path, sha256). Idempotent."""
        digest = hashlib.sha256(data).hexdigest()
        ext = ext if ext.startswith(".") else f".{ext}"
        path = self.objects_dir / digest[:2] / f"{digest}{ext.lower()}"
        if not path.exists():  # flushed once by run_stage (StageResult.objects_written), not once per file
            atomic_write_bytes(path, data, fsync=False)
        return path, digest

    # -- runs ---------------------------------------------------------------
    def record_run(self, command: str, options: dict[str, Any], **fields: Any) -> Path:
        started = fields.pop("started", utc_now())
        run_id = f"{started.replace(':', '').replace('-', '').replace('.', '')}-{command}-{os.getpid()}"
        rec = {
            "run_id": run_id,
            "command": command,
            "options": options,
            "curate_version": __version__,
            "started": started,
            "finished": utc_now(),
            **fields,
        }
        path = self.runs_dir / f"{run_id}.json"
        atomic_write_bytes(path, (json.dumps(rec, indent=2, default=str) + "\n").encode())
        return path

    def runs(self) -> list[dict[str, Any]]:
        """Every recorded run, oldest first."""
        out = []
        for p in sorted(self.runs_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(p.read_text()))
        return sorted(out, key=lambda r: r.get("started", ""))

    def run_stage(
        self,
        command: str,
        fn: Callable[..., StageResult],
        options: Any,
        *,
        record_options: dict[str, Any] | None = None,
    ) -> StageResult:
        """Run one stage under the lock: read tables, call ``fn``, write, record.

        ``fn(manifest, options, ws=self, annotations=...)`` must return a
        :class:`StageResult`. Nothing is written if it raises.
        """
        from curate.summary import status_counts

        started = utc_now()
        t0 = time.perf_counter()
        with self.lock():
            manifest = self.read_manifest()
            annotations = self.read_annotations()
            before = status_counts(manifest)
            result = fn(manifest, options, ws=self, annotations=annotations)
            if result.write:
                if result.objects_written:
                    sync_filesystem(self.objects_dir if self.objects_dir.exists() else self.root)
                result.manifest = self.write_manifest(result.manifest)
                if result.annotations is not None:
                    result.annotations = self.write_annotations(result.annotations, result.manifest)
                for name, data in result.files.items():
                    atomic_write_bytes(self.root / name, data)
            if result.write or result.log_run:
                self.record_run(
                    command,
                    record_options if record_options is not None else _options_dict(options),
                    started=started,
                    duration_s=round(time.perf_counter() - t0, 3),
                    counts_before=before,
                    counts_after=status_counts(result.manifest),
                    summary=result.summary,
                    **result.record,
                )
        return result

    def clear_tmp(self) -> None:
        tmp = self.root / ".tmp"
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_OBJECT_PATH = re.compile(r"^(?P<root>.+)/objects/[0-9a-f]{2}/[0-9a-f]{64}\.[A-Za-z0-9]+$")


def root_from_objects(manifest: pd.DataFrame) -> str | None:
    """The workspace folder named by the first derived row's ``objects/`` path (None without one).

    >>> import pandas as pd
    >>> root_from_objects(pd.DataFrame({"parent_id": ["a"], "path": ["/old/ws/objects/ab/" + "ab" * 32 + ".png"]}))
    '/old/ws'
    """
    derived = manifest.loc[manifest["parent_id"].notna(), "path"]
    for path in derived.head(100):
        m = _OBJECT_PATH.match(str(path))
        if m:
            return m.group("root")
    return None


def rebase_paths(manifest: pd.DataFrame, old_root: str, new_root: str,
                 columns: tuple[str, ...] = ("path", "origin_path")) -> pd.DataFrame:
    """``manifest`` with every path under ``old_root`` moved to the same place under ``new_root``.

    Paths elsewhere (source files) are left as they are.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"path": ["/a/ws/objects/x.png", "/a/ws2/y.png", "/src/z.jpg"]})
    >>> rebase_paths(df, "/a/ws", "/b/ws", ("path",))["path"].tolist()
    ['/b/ws/objects/x.png', '/a/ws2/y.png', '/src/z.jpg']
    """
    old, new = old_root.rstrip(os.sep), new_root.rstrip(os.sep)
    out = manifest.copy()
    for c in columns:
        s = out[c]
        under = s.notna() & (s.str.startswith(old + os.sep, na=False) | (s == old))
        if under.any():
            out[c] = s.where(~under, new + s[under].str.slice(len(old)))
    return out


def _options_dict(options: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(options).items()}
    if isinstance(options, dict):
        return options
    return {"options": repr(options)}
