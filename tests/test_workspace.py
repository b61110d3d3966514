"""Workspace: creation, atomic tables, the single-writer lock, run records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from curate.errors import SchemaError, WorkspaceError, WorkspaceLockedError
from curate.workspace import StageResult, Workspace


def test_create_refuses_a_non_empty_folder_that_is_not_a_workspace(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceError) as e:
        Workspace.create(tmp_path / "ws")
    assert "expected an empty or new folder for the workspace, found a non-empty folder" in str(e.value)
    assert (tmp_path / "ws" / "notes.txt").read_text() == "mine"


def test_open_names_the_fix(tmp_path):
    with pytest.raises(WorkspaceError) as e:
        Workspace.open(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: expected a curate workspace, found no curate.json "
        "(create one with `curate ingest SOURCE --into WS`)"
    )


def test_second_writer_is_refused(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.lock():
        with pytest.raises(WorkspaceLockedError) as e:
            with Workspace.open(ws.root).lock():
                pass
    assert "another curate command is changing this workspace" in str(e.value)
    with ws.lock():  # released again
        pass


def test_failed_stage_writes_nothing(tmp_path):
    ws = Workspace.create(tmp_path / "ws")

    def broken(manifest, options, *, ws, annotations):
        return StageResult(pd.DataFrame([{"sample_id": "a"}]))  # violates the schema

    with pytest.raises(SchemaError):
        ws.run_stage("broken", broken, {})
    assert not ws.manifest_path.exists()
    assert ws.runs() == []


def test_put_object_is_content_addressed(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    p1, d1 = ws.put_object(b"abc", "png")
    p2, d2 = ws.put_object(b"abc", ".png")
    assert p1 == p2 and d1 == d2 and p1.parent.parent == ws.objects_dir
    assert p1.name == f"{d1}.png"


def test_objects_are_flushed_once_before_the_manifest_names_them(tmp_path, monkeypatch):
    import curate.workspace as workspace

    ws = Workspace.create(tmp_path / "ws")
    calls: list[str] = []
    real = workspace.sync_filesystem
    monkeypatch.setattr(workspace, "sync_filesystem", lambda p: calls.append("sync") or real(p))
    real_commit = Workspace.commit
    monkeypatch.setattr(Workspace, "commit", lambda self, *a: calls.append("manifest") or real_commit(self, *a))

    def stores(manifest, options, *, ws, annotations):
        ws.put_object(b"pixels", "png")
        return StageResult(manifest, objects_written=True)

    ws.run_stage("stores", stores, {})
    ws.run_stage("reads", lambda m, o, *, ws, annotations: StageResult(m), {})
    assert calls == ["sync", "manifest", "manifest"]  # one flush, before the write that needs it
    assert not list(ws.objects_dir.rglob("*.tmp"))


# -- tables and commits (docs/reliability.md#tables-and-commits) ---------------------

def boxed_ws(root, skimage_dir) -> Workspace:
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest

    ws = Workspace.create(root)
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage_dir, name="sk", layout="flat")], workers=1))
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"].head(2)
    ann = pd.DataFrame({"sample_id": kept["sample_id"], "label": "thing", "x1": 1.0, "y1": 2.0, "x2": 9.0, "y2": 8.0})
    with ws.lock():
        ws.write_annotations(ann, m)
    return ws


def test_a_commit_switches_the_pointer_and_publishes_both_tables_for_plain_pandas(tmp_path, skimage_dir):
    import json

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    meta = json.loads((ws.root / "curate.json").read_text())
    version = ws.root / meta["tables"]
    assert meta["format"] == 3 and version.parent == ws.root / "tables" and meta["parts"] == 64
    assert sorted(p.name for p in version.iterdir()) == ["annotations", "manifest", "parts.json", "sources.json"]
    m, a = ws.read_tables()
    # the top level is the committed pair, as plain pandas reads it (under the new name and the old one), in parts
    for name in ("manifest", "manifest.parquet"):
        assert (ws.root / name).resolve() == version / "manifest"
        plain = pd.read_parquet(ws.root / name).sort_values("row_order")
        assert plain["sample_id"].tolist() == m["sample_id"].tolist()
        assert plain["status"].tolist() == m["status"].tolist()
    from curate.parts import part_name, shard_of

    shards = {part_name(s) for s in shard_of(m["sample_id"], 64).tolist()}  # one file per shard that has rows
    assert {p.name for p in (version / "manifest").iterdir()} == shards and len(shards) > 1
    assert len(pd.read_parquet(ws.root / "annotations")) == len(pd.read_parquet(ws.root / "annotations.parquet")) == 2
    assert len(a) == 2
    # two versions stay (the committed one and the one before it), to restore from
    ws.run_stage("noop", lambda m, o, *, ws, annotations: StageResult(m), {})
    ws.run_stage("noop", lambda m, o, *, ws, annotations: StageResult(m), {})
    assert len(list((ws.root / "tables").iterdir())) == 2
    assert len(ws.read_annotations()) == 2  # carried by commits that did not change them


def test_a_format_1_workspace_opens_and_is_migrated(tmp_path, skimage_dir):
    import json
    import shutil

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    m, a = ws.read_tables()
    # what curate wrote before the tables had versions: the tables at the top level, curate.json without a pointer
    for name, table in (("manifest.parquet", m), ("annotations.parquet", a)):
        (ws.root / name).unlink()
        table.to_parquet(ws.root / name)
    (ws.root / "manifest").unlink()
    (ws.root / "annotations").unlink()
    data = (ws.root / "sources.json").read_bytes()
    (ws.root / "sources.json").unlink()
    (ws.root / "sources.json").write_bytes(data)
    shutil.rmtree(ws.root / "tables")
    meta = json.loads((ws.root / "curate.json").read_text())
    del meta["tables"]
    (ws.root / "curate.json").write_text(json.dumps({**meta, "format": 1}))

    opened = Workspace.open(ws.root)
    meta = json.loads((ws.root / "curate.json").read_text())
    assert meta["format"] == 3 and list((ws.root / meta["tables"] / "manifest").glob("part-*.parquet"))
    m2, a2 = opened.read_tables()
    pd.testing.assert_frame_equal(m2, m)
    pd.testing.assert_frame_equal(a2, a)


# -- tables in parts (docs/scale.md#the-manifest-in-parts) ------------------------------

FORMAT_2 = Path(__file__).resolve().parent / "workspace_format2"


def test_a_format_2_workspace_written_by_the_previous_release_is_migrated(tmp_path):
    import json
    import shutil

    shutil.copytree(FORMAT_2, tmp_path / "ws")
    root = tmp_path / "ws"
    old = json.loads((root / "curate.json").read_text())
    assert old["format"] == 2
    want_m = pd.read_parquet(root / old["tables"] / "manifest.parquet")
    want_a = pd.read_parquet(root / old["tables"] / "annotations.parquet")
    assert len(want_m) == 5 and len(want_a) == 2

    ws = Workspace.open(root)  # migrated on open
    meta = json.loads((root / "curate.json").read_text())
    assert meta["format"] == 3 and meta["parts"] == 64 and meta["tables"] != old["tables"]
    m, a = ws.read_tables()
    from curate.schema import ANNOTATION_COLUMNS, MANIFEST_COLUMNS, conform

    pd.testing.assert_frame_equal(m, conform(want_m, MANIFEST_COLUMNS))
    pd.testing.assert_frame_equal(a, conform(want_a, ANNOTATION_COLUMNS))
    # every reader reads the parts: the version's folder, the top-level link, the old name
    assert (root / "manifest").is_symlink() and (root / "manifest.parquet").is_symlink()
    assert len(pd.read_parquet(root / "manifest.parquet")) == 5
    assert ws.read_file("sources.json") == (FORMAT_2 / "sources.json").read_bytes()
    # and it works as a workspace: a stage runs on it
    from click.testing import CliRunner

    from curate.cli import cli

    res = CliRunner().invoke(cli, ["split", str(root), "--ratios", "1:1:1"])
    assert res.exit_code == 0, res.output
    after = ws.read_manifest()
    assert after.loc[after["status"] == "kept", "split"].notna().sum() == 4  # the four kept rows


def test_a_read_only_format_2_workspace_is_read_as_it_is(tmp_path):
    import json
    import shutil

    shutil.copytree(FORMAT_2, tmp_path / "ws")
    root = tmp_path / "ws"
    with Workspace(root).lock():  # busy: another command holds it, so open cannot migrate
        ws = Workspace.open(Path(root))
        assert json.loads((root / "curate.json").read_text())["format"] == 2
        assert len(ws.read_manifest()) == 5 and len(ws.read_annotations()) == 2
        assert ws.read_manifest(["sample_id", "status"]).columns.tolist() == ["sample_id", "status"]


def _relabel_one(m, o, *, ws, annotations):
    m = m.copy()
    m.loc[m.index[0], "label"] = "relabelled"
    return StageResult(m)


def test_a_commit_writes_only_the_parts_it_changed_and_links_the_others(tmp_path, skimage_dir):
    import json
    import os

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    before = ws.root / json.loads((ws.root / "curate.json").read_text())["tables"]
    m = ws.read_manifest()
    ws.run_stage("relabel", _relabel_one, {})
    after = ws.root / json.loads((ws.root / "curate.json").read_text())["tables"]
    index = json.loads((after / "parts.json").read_text())
    from curate.parts import part_name, shard_of

    changed = part_name(int(shard_of([m["sample_id"].iloc[0]], 64)[0]))
    assert [p for p, e in index["manifest"].items() if e["written"]] == [changed]
    assert not any(e["written"] for e in index["annotations"].values())  # the boxes were not given: all carried
    for part in (after / "manifest").iterdir():  # the others are the previous version's files, not copies
        same = os.path.samefile(part, before / "manifest" / part.name)
        assert same == (part.name != changed), part.name
    got = ws.read_manifest()
    assert got["sample_id"].tolist() == m["sample_id"].tolist()  # the order the stage returned, across parts
    assert got["label"].tolist() == ["relabelled", *m["label"].iloc[1:]]


def test_duckdb_and_pyarrow_read_the_manifest_in_parts_as_it_is(tmp_path, skimage_dir):
    duckdb = pytest.importorskip("duckdb", reason="DuckDB is in the scale extra (pip install 'curate[scale]')")
    import pyarrow.dataset as pads

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    m = ws.read_manifest()
    glob = f"{ws.root}/manifest/*.parquet"
    rows = duckdb.sql(f"SELECT sample_id, status FROM read_parquet('{glob}') ORDER BY row_order").fetchall()
    assert rows == list(zip(m["sample_id"], m["status"], strict=True))
    kept = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}') WHERE status = 'kept'").fetchall()
    assert kept == [((m["status"] == "kept").sum(),)]
    assert pads.dataset(ws.root / "manifest", format="parquet").count_rows() == len(m)
    files = ws.manifest_files()
    assert {p.parent for p in files} == {ws.root / ws.meta()["tables"] / "manifest"} and len(files) > 1


def test_projected_reads_give_only_the_columns_asked_for(tmp_path, skimage_dir):
    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    full = ws.read_manifest()
    part = ws.read_manifest(["sample_id", "status", "path", "width"])
    assert part.columns.tolist() == ["sample_id", "status", "path", "width"]
    pd.testing.assert_frame_equal(part, full[part.columns.tolist()])


def test_the_number_of_parts_is_fixed_per_workspace(tmp_path, skimage_dir, monkeypatch):
    monkeypatch.setenv("CURATE_PARTS", "2")
    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    version = ws.root / ws.meta()["tables"]
    assert ws.meta()["parts"] == 2 and len(list((version / "manifest").iterdir())) == 2
    monkeypatch.setenv("CURATE_PARTS", "8")  # a workspace keeps its own number
    ws.run_stage("relabel", _relabel_one, {})
    assert len(list((ws.root / ws.meta()["tables"] / "manifest").iterdir())) == 2
    with pytest.raises(WorkspaceError, match="parts: expected 1 to 4096, found 0"):
        Workspace.create(tmp_path / "other", parts=0)


def test_without_symbolic_links_the_top_level_is_a_folder_of_hard_links(tmp_path, skimage_dir, monkeypatch):
    import errno
    import os

    def no_symlinks(*a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    ws.run_stage("relabel", _relabel_one, {})
    version = ws.root / ws.meta()["tables"] / "manifest"
    top = ws.root / "manifest"
    assert top.is_dir() and not top.is_symlink()
    assert sorted(p.name for p in top.iterdir()) == sorted(p.name for p in version.iterdir())
    assert all(os.path.samefile(p, version / p.name) for p in top.iterdir())
    assert pd.read_parquet(top).sort_values("row_order")["label"].iloc[0] == "relabelled"
    assert not list(ws.root.glob(".*.tmp"))


# -- damaged workspaces (docs/reliability.md#damaged-workspaces) ---------------------

def fix(root) -> str:
    return (f"the workspace is damaged: restore this file from a backup or from the previous version in "
            f"{root}/tables/, or re-run `curate ingest SOURCE --into NEW_WS` into a new workspace")


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _no_status(p):
    pd.read_parquet(p).drop(columns=["status"]).to_parquet(p)


@pytest.mark.parametrize("name, damage, found", [
    ("manifest.parquet", _truncate, "ArrowInvalid: "),  # a kill or a copy cut short
    ("manifest.parquet", lambda p: p.write_bytes(b"\x00garbage" * 50), "ArrowInvalid: "),  # not parquet at all
    ("manifest.parquet", lambda p: p.write_bytes(b""), "ArrowInvalid: "),  # an empty file
    ("annotations.parquet", _truncate, "ArrowInvalid: "),
    ("annotations.parquet", lambda p: p.write_bytes(b""), "ArrowInvalid: "),
    ("manifest.parquet", _no_status, "no status"),  # a contract column gone: was read as "0 kept"
])
def test_a_damaged_table_gives_one_line_naming_the_file_and_the_fix(tmp_path, skimage_dir, name, damage, found):
    from click.testing import CliRunner

    from curate.cli import cli

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    part = sorted(ws.table_path(name).iterdir())[-1]  # one part of the committed table (the top level links to it)
    damage(part)
    # a writing command reads both tables; `status` reads the manifest
    for command in (["split"], ["status"]) if name == "manifest.parquet" else (["split"],):
        res = CliRunner().invoke(cli, [*command, str(ws.root)])
        assert res.exit_code == 1, res.output
        assert res.output.startswith(f"Error: {part}: expected "), res.output
        assert f", found {found}" in res.output and res.output.endswith(f"({fix(ws.root)})\n")
        assert res.output.count("\n") == 1 and "Traceback" not in res.output


@pytest.mark.parametrize("name", ["manifest.parquet", "annotations.parquet"])
def test_every_command_that_reads_a_damaged_table_gives_the_one_line(tmp_path, skimage_dir, name):
    """Issue 13 said "a raw ArrowInvalid traceback in every command": each command that reads the tables,
    writing or not, ends with the one line (no command reads them around Workspace)."""
    from click.testing import CliRunner

    from curate.cli import cli

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    part = sorted(ws.table_path(name).iterdir())[-1]  # one part of the committed table (the top level links to it)
    part.write_bytes(b"PAR1" + b"\x00" * 64)  # a parquet magic number, nothing behind it
    out = tmp_path / "out"
    commands = [["status"], ["report", "--out", str(out / "r.html")], ["dedupe"],
                ["square"], ["crop"], ["faces", "--boxes"], ["split"], ["balance"], ["check"], ["prune", "--missing"],
                ["export", "--format", "yolo", "--out", str(out)], ["relocate", "--search", str(tmp_path)],
                ["ingest", "SOURCE", "--layout", "flat"]]
    for command in commands:
        if name == "annotations.parquet" and command[0] in ("status",):
            continue  # reads the manifest only
        args = ([command[0], str(skimage_dir), "--into", str(ws.root), *command[2:]] if command[0] == "ingest"
                else [command[0], str(ws.root), *command[1:]])
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1, (command, res.output)
        assert res.output.startswith(f"Error: {part}: expected "), (command, res.output)
        assert res.output.endswith(f"({fix(ws.root)})\n") and res.output.count("\n") == 1, (command, res.output)
    assert not out.exists()


def test_a_damaged_sources_json_names_the_file_and_the_fix(tmp_path, skimage_dir):
    from click.testing import CliRunner

    from curate.cli import cli

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    (ws.root / "sources.json").write_text('{"sk": {"path": ')  # cut short
    res = CliRunner().invoke(cli, ["ingest", str(skimage_dir), "--into", str(ws.root), "--workers", "1"])
    assert res.exit_code == 1, res.output
    assert res.output == (f"Error: {ws.table_path('sources.json')}: expected a JSON object of sources, found "
                          f"JSONDecodeError: Expecting value: line 1 column 17 (char 16) ({fix(ws.root)})\n")


def test_a_damaged_curate_json_and_a_lock_folder_give_one_line(tmp_path):
    from click.testing import CliRunner

    from curate.cli import cli

    ws = Workspace.create(tmp_path / "ws")
    (ws.root / ".lock").mkdir()
    res = CliRunner().invoke(cli, ["split", str(ws.root)])
    assert res.output == (f"Error: {ws.root}/.lock: expected curate's lock file, found a folder (remove that "
                          "folder; curate makes the lock file again)\n")
    (ws.root / "curate.json").write_text("{garbage")
    res = CliRunner().invoke(cli, ["status", str(ws.root)])
    assert res.output.startswith(f"Error: {ws.root}/curate.json: expected a JSON object, found JSONDecodeError: ")
    assert res.output.endswith(f"({fix(ws.root)})\n")
