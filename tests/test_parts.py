"""Tables in parts: stable shards, parts carried when unchanged, the order kept, damage named by part."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pytest

from curate.parts import (
    ORDER_COLUMN,
    MissingColumnsError,
    part_files,
    part_name,
    read_parts,
    shard_of,
    write_parts,
)
from curate.workspace import link_or_copy


def table(labels: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [f"id{i:04d}" for i in range(len(labels))], "label": labels}, dtype=object)


def test_a_shard_depends_on_the_id_only():
    ids = [f"id{i}" for i in range(1000)]
    assert shard_of(ids, 16).tolist() == shard_of(list(reversed(ids)), 16).tolist()[::-1]
    counts = pd.Series(shard_of(ids, 16)).value_counts()
    assert len(counts) == 16 and counts.max() < 2 * counts.min()  # crc32 spreads ids evenly


def test_parts_read_back_in_the_order_written(tmp_path):
    t = table(["cat", "dog", None, "cow"] * 50)
    index = write_parts(t, tmp_path / "v1", 8)
    assert sorted(index) == [p.name for p in part_files(tmp_path / "v1")] and len(index) > 1
    assert sum(e["rows"] for e in index.values()) == 200 and all(e["written"] for e in index.values())
    assert read_parts(part_files(tmp_path / "v1")).equals(pa.Table.from_pandas(t, preserve_index=False))
    plain = pd.read_parquet(tmp_path / "v1").sort_values(ORDER_COLUMN)  # plain pandas reads the folder
    assert plain["sample_id"].tolist() == t["sample_id"].tolist()


def test_only_changed_parts_are_written_the_others_linked(tmp_path):
    labels = ["cat"] * 100
    old = write_parts(table(labels), tmp_path / "v1", 8)
    labels[42] = "dog"
    new = write_parts(table(labels), tmp_path / "v2", 8, previous=tmp_path / "v1", previous_index=old,
                      link=link_or_copy)
    written = [name for name, e in new.items() if e["written"]]
    assert written == [part_name(int(shard_of(["id0042"], 8)[0]))]
    for name in new:
        assert os.path.samefile(tmp_path / "v1" / name, tmp_path / "v2" / name) == (name not in written)
    assert read_parts(part_files(tmp_path / "v2")).column("label").to_pylist() == labels


def test_a_new_column_rewrites_every_part(tmp_path):
    old = write_parts(table(["cat"] * 50), tmp_path / "v1", 4)
    wider = table(["cat"] * 50).assign(score=1.0)
    new = write_parts(wider, tmp_path / "v2", 4, previous=tmp_path / "v1", previous_index=old, link=link_or_copy)
    assert all(e["written"] for e in new.values())


def test_an_empty_table_has_one_empty_part_with_its_schema(tmp_path):
    index = write_parts(table([]), tmp_path / "v1", 8)
    assert list(index) == [part_name(0)]
    back = read_parts(part_files(tmp_path / "v1"))
    assert back.num_rows == 0 and back.column_names == ["sample_id", "label"]


def test_projected_read_and_a_part_missing_a_column(tmp_path):
    write_parts(table(["cat", "dog"] * 20), tmp_path / "v1", 4)
    assert read_parts(part_files(tmp_path / "v1"), ["label"]).column_names == ["label"]
    victim = part_files(tmp_path / "v1")[0]
    pd.read_parquet(victim).drop(columns=["label"]).to_parquet(victim)
    with pytest.raises(MissingColumnsError) as e:
        read_parts(part_files(tmp_path / "v1"), required=["sample_id", "label"])
    assert e.value.part_file == victim and e.value.missing == ["label"]
    victim.write_bytes(b"garbage")
    with pytest.raises(pa.ArrowException) as e2:
        read_parts(part_files(tmp_path / "v1"))
    assert e2.value.part_file == victim  # type: ignore[attr-defined]
