"""One path policy: names in annotation files stay inside their source, special and huge files are never read
whole, and no output option writes into a source."""

from __future__ import annotations

import contextlib
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


# -- every reader that takes names from a file confines them (issue 13: the kind, not the COCO example) ---------

def _names(tmp_path: Path, skimage_dir: Path) -> tuple[Path, list[str]]:
    """A source folder with one real photo (a.png) and a link in it to a photo outside; the names an
    annotation file gives: the photo, a sibling folder's photo, the link, an absolute system file."""
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "a.png")
    Image.open(skimage_dir / "rocket.jpg").save(tmp_path / "elsewhere" / "b.jpg")
    Image.open(skimage_dir / "chelsea.png").save(tmp_path / "elsewhere" / "c.png")
    os.symlink(tmp_path / "elsewhere" / "c.png", src / "link.png")
    return src, ["a.png", "../elsewhere/b.jpg", "link.png", "/etc/passwd"]


def _csv(src: Path, names: list[str]) -> SourceSpec:
    (src / "list.csv").write_text("file,label\n" + "".join(f"{n},x\n" for n in names))
    return SourceSpec(src / "list.csv")


def _txt(src: Path, names: list[str]) -> SourceSpec:
    (src / "list.txt").write_text("".join(f"{n} x\n" for n in names))
    return SourceSpec(src / "list.txt")


def _voc(src: Path, names: list[str]) -> SourceSpec:
    for i, n in enumerate(names):
        (src / f"{i}.xml").write_text(
            f"<annotation><filename>{n}</filename><size><width>10</width><height>10</height></size>"
            "<object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
            "</object></annotation>")
    return SourceSpec(src, layout="voc")


def _json(src: Path, names: list[str]) -> SourceSpec:
    for i, n in enumerate(names):
        (src / f"{i}.json").write_text(json.dumps({"image": n, "width": 10, "height": 10, "boxes": [
            {"x1": 1, "y1": 1, "x2": 5, "y2": 5, "label": "x"}]}))
    return SourceSpec(src, layout="json")


def _darknet(src: Path, names: list[str]) -> SourceSpec:
    (src / "obj.names").write_text("x\n")
    (src / "obj.data").write_text("classes = 1\ntrain = train.txt\nnames = obj.names\n")
    (src / "train.txt").write_text("".join(f"{n}\n" for n in names))
    return SourceSpec(src, layout="yolo")


def _data_yaml(src: Path, names: list[str]) -> SourceSpec:
    (src / "images").mkdir()
    shutil.move(src / "a.png", src / "images" / "a.png")
    (src / "data.yaml").write_text("train: images\nval: ../elsewhere\ntest: /etc\nnames: [x]\n")
    return SourceSpec(src, layout="yolo")


@pytest.mark.parametrize("make", [_csv, _txt, _voc, _json, _darknet, _data_yaml])
def test_every_reader_confines_the_names_it_takes_from_files(tmp_path, skimage_dir, make):
    """CSV/TXT rows, VOC <filename>, per-image JSON image, Darknet lists and data.yaml folders: a name that
    leaves the source (a sibling folder, a link out of it, an absolute system path) is never read."""
    src, names = _names(tmp_path, skimage_dir)
    before = tree_digest(tmp_path / "elsewhere")
    ws = Workspace.create(tmp_path / "ws")
    with contextlib.suppress(CurateError):  # a reader may refuse such a file as a whole: also fine
        ws.run_stage("ingest", ingest, IngestOptions([make(src, names)], workers=1))
    m = ws.read_manifest()
    read = m[m["sha256"].notna()]
    assert all(os.path.realpath(p).startswith(str(src.resolve()) + os.sep) for p in read["path"]), read["path"]
    elsewhere = m.loc[[not os.path.realpath(p).startswith(str(src.resolve()) + os.sep) for p in m["path"]]]
    assert (elsewhere["reason"] == "outside_source").all(), elsewhere[["path", "reason"]]
    assert len(m) <= len(names) + 4  # a folder elsewhere is not walked (data.yaml `test: /etc` gave 1051 rows)
    outside = m[m["reason"] == "outside_source"]
    assert outside["sha256"].isna().all() and all(".." not in Path(p).parts for p in m["path"])
    assert tree_digest(tmp_path / "elsewhere") == before
    if len(m):
        assert m.loc[m["path"].str.endswith("a.png"), "status"].tolist() == ["kept"]


@pytest.mark.parametrize("command", [["report", "--out", "coffee.png"], ["dedupe", "--report", "dups.csv"]])
def test_a_damaged_sources_json_never_lets_an_output_into_a_source(tmp_path, skimage_dir, command):
    """Without the recorded sources the output check had nothing to refuse: the report overwrote a source file."""
    src = tmp_path / "src"
    src.mkdir()
    for n in ("coffee.png", "camera.png"):
        shutil.copy(skimage_dir / n, src / n)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src)], workers=1))
    (ws.root / "sources.json").write_text("{not json")  # the top-level file is the committed one (a link)
    before = tree_digest(src)
    res = CliRunner().invoke(cli, [command[0], str(ws.root), command[1], str(src / command[2])])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and "the workspace is damaged" in res.output, res.output
    assert res.output.count("\n") == 1
    assert tree_digest(src) == before
