"""Exports read by the tools people train with: pycocotools, FiftyOne's own
importers (real mongod in a temporary database folder), torchvision
ImageFolder and Keras image_dataset_from_directory (real libraries; Keras runs
from its own venv, .venv-keras, in a subprocess). Ultralytics
trains on exports in tests/train/test_yolo.py.

Boxes and labels are compared with the workspace's own rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.formats.photoset import ROTATED, make_photo_set


@pytest.fixture(scope="module")
def ws_rows(tmp_path_factory, skimage_dir):
    base = tmp_path_factory.mktemp("consumers")
    photos = make_photo_set(base / "photos", skimage_dir)
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(photos.root, layout="json")], workers=1))
    return base, ws


def _export(ws_rows, fmt: str) -> tuple[Path, dict[str, str]]:
    """Export once per format; return the folder and {file name: sample_id}."""
    base, ws = ws_rows
    out = base / "out" / fmt
    if not out.exists():
        ws.run_stage("export", export, ExportOptions(fmt, out))
    run = [r for r in ws.runs() if r["command"] == "export" and r["export"]["out"] == str(out)][-1]
    mapping = pd.read_parquet(ws.root / run["export"]["map"])
    return out, {Path(f).name: sid for f, sid in zip(mapping["file"], mapping["sample_id"], strict=True)}


def _truth(ws: Workspace) -> tuple[pd.DataFrame, dict[str, list[tuple[str, float, float, float, float]]]]:
    m = ws.read_manifest().set_index("sample_id")
    boxes: dict[str, list[tuple[str, float, float, float, float]]] = {}
    for b in ws.read_annotations().itertuples():
        boxes.setdefault(b.sample_id, []).append((b.label, b.x1, b.y1, b.x2, b.y2))
    return m, boxes


def _close(a, b, tol=1e-6):
    return len(a) == len(b) and all(p[0] == q[0] and all(abs(x - y) <= tol for x, y in zip(p[1:], q[1:], strict=True))
                                    for p, q in zip(sorted(a), sorted(b), strict=True))


def test_pycocotools_loads_every_split(ws_rows):
    from pycocotools.coco import COCO

    out, names = _export(ws_rows, "coco")
    manifest, truth = _truth(ws_rows[1])
    seen = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(out / f"annotations/instances_{split}.json"))
        assert sorted(coco.getCatIds()) == list(range(1, len(coco.cats) + 1))  # ids from 1, contiguous
        for img in coco.imgs.values():
            sid = names[img["file_name"]]
            assert (img["width"], img["height"]) == (manifest.at[sid, "width"], manifest.at[sid, "height"])
            got = [(coco.cats[a["category_id"]]["name"], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3]) for a in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))]
            assert _close(got, truth.get(sid, [])), img["file_name"]
            seen += 1
    assert seen == 7


def _fo_boxes(sample, field, w, h):
    dets = sample[field].detections if sample[field] is not None else []
    return [(d.label, d.bounding_box[0] * w, d.bounding_box[1] * h, (d.bounding_box[0] + d.bounding_box[2]) * w,
             (d.bounding_box[1] + d.bounding_box[3]) * h) for d in dets]


@pytest.mark.slow  # a real mongod and nine FiftyOne imports: 20-50 s on 2 busy cores
def test_fiftyone_importers_read_coco_yolo_and_folder(ws_rows, fiftyone_env):
    fo = fiftyone_env
    import fiftyone.types as fot

    ws = ws_rows[1]
    manifest, truth = _truth(ws)
    coco_out, coco_names = _export(ws_rows, "coco")
    yolo_out, yolo_names = _export(ws_rows, "yolo")
    folder_out, folder_names = _export(ws_rows, "folder")
    checked = {"coco": 0, "yolo": 0, "folder": 0}
    for split in ("train", "val", "test"):
        ds = fo.Dataset.from_dir(dataset_type=fot.COCODetectionDataset, data_path=str(coco_out / "images" / split),
                                 labels_path=str(coco_out / f"annotations/instances_{split}.json"),
                                 label_types="detections", label_field="gt")
        for s in ds:
            sid = coco_names[Path(s.filepath).name]
            w, h = manifest.at[sid, "width"], manifest.at[sid, "height"]
            assert _close(_fo_boxes(s, "gt", w, h), truth.get(sid, []), tol=1e-6 * max(w, h)), s.filepath
            checked["coco"] += 1
        ds.delete()
        # FiftyOne looks for dataset.yaml by default; Ultralytics and Roboflow name it data.yaml.
        ds = fo.Dataset.from_dir(dataset_dir=str(yolo_out), dataset_type=fot.YOLOv5Dataset, split=split,
                                 yaml_path="data.yaml", label_field="gt")
        for s in ds:
            sid = yolo_names[Path(s.filepath).name]
            w, h = manifest.at[sid, "width"], manifest.at[sid, "height"]
            assert _close(_fo_boxes(s, "gt", w, h), truth.get(sid, []), tol=1e-6 * max(w, h)), s.filepath
            checked["yolo"] += 1
        ds.delete()
        ds = fo.Dataset.from_dir(dataset_dir=str(folder_out / split),
                                 dataset_type=fot.ImageClassificationDirectoryTree, label_field="gt")
        for s in ds:
            sid = folder_names[Path(s.filepath).name]
            assert s["gt"].label == manifest.at[sid, "label"]
            checked["folder"] += 1
        ds.delete()
    assert checked == {"coco": 7, "yolo": 7, "folder": 7}


# torchvision.datasets.ImageFolder: classes = sorted sub-folder names; files kept
# when their lower-cased name ends with one of these (torchvision/datasets/folder.py).
TORCHVISION_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# keras.utils.image_dataset_from_directory: sub-folders are classes, files at the
# top are ignored, and only these extensions are read (keras/src/utils/image_dataset_utils.py).
KERAS_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def test_folder_export_has_the_layout_imagefolder_and_keras_read(ws_rows):
    out, names = _export(ws_rows, "folder")
    manifest, _ = _truth(ws_rows[1])
    # split folders, the class list and curate's marker (a file: the loaders list folders only)
    assert sorted(os.listdir(out)) == [".curate-export.json", "classes.txt", "test", "train", "val"]
    seen = {}
    for split in ("train", "val", "test"):
        entries = sorted(os.scandir(out / split), key=lambda e: e.name)
        assert all(e.is_dir() for e in entries), f"stray files in {split}/"
        for cls in entries:
            for f in os.listdir(cls.path):
                assert f.lower().endswith(TORCHVISION_EXTENSIONS) and f.lower().endswith(KERAS_EXTENSIONS), f
                assert not os.path.isdir(os.path.join(cls.path, f))
                seen[f] = (split, cls.name)
    assert len(seen) == 7
    for f, (split, cls) in seen.items():
        sid = names[f]
        assert cls == manifest.at[sid, "label"]
        assert split == (manifest.at[sid, "split"] or "train")  # rows without a split go to train


def test_rotated_photo_is_written_upright_without_orientation(ws_rows):
    from PIL import Image

    out, names = _export(ws_rows, "yolo")
    manifest, _ = _truth(ws_rows[1])
    rotated = [f for f, sid in names.items() if manifest.at[sid, "rel_path"] == ROTATED]
    with Image.open(out / "images/val" / rotated[0]) as im:
        assert im.getexif().get(0x0112) is None  # no tag left for a reader to apply twice
        assert im.size == (160, 107)  # stored upright: what the boxes were drawn on


# -- one class index in every split (issue 14) --------------------------------------------------

KERAS_READ = """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
out = {}
for split in sys.argv[2:]:
    ds = keras.utils.image_dataset_from_directory(os.path.join(sys.argv[1], split), image_size=(32, 32),
                                                  batch_size=4, shuffle=False, verbose=False)
    labels = [int(v) for _, y in ds for v in y.numpy()]
    out[split] = {"class_names": ds.class_names, "files": [os.path.basename(p) for p in ds.file_paths],
                  "labels": labels}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def skewed_exports(tmp_path_factory, skimage_dir):
    """Folder and yolo-cls exports of classes missing from some splits (dog: train only)."""
    from curate.stages.split import SplitOptions, parse_ratios, split

    base = tmp_path_factory.mktemp("skewed")
    names = {"cat": ["chelsea.png", "coffee.png", "camera.png", "astronaut.png", "rocket.jpg"],
             "dog": ["horse.png"], "zebra_10": ["brick.png", "grass.png"], "zebra_2": ["gravel.png", "coins.png",
                                                                                      "moon.png"]}
    for cls, files in names.items():
        (base / "src" / cls).mkdir(parents=True)
        for f in files:
            shutil.copy2(skimage_dir / f, base / "src" / cls / f)
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(base / "src", layout="folder")], workers=1))
    res = ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("8:1:1"), seed=0))
    # split warns, naming the classes that cannot reach every split, and puts zebra_2 (3 images) in all three.
    assert [w.split(" has ")[0] for w in res.summary["warnings"]] == ["class 'dog'", "class 'zebra_10'"]
    assert res.summary["after"]["zebra_2"] == {"train": 1, "val": 1, "test": 1}
    outs = {}
    for fmt in ("folder", "yolo-cls"):
        outs[fmt] = base / fmt
        ws.run_stage("export", export, ExportOptions(fmt, outs[fmt]))
    return ws, outs


@pytest.mark.parametrize("fmt", ["folder", "yolo-cls"])
def test_imagefolder_numbers_classes_alike_in_every_split(skewed_exports, fmt):
    from torchvision.datasets import ImageFolder

    ws, outs = skewed_exports
    out = outs[fmt]
    classes = (out / "classes.txt").read_text().split()
    m = ws.read_manifest()
    label_of = dict(zip(m["rel_path"].map(lambda r: Path(r).name), m["label"], strict=True))  # names are unique
    for split in ("train", "val", "test"):
        # allow_empty: ImageFolder refuses a class folder without images unless told (torchvision >= 0.18).
        ds = ImageFolder(str(out / split), allow_empty=True)
        assert ds.class_to_idx == {c: i for i, c in enumerate(classes)}, split
        for path, idx in ds.samples:  # every image under the index of its own class
            assert ds.classes[idx] == label_of[Path(path).name]


# Keras lives in its own venv (scripts/setup.sh): with TensorFlow importable, mediapipe imports it, and
# torchvision imported after TensorFlow segfaults. CURATE_KERAS_PYTHON points at another interpreter.
KERAS_PYTHON = Path(os.environ.get("CURATE_KERAS_PYTHON")
                    or Path(__file__).resolve().parents[2] / ".venv-keras" / "bin" / "python")


@pytest.mark.slow  # TensorFlow's import alone takes 5-15 s
@pytest.mark.skipif(not KERAS_PYTHON.exists(),
                    reason=f"no Keras interpreter at {KERAS_PYTHON} (./scripts/setup.sh makes .venv-keras)")
@pytest.mark.parametrize("fmt", ["folder", "yolo-cls"])
def test_keras_numbers_classes_alike_in_every_split(skewed_exports, fmt):
    ws, outs = skewed_exports
    out = outs[fmt]
    classes = (out / "classes.txt").read_text().split()
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([str(KERAS_PYTHON), "-c", KERAS_READ, str(out), "train", "val", "test"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    read = json.loads(proc.stdout.strip().splitlines()[-1])
    m = ws.read_manifest()
    label_of = dict(zip(m["rel_path"].map(lambda r: Path(r).name), m["label"], strict=True))  # names are unique
    for split, got in read.items():
        # Keras infers the classes from the folders, empty ones included, in sorted order.
        assert got["class_names"] == classes, split
        assert [classes[i] for i in got["labels"]] == [label_of[n] for n in got["files"]], split
