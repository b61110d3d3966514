"""COCO instances: converters, golden samples (Datumaro, Roboflow), malformed
input, and the writer's guarantees (categories from 1, unique ids)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import FormatError
from curate.formats import detect
from curate.formats.base import ReadOptions, WriteOptions
from curate.formats.coco import (
    coco_document,
    coco_xywh_to_xyxy,
    read_coco,
    split_from_name,
    write_coco,
    xyxy_to_coco_xywh,
)
from curate.formats.yolo import xyxy_to_yolo_xywhn, yolo_xywhn_to_xyxy

coord = st.floats(min_value=0, max_value=4000, allow_nan=False)
side = st.integers(min_value=1, max_value=8000)


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(coord, coord, coord, coord)
def test_xyxy_coco_round_trip(a, b, c, d):
    xyxy = (min(a, c), min(b, d), max(a, c), max(b, d))
    back = coco_xywh_to_xyxy(xyxy_to_coco_xywh(xyxy))
    assert all(abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(back, xyxy, strict=True))


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(st.data(), side, side)
def test_coco_to_yolo_to_coco_agrees_within_1e_9_of_the_image(data, w, h):
    """xyxy <-> normalized xywh <-> COCO xywh: every path gives the same box."""
    fx = st.floats(min_value=0, max_value=w)
    fy = st.floats(min_value=0, max_value=h)
    x1, x2 = sorted((data.draw(fx), data.draw(fx)))
    y1, y2 = sorted((data.draw(fy), data.draw(fy)))
    coco = xyxy_to_coco_xywh((x1, y1, x2, y2))
    via_yolo = yolo_xywhn_to_xyxy(xyxy_to_yolo_xywhn(coco_xywh_to_xyxy(coco), (w, h)), (w, h))
    tol = (1e-9 * w, 1e-9 * h) * 2
    assert all(abs(a - b) <= t for a, b, t in zip(via_yolo, (x1, y1, x2, y2), tol, strict=True))


@pytest.mark.parametrize("stem, split", [
    ("instances_train", "train"),  # Datumaro
    ("instances_val2017", "val"),  # COCO 2017: digits after the split
    ("instances_valid", "val"),  # Roboflow's spelling
    ("person_keypoints_test2017", "test"),
    ("labels", None),  # FiftyOne's single file: no split in the name
])
def test_split_from_name(stem, split):
    assert split_from_name(stem) == split


def test_datumaro_coco_instances(corpus):
    root = corpus / "formats/datumaro/coco_dataset/coco_instances"
    assert detect(root).name == "coco"
    res = read_coco(root, ReadOptions())
    got = {e.rel_path: e for e in res.entries}
    assert sorted(got) == ["images/train/a.jpg", "images/val/b.jpg"]
    assert res.classes == ["a", "b", "c"]  # ids 1, 2, 4: names in id order
    a, b = got["images/train/a.jpg"], got["images/val/b.jpg"]
    assert (a.split, a.declared_wh) == ("train", (10, 5))
    assert [(x.label, x.x1, x.y1, x.x2, x.y2) for x in a.boxes] == [("b", 2.0, 2.0, 5.0, 3.0)]
    # The val file has a polygon annotation and an RLE crowd annotation; both keep their bbox.
    assert [(x.label, x.x2, x.y2, x.iscrowd) for x in b.boxes] == [("a", 1.0, 2.0, False), ("b", 1.0, 9.0, True)]


def test_roboflow_coco_per_split_folders(corpus):
    root = corpus / "formats/datumaro/roboflow_dataset/coco"
    res = read_coco(root, ReadOptions())
    assert {(e.rel_path, e.split) for e in res.entries} == {
        ("train/train_001.jpg", "train"), ("train/train_002.jpg", "train"), ("val/val_001.jpg", "val")}
    assert res.classes == ["label_0", "label_1"]


def _coco(tmp_path: Path, **changes) -> Path:
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 5}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
           "categories": [{"id": 1, "name": "cat"}]}
    doc.update(changes)
    p = tmp_path / "instances_train.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("changes, message", [
    # category id 0 / unknown: the classic off-by-one
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 1, 2, 2]}]},
     "annotations[0].category_id: expected one of the category ids [1], found 0"),
    # annotation pointing at no image
    ({"annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [1, 1, 2, 2]}]},
     "annotations[0].image_id: expected the id of an image in images, found 9"),
    # bbox with three numbers
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2]}]},
     "annotations[0].bbox: expected 4 numbers [x, y, width, height], found [1, 1, 2]"),
    # duplicate image ids would silently merge boxes
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]},
     "images[1].id: expected unique image ids, found 1 twice"),
    # no file name
    ({"images": [{"id": 1}]}, "images[0].file_name: expected a file name, found None"),
    # categories missing altogether
    ({"categories": None}, "categories: expected a list, found NoneType"),
])
def test_malformed_coco_names_file_and_field(tmp_path, changes, message):
    p = _coco(tmp_path, **changes)
    with pytest.raises(FormatError) as e:
        read_coco(p, ReadOptions())
    assert str(e.value) == f"{p}: {message}"


def test_not_json_is_reported(tmp_path):
    p = tmp_path / "instances_train.json"
    p.write_text('{"images": [')
    with pytest.raises(FormatError) as e:
        read_coco(p, ReadOptions())
    assert str(e.value).startswith(f"{p}: expected valid JSON, found ")


def test_roboflow_placeholder_category_is_left_out(tmp_path, skimage_dir):
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "a.png")
    doc = {"images": [{"id": 0, "file_name": "a.png", "width": 600, "height": 400}],
           "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 1, 20, 20]}],
           "categories": [{"id": 0, "name": "cups", "supercategory": "none"},
                          {"id": 1, "name": "cup", "supercategory": "cups"}]}
    (tmp_path / "_annotations.coco.json").write_text(json.dumps(doc))
    res = read_coco(tmp_path, ReadOptions())
    assert res.classes == ["cup"]
    assert "unused supercategory placeholder" in res.warnings[0]


def test_missing_image_is_a_missing_file_entry(tmp_path):
    p = _coco(tmp_path)
    res = read_coco(p, ReadOptions())
    assert [(e.rel_path, e.reason) for e in res.entries] == [("a.jpg", "missing_file")]


def test_document_numbers_categories_from_1_and_ids_uniquely():
    rows = [{"sample_id": "s1", "name": "a.jpg", "width": 10, "height": 5},
            {"sample_id": "s2", "name": "b.jpg", "width": 10, "height": 5}]
    boxes = {"s1": [{"label": "dog", "x1": 1, "y1": 1, "x2": 3, "y2": 4, "iscrowd": False, "score": None}],
             "s2": [{"label": "cat", "x1": 0, "y1": 0, "x2": 1, "y2": 1, "iscrowd": True, "score": 0.5}]}
    doc = coco_document(rows, boxes, ["dog", "cat"], first_image_id=7, first_ann_id=3)
    assert doc["categories"] == [{"id": 1, "name": "dog", "supercategory": ""},
                                 {"id": 2, "name": "cat", "supercategory": ""}]
    assert [i["id"] for i in doc["images"]] == [7, 8]
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in doc["annotations"]] \
        == [(3, 7, 1, [1.0, 1.0, 2.0, 3.0], 6.0, 0), (4, 8, 2, [0.0, 0.0, 1.0, 1.0], 1.0, 1)]
    assert doc["annotations"][1]["score"] == 0.5


def test_writer_ids_unique_across_splits_and_pycocotools_loads(tmp_path, skimage_dir):
    from pycocotools.coco import COCO

    plan = pd.DataFrame([
        {"sample_id": f"s{i}", "path": str(skimage_dir / n), "split": s, "name": n, "width": 512, "height": 512,
         "action": "link", "label": None}
        for i, (n, s) in enumerate([("astronaut.png", "train"), ("camera.png", "train"), ("moon.png", "val")])])
    boxes = pd.DataFrame([{"sample_id": "s0", "label": "b", "x1": 1.5, "y1": 2, "x2": 30, "y2": 40.25},
                          {"sample_id": "s2", "label": "a", "x1": 0, "y1": 0, "x2": 512, "y2": 512},
                          {"sample_id": "s2", "label": "b", "x1": 10, "y1": 10, "x2": 20, "y2": 20}])
    write_coco(plan, boxes, tmp_path, WriteOptions())
    ids, ann_ids = [], []
    for split in ("train", "val"):
        c = COCO(str(tmp_path / f"annotations/instances_{split}.json"))
        assert [c.cats[i]["name"] for i in sorted(c.cats)] == ["a", "b"]  # same ids in every split
        ids += list(c.imgs)
        ann_ids += list(c.anns)
        for img in c.imgs.values():
            assert (tmp_path / "images" / split / img["file_name"]).is_file()
    assert sorted(ids) == [1, 2, 3] and sorted(ann_ids) == [1, 2, 3]
    val = COCO(str(tmp_path / "annotations/instances_val.json"))
    assert sorted(a["bbox"] for a in val.anns.values()) == [[0.0, 0.0, 512.0, 512.0], [10.0, 10.0, 10.0, 10.0]]


# -- hostile and malformed input (issue 13) -----------------------------------

@pytest.mark.parametrize("text, found", [
    # JSON has no Infinity; Python's parser takes it, and the box became infinite (OverflowError)
    ('"width": Infinity', "Infinity at line 1 column"),
    ('"width": 1e999', "1e999 at line 1 column"),  # parses to inf
    ('"width": NaN', "NaN at line 1 column"),
])
def test_non_finite_numbers_name_the_file(tmp_path, text, found):
    p = _coco(tmp_path)
    p.write_text(p.read_text().replace('"width": 10', text))
    with pytest.raises(FormatError) as e:
        read_coco(p, ReadOptions())
    assert str(e.value).startswith(f"{p}: expected finite numbers (JSON has no Infinity or NaN), found {found}")


def test_deep_nesting_is_a_format_error_also_in_detection(tmp_path):
    p = tmp_path / "instances_train.json"
    p.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "categories": []}')
    assert detect(p).name == "coco"  # detection looks at the head only: no parse, no RecursionError
    with pytest.raises(FormatError) as e:
        read_coco(p, ReadOptions())
    assert str(e.value) == f"{p}: expected JSON nested at most a few hundred levels deep, found deeper nesting"


@pytest.mark.parametrize("annotation, message", [
    # an unhashable id was a TypeError ("unhashable type: 'list'")
    ({"image_id": [1], "category_id": 1, "bbox": [1, 1, 2, 2]},
     "annotations[0].image_id: expected the id of an image in images, found [1]"),
    ({"image_id": 1, "category_id": {"id": 1}, "bbox": [1, 1, 2, 2]},
     "annotations[0].category_id: expected one of the category ids [1], found {\"id\": 1}"),
    # a polygon of text went to pycocotools / float()
    ({"image_id": 1, "category_id": 1, "segmentation": ["1 2 3 4 5 6"]},
     "annotations[0].segmentation[0]: expected a polygon: a list of x, y numbers, found \"1 2 3 4 5 6\""),
    ({"image_id": 1, "category_id": 1, "segmentation": [[1, 2, "x", 4]]},
     "annotations[0].segmentation[0]: expected a polygon: a list of x, y numbers, found [1, 2, \"x\", 4]"),
    # RLE with a size that is not [h, w]
    ({"image_id": 1, "category_id": 1, "segmentation": {"size": ["a"], "counts": "abc"}},
     "annotations[0].segmentation.size: expected [height, width], two positive integers, found [\"a\"]"),
    ({"image_id": 1, "category_id": 1, "segmentation": {"size": [4, 4], "counts": [1, -2]}},
     "annotations[0].segmentation.counts: expected run lengths (non-negative integers) or an RLE string, "
     "found [1, -2]"),
])
def test_malformed_ids_and_segmentations_name_the_field(tmp_path, annotation, message):
    p = _coco(tmp_path, annotations=[{"id": 1, **annotation}])
    with pytest.raises(FormatError) as e:
        read_coco(p, ReadOptions())
    assert str(e.value) == f"{p}: {message}"


@pytest.mark.parametrize("annotation, problem", [
    # [x, y, -w, h] was flipped into the box left of x: another box
    ({"bbox": [5, 1, -3, 2]}, "annotations[0].bbox [5, 1, -3, 2] has a negative width or height"),
    # pycocotools decodes any text: garbage became a box over the whole width
    ({"segmentation": {"size": [5, 10], "counts": "ab~~"}},
     "annotations[0].segmentation.counts is not a valid RLE string (character '~' is not in the RLE alphabet)"),
    ({"segmentation": {"size": [5, 10], "counts": [3, 4]}},
     "annotations[0].segmentation.counts covers 7 pixels, not the 5x10 = 50 of its size"),
])
def test_wrong_boxes_are_left_out_and_reported(tmp_path, annotation, problem):
    good = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}
    p = _coco(tmp_path, annotations=[{"id": 1, "image_id": 1, "category_id": 1, **annotation}, good])
    res = read_coco(p, ReadOptions())
    assert [(b.x1, b.y1, b.x2, b.y2) for b in res.entries[0].boxes] == [(1.0, 1.0, 3.0, 3.0)]
    assert res.warnings == [f"instances_train.json: {problem}; the box is left out"]


def test_rle_bounds_agree_with_pycocotools(tmp_path):
    import numpy as np
    from pycocotools import mask as mask_utils

    mask = np.zeros((7, 9), dtype=np.uint8)
    mask[2:5, 3:8] = 1
    mask[6, 1] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    seg = {"size": [7, 9], "counts": rle["counts"].decode()}
    p = _coco(tmp_path, annotations=[{"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg}])
    b = read_coco(p, ReadOptions()).entries[0].boxes[0]
    assert (b.x1, b.y1, b.x2, b.y2) == (x, y, x + w, y + h) == (1.0, 2.0, 8.0, 7.0)


def test_an_image_in_two_splits_is_reported(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    for split in ("train", "val"):
        _coco(tmp_path).rename(ann / f"instances_{split}.json")
    res = read_coco(tmp_path, ReadOptions())
    assert [e.split for e in res.entries] == ["train"]
    assert "an image in two splits (train, val)" in " ".join(res.warnings)
