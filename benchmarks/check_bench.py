"""Benchmark: the near-duplicate search of `curate check` vs imagededup's BK-tree search.

Both get the same 64-bit hashes: N random hashes plus N/100 planted near copies
(1-4 bits flipped). curate's `near_pairs_across_splits` runs in all-pairs mode
(every row its own "split"), which is the same question imagededup's
`find_duplicates(encoding_map=..., max_distance_threshold=4)` answers, so the
pair sets are compared as well as the times (CPU seconds: the machine is shared).

    python benchmarks/check_bench.py 5000 20000 1000000

imagededup is the peer (pip install --no-deps imagededup, see ../shared/peers);
it is skipped above 20,000 hashes (its BK-tree search took over 4 CPU
minutes at 50,000 on the development machine). Not part of the test suite.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))


def hashes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    h ^= rng.integers(0, 2, size=n).astype(np.uint64)
    planted = rng.choice(n, size=n // 100, replace=False)
    for i, src in zip(planted, rng.choice(n, size=len(planted)), strict=True):
        flips = rng.choice(64, size=int(rng.integers(1, 5)), replace=False)
        v = int(h[src])
        for b in flips:
            v ^= 1 << int(b)
        h[i] = np.uint64(v)
    return h


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (imagededup searches in a pool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_curate(h: np.ndarray, bits: int) -> tuple[float, set[tuple[int, int]]]:
    from curate.index import near_pairs_across_splits

    t = cpu_s()
    pairs = near_pairs_across_splits(h, np.arange(len(h)), bits)
    dt = cpu_s() - t
    return dt, {(min(i, j), max(i, j)) for i, j in zip(pairs["i"], pairs["j"], strict=True)}


def run_imagededup(h: np.ndarray, bits: int) -> tuple[float, set[tuple[int, int]]]:
    import stub_torchvision  # noqa: F401  imagededup imports torchvision for its CNN method only

    logging.disable(logging.WARNING)
    from imagededup.methods import PHash

    enc = {str(i): f"{int(v):016x}" for i, v in enumerate(h)}
    t, wall = cpu_s(), time.perf_counter()
    dups = PHash(verbose=False).find_duplicates(encoding_map=enc, max_distance_threshold=bits,
                                                num_dist_workers=1)
    dt = cpu_s() - t
    print(f"  (imagededup wall {time.perf_counter() - wall:.1f} s)", file=sys.stderr)
    return dt, {(min(int(a), int(b)), max(int(a), int(b))) for a, vs in dups.items() for b in vs}


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [5_000, 20_000]
    print("| hashes | curate check search (CPU s) | imagededup BK-tree (CPU s) | speed ratio | pairs curate / imagededup |")
    print("|---:|---:|---:|---:|---|")
    for n in sizes:
        h = hashes(n)
        c_t, c_pairs = run_curate(h, 4)
        if n <= 20_000:
            i_t, i_pairs = run_imagededup(h, 4)
            same = "same" if c_pairs == i_pairs else "DIFFERENT"
            print(f"| {n:,} | {c_t:.2f} | {i_t:.2f} | {i_t / c_t:.1f}x | {len(c_pairs)} / {len(i_pairs)} ({same}) |",
                  flush=True)
        else:
            print(f"| {n:,} | {c_t:.2f} | - | - | {len(c_pairs)} / - |", flush=True)
