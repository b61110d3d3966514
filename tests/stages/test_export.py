"""`curate export`: kept rows only, unique names, link modes, EXIF-upright
images, atomic publish, refusing to overwrite, and verification that catches
a wrong export."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.errors import ExportError
from curate.formats import REGISTRY
from curate.imageio import ProbeOptions, load_display
from curate.stages.export import (
    ExportOptions,
    export,
    export_to,
    plan_export,
    unique_names,
    verify_export,
    write_options,
)
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.formats.photoset import ROTATED, make_photo_set


@pytest.fixture(scope="module")
def ws(tmp_path_factory, skimage_dir) -> Workspace:
    base = tmp_path_factory.mktemp("export")
    photos = make_photo_set(base / "photos", skimage_dir)
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(photos.root, layout="json")], workers=1))
    return ws


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_yolo_export_summary_map_and_names(ws, tmp_path):
    res = ws.run_stage("export", export, ExportOptions("yolo", tmp_path / "out"))
    s = res.summary
    assert (s["images"], s["boxes"], s["splits"], s["classes"]) == (7, 8, {"train": 4, "val": 2, "test": 1}, 8)
    assert s["copied"] == 5 and s["reencoded"] == {"exif_orientation": 1, "format": 1}  # rocket.jpg, moto.webp
    assert s["verified"] == "7 images read back"
    images = [f for f in _files(tmp_path / "out") if f.startswith("images/")]
    # Two sources named photo.png: both kept, each suffixed with its sample_id; the WebP became PNG.
    sids = ws.read_manifest().set_index("rel_path")["sample_id"]
    assert sorted(images) == sorted([
        "images/train/chelsea.jpg", "images/train/coins.png",
        f"images/train/photo-{sids['train/a/photo.png'][:8]}.png",
        f"images/train/photo-{sids['train/b/photo.png'][:8]}.png",
        "images/val/horse.png", "images/val/rocket.jpg", "images/test/moto.png"])
    run = ws.runs()[-1]
    assert run["command"] == "export" and run["export"]["out"] == str(tmp_path / "out")
    mapping = pd.read_parquet(ws.root / run["export"]["map"])
    assert len(mapping) == 7 and set(mapping["file"]) == set(images)
    assert all(Path(p).is_file() for p in mapping["origin_path"])


@pytest.mark.parametrize("names, ids, expected", [
    (["a/x.jpg", "b/y.jpg"], ["1111111111", "2222222222"], ["x.jpg", "y.jpg"]),  # no clash: names kept
    (["a/x.jpg", "b/X.JPG"], ["1111111111", "2222222222"], ["x-11111111.jpg", "X-22222222.JPG"]),  # case-blind
    (["a/x.jpg", "b/x.png"], ["1111111111", "2222222222"], ["x-11111111.jpg", "x-22222222.png"]),  # YOLO pairs stems
    # a suffixed name meeting a real file of that name: the full id
    (["a/x.jpg", "b/x.jpg", "c/x-11111111.jpg"], ["1111111111", "2222222222", "3333333333"],
     ["x-1111111111.jpg", "x-22222222.jpg", "x-11111111-3333333333.jpg"]),
])
def test_unique_names(names, ids, expected):
    out = unique_names(names, ids)
    assert out == expected and len({n.lower() for n in out}) == len(out)


def test_rotated_photo_is_exported_upright_and_matches_the_displayed_pixels(ws, tmp_path):
    ws.run_stage("export", export, ExportOptions("coco", tmp_path / "out"))
    src = ws.read_manifest().set_index("rel_path").at[ROTATED, "path"]
    with Image.open(tmp_path / "out/images/val/rocket.jpg") as im:
        assert im.getexif().get(0x0112) is None
        written = np.asarray(im.convert("RGB"), dtype=np.int16)
    shown = np.asarray(load_display(src), dtype=np.int16)
    assert written.shape == shown.shape == (107, 160, 3)
    assert np.abs(written - shown).mean() < 3  # one JPEG q95 generation apart


@pytest.mark.parametrize("link", ["hardlink", "symlink"])
def test_link_modes(ws, tmp_path, link):
    res = ws.run_stage("export", export, ExportOptions("folder", tmp_path / "out", link=link))
    assert res.summary[f"{link}ed"] == 5
    m = ws.read_manifest().set_index("rel_path")
    coffee = tmp_path / "out/train/cup" / next(os.listdir(tmp_path / "out/train/cup").__iter__())
    source = Path(m.at["train/a/photo.png", "path"])
    if link == "hardlink":
        assert coffee.stat().st_ino == source.stat().st_ino and not coffee.is_symlink()
    else:
        assert coffee.is_symlink() and os.readlink(coffee) == str(source)
    rocket = tmp_path / "out/val/rocket/rocket.jpg"
    assert not rocket.is_symlink() and rocket.stat().st_nlink == 1  # re-encoded: a file of its own


def test_only_kept_rows_and_default_split(tmp_path, skimage_dir):
    photos = make_photo_set(tmp_path / "photos", skimage_dir)
    ws = Workspace.create(tmp_path / "ws")
    # Shorter side below 120 px: coffee, chelsea, rocket, moto are dropped as too_small.
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(photos.root, layout="json")],
                                                 probe=ProbeOptions(min_side_px=120), workers=1))
    res = ws.run_stage("export", export, ExportOptions("csv", tmp_path / "out", default_split="val"))
    assert res.summary["images"] == 3
    lines = (tmp_path / "out/labels.csv").read_text().splitlines()
    assert sorted({ln.split(",")[0] for ln in lines[1:]}) == [  # one line per box
        "images/train/photo.png", "images/val/coins.png", "images/val/horse.png"]  # coins had no split


def test_non_empty_out_is_refused_then_overwritten(ws, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(ws.root), "--format", "voc", "--out", str(out)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {out}: expected an empty or new folder, found a folder with 1 entries "
                          "(pass --overwrite to replace it)\n")
    assert _files(out) == ["keep.txt"]
    # --overwrite replaces only what curate exported: keep.txt's folder is not one
    res = runner.invoke(cli, ["export", str(ws.root), "--format", "voc", "--out", str(out), "--overwrite"])
    assert res.exit_code == 1
    assert res.output == (f"Error: {out}: expected a curate export to replace (one holding .curate-export.json), "
                          "found a folder with 1 entries that curate did not export (--overwrite replaces only "
                          "curate's own exports; add --force to replace this folder and everything in it)\n")
    assert _files(out) == ["keep.txt"]
    res = runner.invoke(cli, ["export", str(ws.root), "--format", "voc", "--out", str(out), "--overwrite", "--force"])
    assert res.exit_code == 0, res.output
    assert "keep.txt" not in _files(out) and "Annotations/horse.xml" in _files(out)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or old folder left next to it
    marker = json.loads((out / ".curate-export.json").read_text())
    assert (marker["format"], marker["images"], marker["workspace"]) == ("voc", 7, str(ws.root))
    # a curate export is replaced by --overwrite alone
    res = runner.invoke(cli, ["export", str(ws.root), "--format", "yolo", "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "data.yaml" in _files(out) and json.loads((out / ".curate-export.json").read_text())["format"] == "yolo"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_out_holding_the_workspace_or_inside_a_source_is_refused(ws, tmp_path):
    with pytest.raises(ExportError) as e:
        ws.run_stage("export", export, ExportOptions("yolo", ws.root.parent, overwrite=True))
    assert str(e.value) == (f"--out: expected a folder that does not hold a source, found {ws.root.parent}, which "
                            f"holds the source {ws.root.parent / 'photos'} (choose another path)")
    with pytest.raises(ExportError) as e:
        ws.run_stage("export", export, ExportOptions("yolo", ws.root / "objects" / "out", overwrite=True))
    assert str(e.value) == (f"--out: expected a folder outside the workspace, found {ws.root / 'objects' / 'out'}, "
                            f"inside {ws.root} (the workspace holds curate's own files; choose another path)")
    src = Path(ws.read_manifest()["origin_path"].iloc[0]).parent
    with pytest.raises(ExportError) as e:
        ws.run_stage("export", export, ExportOptions("yolo", src / "export"))
    assert "expected a path outside the sources, found " + str(src / "export") + ", inside the source" in str(e.value)
    assert not (src / "export").exists()


def test_failed_export_leaves_nothing(ws, tmp_path):
    """Unlabeled rows cannot go to class folders: the error comes after planning, mid-write."""
    m = ws.read_manifest()
    m = m.assign(label=m["label"].where(m["rel_path"] != "val/horse.png", None))
    plan, boxes = plan_export(m, ws.read_annotations())
    with pytest.raises(ExportError, match="found 1 rows without one"):
        export_to(plan, boxes, ExportOptions("folder", tmp_path / "out"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tamper, problem", [
    # a label file rewritten: other class, other place
    (lambda out: (out / "labels/val/rocket.txt").write_text("0 0.5 0.5 0.1 0.1\n"),
     "images/val/rocket.jpg: expected box ('rocket', 20.0, 30.0, 80.0, 100.0), found ('coin', 72.0, 48.15"),
    # a class id pointing at another name
    (lambda out: (out / "labels/train/coins.txt").write_text(
        (out / "labels/train/coins.txt").read_text().replace("0 ", "1 ", 1)), "images/train/coins.png: expected box"),
    # an image gone
    (lambda out: (out / "images/val/horse.png").unlink(), "images/val/horse.png: written but not read back"),
    # a stray image
    (lambda out: shutil.copy(out / "images/val/horse.png", out / "images/val/extra.png"),
     "images/val/extra.png: not an exported image, found in the export"),
])
def test_verify_reports_differences(ws, tmp_path, tamper, problem):
    opts = ExportOptions("yolo", tmp_path / "out", verify=False)
    plan, boxes = plan_export(ws.read_manifest(), ws.read_annotations())
    result = REGISTRY["yolo"].write(plan, boxes, tmp_path / "out", write_options(opts))  # type: ignore[misc]
    assert verify_export(REGISTRY["yolo"], plan, boxes, tmp_path / "out", result, opts)[0] == []
    tamper(tmp_path / "out")
    problems, _ = verify_export(REGISTRY["yolo"], plan, boxes, tmp_path / "out", result, opts)
    assert any(problem in p for p in problems), problems


def test_box_the_format_cannot_hold_fails_verification_and_writes_nothing(ws, tmp_path):
    """YOLO clamps to 0..1, so a box reaching past the image cannot read back as the row says."""
    plan, boxes = plan_export(ws.read_manifest(), ws.read_annotations())
    rocket = plan.loc[plan["rel_path"] == ROTATED, "sample_id"].iloc[0]
    boxes = boxes.assign(x2=boxes["x2"].where(boxes["sample_id"] != rocket, 10_000.0))
    with pytest.raises(ExportError) as e:
        export_to(plan, boxes, ExportOptions("yolo", tmp_path / "out"))
    text = str(e.value)
    assert text.startswith(f"{tmp_path / 'out'}: the export did not read back as written (1 differences): "
                           "images/val/rocket.jpg: expected box ('rocket', 20.0, 30.0, 10000.0, 100.0), found "
                           "('rocket', 20.0, 30.0")  # 8-decimal YOLO text: 30.000000345
    assert text.endswith("(nothing was written; see docs/formats.md, Verification)")
    assert os.listdir(tmp_path) == []


def test_cli_rejects_unknown_format(ws, tmp_path):
    res = CliRunner().invoke(cli, ["export", str(ws.root), "--format", "tfrecord", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "Invalid value for '--format': 'tfrecord' is not one of 'coco', 'voc', 'yolo', 'json', 'csv', 'folder', " \
           "'yolo-cls', 'createml'." in res.output


@pytest.mark.parametrize("want, got, missing", [
    ([("a", 0, 0, 5, 5)], [("a", 0, 0, 5, 5 + 5e-5)], None),  # within 1e-6 of a 100 px image
    ([("a", 0, 0, 5, 5)], [("a", 0, 0, 5, 5 + 2e-4)], ("a", 0, 0, 5, 5)),  # beyond it
    ([("a", 0, 0, 5, 5)], [("b", 0, 0, 5, 5)], ("a", 0, 0, 5, 5)),  # same place, other label
    # two boxes closer than the tolerance sort differently on the two sides: still matched
    ([("a", 1.0, 9, 5, 5), ("a", 1.00000001, 1, 5, 5)], [("a", 1.00000001, 9, 5, 5), ("a", 1.0, 1, 5, 5)], None),
])
def test_boxes_match(want, got, missing):
    from curate.geometry import Box
    from curate.stages.export import boxes_match

    found = boxes_match([Box(*b) for b in want], [Box(*b) for b in got], (100, 100))
    assert found == (Box(*missing) if missing else None)


# -- what trainers need: one class index in every split, no empty detection export (issue 14) -------------

def _skewed_ws(tmp_path: Path, skimage_dir: Path) -> Workspace:
    """cat in every split, dog only in train, zebra not in test; names sort differently by number."""
    layout = {"train/cat/chelsea.png": "chelsea.png", "train/cat/coffee.png": "coffee.png",
              "train/dog/horse.png": "horse.png", "train/zebra_10/brick.png": "brick.png",
              "train/zebra_2/grass.png": "grass.png", "val/cat/camera.png": "camera.png",
              "val/zebra_2/gravel.png": "gravel.png", "test/cat/astronaut.png": "astronaut.png"}
    for rel, name in layout.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(skimage_dir / name, tmp_path / "src" / rel)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(tmp_path / "src", layout="folder")], workers=1))
    return ws


@pytest.mark.parametrize("fmt", ["folder", "yolo-cls"])
def test_class_folder_exports_have_every_class_in_every_split(tmp_path, skimage_dir, fmt):
    ws = _skewed_ws(tmp_path, skimage_dir)
    out = tmp_path / "out"
    res = ws.run_stage("export", export, ExportOptions(fmt, out))
    assert res.summary["verified"] == "8 images read back"  # empty folders and classes.txt read back cleanly
    # Sorted by name, as ImageFolder, Keras and Ultralytics number them (zebra_10 before zebra_2).
    classes = ["cat", "dog", "zebra_10", "zebra_2"]
    assert (out / "classes.txt").read_text() == "".join(c + "\n" for c in classes)
    for split in ("train", "val", "test"):
        assert sorted(os.listdir(out / split)) == classes, split
    assert os.listdir(out / "test" / "dog") == []


def test_folder_export_warns_when_classes_order_is_not_the_loaders(tmp_path, skimage_dir):
    ws = _skewed_ws(tmp_path, skimage_dir)
    res = ws.run_stage("export", export, ExportOptions("folder", tmp_path / "out",
                                                       classes=["zebra_2", "zebra_10", "dog", "cat", "emu"]))
    assert (tmp_path / "out/classes.txt").read_text().split() == ["cat", "dog", "emu", "zebra_10", "zebra_2"]
    assert os.listdir(tmp_path / "out/train/emu") == []  # a declared class without images still gets its folder
    assert any("sorted folder name" in w for w in res.summary["warnings"])


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_detection_export_without_boxes_is_refused(tmp_path, skimage_dir, fmt):
    ws = _skewed_ws(tmp_path, skimage_dir)
    res = CliRunner().invoke(cli, ["export", str(ws.root), "--format", fmt, "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.output == (
        f"Error: boxes: expected at least one box in a {fmt} (detection) export, found 0 boxes on 8 images "
        "(add boxes first (`curate faces WS --boxes`, or ingest a dataset with boxes), export classes with "
        "--format folder or yolo-cls, or pass --classes to write every image as a background image)\n")
    assert not (tmp_path / "out").exists()
    # Asked for explicitly: every image a background image, with the declared class list.
    res = CliRunner().invoke(cli, ["export", str(ws.root), "--format", fmt, "--out", str(tmp_path / "out"),
                                   "--classes", "face"])
    assert res.exit_code == 0, res.output
    if fmt == "yolo":
        assert "nc: 1" in (tmp_path / "out/data.yaml").read_text()


def _flip_one_byte(path: Path) -> None:
    """Change a file in place, keeping its size and mtime (an edit the byte count cannot see)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("link", ["copy", "symlink"])
def test_a_source_changed_in_place_after_ingest_is_refused_naming_ingest(tmp_path, skimage_dir, link):
    photos = make_photo_set(tmp_path / "photos", skimage_dir)
    ws = Workspace.create(tmp_path / "ws")
    opts = IngestOptions([SourceSpec(photos.root, layout="json")], workers=1)
    ws.run_stage("ingest", ingest, opts)
    m = ws.read_manifest().set_index("rel_path")
    for rel in ("val/horse.png", ROTATED):  # one written byte for byte, one re-encoded upright
        _flip_one_byte(Path(m.at[rel, "path"]))
    out = tmp_path / "out"
    with pytest.raises(ExportError) as e:
        ws.run_stage("export", export, ExportOptions("yolo", out, link=link))
    text = str(e.value)
    assert text.startswith(f"{out}: 2 source files changed since ingest: images/val/horse.png: its source "
                           f"{m.at['val/horse.png', 'path']} changed since ingest (sha256 ")
    assert f"images/val/rocket.jpg: its source {m.at[ROTATED, 'path']} changed since ingest" in text
    assert text.endswith("(nothing was written; re-run `curate ingest` on their sources to record the files as "
                         "they are now, then export again)")
    assert sorted(os.listdir(tmp_path)) == ["photos", "ws"]
    ws.run_stage("ingest", ingest, opts)  # the manifest now has the files as they are
    res = ws.run_stage("export", export, ExportOptions("yolo", out, link=link))
    assert res.summary["verified"] == f"{res.summary['images']} images read back"


def test_dry_run_plans_and_counts_and_writes_nothing(ws, tmp_path):
    before = (ws.root / "curate.json").read_bytes()
    runs = len(ws.runs())
    res = CliRunner().invoke(cli, ["export", str(ws.root), "--format", "yolo", "--out", str(tmp_path / "y"),
                                   "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    kept = ws.read_manifest(["status"])["status"].eq("kept").sum()
    assert summary["dry_run"] is True and summary["images"] == kept == sum(summary["split"].values())
    assert summary["boxes"] == len(ws.read_annotations()) and sum(summary["action"].values()) == kept
    assert not (tmp_path / "y").exists() and (ws.root / "curate.json").read_bytes() == before
    assert len(ws.runs()) == runs
    # the same plan as the stage's own dry run, which holds the whole manifest
    staged = ws.run_stage("export", export, ExportOptions("yolo", tmp_path / "y", dry_run=True))
    assert staged.summary == summary and not staged.write and not (tmp_path / "y").exists()
