"""Pixel verification of candidate pairs: copies pass, other photos do not (real photos, real edits)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from curate.verify import load_gray, verify_arrays


def _gray(img: Image.Image, work_px: int = 512) -> np.ndarray:
    g = img.convert("L")
    g.thumbnail((work_px, work_px))
    return np.asarray(g)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("edit", [
    lambda im: _jpeg(im.resize((im.width // 2, im.height // 2)), 60),  # resized and re-encoded
    lambda im: ImageOps.grayscale(im),  # grey
    lambda im: im.crop((30, 20, im.width - 30, im.height - 20)),  # a crop of about 10 % a side
])
def test_copies_are_accepted(skimage_dir, edit):
    photo = Image.open(skimage_dir / "astronaut.png").convert("RGB")
    check = verify_arrays(_gray(photo), _gray(edit(photo)))
    assert check.accepted, check.detail


@pytest.mark.parametrize("other", ["coffee.png", "chelsea.png", "rocket.jpg"])
def test_other_photos_are_rejected(skimage_dir, other):
    a = Image.open(skimage_dir / "astronaut.png").convert("RGB")
    b = Image.open(skimage_dir / other).convert("RGB")
    check = verify_arrays(_gray(a), _gray(b))
    assert not check.accepted and check.method == ""


def test_load_gray_applies_exif_orientation(tmp_path, skimage_dir):
    photo = Image.open(skimage_dir / "chelsea.png").convert("RGB")  # 451x300
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    g = load_gray(str(tmp_path / "turned.jpg"), work_px=451)
    assert g.shape == (300, 451) and g.dtype == np.uint8  # the displayed frame, grey
