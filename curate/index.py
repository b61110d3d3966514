"""Radius search over 64-bit hashes by multi-index hashing, in numpy.

A pair of codes at most ``r`` bits apart agrees almost everywhere: split the
64 bits into ``m`` blocks and, by the pigeonhole principle, some block differs
in at most ``r // m`` bits (Norouzi, Punjani and Fleet, "Fast search in Hamming
space with multi-index hashing", CVPR 2012). So each block is a hash table
keyed by the block's bits; a query looks up its own block value and the values
a few flips away, and only the codes found that way get their full distance
computed. Nothing compares every pair, and memory grows linearly with the
number of codes.

Lookups are vectorised: the table of a block is a sorted array with bucket
offsets, and a whole chunk of queries is looked up with one gather. To reach
block distance 2 without enumerating all two-bit flips, both sides store their
one-bit flips (``a ^ e_i == b ^ e_j``), which keeps the table at ``1 + bits``
entries per code.

Blocks and flips are chosen from ``max_hamming``: 3 blocks of 21-22 bits with
up to 2 flips cover ``r <= 8`` exactly; larger radii use more, smaller blocks.
A search may ask for fewer flips (``reach=1``): exact up to ``r = 5`` with 3
blocks and about 20 times fewer candidates, and still finding most pairs 6-8
bits apart (one is missed only when every block differs in 2 or more bits).
An index built with ``table_flips=0`` stores only the codes themselves (cheap
to build, for one search); the query side then carries the flip.

:func:`near_pairs_across_splits` is the second search here, used by ``curate
check`` and ``curate split --near-bits``: only pairs in *different* groups
(splits), by exact keys made of hash slices (pigeonhole again, see
:func:`key_plan`), with identical (hash, group) rows collapsed first.

    >>> codes = np.array([0b1011, 0b1001, 0xFFFF0000FFFF0000], dtype=np.uint64)
    >>> index = HammingIndex(codes, max_hamming=2)
    >>> q, x, d = index.search(codes, exclude_self=True)
    >>> sorted(zip(q.tolist(), x.tolist(), d.tolist()))
    [(0, 1, 1), (1, 0, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

_CODE_BITS = 64
_MAX_FLIPS = 2  # per block, as one flip on each side


def block_plan(max_hamming: int) -> tuple[int, int]:
    """(number of blocks, flips per block) that find every pair within ``max_hamming``.

    With ``m`` blocks and ``s`` flips a pair ``d`` bits apart is always found
    when ``d < m * (s + 1)``.

    >>> block_plan(8), block_plan(5), block_plan(2), block_plan(11)
    ((3, 2), (3, 1), (3, 0), (4, 2))
    """
    if not 0 <= max_hamming <= 20:
        raise ValueError(f"max_hamming must be 0..20, got {max_hamming}")
    blocks = 3
    while max_hamming >= blocks * (_MAX_FLIPS + 1):
        blocks += 1
    return blocks, max_hamming // blocks


def _block_bounds(blocks: int) -> list[tuple[int, int]]:
    """(first bit from the most significant end, width) of each block."""
    base, extra = divmod(_CODE_BITS, blocks)
    out, start = [], 0
    for i in range(blocks):
        width = base + (1 if i < extra else 0)
        out.append((start, width))
        start += width
    return out


def _block_keys(codes: np.ndarray, start: int, width: int) -> np.ndarray:
    shift = np.uint64(_CODE_BITS - start - width)
    return ((codes >> shift) & np.uint64((1 << width) - 1)).astype(np.uint32)


def _with_flips(keys: np.ndarray, width: int) -> np.ndarray:
    """Keys followed by every one-bit flip of them: shape ((1 + width) * n,)."""
    single = np.uint32(1) << np.arange(width, dtype=np.uint32)
    return np.concatenate([keys, (keys[None, :] ^ single[:, None]).ravel()])


@dataclass
class _Table:
    start: int
    width: int
    keys: np.ndarray  # sorted block keys (uint32) of the entries; empty when offsets is set
    ids: np.ndarray  # code index of each entry, int32, in key order
    offsets: np.ndarray | None  # dense bucket table: key b -> entries offsets[b]:offsets[b+1]

    def ranges(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first entry, count) for each looked-up key."""
        if self.offsets is not None:
            k = keys.astype(np.int64)
            first = self.offsets[k]
            return first, self.offsets[k + 1] - first
        first = np.searchsorted(self.keys, keys, side="left")
        return first, np.searchsorted(self.keys, keys, side="right") - first


class HammingIndex:
    """Codes indexed for :meth:`search` within ``max_hamming`` bits. See the module doc."""

    def __init__(self, codes: np.ndarray, max_hamming: int, *, table_flips: int | None = None) -> None:
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        if len(self.codes) >= 2**31 // 24:
            raise ValueError(f"too many codes for one index: {len(self.codes)}")
        self.max_hamming = max_hamming
        self.blocks, self.flips = block_plan(max_hamming)
        self.table_flips = min(self.flips, 1) if table_flips is None else table_flips
        if self.table_flips not in (0, 1):
            raise ValueError(f"table_flips must be 0 or 1, got {table_flips}")
        self.tables = [self._build(start, width) for start, width in _block_bounds(self.blocks)]

    def _build(self, start: int, width: int) -> _Table:
        keys = _block_keys(self.codes, start, width)
        if self.table_flips:
            keys = _with_flips(keys, width)
        order = np.argsort(keys)  # entry = flip * n + code; order within a bucket does not matter
        sorted_keys = keys[order]
        del keys
        order %= max(len(self.codes), 1)
        ids = order.astype(np.int32)
        del order
        offsets = None
        # A dense bucket table pays off once the entries fill a good part of
        # the key space; below that, binary search costs less than building it.
        if len(sorted_keys) >= (1 << width) // 8:
            offsets = np.searchsorted(sorted_keys, np.arange((1 << width) + 1, dtype=np.uint32)).astype(np.int64)
            sorted_keys = np.zeros(0, np.uint32)  # the bucket table replaces them (a slice would pin them)
        return _Table(start, width, sorted_keys, ids, offsets)

    def search(
        self,
        queries: np.ndarray,
        max_hamming: int | None = None,
        *,
        reach: int | None = None,
        exclude_self: bool = False,
        chunk_rows: int = 65536,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, code) pair at most ``max_hamming`` bits apart.

        Returns ``(query_index, code_index, distance)`` int64 arrays, each pair
        once, sorted by query then code. ``reach`` is the block distance looked
        up (default: the exact plan's flips; 1 for the faster, partial search
        described in the module doc). ``exclude_self`` drops ``i == i`` pairs,
        for searching the indexed codes themselves. ``max_hamming`` may be
        lower than the index's, never higher.
        """
        r = self.max_hamming if max_hamming is None else max_hamming
        if r > self.max_hamming:
            raise ValueError(f"index built for {self.max_hamming} bits, asked for {r}")
        reach = self.flips if reach is None else reach
        query_flips = reach - self.table_flips
        if query_flips not in (0, 1):
            raise ValueError(f"reach {reach} needs 0 or 1 query flips on a table with {self.table_flips}")
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        found_q: list[np.ndarray] = []
        found_x: list[np.ndarray] = []
        for table in self.tables:
            # Bound the candidates held at once (~2 million): buckets fill up as the index grows.
            per_query = (1 + table.width * query_flips) * max(1.0, len(table.ids) / (1 << table.width))
            step = int(min(chunk_rows, max(1024, 2_000_000 / per_query)))
            for c0 in range(0, len(queries), step):
                c1 = min(c0 + step, len(queries))
                q, x = self._lookup(queries, c0, c1, table, r, query_flips, exclude_self)
                found_q.append(q)
                found_x.append(x)
        empty = np.zeros(0, dtype=np.int64)
        qi = np.concatenate(found_q).astype(np.int64) if found_q else empty
        xi = np.concatenate(found_x).astype(np.int64) if found_x else empty
        # A pair close in several blocks is found once per block.
        pair = np.unique(qi * len(self.codes) + xi)
        qi, xi = np.divmod(pair, max(len(self.codes), 1))
        dist = np.bitwise_count(queries[qi] ^ self.codes[xi]).astype(np.int64)
        return qi, xi, dist

    def _lookup(self, queries: np.ndarray, c0: int, c1: int, table: _Table, r: int,
                query_flips: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        keys = _block_keys(queries[c0:c1], table.start, table.width)
        qid = np.arange(c0, c1, dtype=np.int32)
        if query_flips:  # the query side's one-bit flips add one to the block distance reached
            keys = _with_flips(keys, table.width)
            qid = np.tile(qid, table.width + 1)
        first, count = table.ranges(keys)
        hit = np.flatnonzero(count)
        first, count, qid = first[hit], count[hit], qid[hit]
        total = int(count.sum())
        if total == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        # Entry positions: each looked-up bucket's range, laid end to end.
        pos = np.repeat(first - (np.cumsum(count) - count), count)
        pos += np.arange(total)
        xi = table.ids[pos]
        del pos
        rq = np.repeat(qid, count)
        near = np.bitwise_count(queries[rq] ^ self.codes[xi]) <= r
        if exclude_self:
            near &= rq != xi
        # With flips on both sides a close pair is met several times: keep it once.
        pair = np.unique(rq[near].astype(np.int64) * len(self.codes) + xi[near])
        q, x = np.divmod(pair, max(len(self.codes), 1))
        return q.astype(np.int32), x.astype(np.int32)


# -- the pigeonhole search across splits (curate check, curate split --near-bits) ---------------


def key_plan(max_bits: int, n: int, max_keys: int = 100) -> list[list[tuple[int, int]]]:
    """Which hash slices to match exactly so that no pair within ``max_bits`` is missed.

    The hash is cut into ``m = max_bits + r`` slices. Two hashes within
    ``max_bits`` bits differ in at most ``max_bits`` slices, so they agree on at
    least ``r`` of them: on every slice of some ``r``-combination. Each
    combination is one exact-match key of about ``64 r / m`` bits. ``r`` is the
    smallest that makes keys long enough for ``n`` rows to spread thin (buckets
    of about one row), within ``max_keys`` combinations.

    >>> [len(k) for k in key_plan(4, 1_000_000)][:2], len(key_plan(4, 1_000_000))
    ([3, 3], 35)
    """
    from itertools import combinations
    from math import comb

    want_bits = max(16, int(np.ceil(np.log2(max(n, 2)))) + 3)
    r = 1
    while 64 * r / (max_bits + r) < want_bits and comb(max_bits + r + 1, r + 1) <= max_keys:
        r += 1
    m = min(max_bits + r, 64)
    edges = np.linspace(0, 64, m + 1).round().astype(int)
    slices = [(int(edges[i]), int(edges[i + 1] - edges[i])) for i in range(m)]
    return [list(c) for c in combinations(slices, min(r, m))]


def _key(h: np.ndarray, slices: list[tuple[int, int]]) -> np.ndarray:
    key = np.zeros(len(h), dtype=np.uint64)
    offset = 0
    for shift, width in slices:
        part = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        key |= part << np.uint64(offset)
        offset += width
    return key


def near_pairs_across_splits(hashes: np.ndarray, split_codes: np.ndarray, max_bits: int) -> pd.DataFrame:
    """Pairs (i, j, bits) of positions in different splits with Hamming distance <= ``max_bits``.

    Candidates agree exactly on a key made of hash slices (pigeonhole, see
    :func:`key_plan`), so the work grows with the bucket sizes, not with n^2.
    Equal (hash, split) rows are collapsed first, so many identical hashes
    (blank images) cost one candidate, not n^2.

    >>> h = np.array([0b1111, 0b0111, 2**40], dtype=np.uint64)
    >>> near_pairs_across_splits(h, np.array([0, 1, 1]), 1)[["i", "j", "bits"]].values.tolist()
    [[0, 1, 1]]
    """
    empty = pd.DataFrame({"i": [], "j": [], "bits": []}, dtype=np.int64)
    if len(hashes) == 0:
        return empty
    base = pd.DataFrame({"h": hashes.astype(np.uint64), "s": split_codes.astype(np.int64)})
    uniq = base.drop_duplicates().reset_index(drop=True)
    uh, us = uniq["h"].to_numpy(), uniq["s"].to_numpy()
    found = []
    for slices in key_plan(max_bits, len(uniq)):
        df = pd.DataFrame({"k": _key(uh, slices), "u": np.arange(len(uniq)), "s": us})
        multi = df[df.groupby("k")["s"].transform("nunique") > 1]
        if not len(multi):
            continue
        pairs = multi.merge(multi, on="k", suffixes=("_a", "_b"))
        pairs = pairs[pairs["s_a"] < pairs["s_b"]]
        a, b = pairs["u_a"].to_numpy(), pairs["u_b"].to_numpy()
        bits = np.bitwise_count(uh[a] ^ uh[b]).astype(np.int64)
        close = bits <= max_bits  # verify here, so only true pairs are kept between keys
        found.append(pd.DataFrame({"u_a": a[close], "u_b": b[close], "bits": bits[close]}))
    if not found:
        return empty
    cand = pd.concat(found, ignore_index=True).drop_duplicates(["u_a", "u_b"])
    # Back from unique (hash, split) to row positions.
    rows = base.reset_index().merge(uniq.reset_index().rename(columns={"index": "u"}), on=["h", "s"])
    pos_of = rows.groupby("u")["index"].apply(list)
    out = [(i, j, int(b)) for ua, ub, b in cand.itertuples(index=False)
           for i in pos_of[ua] for j in pos_of[ub]]
    return pd.DataFrame(out, columns=["i", "j", "bits"], dtype=np.int64)
