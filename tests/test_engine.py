"""curate.engine: per-image stages on Ray Data give what the local pool gives, on a real 2-node
local Ray cluster (``ray.cluster_utils.Cluster``): ingest -> faces -> crop -> square -> export identical,
a worker node removed mid-run costs nothing, and a file that crashes its decoder every time ends
as ``worker_crashed`` after bounded tries, as in the local pool."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from curate.engine import engine_scope, resolve_engine, stream_map
from curate.errors import OptionError
from curate.imageio import ProbeOptions, ProbeTask, _probe_task
from curate.parallel import DEFAULT_RETRIES
from curate.walk import EXPORT_MARKER
from tests.conftest import CRASH_DECODER, CrashingDecoder, within

# -- no cluster needed ---------------------------------------------------------------


@pytest.mark.parametrize("engine, env, expected", [
    (None, {}, "local"),  # the default
    (None, {"CURATE_ENGINE": "ray"}, "ray"),  # the environment
    ("local", {"CURATE_ENGINE": "ray"}, "local"),  # an explicit choice beats the environment
])
def test_resolve_engine(engine, env, expected):
    assert resolve_engine(engine, env=env) == expected


def test_a_bad_engine_names_where_it_came_from():
    with pytest.raises(OptionError, match=r"^--engine: expected one of \('local', 'ray'\), found dask$"):
        resolve_engine("dask", env={})
    with pytest.raises(OptionError, match=r"^CURATE_ENGINE: expected one of \('local', 'ray'\), found spark$"):
        resolve_engine(None, env={"CURATE_ENGINE": "spark"})


def test_an_engine_scope_is_the_default_inside_it_only():
    with engine_scope("ray"):
        assert resolve_engine(None, env={}) == "ray"
        assert resolve_engine("local", env={}) == "local"
    assert resolve_engine(None, env={}) == "local"


def test_an_actor_refuses_a_driver_with_another_curate_version():
    """A node with another curate would make other rows: its actors do not start."""
    from curate import __version__
    from curate.engine import RayEngineError, RayWorker

    with pytest.raises(RayEngineError, match=rf"curate on a Ray worker: expected version 0\.0\.1 \(the driver's\), "
                                             rf"found {re.escape(__version__)} \(install the same curate"):
        RayWorker(abs, None, (), DEFAULT_RETRIES, None, "0.0.1")


def test_the_cli_refuses_an_unknown_engine():
    from click.testing import CliRunner

    from curate.cli import cli

    res = CliRunner().invoke(cli, ["square", "no-such-ws", "--engine", "spark"])
    assert res.exit_code == 2 and "Invalid value for '--engine': 'spark' is not one of 'local', 'ray'" in res.output


# -- a 2-node local Ray cluster ------------------------------------------------------

ray = pytest.importorskip("ray", reason="the Ray engine needs ray[data] (pip install 'curate[ray]')")
pytest.importorskip("ray.data", reason="the Ray engine needs ray[data] (pip install 'curate[ray]')")

OBJECT_STORE_BYTES = 80 * 2**20  # Ray's minimum is 75 MiB: the machine is shared


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, 2 logical CPUs each (so that actors lost with a node have
    somewhere to restart), with the crashing decoder on every Ray worker's path: it crashes
    only JPEGs made to crash it (tests/crash_decoder), and never this process."""
    from ray.cluster_utils import Cluster

    path = os.pathsep.join([str(CRASH_DECODER), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", path)  # the nodes' processes inherit it, and the actors' own workers from them
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": OBJECT_STORE_BYTES,
                                                          "include_dashboard": False})
        c.add_node(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES)
        ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


FACE_FILES = ["fr_obama_small.jpg", "fr_two_people.jpg", "3ddfa_emma.jpg", "mtcnn_no-faces.jpg",
              "pillow_hopper_orientation_6.jpg", "fr_32bit.png"]


@pytest.fixture(scope="module")
def photos(corpus, tmp_path_factory) -> Path:
    """A handful of real photos: faces, a group, no face, an EXIF-rotated one, a PNG."""
    import shutil

    root = tmp_path_factory.mktemp("photos")
    for name in FACE_FILES:
        shutil.copy2(corpus / "faces_misc" / name, root / name)
    return root


# The export's marker says when, from where and to where it was written; the rest of it must match.
MARKER_PLACES = ("written", "export_id", "workspace", "out")


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path: independent of order and of where root is."""
    out = {}
    for p in sorted(root.rglob("*")):
        data = p.read_bytes() if p.is_file() else None
        if data is not None and p.name == EXPORT_MARKER:
            record = {k: v for k, v in json.loads(data).items() if k not in MARKER_PLACES}
            data = json.dumps(record, sort_keys=True).encode()
        if data is not None:
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def _table(df: pd.DataFrame, ws_root: Path, key: list[str]) -> pd.DataFrame:
    """A table with the workspace's own path written as WS, sorted by its key: comparable across workspaces."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: v.replace(str(ws_root), "WS") if isinstance(v, str) else v)
    return out.sort_values(key, kind="stable").reset_index(drop=True)


def _pipeline(src: Path, ws_root: Path, out: Path, engine: str, workers: int) -> dict:
    """ingest -> faces -> crop -> square -> export on one engine; what each run produced."""
    from curate.stages.crop import CropOptions, crop
    from curate.stages.export import ExportOptions, export
    from curate.stages.faces import FacesOptions, faces
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.stages.square import SquareOptions, square
    from curate.workspace import Workspace

    ws = Workspace.create(ws_root)
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="src", layout="flat")], workers=workers,
                                                 engine=engine))
    ws.run_stage("faces", faces, FacesOptions(boxes=True, detector="full-range", workers=workers, engine=engine))
    ws.run_stage("crop", crop, CropOptions(margin_frac=0.1, workers=workers, engine=engine))  # face patches
    ws.run_stage("square", square, SquareOptions(size_px=96, workers=workers, engine=engine))  # boxes follow
    ws.run_stage("export", export, ExportOptions("yolo", out, engine=engine))
    ws = Workspace.open(ws_root)
    manifest, annotations = ws.read_tables()  # every column compared: the manifest has no timing column
    return {"manifest": _table(manifest, ws_root, ["sample_id"]),
            "annotations": _table(annotations, ws_root, ["sample_id", "x1", "y1", "x2", "y2", "label"]),
            "objects": _digest(ws_root / "objects"), "export": _digest(out)}


def test_ingest_faces_crop_square_export_on_ray_equal_the_local_engine(cluster, photos, tmp_path):
    local = _pipeline(photos, tmp_path / "ws-local", tmp_path / "out-local", "local", 2)
    on_ray = within(600, lambda: _pipeline(photos, tmp_path / "ws-ray", tmp_path / "out-ray", "ray", 2))
    m = local["manifest"]
    originals = m.loc[m["parent_id"].isna(), "sample_id"]
    assert (m["parent_id"].isin(originals) & (m["label"] == "face")).sum() >= 3  # face patches cut by crop
    assert (m["parent_id"].notna() & (m["status"] == "kept")).sum() > len(FACE_FILES)  # squares of photos and patches
    assert len(local["annotations"]) >= 6  # face boxes on the photos and on their squares
    assert len(local["objects"]) > len(FACE_FILES) and len(local["export"]) >= 2 * len(FACE_FILES)
    pd.testing.assert_frame_equal(on_ray["manifest"], local["manifest"])
    pd.testing.assert_frame_equal(on_ray["annotations"], local["annotations"])
    assert on_ray["objects"] == local["objects"]
    assert on_ray["export"] == local["export"]


# Real probes, each made slow enough that a node can be removed while most are still to run.
SLOW_S = 0.3


def _slow_probe(task: tuple[ProbeTask, ProbeOptions]) -> tuple[dict, int]:
    """The probe's result, and the process id of the raylet of the node that ran it (which node it was)."""
    time.sleep(SLOW_S)
    return _probe_task(task), int(os.environ["RAY_RAYLET_PID"])


def test_a_worker_node_removed_mid_run_changes_nothing(cluster, corpus):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = sorted(str(p) for p in (corpus / "faces_misc").glob("*.jpg"))[:16]
    tasks = [(ProbeTask(p), ProbeOptions()) for p in paths]
    expected = sorted(map(_probe_task, tasks), key=lambda r: r["path"])

    node = cluster.add_node(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    lost_raylet = node.all_processes["raylet"][0].process.pid
    ctx = ray.data.DataContext.get_current()
    before = ctx.scheduling_strategy
    got: list[tuple[dict, int]] = []
    try:
        with warnings.catch_warnings():  # Ray 2.60 plans to take this setting away in 2027; it still works
            warnings.simplefilter("ignore", DeprecationWarning)
            # Both actors on the new node (soft: once it is gone, their restarts go to the others).
            ctx.scheduling_strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=True)

        def run() -> None:
            for r in stream_map(_slow_probe, tasks, workers=2, engine="ray"):
                got.append(r)
                if len(got) == 2:  # started, and most of the files still to do
                    cluster.remove_node(node)

        within(300, run)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.scheduling_strategy = before
    assert node not in cluster.worker_nodes
    assert sorted((r for r, _ in got), key=lambda r: r["path"]) == expected
    where = [raylet for _, raylet in got]
    assert where[:2] == [lost_raylet] * 2  # the run started on the node that was then removed (both actors there)
    assert len(set(where) - {lost_raylet}) >= 1  # and finished on the others (some results of the lost node had
    # already left it when it went; the batches it still held were run again elsewhere)


_STATE: dict[str, int] = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset
    _STATE["inits"] = _STATE.get("inits", 0) + 1


def _add(x: int) -> tuple[int, int, int]:
    """x plus the initializer's offset, this process's id, and how many times the initializer ran here."""
    return x + _STATE["offset"], os.getpid(), _STATE["inits"]


def test_per_worker_state_is_made_once_per_actor(cluster):
    """Many batches, two actors: the initializer (a face detector's model) runs once in each actor's worker."""
    out = within(300, lambda: list(stream_map(_add, list(range(40)), workers=2, max_chunk=1, engine="ray",
                                              initializer=_init, initargs=(100,))))
    assert sorted(v for v, _, _ in out) == list(range(100, 140))
    assert len({pid for _, pid, _ in out}) <= 2  # one worker process per actor, kept across its batches
    assert {inits for _, _, inits in out} == {1}


def _kill_actor(x: int) -> int:
    """x, except that 3 kills the Ray actor itself (the parent of the worker process running it)."""
    if x == 3:
        os.kill(os.getppid(), signal.SIGKILL)
    return x


def test_an_actor_that_dies_every_time_stops_the_run_after_bounded_restarts(cluster, monkeypatch):
    """Ray's own retries are bounded too: not the 28 restarts in 150 s and counting of its defaults (issue 18)."""
    import curate.engine as engine

    monkeypatch.setattr(engine, "ACTOR_RESTARTS", 1)  # fewer than the default 4, to keep the test short
    monkeypatch.setattr(engine, "BATCH_RETRIES", 1)
    with pytest.raises(engine.RayEngineError, match=r"^Ray pipeline: expected every batch run, found ActorDiedError"):
        within(300, lambda: list(stream_map(_kill_actor, list(range(8)), workers=1, engine="ray")))


def test_a_poison_file_ends_as_worker_crashed_on_ray_in_bounded_time(cluster, photos, tmp_path):
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    src = tmp_path / "src"
    src.mkdir()
    for name in FACE_FILES[:3]:
        (src / name).write_bytes((photos / name).read_bytes())
    with Image.open(photos / FACE_FILES[0]) as img:
        CrashingDecoder.save_poison(img, src / "poison.jpg", "segfault")

    def run(engine: str, root: Path) -> pd.DataFrame:
        ws = Workspace.create(root)
        ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="src", layout="flat")], workers=2,
                                                     engine=engine))
        return _table(Workspace.open(root).read_manifest(), root, ["sample_id"])

    t0 = time.monotonic()
    on_ray = within(300, lambda: run("ray", tmp_path / "ws-ray"))
    took = time.monotonic() - t0
    poison = on_ray[on_ray["rel_path"] == "poison.jpg"].iloc[0]
    assert (poison["status"], poison["reason"]) == ("dropped", "worker_crashed")
    assert poison["detail"] == f"worker process killed by signal 11 (SIGSEGV) ({1 + DEFAULT_RETRIES} attempts)"
    assert took < 120  # Ray's defaults would restart the actor forever (issue 18)
    # The rest equals a local run without the crashing decoder (this process never loads it).
    local = run("local", tmp_path / "ws-local")
    rest = on_ray["rel_path"] != "poison.jpg"
    # As plain values: a column all null in one table and not in the other reads back with another dtype.
    def plain(df: pd.DataFrame) -> pd.DataFrame:
        df = df.reset_index(drop=True).astype(object)
        return df.where(df.notna(), None)

    pd.testing.assert_frame_equal(plain(on_ray[rest]), plain(local[local["rel_path"] != "poison.jpg"]))
    assert (on_ray.loc[rest, "status"] == "kept").all()


def test_the_cli_takes_the_engine_from_the_environment(cluster, photos, tmp_path, monkeypatch):
    """`CURATE_ENGINE=ray curate ingest`: the rows of a local run, and the run record says ray."""
    from click.testing import CliRunner

    from curate.cli import cli
    from curate.workspace import Workspace

    src = tmp_path / "src"
    src.mkdir()
    for name in FACE_FILES[:3]:
        (src / name).write_bytes((photos / name).read_bytes())
    local = CliRunner().invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws-local"), "--engine", "local"])
    assert local.exit_code == 0, local.output
    monkeypatch.setenv("CURATE_ENGINE", "ray")
    res = within(300, lambda: CliRunner().invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws-ray")]))
    assert res.exit_code == 0, res.output
    ws = Workspace.open(tmp_path / "ws-ray")
    assert ws.runs()[-1]["options"]["engine"] == "ray"
    pd.testing.assert_frame_equal(_table(ws.read_manifest(), ws.root, ["sample_id"]),
                                  _table(Workspace.open(tmp_path / "ws-local").read_manifest(),
                                         tmp_path / "ws-local", ["sample_id"]))


def test_the_command_starts_and_stops_its_own_local_cluster(photos, tmp_path):
    """`curate ingest --engine ray` with no cluster: it starts a local one, uses it, stops it, and exits."""
    import subprocess
    import sys

    from curate.workspace import Workspace
    from tests.conftest import REPO

    src = tmp_path / "src"
    src.mkdir()
    for name in FACE_FILES[:2]:
        (src / name).write_bytes((photos / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CURATE_ENGINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    cmd = [sys.executable, "-c", "from curate.cli import main; main()", "ingest", str(src), "--into",
           str(tmp_path / "ws"), "--engine", "ray", "--workers", "1", "--json"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"] == 2
    m = Workspace.open(tmp_path / "ws").read_manifest()
    assert (m["status"] == "kept").all() and m["sha256"].notna().all()
