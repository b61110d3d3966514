"""CreateML object-detection JSON (Apple Create ML; Roboflow's ``_annotations.createml.json``).

One JSON file per folder of images: an array with one object per image,
``{"image": NAME, "annotations": [{"label": CLASS, "coordinates": {"x", "y",
"width", "height"}}]}``, where ``x, y`` is the box's **centre** and all four
are in pixels of the image (Apple, "Building an object detector data source").

Reading: a ``*.createml.json`` file given as the source, or a folder holding
such files at the top or one level down (``train/``, ``valid/``, ``test/``:
the folder's name sets the split). Image names are relative to the JSON's
folder (or ``--images-dir``); a listed image that is not there is a row
dropped as ``missing_file``. A malformed file is an error naming the file and
the field (``[3].annotations[0].coordinates.width``).

Writing (:func:`write_createml`): ``<split>/<image>`` and
``<split>/_annotations.createml.json``, boxes in the pixels of the written
(upright) image. CreateML has no image labels and no class list.

    >>> record = createml_record("a.jpg", [Box("cat", 10, 20, 30, 60)])
    >>> record["annotations"]
    [{'label': 'cat', 'coordinates': {'x': 20.0, 'y': 40.0, 'width': 20.0, 'height': 40.0}}]
    >>> [b.xyxy for b in boxes_from_record(record, "a.json", 0)]
    [(10.0, 20.0, 30.0, 60.0)]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import FormatError
from curate.formats.base import (
    Box,
    Carries,
    Entry,
    FileNames,
    Format,
    ReadOptions,
    ReadResult,
    WriteOptions,
    WriteResult,
    canonical_split,
    finite_number,
    load_json,
    relative_path,
)
from curate.formats.output import FileWriter, boxes_by_sample, detection_classes, image_files_by_split

SUFFIX = ".createml.json"
FILE_NAME = "_annotations" + SUFFIX  # what the writer names it (Roboflow's name)
COORDINATES = ("x", "y", "width", "height")


# -- pure converters ---------------------------------------------------------

def createml_record(image: str, boxes: list[Box]) -> dict[str, Any]:
    """One image's CreateML object: its name and its boxes, centre-based, in pixels."""
    annotations = []
    for b in boxes:
        cx, cy, w, h = (float(v) for v in b.cxcywh)
        annotations.append({"label": b.label, "coordinates": {"x": cx, "y": cy, "width": w, "height": h}})
    return {"image": image, "annotations": annotations}


def boxes_from_record(record: Any, file: str | Path, i: int) -> list[Box]:
    """The boxes of one image object; a :class:`~curate.errors.FormatError` naming the field otherwise."""
    where = f"[{i}]"
    annotations = record.get("annotations", [])
    if not isinstance(annotations, list):
        raise FormatError(file, f"{where}.annotations", expected="a list", found=type(annotations).__name__)
    boxes = []
    for j, a in enumerate(annotations):
        at = f"{where}.annotations[{j}]"
        if not isinstance(a, dict):
            raise FormatError(file, at, expected="an object", found=type(a).__name__)
        label = a.get("label")
        if not isinstance(label, str) or not label.strip():
            raise FormatError(file, f"{at}.label", expected="a class name", found=json.dumps(label)[:80])
        coords = a.get("coordinates")
        if not isinstance(coords, dict):
            raise FormatError(file, f"{at}.coordinates", expected="an object with x, y, width, height",
                              found=json.dumps(coords)[:80])
        values = []
        for k in COORDINATES:
            try:
                values.append(finite_number(coords[k]))
            except KeyError:
                raise FormatError(file, f"{at}.coordinates.{k}", expected="a number", found="nothing") from None
            except ValueError:
                raise FormatError(file, f"{at}.coordinates.{k}", expected="a finite number",
                                  found=json.dumps(coords[k])[:80]) from None
        if values[2] < 0 or values[3] < 0:
            raise FormatError(file, f"{at}.coordinates", expected="a width and height of 0 or more",
                              found=json.dumps(coords)[:80])
        boxes.append(Box.from_cxcywh(label.strip(), values))
    return boxes


# -- reading -----------------------------------------------------------------

def _annotation_files(root: Path) -> list[Path]:
    """``*.createml.json`` at the top of ``root`` and one level down (split folders), sorted."""
    found = []
    try:
        top = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    for e in top:
        if e.name.startswith("."):
            continue
        if e.is_file() and e.name.lower().endswith(SUFFIX):
            found.append(Path(e.path))
        elif e.is_dir():
            try:
                found += sorted(Path(s.path) for s in os.scandir(e.path)
                                if s.is_file() and s.name.lower().endswith(SUFFIX) and not s.name.startswith("."))
            except OSError:
                continue
    return found


def detect_createml(path: Path) -> bool:
    """A ``*.createml.json`` file, or a folder with one at the top or in a split folder (names only)."""
    if path.is_file():
        return path.name.lower().endswith(SUFFIX)
    return path.is_dir() and bool(_annotation_files(path))


def _read_file(json_path: Path, root: Path, options: ReadOptions, entries: dict[str, Entry],
               warnings: list[str]) -> None:
    try:
        data = json_path.read_bytes()
    except OSError as e:
        raise FormatError(json_path, None, message=f"cannot read: {e.strerror}") from e
    doc = load_json(data, json_path)
    if not isinstance(doc, list):
        raise FormatError(json_path, None, expected="a JSON array of {image, annotations} objects",
                          found=type(doc).__name__)
    images_dir = options.extra.get("images_dir")
    bases = [Path(images_dir).absolute()] if images_dir else []
    bases.append(json_path.parent)
    split = canonical_split(json_path.parent.name) if json_path.parent != root else None
    listed = FileNames()
    for i, record in enumerate(doc):
        if not isinstance(record, dict):
            raise FormatError(json_path, f"[{i}]", expected="an object", found=type(record).__name__)
        name = record.get("image")
        if not isinstance(name, str) or not name:
            raise FormatError(json_path, f"[{i}].image", expected="an image file name", found=json.dumps(name)[:80])
        boxes = boxes_from_record(record, json_path, i)
        file = next((b / name for b in bases if listed.isfile(b / name)), bases[-1] / name)
        key = str(file)
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = Entry(key, relative_path(key, root), split=split)
            if not listed.isfile(file):
                entry.reason, entry.detail = "missing_file", f"listed in {json_path.name} [{i}]"
        else:
            warnings.append(f"{json_path.name}: [{i}] repeats {name!r}; its boxes are added to the first")
        entry.boxes.extend(boxes)


def read_createml(path: Path, options: ReadOptions) -> ReadResult:
    """Read a CreateML JSON file, or a folder of them; see the module docstring."""
    path = path.absolute()
    if path.is_file():
        root, files = path.parent, [path]
    else:
        root, files = path, _annotation_files(path)
        if not files:
            raise FormatError(path, None, expected=f"<split>/{FILE_NAME} (or any *{SUFFIX})", found="none",
                              hint="point at the JSON file itself, or pick another --layout")
    entries: dict[str, Entry] = {}
    warnings: list[str] = []
    for f in files:
        _read_file(f, root, options, entries, warnings)
    return ReadResult(list(entries.values()), warnings=warnings)


# -- writing -----------------------------------------------------------------

def write_createml(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``<split>/<image>`` and ``<split>/_annotations.createml.json``."""
    classes = detection_classes(boxes, options.extra.get("classes"), "createml", len(plan))
    by_sample = boxes_by_sample(boxes)
    files: dict[str, str] = {}
    with FileWriter(options.link) as writer:
        for split, rows in image_files_by_split(plan).items():
            (out / split).mkdir(parents=True, exist_ok=True)
            records = []
            for row in rows:
                writer.image(row["path"], out / split / row["name"], row["action"])
                files[row["sample_id"]] = f"{split}/{row['name']}"
                records.append(createml_record(row["name"], [
                    Box(str(b["label"]), float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"]))
                    for b in by_sample.get(row["sample_id"], [])]))
            (out / split / FILE_NAME).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return WriteResult(files=files, classes=classes, carries=FORMAT.carries.kept(has_boxes=True))


FORMAT = Format(name="createml", description="CreateML JSON (<split>/_annotations.createml.json: image, "
                "annotations [{label, coordinates: centre x, y, width, height in pixels}])",
                detect=detect_createml, read=read_createml, write=write_createml, carries=Carries(boxes=True),
                detect_priority=35)
