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
_FINE_COMPARE_PX = 256  # and, when they agree there, to this one
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
    # What lies around the contained picture in the container: "picture" (the
    # contained image is a crop of it) or "plain" (flat margins, a caption band,
    # a window's chrome: the container is the original padded or shown).
    surround: str = ""


# An image counts as contained when the overlap holds this much of it and
# clearly less of the other image.
_CONTAINED = 0.85
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
    """Tile agreement of two whole images (bars trimmed, squashed to one square).

    Compared at 64 px, then, when that agrees, at ``_FINE_COMPARE_PX``: at 64 px
    two pages of one document layout (same rules and columns, other words) are
    the same grey stripes (issue 15); their words differ at the finer size.
    """
    a, b_aligned = _trim(a), _trim(b_aligned)
    size = (_COMPARE_PX, _COMPARE_PX)
    agreement, n = tile_agreement(_resize(a, size), _resize(b_aligned, size), None, opts)
    if agreement < 1.0 - opts.max_bad_tiles or n < opts.min_informative_tiles:
        return agreement, n
    side = min(_FINE_COMPARE_PX, max(a.shape), max(b_aligned.shape))
    if side <= 2 * _COMPARE_PX:
        return agreement, n
    fine_agreement, fine_n = tile_correlation(_resize(a, (side, side)), _resize(b_aligned, (side, side)), opts)
    return (fine_agreement, fine_n) if fine_n >= opts.min_informative_tiles and fine_agreement < agreement \
        else (agreement, n)


# Fine check: a textured tile agrees when the two images correlate at least this well there.
_MIN_TILE_CORRELATION = 0.8
_FINE_TILES = 16


def tile_correlation(a: np.ndarray, b: np.ndarray, opts: VerifyOptions,
                     mask: np.ndarray | None = None) -> tuple[float, int]:
    """(fraction of textured tiles whose contents correlate, number of textured tiles) of two same-size images.

    Unlike :func:`tile_agreement`'s mean difference, a correlation sees sparse
    detail (the words of a page, a texture inside a high-contrast frame) that a
    tile's mean hardly moves. ``mask``: only tiles it covers entirely count.
    """
    import cv2

    a = cv2.GaussianBlur(a.astype(np.float32), (0, 0), 1.5)
    b = cv2.GaussianBlur(b.astype(np.float32), (0, 0), 1.5)
    th, tw = a.shape[0] // _FINE_TILES, a.shape[1] // _FINE_TILES

    def tiles(x: np.ndarray) -> np.ndarray:
        x = x[:th * _FINE_TILES, :tw * _FINE_TILES]
        return x.reshape(_FINE_TILES, th, _FINE_TILES, tw).swapaxes(1, 2).reshape(-1, th * tw)

    ta, tb = tiles(a), tiles(b)
    ta, tb = ta - ta.mean(axis=1, keepdims=True), tb - tb.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((ta * ta).mean(1)), np.sqrt((tb * tb).mean(1))
    textured = (sa >= 4.0) & (sb >= 4.0)
    if mask is not None:
        textured &= tiles(mask.astype(np.float32)).min(axis=1) > 0
    corr = (ta * tb).mean(1) / np.maximum(sa * sb, 1e-6)
    n = int(textured.sum())
    return (float((corr[textured] >= _MIN_TILE_CORRELATION).mean()) if n else 1.0), n


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
) -> tuple[float, str, tuple[str, tuple[tuple[float, float], ...], str]]:
    """(tile agreement on the overlap, detail, containment) after aligning b onto a by ORB + RANSAC.

    The containment is :func:`_containment`'s: which image holds the other, and where.
    """
    import cv2

    xa, da = feats_a if feats_a is not None else orb_features(a)
    xb, db = feats_b if feats_b is not None else orb_features(b_aligned)
    if da is None or db is None or len(xa) < 8 or len(xb) < 8:
        return 0.0, "too few keypoints", ("", (), "")
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(db, da, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < opts.ratio_test * p[1].distance]
    if len(good) < opts.min_inliers:
        return 0.0, f"{len(good)} keypoint matches < {opts.min_inliers}", ("", (), "")
    src = xb[[g.queryIdx for g in good]]
    dst = xa[[g.trainIdx for g in good]]
    model, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=opts.ransac_px, maxIters=2000, confidence=0.995)
    n_in = int(inliers.sum()) if inliers is not None else 0
    if model is None or n_in < opts.min_inliers:
        return 0.0, f"{n_in} geometric inliers < {opts.min_inliers}", ("", (), "")
    return model_check(a, b_aligned, model, opts, f"{n_in} inliers")


def model_check(a: np.ndarray, b_aligned: np.ndarray, model: np.ndarray, opts: VerifyOptions,
                found: str) -> tuple[float, str, tuple[str, tuple[tuple[float, float], ...], str]]:
    """Tile agreement of ``a`` with ``b_aligned`` warped by the 2x3 similarity ``model`` (b -> a), on their overlap."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(model[:, :2]))))  # a similarity's scale; an affine map's mean one
    if not 0.125 <= scale <= 8.0:
        return 0.0, f"scale {scale:.2f} out of range", ("", (), "")
    h, w = a.shape
    warped = cv2.warpAffine(b_aligned.astype(np.float32), model, (w, h), flags=cv2.INTER_LINEAR)
    warped_ones = cv2.warpAffine(np.ones(b_aligned.shape, np.uint8), model, (w, h), flags=cv2.INTER_NEAREST)
    cover = cv2.erode(warped_ones, np.ones((5, 5), np.uint8)) > 0
    overlap = float(cover.sum())
    frac_a = overlap / (h * w)
    frac_b = overlap / (b_aligned.shape[0] * b_aligned.shape[1] * scale * scale)
    if max(frac_a, frac_b) < opts.min_containment or min(frac_a, frac_b) < opts.min_overlap:
        return 0.0, f"overlap covers {frac_a:.0%} / {frac_b:.0%} of the images", ("", (), "")
    k = _FEATURE_COMPARE_PX / max(h, w)
    size = (max(16, round(w * k / _TILES) * _TILES), max(16, round(h * k / _TILES) * _TILES))
    m_small = cv2.resize(cover.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    agreement, n_tiles = tile_agreement(_resize(a, size), _resize(warped, size), m_small, opts)
    if agreement >= 1.0 - opts.max_bad_tiles:
        # The fine check on the overlap too: two screenshots of one app window, or two memes of one caption
        # template, line up on their shared chrome, and a texture inside it hardly moves the mean difference.
        fine, fine_n = tile_correlation(_resize(a, size), _resize(warped, size), opts, m_small)
        if fine_n >= opts.min_informative_tiles:
            agreement = min(agreement, fine)
    angle = float(np.degrees(np.arctan2(model[1, 0], model[0, 0])))
    detail = f"{found}, scale {scale:.2f}, angle {angle:.1f} deg, {n_tiles} tiles"
    return agreement, detail, _containment(model, a, b_aligned, frac_a, frac_b)


def _containment(model: np.ndarray, a: np.ndarray, b: np.ndarray, frac_a: float,
                 frac_b: float) -> tuple[str, tuple[tuple[float, float], ...], str]:
    """(which image contains the other, "a" or "b"; the other's corners in it as fractions; its surround), or ("", (), "")."""
    import cv2

    if frac_b >= _CONTAINED and frac_a < _PARTIAL:
        inner, outer, m = b, a, model
        who = "a"
    elif frac_a >= _CONTAINED and frac_b < _PARTIAL:
        inner, outer, m = a, b, cv2.invertAffineTransform(model)
        who = "b"
    else:
        return "", (), ""
    h, w = inner.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    mapped = corners @ m[:, :2].T + m[:, 2]
    oh, ow = outer.shape[:2]
    frac = np.clip(mapped / [ow, oh], 0.0, 1.0)
    inside = cv2.warpAffine(np.ones((h, w), np.uint8), m, (ow, oh), flags=cv2.INTER_NEAREST) > 0
    return who, tuple((round(float(x), 4), round(float(y), 4)) for x, y in frac), _surround(outer, inside)


# Around a crop the picture goes on; around a padded or shown original lie a
# frame, a flat margin, a caption band or a window's chrome. Measured on a thin
# ring just outside the contained picture against one just inside it: the
# picture goes on when the outer ring varies at least this much as the inner.
_RING_PX = 4
_PICTURE_RING = 0.5


def _surround(outer: np.ndarray, inside: np.ndarray) -> str:
    """"picture" or "plain": what the container shows just outside the contained picture (see ``_RING_PX``)."""
    import cv2

    kernel = np.ones((2 * _RING_PX + 1, 2 * _RING_PX + 1), np.uint8)
    inside_u8 = inside.astype(np.uint8)
    core = cv2.erode(inside_u8, kernel, borderType=cv2.BORDER_REPLICATE) > 0
    grown = cv2.dilate(inside_u8, kernel) > 0
    ring_in = inside & ~core
    ring_out = grown & ~inside
    if ring_out.sum() < 4 * _RING_PX or ring_in.sum() < 4 * _RING_PX:
        return "plain"
    gray = outer.astype(np.float32)
    return "picture" if gray[ring_out].std() >= _PICTURE_RING * max(float(gray[ring_in].std()), 1.0) else "plain"


def verify_arrays(a: np.ndarray, b: np.ndarray, d4_index: int = 0, opts: VerifyOptions | None = None) -> PairCheck:
    """Is ``b`` (after ``D4_NAMES[d4_index]``) a near copy of ``a``? Grey uint8 arrays."""
    b_aligned = np.asarray(apply_d4(Image.fromarray(b), d4_index)) if d4_index else b
    return _decide(a, b_aligned, opts or VerifyOptions(), lambda: (orb_features(a), orb_features(b_aligned)))


def _decide(a: np.ndarray, b: np.ndarray, opts: VerifyOptions, features: Callable[[], tuple[Any, Any]],
            model: np.ndarray | None = None) -> PairCheck:
    """The pixel check, then (only if needed) the stored-keypoint ``model`` (b -> a), then the feature check."""
    need = 1.0 - opts.max_bad_tiles
    agreement, n_tiles = pixel_check(a, b, opts)
    if n_tiles >= opts.min_informative_tiles and agreement >= need:
        return PairCheck(True, "pixels", round(agreement, 3), f"{n_tiles} informative tiles")
    if model is not None:
        k_agreement, detail, (container, region, surround) = model_check(a, b, model, opts, "stored keypoints")
        if k_agreement >= need:
            return PairCheck(True, "keypoints", round(k_agreement, 3), detail, container, region, surround)
    fa, fb = features()
    f_agreement, detail, (container, region, surround) = feature_check(a, b, opts, fa, fb)
    if f_agreement >= need:
        return PairCheck(True, "features", round(f_agreement, 3), detail, container, region, surround)
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


def verify_paths(task: tuple[Any, ...]) -> PairCheck:
    """Verify one pair of files: is ``path_b`` turned by ``D4_NAMES[d4]`` a near copy of ``path_a``?

    ``task``: (path_a, path_b, d4, options[, hint]). ``hint``, when given, is
    the geometry found on the stored keypoints (:mod:`curate.copydetect`):
    (2x3 model from b, turned, to a; a's and b's feature-image sizes (w, h)),
    tried before keypoints are detected again. A plain function of its
    arguments, for a process pool. Undecodable files give a rejected check
    whose detail says why.
    """
    from curate.errors import CurateError

    path_a, path_b, d4_index, opts = task[:4]
    hint = task[4] if len(task) > 4 else None
    cache = _images(opts.work_px)
    try:
        a = cache.get(path_a, 0)
        b = cache.get(path_b, d4_index)
    except CurateError as e:
        return PairCheck(False, "", 0.0, str(e))
    model = None
    if hint is not None:
        m, (wa, _), (wb, _) = hint
        sa, sb = a[0].shape[1] / max(wa, 1), b[0].shape[1] / max(wb, 1)
        model = np.asarray(m, np.float64).copy()
        model[:, :2] *= sa / sb
        model[:, 2] *= sa
    check = _decide(a[0], b[0], opts, lambda: (cache.features(a), cache.features(b)), model)
    if check.container == "b" and d4_index:  # corners found in b turned by d4: give them in b as stored
        region = tuple(undo_d4_point(x, y, d4_index) for x, y in check.region)
        check = PairCheck(check.accepted, check.method, check.agreement, check.detail, "b", region, check.surround)
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
