"""curate.index: multi-index Hamming search against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.index import HammingIndex, block_plan, key_plan, near_pairs_across_splits


def brute(q: np.ndarray, x: np.ndarray, r: int, exclude_self: bool = False) -> set[tuple[int, int]]:
    d = np.bitwise_count(q[:, None] ^ x[None, :])
    if exclude_self:
        np.fill_diagonal(d, 99)
    return set(zip(*[a.tolist() for a in np.nonzero(d <= r)], strict=True))


def planted(seed: int, n: int, max_flips: int) -> np.ndarray:
    """Random codes, the second half near copies (0..max_flips bits) of the first."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    half = n // 2
    for i in range(half):
        mask = 0
        for b in rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False):
            mask |= 1 << int(b)
        x[half + i] = x[i] ^ np.uint64(mask)
    return x


@pytest.mark.parametrize(("r", "expected"), [
    (0, (3, 0)),  # exact block match finds identical codes
    (2, (3, 0)),  # 3 blocks: a pair 2 bits apart has an untouched block
    (5, (3, 1)),  # one flip per block
    (8, (3, 2)),  # two flips (one on each side)
    (9, (4, 2)),  # beyond 8: smaller blocks
    (14, (5, 2)),
])
def test_block_plan(r, expected):
    assert block_plan(r) == expected


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), r=st.integers(0, 12), n=st.integers(2, 300))
def test_search_is_exact(seed, r, n):
    x = planted(seed, n, r + 2)
    qi, xi, d = HammingIndex(x, r).search(x, exclude_self=True)
    assert set(zip(qi.tolist(), xi.tolist(), strict=True)) == brute(x, x, r, exclude_self=True)
    assert np.array_equal(d, np.bitwise_count(x[qi] ^ x[xi]))


def test_search_other_queries_and_lower_radius():
    x = planted(3, 400, 6)
    q = planted(4, 100, 6) ^ np.uint64(0b101)
    index = HammingIndex(x, 8)
    for r in (8, 4):
        qi, xi, _ = index.search(q, r)
        assert set(zip(qi.tolist(), xi.tolist(), strict=True)) == brute(q, x, r)
    with pytest.raises(ValueError, match="built for 8 bits"):
        index.search(q, 9)


def test_reach_one_is_exact_to_five_and_partial_beyond():
    x = planted(5, 2000, 8)
    index = HammingIndex(x, 8)
    qi, xi, d = index.search(x, exclude_self=True, reach=1)
    found = set(zip(qi.tolist(), xi.tolist(), strict=True))
    assert brute(x, x, 5, exclude_self=True) <= found  # every pair within 5 bits
    assert found <= brute(x, x, 8, exclude_self=True)  # nothing beyond the radius
    assert len(found) < len(brute(x, x, 8, exclude_self=True))  # some 6-8 bit pairs missed


def test_table_without_flips_gives_the_same_pairs():
    x = planted(6, 500, 6)
    a = HammingIndex(x, 8).search(x, exclude_self=True, reach=1)
    b = HammingIndex(x, 8, table_flips=0).search(x, exclude_self=True, reach=1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def test_identical_codes_and_empty():
    x = np.array([7, 7, 7, 1 << 40], dtype=np.uint64)
    qi, xi, d = HammingIndex(x, 0).search(x, exclude_self=True)
    assert len(qi) == 6 and set(d.tolist()) == {0}
    empty = HammingIndex(np.zeros(0, np.uint64), 8)
    assert all(len(a) == 0 for a in empty.search(x))


# -- near_pairs_across_splits (curate check, split --near-bits) ------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2)), min_size=1, max_size=40),
       st.integers(0, 6), st.lists(st.integers(0, 63), max_size=3))
def test_near_pairs_match_brute_force(items: list[tuple[int, int]], bits: int, flips: list[int]) -> None:
    # Add near copies of the first hash (a few bits flipped) so that pairs exist.
    h0, _ = items[0]
    for k, b in enumerate(flips):
        items.append((h0 ^ (1 << b), k % 3))
    h = np.array([x for x, _ in items], dtype=np.uint64)
    s = np.array([y for _, y in items])
    got = {(int(i), int(j), int(b)) for i, j, b in near_pairs_across_splits(h, s, bits).itertuples(index=False)}
    want = set()
    for i in range(len(h)):
        for j in range(len(h)):
            d = int(np.bitwise_count(h[i] ^ h[j]))
            if s[i] < s[j] and d <= bits:
                want.add((i, j, d))
    assert got == want


@pytest.mark.parametrize("max_bits", [0, 1, 4, 8])
@pytest.mark.parametrize("n", [10, 1_000_000])
def test_key_plan_is_a_pigeonhole_cover(max_bits: int, n: int) -> None:
    from math import comb

    plan = key_plan(max_bits, n)
    slices = sorted({s for combo in plan for s in combo})
    # The slices tile the 64 bits, each once ...
    assert [start for start, _ in slices] == list(np.cumsum([0] + [w for _, w in slices[:-1]]))
    assert sum(w for _, w in slices) == 64
    # ... and every r-combination of them is a key: two hashes that differ in at most max_bits slices
    # agree on all slices of at least one combination.
    r = len(plan[0])
    assert all(len(combo) == r for combo in plan)
    assert len(slices) - max_bits >= r and len(plan) == comb(len(slices), r)
