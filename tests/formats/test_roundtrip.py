"""One dataset of real photos through every pair of formats, and every reader on malformed files.

The photo set (tests/formats/photoset.py) is ingested once and exported in
every writable format; then every format is converted to every other with
``curate convert`` and both sides are read back with curate's readers. What
both formats carry (each format's declaration, ``Format.carries``, read from
the registry: a new format is tested here without an edit) must survive: the
images (by name), splits, image labels, and boxes within 1e-6 of the image
size. A pair that cannot carry the data (boxes-only to class folders) must
fail with the documented message. Every annotation file of every export, cut
short or replaced by binary bytes, must give an error naming the file or
rows read with warnings: never another exception.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest

from curate.errors import CurateError, ExportError
from curate.formats import REGISTRY, writable_formats
from curate.formats.base import ReadOptions
from curate.stages.convert import ConvertOptions, convert
from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.formats.photoset import boxes_close, image_wh, make_photo_set, pixel_boxes

FORMATS = writable_formats()


def kept(fmt: str, has_boxes: bool = True) -> frozenset[str]:
    """What ``fmt`` keeps of a dataset (the photo set has boxes), as the format declares it."""
    return REGISTRY[fmt].carries.kept(has_boxes=has_boxes)


def needs_labels(fmt: str) -> bool:
    """A class-folder format: every image must have a label."""
    carries = REGISTRY[fmt].carries
    return carries.labels and not carries.boxes


def read_path(fmt: str, root: Path) -> Path:
    name = REGISTRY[fmt].dataset_file
    return root / name if name else root


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
        if "labels" in kept(fmt):
            assert {v[1] for v in snap.values()} == {"cup", "person", "cat", "rocket", "horse", "motorcycle", "label_2"}
        if "boxes" in kept(fmt):
            assert sum(len(v[2]) for v in snap.values()) == 8


@pytest.mark.parametrize("src, dst", list(product(FORMATS, FORMATS)))
def test_pair(exported, tmp_path, src, dst):
    out = tmp_path / "out"
    opts = ConvertOptions(read_path(src, exported[src]), dst, out, from_format=src, workers=1)
    if needs_labels(dst) and "labels" not in kept(src):
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
    common = kept(src) & kept(dst, has_boxes="boxes" in kept(src))
    for stem, (split, label, boxes, wh) in before.items():
        a_split, a_label, a_boxes, a_wh = after[stem]
        assert a_wh == wh, stem
        if "splits" in common:
            assert a_split == split, stem
        if "labels" in common:
            assert a_label == label, stem
        if "boxes" in common:
            assert boxes_close(a_boxes, boxes, wh), (stem, boxes, a_boxes)


def _annotation_files(fmt: str, root: Path) -> list[Path]:
    """The files of an export that are not images (annotation files, lists, class lists, data.yaml)."""
    from curate.imageio import IMAGE_EXTENSIONS

    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in IMAGE_EXTENSIONS)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("damage", [
    "cut",  # the first half of the file, back to a separator: JSON, XML and YAML stop mid-value, rows lose cells
    "binary",  # bytes that are not text in any encoding a reader expects
])
def test_malformed_annotation_files_are_reported_not_crashed(exported, tmp_path, fmt, damage):
    import shutil

    files = _annotation_files(fmt, exported[fmt])
    if REGISTRY[fmt].carries.boxes:
        assert files, f"{fmt} wrote boxes but no annotation file"
    caught = 0
    for rel in [p.relative_to(exported[fmt]) for p in files]:
        root = tmp_path / rel.as_posix().replace("/", "__")
        shutil.copytree(exported[fmt], root)
        data = (root / rel).read_bytes()
        half = data[: len(data) // 2]
        half = half[: max(half.rfind(b" "), half.rfind(b","), 1)]  # a number cut short is still a number
        (root / rel).write_bytes(half if damage == "cut" else b"\xff\xfe\x00\x9c" + data[:64])
        try:
            result = REGISTRY[fmt].read(read_path(fmt, root), ReadOptions())  # type: ignore[misc]
        except CurateError as e:  # an error must name the damaged file
            assert rel.name in str(e), (rel, str(e))
            caught += 1
            continue
        # Read without an error: then what was lost is said (a warning, a dropped row, or fewer boxes).
        before = REGISTRY[fmt].read(read_path(fmt, exported[fmt]), ReadOptions())  # type: ignore[misc]
        if result.warnings or any(e.reason for e in result.entries):
            caught += 1
        elif sum(len(e.boxes) for e in result.entries) != sum(len(e.boxes) for e in before.entries):
            raise AssertionError(f"{fmt}: {rel} damaged ({damage}) lost boxes without a word")
    if REGISTRY[fmt].carries.boxes:
        assert caught, f"{fmt}: no damaged annotation file was reported"
