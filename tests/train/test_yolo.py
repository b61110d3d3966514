"""``curate train yolo``: Ultralytics trains one epoch on curate's own exports, on the CPU, offline.

Each run is the installed ``curate`` command in a subprocess with Ultralytics
kept offline (``YOLO_OFFLINE``: no font, weight or hub downloads; no
auto-install of packages) and its settings in a temporary folder. The models
are built from their YAML (random init), so nothing is downloaded. What
Ultralytics made of the export is read from its own dataset scan, the cache it
writes next to the data: every image found, none corrupt, and the labels
curate wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.formats.photoset import make_photo_set


def _has_ultralytics() -> bool:
    # find_spec, not import: importing Ultralytics writes its settings file and checks the network.
    try:
        return importlib.util.find_spec("ultralytics") is not None
    except ValueError:
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _has_ultralytics(),
                                                   reason="Ultralytics is not installed (pip install 'curate[yolo]')")]


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Ultralytics without network, package installs, GPU or a user settings file."""
    return {**os.environ, "YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false",
            "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics-settings"), "CUDA_VISIBLE_DEVICES": "",
            "MPLBACKEND": "Agg", "NO_COLOR": "1"}


def train_yolo_cli(export_dir: Path, out: Path, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    """Run ``curate train yolo`` for one epoch; return its JSON summary and the whole log."""
    curate = Path(sys.executable).parent / "curate"
    cmd = [str(curate), "train", "yolo", str(export_dir), "--epochs", "1", "--img-size", "64", "--batch-size", "4",
           "--device", "cpu", "--out", str(out), "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=offline_env(tmp_path))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Downloading" not in log, log[-4000:]  # nothing fetched: fonts, weights, AMP check models
    summary = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    return summary, log


def test_detect_trains_on_a_yolo_export_and_reads_every_label(tmp_path, skimage_dir):
    photos = make_photo_set(tmp_path / "photos", skimage_dir)  # a WebP, an EXIF-rotated JPEG, an image without boxes
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(photos.root, layout="json")], workers=1))
    out = tmp_path / "yolo"
    ws.run_stage("export", export, ExportOptions("yolo", out))
    summary, log = train_yolo_cli(out, tmp_path / "run", tmp_path)
    assert summary["task"] == "detect" and (Path(summary["save_dir"]) / "weights" / "last.pt").is_file()
    assert re.search(r"train: .*4 images, 0 backgrounds, 0 corrupt", log), log[-3000:]
    assert re.search(r"val: .*2 images, 1 backgrounds, 0 corrupt", log), log[-3000:]  # horse.png: no boxes
    for split in ("train", "val"):
        # Ultralytics' scan, cached beside the labels (labels/<split>.cache): what it will train on.
        cache = np.load(out / "labels" / f"{split}.cache", allow_pickle=True).item()
        missing, found, empty, corrupt, total = cache["results"]
        images = sorted(os.listdir(out / "images" / split))
        assert (corrupt, total) == (0, len(images)) and not cache["msgs"], cache["msgs"]
        for lab in cache["labels"]:
            written = out / "labels" / split / (Path(lab["im_file"]).stem + ".txt")
            text = written.read_text() if written.exists() else ""  # a background image's file is empty
            rows = np.array([[float(v) for v in ln.split()] for ln in text.splitlines() if ln.strip()]).reshape(-1, 5)
            assert np.array_equal(lab["cls"].ravel(), rows[:, 0]), written
            assert np.allclose(lab["bboxes"], rows[:, 1:], atol=1e-6), written


def test_classify_trains_on_a_yolo_cls_export(tmp_path, skimage_dir):
    src = tmp_path / "src"
    for split, cls, name in [("train", "cat", "chelsea.png"), ("train", "cat", "coffee.png"),
                             ("train", "dog", "horse.png"), ("train", "dog", "camera.png"),
                             ("val", "cat", "astronaut.png"), ("val", "dog", "coins.png"), ("test", "cat", "brick.png")]:
        (src / split / cls).mkdir(parents=True, exist_ok=True)
        (src / split / cls / name).write_bytes((skimage_dir / name).read_bytes())
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, layout="folder")], workers=1))
    out = tmp_path / "cls"
    ws.run_stage("export", export, ExportOptions("yolo-cls", out))  # test/dog is an empty folder
    summary, log = train_yolo_cli(out, tmp_path / "run", tmp_path)
    assert summary["task"] == "classify" and (Path(summary["save_dir"]) / "weights" / "last.pt").is_file()
    assert re.search(r"train: .*4 images, 0 corrupt", log), log[-3000:]
    # Ultralytics' classify scan is cached as <split>.cache next to the split folder: (found, corrupt, total, samples).
    found, corrupt, total, samples = np.load(out / "train.cache", allow_pickle=True).item()["results"]
    assert (found, corrupt, total) == (4, 0, 4)
    assert sorted((Path(p).parent.name, Path(p).name) for p, _ in samples) == [
        ("cat", "chelsea.png"), ("cat", "coffee.png"), ("dog", "camera.png"), ("dog", "horse.png")]
