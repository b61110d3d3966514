"""Per-image JSON box files: default and custom mappings, schema validation
messages, and the shipped schema files (schemas/ copies == package data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curate.errors import FormatError, OptionError
from curate.formats import detect
from curate.formats.base import ReadOptions
from curate.formats.jsonbox import data_text, load_mapping, read_json, schema_for_mapping

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["jsonbox.default.mapping.json", "jsonbox.default.schema.json", "jsonbox.mapping.schema.json"]


@pytest.mark.parametrize("name", SHIPPED)
def test_schemas_copy_matches_package_data(name):
    assert (REPO / "schemas" / name).read_text() == data_text(name), f"schemas/{name} differs from curate/data/{name}"


def test_shipped_default_schema_is_generated_from_the_default_mapping():
    mapping, _ = load_mapping("default")
    assert json.loads(data_text("jsonbox.default.schema.json")) == schema_for_mapping(mapping)


def _dataset(tmp_path: Path, skimage_dir: Path, docs: dict[str, object], images=("coffee.png",)) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    for name in images:
        shutil.copy(skimage_dir / name, root / name)
    for name, doc in docs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(doc))
    return root


def test_default_mapping(tmp_path, skimage_dir):
    root = _dataset(tmp_path, skimage_dir, {"coffee.json": {
        "image": "coffee.png", "width": 600, "height": 400, "label": "table",
        "boxes": [{"x1": 10, "y1": 20.5, "x2": 110, "y2": 220, "label": "cup"}]}})
    assert detect(root).name == "json"
    res = read_json(root, ReadOptions())
    [e] = res.entries
    assert (e.rel_path, e.label, e.declared_wh) == ("coffee.png", "table", (600, 400))
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in e.boxes] == [("cup", 10.0, 20.5, 110.0, 220.0)]


# An AI-Hub-like file: nested image record, size as a list, xywh boxes, numeric class codes.
AIHUB_DOC = {"image": {"filename": "coffee.png", "resolution": [600, 400]},
             "annotations": [{"bbox": [10, 20, 100, 50], "category": {"code": 3}}]}
AIHUB_MAPPING = {"image": "image.filename", "width": "image.resolution.0", "height": "image.resolution.1",
                 "boxes": "annotations", "box": {"label": "category.code", "xywh": "bbox"},
                 "label_names": {"3": "cup", "4": "saucer"}}


def test_custom_mapping_from_a_file(tmp_path, skimage_dir):
    root = _dataset(tmp_path, skimage_dir, {"labels/Training/x.json": AIHUB_DOC})
    mapping = tmp_path / "aihub.mapping.json"
    mapping.write_text(json.dumps(AIHUB_MAPPING))
    res = read_json(root, ReadOptions(extra={"json_mapping": str(mapping)}))
    [e] = res.entries
    assert (e.rel_path, e.split, e.declared_wh) == ("coffee.png", "train", (600, 400))  # "Training" folder
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in e.boxes] == [("cup", 10.0, 20.0, 110.0, 70.0)]
    assert res.classes == ["cup", "saucer"]


@pytest.mark.parametrize("doc, field, message", [
    # a coordinate given as text
    ({"boxes": [{"x1": 1, "y1": 1, "x2": "12px", "y2": 5, "label": "a"}]}, "boxes[0].x2",
     'expected number, found string "12px"'),
    # boxes without their label: the first one in the file is named
    ({"boxes": [{"x1": 1, "y1": 1, "x2": 2, "y2": 2}, {"x1": 1, "y1": 1, "x2": 2, "y2": 2}]}, "boxes[0].label",
     "expected present, found missing"),
    # no boxes list at all
    ({"objects": []}, "boxes", "expected present, found missing"),
    # boxes is an object, not a list
    ({"boxes": {"x1": 1}}, "boxes", 'expected array, found object {"x1": 1}'),
    # a zero width
    ({"width": 0, "boxes": []}, "width", "expected > 0, found 0"),
])
def test_malformed_file_names_file_and_field(tmp_path, skimage_dir, doc, field, message):
    root = _dataset(tmp_path, skimage_dir, {"coffee.json": doc})
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions())
    assert str(e.value) == f"{root / 'coffee.json'}: {field}: {message}"


def test_custom_mapping_error_names_nested_field(tmp_path, skimage_dir):
    bad = {**AIHUB_DOC, "annotations": [{"bbox": [10, 20, 100], "category": {"code": 3}}]}
    root = _dataset(tmp_path, skimage_dir, {"x.json": bad})
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": AIHUB_MAPPING}))
    assert str(e.value) == f"{root / 'x.json'}: annotations[0].bbox: expected at least 4 items, found 3 items"


def test_label_missing_from_label_names_names_the_file(tmp_path, skimage_dir):
    bad = {**AIHUB_DOC, "annotations": [{"bbox": [10, 20, 100, 5], "category": {"code": 9}}]}
    root = _dataset(tmp_path, skimage_dir, {"x.json": bad})
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": AIHUB_MAPPING}))
    assert str(e.value) == (f"{root / 'x.json'}: annotations[0].category.code: expected a label listed in the "
                            "mapping's label_names ['3', '4'], found 9")


@pytest.mark.parametrize("mapping, message", [
    ({"boxes": "b"}, "mapping box: expected present, found missing"),  # no box spec
    ({"boxes": "b", "box": {"label": "l", "x1": "a"}},  # half a coordinate set
     "mapping box: expected one set of coordinate paths: x1/y1/x2/y2, x/y/w/h, xyxy or xywh, found keys ['label', 'x1']"),
    ({"boxes": "b", "box": {"label": "l", "xyxy": "c"}, "colour": "red"}, "mapping: expected only the documented keys"),
])
def test_bad_mapping_is_an_option_error(mapping, message):
    with pytest.raises(OptionError) as e:
        load_mapping(mapping)
    assert str(e.value).startswith(f"<mapping>: {message}")


def test_unknown_shipped_mapping_name():
    with pytest.raises(OptionError) as e:
        load_mapping("nope")
    assert str(e.value) == "--json-mapping: expected a mapping file or a shipped name (default), found 'nope'"


def test_image_found_by_stem_elsewhere_and_missing_image(tmp_path, skimage_dir):
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy(skimage_dir / "coffee.png", root / "images/coffee.png")
    (root / "labels/coffee.json").write_text(json.dumps({"boxes": []}))  # no image field: found by stem
    (root / "labels/ghost.json").write_text(json.dumps({"boxes": []}))
    res = read_json(root, ReadOptions())
    assert sorted((e.rel_path, e.reason) for e in res.entries) == [
        ("images/coffee.png", None), ("labels/ghost.jpg", "missing_file")]


def test_ingest_cli_takes_a_mapping_file(tmp_path, skimage_dir):
    from click.testing import CliRunner

    from curate.cli import cli
    from curate.workspace import Workspace

    root = _dataset(tmp_path, skimage_dir, {"x.json": AIHUB_DOC})
    mapping = tmp_path / "aihub.mapping.json"
    mapping.write_text(json.dumps(AIHUB_MAPPING))
    res = CliRunner().invoke(cli, ["ingest", str(root), "--into", str(tmp_path / "ws"), "--layout", "json",
                                   "--json-mapping", str(mapping), "--workers", "1"])
    assert res.exit_code == 0, res.output
    [row] = Workspace.open(tmp_path / "ws").read_annotations().to_dict("records")
    assert (row["label"], row["x1"], row["y1"], row["x2"], row["y2"], row["origin"]) == ("cup", 10, 20, 110, 70, "json")
