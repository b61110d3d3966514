"""Partitioned near-duplicate search: coarse binary k-means lists (faiss) with multi-probe, exact block
partitions, and the per-list function (docs/scale.md#near-duplicates-at-100m-and-1b)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is in the scale extra (pip install 'curate[scale]')")

from curate.index import HammingIndex  # noqa: E402
from curate.partition import (  # noqa: E402
    partitioned_search,
    plan_block_partitions,
    plan_partitions,
    search_partition,
    train_quantizer,
    unique_pairs,
)


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """``n`` random codes; the last tenth are copies of others, 1 to 8 bits away."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    k = n // 10
    src = rng.choice(n - k, k, replace=False)
    for i, s in enumerate(src):
        mask = 0
        for bit in rng.choice(64, rng.integers(1, 9), replace=False):
            mask |= 1 << int(bit)
        codes[n - k + i] = codes[s] ^ np.uint64(mask)
    return codes, {(int(s), n - k + i) for i, s in enumerate(src)}


def exact_pairs(codes: np.ndarray, r: int) -> set[tuple[int, int]]:
    qi, xi, _ = HammingIndex(codes, r).search(codes, exclude_self=True)
    return {(a, b) for a, b in zip(qi.tolist(), xi.tolist(), strict=True) if a < b}


@pytest.fixture(scope="module")
def codes_and_truth():
    codes, plants = planted(20_000)
    return codes, plants, exact_pairs(codes, 8)


def test_probing_every_list_is_the_unpartitioned_search(codes_and_truth):
    codes, plants, truth = codes_and_truth
    a, b, d = partitioned_search(codes, 8, n_lists=8, nprobe=8)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == truth and plants <= truth
    assert (d == np.bitwise_count(codes[a] ^ codes[b])).all() and d.max() <= 8


@pytest.mark.parametrize("nprobe, at_least", [
    (1, 0.4),  # one list: copies across a boundary are lost (random codes: the hard case)
    (3, 0.9),  # multi-probe finds most of them
])
def test_multi_probe_raises_recall_and_never_invents_a_pair(codes_and_truth, nprobe, at_least):
    codes, _, truth = codes_and_truth
    a, b, _ = partitioned_search(codes, 8, n_lists=16, nprobe=nprobe)
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    assert found <= truth  # exact inside each list: every pair found is a true pair
    assert len(found) / len(truth) >= at_least
    if nprobe == 1:
        more, *_ = partitioned_search(codes, 8, n_lists=16, nprobe=3)
        assert len(more) > len(found)


def test_block_partitions_find_every_pair(codes_and_truth):
    codes, _, truth = codes_and_truth
    a, b, _ = partitioned_search(codes, 8, exact_prefix_bits=3)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == truth
    sizes = [len(p.home_ids) for p in plan_block_partitions(codes, 8, 3)]
    assert len(sizes) == 9 * 8 and max(sizes) < len(codes) / 4  # 9 blocks x 8 prefixes, each a slice


def _one(args):
    return search_partition(*args)


def test_lists_are_searched_independently_in_other_processes(codes_and_truth):
    codes, _, _ = codes_and_truth
    quantizer = train_quantizer(codes, 8, seed=1)
    plan = list(plan_partitions(quantizer.assign(codes, 2)))
    assert sorted(np.concatenate([p.home_ids for p in plan]).tolist()) == list(range(len(codes)))  # one home each
    work = [(codes[p.home_ids], p.home_ids, codes[p.query_ids], p.query_ids, 8) for p in plan]
    with ProcessPoolExecutor(2) as pool:
        remote = list(pool.map(_one, work))
    local = [search_partition(*w) for w in work]
    for got, want in zip(remote, local, strict=True):
        for x, y in zip(got, want, strict=True):
            np.testing.assert_array_equal(x, y)
    a, b, _ = unique_pairs(*(np.concatenate(x) for x in zip(*remote, strict=True)))
    want_a, want_b, _ = partitioned_search(codes, 8, quantizer=quantizer, nprobe=2)
    np.testing.assert_array_equal(a, want_a)
    np.testing.assert_array_equal(b, want_b)


def test_real_photo_hashes_and_their_edits_are_found(skimage_dir):
    from PIL import Image, ImageEnhance

    from curate.hashing import compute_hashes, hash_thumbnail

    photos = sorted(skimage_dir.glob("*.png"))[:12]
    codes = []
    for p in photos:
        im = Image.open(p).convert("RGB")
        for edit in (im, ImageEnhance.Brightness(im).enhance(1.2), im.resize((im.width // 2, im.height // 2))):
            codes.append(int(str(compute_hashes(hash_thumbnail(edit))["d4hash"]), 16))
    codes = np.array(codes, dtype=np.uint64)
    noise = np.random.default_rng(0).integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True)
    allc = np.concatenate([codes, noise])
    truth = exact_pairs(allc, 8)
    assert len({(3 * i, 3 * i + 1) for i in range(len(photos))} & truth) >= 10  # most brightness edits are near
    # real hashes cluster: one probe of 8 lists misses at most one pair of 32, three probes of 16 none
    a, b, _ = partitioned_search(allc, 8, n_lists=8, nprobe=1)
    assert len(set(zip(a.tolist(), b.tolist(), strict=True)) & truth) >= len(truth) - 1
    a, b, _ = partitioned_search(allc, 8, n_lists=16, nprobe=3)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == truth
