"""The seed scenarios train, on the CPU, for one epoch each (issue 14).

- Face ID, "me vs others": photos -> ``faces`` (largest face) -> ``square``
  160 px -> ``split`` -> yolo-cls export, trained with Ultralytics YOLOv8n-cls
  and with torchvision and timm backbones through ``curate train classify``.
- The 12-person folder export of ``faces_by_person`` (people with two or more
  photos), trained with ``curate train classify --model resnet18``.

Random initialisation everywhere (nothing can be downloaded here), tiny images
and one epoch: these check that every consumer reads the export and trains,
not what it learns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.stages.export import ExportOptions, export
from curate.stages.faces import FacesOptions, faces
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.split import SplitOptions, parse_ratios, split
from curate.stages.square import SquareOptions, square
from curate.workspace import Workspace
from tests.train.test_yolo import _has_ultralytics, train_yolo_cli

pytestmark = [pytest.mark.slow, pytest.mark.corpus]
ME = "angelina"
OTHERS = ("jennifer", "obama", "scarlett")
QUICK = ["--epochs", "1", "--img-size", "32", "--batch-size", "8", "--threads", "1", "--device", "cpu", "--json"]


@pytest.fixture(scope="module")
def face_id_export(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A me/other yolo-cls export of 160 px face squares."""
    base = tmp_path_factory.mktemp("face_id")
    for label, people in (("me", (ME,)), ("other", OTHERS)):
        (base / "src" / label).mkdir(parents=True)
        for person in people:
            for f in sorted((corpus / "faces_by_person" / person).iterdir()):
                shutil.copy2(f, base / "src" / label / f"{person}_{f.name}")
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(base / "src", layout="folder")], workers=1))
    ws.run_stage("faces", faces, FacesOptions(detector="full-range", workers=1))
    ws.run_stage("square", square, SquareOptions(size_px=160, workers=1))
    ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("6:2:2"), seed=0))
    out = base / "export"
    ws.run_stage("export", export, ExportOptions("yolo-cls", out))
    return out


def _classify(export_dir: Path, out: Path, *args: str) -> dict:
    res = CliRunner().invoke(cli, ["train", "classify", str(export_dir), "--out", str(out), *QUICK, *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{"):])


def test_face_id_export_is_squares_of_me_and_others(face_id_export: Path):
    from PIL import Image

    assert (face_id_export / "classes.txt").read_text() == "me\nother\n"
    for name in ("train", "val", "test"):
        files = sorted((face_id_export / name).rglob("*.*"))
        assert {f.parent.name for f in files} == {"me", "other"}, name
        with Image.open(files[0]) as im:
            assert im.size == (160, 160)


@pytest.mark.skipif(not _has_ultralytics(), reason="Ultralytics is not installed (pip install 'curate[yolo]')")
def test_face_id_trains_with_ultralytics_yolo_cls(face_id_export: Path, tmp_path: Path):
    summary, log = train_yolo_cli(face_id_export, tmp_path / "run", tmp_path)
    assert summary["task"] == "classify" and (Path(summary["save_dir"]) / "weights" / "last.pt").is_file()
    assert " 0 corrupt" in log


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "timm:resnet10t"])
def test_face_id_trains_with_a_backbone(face_id_export: Path, tmp_path: Path, model: str):
    if model.startswith("timm:"):
        pytest.importorskip("timm")
    s = _classify(face_id_export, tmp_path / "run", "--model", model)
    assert s["model"] == (model if model.startswith("timm:") else f"torchvision:{model}")
    assert s["classes"] == 2 and set(s["accuracy"]) == {"train", "val", "test"}
    assert all(0 <= v <= 1 for v in s["balanced_accuracy"].values())


def test_twelve_people_folder_export_trains_with_resnet18(corpus: Path, tmp_path: Path):
    src = tmp_path / "src"
    for person in sorted((corpus / "faces_by_person").iterdir()):
        if len(list(person.iterdir())) >= 2:
            shutil.copytree(person, src / person.name)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, layout="folder")], workers=1))
    res = ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("8:1:1"), seed=0))
    ws.run_stage("export", export, ExportOptions("folder", tmp_path / "export"))
    classes = (tmp_path / "export" / "classes.txt").read_text().split()
    assert len(classes) == 12
    for s in ("train", "val", "test"):  # every person's folder in every split, empty or not
        assert sorted(p.name for p in (tmp_path / "export" / s).iterdir()) == classes
    # People with two photos cannot reach three splits; split says which.
    assert any("class 'biden'" in w for w in res.summary["warnings"])
    summary = _classify(tmp_path / "export", tmp_path / "run", "--model", "resnet18")
    assert summary["model"] == "torchvision:resnet18" and summary["classes"] == 12
    # A 12-class test split of a few images is too small to trust, and some people have none there.
    assert any(w.startswith("test:") and "fewer than 20" in w for w in summary["warnings"])
    assert any(w.startswith("test: no images of class") for w in summary["warnings"])
