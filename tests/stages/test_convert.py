"""`curate convert`: the Datumaro/Roboflow samples to every format, class ids
kept, nothing written outside --out, and the command line (in process and as
the installed `curate` program)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import SourceError
from curate.stages.convert import ConvertOptions, convert
from curate.stages.ingest import sample_id_for
from tests.conftest import tree_digest

DATUMARO = "formats/datumaro"


@pytest.mark.parametrize("rel, to, images, boxes", [
    # tiny 5x10 images would fall to a size filter: a conversion keeps them
    ("coco_dataset/coco_instances", "yolo", 2, 3),
    ("roboflow_dataset/coco", "voc", 3, 4),
    ("roboflow_dataset/voc", "coco", 3, 4),
    ("roboflow_dataset/yolo", "json", 3, 4),
    ("voc_dataset/voc_dataset1", "csv", 2, 2),  # 2007_000002 has no XML: kept without boxes
    ("yolo_dataset/strict", "coco", 1, 2),
    ("yolo_dataset/labels", "voc", 2, 4),  # README.txt at the top is not an image of the dataset
    ("yolo_dataset/annotations", "yolo", 1, 2),
])
def test_datumaro_samples_convert_and_verify(corpus, tmp_path, rel, to, images, boxes):
    src = corpus / DATUMARO / rel
    before = tree_digest(src)
    summary = convert(ConvertOptions(src, to, tmp_path / "out", workers=1))
    assert (summary["images"], summary["boxes"]) == (images, boxes)
    assert summary["verified"] == f"{images} images read back"
    assert "not_converted" not in summary
    assert tree_digest(src) == before  # the source is never written
    assert os.listdir(tmp_path) == ["out"]  # nothing outside --out, no staging or workspace left
    # no throwaway workspace left; the one hidden file is the export's marker
    assert [p.name for p in (tmp_path / "out").rglob(".*")] == [".curate-export.json"]


def test_coco_to_yolo_lines_and_names(corpus, tmp_path):
    convert(ConvertOptions(corpus / DATUMARO / "coco_dataset/coco_instances", "yolo", tmp_path / "y", workers=1))
    doc = yaml.safe_load((tmp_path / "y/data.yaml").read_text())
    assert doc["names"] == {0: "a", 1: "b", 2: "c"}  # category ids 1, 2, 4 in id order; unused c kept
    # a.jpg is 10x5 with COCO bbox [2, 2, 3, 1] of category 2 ("b")
    assert (tmp_path / "y/labels/train/a.txt").read_text() == "1 0.35 0.5 0.3 0.2\n"
    convert(ConvertOptions(tmp_path / "y", "coco", tmp_path / "c", workers=1))
    val = json.loads((tmp_path / "c/annotations/instances_val.json").read_text())
    assert [c["id"] for c in val["categories"]] == [1, 2, 3]
    assert sorted((a["category_id"], a["bbox"], a["iscrowd"]) for a in val["annotations"]) == [
        (1, [0.0, 0.0, 1.0, 2.0], 0), (2, [0.0, 0.0, 1.0, 9.0], 0)]  # YOLO has no crowd flag


def test_yolo_to_yolo_keeps_class_ids(corpus, tmp_path):
    convert(ConvertOptions(corpus / DATUMARO / "yolo_dataset/labels", "yolo", tmp_path / "y", workers=1))
    assert yaml.safe_load((tmp_path / "y/data.yaml").read_text())["names"] == {i: f"label_{i}" for i in range(10)}
    [labels] = (tmp_path / "y/labels/train").glob("1-*.txt")  # 1.jpg in train and val: both renamed
    assert [ln.split()[0] for ln in labels.read_text().splitlines()] == ["2", "4"]


def test_identical_files_are_all_converted(tmp_path, skimage_dir):
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        shutil.copy(skimage_dir / "coffee.png", src / cls / "x.png")  # same bytes, same name
    summary = convert(ConvertOptions(src, "yolo-cls", tmp_path / "out", workers=1))
    assert summary["images"] == 2 and summary["splits"] == {"train": 2}
    ids = {cls: sample_id_for("source", f"{cls}/x.png")[:8] for cls in ("a", "b")}
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == [
        f"train/a/x-{ids['a']}.png", f"train/b/x-{ids['b']}.png"]


def test_dataset_without_images_is_an_error_and_leaves_nothing(corpus, tmp_path):
    src = corpus / DATUMARO / "voc_dataset/voc_dataset2"  # annotations only, as in Datumaro's tests
    with pytest.raises(SourceError) as e:
        convert(ConvertOptions(src, "coco", tmp_path / "out", workers=1))
    assert str(e.value) == (f"{src}: expected at least one readable image in this voc dataset, found none "
                            "(missing_file 5) (check --from and --images-dir)")
    assert os.listdir(tmp_path) == []


def test_cli_convert_and_refusals(corpus, tmp_path):
    src = corpus / DATUMARO / "roboflow_dataset/voc"
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(src), "--to", "yolo", "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["from"], summary["to"], summary["images"], summary["splits"]) == (
        "voc", "yolo", 3, {"train": 2, "val": 1})
    res = runner.invoke(cli, ["convert", str(src), "--to", "yolo", "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'out'}: expected an empty or new folder, found a folder with 4 entries "
                          "(pass --overwrite to replace it)\n")
    res = runner.invoke(cli, ["convert", str(src), "--from", "labelme", "--to", "yolo", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Invalid value for '--from': 'labelme' is not one of 'auto', 'coco'" in res.output


def test_out_inside_the_source_is_refused(tmp_path, skimage_dir):
    src = tmp_path / "src" / "cup"
    src.mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", src / "c.png")
    res = CliRunner().invoke(cli, ["convert", str(tmp_path / "src"), "--to", "coco",
                                   "--out", str(tmp_path / "src" / "coco")])
    assert res.exit_code == 1
    assert res.output == (f"Error: --out: expected a path outside the sources, found {tmp_path / 'src' / 'coco'}, "
                          f"inside the source {tmp_path / 'src'} (sources are never written to; choose another path)\n")
    assert sorted(os.listdir(tmp_path / "src")) == ["cup"]


def test_installed_command_in_a_subprocess(corpus, tmp_path):
    exe = Path(sys.executable).parent / "curate"
    if not exe.exists():
        pytest.skip("the curate command is not installed in this environment (pip install -e .)")
    out = subprocess.run([str(exe), "convert", str(corpus / DATUMARO / "roboflow_dataset/coco"), "--to", "voc",
                          "--out", str(tmp_path / "voc"), "--json", "--workers", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 3
    assert sorted(os.listdir(tmp_path / "voc/Annotations")) == ["train_001.xml", "train_002.xml", "val_001.xml"]


def test_a_tree_whose_json_is_not_read_refuses_an_empty_detection_output(tmp_path, skimage_dir):
    """Issue 17: unknown per-image JSON next to class folders used to convert to `nc: 0` with exit 0."""
    from click.testing import CliRunner

    from curate.cli import cli

    src = tmp_path / "waste"
    (src / "bottle").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", src / "bottle" / "a.png")
    (src / "bottle" / "a.json").write_text('{"objects": [{"name": "pet", "rect": [1, 2, 30, 40]}]}')
    res = CliRunner().invoke(cli, ["convert", str(src), "--to", "yolo", "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {src}: boxes: expected at least one box in a yolo (detection) export, found 0 "
                          "boxes on 1 images: the source was read as folder and no box came with it (1 "
                          "annotation-like files sit among the images (e.g. bottle/a.json): if they describe the "
                          "images, convert with --from json --json-mapping FILE (or --from voc))\n")
    assert not (tmp_path / "out").exists()
