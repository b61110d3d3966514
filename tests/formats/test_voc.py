"""Pascal VOC XML: golden samples (VOC2007 layout, Roboflow), conventions, malformed input, writer."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from curate.errors import FormatError
from curate.formats import detect
from curate.formats.base import ReadOptions, WriteOptions
from curate.formats.voc import bndbox_xyxy, parse_voc_xml, read_voc, voc_xml, write_voc, xyxy_bndbox


def test_voc2007_layout_splits_from_imagesets(corpus):
    root = corpus / "formats/datumaro/voc_dataset/voc_dataset1"
    assert detect(root).name == "voc"
    res = read_voc(root, ReadOptions())
    got = {e.rel_path: e for e in res.entries}
    # 000002 has no XML but is listed in ImageSets/Main/test.txt: an image without boxes.
    assert {k: (e.split, e.reason) for k, e in got.items()} == {
        "JPEGImages/2007_000001.jpg": ("train", None), "JPEGImages/2007_000002.jpg": ("test", None)}
    one = got["JPEGImages/2007_000001.jpg"]
    assert one.declared_wh == (20, 10)
    # <part> head box (fractional) and <actions> are not imported
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in one.boxes] == [
        ("cat", 1.0, 2.0, 3.0, 4.0), ("person", 4.0, 5.0, 6.0, 7.0)]


def test_annotations_without_images_and_objectless_file(corpus):
    root = corpus / "formats/datumaro/voc_dataset/voc_dataset2"
    assert detect(root).name == "voc"  # @.xml (no objects) sorts first and must not confuse detection
    res = read_voc(root, ReadOptions())
    assert {e.rel_path: (e.reason, len(e.boxes)) for e in res.entries} == {
        "JPEGImages/@.jpg": ("missing_file", 0), "JPEGImages/a.jpg": ("missing_file", 1),
        "JPEGImages/b.jpg": ("missing_file", 1), "JPEGImages/c.jpg": ("missing_file", 1),
        "JPEGImages/d.jpg": ("missing_file", 1)}
    assert res.classes is not None and res.classes[:3] == ["background", "aeroplane", "bicycle"]  # labelmap.txt


def test_roboflow_bndbox_children_in_any_order(corpus):
    root = corpus / "formats/datumaro/roboflow_dataset/voc"
    res = read_voc(root, ReadOptions())
    got = {e.rel_path: (e.split, [(b.label, b.x1, b.y1, b.x2, b.y2) for b in e.boxes]) for e in res.entries}
    assert got["train/train_001.jpg"] == ("train", [("label_0", 2.0, 1.0, 5.0, 2.0)])
    assert got["val/val_001.jpg"][0] == "val"


@pytest.mark.parametrize("one_based, expected", [
    (False, (1.0, 2.0, 3.0, 4.0)),  # pixel edges as written (Datumaro, CVAT, Roboflow, FiftyOne)
    (True, (0.0, 1.0, 3.0, 4.0)),  # VOC devkit: xmin=1 is the first pixel, i.e. edge 0
])
def test_pixel_conventions(one_based, expected):
    values = {"xmin": "1", "ymin": "2", "xmax": "3", "ymax": "4"}
    assert bndbox_xyxy(values, one_based) == expected
    assert bndbox_xyxy(xyxy_bndbox(expected, one_based), one_based) == expected


@pytest.mark.parametrize("body, message", [
    ("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>",
     "object[1]/name: expected a class name, found missing"),
    ("<object><name>cat</name></object>", "object[1]/bndbox: expected xmin, ymin, xmax, ymax, found missing"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox></object>",
     "object[1]/bndbox/ymax: expected a number, found missing"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2px</xmax><ymax>2</ymax></bndbox></object>",
     "object[1]/bndbox/xmax: expected a finite number, found '2px'"),
    ("<size><width>ten</width><height>5</height></size>", "size/width: expected a finite number, found 'ten'"),
    # issue 13: Infinity / 1e999 / NaN were an OverflowError at int(), or a box of infinite size
    ("<size><width>600</width><height>1e999</height></size>", "size/height: expected a finite number, found '1e999'"),
    ("<size><width>Infinity</width><height>5</height></size>",
     "size/width: expected a finite number, found 'Infinity'"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>nan</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>",
     "object[1]/bndbox/ymin: expected a finite number, found 'nan'"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>inf</xmax><ymax>2</ymax></bndbox></object>",
     "object[1]/bndbox/xmax: expected a finite number, found 'inf'"),
])
def test_malformed_xml_names_file_and_field(tmp_path, body, message):
    p = tmp_path / "a.xml"
    p.write_text(f"<annotation><filename>a.jpg</filename>{body}</annotation>")
    with pytest.raises(FormatError) as e:
        parse_voc_xml(p)
    assert str(e.value) == f"{p}: {message}"


def test_label_missing_from_labelmap_names_the_file(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\ncat:0,0,0::\n")
    p = tmp_path / "Annotations/a.xml"
    p.write_text("<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
                 "<ymax>2</ymax></bndbox></object></annotation>")
    with pytest.raises(FormatError) as e:
        read_voc(tmp_path, ReadOptions())
    assert str(e.value) == f"{p}: object[1]/name: expected a label listed in labelmap.txt, found 'dog'"


def test_not_xml(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text("<annotation><object>")
    with pytest.raises(FormatError) as e:
        parse_voc_xml(p)
    assert str(e.value).startswith(f"{p}: expected well-formed XML, found no element found")


_LAUGHS = ('<!DOCTYPE a [<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "' + f"&l{i - 1};" * 10 + '">' for i in range(1, 10))
           + ']>')


@pytest.mark.parametrize("doctype, body, found", [
    # an entity bomb ("billion laughs": 10^9 lols) is stopped by the parser's amplification limit, at once
    (_LAUGHS, "<filename>&l9;</filename>", "limit on input amplification factor (from DTD and entities) breached"),
    # XXE: an external entity is never fetched, so /etc/passwd never reaches the manifest
    ('<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "<filename>&x;</filename>", "undefined entity &x;"),
])
def test_entity_bombs_and_external_entities_are_refused(tmp_path, doctype, body, found):
    import time

    p = tmp_path / "a.xml"
    p.write_text(f'<?xml version="1.0"?>{doctype}<annotation>{body}<size><width>1</width><height>1</height>'
                 "</size></annotation>")
    t0 = time.monotonic()
    with pytest.raises(FormatError) as e:
        parse_voc_xml(p)
    assert str(e.value).startswith(f"{p}: expected well-formed XML, found {found}")
    assert time.monotonic() - t0 < 10


def test_writer_layout_and_fractional_boxes(tmp_path, skimage_dir):
    plan = pd.DataFrame([
        {"sample_id": "s0", "path": str(skimage_dir / "camera.png"), "split": "train", "name": "cam.png",
         "width": 512, "height": 512, "action": "link", "mode": "L"},
        {"sample_id": "s1", "path": str(skimage_dir / "coffee.png"), "split": "val", "name": "cof.png",
         "width": 600, "height": 400, "action": "link", "mode": "RGB"}])
    boxes = pd.DataFrame([{"sample_id": "s0", "label": "man", "x1": 0.5, "y1": 10, "x2": 200.25, "y2": 512}])
    write_voc(plan, boxes, tmp_path, WriteOptions())
    assert (tmp_path / "ImageSets/Main/train.txt").read_text() == "cam\n"
    assert (tmp_path / "ImageSets/Main/val.txt").read_text() == "cof\n"
    root = ET.parse(tmp_path / "Annotations/cam.xml").getroot()
    assert root.findtext("size/depth") == "1"  # grayscale source kept byte for byte
    assert [root.findtext(f"object/bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")] == ["0.5", "10", "200.25",
                                                                                              "512"]
    back = {e.rel_path: e for e in read_voc(tmp_path, ReadOptions()).entries}
    assert back["JPEGImages/cam.png"].split == "train" and back["JPEGImages/cof.png"].boxes == []
    assert voc_xml({"name": "x.jpg", "width": 3, "height": 2, "action": "encode"}, []).count("<depth>3</depth>") == 1


def test_flat_folder_of_xml_beside_images(tmp_path, skimage_dir):
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "cup.png")
    (tmp_path / "cup.xml").write_text("<annotation><filename>cup.png</filename><object><name>cup</name><bndbox>"
                                      "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
                                      "</annotation>")
    assert detect(tmp_path).name == "voc"
    res = read_voc(tmp_path, ReadOptions())
    assert [(e.rel_path, e.split, len(e.boxes)) for e in res.entries] == [("cup.png", None, 1)]


def test_an_image_in_two_split_lists_is_reported(tmp_path, skimage_dir):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / d).mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", tmp_path / "JPEGImages/a.png")
    (tmp_path / "Annotations/a.xml").write_text("<annotation><filename>a.png</filename></annotation>")
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\n")
    (tmp_path / "ImageSets/Main/val.txt").write_text("a\n")
    res = read_voc(tmp_path, ReadOptions())
    assert [e.split for e in res.entries] == ["train"]
    assert res.warnings == ["ImageSets/Main: a is listed in two splits (train, val): a leak in the source; kept in train"]
