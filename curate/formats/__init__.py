"""The format registry. Every format is imported here by name, explicitly.

Each format module declares its :class:`~curate.formats.base.Format` (``FORMAT``): its reader, writer, what it
carries and its own options. The CLI's ``--layout`` / ``--format`` / ``--from`` / ``--to`` choices and the
format options of ``curate export`` and ``curate convert`` come from :data:`REGISTRY`, auto-detection tries
formats in ``detect_priority`` order, and the round-trip and malformed-input tests run on every format
registered here. A new format is one module and one ``register`` line.

    >>> "folder" in REGISTRY and "csv" in REGISTRY
    True
    >>> writable_formats()
    ['coco', 'voc', 'yolo', 'json', 'csv', 'folder', 'yolo-cls', 'createml']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.errors import OptionError, SourceError
from curate.formats import coco, createml, csvlist, folder, jsonbox, voc, yolo, yolo_cls
from curate.formats.base import Format, FormatOption

REGISTRY: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if fmt.name in REGISTRY:
        raise ValueError(f"format {fmt.name!r} registered twice")
    flags = {o.flag: o for f in REGISTRY.values() for o in f.options}
    for o in fmt.options:  # two formats may share an option only when they mean the same by it
        if o.flag in flags and flags[o.flag] != o:
            raise ValueError(f"format {fmt.name!r} declares {o.flag} unlike another format does")
    REGISTRY[fmt.name] = fmt
    return fmt


# Dataset formats with their own annotation files come first: their folders
# also look like class folders to `folder`.
register(coco.FORMAT)
register(voc.FORMAT)
register(yolo.FORMAT)
register(jsonbox.FORMAT)
register(csvlist.FORMAT)
register(folder.FORMAT)
register(yolo_cls.FORMAT)
register(folder.FLAT)
register(createml.FORMAT)


def readable_formats() -> list[str]:
    return [name for name, f in REGISTRY.items() if f.read is not None]


def writable_formats() -> list[str]:
    return [name for name, f in REGISTRY.items() if f.write is not None]


def format_options(side: str) -> list[FormatOption]:
    """Every option the registered readers (``side="read"``) or writers (``"write"``) declare, once each,
    in registry order: what ``curate convert`` (both sides) and ``curate export`` (writers) offer."""
    sides = ("read", "write") if side == "both" else (side,)
    seen: dict[str, FormatOption] = {}
    for fmt in REGISTRY.values():
        for o in fmt.options:
            if any(getattr(o, s) and getattr(fmt, s) is not None for s in sides):
                seen.setdefault(o.flag, o)
    return list(seen.values())


def check_format_options(values: dict[str, Any], **side_format: str | None) -> None:
    """Refuse a format option in ``values`` (``{key: value}``, as the CLI parsed them) set away from its
    default when none of the formats that will use it declares it: ``read=NAME`` and/or ``write=NAME``.

        >>> check_format_options({"voc_one_based": True, "split_dirs": True}, write="voc")
        >>> check_format_options({"voc_one_based": True}, read="coco", write="yolo")
        Traceback (most recent call last):
        ...
        curate.errors.OptionError: --voc-one-based: expected an option of the formats used (coco, yolo), found an option of voc only
    """
    used = [(side, REGISTRY[name]) for side, name in side_format.items() if name in REGISTRY]
    for key, value in values.items():
        if any((o := f.option(key)) is not None and getattr(o, side) for side, f in used):
            continue
        declared = [f for f in REGISTRY.values() if f.option(key) is not None]
        if not declared:
            raise OptionError("", field=key, expected="an option a registered format declares", found=repr(key))
        option = declared[0].option(key)
        if option is not None and value != option.default:
            names = ", ".join(dict.fromkeys(n for n in side_format.values() if n))
            raise OptionError("", field=option.flag, expected=f"an option of the formats used ({names})",
                              found=f"an option of {', '.join(f.name for f in declared)} only")


def options_for(name: str, side: str, values: dict[str, Any]) -> dict[str, Any]:
    """The options format ``name``'s reader (``side="read"``) or writer (``"write"``) takes: its declared
    defaults, updated from ``values``; other formats' options are left out.

        >>> options_for("voc", "write", {"voc_one_based": True, "json_mapping": None})
        {'voc_one_based': True}
        >>> options_for("folder", "write", {})
        {'split_dirs': True}
    """
    fmt = REGISTRY[name]
    return {k: values.get(k, default) for k, default in fmt.defaults(side).items()}


def detect(path: Path) -> Format:
    """The first registered format (by priority) whose ``detect`` accepts ``path``."""
    for fmt in sorted(REGISTRY.values(), key=lambda f: f.detect_priority):
        if fmt.detect is not None and fmt.read is not None and fmt.detect(path):
            return fmt
    raise SourceError("", file=path, expected="a folder, or a CSV/TXT list, or a dataset curate can read",
                      found="nothing it recognises", hint="force a layout with --layout")
