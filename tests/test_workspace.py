"""Workspace: creation, atomic tables, the single-writer lock, run records."""

from __future__ import annotations

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
    assert meta["format"] == 2 and version.parent == ws.root / "tables"
    assert sorted(p.name for p in version.iterdir()) == ["annotations.parquet", "manifest.parquet", "sources.json"]
    m, a = ws.read_tables()
    # the top level is the committed pair, as plain pandas reads it
    plain = pd.read_parquet(ws.root / "manifest.parquet")
    assert plain["sample_id"].tolist() == m["sample_id"].tolist() and plain["status"].tolist() == m["status"].tolist()
    assert len(pd.read_parquet(ws.root / "annotations.parquet")) == len(a) == 2
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
    for name in ("manifest.parquet", "annotations.parquet", "sources.json"):
        data = (ws.root / name).read_bytes()
        (ws.root / name).unlink()
        (ws.root / name).write_bytes(data)
    shutil.rmtree(ws.root / "tables")
    meta = json.loads((ws.root / "curate.json").read_text())
    del meta["tables"]
    (ws.root / "curate.json").write_text(json.dumps({**meta, "format": 1}))

    opened = Workspace.open(ws.root)
    meta = json.loads((ws.root / "curate.json").read_text())
    assert meta["format"] == 2 and (ws.root / meta["tables"] / "manifest.parquet").exists()
    m2, a2 = opened.read_tables()
    pd.testing.assert_frame_equal(m2, m)
    pd.testing.assert_frame_equal(a2, a)


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
    damage(ws.root / name)  # the top-level file is the committed one: written in place, both are damaged
    # a writing command reads both tables; `status` reads the manifest
    for command in (["split"], ["status"]) if name == "manifest.parquet" else (["split"],):
        res = CliRunner().invoke(cli, [*command, str(ws.root)])
        assert res.exit_code == 1, res.output
        assert res.output.startswith(f"Error: {ws.table_path(name)}: expected ")
        assert f", found {found}" in res.output and res.output.endswith(f"({fix(ws.root)})\n")
        assert res.output.count("\n") == 1 and "Traceback" not in res.output


@pytest.mark.parametrize("name", ["manifest.parquet", "annotations.parquet"])
def test_every_command_that_reads_a_damaged_table_gives_the_one_line(tmp_path, skimage_dir, name):
    """Issue 13 said "a raw ArrowInvalid traceback in every command": each command that reads the tables,
    writing or not, ends with the one line (no command reads them around Workspace)."""
    from click.testing import CliRunner

    from curate.cli import cli

    ws = boxed_ws(tmp_path / "ws", skimage_dir)
    (ws.root / name).write_bytes(b"PAR1" + b"\x00" * 64)  # a parquet magic number, nothing behind it
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
        assert res.output.startswith(f"Error: {ws.table_path(name)}: expected "), (command, res.output)
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
