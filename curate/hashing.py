"""Perceptual hashes, computed once at ingest and stored in the manifest.

A hash is 64 bits, stored as 16 lower-case hex digits so the manifest stays
readable in pandas and FiftyOne. ``hashes_to_uint64`` turns a column of them
into a numpy array in one step for the Hamming search.

    >>> from PIL import Image
    >>> h = compute_hashes(Image.new("L", (64, 64), 128))
    >>> sorted(h)
    ['dhash', 'phash']
    >>> hamming("ff00000000000000", "0f00000000000000")
    4
"""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
from PIL import Image

# Bump when compute_hashes changes, so ingest recomputes stored hashes.
HASH_VERSION = 1
HASH_COLUMNS = ("phash", "dhash")
# Size of the grayscale thumbnail the hashes are taken from. imagehash resizes
# further (32x32 for pHash, 9x8 for dHash); starting from a small BOX-filtered
# thumbnail keeps that resize cheap and stable across decoders' draft scales.
THUMB_PX = 64


def hash_thumbnail(img: Image.Image) -> Image.Image:
    """Grayscale ``THUMB_PX`` square thumbnail of a displayed (EXIF-applied) RGB/L image."""
    gray = img if img.mode == "L" else img.convert("L")
    return gray.resize((THUMB_PX, THUMB_PX), Image.Resampling.BOX)


def compute_hashes(thumb: Image.Image) -> dict[str, str]:
    """The stored perceptual hashes of one image, from :func:`hash_thumbnail`'s output."""
    return {
        "phash": str(imagehash.phash(thumb, hash_size=8)),
        "dhash": str(imagehash.dhash(thumb, hash_size=8)),
    }


def hashes_to_uint64(hexes: Sequence[str]) -> np.ndarray:
    """16-hex-digit strings -> uint64 array, vectorised (no per-row int())."""
    if len(hexes) == 0:
        return np.zeros(0, dtype=np.uint64)
    raw = bytes.fromhex("".join(hexes))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def hamming(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))
