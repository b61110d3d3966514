"""The workspace under faults: kill -9 at every ``os.replace``, at file creations and at random moments of
each stage, then a re-run, gives the tables (and export tree) of one uninterrupted run, boxes included
(docs/reliability.md#fault-injection-in-the-suite); a full disk, a read-only workspace, and what kills leave.

The kills come from tests/kill_points/sitecustomize.py and tests/kill_at_replace/sitecustomize.py, loaded
only into the ``curate`` subprocess: curate's own code is run as it is.
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


def _start(boxed: Path, ws: Path, stage: list[str]) -> None:
    shutil.rmtree(ws, ignore_errors=True)
    if stage[0] != "ingest":  # ingest starts from nothing: a first ingest killed at each point
        shutil.copytree(boxed, ws)


@pytest.mark.slow
@pytest.mark.parametrize("stage_run, derived", [
    ("square", 3),  # derived rows carry their parents' boxes, moved into the square
    ("crop", 3),  # each box becomes a patch row
    ("ingest", 0),  # the first ingest of a source
    ("split", 0),  # splits assigned
    ("dedupe", 0),  # near-duplicate search, tables rewritten
    ("faces", 1),  # a face crop (the astronaut) with its box carried; the cats: no_face
    ("balance", 2),  # two augmented copies (seeded) with their boxes carried
], indirect=["stage_run"])
def test_a_kill_at_every_replace_then_a_rerun_gives_the_uninterrupted_tables(stage_run, derived):
    """Kill -9 right before each ``os.replace`` of the stage (every atomic write's publish step: objects,
    table files, ``curate.json``, the top-level links, run records), re-run, and compare every column of both
    tables with one uninterrupted run. The replaces are found at run time from that run's step log
    (tests/kill_points/sitecustomize.py), 7 to 12 a stage here, all killed; a layout that makes more than
    MAX_REPLACE_KILLS (24) is sampled evenly.
    """
    run = stage_run
    run.reset()
    log = run.ws.parent / "steps.log"
    done = run.run(CURATE_TEST_STEPS=str(log))
    assert done.returncode == 0, done.stderr
    want = run.state()
    m, a = want["manifest"], want["annotations"]
    assert (m["parent_id"].notna()).sum() == derived and a["sample_id"].isin(m["sample_id"]).all()  # type: ignore
    steps = [line.split("\t", 1) for line in log.read_text().splitlines()]
    points = [i for i, (kind, path) in enumerate(steps, 1) if kind == "replace" and path.startswith(str(run.ws.parent))]
    assert len(points) > 3, steps
    for point in sample_points(points, MAX_REPLACE_KILLS):
        run.reset()
        killed = run.run(CURATE_TEST_KILL=f"step:{point}")
        what = f"a kill before replace {point} ({steps[point - 1][1]})"
        assert killed.returncode == -9, f"{what}: {killed.stderr}"
        run.check_rerun(want, what)
        # the committed version and the one before it (a first ingest killed before its own commit has none)
        assert len(list((run.ws / "tables").iterdir())) in ((1, 2) if run.stage == "ingest" else (2,)), what


MAX_REPLACE_KILLS = 24


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
    return {n: (ws / n).read_bytes() for n in ("curate.json", "manifest.parquet", "annotations.parquet")}


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


# -- kill -9 at every write step and at random moments, per stage (issue 13) ----------------------------

# The command of each stage, run on a copy of the `boxed` workspace ({ws}); {src} is its source folder and
# {out} an export folder that already holds an earlier curate export (so export's publish swaps it).
STAGE_COMMANDS = {
    "ingest": ["ingest", "{src}", "--into", "{ws}", "--source", "src", "--layout", "flat", "--workers", "1"],
    "dedupe": ["dedupe", "{ws}", "--workers", "1"],
    "faces": ["faces", "{ws}", "--workers", "1"],
    "square": ["square", "{ws}", "--size", "64", "--workers", "1"],
    "crop": ["crop", "{ws}", "--margin", "0.1", "--workers", "1"],
    "split": ["split", "{ws}", "--ratios", "1:1:1"],
    "balance": ["balance", "{ws}", "--target", "5", "--strategy", "oversample", "--splits", "none", "--workers", "1"],
    "export": ["export", "{ws}", "--format", "yolo", "--out", "{out}", "--overwrite"],
    "review-pull": ["review", "{ws}", "--pull"],
}
# Stages whose every os.replace is killed by test_a_kill_at_every_replace_...: here only their creations.
REPLACES_COVERED = {"ingest", "dedupe", "faces", "square", "crop", "split", "balance"}
# Kill points a stage: write steps (sampled evenly from those found at run time), then seeded random moments.
# review --pull starts FiftyOne and its database client in each run (about 15 s here): fewer points.
STEP_KILLS = {"review-pull": 4}
RANDOM_KILLS = {"review-pull": 1}
MAX_STEP_KILLS, MAX_RANDOM_KILLS = 6, 2


class StageRun:
    """One stage's command on a fresh copy of a base workspace (and, for export, of an earlier export)."""

    def __init__(self, boxed: Path, stage: str, base_out: Path | None = None) -> None:
        self.stage, self.base, self.base_out = stage, boxed, base_out
        self.ws, self.src, self.out = boxed.parent / "ws", boxed.parent / "src", boxed.parent / "out"
        self.args = [a.format(ws=self.ws, src=self.src, out=self.out) for a in STAGE_COMMANDS[stage]]

    def reset(self) -> None:
        shutil.rmtree(self.ws, ignore_errors=True)
        if self.stage != "ingest":  # ingest starts from nothing: a first ingest
            shutil.copytree(self.base, self.ws)
        if self.stage == "review-pull":  # the dataset back to the base's decisions (the tags stay)
            from curate.stages.review import dataset_name, sync_dataset

            ws = Workspace.open(self.ws)
            with ws.lock():
                sync_dataset(ws, *ws.read_tables(), dataset_name(ws.root))
        if self.base_out is not None:
            shutil.rmtree(self.out, ignore_errors=True)
            for p in self.out.parent.glob(f".{self.out.name}.curate-*"):
                shutil.rmtree(p)
            shutil.copytree(self.base_out, self.out)

    def env(self, **extra: str) -> dict[str, str]:
        paths = [str(KILL_POINTS), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}

    def run(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CURATE), *self.args], env=self.env(**extra), capture_output=True, text=True,
                              timeout=300)

    def state(self) -> dict[str, object]:
        """Both tables, every column, and the export tree (each file's bytes; the marker without its time)."""
        m, a = tables(self.ws)
        got: dict[str, object] = {"manifest": m, "annotations": a}
        if self.base_out is not None:
            tree = {}
            for p in sorted(self.out.rglob("*")):
                if p.is_file():
                    data = p.read_bytes()
                    if p.name == ".curate-export.json":
                        import json
                        marker = json.loads(data)
                        for timing in ("written", "export_id"):
                            assert marker.pop(timing)
                        data = json.dumps(marker, sort_keys=True).encode()
                    tree[str(p.relative_to(self.out))] = data
            got["export"] = tree
        if self.stage == "review-pull":  # what the App shows: each sample's decision
            import fiftyone as fo

            from curate.stages.review import dataset_name

            ds = fo.load_dataset(dataset_name(self.ws))
            ds.reload()
            got["dataset"] = sorted(zip(*(ds.values(f) for f in ("sample_id", "status", "reason", "label.label")),
                                        strict=True))
        return got

    def check_rerun(self, want: dict[str, object], what: str) -> None:
        if self.stage == "review-pull":  # in this process, where FiftyOne is loaded already
            from click.testing import CliRunner

            from curate.cli import cli

            res = CliRunner().invoke(cli, self.args)
            assert res.exit_code == 0, f"{what}: {res.output}"
        else:
            rerun = self.run()
            assert rerun.returncode == 0, f"{what}: {rerun.stderr}"
        got = self.state()
        pd.testing.assert_frame_equal(got["manifest"], want["manifest"], obj=f"manifest after {what}")
        pd.testing.assert_frame_equal(got["annotations"], want["annotations"], obj=f"annotations after {what}")
        assert got.get("dataset") == want.get("dataset"), what
        if "export" in want:
            assert sorted(got["export"]) == sorted(want["export"]), what  # type: ignore[call-overload]
            assert got["export"] == want["export"], what
            assert not list(self.out.parent.glob(f".{self.out.name}.curate-*")), what  # nothing left beside --out
        assert not list(self.ws.rglob("*.tmp")), what
        assert not (self.ws / RUNNING_FILE).exists() and not (self.ws / ".partial").exists(), what


RUNNING_FILE = ".running"


def sample_points(points: list[int], most: int) -> list[int]:
    """At most ``most`` of ``points``, evenly spread, first and last included (deterministic).

    >>> sample_points(list(range(1, 21)), 5)
    [1, 6, 11, 15, 20]
    """
    if len(points) <= most:
        return points
    return sorted({points[round(i * (len(points) - 1) / (most - 1))] for i in range(most)})


@pytest.fixture()
def stage_run(request, boxed: Path, tmp_path: Path) -> StageRun:
    """The stage named by the test's ``stage`` parameter, ready to run; review-pull gets its FiftyOne
    dataset (a real mongod, tests/conftest.py's ``fiftyone_env``) with two tagged samples."""
    stage = request.param
    base_out = None
    if stage == "export":  # an earlier export at --out: the new one replaces it
        base_out = tmp_path / "out-before"
        first = subprocess.run([str(CURATE), "export", str(boxed), "--format", "voc", "--out", str(base_out)],
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
    if stage == "review-pull":
        request.getfixturevalue("fiftyone_env")
        from curate.stages.review import review

        ws = tmp_path / "ws"
        shutil.copytree(boxed, ws)
        ds = request.getfixturevalue("fiftyone_env").load_dataset(review(Workspace.open(ws)).summary["dataset"])
        m = Workspace.open(ws).read_manifest().set_index("rel_path")
        ds.match({"sample_id": m.loc["coffee.png", "sample_id"]}).tag_samples(["reject"])
        ds.match({"sample_id": m.loc["chelsea.png", "sample_id"]}).tag_samples(["label:cat"])
        shutil.rmtree(boxed)
        ws.rename(boxed)
    return StageRun(boxed, stage, base_out)


@pytest.mark.slow
@pytest.mark.parametrize("stage_run", list(STAGE_COMMANDS), indirect=True)
def test_a_kill_at_write_steps_and_random_moments_then_a_rerun_gives_the_uninterrupted_result(stage_run):
    """Kill -9 the stage's process, then re-run it: both tables, every column, the export tree and (for
    review --pull) the FiftyOne dataset's decisions equal one uninterrupted run's, and nothing temporary stays.

    Where it is killed:
    - right before a write step: each creation of a file or folder, and for export and review --pull
      each ``os.replace`` too (the other stages' replaces are all killed by the test above). The steps
      are found at run time (tests/kill_points/sitecustomize.py logs them during the uninterrupted run),
      so a new table layout is covered as it is. At most MAX_STEP_KILLS (6) a stage, 4 for review --pull,
      evenly spread over its steps (11 to 37 of them here, depending on the stage);
    - at MAX_RANDOM_KILLS (2) seeded random moments (1 for review --pull), spread over the time the
      uninterrupted run took: start-up, reading, writing or committing.

    The re-run of review --pull runs in this process (FiftyOne is loaded here already); every killed run
    is a ``curate`` subprocess.
    """
    import random
    import signal
    import time

    run = stage_run
    run.reset()
    log = run.ws.parent / "steps.log"
    t0 = time.monotonic()
    done = run.run(CURATE_TEST_STEPS=str(log))
    duration = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    want = run.state()
    steps = [line.split("\t", 1) for line in log.read_text().splitlines()]
    # curate's own steps (in the workspace, --out and beside it), not FiftyOne's or the libraries' temporary files
    points = [i for i, (kind, path) in enumerate(steps, 1) if path.startswith(str(run.ws.parent))
              and (kind != "replace" or run.stage not in REPLACES_COVERED)]
    assert len(points) >= 4, steps
    for point in sample_points(points, STEP_KILLS.get(run.stage, MAX_STEP_KILLS)):
        run.reset()
        killed = run.run(CURATE_TEST_KILL=f"step:{point}")
        what = f"a kill before step {point} ({' '.join(steps[point - 1])})"
        assert killed.returncode == -9, f"{what}: {killed.stderr}"
        run.check_rerun(want, what)
    rng = random.Random(f"{run.stage}-13")
    for _ in range(RANDOM_KILLS.get(run.stage, MAX_RANDOM_KILLS)):
        run.reset()
        delay = rng.uniform(0.1, duration)
        proc = subprocess.Popen([str(CURATE), *run.args], env=run.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        run.check_rerun(want, f"a kill after {delay:.2f} s of {duration:.2f} s")


@pytest.mark.parametrize("command", [["report", "--out"], ["dedupe", "--workers", "1", "--report"]])
def test_a_killed_file_output_leaves_a_temporary_that_the_next_run_removes(boxed, tmp_path, command):
    """`report --out FILE` and `dedupe --report FILE` write FILE atomically beside itself, outside any workspace
    sweep: a kill before the rename left `.FILE.*.tmp` there for good. The next write to FILE removes it, but
    not one that a running write holds."""
    ws = boxed.parent / "ws"
    shutil.copytree(boxed, ws)
    out = tmp_path / "outputs" / ("r.html" if command[0] == "report" else "dups.csv")
    out.parent.mkdir()
    args = [command[0], str(ws), *command[1:], str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(KILL_POINTS), os.environ.get("PYTHONPATH", ""))
                                                      if p))
    log = tmp_path / "steps.log"
    assert subprocess.run([str(CURATE), *args], env={**env, "CURATE_TEST_STEPS": str(log)}, capture_output=True,
                          timeout=300).returncode == 0
    steps = log.read_text().splitlines()
    point = steps.index(f"replace\t{out}") + 1  # right before the temporary becomes FILE
    shutil.rmtree(ws)  # as before the counted run, so that the same steps come in the same order
    shutil.copytree(boxed, ws)
    shutil.rmtree(out.parent)
    out.parent.mkdir()
    killed = subprocess.run([str(CURATE), *args], env={**env, "CURATE_TEST_KILL": f"step:{point}"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    left = list(out.parent.glob(f".{out.name}.*.tmp"))
    assert len(left) == 1
    import fcntl

    busy = out.parent / f".{out.name}.writing.tmp"  # another process's write in progress: held
    with open(busy, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        again = subprocess.run([str(CURATE), *args], capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert list(out.parent.glob(f".{out.name}.*.tmp")) == [busy]
