"""Perceptual hashes, computed once at ingest and stored in the manifest.

A hash is 64 bits, stored as 16 lower-case hex digits so the manifest stays
readable in pandas and FiftyOne. ``hashes_to_uint64`` turns a column of them
into a numpy array in one step for the Hamming search.

Two families are stored:

- ``phash`` / ``dhash``: imagehash's classic DCT and difference hashes of the
  displayed image, for other tools and quick checks.
- ``d4hash`` and ``crop_hashes``: the near-duplicate search of ``curate dedupe``
  (docs/dedupe.md). ``d4hash`` is the sign of the 8x8 lowest DCT coefficients of
  a 32x32 grayscale thumbnail, taken after trimming letterbox bars. Because it
  thresholds at zero (not at the median, as pHash does), mirroring and 90-degree
  turns act on it as bit operations: a horizontal mirror negates the columns of
  odd horizontal frequency, a transpose swaps (u, v). So the hashes of all eight
  flips/rotations of an image are computed from the stored hash
  (:func:`d4_variants`) without decoding anything again. ``crop_hashes`` holds
  the same hash of 13 sub-windows (``CROP_WINDOWS``), so that a crop of an image
  lands near one of its windows. ``hash_contrast`` is the grey-level standard
  deviation of the hashed thumbnail: below a few grey levels the hash bits are
  noise, not picture (an almost black frame), and dedupe leaves such rows to
  exact (sha256) matching.

    >>> from PIL import Image
    >>> h = compute_hashes(Image.new("L", (THUMB_PX, THUMB_PX), 128))
    >>> sorted(h)
    ['crop_hashes', 'd4hash', 'dhash', 'hash_contrast', 'phash']
    >>> hamming("ff00000000000000", "0f00000000000000")
    4
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image

# Bump when compute_hashes changes, so ingest recomputes stored hashes.
# 2: d4hash, crop_hashes, hash_contrast; 128 px thumbnail. 3: paired bars only, disc mask.
# 4: ORB keypoints for copy detection (curate.copydetect, issue 15).
HASH_VERSION = 4
# Columns the ingest probe fills from its one decode (all in the manifest schema):
# compute_hashes's, and the local features of curate.copydetect.describe.
HASH_COLUMNS = ("phash", "dhash", "d4hash", "crop_hashes", "hash_contrast", "keypoints")
# Size of the grayscale thumbnail the hashes are taken from. imagehash resizes
# further (32x32 for pHash, 9x8 for dHash), as does the d4hash (32x32). 128 px
# keeps letterbox trimming and the crop windows accurate to about 1% of a side
# while the BOX resize from the decoder's draft scale stays cheap.
THUMB_PX = 128
# The d4hash and its crop windows are resampled from a 64 px square: each of the
# 32 DCT input samples still averages >= 1.6 source pixels.
_WINDOW_SRC_PX = 64
_DCT_PX = 32
_BITS = 8  # 8x8 low-frequency DCT coefficients -> 64 bits

# Sub-windows hashed for crop matching, as (width, height, x offset, y offset)
# fractions of the trimmed thumbnail; an offset is the fraction of the slack
# (1 - size) left of / above the window. 0.9-sided windows on a 3x3 grid cover
# crops that remove up to ~20% of the area anywhere; the four 0.8 x 1.0 strips
# cover a cut from one side. Measured in benchmarks/dedupe_bench.py.
CROP_WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    *((0.9, 0.9, fx, fy) for fy in (0.0, 0.5, 1.0) for fx in (0.0, 0.5, 1.0)),
    (0.8, 1.0, 0.0, 0.0), (0.8, 1.0, 1.0, 0.0), (1.0, 0.8, 0.0, 0.0), (1.0, 0.8, 0.0, 1.0),
)

# Letterbox trimming: a border line counts as a bar when all its pixels are
# within this many grey levels of each other and of the outermost line.
_BAR_TOLERANCE = 10.0
# Never trim more than this fraction of a side (a nearly uniform image is not letterboxed).
_MAX_TRIM_FRAC = 0.8

# D4, the eight flips/rotations, as (transpose, mirror columns, mirror rows),
# applied in that order to the upright image. Index 0 is the identity.
D4_NAMES = ("identity", "flip_v", "mirror", "rot180", "transpose", "rot90", "rot270", "transverse")
_D4_OPS = tuple((t, h, v) for t in (False, True) for h in (False, True) for v in (False, True))

_U, _V = np.divmod(np.arange(_BITS * _BITS), _BITS)  # bit k <-> coefficient (u = row freq, v = col freq)
_ODD_V = (_V % 2 == 1)
_ODD_U = (_U % 2 == 1)
_TRANSPOSE = _V * _BITS + _U


def hash_thumbnail(img: Image.Image) -> Image.Image:
    """Grayscale ``THUMB_PX`` square thumbnail of a displayed (EXIF-applied) RGB/L image."""
    gray = img if img.mode == "L" else img.convert("L")
    return gray.resize((THUMB_PX, THUMB_PX), Image.Resampling.BOX)


def trim_box(gray: np.ndarray, tolerance: float = _BAR_TOLERANCE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): rows/columns of padding bars at the edges of
    a 2-D uint8 grey array; zeros when none.

    Padding (letterbox, pillarbox, pad-to-square) puts flat bars of one colour
    on *both* opposite sides, of equal width. Only such pairs are trimmed: a
    photo on a white background, whose margins differ, keeps its margins, so
    that a change of contrast cannot move where it is cut.

    >>> a = np.full((10, 10), 200, np.uint8); a[3:7, :] = np.arange(10, 110, 10)
    >>> trim_box(a, tolerance=2)
    (3, 3, 0, 0)
    >>> a[8:, :] = np.arange(10, 110, 10)  # the bottom bar is narrower: not padding
    >>> trim_box(a, tolerance=2)
    (0, 0, 0, 0)
    """
    h, w = gray.shape
    top, bottom = _bar_pair(gray, h, tolerance)
    left, right = _bar_pair(gray.T, w, tolerance)
    return top, bottom, left, right


def _bar_pair(lines: np.ndarray, n: int, tolerance: float) -> tuple[int, int]:
    (first, level_a), (last, level_b) = _bar_run(lines, tolerance), _bar_run(lines[::-1], tolerance)
    if not first or not last:
        return 0, 0
    same_width = abs(first - last) <= max(1, round(0.02 * n))
    if not same_width or abs(level_a - level_b) > tolerance or first + last >= n * _MAX_TRIM_FRAC:
        return 0, 0
    return first, last


def _bar_run(lines: np.ndarray, tolerance: float) -> tuple[int, float]:
    """(how many leading lines are flat and at the first line's level, that level)."""
    first = lines[0]
    if int(first.max()) - int(first.min()) > tolerance:  # the usual case: no bar at all
        return 0, 0.0
    spread = lines.max(axis=1).astype(np.int16) - lines.min(axis=1)
    level = lines.mean(axis=1)
    ok = (spread <= tolerance) & (np.abs(level - level[0]) <= tolerance)
    bad = np.flatnonzero(~ok)
    return (int(bad[0]) if len(bad) else len(ok)), float(level[0])


def _resample_operator(n_px: int, start: float, stop: float) -> np.ndarray:
    """(32, n_px) matrix: box-resample pixels [start, stop) of an axis to 32 samples."""
    px = np.arange(n_px)[None, :]
    edges = start + (stop - start) * np.arange(_DCT_PX + 1) / _DCT_PX
    overlap = np.clip(edges[1:, None], px, px + 1) - np.clip(edges[:-1, None], px, px + 1)
    return overlap / ((stop - start) / _DCT_PX)


@functools.cache
def _dct8() -> np.ndarray:
    """(8, 32): the 8 lowest DCT-II basis rows (unnormalised; only signs are used)."""
    j = np.arange(_DCT_PX)
    return np.cos(np.pi * (2 * j[None, :] + 1) * np.arange(_BITS)[:, None] / (2 * _DCT_PX)).astype(np.float32)


@functools.cache
def _disk() -> np.ndarray:
    """32x32 mask of the inscribed disc. Its symmetry keeps the hash's D4 algebra
    exact, and leaving the corners out makes the hash ignore what a small turn
    (filled corners) or a corner logo changes: measured in docs/benchmarks.md."""
    c = (_DCT_PX - 1) / 2
    yy, xx = np.mgrid[0:_DCT_PX, 0:_DCT_PX]
    return (np.hypot(yy - c, xx - c) <= _DCT_PX / 2).astype(np.float32)


@functools.cache
def _window_operators() -> tuple[np.ndarray, np.ndarray]:
    """Stacked row and column resampling operators for the full image and every crop window."""
    boxes = [(1.0, 1.0, 0.0, 0.0), *CROP_WINDOWS]
    rows, cols = [], []
    for fw, fh, fx, fy in boxes:
        cw, ch = fw * _WINDOW_SRC_PX, fh * _WINDOW_SRC_PX
        x0, y0 = fx * (_WINDOW_SRC_PX - cw), fy * (_WINDOW_SRC_PX - ch)
        rows.append(_resample_operator(_WINDOW_SRC_PX, y0, y0 + ch))
        cols.append(_resample_operator(_WINDOW_SRC_PX, x0, x0 + cw).T)
    return np.concatenate(rows).astype(np.float32), np.stack(cols).astype(np.float32)


def _hash_windows(windows: np.ndarray) -> list[str]:
    """Hex hashes of a stack of 32x32 windows: signs of the 8x8 lowest DCT
    coefficients of the disc-masked window; the DC bit is always 0."""
    disk = _disk()
    mean = (windows * disk).sum(axis=(1, 2), keepdims=True) / disk.sum()
    centred = (windows - mean) * disk  # outside the disc: the window's mean level
    dct = _dct8()
    coef = dct @ centred @ dct.T  # (windows, 8, 8)
    bits = coef > 0
    bits[:, 0, 0] = False  # the DC term carries no information
    packed = np.packbits(bits.reshape(len(windows), _BITS * _BITS), axis=1)
    return [row.tobytes().hex() for row in packed]


def _window_hashes(gray: np.ndarray) -> list[str]:
    """Hex d4hash of the full ``_WINDOW_SRC_PX`` square and of each crop window."""
    rows, cols = _window_operators()
    # Products of at most 64x64x64 stay under OpenBLAS's threading threshold:
    # a threaded GEMM per image would fight the ingest worker processes for cores.
    step = 2 * _DCT_PX
    projected = np.concatenate([rows[i:i + step] @ gray for i in range(0, len(rows), step)])
    windows = projected.reshape(len(cols), _DCT_PX, _WINDOW_SRC_PX) @ cols  # (windows, 32, 32)
    return _hash_windows(windows)


def compute_hashes(thumb: Image.Image) -> dict[str, str | float]:
    """The stored perceptual hashes of one image, from :func:`hash_thumbnail`'s output."""
    thumb = thumb if thumb.mode == "L" else thumb.convert("L")
    if thumb.size != (THUMB_PX, THUMB_PX):
        thumb = thumb.resize((THUMB_PX, THUMB_PX), Image.Resampling.BOX)
    top, bottom, left, right = trim_box(np.asarray(thumb))
    # imagehash's hashes from the untrimmed 64 px thumbnail, as before HASH_VERSION 2.
    small = thumb.reduce(THUMB_PX // _WINDOW_SRC_PX)
    src = small
    if top or bottom or left or right:
        box = (left, top, THUMB_PX - right, THUMB_PX - bottom)
        src = thumb.resize((_WINDOW_SRC_PX, _WINDOW_SRC_PX), Image.Resampling.BOX, box=box)
    gray = np.asarray(src, dtype=np.float32)
    full, *crops = _window_hashes(gray)
    return {
        "phash": _imagehash_phash(small),
        "dhash": _imagehash_dhash(small),
        "d4hash": full,
        "crop_hashes": "".join(crops),
        "hash_contrast": round(float(gray.std()), 2),
    }


@functools.cache
def _fftpack_dct8() -> np.ndarray:
    """First 8 rows of scipy.fftpack's unnormalised 32-point DCT-II matrix."""
    n = np.arange(32)
    return 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * n[None, :] + 1) / 64)


def _imagehash_phash(img: Image.Image) -> str:
    """``str(imagehash.phash(img))``, with the two DCTs as one matrix product.

    imagehash's own code spends most of its time building Python strings; this
    gives the same hex (tests/test_hashing.py compares them on real photos).
    """
    pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    dct8 = _fftpack_dct8()
    low = dct8 @ pixels @ dct8.T
    return np.packbits(low > np.median(low)).tobytes().hex()


def _imagehash_dhash(img: Image.Image) -> str:
    """``str(imagehash.dhash(img))``: row gradients of a 9x8 thumbnail."""
    pixels = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS))
    return np.packbits(pixels[:, 1:] > pixels[:, :-1]).tobytes().hex()


def hashes_to_uint64(hexes: Sequence[str]) -> np.ndarray:
    """16-hex-digit strings -> uint64 array, vectorised (no per-row int())."""
    if len(hexes) == 0:
        return np.zeros(0, dtype=np.uint64)
    raw = bytes.fromhex("".join(hexes))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def crop_hashes_to_uint64(joined: Sequence[str]) -> np.ndarray:
    """``crop_hashes`` strings -> uint64 array of shape (rows, len(CROP_WINDOWS)), vectorised."""
    n = len(CROP_WINDOWS)
    if len(joined) == 0:
        return np.zeros((0, n), dtype=np.uint64)
    text = "".join(joined)
    if len(text) != 16 * n * len(joined):
        raise ValueError(f"crop_hashes: expected {16 * n} hex digits per row")
    return np.frombuffer(bytes.fromhex(text), dtype=">u8").astype(np.uint64).reshape(-1, n)


def _bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    packed = np.ascontiguousarray(np.packbits(bits.astype(np.uint8), axis=-1))
    return packed.view(">u8").reshape(bits.shape[:-1]).astype(np.uint64)


def d4_variants(hashes: np.ndarray) -> np.ndarray:
    """The d4hash of every flip/rotation of each image: shape (8, n), row i = ``D4_NAMES[i]``.

    Row 0 is ``hashes`` itself. Pure bit arithmetic on the stored hashes.

    >>> v = d4_variants(np.array([0x0123456789ABCDEF], dtype=np.uint64))
    >>> int(v[0, 0]) == 0x0123456789ABCDEF, v.shape
    (True, (8, 1))
    """
    h = np.asarray(hashes, dtype=np.uint64)
    bits = np.unpackbits(h.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).astype(bool)
    out = np.empty((len(_D4_OPS), len(h)), dtype=np.uint64)
    for i, (t, mirror, flip) in enumerate(_D4_OPS):
        b = bits[:, _TRANSPOSE] if t else bits.copy()
        if mirror:
            b ^= _ODD_V
        if flip:
            b ^= _ODD_U
        b[:, 0] = False
        out[i] = _bits_to_uint64(b)
    return out


def apply_d4(img: Image.Image, index: int) -> Image.Image:
    """Apply ``D4_NAMES[index]`` to an image, matching :func:`d4_variants` on its hash."""
    t, mirror, flip = _D4_OPS[index]
    if t:
        img = img.transpose(Image.Transpose.TRANSPOSE)
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return img


def hamming(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))
