"""The near-copy search of ``curate dedupe``, shared with ``curate check`` (issue 15).

Candidates come from the stored hashes (:mod:`curate.index`: whole image,
flips/turns, crop windows) and from the stored keypoints
(:mod:`curate.copydetect`: crops to half the picture, screenshots, frames,
captions, turns); every candidate pair is then verified on the pixels
(:mod:`curate.verify`) in a process pool. :func:`near_copy_pairs` runs all of
it over a table of rows; ``curate dedupe`` groups the verified pairs, and
``curate check`` fails when a verified pair straddles splits.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate.groups import KEEP_CRITERIA, UnionFind
from curate.parallel import WorkerCrash, WorkerPool
from curate.verify import PairCheck, VerifyOptions


@dataclass(kw_only=True)
class DedupeOptions:
    """Options of ``curate dedupe`` (see ``curate dedupe --help`` and docs/dedupe.md)."""

    max_hamming: int = 8  # d4hash bits for whole-image candidates (and crop windows)
    crops: bool = True  # also search crop windows
    verify: bool = True  # check candidate pairs on the pixels
    min_contrast: float = 3.0  # hash_contrast below this: no near-duplicate search
    priority: list[str] | None = None  # source names, most trusted first
    keep: tuple[str, ...] = KEEP_CRITERIA
    dry_run: bool = False
    report: Path | None = None  # .csv or .json
    conflicts: bool = False  # list every label conflict in the summary
    workers: int = 0  # 0: all cores
    max_partners: int = 32  # candidate pairs kept per image, nearest first
    copies: bool = True  # also search the stored keypoints (crops, screenshots, turns: curate.copydetect)
    verify_options: VerifyOptions = field(default_factory=VerifyOptions)
    progress: bool = False


# Whole-image matches need at most this many bits in the seven flipped/turned
# variants before the exact search is used; measured mirror/90-degree copies
# differ by 0-2 bits (docs/benchmarks.md), so the cheaper one-flip search is exact here.
_TURNED_EXACT_BITS = 5
# D4 variants queried: rot270 (index 6) is left out because a pair related by
# rot270 is found from its other side as rot90.
_TURNS = (1, 2, 3, 4, 5, 7)


def candidate_pairs(
    d4: np.ndarray,
    crops: np.ndarray | None,
    max_hamming: int,
) -> pd.DataFrame:
    """Candidate near-duplicate pairs among rows with hashes, from the Hamming index.

    ``d4``: uint64 d4hash per row; ``crops``: uint64 (rows, windows) or None.
    Returns one row per unordered pair: ``a``, ``b`` (positions, a < b),
    ``d4`` (turn ``D4_NAMES[d4]`` applied to image ``b`` lines it up with
    ``a``), ``hamming`` and ``kind`` (``identical``, ``whole``, ``turned``,
    ``crop``, ``window``), keeping the closest match of each pair.

    >>> h = np.array([0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0E, 0xFFFF0000FFFF0000], dtype=np.uint64)
    >>> candidate_pairs(h, None, 4)[["a", "b", "hamming", "kind"]].values.tolist()
    [[0, 1, 1, 'whole']]
    """
    from curate.hashing import d4_variants
    from curate.index import HammingIndex

    n = len(d4)
    frames: list[pd.DataFrame] = []
    if n < 2:
        return _empty_pairs()
    # Identical hashes: chain each to the first of its value (no quadratic blow-up).
    uniq, first, inverse = np.unique(d4, return_index=True, return_inverse=True)
    same = np.flatnonzero(first[inverse] != np.arange(n))
    if len(same):
        frames.append(_pairs(first[inverse[same]], same, 0, np.zeros(len(same), np.int64), "identical"))
    rep = first  # one row per distinct hash represents it in the searches
    index = HammingIndex(uniq, max_hamming)
    qi, xi, dist = index.search(uniq, exclude_self=True)
    frames.append(_pairs(rep[xi], rep[qi], 0, dist, "whole"))
    variants = d4_variants(uniq)
    turned_reach = min(index.flips, max(_TURNED_EXACT_BITS // index.blocks, 1))
    for t in _TURNS:
        # variants[t][q] ~ uniq[x]: turning image q by t lines it up with image x.
        qi, xi, dist = index.search(variants[t], reach=turned_reach)
        keep = qi != xi
        frames.append(_pairs(rep[xi[keep]], rep[qi[keep]], t, dist[keep], "turned"))
    if crops is not None:
        have = np.flatnonzero((crops != 0).any(axis=1)[rep])  # positions in uniq with windows
        wins = crops[rep[have]]
        for k in range(wins.shape[1]):
            # A window of q matches the whole of x: x is a crop of q.
            qi, xi, dist = index.search(wins[:, k], reach=min(index.flips, 1))
            q = have[qi]
            keep = q != xi
            frames.append(_pairs(rep[q[keep]], rep[xi[keep]], 0, dist[keep], "crop"))
            # The same window of both: turned a few degrees, a logo in another corner.
            w_index = HammingIndex(wins[:, k], max_hamming, table_flips=0)
            qi, xi, dist = w_index.search(wins[:, k], reach=min(w_index.flips, 1), exclude_self=True)
            frames.append(_pairs(rep[have[xi]], rep[have[qi]], 0, dist, "window"))
    pairs = pd.concat(frames, ignore_index=True)
    if not len(pairs):
        return _empty_pairs()
    kind_rank = pairs["kind"].map({"identical": 0, "whole": 1, "turned": 2, "crop": 3, "window": 4})
    pairs = pairs.assign(_k=kind_rank).sort_values(["hamming", "_k", "a", "b"], kind="mergesort")
    return pairs.drop_duplicates(["a", "b"]).drop(columns="_k").reset_index(drop=True)


def _pairs(a: np.ndarray, b: np.ndarray, d4: int, hamming: np.ndarray, kind: str) -> pd.DataFrame:
    """Pairs (image b turned by d4 ~ image a) normalised to a < b."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    turn = np.full(len(a), d4, np.int64)
    swap = a > b
    if swap.any():
        # From the other side the turn is the inverse: rot90 <-> rot270, others are their own.
        inverse = np.array([0, 1, 2, 3, 4, 6, 5, 7])
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        turn = np.where(swap, inverse[turn], turn)
    return pd.DataFrame({"a": a, "b": b, "d4": turn, "hamming": np.asarray(hamming, np.int64), "kind": kind})


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"a": pd.Series([], dtype=np.int64), "b": pd.Series([], dtype=np.int64),
                         "d4": pd.Series([], dtype=np.int64), "hamming": pd.Series([], dtype=np.int64),
                         "kind": pd.Series([], dtype=object)})


def cap_partners(pairs: pd.DataFrame, max_partners: int) -> pd.DataFrame:
    """Keep each image's ``max_partners`` nearest candidates (a guard against
    degenerate hashes that match thousands of images)."""
    if not len(pairs):
        return pairs
    ordered = pairs.sort_values(["hamming", "a", "b"], kind="mergesort")
    rank_a = ordered.groupby("a").cumcount()
    rank_b = ordered.groupby("b").cumcount()
    return ordered[(rank_a < max_partners) & (rank_b < max_partners)].sort_index()


def _pair_crashed(task: tuple[str, str, int, Any], crash: WorkerCrash) -> PairCheck:
    """A pair whose worker process died on it every time is not merged: it could not be verified. Which of
    the two files crashed the decoder is not known, so neither row is dropped; the reason is reported."""
    return PairCheck(False, "", 0.0, f"not verified: {crash.message()}")


def verify_candidates(paths: np.ndarray, a: np.ndarray, b: np.ndarray, d4: np.ndarray, known: np.ndarray,
                      options: DedupeOptions, *, geometry: dict[int, Any] | None = None,
                      hints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check candidate pairs on the pixels, nearest first, in parallel batches.

    ``known`` pairs (identical bytes) are accepted without decoding. A pair
    whose images are already joined through verified pairs is not decoded
    either (it cannot change the groups): its method is ``transitive``.
    Returns (accepted, method, agreement, why_not) per pair; ``geometry``, when
    given, receives ``pair number -> (container, region)`` for the verified
    pairs where one picture lies inside the other.
    """
    from curate.verify import verify_paths

    n = len(a)
    accepted = known.copy()
    methods = np.where(known, "exact", "").astype(object)
    agreement = np.where(known, 1.0, np.nan)
    why_not = np.full(n, "", dtype=object)
    uf = UnionFind(int(max(a.max(initial=0), b.max(initial=0))) + 1)
    for j in np.flatnonzero(known).tolist():
        uf.union(int(a[j]), int(b[j]))
    pending = np.flatnonzero(~known)
    workers = options.workers or os.cpu_count() or 1
    batch = max(64, 64 * workers)
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), unit="pair", file=sys.stderr, desc="verify")
    pool = None
    try:
        if workers > 1 and len(pending) >= 64:
            pool = WorkerPool(verify_paths, workers)
        queue: list[int] = [int(i) for i in pending]
        while queue:
            # One pair per group in a batch: a copy's other pairs into the same
            # group then become transitive, not decoded.
            todo: list[int] = []
            later: list[int] = []
            seen: set[int] = set()
            scanned = 0
            for i in queue:
                scanned += 1
                ra, rb = uf.find(int(a[i])), uf.find(int(b[i]))
                if ra == rb:
                    accepted[i], methods[i] = True, "transitive"
                    if bar:
                        bar.update()
                elif ra in seen or rb in seen:
                    later.append(i)
                else:
                    seen.update((ra, rb))
                    todo.append(i)
                    if len(todo) >= batch or scanned >= 16 * batch:
                        break
            queue = later + queue[scanned:]
            todo.sort(key=lambda i: (a[i], b[i]))  # a worker's image cache then serves repeats
            tasks = [(str(paths[a[i]]), str(paths[b[i]]), int(d4[i]), options.verify_options,
                      *(() if hints is None or not isinstance(hints[i], tuple) else (hints[i],))) for i in todo]
            if pool is not None:
                checks = pool.map(tasks, chunksize=max(1, len(tasks) // (workers * 4)), on_crash=_pair_crashed)
            else:
                checks = [verify_paths(t) for t in tasks]
            for i, c in zip(todo, checks, strict=True):
                accepted[i], agreement[i] = c.accepted, c.agreement
                methods[i] = c.method or "rejected"
                why_not[i] = "" if c.accepted else c.detail
                if c.accepted:
                    uf.union(int(a[i]), int(b[i]))
                    if geometry is not None and c.container:
                        geometry[i] = (c.container, c.region, c.surround)
            if bar:
                bar.update(len(todo))
    finally:
        if pool is not None:
            pool.close()
        if bar:
            bar.close()
    return accepted, methods, agreement, why_not


@dataclass
class NearPairs:
    """Candidate pairs of :func:`near_copy_pairs` (positions in its frame) and how each was verified."""

    pairs: pd.DataFrame
    a: np.ndarray
    b: np.ndarray
    accepted: np.ndarray
    methods: np.ndarray
    agreement: np.ndarray
    why_not: np.ndarray
    geometry: dict[int, tuple[str, tuple[tuple[float, float], ...], str]]
    low_info: int = 0
    unhashed: int = 0
    search_s: float = 0.0
    verify_s: float = 0.0


def near_copy_pairs(frame: pd.DataFrame, options: DedupeOptions) -> NearPairs:
    """The search and verification of ``curate dedupe`` over ``frame``'s rows (``curate check`` uses it too).

    Candidates come from the stored hashes (whole image, flips/turns, crop
    windows) and, with ``options.copies``, from the stored keypoints
    (:mod:`curate.copydetect`: crops to half the area, screenshots, frames,
    captions, turns up to 30 degrees, mirrors); every pair is then verified on
    the pixels unless ``options.verify`` is off. Positions ``a``, ``b`` index
    ``frame``'s rows; ``geometry`` maps a pair's number to which image contains
    the other (``"a"``/``"b"``) and where (see :class:`curate.verify.PairCheck`).
    """
    from curate.hashing import CROP_WINDOWS, crop_hashes_to_uint64, hashes_to_uint64

    sub = frame
    searchable = (sub["d4hash"].notna() & (pd.to_numeric(sub["hash_contrast"], errors="coerce").fillna(0)
                                           >= options.min_contrast)).to_numpy()
    low_info = int((sub["d4hash"].notna().to_numpy() & ~searchable).sum())
    unhashed = int((sub["d4hash"].isna() & sub["sha256"].notna()).sum())
    d4 = hashes_to_uint64(sub.loc[searchable, "d4hash"].tolist())
    crops = None
    if options.crops:
        ch = sub.loc[searchable, "crop_hashes"]
        ok = ch.notna().to_numpy()
        crops = np.zeros((int(searchable.sum()), len(CROP_WINDOWS)), np.uint64)
        if ok.any():
            crops[ok] = crop_hashes_to_uint64(ch[ok].tolist())
    t_search = time.perf_counter()
    pairs = candidate_pairs(d4, crops, options.max_hamming)
    if options.copies and "keypoints" in sub.columns:
        pairs = _with_copy_pairs(pairs, sub.loc[searchable, "keypoints"].tolist())
    pairs = cap_partners(pairs, options.max_partners)
    search_s = time.perf_counter() - t_search

    # Positions in `frame`: hashed rows map through their own positions.
    pos_of_hashed = np.flatnonzero(searchable)
    a = pos_of_hashed[pairs["a"].to_numpy()] if len(pairs) else np.zeros(0, np.int64)
    b = pos_of_hashed[pairs["b"].to_numpy()] if len(pairs) else np.zeros(0, np.int64)
    sha = sub["sha256"].to_numpy()
    same_bytes = (sha[a] == sha[b]) & pd.notna(sha[a]) if len(a) else np.zeros(0, bool)
    t_verify = time.perf_counter()
    geometry: dict[int, tuple[str, tuple[tuple[float, float], ...], str]] = {}
    if options.verify and len(a):
        accepted, methods, agreement, why_not = verify_candidates(
            sub["path"].to_numpy(), a, b, pairs["d4"].to_numpy(), same_bytes, options, geometry=geometry,
            hints=pairs["hint"].to_numpy() if "hint" in pairs.columns else None)
    else:
        accepted = np.ones(len(a), bool)
        methods = np.where(same_bytes, "exact", "hash").astype(object)
        agreement = np.where(same_bytes, 1.0, np.nan)
        why_not = np.full(len(a), "", dtype=object)
    return NearPairs(pairs, a, b, accepted, methods, agreement, why_not, geometry, low_info, unhashed,
                     search_s, time.perf_counter() - t_verify)


# Hamming distance reported for a pair found by keypoints, not by a hash (past any hash distance).
COPY_MATCH_BITS = 64


def _with_copy_pairs(pairs: pd.DataFrame, keypoints: list[Any]) -> pd.DataFrame:
    """Add the keypoint candidates (kind ``copy``) that the hash search did not already find."""
    from curate.copydetect import find_copy_pairs

    hints: list[Any] = []
    ka, kb, inliers, mirror = find_copy_pairs(keypoints, hints=hints)
    if not len(ka):
        return pairs
    copy = pd.DataFrame({"a": ka.astype(np.int64), "b": kb.astype(np.int64),
                         "d4": np.where(mirror, 2, 0).astype(np.int64),  # D4_NAMES[2] is the mirror
                         "hamming": np.full(len(ka), COPY_MATCH_BITS, np.int64), "kind": "copy",
                         "hint": pd.Series(hints, dtype=object)})
    # Most keypoint matches first, so that cap_partners keeps the best supported.
    copy = copy.iloc[np.argsort(-inliers, kind="stable")]
    merged = pd.concat([pairs, copy], ignore_index=True).drop_duplicates(["a", "b"], keep="first")
    return merged.reset_index(drop=True)
