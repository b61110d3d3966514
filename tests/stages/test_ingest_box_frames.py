"""Boxes at ingest: EXIF frames (declared size vs stored/displayed size), clamping
and dropping with a recorded reason. (The rest of ingest: test_ingest.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from curate.formats.base import Box
from curate.imageio import apply_orientation, load_display
from curate.stages.ingest import IngestOptions, SourceSpec, clean_boxes, ingest, stored_to_displayed_xyxy
from curate.workspace import Workspace


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(2, 40), st.integers(2, 40), st.data())
def test_box_follows_pillow_transpose_of_the_pixels(orientation, w, h, data):
    """The pure converter agrees with the pixels Pillow moves (a painted mask's bounds)."""
    x1 = data.draw(st.integers(0, w - 1))
    x2 = data.draw(st.integers(x1 + 1, w))
    y1 = data.draw(st.integers(0, h - 1))
    y2 = data.draw(st.integers(y1 + 1, h))
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (x1, y1, x2, y2))
    shown = apply_orientation(mask, orientation)
    assert stored_to_displayed_xyxy((x1, y1, x2, y2), (w, h), orientation) == tuple(float(v) for v in shown.getbbox())


def _coco(root, name, wh, bbox):
    doc = {"images": [{"id": 1, "file_name": name, "width": wh[0], "height": wh[1]}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}],
           "categories": [{"id": 1, "name": "thing"}]}
    (root / "_annotations.coco.json").write_text(json.dumps(doc))


def _ingest(tmp_path, src, layout="coco"):
    ws = Workspace.create(tmp_path / "ws")
    res = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, layout=layout)], workers=1))
    return ws, res


@pytest.mark.corpus
def test_real_rotated_photo_boxes_drawn_on_stored_pixels(tmp_path, corpus):
    """ukbench09268.jpg is stored 640x480 with orientation 6 (shown 480x640). A COCO file that
    states 640x480 was drawn on the stored pixels: the box must land on the same pixels once shown."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(corpus / "photos/imagededup_ukbench09268.jpg", src / "p.jpg")
    stored_box = (100, 50, 300, 200)  # x1, y1, x2, y2 on the stored pixels
    _coco(src, "p.jpg", (640, 480), [100, 50, 200, 150])
    ws, res = _ingest(tmp_path, src)
    [row] = ws.read_annotations().to_dict("records")
    shown_box = (row["x1"], row["y1"], row["x2"], row["y2"])
    assert shown_box == stored_to_displayed_xyxy(stored_box, (640, 480), 6) == (280.0, 100.0, 430.0, 300.0)
    with Image.open(src / "p.jpg") as im:
        stored_crop = im.convert("RGB").crop(stored_box).transpose(Image.Transpose.ROTATE_270)
    shown_crop = load_display(src / "p.jpg").crop(tuple(int(v) for v in shown_box))
    assert np.array_equal(np.asarray(stored_crop), np.asarray(shown_crop))
    problems = ws.runs()[-1]["box_problems"]
    assert problems == ["src/p.jpg: boxes were drawn on the stored 640x480 pixels; turned into the displayed "
                        "480x640 frame (EXIF orientation 6)"]


def test_declared_size_equal_to_displayed_keeps_boxes(tmp_path, skimage_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "c.png")
    _coco(src, "c.png", (600, 400), [10, 20, 30, 40])
    ws, res = _ingest(tmp_path, src)
    [row] = ws.read_annotations().to_dict("records")
    assert (row["x1"], row["y1"], row["x2"], row["y2"]) == (10.0, 20.0, 40.0, 60.0)
    assert ws.runs()[-1]["box_problems"] == []


@pytest.mark.parametrize("boxes, expected_rows, expected_problems", [
    # inside: kept as is
    ([Box("a", 1, 2, 3, 4)], [(1.0, 2.0, 3.0, 4.0)], []),
    # partly outside: clamped, with a warning
    ([Box("a", -5, 2, 3, 40)], [(0.0, 2.0, 3.0, 10.0)], ["box a [-5,2,3,40] clamped to the 20x10 image"]),
    # wholly outside: dropped, with the reason
    ([Box("a", 25, 2, 30, 4)], [], ["box a [25,2,30,4] lies outside the 20x10 image: dropped"]),
    # zero area: dropped, with the reason
    ([Box("a", 5, 5, 5, 9)], [], ["box a [5,5,5,9] has zero area: dropped"]),
    # corners given the other way round: swapped, kept
    ([Box("a", 3, 4, 1, 2)], [(1.0, 2.0, 3.0, 4.0)], []),
    # normalized (YOLO): scaled by the displayed size
    ([Box("a", 0.5, 0.5, 1.0, 1.0, normalized=True)], [(10.0, 5.0, 20.0, 10.0)], []),
    # not a number (a YOLO line with "nan", an infinite width): dropped, never "clamped" to the whole image
    ([Box("a", 0.4, 0.2, 0.6, float("nan"), normalized=True)], [],
     ["box a [8,2,12,nan] has a coordinate that is not a number: dropped"]),
    ([Box("a", 1, 2, float("inf"), 4)], [], ["box a [1,2,inf,4] has a coordinate that is not a number: dropped"]),
])
def test_clean_boxes(boxes, expected_rows, expected_problems):
    rows, problems = clean_boxes(boxes, 20, 10)
    assert [(r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows] == expected_rows
    assert problems == expected_problems


def test_declared_size_matching_neither_frame_is_reported():
    rows, problems = clean_boxes([Box("a", 1, 1, 2, 2)], 20, 10, declared_wh=(40, 20), orientation=None)
    assert len(rows) == 1
    assert problems == ["annotation states 40x20 but the image is 20x10 as displayed; boxes taken as given"]


def test_dropped_boxes_are_recorded_in_the_run(tmp_path, skimage_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(skimage_dir / "coffee.png", src / "c.png")
    _coco(src, "c.png", (600, 400), [700, 10, 5, 5])
    ws, res = _ingest(tmp_path, src)
    assert len(ws.read_annotations()) == 0
    assert ws.runs()[-1]["box_problems"] == ["src/c.png: box thing [700,10,705,15] lies outside the 600x400 image: dropped"]
    assert res.summary["warnings"] == ws.runs()[-1]["box_problems"]
