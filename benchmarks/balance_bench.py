"""Benchmark: `curate balance` undersampling (farthest-point on hashes) vs a random pick.

One class of N rows drawn from N/20 "scenes" of very different sizes (each row
its scene's hash with 0-6 bits flipped), as a scraped class with bursts and
re-encodes looks. Both methods keep k = 1000 rows; we report CPU seconds, how
many scenes the kept rows still cover, and how many near-duplicate pairs
(<= 4 bits) survive among them.

    python benchmarks/balance_bench.py 10000 100000

Not part of the test suite.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from curate.stages.balance import diverse_subset


def hashes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n hashes in n/20 "scenes" (burst shots, re-encodes, crops of one photo): each row is its
    scene's hash with 0-6 bits flipped; scene sizes are Zipf-like, so a few scenes dominate."""
    rng = np.random.default_rng(seed)
    n_scenes = max(1, n // 20)
    centres = rng.integers(0, 2**63, size=n_scenes, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    w = 1.0 / np.arange(1, n_scenes + 1) ** 1.1
    scene = rng.choice(n_scenes, size=n, p=w / w.sum())
    flips = np.zeros(n, dtype=np.uint64)
    for i in range(n):
        for b in rng.choice(64, size=int(rng.integers(0, 7)), replace=False):
            flips[i] |= np.uint64(1 << int(b))
    return centres[scene] ^ flips, scene


def near_pairs_kept(h: np.ndarray, keep: np.ndarray, bits: int = 4) -> int:
    from curate.stages.check import near_pairs_across_splits

    kept = h[keep]
    return len(near_pairs_across_splits(kept, np.arange(len(kept)), bits))


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    k = 1000
    print("| rows in the class | scenes | kept | farthest-point (CPU s) | random pick (CPU s) | scenes covered: "
          "farthest-point / random | near-dup pairs kept: farthest-point / random |")
    print("|---:|---:|---:|---:|---:|---|---|")
    for n in sizes:
        h, scene = hashes(n)
        t = time.process_time()
        sel, _, _ = diverse_subset(h, k)
        fps_t = time.process_time() - t
        t = time.process_time()
        pick = np.random.default_rng(0).choice(len(h), size=k, replace=False)
        rnd_t = time.process_time() - t
        rnd = np.zeros(len(h), bool)
        rnd[pick] = True
        n_scenes = len(set(scene.tolist()))
        print(f"| {len(h):,} | {n_scenes:,} | {k} | {fps_t:.2f} | {rnd_t:.4f} | "
              f"{len(set(scene[sel].tolist()))} / {len(set(scene[rnd].tolist()))} | "
              f"{near_pairs_kept(h, sel)} / {near_pairs_kept(h, rnd)} |", flush=True)
