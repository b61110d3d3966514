"""The AI-Hub path end to end on corpus photos: a household-waste tree as AI-Hub ships it (numbered split folders,
images and labels apart, coordinates as strings, "W*H" sizes), ingested without options, its official validation
split kept, exported to YOLO and converted without a workspace; and the vehicle-damage shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image, ImageOps

from curate.cli import cli
from curate.workspace import Workspace
from tests.conftest import tree_digest

pytestmark = pytest.mark.corpus
CLASSES = ("c_1", "c_3", "c_12")


def _photos(corpus: Path, n: int) -> list[Path]:
    out = []
    for p in sorted((corpus / "faces_by_person").glob("*/*.jpg")) + sorted((corpus / "photos").glob("*.jpg")):
        try:
            with Image.open(p) as im:
                im.load()
            out.append(p)
        except Exception:  # the corpus keeps broken files on purpose
            continue
    return out[:n]


def household_tree(corpus: Path, root: Path, rng: np.random.Generator) -> dict[str, str]:
    """``1.Training`` / ``2.Validation``, each with ``1.원천데이터`` (images) and ``2.라벨링데이터`` (JSON)."""
    splits = {}
    for k, photo in enumerate(_photos(corpus, 12)):
        split_dir = "1.Training" if k < 9 else "2.Validation"
        name = f"25_X{k:03d}_C012_1217_0.jpg"
        img_dir, lab_dir = root / split_dir / "1.원천데이터" / "TS_생활폐기물", root / split_dir / "2.라벨링데이터" / "TL_생활폐기물"
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        (img_dir / name).write_bytes(photo.read_bytes())
        w, h = ImageOps.exif_transpose(Image.open(photo)).size
        boxes = []
        for b in range(2):
            x1, y1 = rng.uniform(0, w * 0.5), rng.uniform(0, h * 0.5)
            x2, y2 = x1 + rng.uniform(0.2, 0.45) * w, y1 + rng.uniform(0.2, 0.45) * h
            boxes.append({"CLASS": CLASSES[(k + b) % 3], "DETAILS": "", "Drawing": "BOX",
                          "x1": f"{x1:.0f}", "y1": f"{y1:.0f}", "x2": f"{x2:.0f}", "y2": f"{y2:.0f}"})
        doc = {"FILE NAME": name, "RESOLUTION": f"{w}*{h}", "DAY/NIGHT": "Day", "Bounding": boxes}
        (lab_dir / f"{Path(name).stem}.json").write_text(json.dumps(doc, ensure_ascii=False))
        splits[name] = "train" if k < 9 else "val"
    return splits


def test_household_waste_tree_to_yolo_with_its_official_split(corpus, tmp_path):
    src = tmp_path / "생활폐기물"
    splits = household_tree(corpus, src, np.random.default_rng(3))
    before = tree_digest(src)
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws"), "--workers", "2", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["run"]["boxes"] == 24 and summary["status"] == {"kept": 12}
    assert any("aihub-household-waste" in w for w in summary["warnings"])
    m = Workspace.open(tmp_path / "ws").read_manifest()
    assert dict(zip(m["rel_path"].map(lambda p: p.rsplit("/", 1)[-1]), m["split"], strict=True)) == splits
    # split adds a test split from the training part only; the official validation stays as it is
    res = runner.invoke(cli, ["split", str(tmp_path / "ws"), "--ratios", "6:2:2", "--stratify", "none"])
    assert res.exit_code == 0, res.output
    m = Workspace.open(tmp_path / "ws").read_manifest()
    val = m[m["rel_path"].str.startswith("2.Validation")]
    assert set(val["split"]) == {"val"}
    out = tmp_path / "yolo"
    res = runner.invoke(cli, ["export", str(tmp_path / "ws"), "--format", "yolo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert sorted(data["names"].values()) == sorted(CLASSES)
    assert sum(len(p.read_text().splitlines()) for p in out.glob("labels/*/*.txt")) == 24
    assert len(list(out.glob("images/val/*"))) == 3
    # the same tree converted directly, no workspace
    conv = tmp_path / "coco"
    res = runner.invoke(cli, ["convert", str(src), "--to", "coco", "--out", str(conv), "--json"])
    assert res.exit_code == 0, res.output
    from pycocotools.coco import COCO

    val_coco = COCO(str(next(conv.rglob("*val*.json"))))
    assert len(val_coco.getImgIds()) == 3 and len(val_coco.getAnnIds()) == 6
    assert tree_digest(src) == before


def test_vehicle_damage_shape_round_trips_through_a_workspace(corpus, tmp_path):
    src = tmp_path / "damage"
    src.mkdir()
    rng = np.random.default_rng(5)
    for k, photo in enumerate(_photos(corpus, 6)):
        name = f"{k:07d}_as-{k:07d}.jpg"
        (src / name).write_bytes(photo.read_bytes())
        w, h = ImageOps.exif_transpose(Image.open(photo)).size
        anns = [{"id": j, "image_id": k, "damage": ("Scratched", "Crushed", "Breakage")[(k + j) % 3],
                 "bbox": [round(float(rng.uniform(0, w / 2)), 1), round(float(rng.uniform(0, h / 2)), 1),
                          round(float(rng.uniform(10, w / 3)), 1), round(float(rng.uniform(10, h / 3)), 1)]}
                for j in range(3)]
        doc = {"categories": {"supercategory_name": "damage"}, "images": {"id": k, "file_name": name, "width": w,
                                                                           "height": h}, "annotations": anns}
        (src / f"{Path(name).stem}.json").write_text(json.dumps(doc))
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws"), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["run"]["boxes"] == 18
    out = tmp_path / "back"
    res = runner.invoke(cli, ["export", str(tmp_path / "ws"), "--format", "json", "--json-mapping",
                              "aihub-vehicle-damage", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for f in sorted(p for p in out.rglob("*.json") if p.name != ".curate-export.json"):
        doc = json.loads(f.read_text())
        orig = json.loads((src / f.name).read_text())
        assert doc["images"]["file_name"] == orig["images"]["file_name"]
        got = sorted((a["damage"], *a["bbox"]) for a in doc["annotations"])
        want = sorted((a["damage"], *a["bbox"]) for a in orig["annotations"])
        assert np.allclose([g[1:] for g in got], [w_[1:] for w_ in want], atol=1e-6)
        assert [g[0] for g in got] == [w_[0] for w_ in want]


def test_the_same_photos_from_two_sources_keep_every_box(corpus, tmp_path):
    """Two downloads of the same AI-Hub photos with different boxes: the copies dropped as duplicates give their
    boxes to the kept ones; a box of another class on the same object is reported, not added."""
    photos = _photos(corpus, 4)
    sources = []
    for name, extra in (("hub_v1", False), ("hub_v2", True)):
        src = tmp_path / name
        src.mkdir()
        for k, photo in enumerate(photos):
            (src / f"{k}.jpg").write_bytes(photo.read_bytes())
            w, h = ImageOps.exif_transpose(Image.open(photo)).size
            boxes = [{"CLASS": "c_1", "x1": "0", "y1": "0", "x2": str(w // 2), "y2": str(h // 2)}]
            if extra:  # the second release adds a box, and calls the first object something else in photo 0
                boxes.append({"CLASS": "c_3", "x1": str(w // 2), "y1": str(h // 2), "x2": str(w), "y2": str(h)})
                if k == 0:
                    boxes[0]["CLASS"] = "c_12"
            (src / f"{k}.json").write_text(json.dumps({"FILE NAME": f"{k}.jpg", "RESOLUTION": f"{w}*{h}",
                                                       "Bounding": boxes}))
        sources.append(src)
    res = CliRunner().invoke(cli, ["ingest", *map(str, sources), "--into", str(tmp_path / "ws"), "--workers", "1",
                                   "--json"])
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout)["run"]
    assert (run["boxes_from_duplicates"], run["box_conflicts"]) == (4, 1)
    ws = Workspace.open(tmp_path / "ws")
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"]
    assert len(kept) == 4 and set(kept["source"]) == {"hub_v1"}
    ann = ws.read_annotations().merge(kept[["sample_id"]])
    assert sorted(ann["label"]) == ["c_1"] * 4 + ["c_3"] * 4  # the c_12 conflict is reported, not added
