"""Near-duplicate search in partitions, for collections past one index (docs/scale.md#near-duplicates-at-100m-and-1b).

One :class:`~curate.index.HammingIndex` holds at most about 89.5M codes and
costs 290-335 bytes a code, so past some tens of millions the search is split:

1. **coarse partitioning**: a binary k-means over the 64-bit codes (faiss's
   ``IndexBinaryIVF`` training, as faiss's binary IVF and NeMo Curator's
   SemDeDup do) gives ``n_lists`` centroids; each code is *stored* in the list
   of its nearest centroid (its home);
2. **multi-probe**: each code is *looked up* in its ``nprobe`` nearest lists,
   so that a copy that fell on the other side of a boundary is still found;
3. **exact search inside each list**: :func:`search_partition`, a plain
   function of one list's codes and the queries sent to it, runs the exact
   multi-index search there. Lists are independent: a local loop
   (:func:`partitioned_search`) or one task per list on a cluster.

A pair is found when one code's home list is among the other's probed lists;
with ``nprobe = n_lists`` the search is the unpartitioned one. Recall against
the unpartitioned search is measured in benchmarks/partition_bench.py.

Where a search must miss nothing, :func:`plan_block_partitions` partitions
by the bits themselves instead (the pigeonhole of multi-index hashing, across
machines): codes at most ``r`` bits apart agree exactly on one of ``r + 1``
disjoint blocks of bits, so a list per (block, value of its first bits) finds
every pair, at ``r + 1`` copies of each code in the shuffle.

    >>> rng = np.random.default_rng(0)
    >>> codes = rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64)
    >>> codes[1000:1010] = codes[:10] ^ np.uint64(0b101)  # ten planted copies, 2 bits apart
    >>> a, b, d = partitioned_search(codes, 4, n_lists=8, nprobe=2)
    >>> sorted(zip(a.tolist(), b.tolist()))[:3], int(d.max())
    ([(0, 1000), (1, 1001), (2, 1002)], 2)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from curate.errors import CurateError

CODE_BYTES = 8
DEFAULT_NPROBE = 3  # measured: recall >= 0.999 of the unpartitioned search at 16-64 lists (docs/scale.md)


def _as_bytes(codes: np.ndarray) -> np.ndarray:
    """uint64 codes as faiss's binary vectors (n, 8) uint8. Hamming distance does not depend on byte order."""
    return np.ascontiguousarray(codes, dtype=np.uint64).view(np.uint8).reshape(-1, CODE_BYTES)


def _faiss():  # type: ignore[no-untyped-def]
    try:
        import faiss
    except ImportError:
        raise CurateError("", field="partitioned search", expected="faiss (the faiss-cpu package)",
                          found="it is not installed", hint="pip install 'curate[scale]'") from None
    return faiss


@dataclass
class CoarseQuantizer:
    """The centroids of the lists, as 64-bit binary codes ((n_lists, 8) uint8)."""

    centroids: np.ndarray

    @property
    def n_lists(self) -> int:
        return len(self.centroids)

    def assign(self, codes: np.ndarray, nprobe: int = 1) -> np.ndarray:
        """The ``nprobe`` nearest lists of each code, nearest first: (n, nprobe) int64; column 0 is its home."""
        faiss = _faiss()
        flat = faiss.IndexBinaryFlat(CODE_BYTES * 8)
        flat.add(self.centroids)
        _, lists = flat.search(_as_bytes(codes), min(nprobe, self.n_lists))
        return lists.astype(np.int64)


def train_quantizer(codes: np.ndarray, n_lists: int, *, seed: int = 0, max_points_per_list: int = 256,
                    iterations: int = 10) -> CoarseQuantizer:
    """Binary k-means (faiss) over a seeded sample of ``codes``: ``n_lists`` centroids.

    The sample is ``n_lists * max_points_per_list`` codes (faiss's own
    default), so training costs the same at 1M and at 1B codes.
    """
    faiss = _faiss()
    if not 1 <= n_lists <= max(len(codes), 1):
        raise CurateError("", field="n_lists", expected=f"1 to the number of codes ({len(codes)})", found=n_lists)
    rng = np.random.default_rng(seed)
    take = min(len(codes), n_lists * max_points_per_list)
    sample = _as_bytes(np.asarray(codes)[rng.choice(len(codes), take, replace=False)])
    quantizer = faiss.IndexBinaryFlat(CODE_BYTES * 8)
    ivf = faiss.IndexBinaryIVF(quantizer, CODE_BYTES * 8, n_lists)
    ivf.cp.seed = seed
    ivf.cp.niter = iterations
    ivf.cp.max_points_per_centroid = max_points_per_list
    ivf.train(sample)
    return CoarseQuantizer(quantizer.reconstruct_n(0, n_lists).reshape(n_lists, CODE_BYTES).copy())


@dataclass
class Partition:
    """One list's work: the codes stored there (home) and the codes looked up there (queries), by global id."""

    list_id: int
    home_ids: np.ndarray
    query_ids: np.ndarray


def plan_partitions(probes: np.ndarray) -> Iterator[Partition]:
    """Group codes by list from :meth:`CoarseQuantizer.assign`'s ``probes`` (column 0: home).

    What one list receives is its ``Partition``; on a cluster this grouping is
    the shuffle (each code sent once as home and ``nprobe`` times as a query).
    """
    n, nprobe = probes.shape
    home = probes[:, 0]
    home_order = np.argsort(home, kind="stable")
    home_bounds = np.searchsorted(home[home_order], np.arange(probes.max(initial=-1) + 2))
    flat_lists = probes.ravel()
    flat_ids = np.repeat(np.arange(n, dtype=np.int64), nprobe)
    q_order = np.argsort(flat_lists, kind="stable")
    q_bounds = np.searchsorted(flat_lists[q_order], np.arange(probes.max(initial=-1) + 2))
    for p in range(len(home_bounds) - 1):
        h = home_order[home_bounds[p]:home_bounds[p + 1]]
        if len(h):
            yield Partition(p, h.astype(np.int64), flat_ids[q_order[q_bounds[p]:q_bounds[p + 1]]])


def plan_block_partitions(codes: np.ndarray, max_hamming: int, prefix_bits: int) -> Iterator[Partition]:
    """Exact partitions: list ``(j, v)`` holds the codes whose block ``j`` (of ``max_hamming + 1`` disjoint
    blocks) starts with the ``prefix_bits`` bits ``v``. Every code is in ``max_hamming + 1`` lists, as home and
    query both; every pair within ``max_hamming`` shares a list (its identical block), so nothing is missed.

    >>> c = np.array([0, 0b1, 0xFF00000000000000], dtype=np.uint64)
    >>> sorted(len(p.home_ids) for p in plan_block_partitions(c, 1, 2))
    [2, 3]
    """
    from curate.index import _block_bounds

    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    bounds = _block_bounds(max_hamming + 1)
    for j, (start, width) in enumerate(bounds):
        bits = min(prefix_bits, width)
        keys = ((codes >> np.uint64(64 - start - bits)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        edges = np.searchsorted(keys[order], np.arange((1 << bits) + 1))
        for v in range(1 << bits):
            ids = order[edges[v]:edges[v + 1]].astype(np.int64)
            if len(ids) > 1:
                yield Partition(j << bits | v, ids, ids)


def search_partition(home_codes: np.ndarray, home_ids: np.ndarray, query_codes: np.ndarray,
                     query_ids: np.ndarray, max_hamming: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact search of one list: every (query, stored) pair within ``max_hamming``, as global ids ``(a, b,
    distance)`` with ``a < b``. A plain function of its inputs, to run anywhere (a pool, a Ray task).

    >>> c = np.array([0b1111, 0b1110, 0b0], dtype=np.uint64)
    >>> [x.tolist() for x in search_partition(c[:2], np.array([5, 9]), c, np.array([5, 9, 7]), 1)]
    [[5], [9], [1]]
    """
    from curate.index import HammingIndex

    if not len(home_codes) or not len(query_codes):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    index = HammingIndex(home_codes, max_hamming)
    qi, xi, dist = index.search(query_codes)
    a, b = np.asarray(query_ids)[qi], np.asarray(home_ids)[xi]
    keep = a != b
    a, b, dist = a[keep], b[keep], dist[keep]
    return unique_pairs(np.minimum(a, b), np.maximum(a, b), dist)  # both of a pair stored here: met twice


def unique_pairs(a: np.ndarray, b: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (a, b) pair once, sorted (a pair met in two lists is found twice)."""
    if not len(a):
        return a, b, dist
    key = a.astype(np.int64) * (int(max(a.max(), b.max())) + 1) + b
    _, first = np.unique(key, return_index=True)
    return a[first], b[first], dist[first]


def partitioned_search(codes: np.ndarray, max_hamming: int, *, n_lists: int = 16, nprobe: int = DEFAULT_NPROBE,
                       quantizer: CoarseQuantizer | None = None, seed: int = 0, exact_prefix_bits: int | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of ``codes`` within ``max_hamming`` that the partitioned search finds, as ``(a, b, distance)``
    with ``a < b``, sorted: the local driver of the steps in the module doc (one list at a time).

    ``exact_prefix_bits`` set: the exact block partitions of :func:`plan_block_partitions` instead of the
    coarse k-means lists."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    if exact_prefix_bits is not None:
        plan = plan_block_partitions(codes, max_hamming, exact_prefix_bits)
    else:
        quantizer = quantizer or train_quantizer(codes, n_lists, seed=seed)
        plan = plan_partitions(quantizer.assign(codes, nprobe))
    found = [search_partition(codes[p.home_ids], p.home_ids, codes[p.query_ids], p.query_ids, max_hamming)
             for p in plan]
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return unique_pairs(*(np.concatenate(x) for x in zip(*found, strict=True)))
