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
PRESETS = ["default", "aihub-vehicle-damage", "aihub-household-waste"]
SHIPPED = ["jsonbox.mapping.schema.json", *[f"jsonbox.{p}.{kind}.json" for p in PRESETS for kind in ("mapping", "schema")]]
GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", SHIPPED)
def test_schemas_copy_matches_package_data(name):
    assert (REPO / "schemas" / name).read_text() == data_text(name), f"schemas/{name} differs from curate/data/{name}"


@pytest.mark.parametrize("preset", PRESETS)
def test_shipped_schemas_are_generated_from_their_mappings(preset):
    mapping, _ = load_mapping(preset)
    assert json.loads(data_text(f"jsonbox.{preset}.schema.json")) == schema_for_mapping(mapping)


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
    assert str(e.value) == ("--json-mapping: expected a mapping file or a shipped name (default, aihub-vehicle-damage, "
                            "aihub-household-waste), found 'nope'")


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


# -- AI-Hub shapes: numbers as text, "W*H" sizes, shipped presets, golden examples ---------------

def _golden_dataset(tmp_path: Path, skimage_dir: Path, preset: str, folder: str = "") -> tuple[Path, dict]:
    """The golden example of ``preset`` (written by us in that shape) next to a real photo of its size."""
    from PIL import Image

    doc = json.loads((GOLDEN / f"{preset}.json").read_text())
    mapping, _ = load_mapping(preset)
    from curate.formats.jsonbox import get_path

    name = get_path(doc, mapping["image"])
    root = tmp_path / "src"
    (root / folder).mkdir(parents=True, exist_ok=True)
    Image.open(skimage_dir / "coffee.png").convert("RGB").save(root / folder / name, quality=95)  # 600x400
    (root / folder / f"{Path(name).stem}.json").write_text(json.dumps(doc, ensure_ascii=False))
    return root, doc


@pytest.mark.parametrize("preset, boxes", [
    # annotations[].bbox as x, y, w, h; class in damage; size in images.width/height
    ("aihub-vehicle-damage", [("Scratched", 150.0, 40.5, 250.0, 98.5), ("Crushed", 320.0, 210.0, 440.0, 290.0),
                              ("Scratched", 20.0, 300.0, 80.0, 320.0)]),
    # Bounding[].x1..y2 as strings; class in CLASS; size as "600*400"
    ("aihub-household-waste", [("c_12", 30.0, 40.0, 210.0, 330.0), ("c_3", 300.5, 120.0, 480.0, 260.0)]),
])
def test_aihub_presets_read_their_golden_example_and_round_trip(tmp_path, skimage_dir, preset, boxes):
    from curate.formats.jsonbox import write_json
    from curate.stages.export import plan_export
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    root, golden = _golden_dataset(tmp_path, skimage_dir, preset)
    assert detect(root).name == "json"  # found by its shape, no --json-mapping needed
    res = read_json(root, ReadOptions())
    [e] = res.entries
    assert e.declared_wh == (600, 400)
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in e.boxes] == boxes
    assert any(preset in w for w in res.warnings)  # says which shipped mapping it took
    # through a workspace and back out in the same shape
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(root, name="hub")], workers=1))
    plan, ann = plan_export(ws.read_manifest(), ws.read_annotations(), "train")
    out = tmp_path / "out"
    from curate.formats.base import WriteOptions

    write_json(plan, ann, out, WriteOptions(extra={"json_mapping": preset}))
    [written] = sorted(out.rglob("*.json"))
    doc = json.loads(written.read_text())
    again = read_json(out, ReadOptions(extra={"json_mapping": preset}))
    [e2] = again.entries
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in e2.boxes] == boxes
    assert e2.declared_wh == (600, 400)
    mapping, _ = load_mapping(preset)
    from curate.formats.jsonbox import get_path

    for key in ("image", "size", "width", "height"):  # the same fields, the same types as the golden file
        if mapping.get(key):
            assert type(get_path(doc, mapping[key])) is type(get_path(golden, mapping[key])), key


@pytest.mark.parametrize("value, message", [
    ("12px", 'expected a number (or a numeric string), found string "12px"'),
    ("", 'expected a number (or a numeric string), found string ""'),
])
def test_numbers_as_text_still_refuses_text_that_is_no_number(tmp_path, skimage_dir, value, message):
    root, doc = _golden_dataset(tmp_path, skimage_dir, "aihub-household-waste")
    doc["Bounding"][1]["x2"] = value
    (root / "25_X001_C012_1217_0.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": "aihub-household-waste"}))
    assert str(e.value) == f"{root / '25_X001_C012_1217_0.json'}: Bounding[1].x2: {message}"


def test_a_size_that_is_not_w_times_h_is_named(tmp_path, skimage_dir):
    root, doc = _golden_dataset(tmp_path, skimage_dir, "aihub-household-waste")
    doc["RESOLUTION"] = "600 by 400"
    (root / "25_X001_C012_1217_0.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": "aihub-household-waste"}))
    assert str(e.value) == f'{root / "25_X001_C012_1217_0.json"}: RESOLUTION: expected a size like 1920*1080, found string "600 by 400"'


@pytest.mark.parametrize("folder, split", [
    ("1.Training/2.라벨링데이터", "train"),  # AI-Hub's numbered split folders
    ("2.Validation/[V라벨링]생활폐기물_01", "val"),  # and its bracketed archive folders
    ("labels/Validation", "val"),
])
def test_aihub_split_folders_set_the_split(tmp_path, skimage_dir, folder, split):
    root, _ = _golden_dataset(tmp_path, skimage_dir, "aihub-household-waste", folder)
    assert detect(root).name == "json"  # the JSON sits a few folders down
    [e] = read_json(root, ReadOptions()).entries
    assert e.split == split


# -- hostile and malformed input (issue 13) -----------------------------------

@pytest.mark.parametrize("raw, found", [
    ('"x2": Infinity', "Infinity at line 1"),  # was an OverflowError at int() or a box of infinite size
    ('"x2": 1e999', "1e999 at line 1"),
    ('"width": NaN', "NaN at line 1"),
])
def test_non_finite_numbers_name_the_file(tmp_path, skimage_dir, raw, found):
    doc = {"image": "coffee.png", "width": 600, "height": 400, "boxes": [{"x1": 1, "y1": 2, "x2": 3, "y2": 4,
                                                                          "label": "cup"}]}
    root = _dataset(tmp_path, skimage_dir, {"coffee.json": doc})
    text = (root / "coffee.json").read_text()
    (root / "coffee.json").write_text(text.replace('"x2": 3', raw) if "x2" in raw else text.replace('"width": 600', raw))
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": "default"}))
    assert str(e.value).startswith(f"{root / 'coffee.json'}: expected finite numbers (JSON has no Infinity or NaN), "
                                   f"found {found}")


def test_infinity_as_numeric_text_names_the_box(tmp_path, skimage_dir):
    root, doc = _golden_dataset(tmp_path, skimage_dir, "aihub-household-waste")
    doc["Bounding"][1]["x2"] = "1e999"
    (root / "25_X001_C012_1217_0.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": "aihub-household-waste"}))
    assert str(e.value) == (f"{root / '25_X001_C012_1217_0.json'}: Bounding[1]: expected finite coordinates, "
                            "found [300.5, 120, inf, 260]")


@pytest.mark.parametrize("depth", [100_000, 900])  # past the parser's limit; within it, past the validator's
def test_deep_nesting_is_a_format_error_also_in_detection(tmp_path, skimage_dir, depth):
    root = _dataset(tmp_path, skimage_dir, {})
    (root / "coffee.json").write_text('{"image": "coffee.png", "boxes": ' + "[" * depth + "]" * depth + "}")
    detect(root)  # no RecursionError: the folder is simply not detected as per-image JSON
    with pytest.raises(FormatError) as e:
        read_json(root, ReadOptions(extra={"json_mapping": "default"}))
    assert str(e.value).startswith(f"{root / 'coffee.json'}: ")


def test_one_image_described_in_two_split_folders_is_reported(tmp_path, skimage_dir):
    doc = {"image": "coffee.png", "boxes": []}
    root = _dataset(tmp_path, skimage_dir, {"train/a.json": doc, "val/a.json": doc})
    res = read_json(root, ReadOptions(extra={"json_mapping": "default"}))
    assert [e.split for e in res.entries] == ["train"]
    assert "in another split (train, val): a split_leak in the source, kept in train;" in res.warnings[0]


def test_one_per_image_json_file_is_detected(tmp_path, skimage_dir):
    root = _dataset(tmp_path, skimage_dir, {"coffee.json": {"image": "coffee.png", "boxes": []}})
    assert detect(root / "coffee.json").name == "json"


@pytest.mark.parametrize("depth", [100_000, 900])
def test_a_deeply_nested_mapping_file_is_an_option_error(tmp_path, depth):
    p = tmp_path / "deep.mapping.json"
    p.write_text('{"boxes": "b", "box": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(OptionError) as e:
        load_mapping(p)
    assert str(e.value).startswith(str(p))
