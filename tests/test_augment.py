"""curate.augment: config parsing, and boxes carried through real albumentations pipelines.

The box test paints two coloured patches on a real photo (skimage's astronaut),
augments it, and checks that each output box still holds its own patch: a
box that was flipped, rotated or cropped the wrong way would miss it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from curate.augment import AugmentConfig, augment_image, copy_seed, parse_augment
from curate.errors import OptionError


@pytest.mark.parametrize("text, field, value", [
    ("hflip=1", "hflip_p", 1.0),  # a probability
    ("rotate=5", "rotate_deg", 5.0),  # degrees
    ("crop=1", "crop_min_scale", 1.0),  # 1 switches cropping off
    (" vflip = 0.2 ,", "vflip_p", 0.2),  # spaces and a trailing comma
    ("MIN_VISIBILITY=0.5", "min_box_visibility", 0.5),  # keys are case-insensitive
    ("", "hflip_p", 0.5),  # nothing given: defaults
])
def test_parse_augment(text: str, field: str, value: float) -> None:
    assert getattr(parse_augment(text), field) == value


@pytest.mark.parametrize("text, message", [
    # an unknown key lists the known ones
    ("blur=3", "--augment: expected KEY=VALUE with KEY one of ['brightness', 'contrast', 'crop', 'hflip', "
               "'min_box_side', 'min_visibility', 'rotate', 'rotate_p', 'vflip'], found 'blur=3'"),
    # a value that is not a number
    ("hflip=yes", "--augment hflip: expected a number, found 'yes'"),
    # a probability above 1
    ("hflip=2", "--augment hflip: expected a probability in 0..1, found 2.0"),
    # rotations are meant to be small
    ("rotate=90", "--augment rotate: expected degrees in 0..45 (small rotations), found 90.0"),
    # a crop of nothing
    ("crop=0", "--augment crop: expected the smallest crop area fraction, 0.05..1, found 0.0"),
    # every transform off: copies would equal their parent
    ("hflip=0,rotate=0,brightness=0,contrast=0,crop=1",
     "--augment: expected at least one transform switched on, found every transform off "
     "(copies would be identical to their parent)"),
])
def test_parse_augment_errors(text: str, message: str) -> None:
    with pytest.raises(OptionError) as e:
        parse_augment(text)
    assert str(e.value) == message


GREEN, MAGENTA = (0, 255, 0), (255, 0, 255)
BOXES = [(300.0, 100.0, 380.0, 160.0), (60.0, 360.0, 150.0, 430.0)]


@pytest.fixture(scope="module")
def marked_photo(skimage_dir: Path) -> np.ndarray:
    """The astronaut photo with a green and a magenta patch exactly filling BOXES."""
    img = np.asarray(Image.open(skimage_dir / "astronaut.png").convert("RGB")).copy()
    for (x1, y1, x2, y2), colour in zip(BOXES, (GREEN, MAGENTA), strict=True):
        img[int(y1):int(y2), int(x1):int(x2)] = colour
    return img


def _patch_mask(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    # Brightness/contrast shift the colours; the patches stay far from the photo's own colours.
    a = img.astype(int)
    on = [c for c in range(3) if colour[c] == 255]
    off = [c for c in range(3) if colour[c] == 0]
    return (a[..., on].min(axis=-1) - a[..., off].max(axis=-1)) > 120


@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_their_patches(marked_photo: np.ndarray, seed: int) -> None:
    cfg = AugmentConfig(hflip_p=0.5, vflip_p=0.5, rotate_deg=15, rotate_p=1.0)
    out = augment_image(marked_photo, BOXES, cfg, seed=seed)
    assert out.image.shape == marked_photo.shape
    assert out.box_index == [0, 1]  # both patches are well inside: none is cropped away
    h, w = out.image.shape[:2]
    for (x1, y1, x2, y2), i in zip(out.boxes_xyxy, out.box_index, strict=True):
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        ys, xs = np.nonzero(_patch_mask(out.image, (GREEN, MAGENTA)[i]))
        assert len(xs) > 500
        # The patch lies inside its box (rotation: the box is the rotated box's bounding box) ...
        inside = (xs >= x1 - 2) & (xs <= x2 + 2) & (ys >= y1 - 2) & (ys <= y2 + 2)
        assert inside.mean() > 0.97
        # ... and fills a good part of it (a box twice too big would fail).
        assert len(xs) / ((x2 - x1) * (y2 - y1)) > 0.5


def test_same_seed_same_copy_other_seed_other_copy(marked_photo: np.ndarray) -> None:
    a = augment_image(marked_photo, BOXES, AugmentConfig(), seed=11)
    b = augment_image(marked_photo, BOXES, AugmentConfig(), seed=11)
    c = augment_image(marked_photo, BOXES, AugmentConfig(), seed=12)
    assert np.array_equal(a.image, b.image) and a.boxes_xyxy == b.boxes_xyxy and a.applied == b.applied
    assert not np.array_equal(a.image, c.image)


def test_applied_record_names_what_was_done(marked_photo: np.ndarray) -> None:
    flip = augment_image(marked_photo, [], AugmentConfig(hflip_p=1.0, rotate_p=1.0, rotate_deg=8), seed=3)
    names = [t["name"] for t in flip.applied]
    assert names == ["HorizontalFlip", "Rotate", "RandomBrightnessContrast", "RandomResizedCrop"]
    rot = flip.applied[1]["params"]
    assert abs(rot["angle_deg"]) <= 8 and len(rot["matrix"]) == 3
    crop = flip.applied[3]["params"]["crop_coords"]
    x1, y1, x2, y2 = crop
    assert 0.8 * 512 * 512 * 0.99 <= (x2 - x1) * (y2 - y1) <= 512 * 512  # at least crop=0.8 of the area
    none = augment_image(marked_photo, [], AugmentConfig(hflip_p=0.0, rotate_p=0.0, crop_min_scale=1.0), seed=3)
    assert [t["name"] for t in none.applied] == ["RandomBrightnessContrast"]


@pytest.mark.parametrize("seed", range(8))
def test_box_kept_exactly_when_enough_of_it_survives_the_crop(seed: int) -> None:
    img = np.full((100, 100, 3), 128, np.uint8)
    boxes = [(0.0, 0.0, 30.0, 30.0), (40.0, 40.0, 60.0, 60.0), (70.0, 10.0, 100.0, 90.0)]
    cfg = AugmentConfig(crop_min_scale=0.2, hflip_p=0, rotate_p=0, min_box_visibility=0.6, min_box_side_px=0)
    out = augment_image(img, boxes, cfg, seed=seed)
    cx1, cy1, cx2, cy2 = out.applied[-1]["params"]["crop_coords"]
    expected = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        iw, ih = max(0.0, min(x2, cx2) - max(x1, cx1)), max(0.0, min(y2, cy2) - max(y1, cy1))
        if iw * ih / ((x2 - x1) * (y2 - y1)) >= 0.6:
            expected.append(i)
    assert out.box_index == expected
    assert out.boxes_dropped == len(boxes) - len(expected)
    # A surviving box is the visible part, scaled from the crop window to the 100x100 output.
    sx, sy = 100 / (cx2 - cx1), 100 / (cy2 - cy1)
    for (x1, y1, x2, y2), i in zip(out.boxes_xyxy, out.box_index, strict=True):
        bx1, by1, bx2, by2 = boxes[i]
        want = ((max(bx1, cx1) - cx1) * sx, (max(by1, cy1) - cy1) * sy,
                (min(bx2, cx2) - cx1) * sx, (min(by2, cy2) - cy1) * sy)
        assert np.allclose((x1, y1, x2, y2), want, atol=1.0)


def test_boxes_outside_or_empty_on_input_are_left_out() -> None:
    img = np.zeros((50, 80, 3), np.uint8)
    out = augment_image(img, [(90, 10, 120, 20), (10, 10, 10, 30), (-5, -5, 20, 20)],
                        AugmentConfig(crop_min_scale=1.0, rotate_p=0.0, hflip_p=0.0), seed=0)
    assert out.box_index == [2]  # the clamped third box; the others had no area in the image
    (x1, y1, x2, y2), = out.boxes_xyxy
    assert (x1, y1) == (0.0, 0.0) and abs(x2 - 20) < 1e-6 and abs(y2 - 20) < 1e-6


@settings(max_examples=60, deadline=None)
@given(
    wh=st.tuples(st.integers(8, 96), st.integers(8, 96)),
    boxes=st.lists(st.tuples(st.floats(-20, 120), st.floats(-20, 120), st.floats(0, 60), st.floats(0, 60)),
                   max_size=6),
    seed=st.integers(0, 2**31 - 1),
    hflip=st.sampled_from([0.0, 0.5, 1.0]),
    rotate=st.floats(0, 45),
    crop=st.floats(0.05, 1.0),
)
def test_boxes_always_stay_inside_the_image(wh: tuple[int, int], boxes: list[tuple[float, float, float, float]],
                                            seed: int, hflip: float, rotate: float, crop: float) -> None:
    w, h = wh
    xyxy = [(x, y, x + bw, y + bh) for x, y, bw, bh in boxes]
    out = augment_image(np.zeros((h, w, 3), np.uint8), xyxy,
                        AugmentConfig(hflip_p=hflip, vflip_p=0.5, rotate_deg=rotate, rotate_p=1.0, crop_min_scale=crop),
                        seed=seed)
    assert out.image.shape == (h, w, 3)
    assert len(out.boxes_xyxy) == len(out.box_index) <= len(xyxy)
    assert len(set(out.box_index)) == len(out.box_index)
    for (x1, y1, x2, y2), i in zip(out.boxes_xyxy, out.box_index, strict=True):
        assert 0 <= i < len(xyxy)
        assert 0.0 <= x1 < x2 <= w and 0.0 <= y1 < y2 <= h
        assert x2 - x1 >= 2.0 and y2 - y1 >= 2.0  # min_box_side_px
    assert out.boxes_dropped == len(xyxy) - len(out.box_index)


def test_copy_seed_is_stable_and_distinct() -> None:
    assert copy_seed(0, "abc", 1) == copy_seed(0, "abc", 1)
    seeds = {copy_seed(s, p, c) for s in (0, 1) for p in ("a", "b") for c in range(5)}
    assert len(seeds) == 20
