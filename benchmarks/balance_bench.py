"""Benchmark: `curate balance` undersampling (farthest-point on hashes) vs a random pick.

One class of N rows drawn from N/20 "scenes" of very different sizes (each row
its scene's hash with 0-6 bits flipped), as a scraped class with bursts and
re-encodes looks. Both methods keep k = 1000 rows; we report CPU seconds, how
many scenes the kept rows still cover, and how many near-duplicate pairs
(<= 4 bits) survive among them.

    python benchmarks/balance_bench.py 10000 100000
    python benchmarks/balance_bench.py --render ../shared/data 20   # oversampling real photos

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
    from curate.index import near_pairs_across_splits

    kept = h[keep]
    return len(near_pairs_across_splits(kept, np.arange(len(kept)), bits))


def render_bench(corpus: str, target: int) -> None:
    """Oversampling on the real faces_by_person photos (51 images, 13 people, 0.3-12.6 MP):
    `curate balance --strategy oversample` with one process and with two, against the bare
    albumentations pipeline on already-decoded images (no decode, encode, hashing or storing)."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from curate.augment import AugmentConfig, augment_image
    from curate.imageio import load_display
    from curate.stages.balance import BalanceOptions, balance
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.stages.split import SplitOptions, parse_ratios, split
    from curate.workspace import Workspace

    def cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    tmp = Path(tempfile.mkdtemp())
    ws = Workspace.create(tmp / "base")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(Path(corpus) / "faces_by_person", "faces")], workers=2))
    ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("train=1")))
    m = ws.read_manifest()
    n_copies = int((target - m.groupby("label").size()).clip(lower=0).sum())
    print(f"\n{n_copies} copies to bring 13 classes to {target} (from 51 photos)\n")
    print("| how | wall (s) | CPU (s) | copies per CPU second |")
    print("|---|---:|---:|---:|")
    for workers in (1, 2):
        run = Workspace.open(shutil.copytree(ws.root, tmp / f"w{workers}"))
        t, c = time.perf_counter(), cpu()
        res = run.run_stage("balance", balance, BalanceOptions(target=target, strategy="oversample", workers=workers))
        wall, cpu_s = time.perf_counter() - t, cpu() - c
        made = res.summary["copies_made"]
        print(f"| curate balance, workers={workers} | {wall:.1f} | {cpu_s:.1f} | {made / cpu_s:.1f} |", flush=True)
    arrays = {r.sample_id: np.asarray(load_display(r.path)) for r in m.itertuples()}
    plan = [(sid, k) for sid in arrays for k in range(max(1, n_copies // len(arrays)))][:n_copies]
    t, c = time.perf_counter(), cpu()
    for sid, k in plan:
        augment_image(arrays[sid], [], AugmentConfig(), seed=k)
    wall, cpu_s = time.perf_counter() - t, cpu() - c
    print(f"| albumentations alone (decoded arrays in memory, {len(plan)} runs) | {wall:.1f} | {cpu_s:.1f} | "
          f"{len(plan) / cpu_s:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--render":
        render_bench(sys.argv[2] if len(sys.argv) > 2 else "../shared/data", int(sys.argv[3]) if len(sys.argv) > 3 else 20)
        sys.exit(0)
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
