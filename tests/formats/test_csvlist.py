"""CSV writer (labels or boxes) and the reader's handling of images without boxes."""

from __future__ import annotations

import pandas as pd
import pytest

from curate.errors import FormatError
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


# -- hostile and malformed input (issue 13) -----------------------------------

def _list(tmp_path, skimage_dir, text: str):
    import shutil

    shutil.copy(skimage_dir / "coffee.png", tmp_path / "a.png")
    shutil.copy(skimage_dir / "chelsea.png", tmp_path / "b.png")
    (tmp_path / "list.csv").write_text(text)
    return read_csv(tmp_path / "list.csv", ReadOptions())


def test_a_file_listed_with_two_labels_is_a_reported_conflict(tmp_path, skimage_dir):
    res = _list(tmp_path, skimage_dir, "file,label\na.png,cup\nb.png,cat\na.png,mug\n")
    assert [(e.rel_path, e.label) for e in res.entries] == [("a.png", "cup"), ("b.png", "cat")]
    assert res.warnings == ["list.csv:4: label_conflict: a.png was given the label 'cup' on line 2 and 'mug' "
                            "here; kept 'cup'"]


def test_a_file_listed_in_two_splits_is_a_reported_leak(tmp_path, skimage_dir):
    res = _list(tmp_path, skimage_dir, "file,split,label\na.png,train,cup\na.png,test,cup\n")
    assert [e.split for e in res.entries] == ["train"]
    assert res.warnings == ["list.csv:3: split_leak: a.png was given the split 'train' on line 2 and 'test' here; "
                            "kept 'train'"]


def test_an_unknown_split_value_is_reported(tmp_path, skimage_dir):
    res = _list(tmp_path, skimage_dir, "file,split,label\na.png,holdout,cup\nb.png,holdout,cat\n")
    assert [e.split for e in res.entries] == [None, None]
    assert res.warnings == ["list.csv: split 'holdout' on 2 rows (first: line 2) is not train, val or test: those "
                            "rows are read without a split (curate split assigns one)"]


@pytest.mark.parametrize("value", ["inf", "nan", "1e999", "-Infinity"])
def test_a_box_that_is_not_finite_names_the_line(tmp_path, skimage_dir, value):
    with pytest.raises(FormatError) as e:
        _list(tmp_path, skimage_dir, f"file,x1,y1,x2,y2,label\na.png,1,2,{value},4,cup\n")
    assert str(e.value) == (f"{tmp_path / 'list.csv'}: line 2 box: expected four finite numbers x1,y1,x2,y2, "
                            f"found a.png,1,2,{value},4,cup")
