"""curate.labelstudio's pure parts: the labelling config, box conversions, results, finding the program.

The server and the client are tested against a real Label Studio in tests/stages/test_label.py.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curate.labelstudio import (
    LabelStudioError,
    find_binary,
    label_config,
    local_file_url,
    ls_value_to_xyxy_px,
    parse_result,
    prediction_result,
    xyxy_px_to_ls_value,
)


def test_label_config_is_xml_with_escaped_class_names():
    config = label_config(["brown-glass", 'say "cheese" & <go>'], ["bottle"])
    root = ET.fromstring(config)  # well-formed, whatever the class names hold
    assert [c.get("value") for c in root.iter("Choice")] == ["brown-glass", 'say "cheese" & <go>']
    assert [c.get("value") for c in root.iter("Label")] == ["bottle"]
    assert root.find("Choices").get("name") == "label" and root.find("RectangleLabels").get("name") == "box"
    assert root.find("Image").get("value") == "$image"


@pytest.mark.parametrize("classes, boxes, tags", [
    (["a"], [], {"Choices"}),           # image classes only: no rectangles
    ([], ["a"], {"RectangleLabels"}),   # boxes only: no class choice
    (["a"], ["a", "b"], {"Choices", "RectangleLabels"}),
])
def test_label_config_parts(classes, boxes, tags):
    root = ET.fromstring(label_config(classes, boxes))
    assert {c.tag for c in root} - {"Image", "Header"} == tags


def test_label_config_needs_a_class():
    with pytest.raises(LabelStudioError, match="expected at least one image class or box class"):
        label_config([], [])


sizes = st.integers(min_value=1, max_value=20000)


@given(w=sizes, h=sizes, data=st.data())
def test_box_round_trip_is_exact_within_1e_6(w, h, data):
    x1 = data.draw(st.floats(0, w, allow_nan=False))
    x2 = data.draw(st.floats(x1, w, allow_nan=False))
    y1 = data.draw(st.floats(0, h, allow_nan=False))
    y2 = data.draw(st.floats(y1, h, allow_nan=False))
    back = ls_value_to_xyxy_px(xyxy_px_to_ls_value((x1, y1, x2, y2), (w, h)), (w, h))
    for a, b, side in zip(back, (x1, y1, x2, y2), (w, h, w, h), strict=True):
        assert abs(a - b) <= 1e-9 * side  # far below a pixel, no half-pixel shift


def test_prediction_parses_back_to_the_same_label_and_boxes():
    boxes = [("cat", (0.0, 0.0, 640.0, 480.0)), ("dog", (10.5, 20.25, 30.75, 479.5))]
    result = prediction_result("cat", boxes, (640, 480), classes=True, box_classes=True)
    label, back, problems = parse_result(result, (640, 480))
    assert label == "cat" and problems == []
    assert [b[0] for b in back] == ["cat", "dog"]
    assert [v for b in back for v in b[1]] == pytest.approx([v for b in boxes for v in b[1]], rel=1e-12)


def test_parse_result_reports_what_it_cannot_keep():
    result = [
        {"from_name": "label", "type": "choices", "value": {"choices": ["a", "b"]}},
        {"from_name": "box", "type": "rectanglelabels",
         "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 30, "rectanglelabels": ["a"]}},
        {"from_name": "box", "type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5}},
        {"from_name": "other", "type": "textarea", "value": {"text": ["note"]}},  # not curate's: ignored
    ]
    label, boxes, problems = parse_result(result, (100, 100))
    assert label == "a" and boxes == []
    assert problems == ["several classes chosen (a, b); the first is used",
                        "a a box rotated by 30 degrees; skipped (curate keeps axis-aligned boxes)",
                        "a box without a class; skipped"]


def test_parse_result_warns_when_the_frame_was_turned():
    result = [{"from_name": "box", "type": "rectanglelabels", "original_width": 300, "original_height": 200,
               "value": {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["a"]}}]
    _, boxes, problems = parse_result(result, (200, 300))
    assert boxes == [("a", (0.0, 0.0, 100.0, 150.0))]
    assert problems and "shown 300x200" in problems[0]


def test_local_file_url_refuses_a_file_outside_the_document_root(tmp_path):
    assert local_file_url(tmp_path / "a#b.jpg", tmp_path.parent).endswith(f"{tmp_path.name}/a%23b.jpg")
    with pytest.raises(LabelStudioError, match="expected a file under the document root"):
        local_file_url("/etc/passwd", tmp_path)


def test_find_binary_order(tmp_path, monkeypatch):
    prog = tmp_path / "label-studio"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    assert find_binary(prog) == prog  # --label-studio first
    monkeypatch.setenv("CURATE_LABEL_STUDIO", str(prog))
    assert find_binary() == prog  # then the environment
    monkeypatch.setenv("CURATE_LABEL_STUDIO", str(tmp_path / "gone"))
    with pytest.raises(LabelStudioError) as e:
        find_binary()
    assert str(e.value).startswith(f"{tmp_path / 'gone'}: CURATE_LABEL_STUDIO: expected the label-studio program")
    monkeypatch.delenv("CURATE_LABEL_STUDIO")
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_binary()  # the project's .venv-labelstudio when there is one, else PATH
    assert found == Path(__file__).resolve().parents[1] / ".venv-labelstudio/bin/label-studio" or found == prog
    assert os.access(found, os.X_OK)
