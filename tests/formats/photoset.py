"""A small labelled, boxed dataset made from real photos, shared by the format
and export/convert tests.

The photos are scikit-image's bundled ones (present wherever curate is
installed), scaled down so the tests stay fast. The set holds what breaks
converters: two files with one name in different folders, an EXIF-rotated JPEG
(orientation 6: stored 107x160, shown 160x107), a WebP, an RGBA PNG without
boxes, fractional box coordinates, a row without a split, and labels that sort
differently by text and by number (label_2 / label_10).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from curate.formats.base import Entry
from curate.imageio import displayed_size, exif_orientation

# (rel path of the image, skimage file, image label, boxes in the displayed frame)
PHOTOS: list[tuple[str, str, str, list[tuple[str, float, float, float, float]]]] = [
    ("train/a/photo.png", "coffee.png", "cup", [("cup", 40.25, 30.5, 110.75, 90.0)]),
    ("train/b/photo.png", "astronaut.png", "person", [("face", 60.0, 10.0, 100.5, 60.125),
                                                       ("flag", 0.0, 0.0, 20.0, 30.0)]),
    ("train/chelsea.jpg", "chelsea.png", "cat", [("label_10", 10.5, 12.0, 80.0, 100.0),
                                                 ("label_2", 90.0, 20.0, 150.0, 106.0)]),
    ("val/rocket.jpg", "rocket.jpg", "rocket", [("rocket", 20.0, 30.0, 80.0, 100.0)]),
    ("val/horse.png", "horse.png", "horse", []),
    ("test/moto.webp", "motorcycle_left.png", "motorcycle", [("wheel", 5.0, 50.0, 60.0, 107.0)]),
    ("nosplit/coins.png", "coins.png", "label_2", [("coin", 1.0, 1.0, 30.0, 30.5)]),
]
LONG_SIDE_PX = 160
ROTATED = "val/rocket.jpg"  # stored portrait with EXIF orientation 6: displayed landscape


@dataclass
class PhotoSet:
    root: Path  # per-image JSON dataset (default mapping)
    expected: dict[str, tuple[str, list[tuple[str, float, float, float, float]]]]  # rel image path -> (label, boxes)


def _scaled(img: Image.Image) -> Image.Image:
    w, h = img.size
    k = LONG_SIDE_PX / max(w, h)
    return img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)


def make_photo_set(root: Path, skimage_dir: Path) -> PhotoSet:
    """Write the photos and one default-mapping JSON per image under ``root``."""
    expected = {}
    for rel, src, label, boxes in PHOTOS:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(skimage_dir / src) as im:
            img = _scaled(im.convert("RGBA" if im.mode == "RGBA" else "RGB"))
        if rel == ROTATED:
            # Store it turned 90 degrees counter-clockwise with orientation 6,
            # as a phone does: viewers show it upright (displayed = the scaled photo).
            stored = img.transpose(Image.Transpose.ROTATE_90)
            exif = Image.Exif()
            exif[0x0112] = 6
            stored.save(path, "JPEG", quality=92, exif=exif)
        elif path.suffix == ".jpg":
            img.save(path, "JPEG", quality=92)
        elif path.suffix == ".webp":
            img.save(path, "WEBP", quality=90)
        else:
            img.save(path, "PNG")
        with Image.open(path) as im:
            w, h = displayed_size(im.size, exif_orientation(im))
        doc = {"image": path.name, "width": w, "height": h, "label": label,
               "boxes": [{"x1": x1, "y1": y1, "x2": x2, "y2": y2, "label": lab} for lab, x1, y1, x2, y2 in boxes]}
        path.with_suffix(".json").write_text(json.dumps(doc))
        expected[rel] = (label, boxes)
    return PhotoSet(root, expected)


def pixel_boxes(entry: Entry, image_wh: tuple[int, int]) -> list[tuple[str, float, float, float, float]]:
    """An entry's boxes in pixels, sorted (normalized ones scaled by ``image_wh``)."""
    w, h = image_wh
    out = []
    for b in entry.boxes:
        k = (w, h) if b.normalized else (1, 1)
        out.append((b.label, b.x1 * k[0], b.y1 * k[1], b.x2 * k[0], b.y2 * k[1]))
    return sorted(out)


def image_wh(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return displayed_size(im.size, exif_orientation(im))


def boxes_close(a: list[tuple[str, float, float, float, float]], b: list[tuple[str, float, float, float, float]],
                wh: tuple[int, int], frac: float = 1e-6) -> bool:
    if len(a) != len(b):
        return False
    w, h = wh
    for p, q in zip(sorted(a), sorted(b), strict=True):
        if p[0] != q[0]:
            return False
        tol = (frac * w, frac * h, frac * w, frac * h)
        if any(abs(x - y) > t for x, y, t in zip(p[1:], q[1:], tol, strict=True)):
            return False
    return True
