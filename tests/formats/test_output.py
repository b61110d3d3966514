"""curate.formats.output: image policy, names, class lists, number text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import ExportError
from curate.formats.output import class_list, fmt_frac, fmt_num, image_action, natural_key


@pytest.mark.parametrize("fmt, orientation, suffix, expected", [
    ("JPEG", None, ".jpg", ("link", ".jpg", None)),  # the common case: bytes kept
    ("JPEG", 1, ".JPEG", ("link", ".JPEG", None)),  # orientation 1 is upright; extension case kept
    ("JPEG", None, ".jfif", ("link", ".jpg", None)),  # JPEG bytes under a name consumers skip: renamed only
    ("MPO", None, ".jpg", ("link", ".jpg", None)),  # multi-picture JPEG decodes as JPEG everywhere
    ("PNG", None, ".jpg", ("link", ".png", None)),  # PNG named .jpg: bytes kept, extension fixed
    ("JPEG", 6, ".jpg", ("encode", ".jpg", "exif_orientation")),  # rotated phone photo: upright JPEG
    ("PNG", 8, ".png", ("encode", ".png", "exif_orientation")),  # lossless source stays lossless
    ("WEBP", None, ".jpg", ("encode", ".png", "format")),  # WebP named .jpg: Keras would skip it
    ("TIFF", None, ".tif", ("encode", ".png", "format")),  # not in Keras' allow-list
    ("HEIF", None, ".heic", ("encode", ".jpg", "format")),  # lossy source: JPEG, not a huge PNG
    ("GIF", None, ".gif", ("encode", ".png", "format")),  # first frame of an animation
    (None, None, ".jpg", ("encode", ".png", "format")),  # unknown content: re-encoded, never trusted
])
def test_image_action(fmt, orientation, suffix, expected):
    assert image_action(fmt, orientation, suffix) == expected


def test_natural_key_orders_numbers_as_numbers():
    assert sorted(["label_10", "label_2", "Label_1", "b"], key=natural_key) == ["b", "Label_1", "label_2", "label_10"]


def test_class_list_keeps_declared_order_and_rejects_unknown_labels():
    assert class_list(["b", "a"], ["b", "a", "c"]) == ["b", "a", "c"]
    with pytest.raises(ExportError) as e:
        class_list(["a", "zebra"], ["a", "b"])
    assert str(e.value) == ("--classes: expected every exported label among ['a', 'b'], found 1 missing: ['zebra'] "
                            "(add them to --classes, or drop those rows first)")


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_fmt_num_reads_back_exactly(v):
    assert float(fmt_num(v)) == v


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(st.floats(min_value=0, max_value=1))
def test_fmt_frac_error_is_below_1e_8(v):
    assert abs(float(fmt_frac(v)) - v) <= 5e-9 + 1e-15


def test_copy_file_is_an_independent_copy(tmp_path):
    from curate.formats.output import copy_file

    src = tmp_path / "src.jpg"
    src.write_bytes(b"\xff\xd8" + bytes(range(256)) * 300)
    dest = tmp_path / "new" / "folder" / "dest.jpg"  # missing folders are made
    copy_file(src, dest)
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_ino != src.stat().st_ino and dest.stat().st_nlink == 1  # not a hard link
    src.write_bytes(b"changed")
    assert dest.stat().st_size == 2 + 256 * 300  # a later change to the source does not reach the export


def test_copy_file_of_an_empty_file(tmp_path):
    from curate.formats.output import copy_file

    (tmp_path / "empty").write_bytes(b"")
    copy_file(tmp_path / "empty", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b""


def test_file_writer_writes_everything_and_raises_the_first_failure(tmp_path):
    from curate.formats.output import FileWriter

    src = tmp_path / "a.jpg"
    src.write_bytes(b"jpeg bytes")
    with FileWriter("copy", batch=3) as w:
        for i in range(10):
            w.image(src, tmp_path / "out" / f"{i}.jpg", "link")
            w.text(str(tmp_path / "out" / f"{i}.txt"), f"line {i}\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{i}.jpg" for i in range(10)] + [f"{i}.txt" for i in range(10)])
    assert (tmp_path / "out" / "7.txt").read_text() == "line 7\n"
    with pytest.raises(ExportError, match="the source image is missing"), FileWriter("copy") as w:
        w.image(tmp_path / "gone.jpg", tmp_path / "out2" / "x.jpg", "link")
