"""Boxes of dropped duplicates move to the kept copy (merged by IoU), conflicts are reported, nothing is lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from curate.boxes import merge_duplicate_boxes
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace


def _source(root: Path, photo: Path, boxes: list[dict]) -> Path:
    root.mkdir(parents=True)
    shutil.copy(photo, root / "coffee.png")
    (root / "coffee.json").write_text(json.dumps({"image": "coffee.png", "boxes": boxes}))
    return root


def box(label, x1, y1, x2, y2):
    return {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}


def test_the_same_photo_from_two_sources_keeps_the_boxes_of_both(tmp_path, skimage_dir):
    photo = skimage_dir / "coffee.png"
    a = _source(tmp_path / "kaggle", photo, [box("cup", 150, 20, 460, 300)])
    b = _source(tmp_path / "mine", photo, [box("cup", 152, 22, 458, 301),  # the same cup, drawn again
                                           box("spoon", 380, 250, 600, 400),  # a box only this source has
                                           box("plate", 160, 25, 455, 298)])  # the cup called something else
    ws = Workspace.create(tmp_path / "ws")
    res = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(a, "kaggle"), SourceSpec(b, "mine")], workers=1))
    m = ws.read_manifest()
    keeper = m[m["status"] == "kept"]["sample_id"].tolist()
    assert len(keeper) == 1 and m[m["reason"] == "duplicate"]["duplicate_of"].tolist() == keeper
    ann = ws.read_annotations()
    mine = ann[ann["sample_id"] == keeper[0]].sort_values("label")
    assert mine[["label", "origin"]].values.tolist() == [["cup", "json"], ["spoon", "dup:json"]]
    assert res.summary["run"]["boxes_from_duplicates"] == 1 and res.summary["run"]["box_conflicts"] == 1
    [conflict] = [w for w in res.summary["warnings"] if "lies on" in w]
    assert conflict.startswith("mine/coffee.png: box 2 (plate) lies on a cup box of the copy kept (IoU 0.9")
    # a second run adds nothing
    again = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(a, "kaggle"), SourceSpec(b, "mine")], workers=1))
    assert len(ws.read_annotations()) == len(ann) and again.summary["run"]["boxes_from_duplicates"] == 1


def test_boxes_of_a_smaller_copy_are_scaled_and_another_shape_stays_reported():
    m = pd.DataFrame({"sample_id": ["big", "half", "crop"], "status": ["kept", "dropped", "dropped"],
                      "reason": [None, "duplicate", "duplicate"], "duplicate_of": [None, "big", "big"],
                      "width": [600, 300, 200], "height": [400, 200, 200], "rel_path": ["a", "b", "c"],
                      "source": ["s", "s", "s"]})
    ann = pd.DataFrame({"sample_id": ["half", "crop"], "label": ["cup", "cup"], "x1": [10.0, 0.0],
                        "y1": [10.0, 0.0], "x2": [50.0, 20.0], "y2": [30.0, 20.0], "origin": ["voc", "voc"]})
    out, report = merge_duplicate_boxes(m, ann)
    moved = out[out["sample_id"] == "big"]
    assert moved[["x1", "y1", "x2", "y2"]].values.tolist() == [[20.0, 20.0, 100.0, 60.0]]
    assert report["not_moved"] == ["s/c: 1 boxes stay on this duplicate: its frame 200x200 does not scale to its "
                                   "keeper's 600x400"]


@pytest.mark.parametrize("iou_min, added", [(0.5, 0), (0.95, 1)])
def test_iou_threshold_decides_what_is_the_same_object(iou_min, added):
    m = pd.DataFrame({"sample_id": ["k", "d"], "status": ["kept", "dropped"], "reason": [None, "duplicate"],
                      "duplicate_of": [None, "k"], "width": [100, 100], "height": [100, 100],
                      "rel_path": ["k", "d"], "source": ["s", "s"]})
    ann = pd.DataFrame({"sample_id": ["k", "d"], "label": ["cat", "cat"], "x1": [10.0, 12.0], "y1": [10.0, 12.0],
                        "x2": [50.0, 50.0], "y2": [50.0, 50.0], "origin": ["coco", "coco"]})
    _, report = merge_duplicate_boxes(m, ann, iou_min=iou_min)
    assert report["added"] == added


def test_dedupe_moves_the_boxes_of_a_smaller_copy_to_the_photo_it_keeps(tmp_path, skimage_dir):
    from curate.stages.dedupe import DedupeOptions, dedupe

    photo = Image.open(skimage_dir / "coffee.png").convert("RGB")  # 600x400
    a = tmp_path / "kaggle"
    b = tmp_path / "crawl"
    a.mkdir()
    b.mkdir()
    photo.save(a / "coffee.png")
    photo.resize((300, 200)).save(b / "coffee_small.jpg", quality=80)  # a re-encoded, smaller copy
    (a / "coffee.json").write_text(json.dumps({"image": "coffee.png", "boxes": [box("cup", 150, 20, 460, 300)]}))
    (b / "coffee_small.json").write_text(json.dumps({"image": "coffee_small.jpg", "boxes": [
        box("cup", 75, 10, 230, 150), box("spoon", 190, 125, 300, 200)]}))
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(a, "kaggle"), SourceSpec(b, "crawl")], workers=1))
    res = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1))
    assert res.summary["boxes_from_duplicates"] == 1
    m = ws.read_manifest()
    keeper = m[m["status"] == "kept"]["sample_id"].item()
    ann = ws.read_annotations()
    kept_boxes = ann[ann["sample_id"] == keeper].sort_values("label")
    assert kept_boxes[["label", "x1", "y1", "x2", "y2", "origin"]].values.tolist() == [
        ["cup", 150.0, 20.0, 460.0, 300.0, "json"], ["spoon", 380.0, 250.0, 600.0, 400.0, "dup:json"]]
    again = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1))
    assert len(ws.read_annotations()) == len(ann) and again.summary["boxes_from_duplicates"] == 0
