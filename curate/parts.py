"""A table in parts: one parquet file per stable shard of ``sample_id``, for the workspace's versions.

A workspace (format 3) keeps each committed table as a folder of parts,
``tables/<version>/manifest/part-00017.parquet``: the row whose ``sample_id``
is ``s`` lives in part ``crc32(utf8(s)) mod N``, where ``N`` is fixed when the
workspace is created and recorded in ``curate.json`` (``"parts"``). A commit
writes only the parts whose rows changed; the others are hard links of the
previous version's files (docs/scale.md#the-manifest-in-parts). Whether a part
changed is decided by a digest of its parquet bytes (encoded in memory first:
equal rows and schema give equal bytes), kept per version in ``parts.json``.

Each part holds a ``row_order`` column, the row's position in the table as the
stage returned it: curate reads the parts back in that order, so a stage sees
the rows in the order the previous stage left them, as it did with one file.
Plain pandas (``pd.read_parquet("WS/manifest")``) and DuckDB
(``read_parquet('WS/manifest/*.parquet')``) read the folder as it is; sort by
``row_order`` for curate's order.

    >>> shard_of(["a", "b", "a"], 8).tolist()
    [3, 1, 3]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

ORDER_COLUMN = "row_order"
DEFAULT_PARTS = 64  # about 16k rows a part at 1M rows, 1.6M at 100M; tiny workspaces write one file per row
MAX_PARTS = 4096
PARTS_ENV = "CURATE_PARTS"  # the number of parts of a workspace created from now on
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"


def part_name(shard: int) -> str:
    """The file name of one part.

    >>> part_name(17)
    'part-00017.parquet'
    """
    return f"{PART_PREFIX}{shard:05d}{PART_SUFFIX}"


def default_parts() -> int:
    """The number of parts of a new workspace: ``$CURATE_PARTS``, else :data:`DEFAULT_PARTS`."""
    raw = os.environ.get(PARTS_ENV, "")
    try:
        n = int(raw) if raw.strip() else DEFAULT_PARTS
    except ValueError:
        n = DEFAULT_PARTS
    return min(max(n, 1), MAX_PARTS)


def shard_of(sample_ids: Iterable[str], n_parts: int) -> np.ndarray:
    """The part of each ``sample_id``: ``crc32(utf8(sample_id)) mod n_parts`` (stable across versions)."""
    import numpy as np

    crc = zlib.crc32
    return np.fromiter((crc(s.encode()) % n_parts for s in sample_ids), dtype=np.int64)


def part_files(folder: Path) -> list[Path]:
    """The part files of a table folder, in part order (temporary and hidden files left out)."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX))
    except FileNotFoundError:
        raise
    return [folder / n for n in names]


def _encode(table: pa.Table) -> Any:
    """The part's parquet file, in memory. Parquet stores no bytes under nulls and no timestamps, so equal rows
    (and schema) give equal bytes, which Arrow's own buffers do not promise (measured: equal parts converted
    from pandas twice gave different IPC bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_parts(df: pd.DataFrame, folder: Path, n_parts: int, *, to_arrow: Callable[[pd.DataFrame], pa.Table]
                | None = None, previous: Path | None = None, previous_index: dict[str, Any] | None = None,
                link: Callable[[Path, Path], None] | None = None) -> dict[str, Any]:
    """Write ``df`` (with a ``sample_id`` column) into ``folder`` as parts; return the index of the parts.

    Each part is converted to Arrow on its own (``to_arrow``, which must give
    every part the same schema), so the write holds one part's Arrow copy at
    a time, not the whole table's. ``folder`` is a new, uncommitted folder:
    files are written under their final names (nobody reads the folder before
    the commit names it) and fsynced. A part whose digest equals the one in
    ``previous_index`` (the index of the previous version's ``previous``
    folder) is hard-linked from there with ``link(src, dst)`` instead of
    written. A table without rows gets one empty part, so that readers find
    its schema.
    """
    import numpy as np
    import pyarrow as pa

    convert = to_arrow or (lambda d: pa.Table.from_pandas(d, preserve_index=False))
    folder.mkdir(parents=True, exist_ok=True)
    n = len(df)
    shards = shard_of(df["sample_id"].tolist(), n_parts) if n else np.zeros(0, dtype=np.int64)
    order = np.argsort(shards, kind="stable")  # rows keep the table's order inside their part
    counts = np.bincount(shards, minlength=n_parts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    old = (previous_index or {})
    index: dict[str, Any] = {}
    for shard in (np.nonzero(counts)[0].tolist() if n else [0]):
        # a fresh copy of the part's rows: its bytes, and so its digest, depend on its own rows only
        rows = order[starts[shard]:starts[shard + 1]]
        part = convert(df.iloc[rows])
        part = part.append_column(ORDER_COLUMN, pa.array(rows.astype(np.int64)))
        name = part_name(shard)
        data = _encode(part)
        digest = hashlib.blake2b(memoryview(data), digest_size=16).hexdigest()
        dst = folder / name
        entry = old.get(name)
        if previous is not None and link is not None and isinstance(entry, dict) and entry.get("digest") == digest:
            with contextlib.suppress(FileNotFoundError):  # the previous file gone: written again below
                link(previous / name, dst)
                index[name] = {"rows": part.num_rows, "digest": digest, "written": False}
                continue
        with open(dst, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        index[name] = {"rows": part.num_rows, "digest": digest, "written": True}
    return index


class MissingColumnsError(ValueError):
    """A part without some of the columns every part must have."""

    def __init__(self, path: Path, missing: list[str]) -> None:
        super().__init__(f"{path}: no {', '.join(missing)}")
        self.part_file, self.missing = path, missing


def read_parts(files: Sequence[Path], columns: Sequence[str] | None = None,
               required: Sequence[str] = ()) -> pa.Table:
    """The rows of ``files`` (the parts of one table) in ``row_order``, without that column.

    Raises the reader's own error (``ArrowException``, ``OSError``) with the
    file it came from as ``error.part_file``, and :class:`MissingColumnsError`
    for a part without one of the ``required`` columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = None if columns is None else [*dict.fromkeys([*columns, ORDER_COLUMN])]
    tables = []
    for path in files:
        try:
            schema = pq.read_schema(path)
            missing = [c for c in required if c not in schema.names]
            if missing:
                raise MissingColumnsError(path, missing)
            want = None if cols is None else [c for c in cols if c in schema.names]
            tables.append(pq.read_table(path, columns=want))
        except MissingColumnsError:
            raise
        except (pa.ArrowException, OSError, ValueError) as e:
            e.part_file = path  # type: ignore[union-attr]
            raise
    if not tables:
        raise FileNotFoundError(0, "no parts")
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if ORDER_COLUMN in table.column_names:
        table = table.sort_by(ORDER_COLUMN).drop_columns([ORDER_COLUMN])
    return table
