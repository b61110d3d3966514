"""COCO instances JSON (boxes).

Reading accepts:

- the standard layout, ``annotations/instances_<split>.json`` with images in
  ``images/<split>/`` (Datumaro, CVAT), ``<split>2017/`` (COCO 2017) or
  ``images/``;
- Roboflow's ``<split>/_annotations.coco.json`` with the images beside it
  (``valid`` is read as ``val``);
- one JSON file given directly, images found relative to it (or ``--images-dir``).

Boxes come from ``bbox`` (``[x, y, width, height]`` in pixels); an annotation
without a ``bbox`` takes the bounds of its polygon or RLE ``segmentation``.
``iscrowd`` is kept. Category ids may be any integers (``1, 2, 4``); the class
list is the category names in id order. Roboflow's placeholder category (the
unused one every other category names as its ``supercategory``) is left out.
An annotation whose ``category_id`` or ``image_id`` is not declared is an error
naming the file and the field.

Writing: ``annotations/instances_<split>.json`` and ``images/<split>/``,
categories numbered from 1 in class-list order, image and annotation ids
unique across all splits (from 1), ``area = w * h``, ``segmentation: []``.

    >>> coco_xywh_to_xyxy([2.0, 1.0, 3.0, 1.0])
    (2.0, 1.0, 5.0, 2.0)
    >>> xyxy_to_coco_xywh((2.0, 1.0, 5.0, 2.0))
    (2.0, 1.0, 3.0, 1.0)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
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
    load_json,
    relative_path,
)
from curate.formats.output import FileWriter, boxes_by_sample, detection_classes, image_files_by_split

ROBOFLOW_NAME = "_annotations.coco.json"
_HEAD = re.compile(rb'"images"\s*:\s*\[')
_ONE_IMAGE = re.compile(rb'"images"\s*:\s*\{')


# -- pure converters ---------------------------------------------------------

def coco_xywh_to_xyxy(xywh: Sequence[float]) -> tuple[float, float, float, float]:
    """COCO ``[x, y, width, height]`` (top-left corner) -> ``(x1, y1, x2, y2)``."""
    return Box.from_xywh(None, xywh).xyxy


def xyxy_to_coco_xywh(xyxy: Sequence[float]) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` -> COCO ``[x, y, width, height]``."""
    return Box.from_xyxy(None, xyxy).xywh


def polygon_bounds_xyxy(polygons: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """Bounds of COCO polygons ``[[x0, y0, x1, y1, ...], ...]``."""
    xs = [float(v) for poly in polygons for v in poly[0::2]]
    ys = [float(v) for poly in polygons for v in poly[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def split_from_name(stem: str) -> str | None:
    """``instances_val2017`` -> ``val``; ``labels`` -> None."""
    for token in reversed(re.split(r"[_\-.\s]+", stem)):
        split = canonical_split(token.rstrip("0123456789"))
        if split:
            return split
    return None


# -- detection ---------------------------------------------------------------

def _peek_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    # COCO 2017 puts "categories" last, Datumaro first: either sign will do. A per-image file
    # whose "images" is one object (AI-Hub's vehicle-damage JSON) has categories too: not COCO.
    if _ONE_IMAGE.search(head):
        return False
    return bool(_HEAD.search(head)) or b'"categories"' in head


def _annotation_files(root: Path) -> list[tuple[Path, str | None]]:
    """(json file, split) pairs of a COCO dataset folder, in a stable order."""
    found: list[tuple[Path, str | None]] = []
    ann_dir = root / "annotations"
    if ann_dir.is_dir():
        for p in sorted(ann_dir.glob("*.json")):
            if p.name.startswith("instances") or _peek_coco(p):
                found.append((p, split_from_name(p.stem)))
    if (root / ROBOFLOW_NAME).is_file():
        found.append((root / ROBOFLOW_NAME, None))
    try:
        subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        subdirs = []
    for d in subdirs:
        p = root / d / ROBOFLOW_NAME
        if p.is_file():
            found.append((p, canonical_split(d)))
    if not found:
        jsons = sorted(root.glob("*.json"))
        if len(jsons) <= 4:  # a COCO folder holds one JSON per split; many JSONs mean per-image files
            found += [(p, split_from_name(p.stem)) for p in jsons if _peek_coco(p)]
    return found


def detect_coco(path: Path) -> bool:
    """A COCO JSON file, or a folder holding one (cheap: names and the first 64 KB)."""
    if path.is_file():
        return path.suffix.lower() == ".json" and _peek_coco(path)
    return path.is_dir() and bool(_annotation_files(path))


# -- reading -----------------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(path, None, message=f"cannot read: {e.strerror}") from e
    doc = load_json(data, path)
    if not isinstance(doc, dict):
        raise FormatError(path, None, expected="a JSON object with images, annotations, categories",
                          found=type(doc).__name__)
    for key in ("images", "categories"):
        if not isinstance(doc.get(key), list):
            raise FormatError(path, key, expected="a list", found="missing" if key not in doc else type(doc[key]).__name__)
    if not isinstance(doc.get("annotations", []), list):
        raise FormatError(path, "annotations", expected="a list", found=type(doc["annotations"]).__name__)
    return doc


def _categories(path: Path, doc: dict[str, Any], warnings: list[str]) -> dict[int, str]:
    cats: dict[int, str] = {}
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            raise FormatError(path, f"categories[{i}].id", expected="an integer",
                              found=repr(c.get("id") if isinstance(c, dict) else c))
        if not isinstance(c.get("name"), str) or not c["name"]:
            raise FormatError(path, f"categories[{i}].name", expected="a non-empty string", found=repr(c.get("name")))
        if c["id"] in cats:
            raise FormatError(path, f"categories[{i}].id", expected="unique ids", found=f"{c['id']} twice")
        cats[c["id"]] = c["name"]
    # Only ints and texts are collected: a list or object here is unhashable (reported where it is read).
    used = {a.get("category_id") for a in doc.get("annotations", [])
            if isinstance(a, dict) and type(a.get("category_id")) is int}
    supers = {c.get("supercategory") for c in doc["categories"]
              if isinstance(c, dict) and type(c.get("supercategory")) is str}
    for cid, name in list(cats.items()):
        # Roboflow adds one unused category that every real one names as supercategory.
        if cid not in used and name in supers and len(cats) > 1:
            del cats[cid]
            warnings.append(f"{path.name}: category {cid} {name!r} is an unused supercategory placeholder; left out")
    return cats


_NUMBER = (int, float)  # JSON numbers; bool is its own type, so `type(v) in _NUMBER` leaves it out


def _is_number(v: Any) -> bool:
    return type(v) in _NUMBER and math.isfinite(v)


def rle_string_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), checked.

    pycocotools decodes any text without a complaint; a garbage string gives a
    mask, and a box, of nonsense. Raises ValueError for a character outside the
    encoding, a number cut short, or a negative run.

        >>> rle_string_counts("52203")  # from the fourth run on, each is stored as a difference
        [5, 2, 2, 2, 5]
    """
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the last run is cut short")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError(f"run {len(counts)} is negative ({x})")
        counts.append(x)
    return counts


def _rle_bounds(path: Path, field: str, seg: dict[str, Any]) -> tuple[float, float, float, float] | str:
    """Bounds of an RLE ``segmentation``; a FormatError for a wrong shape, a problem text for wrong content."""
    size, counts = seg.get("size"), seg.get("counts")
    if not (type(size) is list and len(size) == 2 and all(type(v) is int and v > 0 for v in size)):
        raise FormatError(path, f"{field}.size", expected="[height, width], two positive integers",
                          found=json.dumps(size)[:80])
    h, w = size
    if type(counts) is list:
        if not all(type(v) is int and v >= 0 for v in counts):
            raise FormatError(path, f"{field}.counts", expected="run lengths (non-negative integers) or an RLE string",
                              found=json.dumps(counts)[:80])
        runs = counts
    elif type(counts) is str:
        try:
            runs = rle_string_counts(counts)
        except ValueError as e:
            return f"{field}.counts is not a valid RLE string ({e})"
    else:
        raise FormatError(path, f"{field}.counts", expected="run lengths or an RLE string", found=type(counts).__name__)
    if sum(runs) != h * w:
        return f"{field}.counts covers {sum(runs)} pixels, not the {h}x{w} = {h * w} of its size"
    # Bounds from the runs (column-major, starting with background), without pycocotools.
    ys, xs, at = [], [], 0
    for j, run in enumerate(runs):
        if j % 2 and run:
            first, last = at, at + run - 1
            xs += [first // h, last // h]
            ys += [first % h, last % h] if first // h == last // h else [0, h - 1]
        at += run
    if not xs:
        return f"{field} is an empty mask"
    return float(min(xs)), float(min(ys)), float(max(xs) + 1), float(max(ys) + 1)


def _box(path: Path, i: int, a: dict[str, Any]) -> tuple[float, float, float, float] | str:
    """An annotation's box, or the text of a problem for which it is left out (reported, the run goes on).

    A wrong shape (a bbox of three values, a polygon of text) is a FormatError.
    """
    bbox = a.get("bbox")
    if type(bbox) is list and len(bbox) == 4 and all(_is_number(v) for v in bbox):
        x, y, w, h = (float(v) for v in bbox)  # coco_xywh_to_xyxy, inlined: this runs once per box
        if w < 0 or h < 0:  # taking its corners as given would make it another box
            return f"annotations[{i}].bbox {json.dumps(bbox)} has a negative width or height"
        return x, y, x + w, y + h
    if bbox is not None:
        raise FormatError(path, f"annotations[{i}].bbox", expected="4 numbers [x, y, width, height]",
                          found=json.dumps(bbox)[:80])
    seg = a.get("segmentation")
    field = f"annotations[{i}].segmentation"
    if isinstance(seg, list) and seg:
        for j, poly in enumerate(seg):
            if not (type(poly) is list and len(poly) >= 2 and len(poly) % 2 == 0 and all(_is_number(v) for v in poly)):
                raise FormatError(path, f"{field}[{j}]", expected="a polygon: a list of x, y numbers",
                                  found=json.dumps(poly)[:80])
        return polygon_bounds_xyxy(seg)
    if isinstance(seg, dict):
        return _rle_bounds(path, field, seg)
    raise FormatError(path, f"annotations[{i}].bbox", expected="a bbox or a segmentation", found="neither")


def _image_bases(root: Path, json_path: Path, split_token: str | None, images_dir: Path | None) -> list[Path]:
    bases = [json_path.parent]
    if images_dir is not None:
        bases.insert(0, images_dir)
    if split_token:
        bases += [root / "images" / split_token, root / split_token]
    bases += [root / "images", root / "data", root]
    return list(dict.fromkeys(bases))


def _split_token(stem: str) -> str | None:
    """``instances_train2017`` -> ``train2017`` (the images folder name COCO uses)."""
    tokens = [t for t in re.split(r"[_\-.\s]+", stem) if t]
    for t in reversed(tokens):
        if canonical_split(t.rstrip("0123456789")):
            return t
    return None


def read_coco_file(path: Path, root: Path, split: str | None, options: ReadOptions,
                   entries: dict[str, Entry], warnings: list[str], classes: list[str]) -> None:
    """Add the images and boxes of one COCO JSON to ``entries`` (keyed by image path)."""
    doc = _load(path)
    cats = _categories(path, doc, warnings)
    for cat_name in cats.values():
        if cat_name not in classes:
            classes.append(cat_name)
    images_dir = options.extra.get("images_dir")
    bases = _image_bases(root, path, _split_token(path.stem) if path.name != ROBOFLOW_NAME else None,
                         Path(images_dir).absolute() if images_dir else None)
    by_id: dict[int, Entry] = {}
    chosen_base: Path | None = None
    listed = FileNames()

    def exists(p: Path) -> bool:
        return listed.isfile(p) or os.path.exists(p)
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict):
            raise FormatError(path, f"images[{i}]", expected="an object", found=type(im).__name__)
        iid, name = im.get("id"), im.get("file_name")
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise FormatError(path, f"images[{i}].id", expected="an integer", found=repr(iid))
        if iid in by_id:
            raise FormatError(path, f"images[{i}].id", expected="unique image ids", found=f"{iid} twice")
        if not isinstance(name, str) or not name:
            raise FormatError(path, f"images[{i}].file_name", expected="a file name", found=repr(name))
        if os.path.isabs(name):
            file, found = Path(name), os.path.exists(name)
        else:
            # Find the folder once and reuse it: one look-up per image, not one per candidate.
            found = chosen_base is not None and exists(chosen_base / name)
            if not found:
                chosen_base = next((b for b in bases if exists(b / name)), chosen_base)
                found = chosen_base is not None and exists(chosen_base / name)
            file = (chosen_base or bases[0]) / name
        w, h = im.get("width"), im.get("height")
        declared = (int(w), int(h)) if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0 else None
        key = str(file)
        entry = entries.get(key)
        if entry is None:
            entry = Entry(key, relative_path(key, root), split=split, declared_wh=declared)
            if not found:
                entry.reason, entry.detail = "missing_file", f"listed in {path.name} images[{i}]"
            entries[key] = entry
        elif entry.split != split:  # a leak the source already has: the same image in two splits
            warnings.append(f"{path.name}: images[{i}] {name!r} is also in the {entry.split or 'unsplit'} images "
                            f"of an earlier file: an image in two splits ({entry.split}, {split}); kept in "
                            f"{entry.split}, boxes merged")
        else:
            warnings.append(f"{path.name}: images[{i}] repeats {name!r}; its boxes are merged with the first")
        by_id[iid] = entry
    for i, a in enumerate(doc.get("annotations", [])):
        if not isinstance(a, dict):
            raise FormatError(path, f"annotations[{i}]", expected="an object", found=type(a).__name__)
        image_id, cid = a.get("image_id"), a.get("category_id")
        # An id of another JSON type ([1], {"id": 1}) would be unhashable: checked before any look-up.
        entry_for = by_id.get(image_id) if type(image_id) is int else None
        if entry_for is None:
            raise FormatError(path, f"annotations[{i}].image_id", expected="the id of an image in images",
                              found=json.dumps(image_id)[:80])
        if type(cid) is not int or cid not in cats:
            raise FormatError(path, f"annotations[{i}].category_id",
                              expected=f"one of the category ids {sorted(cats)}", found=json.dumps(cid)[:80])
        box = _box(path, i, a)
        if isinstance(box, str):
            warnings.append(f"{path.name}: {box}; the box is left out")
            continue
        x1, y1, x2, y2 = box
        score: Any = a.get("score")
        entry_for.boxes.append(Box(cats[cid], x1, y1, x2, y2, score=float(score) if _is_number(score) else None,
                                   iscrowd=bool(a.get("iscrowd", 0))))


def read_coco(path: Path, options: ReadOptions) -> ReadResult:
    """Read a COCO file or dataset folder into entries; see the module docstring."""
    path = path.absolute()
    if path.is_file():
        root, files = path.parent, [(path, split_from_name(path.stem))]
    else:
        root, files = path, _annotation_files(path)
        if not files:
            raise FormatError(path, None, expected="annotations/instances_<split>.json or <split>/_annotations.coco.json",
                              found="no COCO JSON", hint="point at the JSON file itself, or pick another --layout")
    entries: dict[str, Entry] = {}
    warnings: list[str] = []
    classes: list[str] = []
    for json_path, split in files:
        read_coco_file(json_path, root, split, options, entries, warnings, classes)
    return ReadResult(list(entries.values()), warnings=warnings, classes=classes)


# -- writing -----------------------------------------------------------------

def coco_document(rows: list[dict[str, Any]], boxes: dict[str, list[dict[str, Any]]], classes: list[str],
                  first_image_id: int, first_ann_id: int) -> dict[str, Any]:
    """One split's COCO document (pure: rows and boxes in, JSON-ready dict out)."""
    cat_id = {name: i for i, name in enumerate(classes, start=1)}
    images, annotations = [], []
    ann_id = first_ann_id
    for n, row in enumerate(rows):
        image_id = first_image_id + n
        images.append({"id": image_id, "file_name": row["name"], "width": int(row["width"]),
                       "height": int(row["height"])})
        for b in boxes.get(row["sample_id"], []):
            x, y = float(b["x1"]), float(b["y1"])  # xyxy_to_coco_xywh, inlined: this runs once per box
            w, h = float(b["x2"]) - x, float(b["y2"]) - y
            ann: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": cat_id[b["label"]],
                                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(bool(b.get("iscrowd"))),
                                   "segmentation": []}
            score = b.get("score")
            if score is not None and score is not pd.NA and score == score:  # not None, NA or NaN
                ann["score"] = float(score)
            annotations.append(ann)
            ann_id += 1
    return {
        "info": {"description": "written by curate"},
        "licenses": [],
        "categories": [{"id": cat_id[c], "name": c, "supercategory": ""} for c in classes],
        "images": images,
        "annotations": annotations,
    }


def write_coco(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``annotations/instances_<split>.json`` and ``images/<split>/``."""
    classes = detection_classes(boxes, options.extra.get("classes"), "coco", len(plan))
    by_sample = boxes_by_sample(boxes)
    files: dict[str, str] = {}
    image_id, ann_id = 1, 1
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    with FileWriter(options.link) as writer:
        for split, rows in image_files_by_split(plan).items():
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            images = os.path.join(out, "images", split, "")
            for row in rows:  # plain strings, not Path objects: this runs once per image
                writer.image(row["path"], images + row["name"], row["action"])
                files[row["sample_id"]] = f"images/{split}/{row['name']}"
            doc = coco_document(rows, by_sample, classes, image_id, ann_id)
            image_id += len(doc["images"])
            ann_id += len(doc["annotations"])
            (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc, ensure_ascii=False))
    return WriteResult(files=files, classes=classes, carries=FORMAT.carries.kept(has_boxes=True))


FORMAT = Format(name="coco", description="COCO instances JSON (annotations/instances_<split>.json, Roboflow "
                "_annotations.coco.json)", detect=detect_coco, read=read_coco, write=write_coco,
                carries=Carries(boxes=True), detect_priority=10)
