"""Pixel-level verification of near-duplicate candidates found by hashing.

A 64-bit hash cannot tell a re-encoded copy from a second shot of the same
scene, so every candidate pair that ``curate dedupe`` groups is checked on the
pixels, decoding only the images that appear in candidate pairs:

1. **pixels**: undo the flip/rotation the hash search found (one of the eight
   D4 transforms), cut letterbox bars, resize both to 64x64 and compare them
   tile by tile after normalising brightness and contrast. Accepts copies that
   were resized (also to another aspect ratio), re-encoded, mirrored, turned by
   90/180/270 degrees, brightened, blurred, greyed or letterboxed.
2. **features**: when the pixels do not line up (a crop, a turn by a few
   degrees), match ORB keypoints, fit a similarity transform with RANSAC,
   warp one image onto the other and run the same tile comparison on the
   overlap. The overlap must contain the smaller image and cover at least
   ``min_overlap`` of the larger one.

Both checks count *informative* tiles (tiles with texture in either image) that
disagree: a second photo of a similar scene (a burst shot, the same face in
another photo, a stereo pair) has whole regions that differ, while a copy
differs at most where a small watermark was added. Flat tiles (white
backgrounds, sky) carry no evidence either way and are left out, so two
different portraits on white do not pass on their backgrounds.

    >>> import skimage
    >>> a = skimage.data.camera()
    >>> verify_arrays(a, a[::-1, ::-1].copy(), d4_index=3).accepted  # rot180 undone
    True
    >>> verify_arrays(a, skimage.data.moon(), d4_index=0).accepted
    False
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from curate.hashing import apply_d4, trim_box

_COMPARE_PX = 64  # pixel check: both images resized to this square
_TILES = 8  # tiles per side in both checks
_FEATURE_COMPARE_PX = 256  # feature check: long side of the overlap comparison
# Grey levels: contrast is normalised by max(std, this), so an almost flat
# image (an almost black frame) is not blown up into noise that "matches".
_MIN_NORM_STD = 8.0
# Keypoints per image. Brute-force matching costs grow with the square of this;
# 1000 leaves dozens of inliers on the 20% crops of benchmarks/dedupe_bench.py.
_ORB_FEATURES = 1000


@dataclass(frozen=True)
class VerifyOptions:
    """Thresholds of the pixel and feature checks (docs/dedupe.md explains tuning).

    ``tile_residual``: mean absolute difference of contrast-normalised grey
    levels (in standard deviations) above which a tile disagrees.
    ``max_bad_tiles``: fraction of informative tiles allowed to disagree (a
    watermark in a corner is ~2-5%; a moved subject is far more).
    """

    work_px: int = 512
    tile_residual: float = 0.5
    max_bad_tiles: float = 0.1
    min_informative_tiles: int = 8
    informative_std: float = 0.2
    min_inliers: int = 20
    # The overlap must hold at least ``min_containment`` of one image (a crop
    # keeping half the picture; a photo inside a screenshot holds all of it)
    # and at least ``min_overlap`` of the other (a photo in a 3x3 collage is 11%).
    min_overlap: float = 0.08
    min_containment: float = 0.5
    ratio_test: float = 0.8
    ransac_px: float = 3.0


@dataclass(frozen=True)
class PairCheck:
    """Outcome of verifying one candidate pair."""

    accepted: bool
    method: str  # "pixels", "features", or "" when rejected
    agreement: float  # fraction of informative tiles that agree (best check)
    detail: str
    # When one picture lies inside the other (a crop, a screenshot): "a" or "b",
    # the image that contains the other, and the other's corners in it as
    # fractions of its width and height ((4, 2) list, clockwise from top left).
    container: str = ""
    region: tuple[tuple[float, float], ...] = ()


# An image counts as contained when the overlap holds this much of it and
# clearly less of the other image.
_CONTAINED = 0.9
_PARTIAL = 0.8


def load_gray(path: str, work_px: int = 512) -> np.ndarray:
    """Decode ``path`` as displayed (EXIF orientation applied), grey, long side <= ``work_px``.

    JPEGs are decoded at reduced DCT scale, so this costs a fraction of a full decode.
    Raises :class:`curate.errors.CurateError` when the file cannot be decoded.
    """
    from curate.imageio import load_display

    img = load_display(path, draft_px=work_px).convert("L")
    if max(img.size) > work_px:
        img.thumbnail((work_px, work_px), Image.Resampling.BOX)
    return np.asarray(img)


def _trim(gray: np.ndarray) -> np.ndarray:
    top, bottom, left, right = trim_box(gray)
    h, w = gray.shape
    return gray[top:h - bottom, left:w - right]


def _resize(gray: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if gray.shape[1] >= size_wh[0] else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(gray.astype(np.float32), size_wh, interpolation=interp))


def tile_agreement(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, opts: VerifyOptions) -> tuple[float, int]:
    """(fraction of informative tiles that agree, number of informative tiles).

    ``a`` and ``b`` are aligned grey images of one size; ``mask`` marks the
    pixels both cover (None: all). The image is cut into 8x8 tiles; a tile
    counts when at least half of it is covered and either image has texture
    there, and agrees when the mean absolute difference of the contrast-
    normalised images is at most ``opts.tile_residual``.
    """
    import cv2

    a = cv2.GaussianBlur(a.astype(np.float32), (0, 0), 1.0)
    b = cv2.GaussianBlur(b.astype(np.float32), (0, 0), 1.0)
    inside = np.ones(a.shape, bool) if mask is None else mask
    if inside.sum() < 16:
        return 0.0, 0
    an = (a - a[inside].mean()) / max(float(a[inside].std()), _MIN_NORM_STD)
    bn = (b - b[inside].mean()) / max(float(b[inside].std()), _MIN_NORM_STD)
    th, tw = a.shape[0] // _TILES, a.shape[1] // _TILES

    def tiles(x: np.ndarray) -> np.ndarray:  # (8, 8, pixels per tile)
        x = x[:th * _TILES, :tw * _TILES]
        return x.reshape(_TILES, th, _TILES, tw).swapaxes(1, 2).reshape(_TILES, _TILES, th * tw)

    m = tiles(inside.astype(np.float32))
    count = np.maximum(m.sum(-1), 1.0)
    ta, tb = tiles(an), tiles(bn)

    def std(t: np.ndarray) -> np.ndarray:
        mean = (t * m).sum(-1) / count
        return np.sqrt(np.maximum((t * t * m).sum(-1) / count - mean * mean, 0.0))

    residual = (np.abs(ta - tb) * m).sum(-1) / count
    covered = m.mean(-1) >= 0.5
    informative = covered & (np.maximum(std(ta), std(tb)) >= opts.informative_std)
    n = int(informative.sum())
    agree = int((informative & (residual <= opts.tile_residual)).sum())
    return (agree / n if n else 0.0), n


def pixel_check(a: np.ndarray, b_aligned: np.ndarray, opts: VerifyOptions) -> tuple[float, int]:
    """Tile agreement of two whole images (bars trimmed, squashed to one square)."""
    size = (_COMPARE_PX, _COMPARE_PX)
    return tile_agreement(_resize(_trim(a), size), _resize(_trim(b_aligned), size), None, opts)


_ORB: Any = None


def orb_features(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(keypoint xy array (n, 2), ORB descriptors or None) of a grey image."""
    import cv2

    global _ORB
    if _ORB is None:
        _ORB = cv2.ORB.create(nfeatures=_ORB_FEATURES, fastThreshold=10)
    keypoints, descriptors = _ORB.detectAndCompute(gray, None)
    xy = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return xy, descriptors


def feature_check(
    a: np.ndarray,
    b_aligned: np.ndarray,
    opts: VerifyOptions,
    feats_a: tuple[np.ndarray, np.ndarray | None] | None = None,
    feats_b: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> tuple[float, str, tuple[str, tuple[tuple[float, float], ...]]]:
    """(tile agreement on the overlap, detail, containment) after aligning b onto a by ORB + RANSAC.

    The containment is :func:`_containment`'s: which image holds the other, and where.
    """
    import cv2

    xa, da = feats_a if feats_a is not None else orb_features(a)
    xb, db = feats_b if feats_b is not None else orb_features(b_aligned)
    if da is None or db is None or len(xa) < 8 or len(xb) < 8:
        return 0.0, "too few keypoints", ("", ())
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(db, da, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < opts.ratio_test * p[1].distance]
    if len(good) < opts.min_inliers:
        return 0.0, f"{len(good)} keypoint matches < {opts.min_inliers}", ("", ())
    src = xb[[g.queryIdx for g in good]]
    dst = xa[[g.trainIdx for g in good]]
    model, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=opts.ransac_px, maxIters=2000, confidence=0.995)
    n_in = int(inliers.sum()) if inliers is not None else 0
    if model is None or n_in < opts.min_inliers:
        return 0.0, f"{n_in} geometric inliers < {opts.min_inliers}", ("", ())
    scale = float(np.hypot(model[0, 0], model[1, 0]))
    if not 0.125 <= scale <= 8.0:
        return 0.0, f"scale {scale:.2f} out of range", ("", ())
    h, w = a.shape
    warped = cv2.warpAffine(b_aligned.astype(np.float32), model, (w, h), flags=cv2.INTER_LINEAR)
    warped_ones = cv2.warpAffine(np.ones(b_aligned.shape, np.uint8), model, (w, h), flags=cv2.INTER_NEAREST)
    cover = cv2.erode(warped_ones, np.ones((5, 5), np.uint8)) > 0
    overlap = float(cover.sum())
    frac_a = overlap / (h * w)
    frac_b = overlap / (b_aligned.shape[0] * b_aligned.shape[1] * scale * scale)
    if max(frac_a, frac_b) < opts.min_containment or min(frac_a, frac_b) < opts.min_overlap:
        return 0.0, f"overlap covers {frac_a:.0%} / {frac_b:.0%} of the images", ("", ())
    k = _FEATURE_COMPARE_PX / max(h, w)
    size = (max(16, round(w * k / _TILES) * _TILES), max(16, round(h * k / _TILES) * _TILES))
    m_small = cv2.resize(cover.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    agreement, n_tiles = tile_agreement(_resize(a, size), _resize(warped, size), m_small, opts)
    angle = float(np.degrees(np.arctan2(model[1, 0], model[0, 0])))
    detail = f"{n_in} inliers, scale {scale:.2f}, angle {angle:.1f} deg, {n_tiles} tiles"
    return agreement, detail, _containment(model, a.shape, b_aligned.shape, frac_a, frac_b)


def _containment(model: np.ndarray, shape_a: tuple[int, ...], shape_b: tuple[int, ...], frac_a: float,
                 frac_b: float) -> tuple[str, tuple[tuple[float, float], ...]]:
    """("a" or "b": which image contains the other, the other's corners in it as fractions), or ("", ())."""
    import cv2

    if frac_b >= _CONTAINED and frac_a < _PARTIAL:
        inner, outer, m = shape_b, shape_a, model
        who = "a"
    elif frac_a >= _CONTAINED and frac_b < _PARTIAL:
        inner, outer, m = shape_a, shape_b, cv2.invertAffineTransform(model)
        who = "b"
    else:
        return "", ()
    h, w = inner[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    mapped = corners @ m[:, :2].T + m[:, 2]
    oh, ow = outer[:2]
    frac = np.clip(mapped / [ow, oh], 0.0, 1.0)
    return who, tuple((round(float(x), 4), round(float(y), 4)) for x, y in frac)


def verify_arrays(a: np.ndarray, b: np.ndarray, d4_index: int = 0, opts: VerifyOptions | None = None) -> PairCheck:
    """Is ``b`` (after ``D4_NAMES[d4_index]``) a near copy of ``a``? Grey uint8 arrays."""
    b_aligned = np.asarray(apply_d4(Image.fromarray(b), d4_index)) if d4_index else b
    return _decide(a, b_aligned, opts or VerifyOptions(), lambda: (orb_features(a), orb_features(b_aligned)))


def _decide(a: np.ndarray, b: np.ndarray, opts: VerifyOptions, features: Callable[[], tuple[Any, Any]]) -> PairCheck:
    """The pixel check, then (only if needed) the feature check, of aligned images."""
    need = 1.0 - opts.max_bad_tiles
    agreement, n_tiles = pixel_check(a, b, opts)
    if n_tiles >= opts.min_informative_tiles and agreement >= need:
        return PairCheck(True, "pixels", round(agreement, 3), f"{n_tiles} informative tiles")
    fa, fb = features()
    f_agreement, detail, (container, region) = feature_check(a, b, opts, fa, fb)
    if f_agreement >= need:
        return PairCheck(True, "features", round(f_agreement, 3), detail, container, region)
    why = f"pixels agree on {agreement:.0%} of {n_tiles} tiles; features: {detail}"
    return PairCheck(False, "", round(max(agreement, f_agreement), 3), why)


class _Images:
    """Small LRU cache of decoded images (and, once needed, their ORB features), per worker."""

    def __init__(self, work_px: int, size: int = 256) -> None:
        self.work_px = work_px
        self.size = size
        self.items: OrderedDict[tuple[str, int, int, int], list[Any]] = OrderedDict()

    def get(self, path: str, d4_index: int) -> list[Any]:
        """[grey array, ORB features or None] of ``path`` turned by ``D4_NAMES[d4_index]``."""
        import os

        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)  # load_gray reports the file
        key = (path, *stamp, d4_index)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        base = self.items.get((path, *stamp, 0))
        gray = base[0] if base is not None else load_gray(path, self.work_px)
        if d4_index:
            gray = np.asarray(apply_d4(Image.fromarray(gray), d4_index))
        value = [gray, None]
        self.items[key] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value

    @staticmethod
    def features(item: list[Any]) -> Any:
        if item[1] is None:
            item[1] = orb_features(item[0])
        return item[1]


@functools.cache
def _images(work_px: int) -> _Images:
    return _Images(work_px)


def verify_paths(task: tuple[str, str, int, VerifyOptions]) -> PairCheck:
    """Verify one pair of files: is ``path_b`` turned by ``D4_NAMES[d4]`` a near copy of ``path_a``?

    A plain function of its arguments, for a process pool. Undecodable files
    give a rejected check whose detail says why.
    """
    from curate.errors import CurateError

    path_a, path_b, d4_index, opts = task
    cache = _images(opts.work_px)
    try:
        a = cache.get(path_a, 0)
        b = cache.get(path_b, d4_index)
    except CurateError as e:
        return PairCheck(False, "", 0.0, str(e))
    check = _decide(a[0], b[0], opts, lambda: (cache.features(a), cache.features(b)))
    if check.container == "b" and d4_index:  # corners found in b turned by d4: give them in b as stored
        region = tuple(undo_d4_point(x, y, d4_index) for x, y in check.region)
        check = PairCheck(check.accepted, check.method, check.agreement, check.detail, "b", region)
    return check


def undo_d4_point(x: float, y: float, d4_index: int) -> tuple[float, float]:
    """A point given as fractions of an image turned by ``D4_NAMES[d4_index]``, in the unturned image.

    >>> undo_d4_point(0.25, 0.1, 2)  # mirror
    (0.75, 0.1)
    """
    from curate.hashing import _D4_OPS

    t, mirror, flip = _D4_OPS[d4_index]
    if flip:
        y = 1.0 - y
    if mirror:
        x = 1.0 - x
    if t:
        x, y = y, x
    return round(x, 4), round(y, 4)
