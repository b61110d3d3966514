"""CSV writer (labels or boxes) and the reader's handling of images without boxes."""

from __future__ import annotations

import pandas as pd

from curate.formats.base import ReadOptions, WriteOptions
from curate.formats.csvlist import read_csv, write_csv


def _plan(skimage_dir):
    return pd.DataFrame([
        {"sample_id": "s0", "path": str(skimage_dir / "coffee.png"), "name": "coffee.png", "split": "train",
         "label": "cup", "action": "link"},
        {"sample_id": "s1", "path": str(skimage_dir / "chelsea.png"), "name": "chelsea, the cat.png", "split": "val",
         "label": "cat", "action": "link"}])


def test_label_list(tmp_path, skimage_dir):
    write_csv(_plan(skimage_dir), pd.DataFrame(), tmp_path, WriteOptions())
    assert (tmp_path / "labels.csv").read_text() == ("file,split,label\nimages/train/coffee.png,train,cup\n"
                                                     '"images/val/chelsea, the cat.png",val,cat\n')
    back = read_csv(tmp_path / "labels.csv", ReadOptions())
    assert [(e.rel_path, e.split, e.label, e.reason) for e in back.entries] == [
        ("images/train/coffee.png", "train", "cup", None), ("images/val/chelsea, the cat.png", "val", "cat", None)]


def test_box_list_keeps_images_without_boxes(tmp_path, skimage_dir):
    boxes = pd.DataFrame([{"sample_id": "s0", "label": "cup", "x1": 1.5, "y1": 2, "x2": 30, "y2": 40.25}])
    write_csv(_plan(skimage_dir), boxes, tmp_path, WriteOptions())
    assert (tmp_path / "labels.csv").read_text() == (
        "file,split,x1,y1,x2,y2,label\nimages/train/coffee.png,train,1.5,2,30,40.25,cup\n"
        '"images/val/chelsea, the cat.png",val,,,,,\n')
    back = {e.rel_path: e for e in read_csv(tmp_path / "labels.csv", ReadOptions()).entries}
    assert [(b.label, b.x1, b.y2) for b in back["images/train/coffee.png"].boxes] == [("cup", 1.5, 40.25)]
    assert back["images/val/chelsea, the cat.png"].boxes == []
