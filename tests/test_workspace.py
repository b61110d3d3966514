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
    real_write = Workspace.write_manifest
    monkeypatch.setattr(Workspace, "write_manifest", lambda self, df: calls.append("manifest") or real_write(self, df))

    def stores(manifest, options, *, ws, annotations):
        ws.put_object(b"pixels", "png")
        return StageResult(manifest, objects_written=True)

    ws.run_stage("stores", stores, {})
    ws.run_stage("reads", lambda m, o, *, ws, annotations: StageResult(m), {})
    assert calls == ["sync", "manifest", "manifest"]  # one flush, before the write that needs it
    assert not list(ws.objects_dir.rglob("*.tmp"))
