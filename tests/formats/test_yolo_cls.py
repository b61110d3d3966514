"""YOLO classify: always split folders; reading insists on them."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from curate.errors import FormatError
from curate.formats.base import ReadOptions, WriteOptions
from curate.formats.yolo_cls import read_yolo_cls, write_yolo_cls


def test_split_folders_are_written_even_when_asked_not_to(tmp_path, skimage_dir):
    plan = pd.DataFrame([{"sample_id": "s0", "path": str(skimage_dir / "coffee.png"), "rel_path": "c.png",
                          "name": "c.png", "split": "val", "label": "cup", "action": "link"}])
    res = write_yolo_cls(plan, pd.DataFrame(), tmp_path, WriteOptions(extra={"split_dirs": False}))
    assert res.files == {"s0": "val/cup/c.png"}
    assert [(e.rel_path, e.split, e.label) for e in read_yolo_cls(tmp_path, ReadOptions()).entries] == [
        ("val/cup/c.png", "val", "cup")]


def test_valid_folder_is_val(tmp_path, skimage_dir):
    (tmp_path / "valid/cup").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "valid/cup/c.png")
    assert [(e.split, e.label) for e in read_yolo_cls(tmp_path, ReadOptions()).entries] == [("val", "cup")]


def test_class_folders_without_splits_are_refused(tmp_path):
    (tmp_path / "cup").mkdir()
    (tmp_path / "cat").mkdir()
    with pytest.raises(FormatError) as e:
        read_yolo_cls(tmp_path, ReadOptions())
    assert str(e.value) == (f"{tmp_path}: expected train/, val/ (or valid/) and test/ folders holding class folders, "
                            "found folders ['cat', 'cup'] (for class/image folders use --layout folder)")
