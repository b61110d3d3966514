"""What every format shares: relative paths and file look-ups (split names: tests/test_units.py)."""

from __future__ import annotations

from curate.formats.base import FileNames, relative_path


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
