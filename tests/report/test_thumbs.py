"""Report thumbnails: upright, small, and a broken file is "no picture", not a crash."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from curate.report.thumbs import thumbnail_bytes, thumbnail_uri


def test_thumbnails_are_upright_and_fit(tmp_path, skimage_dir):
    photo = Image.open(skimage_dir / "chelsea.png").convert("RGB")  # 451x300, landscape
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.jpg", exif=exif)
    thumb = Image.open(io.BytesIO(thumbnail_bytes(tmp_path / "turned.jpg", size_px=96)))
    assert thumb.format == "JPEG" and thumb.size == (96, 64)  # landscape again, as displayed
    assert thumbnail_uri(tmp_path / "turned.jpg").startswith("data:image/jpeg;base64,")


def test_a_broken_file_raises_pillows_error(tmp_path, skimage_dir):
    data = (skimage_dir / "rocket.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:200])
    with pytest.raises((OSError, ValueError, SyntaxError)):
        thumbnail_bytes(tmp_path / "cut.jpg")
