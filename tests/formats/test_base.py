"""What every format shares: split names as ecosystems write them, relative paths, and file look-ups."""

from __future__ import annotations

import pytest

from curate.formats.base import FileNames, canonical_split, relative_path


@pytest.mark.parametrize("name, split", [
    ("train", "train"), ("Training", "train"), ("TRN", "train"),  # common spellings, any case
    ("valid", "val"), ("Validation", "val"), ("dev", "val"),  # Roboflow, AI-Hub, Kaggle
    ("test", "test"), ("testing", "test"),
    ("1.Training", "train"), ("02_Validation", "val"), ("3-test", "test"),  # AI-Hub's numbered folders
    ("[T원천]생활폐기물_01", "train"), ("[V라벨링]car", "val"),  # AI-Hub's archive folders
    ("1.원천데이터", None), ("images", None), ("trainer", None), ("", None), (None, None),  # not splits
])
def test_canonical_split(name, split):
    assert canonical_split(name) == split


def test_relative_path_under_and_outside_the_root():
    assert relative_path("/data/ds/images/a.jpg", "/data/ds") == "images/a.jpg"
    assert relative_path("/data/other/a.jpg", "/data/ds") == "../other/a.jpg"
    assert relative_path("/data/ds/../x/a.jpg", "/data/ds") == "../x/a.jpg"  # never a prefix cut across ".."


def test_file_names_answer_from_one_listing(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    names = FileNames()
    assert names.isfile(tmp_path / "a.jpg") and not names.isfile(tmp_path / "b.jpg")
    (tmp_path / "late.jpg").write_bytes(b"x")  # not in the cached listing: checked on disk
    assert names.isfile(tmp_path / "late.jpg")
