"""Folder layouts: ``class/image`` (Kaggle style), ``split/class/image``, and flat.

Reading:

- ``class/image``: the label is the first folder below the source root; files
  in deeper folders take the label of their top folder.
- ``split/class/image``: when a top folder's name is a split name or an alias
  (``train``, ``val``/``valid``/``validation``, ``test``), it sets ``split`` and
  the next folder is the label.
- flat: no labels (or the one ``--label``), every file under the root.

Files directly in the root of a class layout get no label, except
``classes.txt``, the class list the writer puts there: it is read as the
class list, not as a file.

Writing (:func:`write_folder`): ``<split>/<class>/<image>``, or ``<class>/<image>``
without split folders, plus ``classes.txt`` (one class per line) at the top.
Every class gets a folder in every split, empty or not: torchvision
``ImageFolder`` and Keras ``image_dataset_from_directory`` number classes by
their sorted folder names, so a class missing from one split would shift the
index of every class after it there (issue 14). ``classes.txt`` lists the
classes in that same sorted order, which is the index every loader uses.

    >>> detect_layout_kind(Path("."))  # doctest: +SKIP
    'folder'
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from curate.errors import ExportError
from curate.formats.base import (
    Carries,
    Entry,
    Format,
    FormatOption,
    ReadOptions,
    ReadResult,
    WriteOptions,
    WriteResult,
    canonical_split,
)
from curate.formats.output import FileWriter, check_folder_name, class_list
from curate.walk import WalkReport, walk

CLASSES_FILE = "classes.txt"  # written at the top of a class-folder export, one class per line


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
    classes = None
    for f in walk(root, follow_links=options.follow_links, report=report):
        if f.rel_path == CLASSES_FILE and f.reason is None:
            classes = _read_classes(Path(f.path))  # the export's class list, not an image
            if classes is not None:
                continue
        parts = f.rel_path.split("/")
        split = None
        if parts[0] in split_dirs and len(parts) > 1:
            split = canonical_split(parts[0])
            parts = parts[1:]
        label = parts[0] if len(parts) > 1 else options.label
        entries.append(Entry(f.path, f.rel_path, label=label, split=split, reason=f.reason, detail=f.detail))
    return ReadResult(entries, skipped=report.skipped_dirs + [f"{p}: link loop" for p in report.loops],
                      classes=classes, walked=True)


def _read_classes(path: Path) -> list[str] | None:
    """The lines of a class-folder export's ``classes.txt``; None when it is not such a list."""
    try:
        if path.stat().st_size > 1_000_000:
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return [ln for ln in lines if ln.strip()]


def read_flat(root: Path, options: ReadOptions) -> ReadResult:
    report = WalkReport()
    entries = [
        Entry(f.path, f.rel_path, label=options.label, reason=f.reason, detail=f.detail)
        for f in walk(root, follow_links=options.follow_links, report=report)
    ]
    return ReadResult(entries, skipped=report.skipped_dirs + [f"{p}: link loop" for p in report.loops], walked=True)


def write_folder(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``<split>/<class>/<image>`` (or ``<class>/<image>`` with ``split_dirs=False``).

    Only images go into the class folders, so torchvision ``ImageFolder`` and
    Keras ``image_dataset_from_directory`` pointed at ``<out>/<split>`` (or at
    ``<out>``) see exactly one folder per class. Every split gets every class
    folder, empty ones included, so a class has the same index in every split.
    ``classes.txt`` at the top (ignored by both loaders: it is not a folder)
    lists the classes in the loaders' order, sorted by name.
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
    declared = options.extra.get("classes")
    classes = sorted(class_list(labels, declared))  # the loaders' order: sorted folder names
    warnings = []
    if declared is not None and list(dict.fromkeys(declared)) != classes:
        warnings.append("class-folder loaders (ImageFolder, Keras, Ultralytics) number classes by sorted folder "
                        f"name, not in the --classes order; classes.txt lists that order: {classes[:10]}")
    for name in classes:
        check_folder_name(name)
    splits = sorted({str(s) for s in plan["split"]}) if split_dirs else [""]
    for split in splits:  # every class in every split, so indexes agree (empty folders too)
        for name in classes:
            (out / split / name).mkdir(parents=True, exist_ok=True)
    (out / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    files: dict[str, str] = {}
    with FileWriter(options.link) as writer:
        for row in plan.to_dict("records"):
            rel = f"{row['split']}/{row['label']}/{row['name']}" if split_dirs else f"{row['label']}/{row['name']}"
            writer.image(row["path"], out / rel, row["action"])
            files[row["sample_id"]] = rel
    return WriteResult(files=files, classes=classes, warnings=warnings, extra_files=[CLASSES_FILE],
                       carries=FORMAT.carries.kept(has_boxes=False, splits=bool(split_dirs)))


SPLIT_DIRS = FormatOption(key="split_dirs", flag="--no-split-dirs", help="folder format: write class/image, no split folders.",
                          default=True, is_flag=True, read=False)

FORMAT = Format(name="folder", description="class/image or split/class/image folders (Kaggle, torchvision ImageFolder)",
                detect=detect_folder, read=read_folder, write=write_folder, carries=Carries(labels=True),
                options=(SPLIT_DIRS,), detect_priority=90)
FLAT = Format(name="flat", description="a flat folder of images, no labels (or one --label)", detect=detect_flat,
              read=read_flat, carries=Carries(splits=False), detect_priority=99)
