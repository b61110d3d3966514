"""Partitioned near-duplicate search (curate/partition.py) against the unpartitioned HammingIndex.

Synthetic 64-bit codes (uniform random, seeded) with planted copies: 1 % of
the codes get a copy 1 to 8 bits away (uniform). Every configuration runs in
its own process, so each peak RSS is its own. Measured per configuration:
wall time, the parent's peak RSS, the pairs found within ``--max-hamming``,
and recall against the unpartitioned search (every pair it finds, natural or
planted) and against the planted copies alone.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/partition_bench.py --n 1000000 --lists 16 64 --nprobe 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path("/tmp/curate-partition-bench")


def make_codes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` codes, the last 1 % copies of random others, each 1-8 bits away; and the planted (a, b) pairs."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    k = n // 100
    src = rng.choice(n - k, k, replace=False)
    flips = rng.integers(1, 9, k)
    masks = np.zeros(k, dtype=np.uint64)
    for i, f in enumerate(flips):
        for bit in rng.choice(64, f, replace=False):
            masks[i] |= np.uint64(1) << np.uint64(bit)
    dst = np.arange(n - k, n)
    codes[dst] = codes[src] ^ masks
    return codes, np.stack([np.minimum(src, dst), np.maximum(src, dst)], axis=1)


def _codes(n: int) -> tuple[np.ndarray, np.ndarray]:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"codes-{n}.npz"
    if not path.exists():
        codes, planted = make_codes(n)
        np.savez(path, codes=codes, planted=planted)
    z = np.load(path)
    return z["codes"], z["planted"]


def _peak_mb() -> int:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the parent's peak over fork and exec)."""
    import re

    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024


def _keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.unique(a.astype(np.int64) * n + b)


def run_one(n: int, max_hamming: int, lists: int, nprobe: int) -> dict:
    """One configuration, in this process (lists 0: the unpartitioned index)."""
    codes, planted = _codes(n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if lists == 0:
        from curate.index import HammingIndex

        qi, xi, _ = HammingIndex(codes, max_hamming).search(codes, exclude_self=True)
        keep = qi < xi
        a, b = qi[keep], xi[keep]
        sizes = [n]
    else:
        from curate.partition import (
            plan_block_partitions,
            plan_partitions,
            search_partition,
            train_quantizer,
            unique_pairs,
        )

        t_train = time.perf_counter()
        if lists < 0:  # exact block partitions, -lists prefix bits
            plan = plan_block_partitions(codes, max_hamming, -lists)
        else:
            quantizer = train_quantizer(codes, lists)
            plan = plan_partitions(quantizer.assign(codes, nprobe))
        t_assign = time.perf_counter() - t_train
        found, sizes, queries = [], [], []
        for p in plan:
            sizes.append(len(p.home_ids))
            queries.append(len(p.query_ids))
            found.append(search_partition(codes[p.home_ids], p.home_ids, codes[p.query_ids], p.query_ids,
                                          max_hamming))
        a, b, _ = unique_pairs(*(np.concatenate(x) for x in zip(*found, strict=True)))
    wall = time.perf_counter() - t0
    got = _keys(a, b, n)
    out = {"n": n, "lists": lists, "nprobe": nprobe, "wall_s": round(wall, 2), "pairs": int(len(got)),
           "peak_rss_mb": _peak_mb(),
           "rss_before_mb": round(rss0 / 1024), "largest_list": int(max(sizes)), "smallest_list": int(min(sizes))}
    if lists:
        out["train_assign_s"] = round(t_assign, 2)
        out["queries_per_code"] = round(sum(queries) / n, 2)
    planted_keys = planted[:, 0].astype(np.int64) * n + planted[:, 1]
    bits = np.bitwise_count(codes[planted[:, 0]] ^ codes[planted[:, 1]])
    hit = np.isin(planted_keys, got)
    out["planted_recall"] = round(float(hit.mean()), 5)
    out["planted_recall_1_4_bits"] = round(float(hit[bits <= 4].mean()), 5)
    out["planted_recall_5_8_bits"] = round(float(hit[bits > 4].mean()), 5)
    ref = CACHE / f"exact-{n}-{max_hamming}.npy"
    if lists == 0:
        np.save(ref, got)
    elif ref.exists():
        exact = np.load(ref)
        out["recall_vs_unpartitioned"] = round(float(np.isin(exact, got).mean()), 5)
        out["extra_pairs"] = int((~np.isin(got, exact)).sum())  # must be 0: the search inside a list is exact
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--max-hamming", type=int, default=8)
    ap.add_argument("--lists", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--block-bits", type=int, nargs="*", default=[],
                    help="also the exact block partitions with these prefix bits")
    ap.add_argument("--skip-exact", action="store_true", help="reuse the unpartitioned pairs saved by a past run")
    ap.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        n, lists, nprobe = args.one
        print(json.dumps(run_one(n, args.max_hamming, lists, nprobe)))
        return
    for n in args.n:
        _codes(n)
        configs = ([] if args.skip_exact else [(0, 0)]) + [(k, p) for k in args.lists for p in args.nprobe]
        configs += [(-b, 0) for b in args.block_bits]
        for lists, nprobe in configs:
            # one thread for faiss too (OMP_NUM_THREADS): the HammingIndex search is single-threaded numpy
            out = subprocess.run([sys.executable, __file__, "--max-hamming", str(args.max_hamming), "--one",
                                  str(n), str(lists), str(nprobe)], capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(out.stdout.strip() or out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main()
