"""One path policy: names in annotation files stay inside their source, special and huge files are never read
whole, and no output option writes into a source."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.errors import CurateError
from curate.imageio import ProbeOptions, probe_file
from curate.paths import check_output, confine
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.conftest import tree_digest


@pytest.mark.parametrize("name, reason", [
    ("images/a.jpg", None),  # inside
    ("images/../images/a.jpg", None),  # inside, stored normalised
    ("../outside/b.jpg", "outside_source"),  # a sibling folder
    ("../../../../../../etc/passwd", "outside_source"),  # anything on the machine
])
def test_confine(tmp_path, name, reason):
    root = tmp_path / "src"
    path, got, _ = confine(str(root / name), [root], follow_links=False)
    assert got == reason and ".." not in Path(path).parts


def _coco(tmp_path: Path, skimage_dir: Path, names: list[str]) -> Path:
    src = tmp_path / "coco"
    (src / "images").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "images" / "coffee.png")
    shutil.copy(skimage_dir / "rocket.jpg", tmp_path / "elsewhere" / "rocket.jpg")
    images = [{"id": i + 1, "file_name": n, "width": 10, "height": 10} for i, n in enumerate(names)]
    doc = {"images": images, "categories": [{"id": 1, "name": "x"}],
           "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 4, 4]}
                           for i in range(len(names))]}
    (src / "annotations").mkdir()
    (src / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    return src


def test_names_in_an_annotation_file_that_leave_the_source_are_dropped(tmp_path, skimage_dir):
    src = _coco(tmp_path, skimage_dir, ["coffee.png", "../../elsewhere/rocket.jpg", "../../../../../../etc/passwd"])
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src)], workers=1))
    m = ws.read_manifest().set_index("rel_path")
    assert m.loc["images/coffee.png", "status"] == "kept"
    outside = m[m["reason"] == "outside_source"]
    assert len(outside) == 2 and outside["sha256"].isna().all()  # never read, never hashed
    assert all(".." not in Path(p).parts for p in outside["path"])
    # the folder it points at can be allowed
    ws2 = Workspace.create(tmp_path / "ws2")
    ws2.run_stage("ingest", ingest, IngestOptions([SourceSpec(src)], workers=1,
                                                  read_extra={"images_dir": str(tmp_path / "elsewhere")}))
    m2 = ws2.read_manifest()
    assert (m2["reason"] == "outside_source").sum() == 1  # /etc/passwd stays out


def test_a_list_naming_a_fifo_and_a_device_does_not_hang(tmp_path, skimage_dir):
    src = tmp_path / "lst"
    src.mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "coffee.png")
    os.mkfifo(src / "pipe.jpg")
    (src / "labels.csv").write_text("file,label\ncoffee.png,cup\npipe.jpg,cup\n")
    res = probe_file(str(src / "pipe.jpg"), ProbeOptions())  # returns at once: opened without blocking
    assert (res["reason"], res["detail"]) == ("special_file", "not a regular file (a FIFO)")
    assert probe_file("/dev/zero", ProbeOptions())["reason"] == "special_file"  # would read forever
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src / "labels.csv")], workers=1))
    m = ws.read_manifest().set_index("rel_path")
    assert m.loc["pipe.jpg", "reason"] == "special_file" and m.loc["coffee.png", "status"] == "kept"


def test_huge_files_are_capped_and_big_ones_streamed(tmp_path, skimage_dir):
    big = tmp_path / "big.jpg"
    Image.open(skimage_dir / "coffee.png").convert("RGB").save(big, quality=90)
    with open(big, "ab") as f:  # 70 MB of trailing bytes: decoders stop at the end marker
        f.write(os.urandom(1 << 20) * 70)
    res = probe_file(str(big), ProbeOptions())
    assert res["reason"] is None and (res["width"], res["height"]) == (600, 400)  # decoded from the file
    assert res["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()  # hashed in a stream
    capped = probe_file(str(big), ProbeOptions(max_file_bytes=10 << 20))
    assert capped["reason"] == "too_large" and capped["sha256"] is None
    assert capped["detail"].endswith("bytes > --max-file-mb 10; not read")


@pytest.mark.parametrize("out, folder, message", [
    ("src/list.csv", False, "--out: expected a path outside the sources, found {tmp}/src/list.csv, inside the "
                            "source {tmp}/src/list.csv (sources are never written to; choose another path)"),
    ("src/sub/r.html", False, "--out: expected a path outside the sources, found {tmp}/src/sub/r.html, inside the "
                              "source {tmp}/src/list.csv (sources are never written to; choose another path)"),
    ("ws/manifest.parquet", False, "--out: expected a path that is not one of the workspace's own files, found "
                                   "{tmp}/ws/manifest.parquet (choose another path)"),
    (".", True, "--out: expected a folder that does not hold a source, found {tmp}, which holds the source "
                "{tmp}/src/list.csv (choose another path)"),
])
def test_check_output_refuses_sources_and_tables(tmp_path, out, folder, message):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "list.csv").write_text("file,label\n")
    (tmp_path / "ws").mkdir()
    with pytest.raises(CurateError) as e:
        check_output(tmp_path / out, sources=[tmp_path / "src" / "list.csv"], workspace=tmp_path / "ws",
                     folder=folder)
    assert str(e.value) == message.format(tmp=tmp_path)


def test_report_and_dedupe_report_never_overwrite_a_source(tmp_path, skimage_dir):
    src = tmp_path / "photos"
    src.mkdir()
    for n in ("coffee.png", "rocket.jpg", "chelsea.png"):
        shutil.copy(skimage_dir / n, src / n)
    (src / "list.csv").write_text("file\ncoffee.png\n")
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, layout="flat")], workers=1))
    before = tree_digest(src)
    runner = CliRunner()
    res = runner.invoke(cli, ["dedupe", str(ws.root), "--report", str(src / "list.csv"), "--workers", "1"])
    assert res.exit_code == 1 and "--report: expected a path outside the sources" in res.output
    res = runner.invoke(cli, ["report", str(ws.root), "--out", str(src / "coffee.png")])
    assert res.exit_code == 1 and "--out: expected a path outside the sources" in res.output
    assert tree_digest(src) == before


def test_ingest_cli_caps_the_file_size(tmp_path, skimage_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "coffee.png")
    res = CliRunner().invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws"), "--max-file-mb", "0.1",
                                   "--workers", "1"])
    assert res.exit_code == 0, res.output
    row = Workspace.open(tmp_path / "ws").read_manifest().iloc[0]
    assert row["reason"] == "too_large" and row["detail"].endswith("bytes > --max-file-mb 0.1; not read")
