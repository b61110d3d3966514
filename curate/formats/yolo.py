"""YOLO detect: one ``.txt`` per image, ``class cx cy w h`` normalized to 0..1.

Reading accepts:

- Ultralytics: ``data.yaml`` + ``images/<split>/`` + ``labels/<split>/``;
- Roboflow: ``data.yaml`` + ``<split>/images/`` + ``<split>/labels/`` (its
  ``val: ../valid/images`` paths are not trusted: folders that exist win);
- Darknet/CVAT: ``obj.data`` + ``obj.names`` + ``train.txt`` listing images
  (``data/`` prefixes resolved against the dataset folder), labels beside images;
- loose layouts with ``obj.names`` or ``classes.txt``: ``images/<split>/`` +
  ``labels/<split>/``, or ``Images/`` + ``Annotations/``.

A label file is found the Ultralytics way (the last ``images`` folder in the
path becomes ``labels``), then ``Annotations``, then beside the image. An image
without a label file is a background image (no boxes). Split folders named
``valid``/``validation`` are read as ``val``. ``.txt`` files inside image
folders are never taken for images.

Lines are ``class cx cy w h`` (a sixth number is a score); longer lines are
Ultralytics polygons, read as their bounding box. A class id outside ``names``
is an error naming the file and the line.

Writing: ``images/<split>/``, ``labels/<split>/`` (an empty ``.txt`` for an
image without boxes, so every image is listed) and ``data.yaml`` with
``train``/``val``/``test`` paths relative to it (no ``path:`` key, so
Ultralytics and FiftyOne resolve them against the YAML's folder) and ``names``
as ``{id: name}``. Ultralytics requires a ``val`` entry: without a val split
it points at the train images, with a warning.

    >>> yolo_xywhn_to_xyxy((0.5, 0.5, 0.5, 0.5), (200, 100))
    (50.0, 25.0, 150.0, 75.0)
    >>> xyxy_to_yolo_xywhn((50, 25, 150, 75), (200, 100))
    (0.5, 0.5, 0.5, 0.5)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate.errors import FormatError
from curate.formats.base import (
    Box,
    Entry,
    FileNames,
    ReadOptions,
    ReadResult,
    WriteOptions,
    canonical_split,
    finite_number,
    relative_path,
)
from curate.formats.output import FileWriter, detection_classes, fmt_frac, image_files_by_split
from curate.walk import WalkReport, walk

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
NAMES_FILES = ("obj.names", "classes.txt", "classes.names", "coco.names")
LABEL_DIR_NAMES = ("labels", "Labels", "annotations", "Annotations")

XYXY = tuple[float, float, float, float]


# -- pure converters ---------------------------------------------------------

def yolo_xywhn_to_xyxyn(xywhn: Sequence[float]) -> XYXY:
    """Normalized center/size -> normalized corners."""
    cx, cy, w, h = (float(v) for v in xywhn)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def xyxyn_to_yolo_xywhn(xyxyn: Sequence[float]) -> XYXY:
    x1, y1, x2, y2 = (float(v) for v in xyxyn)
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def yolo_xywhn_to_xyxy(xywhn: Sequence[float], resolution_wh: tuple[int, int]) -> XYXY:
    """Normalized ``cx cy w h`` -> pixel ``x1 y1 x2 y2`` for a ``w x h`` image."""
    x1, y1, x2, y2 = yolo_xywhn_to_xyxyn(xywhn)
    w, h = resolution_wh
    return x1 * w, y1 * h, x2 * w, y2 * h


def xyxy_to_yolo_xywhn(xyxy: Sequence[float], resolution_wh: tuple[int, int]) -> XYXY:
    """Pixel ``x1 y1 x2 y2`` -> normalized ``cx cy w h`` for a ``w x h`` image."""
    w, h = resolution_wh
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return xyxyn_to_yolo_xywhn((x1 / w, y1 / h, x2 / w, y2 / h))


class LineError(ValueError):
    """A YOLO label line that does not parse: which part, expected, found."""

    def __init__(self, part: str, expected: str, found: str) -> None:
        super().__init__(f"{part}: expected {expected}, found {found}")
        self.part, self.expected, self.found = part, expected, found


def parse_yolo_line(line: str, names: dict[int, str]) -> tuple[str, XYXY, float | None]:
    """``"2 0.5 0.5 0.2 0.1"`` -> (label, normalized xyxy, score). Raises LineError.

    >>> parse_yolo_line("0 0.5 0.5 0.2 0.4", {0: "cat"})
    ('cat', (0.4, 0.3, 0.6, 0.7), None)
    """
    cells = line.split()
    try:
        cid = int(cells[0])
    except ValueError:
        raise LineError("class id", "an integer", repr(cells[0])) from None
    if cid not in names:
        raise LineError("class id", f"one of 0..{max(names)} ({len(names)} names)" if names else "a names list",
                        str(cid))
    try:
        values = [finite_number(c) for c in cells[1:]]
    except ValueError:
        raise LineError("coordinates", "finite numbers", " ".join(cells[1:])) from None
    if len(values) in (4, 5):
        x1, y1, x2, y2 = yolo_xywhn_to_xyxyn(values[:4])
        score = values[4] if len(values) == 5 else None
        return names[cid], (x1, y1, x2, y2), score
    if len(values) >= 6 and len(values) % 2 == 0:  # Ultralytics segment: x y pairs
        xs, ys = values[0::2], values[1::2]
        return names[cid], (min(xs), min(ys), max(xs), max(ys)), None
    raise LineError("values", "class cx cy w h (or a polygon of x y pairs)", f"{len(cells)} values")


def yolo_line(class_id: int, xyxy: Sequence[float], resolution_wh: tuple[int, int]) -> str:
    """One label line for a pixel box, clamped to 0..1.

    >>> yolo_line(1, (50, 25, 150, 75), (200, 100))
    '1 0.5 0.5 0.5 0.5'
    """
    w, h = resolution_wh
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = min(max(x1 / w, 0.0), 1.0), min(max(x2 / w, 0.0), 1.0)
    y1, y2 = min(max(y1 / h, 0.0), 1.0), min(max(y2 / h, 0.0), 1.0)
    cx, cy, bw, bh = xyxyn_to_yolo_xywhn((x1, y1, x2, y2))
    return " ".join([str(class_id), *(fmt_frac(v) for v in (cx, cy, bw, bh))])


def yolo_lines(class_ids: Sequence[int], xyxy: Any, resolution_wh: Any) -> list[str]:
    """:func:`yolo_line` for many boxes at once (the same text), as numpy array work.

    ``xyxy`` is (n, 4) pixel boxes and ``resolution_wh`` (n, 2) the size of each
    box's image.

    >>> yolo_lines([1, 0], [(50, 25, 150, 75), (0, 0, 300, 50)], [(200, 100), (200, 100)])
    ['1 0.5 0.5 0.5 0.5', '0 0.5 0.25 1 0.5']
    """
    wh = np.asarray(resolution_wh, dtype=np.float64).reshape(-1, 2)
    xyxyn = np.clip(np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) / np.tile(wh, 2), 0.0, 1.0)
    x1, y1, x2, y2 = xyxyn.T
    xywhn = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1).tolist()
    return [f"{int(c)} {fmt_frac(cx)} {fmt_frac(cy)} {fmt_frac(bw)} {fmt_frac(bh)}"
            for c, (cx, cy, bw, bh) in zip(class_ids, xywhn, strict=True)]


def _class_name(value: Any, file: Path, field: str) -> str:
    """One class name of ``names``: a text or a number. YAML reads ``null``, ``~`` and an empty entry as None
    and ``yes``/``no`` as booleans: taken as they are, they became the classes "None" and "True"."""
    if isinstance(value, str) and value.strip():
        return value
    if type(value) in (int, float):
        return str(value)
    if value is None or isinstance(value, bool) or isinstance(value, str):
        shown = "an empty name" if isinstance(value, str) else f"YAML {str(value).lower() if value is not None else 'null'}"
        raise FormatError(file, field, expected="a class name (quote names such as 'null', 'yes' or 'no')",
                          found=shown)
    raise FormatError(file, field, expected="a class name (a text)", found=f"a {type(value).__name__}")


def parse_names(value: Any, file: Path) -> dict[int, str]:
    """``names`` from data.yaml (a list, or a dict keyed by id) -> {id: name}.

        >>> parse_names(["cat", 7], Path("data.yaml"))
        {0: 'cat', 1: '7'}
        >>> parse_names(["cat", None], Path("data.yaml"))
        Traceback (most recent call last):
        ...
        curate.errors.FormatError: data.yaml: names[1]: expected a class name (quote names such as 'null', 'yes' or 'no'), found YAML null
    """
    if isinstance(value, list):
        return {i: _class_name(n, file, f"names[{i}]") for i, n in enumerate(value)}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)):
                raise FormatError(file, "names", expected="integer class ids as keys", found=f"a {type(k).__name__}")
            try:
                cid = int(k)
            except ValueError:
                raise FormatError(file, f"names.{k}", expected="an integer class id", found=repr(k)) from None
            out[cid] = _class_name(v, file, f"names.{k}")
        return out
    raise FormatError(file, "names", expected="a list of class names or {id: name}",
                      found="missing" if value is None else type(value).__name__)


# -- layout ------------------------------------------------------------------

def _dirs(root: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _find_yaml(root: Path) -> Path | None:
    for n in YAML_NAMES:
        if (root / n).is_file():
            return root / n
    for p in sorted(root.glob("*.y*ml")):
        try:
            head = p.read_bytes()[:8192]
        except OSError:
            continue
        if b"names" in head:
            return p
    return None


def detect_yolo(path: Path) -> bool:
    """A data.yaml / obj.names / obj.data, or ``images/`` next to ``labels/`` (names only)."""
    if path.is_file():
        return path.suffix.lower() in (".yaml", ".yml") and path.name in YAML_NAMES
    if not path.is_dir():
        return False
    if _find_yaml(path) or (path / "obj.data").is_file() or any((path / n).is_file() for n in NAMES_FILES):
        return True
    top = _dirs(path)
    if "images" in top and "labels" in top:
        return True
    return any(canonical_split(d) and {"images", "labels"} <= set(_dirs(path / d)) for d in top)


MAX_YAML_BYTES = 4 << 20  # a data.yaml with 100k class names is about 2 MB
MAX_YAML_NODES = 1_000_000  # values after aliases are expanded; a billion-laughs file has 10**9


def yaml_expanded_size(doc: Any, limit: int) -> int:
    r"""How many values ``doc`` holds with every alias expanded, counted up to ``limit`` (then ``limit + 1``).

    ``yaml.safe_load`` shares an aliased node instead of copying it, so a
    "billion laughs" file loads in milliseconds, and the gigabytes appear later
    when something walks or prints it. This walks it the way they would, and
    stops at the budget.

        >>> import yaml
        >>> bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        ...     f"{k}: &{k} [{', '.join(['*' + p] * 10)}]\n" for p, k in zip("abcdefgh", "bcdefghi"))
        >>> yaml_expanded_size(yaml.safe_load(bomb), 10**6)
        1000001
    """
    count, stack = 0, [doc]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return limit + 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise FormatError(path, None, expected=f"a data.yaml of at most {MAX_YAML_BYTES >> 20} MB",
                              found=f"{size} bytes")
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, None, message=f"cannot read: {e}") from e
    except RecursionError:
        raise FormatError(path, None, expected="YAML nested at most a few hundred levels deep",
                          found="deeper nesting") from None
    except yaml.YAMLError as e:
        raise FormatError(path, None, expected="valid YAML", found=str(e).splitlines()[0]) from e
    if yaml_expanded_size(doc, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise FormatError(path, None, expected=f"at most {MAX_YAML_NODES:,} values with its aliases expanded",
                          found="more (an alias bomb?)")
    if not isinstance(doc, dict):
        raise FormatError(path, None, expected="a YAML mapping with names and train/val", found=type(doc).__name__)
    return doc


def _read_names_file(path: Path) -> dict[int, str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    return {i: n for i, n in enumerate(ln for ln in lines if ln)}


def _resolve_data_path(value: str, bases: list[Path]) -> Path | None:
    for base in bases:
        p = Path(os.path.normpath(base / value)) if not os.path.isabs(value) else Path(value)
        if p.exists():
            return p
        if value.startswith("data/"):  # Darknet/CVAT: "data/" is the dataset folder itself
            p = base / value[len("data/"):]
            if p.exists():
                return p
    return None


def _image_sources(root: Path, yaml_doc: dict[str, Any] | None, yaml_path: Path | None) -> list[tuple[str | None, Path]]:
    """(split, folder or list file) pairs where this dataset keeps its images."""
    found: list[tuple[str | None, Path]] = []
    seen: set[Path] = set()

    def add(split: str | None, p: Path) -> None:
        if p not in seen:
            seen.add(p)
            found.append((split, p))

    top = _dirs(root)
    for d in top:  # Ultralytics images/<split>; Roboflow <split>/images
        if d.lower() == "images":
            for s in _dirs(root / d):
                if canonical_split(s):
                    add(canonical_split(s), root / d / s)
        elif canonical_split(d) and "images" in _dirs(root / d):
            add(canonical_split(d), root / d / "images")
    if yaml_doc is not None and yaml_path is not None:
        base = yaml_doc.get("path")
        bases = [yaml_path.parent, root]
        if isinstance(base, str) and base:
            bases.insert(0, (yaml_path.parent / base) if not os.path.isabs(base) else Path(base))
        for key, value in yaml_doc.items():
            split = canonical_split(str(key))
            if split is None or value is None:
                continue
            for v in value if isinstance(value, list) else [value]:
                p = _resolve_data_path(str(v), bases)
                if p is not None and not any(p == q or p in q.parents or q in p.parents for _, q in found):
                    add(split, p)
    obj_data = root / "obj.data"
    if obj_data.is_file():  # Darknet: "train = data/train.txt"
        for line in obj_data.read_text(encoding="utf-8-sig").splitlines():
            key, _, value = (t.strip() for t in line.partition("="))
            split = canonical_split(key)
            p = _resolve_data_path(value, [root]) if split and value else None
            if p is not None:
                add(split, p)
    if not found:
        for d in top:
            if d.lower() == "images" or d == "obj_train_data":
                add(None, root / d)
    return found


def _list_file_images(list_file: Path, root: Path) -> list[Path]:
    out = []
    for line in list_file.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = _resolve_data_path(line, [list_file.parent, root])
        if p is None:
            p = root / (line[len("data/"):] if line.startswith("data/") else line)
        out.append(p)
    return out


def label_path_for(image: Path | str, files: FileNames | None = None) -> Path | None:
    """The label file of ``image``, if one exists (Ultralytics rule first).

    ``files`` answers "is there such a file" from folder listings (one per
    folder rather than a ``stat`` per image) when a reader asks for many images.
    """
    isfile = files.isfile if files is not None else os.path.isfile
    text = os.fspath(image)
    stem = os.path.splitext(text)[0]
    parts = stem.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):  # string work: this runs once per image
        if parts[i].lower() == "images":
            for lab in LABEL_DIR_NAMES:
                cand = os.sep.join([*parts[:i], lab, *parts[i + 1:]]) + ".txt"
                if isfile(cand):
                    return Path(cand)
            break
    side = stem + ".txt"
    return Path(side) if isfile(side) else None


def _iter_images(root: Path, source: Path, options: ReadOptions, report: WalkReport
                 ) -> Iterator[tuple[Path | str, str | None, str | None]]:
    """(image path, pre-decided reason, detail) under one image source."""
    if source.is_file():
        for p in _list_file_images(source, root):
            yield p, (None if p.exists() else "missing_file"), (None if p.exists() else f"listed in {source.name}")
        return
    for f in walk(source, follow_links=options.follow_links, report=report):
        if f.rel_path.lower().endswith(".txt"):
            continue  # label files beside images (Darknet), lists, READMEs
        yield f.path, f.reason, f.detail


def read_yolo(path: Path, options: ReadOptions) -> ReadResult:
    """Read a YOLO dataset folder (or its data.yaml); see the module docstring."""
    path = path.absolute()
    root = path.parent if path.is_file() else path
    yaml_path = path if path.is_file() else _find_yaml(root)
    yaml_doc = _load_yaml(yaml_path) if yaml_path else None
    names_file = next((root / n for n in NAMES_FILES if (root / n).is_file()), None)
    if yaml_doc is not None and "names" in yaml_doc:
        assert yaml_path is not None  # set together with yaml_doc
        names = parse_names(yaml_doc["names"], yaml_path)
        names_src = yaml_path.name
    elif names_file is not None:
        names, names_src = _read_names_file(names_file), names_file.name
    else:
        raise FormatError(root, "names", expected="data.yaml with names, obj.names or classes.txt",
                          found="no class list", hint="YOLO class ids mean nothing without one")
    sources, outside = _confined(_image_sources(root, yaml_doc, yaml_path), root, options)
    if not sources:
        if outside:  # data.yaml or obj.data names only folders elsewhere: never walked (curate.paths)
            raise FormatError(root, "images", expected="image folders or lists inside the source", found=outside[0],
                              hint="pass --images-dir with that folder, or --follow-links, to read it")
        raise FormatError(root, "images", expected="images/<split>/, <split>/images/ or a list file in data.yaml",
                          found=f"folders {_dirs(root)}")
    report = WalkReport()
    entries: dict[str, Entry] = {}
    warnings: list[str] = []
    files = FileNames()
    used_labels: set[str] = set()
    for split, source in sources:
        for image, reason, detail in _iter_images(root, source, options, report):
            key = os.fspath(image)
            if key in entries:
                first = entries[key].split
                if first is not None and split is not None and first != split:  # a leak the source already has
                    warnings.append(f"split_leak: {relative_path(key, root)} is listed in two splits ({first}, "
                                    f"{split}); kept in {first}")
                continue
            entry = Entry(key, relative_path(key, root), split=split, reason=reason, detail=detail)
            entries[key] = entry
            if reason is not None:
                continue
            label_file = label_path_for(key, files)
            if label_file is not None:
                used_labels.add(os.fspath(label_file))
                entry.boxes = _read_label_file(label_file, names, names_src)
    for split, orphan in _label_files(sources, options):
        if orphan not in used_labels:  # its boxes describe an image that is not there: a row, as VOC gives
            rel = relative_path(orphan, root)
            entries[orphan] = Entry(orphan, rel, split=split, reason="missing_file",
                                        detail=f"the label file {rel} has no image")
    skipped = outside + report.skipped_dirs + [f"{p}: link loop" for p in report.loops]
    warnings += [f"outside_source: {o}; not read (pass --images-dir with it, or --follow-links)" for o in outside]
    classes = [names[i] for i in sorted(names)]
    return ReadResult(list(entries.values()), warnings=warnings, skipped=skipped, classes=classes)


def _confined(sources: list[tuple[str | None, Path]], root: Path, options: ReadOptions
              ) -> tuple[list[tuple[str | None, Path]], list[str]]:
    """(sources inside the dataset folder or --images-dir, what was left out): a ``train``/``val``/``test``
    of data.yaml or obj.data that names a folder or list elsewhere (``../other``, ``/etc``) is neither
    walked nor read, as a link to a folder outside the source is not (issue 13; --follow-links allows it).
    """
    from curate.paths import inside

    if options.follow_links:
        return sources, []
    images_dir = options.extra.get("images_dir")
    allowed = [root, *([Path(images_dir)] if images_dir else [])]
    kept, outside = [], []
    for split, source in sources:
        if any(inside(source, a) for a in allowed):
            kept.append((split, source))
        else:
            outside.append(f"{split or 'images'}: {source} is outside the source")
    return kept, outside


def _label_files(sources: list[tuple[str | None, Path]], options: ReadOptions) -> Iterator[tuple[str | None, str]]:
    """(split, label file) of every ``.txt`` in the label folders that pair with the image folders
    (``images/train`` -> ``labels/train``), to find label files whose image is missing."""
    seen: set[str] = set()
    for split, source in sources:
        if not source.is_dir():
            continue
        parts = list(source.parts)
        at = max((i for i, p in enumerate(parts) if p.lower() == "images"), default=None)
        if at is None:
            continue
        for name in LABEL_DIR_NAMES:
            folder = Path(*parts[:at], name, *parts[at + 1:])
            if not folder.is_dir() or os.fspath(folder) in seen:
                continue
            seen.add(os.fspath(folder))
            for f in walk(folder, follow_links=options.follow_links):
                if f.reason is None and f.rel_path.lower().endswith(".txt") and \
                        os.path.basename(f.rel_path).lower() not in ("classes.txt", "readme.txt"):
                    yield split, os.fspath(f.path)


def _read_label_file(path: Path, names: dict[int, str], names_src: str) -> list[Box]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, None, message=f"cannot read the label file: {e}") from e
    boxes = []
    for n, line in enumerate(text.splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) == 5 and cells[0].isdigit():  # the common "class cx cy w h": no call per line
            try:
                label, cx, cy, w, h = names[int(cells[0])], *map(float, cells[1:])
            except (KeyError, ValueError):
                pass  # parse_yolo_line below says what is wrong
            else:
                if math.isfinite(cx + cy + w + h):  # else (inf, nan, 1e999) parse_yolo_line names it
                    boxes.append(Box(label, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, normalized=True))
                    continue

                boxes.append(Box(label, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, normalized=True))
                continue
        try:
            label, (x1, y1, x2, y2), score = parse_yolo_line(line, names)
        except LineError as e:
            expected = e.expected + (f" in {names_src}" if e.part == "class id" else "")
            raise FormatError(path, f"line {n}: {e.part}", expected=expected, found=e.found) from None
        boxes.append(Box(label, x1, y1, x2, y2, normalized=True, score=score))
    return boxes


# -- writing -----------------------------------------------------------------

def data_yaml(splits: list[str], classes: list[str]) -> tuple[str, list[str]]:
    """The text of data.yaml for these splits and classes, and any warnings."""
    import yaml

    warnings = []
    doc: dict[str, Any] = {s: f"images/{s}" for s in ("train", "val", "test") if s in splits}
    if "val" not in doc:
        fallback = "train" if "train" in doc else splits[0] if splits else "train"
        doc["val"] = f"images/{fallback}"
        warnings.append(f"no val split: data.yaml val points at images/{fallback} (no exported row has split val: "
                        "`curate split` assigns one in a workspace; a converted dataset keeps its source's splits)")
    if "train" not in doc:
        doc["train"] = doc["val"]
    doc = {k: doc[k] for k in ("train", "val", "test") if k in doc}
    doc["nc"] = len(classes)
    doc["names"] = dict(enumerate(classes))
    text = "# written by curate; paths are relative to this file\n" + yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True)
    return text, warnings


def label_texts(plan: pd.DataFrame, boxes: pd.DataFrame, ids: dict[str, int]) -> dict[str, str]:
    """The label file text of every plan row that has boxes, by sample_id (box order kept)."""
    if not len(boxes):
        return {}
    row_of = pd.Index(plan["sample_id"]).get_indexer(boxes["sample_id"])
    mine = row_of >= 0
    wh = plan[["width", "height"]].to_numpy(dtype=np.float64)[row_of[mine]]
    sub = boxes[mine]
    lines = yolo_lines(sub["label"].astype(str).map(ids).tolist(), sub[["x1", "y1", "x2", "y2"]].to_numpy(), wh)
    out: dict[str, list[str]] = {}
    for sid, line in zip(sub["sample_id"].tolist(), lines, strict=True):
        out.setdefault(sid, []).append(line)
    return {sid: "\n".join(ls) + "\n" for sid, ls in out.items()}


def write_yolo(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> dict[str, Any]:
    """Write ``images/<split>/``, ``labels/<split>/`` and ``data.yaml``."""
    classes = detection_classes(boxes, options.extra.get("classes"), "yolo", len(plan))
    texts = label_texts(plan, boxes, {c: i for i, c in enumerate(classes)})
    files: dict[str, str] = {}
    groups = image_files_by_split(plan)
    with FileWriter(options.link) as writer:
        for split, rows in groups.items():
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            images, labels = os.path.join(out, "images", split, ""), os.path.join(out, "labels", split, "")
            for row in rows:  # plain strings, not Path objects: this runs once per image
                name, sid = row["name"], row["sample_id"]
                writer.image(row["path"], images + name, row["action"])
                files[sid] = f"images/{split}/{name}"
                writer.text(labels + os.path.splitext(name)[0] + ".txt", texts.get(sid, ""))
    text, warnings = data_yaml(list(groups), classes)
    (out / "data.yaml").write_text(text, encoding="utf-8")
    return {"files": files, "classes": classes, "warnings": warnings,
            "carries": {"labels": False, "boxes": True, "split": True}}
