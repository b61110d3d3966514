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
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="src", layout="flat")], workers=1))
    m = ws.read_manifest()
    ann = pd.DataFrame([{"sample_id": m.loc[m["rel_path"] == n, "sample_id"].iloc[0], "label": "thing",
                         "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "origin": "test"} for n, b in boxes.items()])
    with ws.lock():
        ws.write_annotations(ann, m)
    ws.root.rename(tmp_path / "base")
    return tmp_path / "base"


@pytest.mark.slow
@pytest.mark.parametrize("stage", [
    ["square", "--size", "64", "--workers", "1"],  # derived rows carry their parents' boxes, moved into the square
    ["crop", "--workers", "1"],  # each box becomes a patch row
])
def test_a_kill_at_every_replace_then_a_rerun_gives_the_uninterrupted_tables(boxed, stage):
    ws = boxed.parent / "ws"
    shutil.copytree(boxed, ws)
    assert curate(stage[0], str(ws), *stage[1:]).returncode == 0
    want_m, want_a = tables(ws)
    assert (want_m["parent_id"].notna()).sum() == 3 and want_a["sample_id"].isin(want_m["sample_id"]).all()
    for point in range(1, MAX_POINTS + 1):
        shutil.rmtree(ws)
        shutil.copytree(boxed, ws)
        killed = curate(stage[0], str(ws), *stage[1:], kill_at=point)
        if killed.returncode == 0:  # the run made fewer replaces than this: every point was tried
            break
        assert killed.returncode == -9, killed.stderr
        rerun = curate(stage[0], str(ws), *stage[1:])
        assert rerun.returncode == 0, rerun.stderr
        got_m, got_a = tables(ws)
        pd.testing.assert_frame_equal(got_m, want_m, obj=f"manifest after a kill at replace {point}")
        pd.testing.assert_frame_equal(got_a, want_a, obj=f"annotations after a kill at replace {point}")
    else:
        pytest.fail(f"{stage[0]} still running after {MAX_POINTS} replaces")
    assert point > 3
