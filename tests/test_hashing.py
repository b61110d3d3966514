"""curate.hashing: the hashes stored at ingest, on real photos and as bit algebra."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageOps

from curate.hashing import (
    CROP_WINDOWS,
    D4_NAMES,
    HASH_COLUMNS,
    apply_d4,
    compute_hashes,
    crop_hashes_to_uint64,
    d4_variants,
    hash_thumbnail,
    hashes_to_uint64,
    trim_box,
)

PHOTOS = ["astronaut.png", "camera.png", "coffee.png", "chelsea.png", "rocket.jpg", "brick.png", "page.png"]


def photo(skimage_dir: Path, name: str) -> Image.Image:
    return Image.open(skimage_dir / name).convert("RGB")


def hashes(img: Image.Image) -> dict:
    return compute_hashes(hash_thumbnail(img))


def bits(a: str | int, b: str | int) -> int:
    x = int(a, 16) if isinstance(a, str) else a
    y = int(b, 16) if isinstance(b, str) else b
    return bin(x ^ y).count("1")


def test_columns_and_formats(skimage_dir):
    h = hashes(photo(skimage_dir, "astronaut.png"))
    assert set(h) == set(HASH_COLUMNS) - {"keypoints"}  # keypoints come from curate.copydetect, in the same probe
    for col in ("phash", "dhash", "d4hash"):
        assert len(h[col]) == 16 and int(h[col], 16) >= 0
    assert len(h["crop_hashes"]) == 16 * len(CROP_WINDOWS)
    assert h["hash_contrast"] > 40  # a real photo, full of detail


@pytest.mark.parametrize("name", PHOTOS)
def test_phash_dhash_are_imagehash(skimage_dir, name):
    # curate computes imagehash's pHash/dHash without its string overhead; the
    # values must stay the library's, from the same 64 px thumbnail.
    thumb = hash_thumbnail(photo(skimage_dir, name))
    small = thumb.reduce(2)
    h = compute_hashes(thumb)
    assert h["phash"] == str(imagehash.phash(small))
    assert h["dhash"] == str(imagehash.dhash(small))


@pytest.mark.parametrize("index", range(8), ids=D4_NAMES)
@pytest.mark.parametrize("name", ["astronaut.png", "rocket.jpg", "text.png"])
def test_d4_variants_match_turned_images(skimage_dir, name, index):
    # The hash of a flipped/turned photo is computed from the stored hash alone:
    # bit for bit on the thumbnail, and within Pillow's resampling rounding on
    # the photo itself (text.png is 448x172: squashing commutes with the turns).
    img = photo(skimage_dir, name)
    thumb = hash_thumbnail(img)
    stored = int(compute_hashes(thumb)["d4hash"], 16)
    predicted = int(d4_variants(np.array([stored], np.uint64))[index, 0])
    assert predicted == int(compute_hashes(apply_d4(thumb, index))["d4hash"], 16)
    assert bits(predicted, hashes(apply_d4(img, index))["d4hash"]) <= 2


@pytest.mark.parametrize("index", range(8), ids=D4_NAMES)
def test_apply_d4_matches_pillow_names(index):
    a = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    pillow = {
        "identity": a, "flip_v": a.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        "mirror": a.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "rot180": a.transpose(Image.Transpose.ROTATE_180),
        "transpose": a.transpose(Image.Transpose.TRANSPOSE), "rot90": a.transpose(Image.Transpose.ROTATE_90),
        "rot270": a.transpose(Image.Transpose.ROTATE_270), "transverse": a.transpose(Image.Transpose.TRANSVERSE),
    }[D4_NAMES[index]]
    assert np.array_equal(np.asarray(apply_d4(a, index)), np.asarray(pillow))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_d4_group_laws(code):
    h = np.array([code & ~(1 << 63)], dtype=np.uint64)  # the DC bit (MSB) is always 0
    v = d4_variants(h)[:, 0]
    rot90 = D4_NAMES.index("rot90")
    assert int(v[0]) == int(h[0])
    twice = d4_variants(v[[rot90]])[rot90, 0]
    assert int(twice) == int(v[D4_NAMES.index("rot180")])  # rot90 o rot90 = rot180
    for name in ("mirror", "flip_v", "transpose", "rot180"):
        i = D4_NAMES.index(name)
        assert int(d4_variants(v[[i]])[i, 0]) == int(h[0])  # self-inverse


@pytest.mark.parametrize(("make", "max_bits"), [
    (lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), 3),  # resize
    (lambda im: im.resize((int(im.width * 0.7), im.height), Image.Resampling.LANCZOS), 3),  # other aspect ratio
    (lambda im: ImageOps.grayscale(im).convert("RGB"), 0),  # grayscale: the hash is of grey levels
    (lambda im: _pad_square(im), 3),  # letterbox padding: bars trimmed before hashing
], ids=["resize", "aspect", "grayscale", "letterbox"])
def test_d4hash_stable_under_copies(skimage_dir, make, max_bits):
    img = photo(skimage_dir, "coffee.png")  # 600x400: padding adds 100 px bars
    assert bits(hashes(img)["d4hash"], hashes(make(img))["d4hash"]) <= max_bits


def _pad_square(img: Image.Image, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    side = max(img.size)
    out = Image.new("RGB", (side, side), fill)
    out.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return out


def test_crop_lands_near_a_window(skimage_dir):
    # A 20%-area crop from a corner matches one of the original's windows, not its whole.
    img = photo(skimage_dir, "astronaut.png")
    w, h = img.size
    crop = img.crop((0, 0, int(w * 0.894), int(h * 0.894)))
    orig, copy = hashes(img), hashes(crop)
    windows = crop_hashes_to_uint64([orig["crop_hashes"]])[0]
    assert min(bits(int(x), copy["d4hash"]) for x in windows) <= 6
    assert bits(orig["d4hash"], copy["d4hash"]) > 8


@pytest.mark.parametrize(("rows", "expected"), [
    ((3, 3), (3, 3, 0, 0)),  # letterbox: equal bars top and bottom
    ((3, 2), (3, 2, 0, 0)),  # off by one pixel (rounding when padding): still padding
    ((3, 0), (0, 0, 0, 0)),  # one bar only: a dark sky, not padding
    ((5, 2), (0, 0, 0, 0)),  # unequal margins: a photo on a plain background
])
def test_trim_box_pairs_only(rows, expected):
    rng = np.random.default_rng(0)
    a = rng.integers(40, 200, (100, 100)).astype(np.uint8)
    top, bottom = rows
    a[:top] = 0
    if bottom:
        a[-bottom:] = 0
    assert trim_box(a) == expected


def test_low_information_frame_has_low_contrast(skimage_dir):
    # The SOURCES.md trap: a text page and an almost black frame. Their plain
    # dHashes are 7 bits apart; the contrast says which hash is noise.
    rng = np.random.default_rng(1)
    black = Image.fromarray(rng.integers(0, 6, (512, 511, 3), dtype=np.uint8))
    assert hashes(black)["hash_contrast"] < 3.0
    assert hashes(photo(skimage_dir, "page.png"))["hash_contrast"] > 20


def test_hex_round_trips():
    codes = ["0123456789abcdef", "fedcba9876543210"]
    assert hashes_to_uint64(codes).tolist() == [0x0123456789ABCDEF, 0xFEDCBA9876543210]
    joined = "".join(codes) * (len(CROP_WINDOWS) // 2) + codes[0]
    arr = crop_hashes_to_uint64([joined, joined])
    assert arr.shape == (2, len(CROP_WINDOWS)) and int(arr[1, 1]) == 0xFEDCBA9876543210
    assert hashes_to_uint64([]).shape == (0,)
