"""Publishing an export survives kills: ``--out`` is never lost, leftovers are cleaned up.

Each case runs the installed ``curate export`` in a subprocess that kills itself at
one file-system step (tests/kill_points/sitecustomize.py), then runs it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from curate.stages.export import _release, make_staging, recover, siblings
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.formats.photoset import make_photo_set

KILL_POINTS = Path(__file__).resolve().parents[1] / "kill_points"
EXE = Path(sys.executable).parent / "curate"


@pytest.fixture(scope="module")
def ws(tmp_path_factory, skimage_dir) -> Workspace:
    base = tmp_path_factory.mktemp("publish")
    photos = make_photo_set(base / "photos", skimage_dir)
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(photos.root, layout="json")], workers=1))
    return ws


def curate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    paths = [str(KILL_POINTS), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **env}
    return subprocess.run([str(EXE), *args], env=full_env, capture_output=True, text=True, timeout=300)


def export_format(out: Path) -> str | None:
    """The format of the complete export at ``out`` (its marker), None when there is none."""
    marker = out / ".curate-export.json"
    return json.loads(marker.read_text())["format"] if marker.is_file() else None


def files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("kill, env, out_after_kill", [
    # atomic exchange: killed before the swapped-out old export is removed; --out is the new one
    ("rmtree:.curate-", {}, "yolo"),
    # no exchange (no renameat2): killed between the two renames; --out is briefly missing
    ("replace:curate-old", {"CURATE_TEST_NO_RENAMEAT2": "1"}, None),
    # no exchange: killed before the renamed-aside old export is removed
    ("rmtree:curate-old", {"CURATE_TEST_NO_RENAMEAT2": "1"}, "yolo"),
    # killed while writing the staging folder: --out is untouched
    ("create:.curate-", {}, "voc"),
])
def test_a_kill_while_publishing_never_loses_out_and_the_next_export_cleans_up(ws, tmp_path, kill, env,
                                                                                out_after_kill):
    out = tmp_path / "out"
    first = curate("export", str(ws.root), "--format", "voc", "--out", str(out))
    assert first.returncode == 0, first.stderr
    voc_files = files(out)
    killed = curate("export", str(ws.root), "--format", "yolo", "--out", str(out), "--overwrite",
                    CURATE_TEST_KILL=kill, **env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert export_format(out) == out_after_kill
    assert siblings(out)  # what the kill left next to --out
    # The next export to --out puts a missing --out back first, then refuses to replace it without --overwrite.
    again = curate("export", str(ws.root), "--format", "csv", "--out", str(out))
    assert again.returncode == 1
    assert "expected an empty or new folder" in again.stderr
    assert export_format(out) == (out_after_kill or "voc")
    if out_after_kill is None or out_after_kill == "voc":
        assert files(out) == voc_files  # the old export, whole
    assert siblings(out) == []
    done = curate("export", str(ws.root), "--format", "yolo", "--out", str(out), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert export_format(out) == "yolo" and sorted(os.listdir(tmp_path)) == ["out"]


def test_sigterm_while_writing_removes_staging_as_ctrl_c_does(ws, tmp_path):
    out = tmp_path / "out"
    assert curate("export", str(ws.root), "--format", "voc", "--out", str(out)).returncode == 0
    before = files(out)
    res = curate("export", str(ws.root), "--format", "yolo", "--out", str(out), "--overwrite",
                 CURATE_TEST_KILL="create:.curate-:TERM")
    assert res.returncode == 1 and "Aborted!" in res.stderr, res.stderr  # click's answer to an interrupt
    assert sorted(os.listdir(tmp_path)) == ["out"] and files(out) == before


def test_a_staging_folder_held_by_a_running_export_is_not_removed(tmp_path):
    out = tmp_path / "out"
    staging, held = make_staging(out)
    assert held is not None
    (staging / "half.txt").write_text("being written")
    try:
        assert recover(out) == [] and staging.is_dir()
    finally:
        _release(held)
    assert recover(out) == [f"removed {staging.name}, left by an interrupted export"]
    assert os.listdir(tmp_path) == []


def test_sigterm_during_convert_leaves_nothing(tmp_path, skimage_dir):
    src = tmp_path / "src" / "cup"
    src.mkdir(parents=True)
    for name in ("coffee.png", "chelsea.png"):
        (src / name).write_bytes((skimage_dir / name).read_bytes())
    # the first file made in the staging folder is the throwaway workspace's: SIGTERM while reading the source
    res = curate("convert", str(tmp_path / "src"), "--to", "folder", "--out", str(tmp_path / "out"),
                 "--workers", "1", CURATE_TEST_KILL="create:.curate-:TERM")
    assert res.returncode == 1 and "Aborted!" in res.stderr, res.stderr
    assert os.listdir(tmp_path) == ["src"]
