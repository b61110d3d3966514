"""`curate ingest` on hostile and wrong sources (issue 13): a single annotation file as SOURCE, sources with
nothing to ingest, and conflicts inside a source that must be reported rather than settled silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import SourceError
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace


def run_ingest(ws_dir: Path, *specs: SourceSpec):
    ws = Workspace.create(ws_dir)
    res = ws.run_stage("ingest", ingest, IngestOptions(list(specs), workers=1))
    return ws.read_manifest(), ws.read_annotations(), res


def _coco_file(root: Path, skimage_dir: Path) -> Path:
    (root / "images").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", root / "images" / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 600, "height": 400}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40]}],
           "categories": [{"id": 1, "name": "cup"}]}
    p = root / "instances_train.json"
    p.write_text(json.dumps(doc))
    return p


def _voc_file(root: Path, skimage_dir: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", root / "a.png")
    p = root / "a.xml"
    p.write_text("<annotation><filename>a.png</filename><size><width>600</width><height>400</height></size>"
                 "<object><name>cup</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>40</xmax><ymax>60</ymax>"
                 "</bndbox></object></annotation>")
    return p


def _yolo_file(root: Path, skimage_dir: Path) -> Path:
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", root / "images/train/a.png")
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    p = root / "data.yaml"
    p.write_text("train: images/train\nnames: [cup]\n")
    return p


def _json_file(root: Path, skimage_dir: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", root / "a.png")
    p = root / "a.json"
    p.write_text(json.dumps({"image": "a.png", "width": 600, "height": 400,
                             "boxes": [{"x1": 10, "y1": 20, "x2": 40, "y2": 60, "label": "cup"}]}))
    return p


@pytest.mark.parametrize("make, layout", [(_coco_file, "coco"), (_voc_file, "voc"), (_yolo_file, "yolo"),
                                          (_json_file, "json")])
def test_a_single_annotation_file_as_source_is_read_as_its_format(tmp_path, skimage_dir, make, layout):
    """It was taken as one file (a non-image), and its images were never read."""
    src = make(tmp_path / "src", skimage_dir)
    manifest, ann, _ = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert list(manifest["layout"]) == [layout]
    assert manifest["path"].iloc[0].endswith("a.png") and manifest["status"].iloc[0] == "kept"
    assert list(ann["label"]) == ["cup"]


def test_an_annotation_file_no_format_knows_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    p = tmp_path / "src" / "notes.json"  # the workspace may not sit in the folder of a file source
    p.write_text('{"hello": "world"}')
    with pytest.raises(SourceError) as e:
        run_ingest(tmp_path / "ws", SourceSpec(p))
    assert str(e.value).startswith(f"{p}: expected a COCO JSON, a VOC XML, a YOLO data.yaml, a per-image JSON or "
                                   "a CSV/TXT list, found a file no format recognises (force a layout with --layout")


@pytest.mark.parametrize("name, content, message", [
    # each of these exited 0, "ingested ... 0 rows" or 2 rows all missing_file
    ("empty", None, "expected at least one file to ingest, found an empty folder"),
    ("list.csv", "file,label\n", "expected at least one file to ingest, found no image listed in it (read as csv)"),
    ("README.txt", "This data set holds photos.\nSee the licence.\n",
     "file: expected a list naming image files, found 2 names, none of them an existing file (first: 'This data "
     "set holds')"),
])
def test_nothing_to_ingest_is_an_error(tmp_path, name, content, message):
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / name  # the workspace may not sit in the folder of a file source
    if content is None:
        src.mkdir()
    else:
        src.write_text(content)
    result = CliRunner().invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert f"{src}: {message}" in result.output
    assert not (tmp_path / "ws").exists()  # a failed first ingest leaves nothing


def test_conflicts_inside_a_source_are_recorded(tmp_path, skimage_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "a.png")
    (src / "list.csv").write_text("file,split,label\na.png,train,cup\na.png,val,mug\n")
    manifest, _, res = run_ingest(tmp_path / "ws", SourceSpec(src / "list.csv"))
    assert list(manifest["label"]) == ["cup"] and list(manifest["split"]) == ["train"]
    text = " ".join(res.summary["warnings"])
    assert "label_conflict: a.png" in text and "split_leak: a.png" in text
