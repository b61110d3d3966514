"""YOLO detect: converters, label lines, every golden layout (Ultralytics,
Roboflow, Darknet, loose), malformed input, and data.yaml on output."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import FormatError
from curate.formats import detect
from curate.formats.base import ReadOptions, WriteOptions
from curate.formats.yolo import (
    LineError,
    data_yaml,
    parse_yolo_line,
    read_yolo,
    write_yolo,
    xyxy_to_yolo_xywhn,
    yolo_line,
    yolo_lines,
    yolo_xywhn_to_xyxy,
)

side = st.integers(min_value=1, max_value=10000)


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(st.data(), side, side)
def test_xyxy_yolo_round_trip_within_1e_9_of_the_image(data, w, h):
    x1, x2 = sorted((data.draw(st.floats(0, w)), data.draw(st.floats(0, w))))
    y1, y2 = sorted((data.draw(st.floats(0, h)), data.draw(st.floats(0, h))))
    back = yolo_xywhn_to_xyxy(xyxy_to_yolo_xywhn((x1, y1, x2, y2), (w, h)), (w, h))
    tol = (1e-9 * w, 1e-9 * h) * 2
    assert all(abs(a - b) <= t for a, b, t in zip(back, (x1, y1, x2, y2), tol, strict=True))


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(st.data(), side, side)
def test_written_line_reads_back_within_1e_6_of_the_image(data, w, h):
    """The text itself (8 decimals) keeps boxes within the export's verify tolerance."""
    x1, x2 = sorted((data.draw(st.floats(0, w)), data.draw(st.floats(0, w))))
    y1, y2 = sorted((data.draw(st.floats(0, h)), data.draw(st.floats(0, h))))
    label, xyxyn, _ = parse_yolo_line(yolo_line(3, (x1, y1, x2, y2), (w, h)), {3: "c"})
    got = (xyxyn[0] * w, xyxyn[1] * h, xyxyn[2] * w, xyxyn[3] * h)
    tol = (1e-6 * w, 1e-6 * h) * 2
    assert label == "c"
    assert all(abs(a - b) <= t for a, b, t in zip(got, (x1, y1, x2, y2), tol, strict=True))


@pytest.mark.parametrize("line, expected", [
    ("0 0.5 0.5 0.2 0.4", ("a", (0.4, 0.3, 0.6, 0.7), None)),  # plain detect line
    ("1 0.5 0.5 0.2 0.4 0.9", ("b", (0.4, 0.3, 0.6, 0.7), 0.9)),  # prediction with a score
    ("1 0.1 0.2 0.5 0.2 0.3 0.8", ("b", (0.1, 0.2, 0.5, 0.8), None)),  # Ultralytics polygon: its bounds
    ("  0   0.5\t0.5 0.2 0.4 ", ("a", (0.4, 0.3, 0.6, 0.7), None)),  # any whitespace
])
def test_parse_line(line, expected):
    label, xyxy, score = parse_yolo_line(line, {0: "a", 1: "b"})
    assert (label, tuple(round(v, 9) for v in xyxy), score) == expected


@pytest.mark.parametrize("line, message", [
    ("2 0.5 0.5 0.1 0.1", "class id: expected one of 0..1 (2 names), found 2"),  # id beyond names
    ("-1 0.5 0.5 0.1 0.1", "class id: expected one of 0..1 (2 names), found -1"),
    ("cat 0.5 0.5 0.1 0.1", "class id: expected an integer, found 'cat'"),  # a name, not an id
    ("0 0.5 0.5 wide 0.1", "coordinates: expected finite numbers, found 0.5 0.5 wide 0.1"),
    ("0 0.5 0.5 inf 0.1", "coordinates: expected finite numbers, found 0.5 0.5 inf 0.1"),  # issue 13
    ("0 0.5 nan 0.1 0.1", "coordinates: expected finite numbers, found 0.5 nan 0.1 0.1"),
    ("0 0.5 0.5", "values: expected class cx cy w h (or a polygon of x y pairs), found 3 values"),
])
def test_bad_line(line, message):
    with pytest.raises(LineError) as e:
        parse_yolo_line(line, {0: "a", 1: "b"})
    assert str(e.value) == message


@pytest.mark.parametrize("layout, rel_splits", [
    # Darknet/CVAT: obj.data says train = data/train.txt, labels beside images
    ("strict", {("obj_train_data/1.jpg", "train")}),
    # obj.names + images/<split> + labels/<split>, and a README.txt at the top
    ("labels", {("images/train/1.jpg", "train"), ("images/val/1.jpg", "val")}),
    # obj.names + Images/ + Annotations/
    ("annotations", {("Images/1.jpg", None)}),
])
def test_datumaro_layouts(corpus, layout, rel_splits):
    root = corpus / "formats/datumaro/yolo_dataset" / layout
    assert detect(root).name == "yolo"
    res = read_yolo(root, ReadOptions())
    assert {(e.rel_path, e.split) for e in res.entries} == rel_splits
    assert res.classes == [f"label_{i}" for i in range(10)]
    for e in res.entries:
        assert e.reason is None
        got = [(b.label, round(b.x1 * 15, 3), round(b.y1 * 10, 3), round(b.x2 * 15, 3), round(b.y2 * 10, 3))
               for b in e.boxes]
        assert got == [("label_2", 0.0, 2.0, 4.0, 4.0), ("label_4", 3.0, 3.0, 5.0, 6.0)]


def test_roboflow_layout_valid_folder_is_val(corpus):
    root = corpus / "formats/datumaro/roboflow_dataset/yolo"
    res = read_yolo(root, ReadOptions())  # data.yaml says ../valid/images; the folder is val/
    assert {(e.rel_path, e.split, len(e.boxes)) for e in res.entries} == {
        ("train/images/train_001.jpg", "train", 1), ("train/images/train_002.jpg", "train", 1),
        ("val/images/val_001.jpg", "val", 2)}


def test_ultralytics_yaml_with_dict_names_and_background_image(tmp_path, skimage_dir):
    for split in ("train", "valid"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "images/train/a.png")
    shutil.copy(skimage_dir / "chelsea.png", tmp_path / "images/valid/b.png")  # no label file: background
    (tmp_path / "labels/train/a.txt").write_text("7 0.5 0.5 0.5 0.5\n\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/valid\nnames:\n  0: cup\n  7: saucer\n")
    res = read_yolo(tmp_path, ReadOptions())
    got = {e.rel_path: (e.split, [b.label for b in e.boxes]) for e in res.entries}
    assert got == {"images/train/a.png": ("train", ["saucer"]), "images/valid/b.png": ("val", [])}
    assert res.classes == ["cup", "saucer"]


def test_class_id_outside_names_names_the_file_and_line(tmp_path, skimage_dir):
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "images/train/a.png")
    (tmp_path / "labels/train/a.txt").write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [cup, saucer]\n")
    with pytest.raises(FormatError) as e:
        read_yolo(tmp_path, ReadOptions())
    assert str(e.value) == (f"{tmp_path / 'labels/train/a.txt'}: line 2: class id: "
                            "expected one of 0..1 (2 names) in data.yaml, found 3")


def test_no_class_list_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(FormatError) as e:
        read_yolo(tmp_path, ReadOptions())
    assert str(e.value) == (f"{tmp_path}: names: expected data.yaml with names, obj.names or classes.txt, "
                            "found no class list (YOLO class ids mean nothing without one)")


def test_data_yaml_always_has_val_for_ultralytics():
    text, warnings = data_yaml(["train"], ["a"])
    doc = yaml.safe_load(text)
    assert doc == {"train": "images/train", "val": "images/train", "nc": 1, "names": {0: "a"}}
    assert warnings == ["no val split: data.yaml val points at images/train (no exported row has split val: "
                        "`curate split` assigns one in a workspace; a converted dataset keeps its source's splits)"]


def test_writer_class_ids_match_names_across_splits(tmp_path, skimage_dir):
    plan = pd.DataFrame([
        {"sample_id": "s0", "path": str(skimage_dir / "coffee.png"), "split": "train", "name": "a.png",
         "width": 600, "height": 400, "action": "link"},
        {"sample_id": "s1", "path": str(skimage_dir / "chelsea.png"), "split": "val", "name": "b.png",
         "width": 451, "height": 300, "action": "link"}])
    boxes = pd.DataFrame([{"sample_id": "s0", "label": "zebra", "x1": 0, "y1": 0, "x2": 600, "y2": 400},
                          {"sample_id": "s1", "label": "ant", "x1": 45.1, "y1": 30, "x2": 90.2, "y2": 60}])
    write_yolo(plan, boxes, tmp_path, WriteOptions())
    names = yaml.safe_load((tmp_path / "data.yaml").read_text())["names"]
    assert names == {0: "ant", 1: "zebra"}
    assert (tmp_path / "labels/train/a.txt").read_text() == "1 0.5 0.5 1 1\n"
    assert (tmp_path / "labels/val/b.txt").read_text() == "0 0.15 0.15 0.1 0.1\n"
    back = read_yolo(tmp_path, ReadOptions())
    assert {e.rel_path: [b.label for b in e.boxes] for e in back.entries} == {
        "images/train/a.png": ["zebra"], "images/val/b.png": ["ant"]}


@settings(deadline=None)  # timing varies on a shared machine; the property does not
@given(st.lists(st.tuples(st.integers(0, 79), side, side, st.floats(-100, 12000), st.floats(-100, 12000),
                          st.floats(-100, 12000), st.floats(-100, 12000)), max_size=20))
def test_yolo_lines_is_yolo_line_for_many_boxes(boxes):
    """The vectorised writer path prints the same text as the one-box function, clamping included."""
    expected = [yolo_line(c, (x1, y1, x2, y2), (w, h)) for c, w, h, x1, y1, x2, y2 in boxes]
    got = yolo_lines([b[0] for b in boxes], [b[3:] for b in boxes], [b[1:3] for b in boxes])
    assert got == expected


@pytest.mark.parametrize("text, boxes", [
    ("0 0.5 0.5 0.2 0.4\n", [("a", 0.4, 0.3, 0.6, 0.7, None)]),  # the fast path
    ("1 0.5 0.5 0.2 0.4 0.9\n\n0 0.5 0.5 1 1\n", [("b", 0.4, 0.3, 0.6, 0.7, 0.9), ("a", 0.0, 0.0, 1.0, 1.0, None)]),
    ("+1 0.5 0.5 0.2 0.4\n", [("b", 0.4, 0.3, 0.6, 0.7, None)]),  # not all digits: the general parser, same box
])
def test_label_file_lines(tmp_path, text, boxes):
    from curate.formats.yolo import _read_label_file

    p = tmp_path / "x.txt"
    p.write_text(text)
    got = [(b.label, *(pytest.approx(v) for v in (b.x1, b.y1, b.x2, b.y2)), b.score)
           for b in _read_label_file(p, {0: "a", 1: "b"}, "data.yaml")]
    assert got == boxes


def test_label_file_with_an_unknown_class_still_names_file_and_line(tmp_path):
    from curate.formats.yolo import _read_label_file

    p = tmp_path / "x.txt"
    p.write_text("0 0.5 0.5 0.2 0.4\n7 0.5 0.5 0.2 0.4\n")
    with pytest.raises(FormatError) as e:
        _read_label_file(p, {0: "a", 1: "b"}, "data.yaml")
    assert "line 2: class id" in str(e.value) and "data.yaml" in str(e.value)


# -- hostile and malformed input (issue 13) -----------------------------------

def _ultralytics(root, skimage_dir, names: str):
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", root / "images/train/a.png")
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text(f"train: images/train\nval: images/train\nnames: {names}\n")
    return root / "data.yaml"


@pytest.mark.parametrize("names, field, found", [
    ("[cup, null]", "names[1]", "YAML null"),  # was the class "None"
    ("[cup, ~]", "names[1]", "YAML null"),
    ("[cup, no]", "names[1]", "YAML false"),  # YAML 1.1: was the class "False"
    ("{0: cup, 1: }", "names.1", "YAML null"),
    ("['cup', '  ']", "names[1]", "an empty name"),
    ("[cup, [a, b]]", "names[1]", "a list"),
])
def test_a_class_name_that_is_no_name_is_refused(tmp_path, skimage_dir, names, field, found):
    yaml_path = _ultralytics(tmp_path, skimage_dir, names)
    with pytest.raises(FormatError) as e:
        read_yolo(tmp_path, ReadOptions())
    expected = "a class name (a text)" if found == "a list" else \
        "a class name (quote names such as 'null', 'yes' or 'no')"
    assert str(e.value) == f"{yaml_path}: {field}: expected {expected}, found {found}"


def test_a_quoted_null_is_a_name(tmp_path, skimage_dir):
    _ultralytics(tmp_path, skimage_dir, "['null', 'no']")
    assert read_yolo(tmp_path, ReadOptions()).classes == ["null", "no"]


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, skimage_dir):
    """Billion laughs in names: 10**9 strings once expanded (it built GBs, then MemoryError after 14 s)."""
    import time

    bomb = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{k}: &{k} [{', '.join(['*' + p] * 10)}]\n" for p, k in zip("abcdefgh", "bcdefghi", strict=True))
    yaml_path = _ultralytics(tmp_path, skimage_dir, "*i")
    yaml_path.write_text(bomb + yaml_path.read_text())
    t0 = time.perf_counter()
    with pytest.raises(FormatError) as e:
        read_yolo(tmp_path, ReadOptions())
    assert time.perf_counter() - t0 < 5
    assert str(e.value) == (f"{yaml_path}: expected at most 1,000,000 values with its aliases expanded, "
                            "found more (an alias bomb?)")


def test_a_huge_data_yaml_is_refused_unread(tmp_path, skimage_dir):
    yaml_path = _ultralytics(tmp_path, skimage_dir, "[cup]")
    with open(yaml_path, "a") as f:
        f.write("# " + "x" * (5 << 20) + "\n")
    with pytest.raises(FormatError) as e:
        read_yolo(tmp_path, ReadOptions())
    assert str(e.value).startswith(f"{yaml_path}: expected a data.yaml of at most 4 MB, found ")


def test_a_label_file_without_its_image_is_a_missing_file_row(tmp_path, skimage_dir):
    """It vanished without a row; VOC records missing_file for an XML without its image."""
    _ultralytics(tmp_path, skimage_dir, "[cup]")
    (tmp_path / "labels/train/gone.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    res = read_yolo(tmp_path, ReadOptions())
    got = {e.rel_path: (e.split, e.reason, e.detail) for e in res.entries}
    assert got == {"images/train/a.png": ("train", None, None),
                   "labels/train/gone.txt": ("train", "missing_file", "the label file labels/train/gone.txt has no "
                                             "image")}


def test_an_image_in_two_split_lists_is_reported(tmp_path, skimage_dir):
    (tmp_path / "images").mkdir()
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "images/a.png")
    (tmp_path / "train.txt").write_text("images/a.png\n")
    (tmp_path / "val.txt").write_text("images/a.png\n")
    (tmp_path / "data.yaml").write_text("train: train.txt\nval: val.txt\nnames: [cup]\n")
    res = read_yolo(tmp_path, ReadOptions())
    assert [(e.rel_path, e.split) for e in res.entries] == [("images/a.png", "train")]
    assert res.warnings == ["split_leak: images/a.png is listed in two splits (train, val); kept in train"]


def test_a_deeply_nested_data_yaml_is_a_format_error(tmp_path, skimage_dir):
    yaml_path = _ultralytics(tmp_path, skimage_dir, "[cup]")
    yaml_path.write_text(yaml_path.read_text() + "extra: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(FormatError) as e:
        read_yolo(tmp_path, ReadOptions())
    assert str(e.value) == f"{yaml_path}: expected YAML nested at most a few hundred levels deep, found deeper nesting"
