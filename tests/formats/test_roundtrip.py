"""One dataset of real photos through every pair of formats.

The photo set (tests/formats/photoset.py) is ingested once and exported in
every writable format; then every format is converted to every other with
``curate convert`` and both sides are read back with curate's readers. What
both formats carry must survive: the images (by name), splits, image labels,
and boxes within 1e-6 of the image size. A pair that cannot carry the data
(boxes-only to class folders) must fail with the documented message.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest

from curate.errors import ExportError
from curate.formats import REGISTRY, writable_formats
from curate.formats.base import ReadOptions
from curate.stages.convert import ConvertOptions, convert
from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.formats.photoset import boxes_close, image_wh, make_photo_set, pixel_boxes

FORMATS = writable_formats()
# What each format keeps of the photo set (csv keeps boxes when there are any, else labels).
CARRIES = {"coco": {"boxes"}, "voc": {"boxes"}, "yolo": {"boxes"}, "json": {"boxes", "labels"},
           "csv": {"boxes"}, "folder": {"labels"}, "yolo-cls": {"labels"}}
NEEDS_LABELS = {"folder", "yolo-cls"}


def read_path(fmt: str, root: Path) -> Path:
    return root / "labels.csv" if fmt == "csv" else root


def snapshot(fmt: str, root: Path) -> dict[str, tuple[str | None, str | None, list[tuple[str, float, float, float, float]],
                                                      tuple[int, int]]]:
    """stem -> (split, label, boxes in pixels, displayed size), as curate's reader sees ``root``."""
    fmt_obj = REGISTRY[fmt]
    assert fmt_obj.read is not None
    out = {}
    for e in fmt_obj.read(read_path(fmt, root), ReadOptions()).entries:
        assert e.reason is None, (e.rel_path, e.reason)
        wh = image_wh(e.path)
        out[Path(e.path).stem] = (e.split, e.label, pixel_boxes(e, wh), wh)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, skimage_dir) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("roundtrip")
    photos = make_photo_set(base / "photos", skimage_dir)
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(photos.root, layout="json")], workers=1))
    out = {}
    for fmt in FORMATS:
        ws.run_stage("export", export, ExportOptions(fmt, base / "in" / fmt))
        out[fmt] = base / "in" / fmt
    return out


def test_every_format_holds_all_seven_photos(exported):
    for fmt in FORMATS:
        snap = snapshot(fmt, exported[fmt])
        assert len(snap) == 7, fmt
        if "labels" in CARRIES[fmt]:
            assert {v[1] for v in snap.values()} == {"cup", "person", "cat", "rocket", "horse", "motorcycle", "label_2"}
        if "boxes" in CARRIES[fmt]:
            assert sum(len(v[2]) for v in snap.values()) == 8


@pytest.mark.parametrize("src, dst", list(product(FORMATS, FORMATS)))
def test_pair(exported, tmp_path, src, dst):
    out = tmp_path / "out"
    opts = ConvertOptions(read_path(src, exported[src]), dst, out, from_format=src, workers=1)
    if dst in NEEDS_LABELS and "labels" not in CARRIES[src]:
        with pytest.raises(ExportError) as e:
            convert(opts)
        assert str(e.value).startswith("label: expected a label on every exported row of a class-folder export, "
                                       "found 7 rows without one")
        assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing left behind
        return
    summary = convert(opts)
    assert summary["images"] == 7 and summary["verified"] == "7 images read back"
    before, after = snapshot(src, exported[src]), snapshot(dst, out)
    assert sorted(before) == sorted(after)
    dst_carries = CARRIES[dst] if dst != "csv" else ({"boxes"} if "boxes" in CARRIES[src] else {"labels"})
    common = CARRIES[src] & dst_carries
    for stem, (split, label, boxes, wh) in before.items():
        a_split, a_label, a_boxes, a_wh = after[stem]
        assert (a_split, a_wh) == (split, wh), stem
        if "labels" in common:
            assert a_label == label, stem
        if "boxes" in common:
            assert boxes_close(a_boxes, boxes, wh), (stem, boxes, a_boxes)
