"""Folder writer: split/class/image or class/image, labels that cannot be folders."""

from __future__ import annotations

import pandas as pd
import pytest

from curate.errors import ExportError
from curate.formats.base import ReadOptions, WriteOptions
from curate.formats.folder import read_folder, write_folder


def _plan(skimage_dir, labels, splits=None):
    names = ["coffee.png", "chelsea.png", "astronaut.png"][: len(labels)]
    return pd.DataFrame([{"sample_id": f"s{i}", "path": str(skimage_dir / n), "rel_path": n, "name": n,
                          "split": (splits or ["train"] * 3)[i], "label": lab, "action": "link"}
                         for i, (n, lab) in enumerate(zip(names, labels, strict=False))])


@pytest.mark.parametrize("split_dirs, expected", [
    (True, {"train/cup/coffee.png": ("train", "cup"), "val/cat/chelsea.png": ("val", "cat")}),  # default
    (False, {"cup/coffee.png": (None, "cup"), "cat/chelsea.png": (None, "cat")}),  # Kaggle class/image
])
def test_layout_reads_back(tmp_path, skimage_dir, split_dirs, expected):
    res = write_folder(_plan(skimage_dir, ["cup", "cat"], ["train", "val"]), pd.DataFrame(), tmp_path,
                       WriteOptions(extra={"split_dirs": split_dirs}))
    assert sorted(res.files.values()) == sorted(expected)
    back = read_folder(tmp_path, ReadOptions())
    assert {e.rel_path: (e.split, e.label) for e in back.entries} == expected


@pytest.mark.parametrize("labels, extra, message", [
    # a label with a slash would become two folders
    (["a/b"], {}, "label: expected a name usable as a folder (no '/', '\\', leading/trailing spaces), found 'a/b' "
                  "(relabel those rows before a folder export)"),
    # without split folders a class called "test" would read back as a split
    (["test"], {"split_dirs": False}, "label: expected class names that are not split names without split folders, "
                                      "found ['test'] (keep split folders (drop --no-split-dirs))"),
    # an unlabeled row has no folder to go to
    ([None], {}, "label: expected a label on every exported row of a class-folder export, found 1 rows without one "
                 "(e.g. coffee.png) (label or drop them first, export boxes with --format coco/yolo/voc, or, when "
                 "they are the photos that `curate crop` cut patches from, re-run it with --supersede)"),
])
def test_bad_labels(tmp_path, skimage_dir, labels, extra, message):
    with pytest.raises(ExportError) as e:
        write_folder(_plan(skimage_dir, labels), pd.DataFrame(), tmp_path, WriteOptions(extra=extra))
    assert str(e.value) == message
