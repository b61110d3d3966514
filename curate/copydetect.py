"""Copy detection with local features: crops, screenshots, captions, frames and turns.

The whole-image hashes of :mod:`curate.hashing` find copies whose picture as a
whole survives (resized, re-encoded, mirrored, slightly cropped). A copy that
keeps only part of the picture (a crop to half the area), or shows it inside
something larger (a screenshot, a frame, a caption band), or turns it by 15-30
degrees, shares only *parts* of its picture with the original. The classic way
to find those without weights is local features with spatial verification
(Lowe 2004; Sivic and Zisserman 2003; Ke, Sukthankar and Huston 2004 for
near-duplicate retrieval); this module does it in three steps:

1. **Describe, once, at ingest** (:func:`describe`, called by the ingest probe
   on the image it decoded anyway): up to ``N_KEYPOINTS`` ORB keypoints (OpenCV)
   of the grey image at ``FEATURE_PX`` on its long side, each with its position,
   its 256-bit descriptor, and the descriptor of the same point in the mirrored
   image. ORB is rotation invariant, so 90-degree and small turns need nothing
   more; the mirrored descriptors make mirrors searchable from the stored data.
   Stored as one base64 string per row (``keypoints`` column, about 11 KB).
2. **Candidates, sub-quadratic** (:func:`candidate_pairs`): locality-sensitive
   hashing of the mirror-invariant descriptor ``d & mirror(d)``: ``LSH_TABLES``
   tables keyed by ``LSH_BITS`` bits each. Two images become a candidate when
   at least ``MIN_VOTES`` distinct keypoint pairs collide and lie within
   ``MAX_DESCRIPTOR_BITS`` bits. Buckets with more than ``BUCKET_CAP`` keypoints
   are stop words (a smooth ramp, a UI element) and vote for nothing, so the
   work grows with the number of keypoints, not with its square.
3. **Geometry on the stored keypoints** (:func:`match_features`): nearest
   descriptors with a ratio test, then a similarity transform (rotation, scale,
   shift; also a change of aspect ratio: an affine map) fitted with RANSAC, for the plain and the mirrored descriptors; no
   image is decoded. Pairs with at least ``MIN_INLIERS`` inliers go on to the
   pixel verification of :mod:`curate.verify`, as every dedupe candidate does.

    >>> import skimage
    >>> a = skimage.data.astronaut()[..., 0]
    >>> fa, fb = decode(describe(a)), decode(describe(a[100:400, 50:450].copy()))
    >>> m = match_features(fa, fb)
    >>> m.inliers >= MIN_INLIERS, m.mirror
    (True, False)
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

# Long side of the grey image keypoints are taken from. The ingest probe
# decodes JPEGs at 1/2-1/8 scale to at least 128 px a side; 224 px keeps the
# probe's single decode (measured in docs/benchmarks.md).
FEATURE_PX = 224
N_KEYPOINTS = 128
_DESC_BYTES = 32
_XY_SCALE = 8  # positions stored in 1/8 px
# ORB: 4 pyramid levels 1.3 apart cover the 0.5-2x scale changes of crops and
# screenshots; a 15 px patch suits the small images.
_ORB_LEVELS, _ORB_SCALE, _ORB_PATCH_PX = 4, 1.3, 15

# Candidate search (measured in benchmarks/dedupe_bench.py and docs/dedupe.md).
LSH_TABLES = 12
LSH_BITS = 24
BUCKET_CAP = 8
MAX_DESCRIPTOR_BITS = 40
MIN_VOTES = 2
# Geometric check on the stored keypoints.
MIN_INLIERS = 8
_RATIO = 0.85
_MATCH_BITS = 64
_RANSAC_PX = 3.0
_MAX_SCALE = 6.0  # a copy shown at 1/6 to 6 times the other's size
_MAX_ANISOTROPY = 3.0  # resized to another aspect ratio, at most 3x


@dataclass(frozen=True)
class Features:
    """Decoded ``keypoints`` value: positions (n, 2) in the ``size_wh`` frame, descriptors, mirrored descriptors."""

    size_wh: tuple[int, int]
    xy: np.ndarray
    desc: np.ndarray
    mirror_desc: np.ndarray

    @property
    def invariant(self) -> np.ndarray:
        """Mirror-invariant descriptor: the bits set in both the plain and the mirrored descriptor."""
        return self.desc & self.mirror_desc


@functools.cache
def _orb() -> Any:
    import cv2

    # One image of ~224 px is far too small to split across threads: OpenCV's
    # threads only fight the other worker processes for the cores (measured
    # 30 ms instead of 1-2 ms a call on a loaded 2-core machine).
    cv2.setNumThreads(1)
    return cv2.ORB.create(nfeatures=N_KEYPOINTS, scaleFactor=_ORB_SCALE, nlevels=_ORB_LEVELS,
                          edgeThreshold=_ORB_PATCH_PX, patchSize=_ORB_PATCH_PX, fastThreshold=10)


def feature_image(gray: np.ndarray) -> np.ndarray:
    """The grey image resized (down only) to ``FEATURE_PX`` on its long side."""
    import cv2

    h, w = gray.shape
    k = FEATURE_PX / max(h, w)
    if k >= 1:
        return np.ascontiguousarray(gray)
    return cv2.resize(gray, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def describe(gray: np.ndarray) -> str | None:
    """The ``keypoints`` value of one grey (uint8, 2-D) displayed image; None when it has no keypoints."""
    import cv2

    img = feature_image(np.asarray(gray, dtype=np.uint8))
    h, w = img.shape
    orb = _orb()
    kps, desc = orb.detectAndCompute(img, None)  # one image pyramid for both
    if desc is None or not len(kps):
        return None
    # The same points in the mirrored image: x mirrored, angle mirrored.
    mirrored = np.ascontiguousarray(img[:, ::-1])
    m_kps = [cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave)
             for k in kps]
    m_kps, m_desc = orb.compute(mirrored, m_kps)
    xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    m_xy = np.array([(w - 1 - k.pt[0], k.pt[1]) for k in m_kps], np.float32).reshape(-1, 2)
    if len(m_kps) != len(kps):  # compute() dropped points near the border: keep the points both have
        pos = {(round(float(x), 2), round(float(y), 2)): i for i, (x, y) in enumerate(m_xy)}
        pairs = [(i, pos.get((round(float(x), 2), round(float(y), 2)))) for i, (x, y) in enumerate(xy)]
        keep = [(i, j) for i, j in pairs if j is not None]
        if not keep:
            return None
        xy = xy[[i for i, _ in keep]]
        desc = desc[[i for i, _ in keep]]
        m_desc = m_desc[[j for _, j in keep]]
    return encode(Features((w, h), xy, desc, m_desc))


def encode(f: Features) -> str:
    """Pack features into the base64 string stored in the manifest."""
    n = len(f.xy)
    head = np.array([f.size_wh[0], f.size_wh[1], n], "<u2").tobytes()
    xy = np.clip(np.round(f.xy * _XY_SCALE), 0, 65535).astype("<u2").tobytes()
    body = head + xy + np.ascontiguousarray(f.desc, np.uint8).tobytes() + np.ascontiguousarray(f.mirror_desc, np.uint8).tobytes()
    return base64.b64encode(body).decode("ascii")


def decode(text: str) -> Features:
    """Unpack a ``keypoints`` value (raises ValueError when it is malformed)."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) < 6:
        raise ValueError("keypoints value too short")
    w, h, n = np.frombuffer(raw[:6], "<u2").tolist()
    need = 6 + n * (4 + 2 * _DESC_BYTES)
    if len(raw) != need:
        raise ValueError(f"keypoints value of {len(raw)} bytes, expected {need} for {n} keypoints")
    xy = np.frombuffer(raw, "<u2", count=2 * n, offset=6).reshape(n, 2).astype(np.float32) / _XY_SCALE
    o = 6 + 4 * n
    desc = np.frombuffer(raw, np.uint8, count=n * _DESC_BYTES, offset=o).reshape(n, _DESC_BYTES)
    mirror = np.frombuffer(raw, np.uint8, count=n * _DESC_BYTES, offset=o + n * _DESC_BYTES).reshape(n, _DESC_BYTES)
    return Features((int(w), int(h)), xy, desc, mirror)


@functools.cache
def _lsh_bits(seed: int = 0) -> np.ndarray:
    """(LSH_TABLES, LSH_BITS) bit positions of the 256 sampled by each table (fixed, so runs agree)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(8 * _DESC_BYTES, LSH_BITS, replace=False) for _ in range(LSH_TABLES)])


def candidate_pairs(features: list[Features | None], *, min_votes: int = MIN_VOTES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, votes): image pairs (positions in ``features``, a < b) sharing at least ``min_votes`` keypoints.

    Sub-quadratic: keypoints meet only in LSH buckets of at most ``BUCKET_CAP``
    members, so the pairs looked at grow with the number of keypoints.

    >>> import skimage
    >>> img = skimage.data.camera()
    >>> f = [decode(describe(img)), decode(describe(img[50:450, 40:500].copy())), decode(describe(skimage.data.moon()))]
    >>> a, b, votes = candidate_pairs(f)
    >>> (0, 1) in set(zip(a.tolist(), b.tolist()))
    True
    """
    owners = [np.full(len(f.xy), i, np.int64) for i, f in enumerate(features) if f is not None and len(f.xy)]
    empty = np.zeros(0, np.int64)
    if len(owners) < 2:
        return empty, empty, empty
    img = np.concatenate(owners)
    desc = np.concatenate([f.invariant for f in features if f is not None and len(f.xy)])
    found = []
    for sel in _lsh_bits():
        key = np.zeros(len(desc), np.uint32)
        for k, bit in enumerate(sel.tolist()):  # the table's bits, gathered from the packed bytes
            key |= ((desc[:, bit >> 3] >> (7 - (bit & 7))) & 1).astype(np.uint32) << np.uint32(k)
        found.append(_bucket_pairs(key, BUCKET_CAP))
    kp = _distinct(np.concatenate(found)) if found else empty
    k1, k2 = np.divmod(kp, len(img))
    near = np.bitwise_count(desc[k1] ^ desc[k2]).sum(axis=1) <= MAX_DESCRIPTOR_BITS
    a, b = img[k1[near]], img[k2[near]]
    other = a != b
    lo, hi = np.minimum(a[other], b[other]), np.maximum(a[other], b[other])
    n = len(features)
    pair, votes = _distinct(lo * n + hi, counts=True)
    keep = votes >= min_votes
    a, b = np.divmod(pair[keep], n)
    return a, b, votes[keep]


def _distinct(x: np.ndarray, counts: bool = False) -> Any:
    """Sorted distinct values (and their counts) by one sort: faster here than np.unique's hashing."""
    x = np.sort(x, kind="stable")
    first = np.flatnonzero(np.r_[True, x[1:] != x[:-1]]) if len(x) else np.zeros(0, np.int64)
    if not counts:
        return x[first]
    return x[first], np.diff(np.r_[first, len(x)])


def _bucket_pairs(key: np.ndarray, cap: int) -> np.ndarray:
    """Every pair (i < j, encoded i * n + j) of entries sharing a key, in buckets of 2..cap entries."""
    n = len(key)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    size = np.diff(np.r_[start, n])
    ok = (size >= 2) & (size <= cap)
    start, size = start[ok], size[ok]
    out = []
    for off in range(1, cap):  # pair each entry with the one `off` places later in its bucket
        has = size > off
        if not has.any():
            break
        s, z = start[has], size[has]
        first = np.repeat(s, z - off) + (np.arange((z - off).sum()) - np.repeat(np.cumsum(z - off) - (z - off), z - off))
        i, j = order[first], order[first + off]
        out.append(np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def plausible(model: np.ndarray) -> bool:
    """Is a 2x3 affine map one an edit makes: scale 1/6..6, aspect changed at most 3x, no reflection?

    Degenerate fits (many points onto one) and strong shears are refused.

    >>> plausible(np.array([[0.5, 0, 10], [0, 0.7, 3]])), plausible(np.array([[0.01, 0, 0], [0, 0.01, 0]]))
    (True, False)
    """
    sv = np.linalg.svd(np.asarray(model, np.float64)[:, :2], compute_uv=False)
    det = float(np.linalg.det(np.asarray(model, np.float64)[:, :2]))
    return bool(det > 0 and 1 / _MAX_SCALE <= sv[1] and sv[0] <= _MAX_SCALE and sv[0] <= _MAX_ANISOTROPY * sv[1])


@dataclass(frozen=True)
class FeatureMatch:
    """Geometry found between two images' stored keypoints.

    ``model`` maps points of image b (mirrored first when ``mirror``) into
    image a, both in their ``Features.size_wh`` frames (2x3 affine), or None.
    """

    inliers: int
    mirror: bool
    model: np.ndarray | None


def match_features(fa: Features, fb: Features) -> FeatureMatch:
    """Best affine map from b to a on the stored keypoints, plain or mirrored (see :func:`plausible`)."""
    import cv2

    best = FeatureMatch(0, False, None)
    if len(fa.xy) < 4 or len(fb.xy) < 4:
        return best
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for mirror, db in ((False, fb.desc), (True, fb.mirror_desc)):
        knn = matcher.knnMatch(np.ascontiguousarray(db), np.ascontiguousarray(fa.desc), k=2)
        good = [p[0] for p in knn if len(p) == 2 and p[0].distance <= _MATCH_BITS and p[0].distance < _RATIO * p[1].distance]
        if len(good) < max(4, best.inliers + 1):
            continue
        src = fb.xy[[g.queryIdx for g in good]].copy()
        if mirror:
            src[:, 0] = fb.size_wh[0] - 1 - src[:, 0]
        dst = fa.xy[[g.trainIdx for g in good]]
        # A full affine map: a copy may also have been resized to another aspect ratio.
        model, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX,
                                           maxIters=500, confidence=0.99)
        if model is None or mask is None or not plausible(model):
            continue
        # Inliers count once per keypoint of a (several of b's may land on one).
        n_in = len({g.trainIdx for g, ok in zip(good, mask.ravel(), strict=True) if ok})
        if n_in > best.inliers:
            best = FeatureMatch(n_in, mirror, model)
    return best


def find_copy_pairs(values: list[str | None], *, min_inliers: int = MIN_INLIERS,
                    hints: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, inliers, mirror) of the image pairs whose stored keypoints agree on a geometry.

    ``values``: the ``keypoints`` column (None or malformed values take no part).
    ``hints``, when given, receives per pair found the geometry for
    :func:`curate.verify.verify_paths`: (model b -> a, a's and b's feature-image sizes).
    """
    feats: list[Features | None] = []
    for v in values:
        try:
            feats.append(decode(v) if isinstance(v, str) and v else None)
        except ValueError:
            feats.append(None)
    a, b, _ = candidate_pairs(feats)
    inl = np.zeros(len(a), np.int64)
    mir = np.zeros(len(a), bool)
    found: list[Any] = []
    for k, (i, j) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        m = match_features(feats[i], feats[j])  # type: ignore[arg-type]
        inl[k], mir[k] = m.inliers, m.mirror
        found.append(None if m.model is None else
                     (m.model.round(5).tolist(), feats[i].size_wh, feats[j].size_wh))  # type: ignore[union-attr]
    ok = inl >= min_inliers
    if hints is not None:
        hints.extend(h for h, keep in zip(found, ok.tolist(), strict=True) if keep)
    return a[ok], b[ok], inl[ok], mir[ok]
