"""Per-image JSON box files (AI-Hub style): one JSON per image, field names
taken from a small *mapping* instead of being hard-coded.

Every data portal names the fields differently, so a mapping says where they
are. Paths are dotted (``image.file_name``); a number indexes a list
(``image.resolution.0``). The default mapping (``schemas/jsonbox.default.mapping.json``)
reads::

    {"image": "a.jpg", "width": 640, "height": 480, "label": "street",
     "boxes": [{"x1": 10, "y1": 20, "x2": 110, "y2": 220, "label": "person"}]}

A mapping (``--json-mapping FILE`` or the name of a shipped one, e.g. ``default``)::

    {"image": "image.filename",            optional; default: the image with the JSON's stem
     "width": "image.resolution.0",        optional declared size
     "height": "image.resolution.1",
     "label": "scene",                     optional image-level class
     "boxes": "annotations",               the list of boxes ("" when the file is the list)
     "box": {"label": "class", "xyxy": "box"},
     "size": "RESOLUTION",                 optional declared size as one "1920*1080" text (or [w, h])
     "numbers_as_text": false,             coordinates and sizes may be numeric strings ("30", " 12.5")
     "normalized": false,                  coordinates are fractions of the image size
     "label_names": {"1": "car"},          optional: label values -> class names
     "schema": "my.schema.json"}           optional: validate with this JSON Schema instead

Shipped mappings (``--json-mapping NAME``): ``default``, ``aihub-vehicle-damage``
(``images.file_name``, ``annotations[].bbox`` as x, y, w, h, class in
``damage``) and ``aihub-household-waste`` (``FILE NAME``, ``RESOLUTION`` as
``"W*H"``, ``Bounding[].x1..y2`` as strings, class in ``CLASS``). Auto-detection
tries every shipped mapping on the first JSON files it finds.

``box`` takes its coordinates from ``x1/y1/x2/y2`` paths, ``x/y/w/h`` paths
(top-left corner and size), or one path holding a 4-number list: ``xyxy`` or
``xywh``. Each file is validated against a JSON Schema generated from the
mapping (the one for the default mapping is kept in ``schemas/``), so a
malformed file is an error that names the file and the field, e.g.
``a.json: boxes[1].x2: expected number, found string '12px'``.

Files are found anywhere under the source folder; a folder named like a split
(``train``, ``Validation``, ...) anywhere in a file's path sets its split. The
image is looked up beside the JSON, then in ``--images-dir``, then anywhere in
the source by name (or by the JSON's stem when the mapping names no image).

Writing: ``<split>/<name>`` with ``<split>/<stem>.json`` beside it, in the shape
of the mapping given (``--json-mapping``; the default mapping otherwise).

    >>> get_path({"image": {"resolution": [640, 480]}}, "image.resolution.1")
    480
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import FormatError, OptionError
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
    load_json,
)
from curate.formats.output import FileWriter, boxes_by_sample, class_list, image_files_by_split
from curate.imageio import IMAGE_EXTENSIONS
from curate.walk import WalkReport, walk

MAPPING_FILE = "jsonbox.{name}.mapping.json"
DEFAULT_SCHEMA_FILE = "jsonbox.default.schema.json"
MAPPING_SCHEMA_FILE = "jsonbox.mapping.schema.json"
# Shipped mappings, in the order auto-detection tries them.
SHIPPED_MAPPINGS = ("default", "aihub-vehicle-damage", "aihub-household-waste")
_MISSING = object()
NUMBER_TEXT = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
SIZE_TEXT = r"^\s*\d+\s*[*xX×,]\s*\d+\s*$"


# -- mapping -----------------------------------------------------------------

def data_text(name: str) -> str:
    """A file shipped in ``curate/data`` (copies of ``schemas/``)."""
    return resources.files("curate").joinpath("data", name).read_text(encoding="utf-8")


def load_mapping(spec: str | Path | dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """(mapping, where it came from) for a file path, a shipped name or a dict."""
    if isinstance(spec, dict):
        mapping, src = spec, "<mapping>"
    else:
        name = str(spec) if spec else "default"
        path = Path(name).expanduser()
        if path.is_file():
            try:
                mapping = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as e:
                raise OptionError(f"cannot read the JSON mapping: {e}", file=path, field="--json-mapping") from e
            src = str(path)
        else:
            try:
                mapping = json.loads(data_text(MAPPING_FILE.format(name=name)))
            except FileNotFoundError:
                raise OptionError("", field="--json-mapping", expected=f"a mapping file or a shipped name "
                                  f"({', '.join(SHIPPED_MAPPINGS)})", found=repr(name)) from None
            src = f"schemas/{MAPPING_FILE.format(name=name)}"
    _check_mapping(mapping, src)
    return mapping, src


def _check_mapping(mapping: Any, src: str) -> None:
    import jsonschema

    schema = json.loads(data_text(MAPPING_SCHEMA_FILE))
    try:
        error = first_error(jsonschema.Draft202012Validator(schema).iter_errors(mapping))
    except RecursionError:
        raise OptionError("", file=src, field="mapping", expected="a mapping nested a few levels deep",
                          found="deeper nesting") from None
    if error is not None:
        field, expected, found = describe_error(error)
        raise OptionError("", file=src, field=f"mapping {field}" if field else "mapping", expected=expected, found=found)


def split_path(path: str) -> list[str]:
    return [p for p in path.split(".") if p != ""] if path else []


def get_path(doc: Any, path: str, default: Any = _MISSING) -> Any:
    """The value at a dotted ``path`` (numbers index lists); ``default`` when absent."""
    node = doc
    for part in split_path(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            if default is _MISSING:
                raise KeyError(path)
            return default
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at a dotted ``path`` inside ``doc``, making objects (and lists, for numbers) on the way.

    >>> d: dict = {}
    >>> set_path(d, "image.resolution.1", 480); set_path(d, "image.file_name", "a.jpg"); d
    {'image': {'resolution': [None, 480], 'file_name': 'a.jpg'}}
    """
    parts = split_path(path)
    node: Any = doc
    for part, nxt in zip(parts, [*parts[1:], None], strict=True):
        key: Any = int(part) if part.isdigit() and isinstance(node, list) else part
        if nxt is None:
            if isinstance(node, list):
                node.extend([None] * (key + 1 - len(node)))
            node[key] = value
            return
        if isinstance(node, list):
            node.extend([None] * (key + 1 - len(node)))
            if node[key] is None:
                node[key] = [] if nxt.isdigit() else {}
        elif key not in node:
            node[key] = [] if nxt.isdigit() else {}
        node = node[key]


# -- schema ------------------------------------------------------------------

_NUMBER = {"type": "number"}
_NUMBER_OR_TEXT = {"type": ["number", "string"], "pattern": NUMBER_TEXT}
_LABEL = {"type": ["string", "integer"]}


def _put(schema: dict[str, Any], path: str, leaf: dict[str, Any], required: bool) -> dict[str, Any]:
    """Add ``leaf`` at ``path`` inside ``schema`` (creating objects/arrays); return the leaf node."""
    node = schema
    parts = split_path(path)
    for part in parts:
        if part.isdigit():
            idx = int(part)
            node.setdefault("type", "array")
            items = node.setdefault("prefixItems", [])
            while len(items) <= idx:
                items.append({})
            if required:
                node["minItems"] = max(node.get("minItems", 0), idx + 1)
            node = items[idx]
        else:
            node.setdefault("type", "object")
            node.setdefault("properties", {})
            if required and part not in node.setdefault("required", []):
                node["required"].append(part)
            node = node["properties"].setdefault(part, {})
    node.update(leaf)
    return node


def schema_for_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema every input file must satisfy under ``mapping``."""
    box: dict[str, Any] = {}
    spec = mapping["box"]
    number = _NUMBER_OR_TEXT if mapping.get("numbers_as_text") else _NUMBER
    _put(box, spec["label"], dict(_LABEL), True)
    four = {"type": "array", "items": dict(number), "minItems": 4, "maxItems": 4}
    if "xyxy" in spec or "xywh" in spec:
        _put(box, spec.get("xyxy") or spec["xywh"], dict(four), True)
    else:
        for k in ("x1", "y1", "x2", "y2") if "x1" in spec else ("x", "y", "w", "h"):
            _put(box, spec[k], dict(number), True)
    doc: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                           "title": "curate per-image JSON box file"}
    boxes = {"type": "array", "items": box}
    if mapping["boxes"]:
        _put(doc, mapping["boxes"], boxes, True)
    else:
        doc.update(boxes)
    side = {**number, "exclusiveMinimum": 0}
    size = {"type": ["string", "array"], "pattern": SIZE_TEXT, "prefixItems": [dict(side), dict(side)],
            "minItems": 2, "maxItems": 2}
    for key, leaf in (("image", {"type": "string", "minLength": 1}), ("width", dict(side)), ("height", dict(side)),
                      ("size", size), ("label", dict(_LABEL))):
        if mapping.get(key):
            _put(doc, mapping[key], leaf, False)
    return doc


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def format_path(parts: Sequence[Any]) -> str:
    """``["boxes", 2, "x1"]`` -> ``boxes[2].x1``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def first_error(errors: Any) -> Any:
    """The error that comes first in the document (then the most relevant there), or None."""
    import jsonschema

    errors = list(errors)
    if not errors:
        return None

    def where(e: Any) -> tuple[tuple[int, Any], ...]:
        return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path)

    first = min(where(e) for e in errors)
    return jsonschema.exceptions.best_match([e for e in errors if where(e) == first])


def describe_error(error: Any) -> tuple[str, str, str]:
    """(field, expected, found) for a jsonschema ValidationError."""
    field = format_path(list(error.absolute_path))
    value = error.instance
    kind = error.validator
    if kind == "required":
        missing = next((k for k in error.validator_value if k not in value), "?")
        return (f"{field}.{missing}" if field else missing), "present", "missing"
    if kind == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return field, str(want), f"{_json_type(value)} {json.dumps(value)[:60]}"
    if kind in ("minItems", "maxItems"):
        return field, f"{'at least' if kind == 'minItems' else 'at most'} {error.validator_value} items", f"{len(value)} items"
    if kind in ("exclusiveMinimum", "minimum"):
        return field, f"{'>' if kind == 'exclusiveMinimum' else '>='} {error.validator_value}", json.dumps(value)
    if kind == "minLength":
        return field, "a non-empty string", json.dumps(value)
    if kind == "pattern":
        want = "a size like 1920*1080" if error.validator_value == SIZE_TEXT else "a number (or a numeric string)"
        return field, want, f"string {json.dumps(value)[:60]}"
    if kind in ("oneOf", "anyOf") and isinstance(error.schema, dict) and "x-expected" in error.schema:
        found = sorted(value) if isinstance(value, dict) else json.dumps(value)[:60]
        return field, str(error.schema["x-expected"]), f"keys {found}"
    if kind == "additionalProperties":
        return field, "only the documented keys", error.message
    return field, error.message, json.dumps(value)[:60]


class FileValidator:
    """Validates decoded files against the schema for one mapping."""

    def __init__(self, mapping: dict[str, Any], mapping_src: str) -> None:
        import jsonschema

        shipped = mapping_src.startswith("schemas/jsonbox.")
        if mapping.get("schema"):
            p = Path(mapping["schema"])
            if not p.is_absolute() and not p.exists() and not shipped and mapping_src != "<mapping>":
                p = Path(mapping_src).parent / p
            try:
                schema = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as e:
                raise OptionError(f"cannot read the schema: {e}", file=p, field="mapping schema") from e
        elif shipped:  # a shipped mapping validates with its shipped schema (tests keep the two in step)
            schema = json.loads(data_text(mapping_src.split("/", 1)[1].replace(".mapping.json", ".schema.json")))
        else:
            schema = schema_for_mapping(mapping)
        self.validator = jsonschema.Draft202012Validator(schema)

    def check(self, doc: Any, file: Path) -> None:
        try:
            error = first_error(self.validator.iter_errors(doc))
        except RecursionError:  # nesting that the parser took but the validator's recursion cannot
            raise FormatError(file, None, expected="JSON nested at most a few hundred levels deep",
                              found="deeper nesting") from None
        if error is not None:
            field, expected, found = describe_error(error)
            raise FormatError(file, field or None, expected=expected, found=found)


# -- pure extraction ---------------------------------------------------------

def box_xyxy(box: dict[str, Any], spec: dict[str, Any]) -> tuple[float, float, float, float]:
    """Corners of one (validated) box object under the mapping's ``box`` spec.

    Numeric strings (``"30"``) are read as numbers; the schema lets them
    through only for a mapping with ``numbers_as_text``.

    >>> box_xyxy({"b": [10, 20, 5, 5]}, {"label": "l", "xywh": "b"})
    (10.0, 20.0, 15.0, 25.0)
    >>> box_xyxy({"x1": "30", "y1": " 4.5", "x2": "60", "y2": "9"}, {"label": "l", "x1": "x1", "y1": "y1", "x2": "x2", "y2": "y2"})
    (30.0, 4.5, 60.0, 9.0)
    """
    if "xyxy" in spec:
        x1, y1, x2, y2 = (float(v) for v in get_path(box, spec["xyxy"]))
        return x1, y1, x2, y2
    if "xywh" in spec:
        x, y, w, h = (float(v) for v in get_path(box, spec["xywh"]))
        return x, y, x + w, y + h
    if "x1" in spec:
        x1, y1, x2, y2 = (float(get_path(box, spec[k])) for k in ("x1", "y1", "x2", "y2"))
        return x1, y1, x2, y2
    x, y, w, h = (float(get_path(box, spec[k])) for k in ("x", "y", "w", "h"))
    return x, y, x + w, y + h


def parse_size(value: Any) -> tuple[float, float]:
    """A declared size: ``"1920*1080"`` (also ``x``, ``X``, ``×``, ``,``) or ``[1920, 1080]``.

    >>> parse_size("1920*1080"), parse_size([640, "480"])
    ((1920.0, 1080.0), (640.0, 480.0))
    """
    if isinstance(value, str):
        import re

        w, h = re.split(r"\s*[*xX×,]\s*", value.strip())
        return float(w), float(h)
    return float(value[0]), float(value[1])


def _label_name(value: Any, mapping: dict[str, Any], file: Path, field: str) -> str:
    names = mapping.get("label_names")
    if names is None:
        return str(value)
    if str(value) not in names:
        raise FormatError(file, field, expected=f"a label listed in the mapping's label_names {sorted(names)[:10]}",
                          found=repr(value))
    return str(names[str(value)])


def parse_document(doc: Any, mapping: dict[str, Any], file: Path
                   ) -> tuple[str | None, tuple[int, int] | None, str | None, list[Box]]:
    """(image name, declared (w, h), image label, boxes) of one validated document."""
    image = get_path(doc, mapping["image"], None) if mapping.get("image") else None
    w = get_path(doc, mapping["width"], None) if mapping.get("width") else None
    h = get_path(doc, mapping["height"], None) if mapping.get("height") else None
    size = get_path(doc, mapping["size"], None) if mapping.get("size") else None
    if size is not None and (w is None or h is None):
        w, h = parse_size(size)
    w, h = (float(w), float(h)) if w is not None and h is not None else (None, None)
    if w is not None and h is not None and not (math.isfinite(w) and math.isfinite(h)):
        raise FormatError(file, mapping.get("size") or mapping.get("width"), expected="a finite image size",
                          found=f"{w:g} x {h:g}")
    declared = (int(w), int(h)) if w and h else None
    label_value = get_path(doc, mapping["label"], None) if mapping.get("label") else None
    label = _label_name(label_value, mapping, file, mapping["label"]) if label_value is not None else None
    spec = mapping["box"]
    normalized = bool(mapping.get("normalized"))
    boxes = []
    items = get_path(doc, mapping["boxes"]) if mapping["boxes"] else doc
    for i, b in enumerate(items):
        blabel = _label_name(get_path(b, spec["label"]), mapping, file,
                             f"{format_path([*split_path(mapping['boxes']), i])}.{spec['label']}")
        x1, y1, x2, y2 = box_xyxy(b, spec)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):  # "Infinity" as text, or a sum past the float range
            raise FormatError(file, format_path([*split_path(mapping["boxes"]), i]), expected="finite coordinates",
                              found=f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]")
        boxes.append(Box(blabel, x1, y1, x2, y2, normalized=normalized))
    return image, declared, label, boxes


# -- detection and reading ---------------------------------------------------

def _json_files(root: Path, limit: int = 3, max_dirs: int = 200, max_depth: int = 5) -> list[Path]:
    """Up to ``limit`` JSON files near the top of ``root`` (breadth first, names sorted).

    AI-Hub trees keep their JSON a few levels down
    (``1.Training/2.라벨링데이터/TL_x/a.json``); the walk is bounded so
    detection stays cheap on a big folder.
    """
    found: list[Path] = []
    queue = [(root, 0)]
    seen = 0
    while queue and len(found) < limit and seen < max_dirs:
        folder, depth = queue.pop(0)
        seen += 1
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_file() and e.name.lower().endswith(".json") and e.name != "_annotations.coco.json" \
                    and not e.name.startswith("instances"):
                found.append(Path(e.path))
                if len(found) >= limit:
                    break
            elif e.is_dir(follow_symlinks=False) and depth < max_depth:
                queue.append((Path(e.path), depth + 1))
    return found


def guess_mapping(path: Path) -> str | None:
    """The first shipped mapping (``SHIPPED_MAPPINGS`` order) that the JSON files near the top of ``path`` follow."""
    import jsonschema

    root = path if path.is_dir() else path.parent
    docs = []
    for f in _json_files(root) if path.is_dir() else [path]:
        try:
            if f.stat().st_size <= 1 << 20:
                docs.append(load_json(f.read_bytes(), f))
        except (OSError, FormatError):
            continue
    for name in SHIPPED_MAPPINGS if docs else ():
        validator = jsonschema.Draft202012Validator(json.loads(data_text(f"jsonbox.{name}.schema.json")))
        try:
            if all(isinstance(d, dict) and validator.is_valid(d) for d in docs):
                return name
        except RecursionError:  # a document nested deeper than the validator can follow fits no mapping
            return None
    return None


def detect_json(path: Path) -> bool:
    """A folder whose first JSON files (up to a few levels down) follow one of the shipped mappings, or one
    such JSON file."""
    if path.is_file():
        return path.suffix.lower() == ".json" and guess_mapping(path) is not None
    return path.is_dir() and guess_mapping(path) is not None


def _split_of(rel_path: str) -> str | None:
    for part in rel_path.split("/")[:-1]:
        split = canonical_split(part)
        if split:
            return split
    return None


def _pick(cands: list[Path], near: Path) -> Path | None:
    if not cands:
        return None
    if len(cands) == 1:
        return cands[0]
    # Several images share the name: the one whose folder shares most with the JSON's.
    def shared(p: Path) -> int:
        return len(os.path.commonpath([str(p.parent), str(near)]))
    return max(cands, key=shared)


def read_json(path: Path, options: ReadOptions) -> ReadResult:
    """Read per-image JSON box files under ``path``; see the module docstring."""
    given = options.extra.get("json_mapping")
    guessed = None if given else guess_mapping(path)
    mapping, src = load_mapping(given or guessed)
    validator = FileValidator(mapping, src)
    path = path.absolute()
    root = path.parent if path.is_file() else path
    report = WalkReport()
    jsons: list[tuple[Path, str]] = []
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    roots = [root]
    images_dir = options.extra.get("images_dir")
    if images_dir:
        roots.append(Path(images_dir).absolute())
    for n, base in enumerate(roots):
        for f in walk(base, follow_links=options.follow_links, report=report):
            if f.reason is not None:
                continue
            p = Path(f.path)
            if n == 0 and p.suffix.lower() == ".json" and (path.is_dir() or p == path):
                jsons.append((p, f.rel_path))
            elif p.suffix.lower() in IMAGE_EXTENSIONS:
                by_name.setdefault(p.name, []).append(p)
                by_stem.setdefault(p.stem, []).append(p)
    entries: dict[str, Entry] = {}
    warnings: list[str] = []
    for file, rel in jsons:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise FormatError(file, None, message=f"cannot read: {e.strerror}") from e
        doc = load_json(data, file)
        validator.check(doc, file)
        image_name, declared, label, boxes = parse_document(doc, mapping, file)
        if image_name:
            direct = [b / image_name for b in (file.parent, *roots[1:], root)]
            image = next((p for p in direct if p.exists()), None) or _pick(by_name.get(Path(image_name).name, []), file.parent)
        else:
            image = _pick(by_stem.get(file.stem, []), file.parent)
        missing = image is None
        if image is None:
            image = file.parent / (image_name or file.stem + ".jpg")
        key = str(image)
        if key in entries:
            first, split = entries[key].split, _split_of(rel)
            leak = f" in another split ({first}, {split}): a split_leak in the source, kept in {first};" \
                if first is not None and split is not None and first != split else ""
            warnings.append(f"{rel}: describes {os.path.relpath(image, root)} again;{leak} its boxes are merged")
            entries[key].boxes += boxes
            continue
        entry = Entry(key, os.path.relpath(image, root).replace(os.sep, "/"), label=label, split=_split_of(rel),
                      boxes=boxes, declared_wh=declared)
        if missing:
            entry.reason, entry.detail = "missing_file", f"named by {rel}"
        entries[key] = entry
    described = {e.path for e in entries.values()}
    unlisted = sum(1 for paths in by_name.values() for p in paths if str(p) not in described and root in p.parents)
    if unlisted:
        warnings.append(f"{unlisted} image files have no JSON file and were not read")
    declared_classes = list(dict.fromkeys(str(v) for v in mapping["label_names"].values())) \
        if mapping.get("label_names") else None
    skipped = report.skipped_dirs + [f"{p}: link loop" for p in report.loops]
    if guessed and guessed != "default":
        warnings.append(f"read with the shipped mapping {guessed!r}, which its JSON files follow "
                        f"(pass --json-mapping to choose another)")
    return ReadResult(list(entries.values()), warnings=warnings, skipped=skipped, classes=declared_classes)


# -- writing -----------------------------------------------------------------

def _number(value: float, as_text: bool) -> float | int | str:
    if not as_text:
        return float(value)
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def box_document(row: dict[str, Any], boxes: list[dict[str, Any]],
                 mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """One image's file in the shape ``mapping`` reads (the default mapping when None); pure.

    >>> box_document({"name": "a.jpg", "width": 640, "height": 480, "label": None},
    ...              [{"label": "cup", "x1": 10, "y1": 20, "x2": 30, "y2": 60}],
    ...              {"image": "FILE NAME", "size": "RESOLUTION", "boxes": "Bounding", "numbers_as_text": True,
    ...               "box": {"label": "CLASS", "x1": "x1", "y1": "y1", "x2": "x2", "y2": "y2"}})
    {'FILE NAME': 'a.jpg', 'RESOLUTION': '640*480', 'Bounding': [{'x1': '10', 'y1': '20', 'x2': '30', 'y2': '60', 'CLASS': 'cup'}]}
    """
    if mapping is None:
        mapping, _ = load_mapping("default")
    w, h = int(row["width"]), int(row["height"])
    as_text = bool(mapping.get("numbers_as_text"))
    sx, sy = (w, h) if mapping.get("normalized") else (1, 1)
    names = {v: k for k, v in (mapping.get("label_names") or {}).items()}

    def label_value(name: str) -> str | int:
        code = names.get(name, name)
        return int(code) if names and code.isdigit() else code

    doc: dict[str, Any] = {}
    set_path(doc, mapping.get("image") or "image", row["name"])
    if mapping.get("width") and mapping.get("height"):
        set_path(doc, mapping["width"], _number(w, as_text) if as_text else w)
        set_path(doc, mapping["height"], _number(h, as_text) if as_text else h)
    elif mapping.get("size"):
        set_path(doc, mapping["size"], f"{w}*{h}")
    if mapping.get("label") and row.get("label") is not None and not pd.isna(row["label"]):
        set_path(doc, mapping["label"], label_value(str(row["label"])))
    spec = mapping["box"]
    items = []
    for b in boxes:
        x1, y1, x2, y2 = float(b["x1"]) / sx, float(b["y1"]) / sy, float(b["x2"]) / sx, float(b["y2"]) / sy
        item: dict[str, Any] = {}
        if "xyxy" in spec:
            set_path(item, spec["xyxy"], [_number(v, as_text) for v in (x1, y1, x2, y2)])
        elif "xywh" in spec:
            set_path(item, spec["xywh"], [_number(v, as_text) for v in (x1, y1, x2 - x1, y2 - y1)])
        else:
            keys, values = (("x1", "y1", "x2", "y2"), (x1, y1, x2, y2)) if "x1" in spec else \
                (("x", "y", "w", "h"), (x1, y1, x2 - x1, y2 - y1))
            for k, v in zip(keys, values, strict=True):
                set_path(item, spec[k], _number(v, as_text))
        set_path(item, spec["label"], label_value(str(b["label"])))
        items.append(item)
    if mapping["boxes"]:
        set_path(doc, mapping["boxes"], items)
        return doc
    return items  # type: ignore[return-value]  # a mapping whose file is the list of boxes


def write_json(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``<split>/<name>`` and ``<split>/<stem>.json``, in the shape of ``--json-mapping`` (default mapping)."""
    mapping, _ = load_mapping(options.extra.get("json_mapping"))
    if not mapping["boxes"] and (mapping.get("image") or mapping.get("width") or mapping.get("size")
                                 or mapping.get("label")):
        raise OptionError("", field="--json-mapping", expected="a mapping that names a boxes path to write with",
                          found="a file that is only the list of boxes, with image fields")
    classes = class_list(boxes["label"] if len(boxes) else [], options.extra.get("classes"))
    by_sample = boxes_by_sample(boxes)
    files: dict[str, str] = {}
    with FileWriter(options.link) as writer:
        for split, rows in image_files_by_split(plan).items():
            for row in rows:
                rel = f"{split}/{row['name']}"
                writer.image(row["path"], out / rel, row["action"])
                files[row["sample_id"]] = rel
                doc = box_document(row, by_sample.get(row["sample_id"], []), mapping)
                writer.text(out / split / (Path(row["name"]).stem + ".json"),
                            json.dumps(doc, ensure_ascii=False, indent=1))
    return WriteResult(files=files, classes=classes, carries=FORMAT.carries.kept(has_boxes=True))


MAPPING = FormatOption(key="json_mapping", flag="--json-mapping",
                       help="json format: the field mapping of the per-image JSON files, read and written (a file, "
                            "or a shipped name such as aihub-vehicle-damage).")

FORMAT = Format(name="json", description="per-image JSON box files (AI-Hub style), fields from --json-mapping",
                detect=detect_json, read=read_json, write=write_json, carries=Carries(labels=True, boxes=True),
                options=(MAPPING,), detect_priority=40)
