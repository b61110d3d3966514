"""curate.review.records: the records the review App shows, without FiftyOne."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curate.review.records import (
    FACE_ORIGIN,
    Media,
    dataset_name,
    media_kind,
    sample_records,
    xyxy_px_to_fo_box,
)
from curate.schema import MANIFEST_COLUMNS, conform


@given(
    w=st.integers(1, 20_000), h=st.integers(1, 20_000),
    fx1=st.floats(0, 1), fy1=st.floats(0, 1), fx2=st.floats(0, 1), fy2=st.floats(0, 1),
)
def test_fo_box_is_relative_and_round_trips_to_pixels(w, h, fx1, fy1, fx2, fy2):
    x1, x2 = sorted((fx1 * w, fx2 * w))
    y1, y2 = sorted((fy1 * h, fy2 * h))
    bx, by, bw, bh = xyxy_px_to_fo_box(x1, y1, x2, y2, w, h)
    assert 0 <= bx <= 1 and 0 <= by <= 1 and bw >= 0 and bh >= 0
    assert bx + bw <= 1 + 1e-9 and by + bh <= 1 + 1e-9
    back = (bx * w, by * h, (bx + bw) * w, (by + bh) * h)
    assert back == pytest.approx((x1, y1, x2, y2), abs=1e-6 * max(w, h))


def test_dataset_name_is_stable_unique_and_valid(tmp_path):
    a, b = tmp_path / "a" / "my ws", tmp_path / "b" / "my ws"
    assert dataset_name(a) == dataset_name(Path(str(a) + "/"))  # same folder, same name
    assert dataset_name(a) != dataset_name(b)  # same folder name elsewhere: another dataset
    assert dataset_name(a).startswith("curate-my_ws-") and len(dataset_name(a)) == len("curate-my_ws-") + 8


@pytest.mark.parametrize("row, kind", [
    # a JPEG a browser shows as curate sees it
    ({"format": "JPEG", "exif_orientation": None}, "original"),
    ({"format": "PNG", "exif_orientation": 1}, "original"),
    # browsers do not decode HEIF or TIFF: a preview
    ({"format": "HEIF", "exif_orientation": None}, "preview"),
    ({"format": "TIFF", "exif_orientation": None}, "preview"),
    # EXIF-rotated: the preview is rotated the way boxes and sizes are
    ({"format": "JPEG", "exif_orientation": 6}, "preview"),
    # never decoded, or too large to decode safely: a card with the reason
    ({"format": None, "width": None, "height": None, "reason": "unreadable"}, "placeholder"),
    ({"format": "PNG", "reason": "too_large"}, "placeholder"),
    # the file is gone
    ({"format": "JPEG", "path": "/nonexistent/x.jpg"}, "placeholder"),
])
def test_media_kind(row, kind):
    assert media_kind({"width": 10, "height": 10, "reason": None, "path": __file__, **row}) == kind


def test_sample_records_place_boxes_and_hash_each_record(skimage_dir):
    photo = str(skimage_dir / "astronaut.png")
    m = conform(pd.DataFrame([
        {"sample_id": "a", "source": "s", "path": photo, "origin_path": photo, "rel_path": "astronaut.png",
         "layout": "flat", "status": "kept", "decided_by": "ingest", "width": 512, "height": 512, "label": "me"},
        {"sample_id": "b", "source": "s", "path": "/gone.jpg", "origin_path": "/gone.jpg", "rel_path": "gone.jpg",
         "layout": "flat", "status": "dropped", "reason": "unreadable", "decided_by": "ingest"},
    ]), MANIFEST_COLUMNS)
    ann = pd.DataFrame({"sample_id": ["a", "a", "b"], "label": ["face", "cup", "x"], "x1": [128.0, 0.0, 0.0],
                        "y1": [64.0, 0.0, 0.0], "x2": [256.0, 256.0, 1.0], "y2": [192.0, 512.0, 1.0],
                        "score": [0.9, None, None], "origin": [FACE_ORIGIN, "coco", "coco"], "iscrowd": [False] * 3})
    media = {"a": Media(photo, "original", 512, 512, "image/png", 1), "b": Media("/card.png", "placeholder",
                                                                            480, 360, "image/png", 2)}
    records, problems = sample_records(m, ann, media)
    a, b = records
    assert a["faces"] == [{"label": "face", "bounding_box": [0.25, 0.125, 0.25, 0.25], "confidence": 0.9,
                           "origin": FACE_ORIGIN, "iscrowd": False}]
    assert [d["label"] for d in a["boxes"]] == ["cup"] and a["boxes"][0]["bounding_box"] == [0.0, 0.0, 0.5, 1.0]
    assert (a["filepath"], a["media"], b["media"], b["label"]) == (photo, "original", "placeholder", None)
    assert problems == ["b: box x not shown: the image size is unknown"]  # never decoded: no frame to place it in
    assert len({a["record_hash"], b["record_hash"]}) == 2
    again, _ = sample_records(m, ann, media)
    assert [r["record_hash"] for r in again] == [a["record_hash"], b["record_hash"]]  # stable: a refresh skips them
    m.loc[0, "label"] = "astronaut"
    changed, _ = sample_records(m, ann, media)
    assert changed[0]["record_hash"] != a["record_hash"] and changed[1]["record_hash"] == b["record_hash"]
