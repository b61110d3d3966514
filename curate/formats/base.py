"""What every format module provides, and the records readers produce.

A *reader* turns a dataset on disk into :class:`Entry` records (one per file,
with label, split and boxes); ingest probes the files and turns entries into
manifest and annotation rows. A *writer* turns kept rows into a dataset on
disk (see ``curate.stages.export``).

Formats are registered explicitly in ``curate.formats.REGISTRY``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# Split names live a floor below (curate.units: ratios and --split options read them too); kept importable here.
from curate.units import SPLIT_ALIASES as SPLIT_ALIASES
from curate.units import canonical_split as canonical_split


@dataclass
class Box:
    """One box. ``normalized`` boxes are fractions of the displayed image size
    (YOLO); ingest turns them into pixels once the image has been probed."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    normalized: bool = False
    score: float | None = None
    iscrowd: bool = False


@dataclass
class Entry:
    """One file as a reader sees it."""

    path: str  # absolute path as seen
    rel_path: str  # relative to the source root
    label: str | None = None
    split: str | None = None
    reason: str | None = None  # pre-decided drop (hidden, missing_file, ...)
    detail: str | None = None
    boxes: list[Box] = field(default_factory=list)
    # Size the annotation file states, if any; boxes are checked against the
    # probed size and a mismatch is reported.
    declared_wh: tuple[int, int] | None = None


@dataclass
class ReadOptions:
    label: str | None = None  # single label for a flat folder
    follow_links: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific (e.g. JSON field mapping)


@dataclass
class ReadResult:
    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # folders passed over, for the run record
    classes: list[str] | None = None  # declared class list, when the format has one
    # Every entry came from walking the source (curate.walk), whose link rules already confine it; other
    # readers take names from files, and ingest confines those (curate.paths.confine).
    walked: bool = False


@dataclass
class WriteOptions:
    link: str = "copy"  # copy | hardlink | symlink
    default_split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    """A registered format. ``detect`` must be cheap (look at names, not pixels)."""

    name: str
    description: str
    detect: Callable[[Path], bool] | None
    read: Callable[[Path, ReadOptions], ReadResult] | None
    write: Callable[[pd.DataFrame, pd.DataFrame, Path, WriteOptions], dict[str, Any]] | None = None
    # Readers used for --layout but not tried by auto-detection unless listed.
    detect_priority: int = 100


def relative_path(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators (a prefix cut when
    ``path`` lies under ``root``, as it does for almost every file a reader
    finds; :func:`os.path.relpath` otherwise).

    >>> relative_path("/data/ds/images/train/a.jpg", "/data/ds")
    'images/train/a.jpg'
    """
    text, base = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    rel = text[len(base):] if text.startswith(base) and ".." not in text else os.path.relpath(text, root)
    return rel.replace(os.sep, "/")


class FileNames:
    """Whether a file exists, answered from one listing per folder.

    A reader that asks about every image (its label file, its image file)
    lists each folder once instead of calling ``stat`` per file. A name not in
    the listing is checked on disk, so case-insensitive file systems answer as
    :func:`os.path.isfile` does.
    """

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def isfile(self, path: str | Path) -> bool:
        folder, name = os.path.split(os.fspath(path))
        names = self._names.get(folder)
        if names is None:
            try:
                with os.scandir(folder or ".") as it:
                    names = frozenset(e.name for e in it if e.is_file())
            except OSError:
                names = frozenset()
            self._names[folder] = names
        return name in names or (bool(names) and os.path.isfile(path))


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- hostile input -------------------------------------------------------------

# Cheap sign that a JSON text may hold a number no float can hold (`Infinity`, `NaN`, `1e999`, 400 digits):
# only then is it parsed again with the checking hooks below, so a clean 200 MB file keeps the C parser's speed.
_SUSPECT_NUMBER = re.compile(rb"Infinity|NaN|[0-9][eE]\+?0*[0-9]{3}|[0-9]{300}")


class _BadNumber(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _reject_constant(text: str) -> float:
    raise _BadNumber(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(text)
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 300:  # float() of it would overflow; no size, id or coordinate is that long
        raise _BadNumber(text[:12] + "...")
    return int(text)


def load_json(data: bytes, file: str | Path, field: str | None = None) -> Any:
    """A JSON document, or a :class:`~curate.errors.FormatError` naming ``file``.

    Refused, as not usable JSON: invalid text, ``Infinity``/``NaN`` and numbers
    no float can hold (``1e999``; curate would turn them into a box of
    infinite size), and nesting deeper than Python's recursion limit.

        >>> load_json(b'{"w": 1e999}', "a.json")
        Traceback (most recent call last):
        ...
        curate.errors.FormatError: a.json: expected finite numbers (JSON has no Infinity or NaN), found 1e999 at line 1 column 7
    """
    from curate.errors import FormatError

    try:
        if _SUSPECT_NUMBER.search(data):
            return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float,
                              parse_int=_bounded_int)
        return json.loads(data)
    except _BadNumber as e:
        at = data.find(e.text.rstrip(".").encode())
        line, col = data.count(b"\n", 0, at) + 1, at - data.rfind(b"\n", 0, at)
        where = "" if at < 0 else f" at line {line} column {col}"
        raise FormatError(file, field, expected="finite numbers (JSON has no Infinity or NaN)",
                          found=f"{e.text}{where}") from None
    except RecursionError:
        raise FormatError(file, field, expected="JSON nested at most a few hundred levels deep",
                          found="deeper nesting") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise FormatError(file, field, expected="valid JSON", found=str(e)) from None


def finite_number(value: Any) -> float:
    """``value`` (a number, or a numeric text) as a finite float; ValueError otherwise (``inf``, ``nan``, bool).

        >>> finite_number("4.5"), finite_number(3)
        (4.5, 3.0)
        >>> finite_number("1e999")
        Traceback (most recent call last):
        ...
        ValueError: not a finite number: '1e999'
    """
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number
