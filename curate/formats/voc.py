"""Pascal VOC XML: one ``<annotation>`` file per image.

Reading accepts:

- the VOC layout: ``Annotations/*.xml``, ``JPEGImages/``, and the split lists
  ``ImageSets/Main/{train,val,test}.txt`` (an image in none of them has no
  split; ``trainval`` alone does not decide one);
- Roboflow and flat layouts: ``<split>/*.xml`` or ``*.xml`` beside the images.

``bndbox`` children are found by name, in any order (Roboflow writes
``xmin, xmax, ymin, ymax``). ``<part>`` boxes and ``<actions>`` are not
imported; ``difficult``/``truncated`` are not kept. ``<size>`` is the declared
image size (ingest checks it against the file and fixes EXIF-rotated frames).
A ``labelmap.txt`` (Datumaro) is the class list: an object whose name is not in
it is an error naming the file.

Coordinates are pixel edges, read and written as they are (Datumaro, CVAT,
Roboflow and FiftyOne do the same). The VOC devkit's own convention is
1-based pixel indices (``xmin = 1`` is the left edge); pass ``voc_one_based``
(``--voc-one-based``) to subtract 1 from ``xmin``/``ymin`` when reading and add
it back when writing.

Writing: ``Annotations/<stem>.xml``, ``JPEGImages/<name>`` and
``ImageSets/Main/<split>.txt``.

    >>> bndbox_xyxy({"xmin": "1", "xmax": "3", "ymin": "2", "ymax": "4"}, one_based=True)
    (0.0, 1.0, 3.0, 4.0)
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import FormatError
from curate.formats.base import (
    Box,
    Carries,
    Entry,
    Format,
    FormatOption,
    ReadOptions,
    ReadResult,
    WriteOptions,
    WriteResult,
    canonical_split,
    finite_number,
)
from curate.formats.output import (
    FileWriter,
    boxes_by_sample,
    detection_classes,
    fmt_num,
    image_files_by_split,
)
from curate.walk import WalkReport, walk

COORDS = ("xmin", "ymin", "xmax", "ymax")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")


# -- pure converters ---------------------------------------------------------

def bndbox_xyxy(values: Mapping[str, str], one_based: bool = False) -> tuple[float, float, float, float]:
    """``{xmin, ymin, xmax, ymax}`` texts -> pixel-edge ``(x1, y1, x2, y2)``. Raises KeyError/ValueError
    (also for ``inf``, ``nan``, ``1e999``)."""
    xyxy = [finite_number(values[k]) for k in COORDS]
    return (Box.from_one_based(None, xyxy) if one_based else Box.from_xyxy(None, xyxy)).xyxy


def xyxy_bndbox(xyxy: tuple[float, float, float, float], one_based: bool = False) -> dict[str, str]:
    box = Box.from_xyxy(None, xyxy)
    x1, y1, x2, y2 = box.one_based if one_based else box.xyxy
    return {"xmin": fmt_num(x1), "ymin": fmt_num(y1), "xmax": fmt_num(x2), "ymax": fmt_num(y2)}


# -- detection ---------------------------------------------------------------

def _xml_files(folder: Path, limit: int | None = None) -> list[Path]:
    out = []
    try:
        for e in sorted(os.scandir(folder), key=lambda e: e.name):
            if e.is_file() and e.name.lower().endswith(".xml") and not e.name.startswith("."):
                out.append(Path(e.path))
                if limit and len(out) >= limit:
                    break
    except OSError:
        pass
    return out


def _is_voc_xml(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"<annotation" in head and b"<annotations" not in head


def detect_voc(path: Path) -> bool:
    """``Annotations/*.xml``, or VOC XML files at the top or in split folders (first 4 KB of one file)."""
    if not path.is_dir():
        return path.is_file() and path.suffix.lower() == ".xml" and _is_voc_xml(path)
    if (path / "Annotations").is_dir():
        first = _xml_files(path / "Annotations", limit=2)
        return bool(first) and _is_voc_xml(first[-1])
    candidates = [path] + [path / d for d in sorted(os.listdir(path)) if canonical_split(d) and (path / d).is_dir()]
    for folder in candidates:
        first = _xml_files(folder, limit=1)
        if first and _is_voc_xml(first[0]):
            return True
    return False


# -- reading -----------------------------------------------------------------

def _text(path: Path, what: str) -> str:
    """A text file of the dataset, or a FormatError naming it when it is not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(path, None, expected=f"UTF-8 text: {what}",
                          found=f"byte 0x{e.object[e.start]:02x} at offset {e.start}") from None


def _split_lists(root: Path, warnings: list[str] | None = None) -> dict[str, str]:
    """Image stem -> split, from ImageSets/Main/{train,val,test}.txt.

    A stem in two lists keeps the first list's split (in file name order) and
    is reported in ``warnings``: the source leaks it.
    """
    out: dict[str, str] = {}
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        return out
    for p in sorted(main.glob("*.txt")):
        split = canonical_split(p.stem)
        if split is None:  # <class>_train.txt, trainval.txt
            continue
        for line in _text(p, "a list of image names, one a line").splitlines():
            stem = line.strip()  # a split list holds bare stems, which may contain spaces
            if stem and out.setdefault(stem, split) != split and warnings is not None:
                warnings.append(f"ImageSets/Main: {stem} is listed in two splits ({out[stem]}, {split}): a leak "
                                f"in the source; kept in {out[stem]}")
    return out


def _labelmap(root: Path) -> list[str] | None:
    p = root / "labelmap.txt"
    if not p.is_file():
        return None
    names = []
    for line in _text(p, "class names, one a line").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split(":", 1)[0])
    return names


def _image_for(xml: Path, filename: str | None, image_dirs: list[Path]) -> Path:
    if filename:
        for d in image_dirs:
            if (d / filename).exists():
                return d / filename
    for d in image_dirs:
        for ext in _IMAGE_EXTS:
            if (d / (xml.stem + ext)).exists():
                return d / (xml.stem + ext)
    return image_dirs[0] / (filename or xml.stem + ".jpg")


def parse_voc_xml(path: Path, one_based: bool = False, classes: list[str] | None = None
                  ) -> tuple[str | None, tuple[int, int] | None, list[Box]]:
    """(filename, declared (w, h), boxes) of one VOC XML file."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise FormatError(path, None, expected="well-formed XML", found=str(e)) from e
    except OSError as e:
        raise FormatError(path, None, message=f"cannot read: {e.strerror}") from e
    root = tree.getroot()
    if root.tag != "annotation":
        raise FormatError(path, None, expected="an <annotation> root element", found=f"<{root.tag}>")
    filename = (root.findtext("filename") or "").strip() or None
    declared = None
    size = root.find("size")
    if size is not None:
        dims = []
        for k in ("width", "height"):
            text = (size.findtext(k) or "0").strip()
            try:
                dims.append(int(finite_number(text)))
            except ValueError:  # "inf" / "1e999" were an OverflowError at int()
                raise FormatError(path, f"size/{k}", expected="a finite number", found=repr(text)) from None
        w, h = dims
        declared = (w, h) if w > 0 and h > 0 else None
    boxes = []
    for i, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise FormatError(path, f"object[{i}]/name", expected="a class name", found="missing")
        if classes is not None and name not in classes:
            raise FormatError(path, f"object[{i}]/name", expected="a label listed in labelmap.txt", found=repr(name))
        bb = obj.find("bndbox")
        if bb is None:
            raise FormatError(path, f"object[{i}]/bndbox", expected="xmin, ymin, xmax, ymax", found="missing")
        values = {c.tag: (c.text or "").strip() for c in bb}
        for k in COORDS:
            if k not in values:
                raise FormatError(path, f"object[{i}]/bndbox/{k}", expected="a number", found="missing")
        try:
            x1, y1, x2, y2 = bndbox_xyxy(values, one_based)
        except ValueError:
            bad = next(k for k in COORDS if not _is_number(values[k]))
            raise FormatError(path, f"object[{i}]/bndbox/{bad}", expected="a finite number",
                              found=repr(values[bad])) from None
        boxes.append(Box(name, x1, y1, x2, y2))
    return filename, declared, boxes


def _is_number(text: str) -> bool:
    try:
        finite_number(text)
    except ValueError:
        return False
    return True


def read_voc(path: Path, options: ReadOptions) -> ReadResult:
    """Read a VOC dataset folder (or one XML file); see the module docstring."""
    path = path.absolute()
    one_based = bool(options.extra.get("voc_one_based"))
    images_dir = options.extra.get("images_dir")
    extra_dirs = [Path(images_dir).absolute()] if images_dir else []
    report = WalkReport()
    if path.is_file():
        root, xmls = path.parent, [path]
    else:
        root = path
        xmls = _xml_files(root / "Annotations") if (root / "Annotations").is_dir() else [
            Path(f.path) for f in walk(root, follow_links=options.follow_links, report=report)
            if f.rel_path.lower().endswith(".xml") and f.reason is None]
    voc_layout = (root / "Annotations").is_dir()
    classes = _labelmap(root)
    entries: dict[str, Entry] = {}
    warnings: list[str] = []
    splits = _split_lists(root, warnings) if voc_layout else {}
    for xml in xmls:
        filename, declared, boxes = parse_voc_xml(xml, one_based, classes)
        dirs = ([root / "JPEGImages"] if voc_layout else []) + [xml.parent] + extra_dirs
        image = _image_for(xml, filename, dirs)
        rel = os.path.relpath(image, root).replace(os.sep, "/")
        if voc_layout:
            split = splits.get(xml.stem) or splits.get(Path(filename or "").stem)
        else:
            first = os.path.relpath(xml, root).replace(os.sep, "/").split("/")[0]
            split = canonical_split(first) if first != xml.name else None
        key = str(image)
        if key in entries:
            warnings.append(f"{xml.name}: describes {rel} again; its boxes are merged")
            entries[key].boxes += boxes
            continue
        entry = Entry(key, rel, split=split, boxes=boxes, declared_wh=declared)
        if not image.exists():
            entry.reason, entry.detail = "missing_file", f"named by {os.path.relpath(xml, root)}"
        entries[key] = entry
    described = {Path(k).stem for k in entries} | {x.stem for x in xmls}
    for stem, split in splits.items():  # listed in ImageSets but no XML: an image without boxes
        if stem not in described:
            image = _image_for(root / "Annotations" / f"{stem}.xml", None, [root / "JPEGImages", *extra_dirs])
            entry = Entry(str(image), os.path.relpath(image, root).replace(os.sep, "/"), split=split)
            if not image.exists():
                entry.reason, entry.detail = "missing_file", "listed in ImageSets/Main"
            entries[str(image)] = entry
    skipped = report.skipped_dirs + [f"{p}: link loop" for p in report.loops]
    return ReadResult(list(entries.values()), warnings=warnings, skipped=skipped, classes=classes)


# -- writing -----------------------------------------------------------------

_DEPTH = {"L": 1, "1": 1, "I;16": 1, "I": 1, "F": 1, "LA": 2, "RGBA": 4}


def voc_xml(row: Mapping[str, Any], boxes: list[dict[str, Any]], one_based: bool = False) -> str:
    """The XML text for one image row and its boxes (pure)."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "JPEGImages"
    ET.SubElement(ann, "filename").text = row["name"]
    size = ET.SubElement(ann, "size")
    ET.SubElement(size, "width").text = str(int(row["width"]))
    ET.SubElement(size, "height").text = str(int(row["height"]))
    depth = 3 if row.get("action") == "encode" else _DEPTH.get(str(row.get("mode") or "RGB"), 3)
    ET.SubElement(size, "depth").text = str(depth)
    ET.SubElement(ann, "segmented").text = "0"
    for b in boxes:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = str(b["label"])
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for k, v in xyxy_bndbox((b["x1"], b["y1"], b["x2"], b["y2"]), one_based).items():
            ET.SubElement(bb, k).text = v
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode") + "\n"


def write_voc(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``."""
    one_based = bool(options.extra.get("voc_one_based"))
    classes = detection_classes(boxes, options.extra.get("classes"), "voc", len(plan))
    by_sample = boxes_by_sample(boxes)
    files: dict[str, str] = {}
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    with FileWriter(options.link) as writer:
        for split, rows in image_files_by_split(plan).items():
            stems = []
            for row in rows:
                rel = f"JPEGImages/{row['name']}"
                writer.image(row["path"], out / rel, row["action"])
                files[row["sample_id"]] = rel
                stem = Path(row["name"]).stem
                stems.append(stem)
                writer.text(out / "Annotations" / f"{stem}.xml",
                            voc_xml(row, by_sample.get(row["sample_id"], []), one_based))
            (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(s + "\n" for s in stems),
                                                                     encoding="utf-8")
    return WriteResult(files=files, classes=classes, carries=FORMAT.carries.kept(has_boxes=True))


ONE_BASED = FormatOption(key="voc_one_based", flag="--voc-one-based",
                         help="VOC: 1-based pixel coordinates (the VOC devkit's).", default=False, is_flag=True)

FORMAT = Format(name="voc", description="Pascal VOC XML (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt)",
                detect=detect_voc, read=read_voc, write=write_voc, carries=Carries(boxes=True), options=(ONE_BASED,),
                detect_priority=20)
