"""The format registry. Every format is imported here by name, explicitly.

The CLI's ``--layout`` / ``--format`` / ``--from`` / ``--to`` choices come from
:data:`REGISTRY`, and auto-detection tries formats in ``detect_priority`` order.

    >>> "folder" in REGISTRY and "csv" in REGISTRY
    True
    >>> writable_formats()
    ['coco', 'voc', 'yolo', 'json', 'csv', 'folder', 'yolo-cls']
"""

from __future__ import annotations

from pathlib import Path

from curate.errors import SourceError
from curate.formats import coco, csvlist, folder, jsonbox, voc, yolo, yolo_cls
from curate.formats.base import Format

REGISTRY: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if fmt.name in REGISTRY:
        raise ValueError(f"format {fmt.name!r} registered twice")
    REGISTRY[fmt.name] = fmt
    return fmt


# Dataset formats with their own annotation files come first: their folders
# also look like class folders to `folder`.
register(Format("coco", "COCO instances JSON (annotations/instances_<split>.json, Roboflow _annotations.coco.json)",
                coco.detect_coco, coco.read_coco, coco.write_coco, detect_priority=10))
register(Format("voc", "Pascal VOC XML (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt)",
                voc.detect_voc, voc.read_voc, voc.write_voc, detect_priority=20))
register(Format("yolo", "YOLO detect (data.yaml, images/<split>/, labels/<split>/; Roboflow and Darknet layouts)",
                yolo.detect_yolo, yolo.read_yolo, yolo.write_yolo, detect_priority=30))
register(Format("json", "per-image JSON box files (AI-Hub style), fields from --json-mapping",
                jsonbox.detect_json, jsonbox.read_json, jsonbox.write_json, detect_priority=40))
register(Format("csv", "CSV/TXT list: file,label or file,x1,y1,x2,y2,label", csvlist.detect_csv, csvlist.read_csv,
                csvlist.write_csv, detect_priority=50))
register(Format("folder", "class/image or split/class/image folders (Kaggle, torchvision ImageFolder)",
                folder.detect_folder, folder.read_folder, folder.write_folder, detect_priority=90))
# Read like `folder` (so never auto-detected), written with split folders always.
register(Format("yolo-cls", "YOLO classify (Ultralytics): <split>/<class>/<image>",
                None, yolo_cls.read_yolo_cls, yolo_cls.write_yolo_cls))
register(Format("flat", "a flat folder of images, no labels (or one --label)", folder.detect_flat, folder.read_flat,
                detect_priority=99))


def readable_formats() -> list[str]:
    return [name for name, f in REGISTRY.items() if f.read is not None]


def writable_formats() -> list[str]:
    return [name for name, f in REGISTRY.items() if f.write is not None]


def detect(path: Path) -> Format:
    """The first registered format (by priority) whose ``detect`` accepts ``path``."""
    for fmt in sorted(REGISTRY.values(), key=lambda f: f.detect_priority):
        if fmt.detect is not None and fmt.read is not None and fmt.detect(path):
            return fmt
    raise SourceError("", file=path, expected="a folder, or a CSV/TXT list, or a dataset curate can read",
                      found="nothing it recognises", hint="force a layout with --layout")
