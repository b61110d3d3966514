"""YOLO classify (Ultralytics): ``<split>/<class>/<image>``.

Reading is the folder reader, and insists on split folders (``train``,
``val``/``valid``/``validation``, ``test``): that is what Ultralytics needs.
Auto-detection leaves this layout to ``folder``, which reads it the same way.

Writing: ``train/``, ``val/``, ``test/`` (the splits present), each with one
folder per class. Ultralytics uses ``val`` for validation and falls back to
``test``; a dataset without either trains but cannot validate.

    >>> from curate.formats.base import WriteOptions
    >>> WriteOptions().default_split
    'train'
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from curate.errors import FormatError
from curate.formats.base import (
    Carries,
    Format,
    ReadOptions,
    ReadResult,
    WriteOptions,
    WriteResult,
    canonical_split,
)
from curate.formats.folder import _top_dirs, read_folder, write_folder


def read_yolo_cls(root: Path, options: ReadOptions) -> ReadResult:
    """Read ``<split>/<class>/<image>``; a folder without split folders is an error."""
    top = _top_dirs(root)
    if not any(canonical_split(d) for d in top):
        raise FormatError(root, None, expected="train/, val/ (or valid/) and test/ folders holding class folders",
                          found=f"folders {top[:8]}", hint="for class/image folders use --layout folder")
    return read_folder(root, options)


def write_yolo_cls(plan: pd.DataFrame, boxes: pd.DataFrame, out: Path, options: WriteOptions) -> WriteResult:
    """Write ``<split>/<class>/<image>`` (always with split folders)."""
    opts = WriteOptions(link=options.link, default_split=options.default_split,
                        extra={**options.extra, "split_dirs": True})
    return write_folder(plan, boxes, out, opts)


# Read like `folder` (so never auto-detected), written with split folders always.
FORMAT = Format(name="yolo-cls", description="YOLO classify (Ultralytics): <split>/<class>/<image>",
                read=read_yolo_cls, write=write_yolo_cls, carries=Carries(labels=True))
