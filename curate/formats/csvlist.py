"""CSV / TXT label lists (Kaggle style): ``file,label`` or ``file,x1,y1,x2,y2,label``.

- A header row is recognised by its column names (``file``/``filename``/
  ``image``/``path``/``id`` and ``label``/``class``/``category``/``target``);
  without one, the first column is the file and the last the label.
- Paths are relative to the list's folder (or to ``--images-dir``). A name
  without an extension is tried with the usual image extensions, because many
  Kaggle lists give bare ids.
- Rows with boxes add one box each; several rows may name the same file.
- A listed file that does not exist becomes a row dropped as ``missing_file``.
- A file listed again with another label or split keeps the first, with a
  warning (``label_conflict`` / ``split_leak``); a split value that is not a
  split (``holdout``) is reported, and its rows are read without a split.
- TXT lists are split on commas, tabs or runs of spaces.
- A box row whose four box cells are empty lists an image without boxes.

Writing (:func:`write_csv`): ``labels.csv`` with ``file,split,label`` (or
``file,split,x1,y1,x2,y2,label``, one row per box, when any row has boxes)
and the images in ``images/<split>/``.

    >>> parse_header(["image_id", "label"])
    (0, None, 1)
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

from curate.errors import FormatError
from curate.formats.base import (
    Box,
    Carries,
    Entry,
    Format,
    ReadOptions,
    ReadResult,
    WriteOptions,
    WriteResult,
    canonical_split,
    finite_number,
)
from curate.formats.output import FileWriter, boxes_by_sample, class_list, fmt_num
from curate.imageio import IMAGE_EXTENSIONS

FILE_NAMES = ("file", "filename", "file_name", "image", "image_id", "img", "path", "filepath", "id", "name")
LABEL_NAMES = ("label", "class", "class_name", "category", "target", "labels", "species", "breed")
SPLIT_NAMES = ("split", "subset", "set", "fold")
BOX_NAMES = ("x1", "y1", "x2", "y2")


def detect_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".csv", ".txt", ".tsv")


def parse_header(cells: list[str]) -> tuple[int, int | None, int | None] | None:
    """(file column, split column, label column) if ``cells`` is a header row."""
    low = [c.strip().lower() for c in cells]
    file_col = next((i for i, c in enumerate(low) if c in FILE_NAMES), None)
    if file_col is None:
        return None
    label_col = next((i for i, c in enumerate(low) if c in LABEL_NAMES), None)
    split_col = next((i for i, c in enumerate(low) if c in SPLIT_NAMES), None)
    return file_col, split_col, label_col


def _rows(text: str, suffix: str) -> list[list[str]]:
    if suffix == ".csv":
        return [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if suffix == ".tsv":
        return [r for r in csv.reader(io.StringIO(text), delimiter="\t") if any(c.strip() for c in r)]
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:
            out.append([c.strip() for c in line.split(",")])
        elif "\t" in line:
            out.append([c.strip() for c in line.split("\t")])
        else:  # "my photo.jpg cat": the label is the last word, the name may have spaces
            out.append(line.rsplit(None, 1))
    return out


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    p = p if p.is_absolute() else base / p
    if p.exists() or p.suffix.lower() in IMAGE_EXTENSIONS:
        return p
    for ext in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic"):
        q = p.with_name(p.name + ext)
        if q.exists():
            return q
    return p


def read_csv(path: Path, options: ReadOptions) -> ReadResult:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FormatError(path, None, message=f"cannot read the list: {e.strerror}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(path, None, expected="UTF-8 text", found=f"undecodable byte at offset {e.start}",
                          hint="re-save the list as UTF-8") from e
    rows = _rows(text, path.suffix.lower())
    if not rows:
        raise FormatError(path, None, expected="at least one row", found="an empty list")
    header = parse_header(rows[0])
    lower = [c.strip().lower() for c in rows[0]]
    box_cols = [lower.index(n) for n in BOX_NAMES] if header and all(n in lower for n in BOX_NAMES) else None
    if header:
        file_col, split_col, label_col = header
        body = rows[1:]
    else:
        file_col, split_col, label_col = 0, None, (len(rows[0]) - 1 if len(rows[0]) > 1 else None)
        if len(rows[0]) == 6:  # file,x1,y1,x2,y2,label
            box_cols = [1, 2, 3, 4]
        body = rows
    base = Path(options.extra.get("images_dir") or path.parent).absolute()
    by_path: dict[str, Entry] = {}
    first_line: dict[str, int] = {}
    unknown_splits: dict[str, list[int]] = {}
    warnings: list[str] = []
    for lineno, row in enumerate(body, start=2 if header else 1):
        if file_col >= len(row) or not row[file_col].strip():
            warnings.append(f"{path.name}:{lineno}: no file name; row skipped")
            continue
        file_path = _resolve(base, row[file_col].strip())
        label = row[label_col].strip() if label_col is not None and label_col < len(row) else options.label
        label = label or None
        split_text = row[split_col].strip() if split_col is not None and split_col < len(row) else ""
        split = canonical_split(split_text) if split_text else None
        if split_text and split is None:  # "holdout", "extra": no split curate knows; said once per value
            unknown_splits.setdefault(split_text, []).append(lineno)
        key = str(file_path)
        entry = by_path.get(key)
        if entry is None:
            try:
                rel = os.path.relpath(file_path, base)
            except ValueError:
                rel = str(file_path)
            entry = Entry(str(file_path), rel.replace(os.sep, "/"), label=None if box_cols else label, split=split)
            if not file_path.exists():
                entry.reason, entry.detail = "missing_file", f"listed in {path.name} line {lineno}"
            by_path[key] = entry
            first_line[key] = lineno
        else:  # one file on several rows: fine for boxes, a conflict when its label or split differs
            for what, was, now in (("label", None if box_cols else entry.label, None if box_cols else label),
                                   ("split", entry.split, split)):
                if was is not None and now is not None and was != now:
                    kind = "label_conflict" if what == "label" else "split_leak"
                    warnings.append(f"{path.name}:{lineno}: {kind}: {entry.rel_path} was given the {what} {was!r} "
                                    f"on line {first_line[key]} and {now!r} here; kept {was!r}")
        if box_cols and all(i < len(row) and not row[i].strip() for i in box_cols):
            continue  # a listed image without boxes (curate writes these for background images)
        if box_cols:
            try:
                x1, y1, x2, y2 = (finite_number(row[i]) for i in box_cols)
            except (ValueError, IndexError) as e:
                raise FormatError(path, f"line {lineno} box", expected="four finite numbers x1,y1,x2,y2",
                                  found=",".join(row)) from e
            if label is None:
                raise FormatError(path, f"line {lineno} label", expected="a class name", found="an empty cell")
            entry.boxes.append(Box(label, x1, y1, x2, y2))
    for text, lines in unknown_splits.items():
        warnings.append(f"{path.name}: split {text!r} on {len(lines)} rows (first: line {lines[0]}) is not train, "
                        f"val or test: those rows are read without a split (curate split assigns one)")
    return ReadResult(list(by_path.values()), warnings=warnings)


def write_csv(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``labels.csv`` and ``images/<split>/``; paths in the list are relative to it."""
    with_boxes = bool(len(boxes))
    used = boxes["label"] if with_boxes else plan["label"].dropna()
    classes = class_list(used, options.extra.get("classes"))
    by_sample = boxes_by_sample(boxes)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "split", "x1", "y1", "x2", "y2", "label"] if with_boxes else ["file", "split", "label"])
    files: dict[str, str] = {}
    with FileWriter(options.link) as writer:
        for row in plan.to_dict("records"):
            rel = f"images/{row['split']}/{row['name']}"
            writer.image(row["path"], out / rel, row["action"])
            files[row["sample_id"]] = rel
            if not with_boxes:
                w.writerow([rel, row["split"], "" if pd.isna(row["label"]) else row["label"]])
                continue
            rows = by_sample.get(row["sample_id"], [])
            if not rows:
                w.writerow([rel, row["split"], "", "", "", "", ""])
            for b in rows:
                w.writerow([rel, row["split"], *(fmt_num(b[k]) for k in ("x1", "y1", "x2", "y2")), b["label"]])
    (out / LIST_FILE).write_text(buf.getvalue(), encoding="utf-8")
    return WriteResult(files=files, classes=classes, read_path=LIST_FILE,
                       carries=FORMAT.carries.kept(has_boxes=with_boxes) - ({"boxes"} if not with_boxes else set()))


LIST_FILE = "labels.csv"
FORMAT = Format(name="csv", description="CSV/TXT list: file,label or file,x1,y1,x2,y2,label", detect=detect_csv,
                read=read_csv, write=write_csv, carries=Carries(labels=True, boxes=True, labels_with_boxes=False),
                detect_priority=50, dataset_file=LIST_FILE)
