"""Folder layouts: ``class/image`` (Kaggle style), ``split/class/image``, and flat.

Reading:

- ``class/image``: the label is the first folder below the source root; files
  in deeper folders take the label of their top folder.
- ``split/class/image``: when a top folder's name is a split name or an alias
  (``train``, ``val``/``valid``/``validation``, ``test``), it sets ``split`` and
  the next folder is the label.
- flat: no labels (or the one ``--label``), every file under the root.

Files directly in the root of a class layout get no label.

Writing (:func:`write_folder`): ``<split>/<class>/<image>``, or ``<class>/<image>``
without split folders; nothing but images, so torchvision ``ImageFolder`` and
Keras ``image_dataset_from_directory`` read each split folder as it is.

    >>> detect_layout_kind(Path("."))  # doctest: +SKIP
    'folder'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import ExportError
from curate.formats.base import Entry, ReadOptions, ReadResult, WriteOptions, canonical_split
from curate.formats.output import FileWriter, check_folder_name, class_list
from curate.walk import WalkReport, walk


def _top_dirs(root: Path) -> list[str]:
    try:
        return sorted(
            e.name for e in os.scandir(root)
            if e.is_dir() and not e.name.startswith(".") and e.name.lower() != "__macosx"
        )
    except OSError:
        return []


def detect_folder(root: Path) -> bool:
    """A folder with at least one (non-hidden) sub-folder."""
    return root.is_dir() and bool(_top_dirs(root))


def detect_flat(root: Path) -> bool:
    return root.is_dir() and not _top_dirs(root)


def read_folder(root: Path, options: ReadOptions) -> ReadResult:
    report = WalkReport()
    entries: list[Entry] = []
    split_dirs = {d for d in _top_dirs(root) if canonical_split(d)}
    for f in walk(root, follow_links=options.follow_links, report=report):
        parts = f.rel_path.split("/")
        split = None
        if parts[0] in split_dirs and len(parts) > 1:
            split = canonical_split(parts[0])
            parts = parts[1:]
        label = parts[0] if len(parts) > 1 else options.label
        entries.append(Entry(f.path, f.rel_path, label=label, split=split, reason=f.reason, detail=f.detail))
    return ReadResult(entries, skipped=report.skipped_dirs + [f"{p}: link loop" for p in report.loops], walked=True)


def read_flat(root: Path, options: ReadOptions) -> ReadResult:
    report = WalkReport()
    entries = [
        Entry(f.path, f.rel_path, label=options.label, reason=f.reason, detail=f.detail)
        for f in walk(root, follow_links=options.follow_links, report=report)
    ]
    return ReadResult(entries, skipped=report.skipped_dirs + [f"{p}: link loop" for p in report.loops], walked=True)


def write_folder(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> dict[str, Any]:
    """Write ``<split>/<class>/<image>`` (or ``<class>/<image>`` with ``split_dirs=False``).

    Only image files go in: no lists, no metadata, so torchvision ``ImageFolder``
    and Keras ``image_dataset_from_directory`` pointed at ``<out>/<split>`` (or
    at ``<out>``) see exactly one class folder per label.
    """
    split_dirs = options.extra.get("split_dirs", True)
    unlabeled = plan[plan["label"].isna()]
    if len(unlabeled):
        raise ExportError("", field="label", expected="a label on every exported row of a class-folder export",
                          found=f"{len(unlabeled)} rows without one (e.g. {unlabeled['rel_path'].iloc[0]})",
                          hint="label or drop them first, export boxes with --format coco/yolo/voc, or, when they are the photos "
                               "that `curate crop` cut patches from, re-run it with --supersede")
    labels = [check_folder_name(str(lab)) for lab in plan["label"].unique()]
    if not split_dirs:
        clash = [lab for lab in labels if canonical_split(lab)]
        if clash:
            raise ExportError("", field="label", expected="class names that are not split names without split folders",
                              found=clash, hint="keep split folders (drop --no-split-dirs)")
    classes = class_list(labels, options.extra.get("classes"))
    files: dict[str, str] = {}
    with FileWriter(options.link) as writer:
        for row in plan.to_dict("records"):
            rel = f"{row['split']}/{row['label']}/{row['name']}" if split_dirs else f"{row['label']}/{row['name']}"
            writer.image(row["path"], out / rel, row["action"])
            files[row["sample_id"]] = rel
    return {"files": files, "classes": classes,
            "carries": {"labels": True, "boxes": False, "split": bool(split_dirs)}}
