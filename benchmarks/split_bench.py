"""Benchmark: `curate split` on synthetic manifests vs scikit-learn's StratifiedGroupKFold.

Both get the same table: N rows in 100 classes (Zipf-like sizes), 30 % of rows in
duplicate groups of 2-4, and a perceptual hash per row (group members 1 bit from
their group's first row), so curate's default --near-bits 4 search runs too. Both produce a leak-free grouped, stratified split;
sklearn's StratifiedGroupKFold(n_splits=10) takes one fold as test and one as val
(8:1:1), curate's split does the same from its ratios. We report CPU seconds and
the largest per-class deviation from the 8:1:1 target (classes >= 30 rows).

    python benchmarks/split_bench.py 10000 100000 1000000

Not part of the test suite.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd

from curate.schema import MANIFEST_COLUMNS, conform
from curate.stages.split import SplitOptions, assign_splits, parse_ratios


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 101) ** 0.8
    labels = rng.choice(100, size=n, p=weights / weights.sum())
    ids = np.array([f"{i:09d}" for i in range(n)], dtype=object)
    dup = np.full(n, None, dtype=object)
    i = 0
    grouped = rng.random(n) < 0.3
    while i < n:  # consecutive grouped rows of one label form a group of 2-4
        if grouped[i]:
            size = int(rng.integers(2, 5))
            j = min(n, i + size)
            dup[i:j] = ids[i]
            labels[i:j] = labels[i]
            i = j
        else:
            i += 1
    # Perceptual hashes: random per row; members of a duplicate group are their first row's hash
    # with one bit flipped (so the split's --near-bits search has real work and real pairs).
    h = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    first = pd.Series(np.arange(n)).groupby(pd.Series(dup).fillna(pd.Series(ids))).transform("min").to_numpy()
    flip = np.where(first != np.arange(n), np.uint64(1) << rng.integers(0, 64, size=n).astype(np.uint64),
                    np.uint64(0))
    phash = [f"{v:016x}" for v in (h[first] ^ flip).tolist()]
    df = pd.DataFrame({"sample_id": ids, "source": "s", "path": ids, "origin_path": ids, "rel_path": ids,
                       "layout": "folder", "status": "kept", "label": [f"c{c}" for c in labels], "dup_group": dup,
                       "phash": phash})
    return conform(df, MANIFEST_COLUMNS)


def worst_deviation(labels: np.ndarray, splits: np.ndarray) -> float:
    target = {"train": 0.8, "val": 0.1, "test": 0.1}
    df = pd.DataFrame({"c": labels, "s": splits})
    sizes = df["c"].value_counts()
    big = sizes[sizes >= 30].index
    tab = pd.crosstab(df["c"], df["s"]).loc[big]
    frac = tab.div(tab.sum(axis=1), axis=0)
    return float(max((frac.get(s, 0) - t).abs().max() for s, t in target.items()))


def cpu_s() -> float:
    """CPU seconds (the development machine is shared, so wall time is noisy)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_curate(m: pd.DataFrame, near_bits: int | None = 4) -> tuple[float, float]:
    t = cpu_s()
    out = assign_splits(m, SplitOptions(ratios=parse_ratios("8:1:1"), seed=0, near_bits=near_bits))
    dt = cpu_s() - t
    return dt, worst_deviation(out["label"].to_numpy(), out["split"].to_numpy())


def run_sklearn(m: pd.DataFrame) -> tuple[float, float]:
    from sklearn.model_selection import StratifiedGroupKFold

    groups = m["dup_group"].where(m["dup_group"].notna(), m["sample_id"]).to_numpy()
    y = m["label"].to_numpy()
    t = cpu_s()
    folds = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=0).split(np.zeros(len(m)), y, groups)
    split = np.full(len(m), "train", dtype=object)
    for k, (_, test_idx) in enumerate(folds):
        if k == 0:
            split[test_idx] = "test"
        elif k == 1:
            split[test_idx] = "val"
        else:
            break
    dt = cpu_s() - t
    return dt, worst_deviation(y, split)


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    print("| rows | curate split (CPU s) | curate, --near-bits -1 (CPU s) | sklearn StratifiedGroupKFold (CPU s) | "
          "sklearn / curate | worst class deviation curate / sklearn |")
    print("|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        m = synthetic(n)
        c_t, c_dev = run_curate(m)
        n_t, _ = run_curate(m, None)
        s_t, s_dev = run_sklearn(m) if n <= 200_000 else (float("nan"), float("nan"))
        ratio = f"{s_t / c_t:.1f}x" if s_t == s_t else "-"
        sk = f"{s_t:.2f}" if s_t == s_t else "- (not run)"
        sk_dev = f"{s_dev:.3f}" if s_dev == s_dev else "-"
        print(f"| {n:,} | {c_t:.2f} | {n_t:.2f} | {sk} | {ratio} | {c_dev:.3f} / {sk_dev} |", flush=True)
