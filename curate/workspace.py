"""The workspace: one folder that holds everything curate knows and makes.

::

    WS/
      curate.json           marker and metadata (format version, the folder it was last written at),
                            and the pointer to the committed version of the tables ("tables")
      tables/<version>/     one committed version: manifest.parquet, annotations.parquet, sources.json
      manifest.parquet      the committed manifest (a hard link into tables/), for plain pandas
      annotations.parquet   the committed boxes, in the pixel frame of their sample's image
      objects/ab/<sha>.ext  derived images, content-addressed
      runs/<run_id>.json    one record per command
      .lock                 held while a command changes the workspace

The tables commit as one unit (docs/reliability.md#tables-and-commits): a
stage writes a new folder ``tables/<version>/``, then switches the pointer in
``curate.json`` with one ``os.replace``. A killed process leaves the old pair
or the new pair, never one of each; every reader reads the pair the pointer
names. The top-level ``manifest.parquet`` and ``annotations.parquet`` are then
re-linked to the committed files, so plain ``pandas.read_parquet`` reads them.

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
import errno
import functools
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
from typing import TYPE_CHECKING, Any, NoReturn, cast

from curate import __version__
from curate.errors import DamagedWorkspaceError, WorkspaceError, WorkspaceLockedError, WorkspaceWriteError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# pandas, pyarrow and curate.schema are imported where the tables are read or
# written: a pool worker that only stores objects (faces) then starts
# without them (about 0.8 s per worker, docs/benchmarks.md#faces).

MARKER = "curate.json"
# 2: the tables live in tables/<version>/, named by curate.json's "tables" (1: at the top level only;
# opened and migrated by Workspace.open)
WORKSPACE_FORMAT = 2
TABLES_DIR = "tables"
MANIFEST_FILE = "manifest.parquet"
ANNOTATIONS_FILE = "annotations.parquet"
SOURCES_FILE = "sources.json"
# The files of one committed version; each is also published at the top level under the same name.
VERSIONED_FILES = (MANIFEST_FILE, ANNOTATIONS_FILE, SOURCES_FILE)
_VERSION_NAME = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9]+-[0-9a-f]{6}$")
# Set while a command writes (removed when it ends, even on an error): found at the start of the next
# command, it means a kill, and the next command sweeps the temporary files the kill left.
RUNNING = ".running"


@functools.cache
def file_mode() -> int:
    """The mode a new file gets from ``open`` under this process's umask (0644 under the usual 022).

    ``mkstemp`` makes 0600 files; curate's files are not secrets, and others
    sharing a workspace or an export read them.
    """
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True, sweep: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    ``fsync=False`` leaves flushing to the caller (see :func:`sync_filesystem`):
    one flush for thousands of small files instead of one each. The temporary
    file is held by an OS lock until it is renamed; ``sweep=True`` first removes
    the temporary files of earlier writes to ``path`` that no process holds (a
    killed ``curate report --out FILE`` left one beside FILE, outside any
    workspace sweep: :func:`remove_stale_temporaries`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if sweep:
        remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    held = None
    try:
        held = _hold_file(fd)
        os.fchmod(fd, file_mode())
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
    finally:
        if held is not None:
            os.close(held)


def _hold_file(fd: int) -> int | None:
    """Lock the open file ``fd`` (``flock``) and return a duplicate that keeps the lock after ``fd`` is closed."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.dup(fd)
    except (ImportError, OSError):  # no flock here: the temporary is simply not held
        return None


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files beside ``path`` that no running write holds; return them.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".r.html.abc123.tmp").write_bytes(b"cut short by a kill")
    >>> [p.name for p in remove_stale_temporaries(d / "r.html")]
    ['.r.html.abc123.tmp']
    """
    import fcntl
    import glob

    removed = []
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if not _is_file(fd):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: a write in progress
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
        finally:
            os.close(fd)
    return removed


def _is_file(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


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
    os.fchmod(fd, file_mode())
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


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened for this
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link of ``src`` (no copy of the bytes), or a copy where links are not supported."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOENT):
            raise
        shutil.copyfile(src, dst)


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
        if root.exists() and not _only_creation_leftovers(root):
            raise WorkspaceError(
                "", file=root, expected="an empty or new folder for the workspace",
                found="a non-empty folder that is not a curate workspace",
                hint="choose another --into folder",
            )
        # What a creation killed before curate.json leaves (objects/, runs/) is taken as a start, above:
        # curate.json is written last, so a folder with it is a whole workspace.
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "objects").mkdir(exist_ok=True)
            (root / "runs").mkdir(exist_ok=True)
            meta = {"format": WORKSPACE_FORMAT, "created": utc_now(), "curate_version": __version__,
                    "root": str(root)}
            atomic_write_bytes(root / MARKER, (json.dumps(meta, indent=2) + "\n").encode())
        except OSError as e:
            _raise_write_error(e, root)
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
        ws = cls(root)
        meta = ws.read_meta()
        if meta.get("format") not in (1, WORKSPACE_FORMAT):
            raise WorkspaceError(
                "", file=marker, field="format", expected=WORKSPACE_FORMAT, found=meta.get("format")
            )
        if meta.get("format") == 1:
            ws.migrate()
        return ws

    def migrate(self) -> None:
        """Turn a format-1 workspace (tables at the top level only) into a committed version.

        Done by :meth:`open` when it can take the lock; a workspace that is
        read-only, or busy, is read as it is (format 1) and migrated later.
        """
        with contextlib.suppress(WorkspaceError):
            with self.lock():
                if self.read_meta().get("format") == 1:  # again, under the lock
                    self.commit()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace for one writer. A second writer is refused at once.

        The lock is an OS file lock, so it is released when the process dies,
        even by SIGKILL. A workspace curate cannot write is refused here, with
        one line, before any work.
        """
        from filelock import FileLock, Timeout

        path = self.root / ".lock"
        if path.is_dir():
            raise DamagedWorkspaceError(
                "", file=path, expected="curate's lock file", found="a folder",
                hint="remove that folder; curate makes the lock file again",
            )
        if not os.access(self.root, os.W_OK):  # a read-only file system, or (for users other than root) no permission
            read_only = bool(os.statvfs(self.root).f_flag & os.ST_RDONLY)
            code = errno.EROFS if read_only else errno.EACCES
            raise write_error(OSError(code, os.strerror(code), str(self.root)), self.root)
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise WorkspaceLockedError(
                "another curate command is changing this workspace", file=self.root,
                hint="wait for it to finish; the lock is released when that process ends",
            ) from None
        except OSError as e:
            _raise_write_error(e, path)
        try:
            yield
        finally:
            lock.release()

    # -- tables -------------------------------------------------------------
    def read_meta(self) -> dict[str, Any]:
        """``curate.json``, checked: a damaged one raises :class:`DamagedWorkspaceError`."""
        marker = self.root / MARKER
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError) as e:
            raise damaged(marker, "a JSON object", _why(e), self.root) from e
        if not isinstance(meta, dict):
            raise damaged(marker, "a JSON object", f"a JSON {type(meta).__name__}", self.root)
        return meta

    def version_dir(self) -> Path | None:
        """The folder of the committed version (``tables/<version>``); None before the first commit."""
        rel = self.read_meta().get("tables")
        if rel is None:
            return None
        if not (isinstance(rel, str) and rel.startswith(f"{TABLES_DIR}/")
                and _VERSION_NAME.match(rel[len(TABLES_DIR) + 1:])):
            raise DamagedWorkspaceError(
                "", file=self.root / MARKER, field="tables", expected="tables/<version>", found=repr(rel),
                hint=f"restore curate.json from a backup, or name one of the folders in {self.root / TABLES_DIR}",
            )
        return self.root / rel

    def table_path(self, name: str) -> Path:
        """Where the committed ``name`` (e.g. ``manifest.parquet``) is read from."""
        d = self.version_dir()
        return (d if d is not None else self.root) / name

    def _read_committed(self, read: Callable[[Path | None], Any]) -> Any:
        # A command that reads without the lock (status, report) may see a commit collect the version it
        # was reading: it then reads the new one. A file missing from the version still named is damage.
        for attempt in range(5):
            d = self.version_dir()
            try:
                return read(d)
            except FileNotFoundError as e:
                if attempt < 4 and self.version_dir() != d:
                    continue
                raise damaged(Path(e.filename or (d or self.root)), "a file of the committed tables",
                              "nothing there", self.root) from None
        raise AssertionError("unreachable")

    def _read_table(self, d: Path | None, name: str) -> pd.DataFrame:
        import pandas as pd
        import pyarrow as pa

        from curate.schema import (
            ANNOTATION_COLUMNS,
            MANIFEST_COLUMNS,
            conform,
            empty_annotations,
            empty_manifest,
        )

        columns = MANIFEST_COLUMNS if name == MANIFEST_FILE else ANNOTATION_COLUMNS
        path = (d if d is not None else self.root) / name
        if d is None and not path.exists():  # nothing committed yet
            return empty_manifest() if name == MANIFEST_FILE else empty_annotations()
        try:
            df = pd.read_parquet(path)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as e:
            raise damaged(path, "a parquet table", _why(e), self.root) from e
        missing = [c.name for c in columns if c.contract and c.name not in df.columns]
        if missing:
            raise damaged(path, f"the columns {', '.join(c.name for c in columns if c.contract)}",
                          f"no {', '.join(missing)}", self.root)
        return conform(df, columns)

    def read_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The committed manifest and annotations: one pair, from one version."""
        m, a = self._read_committed(lambda d: (self._read_table(d, MANIFEST_FILE),
                                               self._read_table(d, ANNOTATIONS_FILE)))
        return self._rebased(m), a

    def read_manifest(self) -> pd.DataFrame:
        return self._rebased(self._read_committed(lambda d: self._read_table(d, MANIFEST_FILE)))

    def read_annotations(self) -> pd.DataFrame:
        return self._read_committed(lambda d: self._read_table(d, ANNOTATIONS_FILE))  # type: ignore[no-any-return]

    def read_file(self, name: str) -> bytes | None:
        """The committed version's ``name`` (e.g. ``sources.json``); None when it has none."""
        def read(d: Path | None) -> bytes | None:
            path = (d if d is not None else self.root) / name
            try:
                return path.read_bytes()
            except FileNotFoundError:
                if d is None or name not in (MANIFEST_FILE, ANNOTATIONS_FILE):
                    return None
                raise
            except OSError as e:
                raise damaged(path, "a readable file", _why(e), self.root) from e

        return self._read_committed(read)  # type: ignore[no-any-return]

    def _rebased(self, df: pd.DataFrame) -> pd.DataFrame:
        old = self.moved_from(df)
        return rebase_paths(df, old, str(self.root)) if old is not None else df

    # -- moving -------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The contents of ``curate.json`` ({} when it cannot be read)."""
        try:
            return dict(json.loads((self.root / MARKER).read_text()))
        except (OSError, ValueError, TypeError):
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

    # -- commits ------------------------------------------------------------
    def commit(self, manifest: pd.DataFrame | None = None, annotations: pd.DataFrame | None = None,
               files: dict[str, bytes] | None = None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """Commit a new version: the tables and ``files`` given, the rest carried from the committed one.

        All or nothing: the new version is written to its own folder
        ``tables/<version>/`` and becomes the committed one by one
        ``os.replace`` of ``curate.json``. Call it under :meth:`lock`.
        Returns the tables as validated (None where not given).
        """
        from curate.schema import (
            ANNOTATION_ARROW,
            MANIFEST_ARROW,
            empty_annotations,
            empty_manifest,
            validate_annotations,
            validate_manifest,
        )

        if manifest is not None:
            manifest = validate_manifest(manifest)
        if annotations is not None:
            annotations = validate_annotations(annotations, manifest)
        meta = self.read_meta()
        previous = self.version_dir()
        version = f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}Z-{os.getpid()}-{os.urandom(3).hex()}"
        new = self.root / TABLES_DIR / version
        new.mkdir(parents=True)
        try:
            if manifest is not None:
                atomic_write_parquet(manifest, new / MANIFEST_FILE, MANIFEST_ARROW)
            if annotations is not None:
                atomic_write_parquet(annotations, new / ANNOTATIONS_FILE, ANNOTATION_ARROW)
            for name, data in (files or {}).items():
                atomic_write_bytes(new / name, data)
            for name in VERSIONED_FILES:  # carried from the committed version (or the top level of format 1)
                old = (previous if previous is not None else self.root) / name
                if not (new / name).exists() and old.exists():
                    link_or_copy(old, new / name)
            if not (new / MANIFEST_FILE).exists():
                atomic_write_parquet(empty_manifest(), new / MANIFEST_FILE, MANIFEST_ARROW)
            if not (new / ANNOTATIONS_FILE).exists():
                atomic_write_parquet(empty_annotations(), new / ANNOTATIONS_FILE, ANNOTATION_ARROW)
            fsync_dir(new)
            fsync_dir(new.parent)
            meta.update(format=WORKSPACE_FORMAT, root=str(self.root), tables=f"{TABLES_DIR}/{version}")
            atomic_write_bytes(self.root / MARKER, (json.dumps(meta, indent=2) + "\n").encode())  # the commit
        except BaseException:  # not committed: the folder is nobody's (the next commit would remove it too)
            shutil.rmtree(new, ignore_errors=True)
            raise
        fsync_dir(self.root)
        self.publish()
        self.collect_versions()
        return manifest, annotations

    def publish(self) -> None:
        """Link the committed version's files to the top level (``WS/manifest.parquet``, ...) for plain pandas.

        Idempotent; a kill between a commit and this leaves the top level one
        version behind until the next command (which calls it under the lock).
        """
        d = self.version_dir()
        if d is None:
            return
        for name in VERSIONED_FILES:
            src, dst = d / name, self.root / name
            if not src.exists():
                continue
            with contextlib.suppress(OSError):
                if os.path.samefile(src, dst):
                    continue
            tmp = self.root / f".{name}.{os.urandom(4).hex()}.tmp"
            try:
                link_or_copy(src, tmp)
                os.replace(tmp, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def collect_versions(self, keep: int = 2) -> None:
        """Remove old versions and uncommitted ones (a killed commit's): keep the committed one and the
        ``keep - 1`` before it, so that a damaged table can be restored from the previous version."""
        d = self.version_dir()
        tables = self.root / TABLES_DIR
        if d is None or not tables.is_dir():
            return
        older = sorted((p.name for p in tables.iterdir() if p.name < d.name), reverse=True)
        kept = {d.name, *older[: keep - 1]}
        for p in tables.iterdir():
            if p.name not in kept:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def remove_leftovers(self) -> None:
        """Remove what killed commands left: temporary files, uncommitted versions, an empty ``.partial/``.

        Called under the lock, so no running command owns them. ``objects/``
        is swept only after a kill (``.running`` left behind): it can hold
        millions of files.
        """
        killed = (self.root / RUNNING).exists()
        # At the top level only curate's own files' temporaries: a command that does not take the lock
        # (`curate report --out WS/report.html`) may be writing its own there right now.
        own = (MARKER, *VERSIONED_FILES)
        found = [p for p in _tmp_files(self.root) if any(p.name.startswith(f".{n}.") for n in own)]
        found += [*_tmp_files(self.runs_dir), *_tmp_files(self.root / TABLES_DIR), *_tmp_files(self.root / "cache"),
                  *_tmp_files(self.root / "exports")]
        with contextlib.suppress(OSError):  # inside each version folder too (a kill while one was written)
            for version in (self.root / TABLES_DIR).iterdir():
                if version.is_dir() and not version.is_symlink():
                    found += _tmp_files(version)
        if killed and self.objects_dir.is_dir():
            for sub in self.objects_dir.iterdir():
                found += _tmp_files(sub)
        for p in found:
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            (self.root / ".partial").rmdir()  # only when empty: an interrupted ingest's checkpoints stay
        self.publish()
        self.collect_versions()

    def write_manifest(self, df: pd.DataFrame) -> pd.DataFrame:
        """Commit ``df`` as the manifest (annotations carried). Call it under :meth:`lock`."""
        return cast("pd.DataFrame", self.commit(df)[0])

    def write_annotations(self, df: pd.DataFrame, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
        """Commit ``df`` as the annotations (manifest carried). Call it under :meth:`lock`."""
        from curate.schema import validate_annotations

        df = validate_annotations(df, manifest)
        return cast("pd.DataFrame", self.commit(annotations=df)[1])

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
            running = self.root / RUNNING
            try:
                self.remove_leftovers()
                running.touch()
                manifest, annotations = self.read_tables()
                before = status_counts(manifest)
                result = fn(manifest, options, ws=self, annotations=annotations)
                if result.write:
                    if result.objects_written:
                        sync_filesystem(self.objects_dir if self.objects_dir.exists() else self.root)
                    m, a = self.commit(result.manifest, result.annotations, result.files)
                    result.manifest = cast("pd.DataFrame", m)
                    result.annotations = a
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
            except OSError as e:
                _raise_write_error(e, self.root)
            finally:
                with contextlib.suppress(OSError):
                    running.unlink(missing_ok=True)
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


def _why(e: BaseException) -> str:
    """The first line of an exception, for a one-line message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def damaged(file: Path, expected: str, found: str, root: Path) -> DamagedWorkspaceError:
    """The one error, and the one message style, for a workspace file that exists but cannot be used.

    >>> str(damaged(Path("/ws/tables/v/manifest.parquet"), "a parquet table", "an empty file", Path("/ws")))
    '/ws/tables/v/manifest.parquet: expected a parquet table, found an empty file (the workspace is damaged: restore \
this file from a backup or from the previous version in /ws/tables/, or re-run `curate ingest SOURCE --into NEW_WS` \
into a new workspace)'
    """
    return DamagedWorkspaceError(
        "", file=file, expected=expected, found=found,
        hint=f"the workspace is damaged: restore this file from a backup or from the previous version in "
             f"{root / TABLES_DIR}/, or re-run `curate ingest SOURCE --into NEW_WS` into a new workspace",
    )


def write_error(e: OSError, root: Path) -> Exception:
    """A disk-full or read-only ``OSError`` as a one-line :class:`WorkspaceWriteError`; others as they are.

    >>> str(write_error(OSError(errno.ENOSPC, "No space left on device"), Path("/ws")))
    '/ws: expected free space to write to, found the disk full (free some space and run the command again; \
the committed tables are as they were)'
    """
    if isinstance(e, WorkspaceError):
        return e
    where = e.filename if isinstance(e.filename, str) else str(root)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return WorkspaceWriteError("", file=where, expected="free space to write to", found="the disk full",
                                   hint="free some space and run the command again; "
                                        "the committed tables are as they were")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WorkspaceWriteError("", file=where, expected="a workspace curate can write to",
                                   found="a read-only file system" if e.errno == errno.EROFS else "no permission",
                                   hint="make the folder writable, or copy the workspace somewhere writable")
    return e


def _raise_write_error(e: OSError, root: Path) -> NoReturn:
    mapped = write_error(e, root)
    if mapped is e:
        raise e
    raise mapped from e


def _tmp_files(folder: Path) -> list[Path]:
    """The temporary files (``.<name>.<random>.tmp``, as :func:`atomic_write_bytes` makes them) in ``folder``."""
    try:
        return [p for p in folder.glob(".*.tmp") if p.is_file() and not p.is_symlink()]
    except OSError:
        return []


def _only_creation_leftovers(root: Path) -> bool:
    """Whether ``root`` holds only what a workspace creation killed before ``curate.json`` leaves."""
    allowed = {"objects", "runs", TABLES_DIR, ".lock", ".partial", RUNNING}
    try:
        entries = list(root.iterdir())
        for p in entries:
            if p.name not in allowed and not (p.name.startswith(".") and p.name.endswith(".tmp")):
                return False
        return not any(f.is_file() for name in ("objects", "runs") for f in (root / name).rglob("*"))
    except OSError:
        return False


# -- sources.json: the sources ingest registered -------------------------------------------------


def load_sources(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The sources recorded by earlier runs (``sources.json`` of the committed version).

    Read by ingest (to register new sources), dedupe (their priority order),
    export (paths an export must not write into) and relocate (to move them).

    >>> import tempfile
    >>> load_sources(Workspace.create(tempfile.mkdtemp() + "/ws"))
    {}
    """
    data = ws.read_file(SOURCES_FILE)
    if data is None:
        return {}
    try:
        known = json.loads(data)
        if isinstance(known, dict) and all(isinstance(v, dict) and isinstance(v.get("path"), str)
                                           for v in known.values()):
            return known
        found = "JSON that does not map source names to {\"path\": ...}"
    except ValueError as e:
        found = f"{type(e).__name__}: {e}"
    raise damaged(ws.table_path(SOURCES_FILE), "a JSON object of sources", found, ws.root)


def sources_bytes(sources: dict[str, dict[str, Any]]) -> bytes:
    """``sources.json`` as written (committed with the tables: StageResult.files).

    >>> sources_bytes({"s": {"path": "/photos"}}).decode().split()
    ['{', '"s":', '{', '"path":', '"/photos"', '}', '}']
    """
    return (json.dumps(sources, indent=2) + "\n").encode()
