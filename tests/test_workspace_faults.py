"""The workspace under faults: kill -9 at every ``os.replace`` of a stage, then a re-run, gives the
tables of one uninterrupted run, boxes included (docs/reliability.md#tables-and-commits).

The kill comes from tests/kill_at_replace/sitecustomize.py, loaded only into the
``curate`` subprocess: curate's own code is run as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from curate.errors import WorkspaceError
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace

KILLER = Path(__file__).resolve().parent / "kill_at_replace"
CURATE = Path(sys.executable).parent / "curate"
MAX_POINTS = 30  # a stage here makes about 10 replaces; more means a loop that never finishes


def curate(*args: str, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(KILLER), env.get("PYTHONPATH", "")) if p)
    env["CURATE_TEST_KILL_AT_REPLACE"] = str(kill_at)
    return subprocess.run([str(CURATE), *args], env=env, capture_output=True, text=True, timeout=300)


def tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    m, a = Workspace.open(root).read_tables()
    return (m.sort_values("sample_id").reset_index(drop=True),
            a.sort_values(["sample_id", "label", "x1", "y1"]).reset_index(drop=True))


@pytest.fixture()
def boxed(tmp_path: Path, skimage_dir: Path) -> Path:
    """A workspace of three real photos with one box each, kept at tmp_path/base (recorded at tmp_path/ws)."""
    src = tmp_path / "src"
    src.mkdir()
    boxes = {"astronaut.png": (150, 40, 330, 250), "coffee.png": (180, 60, 300, 200), "chelsea.png": (100, 30, 300, 220)}
    for name in boxes:
        Image.open(skimage_dir / name).convert("RGB").save(src / name)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="src", layout="flat", label="thing")],
                                                 workers=1))
    m = ws.read_manifest()
    ann = pd.DataFrame([{"sample_id": m.loc[m["rel_path"] == n, "sample_id"].iloc[0], "label": "thing",
                         "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "origin": "test"} for n, b in boxes.items()])
    with ws.lock():
        ws.write_annotations(ann, m)
    ws.root.rename(tmp_path / "base")
    return tmp_path / "base"


def _args(stage: list[str], ws: Path, src: Path) -> list[str]:
    """The command line of ``stage``: ``ingest`` reads ``src`` into ``ws``; the others run on ``ws``."""
    return [stage[0], str(src), "--into", str(ws), *stage[1:]] if stage[0] == "ingest" else [stage[0], str(ws), *stage[1:]]


def _start(boxed: Path, ws: Path, stage: list[str]) -> None:
    shutil.rmtree(ws, ignore_errors=True)
    if stage[0] != "ingest":  # ingest starts from nothing: a first ingest killed at each point
        shutil.copytree(boxed, ws)


@pytest.mark.slow
@pytest.mark.parametrize("stage, derived", [
    (["square", "--size", "64", "--workers", "1"], 3),  # derived rows carry their parents' boxes, moved into the square
    (["crop", "--workers", "1"], 3),  # each box becomes a patch row
    (["ingest", "--source", "src", "--layout", "flat", "--workers", "1"], 0),  # the first ingest of a source
    (["split", "--ratios", "1:1:1"], 0),  # splits assigned
    (["dedupe", "--workers", "1"], 0),  # near-duplicate search, tables rewritten
    (["faces", "--workers", "1"], 1),  # a face crop (the astronaut) with its box carried; the cats: no_face
    # two augmented copies (seeded) with their boxes carried
    (["balance", "--target", "5", "--strategy", "oversample", "--splits", "none", "--workers", "1"], 2),
])
def test_a_kill_at_every_replace_then_a_rerun_gives_the_uninterrupted_tables(boxed, stage, derived):
    ws = boxed.parent / "ws"
    src = boxed.parent / "src"
    _start(boxed, ws, stage)
    assert curate(*_args(stage, ws, src)).returncode == 0
    want_m, want_a = tables(ws)
    assert (want_m["parent_id"].notna()).sum() == derived and want_a["sample_id"].isin(want_m["sample_id"]).all()
    for point in range(1, MAX_POINTS + 1):
        _start(boxed, ws, stage)
        killed = curate(*_args(stage, ws, src), kill_at=point)
        if killed.returncode == 0:  # the run made fewer replaces than this: every point was tried
            break
        assert killed.returncode == -9, killed.stderr
        rerun = curate(*_args(stage, ws, src))
        assert rerun.returncode == 0, rerun.stderr
        got_m, got_a = tables(ws)
        pd.testing.assert_frame_equal(got_m, want_m, obj=f"manifest after a kill at replace {point}")
        pd.testing.assert_frame_equal(got_a, want_a, obj=f"annotations after a kill at replace {point}")
        # nothing left: no temporary file anywhere (faces' detection cache included), the committed version and
        # the one before it (a first ingest killed before its own commit has no version before)
        assert not list(ws.rglob("*.tmp")), point
        assert len(list((ws / "tables").iterdir())) in ((1, 2) if stage[0] == "ingest" else (2,)), point
    else:
        pytest.fail(f"{stage[0]} still running after {MAX_POINTS} replaces")
    assert point > 3


KILL_POINTS = Path(__file__).resolve().parent / "kill_points"


def _uninterrupted(boxed: Path, ws: Path, stage: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables after ``stage`` ran undisturbed; ``ws`` is then reset to the base for the faulty run."""
    _start(boxed, ws, stage)
    assert curate(*stage).returncode == 0
    want = tables(ws)
    _start(boxed, ws, stage)
    return want


def _rerun_matches(ws: Path, stage: list[str], want: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """A re-run after the fault gives the uninterrupted tables and leaves no temporary file."""
    assert curate(*stage).returncode == 0
    for got, exp in zip(tables(ws), want, strict=True):
        pd.testing.assert_frame_equal(got, exp)
    assert not list(ws.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    "create:objects",  # before the first derived image is created
    "create:tables",  # before the new version's first table file is created
    "create:runs",  # before the run record is created, after the commit
])
def test_a_kill_at_a_file_creation_then_a_rerun_gives_the_uninterrupted_tables(boxed, kill):
    ws = boxed.parent / "ws"
    stage = ["square", str(ws), "--size", "64", "--workers", "1"]
    want = _uninterrupted(boxed, ws, stage)
    env = dict(os.environ, CURATE_TEST_KILL=kill,
               PYTHONPATH=os.pathsep.join(p for p in (str(KILL_POINTS), os.environ.get("PYTHONPATH", "")) if p))
    killed = subprocess.run([str(CURATE), *stage], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    _rerun_matches(ws, stage, want)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_kill_at_a_random_moment_then_a_rerun_gives_the_uninterrupted_tables(boxed, seed):
    import random
    import signal
    import time

    ws = boxed.parent / "ws"
    stage = ["crop", str(ws), "--margin", "0.1", "--workers", "1"]
    want = _uninterrupted(boxed, ws, stage)
    proc = subprocess.Popen([str(CURATE), *stage], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.3, 3.0))  # start-up, reading, cutting or committing
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _rerun_matches(ws, stage, want)


# -- disk full and read-only (docs/reliability.md#disk-full-and-read-only) -----------

@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 8 MB file system (tmpfs), so that writes fail with ENOSPC as on a full disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {out.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system to the last byte; return the file that holds the space."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def committed(ws: Path) -> dict[str, bytes]:
    """curate.json and every file of the tables it names (the parts the top-level links lead to)."""
    files = sorted(p for name in ("manifest", "annotations") for p in (ws / name).iterdir())
    return {"curate.json": (ws / "curate.json").read_bytes(), **{str(p.resolve()): p.read_bytes() for p in files}}


@pytest.mark.parametrize("command", [
    ["square", "--workers", "1"],
    ["dedupe"],
    ["split"],
    ["ingest", "SOURCE", "--source", "again", "--layout", "flat", "--workers", "1"],
])
def test_a_full_disk_ends_in_one_line_and_leaves_the_tables(small_disk, skimage_dir, command):
    from click.testing import CliRunner

    from curate.cli import cli

    ws = Workspace.create(small_disk / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage_dir, name="sk", layout="flat")], workers=1))
    filler = fill(small_disk)
    before = committed(ws.root)
    args = ([command[0], str(ws.root), *command[1:]] if command[0] != "ingest"
            else ["ingest", str(skimage_dir), "--into", str(ws.root), *command[2:]])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert res.output.endswith(": expected free space to write to, found the disk full (free some space and run "
                               "the command again; the committed tables are as they were)\n")
    assert committed(ws.root) == before
    filler.unlink()
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert len(list((ws.root / "tables").iterdir())) == 2  # no version of the failed run stays behind


def test_a_read_only_workspace_is_refused_at_the_lock_by_every_writing_command(small_disk, skimage_dir):
    from click.testing import CliRunner

    from curate.cli import cli

    ws = Workspace.create(small_disk / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage_dir, name="sk", layout="flat")], workers=1))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    want = (f"Error: {ws.root}: expected a workspace curate can write to, found a read-only file system "
            "(make the folder writable, or copy the workspace somewhere writable)\n")
    for args in (["ingest", str(skimage_dir), "--into"], ["dedupe"], ["square"], ["split"], ["balance"],
                 ["faces", "--boxes"], ["crop"], ["prune", "--missing"], ["check"]):
        res = CliRunner().invoke(cli, [*args, str(ws.root)])
        assert (res.exit_code, res.output) == (1, want), args
    res = CliRunner().invoke(cli, ["status", str(ws.root)])  # reading still works
    assert res.exit_code == 0 and "kept" in res.output


# -- leftovers and modes (docs/reliability.md#leftovers) ---------------------------------

def test_a_kill_while_the_first_ingest_creates_the_workspace_does_not_block_the_next(tmp_path, skimage_dir):
    ws = tmp_path / "ws"
    args = ("ingest", str(skimage_dir), "--into", str(ws), "--layout", "flat", "--workers", "1")
    killed = curate(*args, kill_at=1)  # the first replace is curate.json's: objects/ and runs/ are made
    assert killed.returncode == -9 and not (ws / "curate.json").exists() and (ws / "objects").is_dir()
    rerun = curate(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert len(Workspace.open(ws).read_manifest()) > 20
    assert not [p for p in ws.rglob("*.tmp")]


def test_a_folder_with_a_file_of_its_own_is_still_refused(tmp_path):
    (tmp_path / "ws" / "objects").mkdir(parents=True)
    (tmp_path / "ws" / "objects" / "mine.png").write_bytes(b"x")
    with pytest.raises(WorkspaceError, match="found a non-empty folder that is not a curate workspace"):
        Workspace.create(tmp_path / "ws")


def test_temporary_files_of_killed_commands_are_removed_by_the_next_run(boxed):
    ws = boxed.parent / "ws"
    shutil.copytree(boxed, ws)
    # kill square at each of its first replaces: objects, run records and tables leave their temporaries
    for point in (1, 2, 3):
        assert curate("square", str(ws), "--workers", "1", kill_at=point).returncode == -9
    left = list(ws.rglob("*.tmp"))
    assert left, "the kills left no temporary file to clean up"
    report = ws / ".report.html.keepme.tmp"  # another command's, writing now: not curate's to remove
    report.write_bytes(b"<html>")
    assert curate("square", str(ws), "--workers", "1").returncode == 0
    assert list(ws.rglob("*.tmp")) == [report]
    assert not (ws / ".running").exists() and not (ws / ".partial").exists()


def test_files_curate_writes_get_the_umask_modes(tmp_path, skimage_dir):
    ws = tmp_path / "ws"
    env_umask = "umask 022 && "
    out = subprocess.run(["bash", "-c", env_umask + " ".join([
        str(CURATE), "ingest", str(skimage_dir), "--into", str(ws), "--layout", "flat", "--workers", "1", "&&",
        str(CURATE), "square", str(ws), "--size", "32", "--workers", "1", "&&",
        str(CURATE), "report", str(ws), "--out", str(ws / "report.html")])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    files = [p for p in ws.rglob("*") if p.is_file() and p.name != ".lock"]
    assert any(p.parent.parent.name == "objects" for p in files) and (ws / "report.html") in files
    assert {str(p.relative_to(ws)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o644} == {}
