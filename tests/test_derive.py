"""Derived images: stable ids, lossless or JPEG by the source, content-addressed storage, boxes carried."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from curate.derive import carry_boxes_into_crops, derived_id, encode_image_format, store_derived, upsert_rows
from curate.schema import MANIFEST_COLUMNS, conform
from curate.workspace import Workspace


@pytest.mark.parametrize("source_format, ext", [
    ("JPEG", "jpg"), ("MPO", "jpg"), ("HEIF", "jpg"),  # lossy sources: one more JPEG at q95 4:4:4
    ("PNG", "png"), ("TIFF", "png"), ("GIF", "png"), (None, "png"),  # lossless or unknown: PNG
])
def test_encode_format_follows_the_source(source_format, ext):
    assert encode_image_format(source_format) == ext


def test_derived_id_is_stable_and_depends_on_every_parameter():
    t = {"op": "crop", "crop_xyxy": [1, 2, 3, 4]}
    assert derived_id("p", t) == derived_id("p", dict(reversed(list(t.items()))))  # key order does not matter
    assert derived_id("p", t) != derived_id("p", {**t, "crop_xyxy": [1, 2, 3, 5]})
    assert derived_id("p", t) != derived_id("q", t)


def test_store_derived_is_content_addressed_and_traces_back(tmp_path, skimage_dir):
    ws = Workspace.create(tmp_path / "ws")
    parent = {"sample_id": "p1", "source": "s", "origin_path": "/src/a.png", "label": "cat", "label_origin": "source",
              "split": "train", "rel_path": "a.png", "format": "PNG"}
    img = Image.open(skimage_dir / "chelsea.png").crop((10, 10, 110, 60))
    row = store_derived(ws, parent, img, {"op": "crop", "crop_xyxy": [10, 10, 110, 60]}, layout="crop")
    again = store_derived(ws, parent, img, {"op": "crop", "crop_xyxy": [10, 10, 110, 60]}, layout="crop")
    assert row["path"] == again["path"] and row["path"].endswith(".png")  # same pixels, same object
    assert (row["parent_id"], row["origin_path"], row["width"], row["height"]) == ("p1", "/src/a.png", 100, 50)
    assert json.loads(row["transform"])["encoding"] == {"ext": "png", "quality": None}
    assert len(list(ws.objects_dir.rglob("*.png"))) == 1
    relabelled = store_derived(ws, parent, img, {"op": "crop", "crop_xyxy": [10, 10, 110, 60]}, layout="crop",
                               label="whisker")
    assert (relabelled["label"], relabelled["label_origin"]) == ("whisker", "crop")
    m = upsert_rows(conform(pd.DataFrame([{**row, "status": "dropped", "reason": "superseded"}]), MANIFEST_COLUMNS),
                    [row])
    assert len(m) == 1 and m["status"].item() == "dropped"  # an existing row keeps the decisions made on it


def test_boxes_are_carried_into_new_crops_only():
    ann = pd.DataFrame({"sample_id": ["p", "p"], "label": ["cup", "spoon"], "x1": [10.0, 90.0], "y1": [10.0, 90.0],
                        "x2": [50.0, 99.0], "y2": [50.0, 99.0], "origin": ["coco", "coco"]})
    crop = {"sample_id": "c", "parent_id": "p", "transform": json.dumps({"crop_xyxy": [0, 0, 40, 40]})}
    old = {"sample_id": "o", "parent_id": "p", "transform": json.dumps({"crop_xyxy": [0, 0, 60, 60]})}
    out = carry_boxes_into_crops(ann, [crop, old], created={"c"})
    moved = out[out["sample_id"] == "c"]
    assert moved[["label", "x1", "y1", "x2", "y2"]].values.tolist() == [["cup", 10.0, 10.0, 40.0, 40.0]]
    assert (out["sample_id"] == "o").sum() == 0  # not created by this run: nothing doubled
