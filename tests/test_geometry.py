"""Pure box geometry: crops clamp, squares are square and contain the image, boxes map back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.geometry import (
    SquarePlan,
    boxes_into_crop,
    clamp_xyxy,
    crop_box_px,
    crop_window_px,
    expand_xyxy,
    io_min,
    iou,
    square_plan,
    tile_grid,
)

sizes = st.integers(min_value=1, max_value=20_000)
out_sizes = st.integers(min_value=1, max_value=1024)
modes = st.sampled_from(["pad", "crop", "stretch"])


@st.composite
def image_and_box(draw):
    """An image size and a box with positive area inside it (float edges)."""
    w, h = draw(sizes), draw(sizes)
    x1 = draw(st.floats(0, w - 0.5, allow_nan=False))
    y1 = draw(st.floats(0, h - 0.5, allow_nan=False))
    x2 = draw(st.floats(x1 + 0.5, w, allow_nan=False))
    y2 = draw(st.floats(y1 + 0.5, h, allow_nan=False))
    return (w, h), (x1, y1, x2, y2)


@given(wh=st.tuples(sizes, sizes), size=out_sizes, mode=modes)
def test_square_output_is_square_and_holds_the_pasted_region(wh, size, mode):
    plan = square_plan(wh, size, mode)
    ox, oy = plan.offset_xy
    rw, rh = plan.resized_wh
    assert plan.size == size
    assert 0 <= ox and ox + rw <= size and 0 <= oy and oy + rh <= size
    cx1, cy1, cx2, cy2 = plan.crop_xyxy
    assert 0 <= cx1 < cx2 <= wh[0] and 0 <= cy1 < cy2 <= wh[1]


@given(wh=st.tuples(sizes, sizes), size=out_sizes)
def test_pad_contains_the_whole_original_and_keeps_its_aspect(wh, size):
    plan = square_plan(wh, size, "pad")
    whole = plan.map_xyxy([(0, 0, *wh)])[0]
    assert plan.crop_xyxy == (0, 0, *wh)
    assert whole[0] >= 0 and whole[1] >= 0 and whole[2] <= size and whole[3] <= size
    assert max(plan.resized_wh) == size  # the long side fills the square
    # aspect kept within the rounding of the short side to whole pixels
    w, h = wh
    rw, rh = plan.resized_wh
    if w >= h:
        assert abs(rh - h * size / w) <= 0.5 or rh == 1
    else:
        assert abs(rw - w * size / h) <= 0.5 or rw == 1
    # centred: the margins on both sides differ by at most one pixel
    assert abs((size - rw - plan.offset_xy[0]) - plan.offset_xy[0]) <= 1
    assert abs((size - rh - plan.offset_xy[1]) - plan.offset_xy[1]) <= 1


@given(wh=st.tuples(sizes, sizes), size=out_sizes)
def test_crop_takes_the_centred_largest_square(wh, size):
    plan = square_plan(wh, size, "crop")
    cx1, cy1, cx2, cy2 = plan.crop_xyxy
    assert cx2 - cx1 == cy2 - cy1 == min(wh)
    assert abs(cx1 - (wh[0] - cx2)) <= 1 and abs(cy1 - (wh[1] - cy2)) <= 1
    assert plan.resized_wh == (size, size) and plan.offset_xy == (0, 0)


@settings(max_examples=300)
@given(case=image_and_box(), size=out_sizes, mode=modes)
def test_boxes_map_back_exactly(case, size, mode):
    wh, box = case
    plan = square_plan(wh, size, mode)
    back = plan.unmap_xyxy(plan.map_xyxy([box]))[0]
    # exact up to float rounding, relative to the image size
    assert np.allclose(back, box, rtol=0, atol=1e-9 * max(wh) + 1e-9)


@given(case=image_and_box(), size=out_sizes, mode=modes)
def test_carried_boxes_stay_inside_the_pasted_image(case, size, mode):
    wh, box = case
    plan = square_plan(wh, size, mode)
    moved, keep = plan.carry_boxes([box])
    ox, oy = plan.offset_xy
    if keep[0]:
        x1, y1, x2, y2 = moved[0]
        assert ox <= x1 < x2 <= ox + plan.resized_wh[0] + 1e-9
        assert oy <= y1 < y2 <= oy + plan.resized_wh[1] + 1e-9
    if mode != "crop":  # pad and stretch keep the whole image, so no box is ever lost
        assert keep[0]


@given(case=image_and_box(), margin=st.floats(0, 3, allow_nan=False),
       shift=st.tuples(st.floats(-500, 500, allow_nan=False), st.floats(-500, 500, allow_nan=False)))
def test_face_crop_is_clamped_integer_and_holds_the_visible_face(case, margin, shift):
    wh, (x1, y1, x2, y2) = case
    face = (x1 + shift[0], y1 + shift[1], x2 + shift[0], y2 + shift[1])  # may stick out of the image
    crop = crop_box_px(face, margin, wh)
    visible = clamp_xyxy(face, wh)
    if visible[2] - visible[0] <= 0 or visible[3] - visible[1] <= 0:
        return  # the face lies outside; nothing to hold
    assert crop is not None
    assert all(isinstance(v, int) for v in crop)
    assert 0 <= crop[0] < crop[2] <= wh[0] and 0 <= crop[1] < crop[3] <= wh[1]
    assert crop[0] <= visible[0] and crop[1] <= visible[1] and crop[2] >= visible[2] and crop[3] >= visible[3]


@given(wh=st.tuples(st.integers(8, 5000), st.integers(8, 5000)), n=st.integers(1, 4),
       overlap=st.floats(0.0, 0.5, allow_nan=False))
def test_tiles_cover_the_image_and_overlap(wh, n, overlap):
    tiles = tile_grid(wh, n, overlap)
    assert len(tiles) == n * n
    covered = np.zeros((wh[1], wh[0]), bool)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= wh[0] and 0 <= y1 < y2 <= wh[1]
        covered[y1:y2, x1:x2] = True
    assert covered.all()


@pytest.mark.parametrize("box, margin, wh, expected", [
    ((10, 10, 20, 30), 0.0, (100, 100), (10, 10, 20, 30)),  # no margin: the box, as integers
    ((10.2, 10.7, 20.1, 30.5), 0.0, (100, 100), (10, 10, 21, 31)),  # fractional edges round outwards
    ((10, 10, 20, 30), 0.5, (100, 100), (5, 0, 25, 40)),  # half the width/height on each side
    ((-10, 5, 30, 45), 0.25, (100, 100), (0, 0, 40, 55)),  # face cut by the left edge: clamped, never negative
    ((90, 90, 130, 130), 0.0, (100, 100), (90, 90, 100, 100)),  # cut by the right and bottom edges
    ((120, 120, 130, 130), 0.0, (100, 100), None),  # wholly outside: no crop
])
def test_crop_box_px_table(box, margin, wh, expected):
    assert crop_box_px(box, margin, wh) == expected


@pytest.mark.parametrize("a, b, want_iou, want_io_min", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0, 1.0),  # same box
    ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3, 0.5),  # half overlap
    ((0, 0, 10, 10), (2, 2, 4, 4), 0.04, 1.0),  # small box inside a big one: IoU low, IoMin 1
    ((0, 0, 10, 10), (20, 20, 30, 30), 0.0, 0.0),  # apart
    ((0, 0, 0, 10), (0, 0, 10, 10), 0.0, 0.0),  # empty box
])
def test_overlap_measures(a, b, want_iou, want_io_min):
    assert iou(a, b) == pytest.approx(want_iou)
    assert io_min(a, b) == pytest.approx(want_io_min)


def test_expand_and_boxes_into_crop():
    assert expand_xyxy((0, 0, 10, 20), 0.1) == (-1.0, -2.0, 11.0, 22.0)
    moved, keep = boxes_into_crop(np.array([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 4.0, 4.0]]), (10, 0, 30, 20))
    assert keep.tolist() == [True, False]  # the second box lies left of the crop
    assert moved[0].tolist() == [0.0, 5.0, 5.0, 15.0]


@pytest.mark.parametrize("wh, size, mode, resized, offset, crop", [
    ((400, 200), 100, "pad", (100, 50), (0, 25), (0, 0, 400, 200)),  # landscape: bars top and bottom
    ((200, 400), 100, "pad", (50, 100), (25, 0), (0, 0, 200, 400)),  # portrait: bars left and right
    ((15754, 1382), 224, "pad", (224, 20), (0, 102), (0, 0, 15754, 1382)),  # the panorama in photos/
    ((301, 300), 224, "crop", (224, 224), (0, 0), (0, 0, 300, 300)),  # odd difference: the extra column is right
    ((300, 200), 160, "stretch", (160, 160), (0, 0), (0, 0, 300, 200)),  # aspect changes
    ((50, 50), 224, "pad", (224, 224), (0, 0), (0, 0, 50, 50)),  # already square: upscaled, no fill
])
def test_square_plan_table(wh, size, mode, resized, offset, crop):
    plan = square_plan(wh, size, mode)
    assert (plan.resized_wh, plan.offset_xy, plan.crop_xyxy) == (resized, offset, crop)


def test_plan_record_round_trips():
    plan = square_plan((640, 480), 224, "pad")
    rec = plan.to_record()
    again = SquarePlan(rec["mode"], rec["size"], tuple(rec["src_wh"]), tuple(rec["crop_xyxy"]),
                       tuple(rec["resized_wh"]), tuple(rec["offset_xy"]))
    assert again == plan


@pytest.mark.parametrize("wh, size, mode", [((0, 10), 10, "pad"), ((10, 10), 0, "pad"), ((10, 10), 10, "zoom")])
def test_square_plan_rejects_bad_input(wh, size, mode):
    with pytest.raises(ValueError):
        square_plan(wh, size, mode)


@given(case=image_and_box(), margin=st.floats(0, 2, allow_nan=False), square=st.booleans())
def test_crop_window_holds_the_box_inside_the_image(case, margin, square):
    wh, box = case
    fit = crop_window_px(box, margin, wh, square=square)
    assert fit is not None
    (x1, y1, x2, y2), clamped = fit
    assert all(isinstance(v, int) for v in (x1, y1, x2, y2))
    assert 0 <= x1 < x2 <= wh[0] and 0 <= y1 < y2 <= wh[1]
    assert x1 <= box[0] and y1 <= box[1] and x2 >= box[2] and y2 >= box[3]  # the whole box is in the patch
    if square and max(x2 - x1, y2 - y1) <= min(wh):
        assert x2 - x1 == y2 - y1  # a square that fits the image stays a square (it slides, never shrinks)
    if not square and not clamped:
        ex = expand_xyxy(box, margin)  # unclamped: exactly the margin-grown box, rounded outwards
        assert (x1, y1, x2, y2) == (int(np.floor(ex[0])), int(np.floor(ex[1])), int(np.ceil(ex[2])),
                                    int(np.ceil(ex[3])))


@given(wh=st.tuples(sizes, sizes), dx=st.floats(1, 1000, allow_nan=False))
def test_crop_window_of_a_box_outside_the_image_is_none(wh, dx):
    assert crop_window_px((wh[0] + dx - 1, 0, wh[0] + dx, 10), 0.5, wh) is None


# -- the one box type: named conversions (issue 12) ------------------------------------------------------

_coord = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
_side = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(x=_coord, y=_coord, w=_side, h=_side, img_w=st.integers(1, 8000), img_h=st.integers(1, 8000))
def test_box_conversions_round_trip(x, y, w, h, img_w, img_h):
    from curate.geometry import Box

    tol = 1e-9 * (1 + abs(x) + abs(y) + w + h)
    b = Box.from_xywh("a", (x, y, w, h))
    assert b.xyxy == (x, y, x + w, y + h)  # COCO: top-left corner and size
    for got, want in [(b.xywh, (x, y, w, h)),
                      (Box.from_cxcywh("a", b.cxcywh).xyxy, b.xyxy),  # YOLO / CreateML: centre and size
                      (Box.from_one_based("a", b.one_based).xyxy, b.xyxy),  # the VOC devkit's pixel indices
                      (b.to_normalized((img_w, img_h)).to_pixels((img_w, img_h)).xyxy, b.xyxy)]:
        assert all(abs(p - q) <= tol for p, q in zip(got, want, strict=True)), (got, want)
    n = b.to_normalized((img_w, img_h))
    assert n.normalized and n.label == "a" and not n.to_pixels((img_w, img_h)).normalized


def test_box_named_conversions_on_known_values():
    from curate.geometry import Box

    assert Box.from_cxcywh("c", (0.5, 0.5, 0.5, 0.5), normalized=True).to_pixels((200, 100)).xyxy == (
        50.0, 25.0, 150.0, 75.0)  # YOLO's "c 0.5 0.5 0.5 0.5" on a 200 x 100 image
    assert Box("c", 10.0, 20.0, 30.0, 60.0).cxcywh == (20.0, 40.0, 20.0, 40.0)
    assert Box.from_one_based("c", (1, 1, 10, 10)).xyxy == (0.0, 0.0, 10.0, 10.0)  # the devkit's first 10 pixels
    assert sorted([Box("b", 0.0, 0.0, 1.0, 1.0), Box("a", 5.0, 0.0, 6.0, 1.0)])[0].label == "a"
