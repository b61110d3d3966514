#!/usr/bin/env python3
"""`curate report` on a 50,000-row workspace: time and size.

    python benchmarks/report_bench.py [--rows 50000] [--corpus ../shared/data] [--out DIR]

Builds (once, into benchmarks/out/report_ws_<rows>/) a synthetic workspace whose
manifest rows point at real photos: every readable image of the corpus and of
scikit-image's bundled data is ingested for real, then its rows are repeated to
``--rows`` rows with the decisions every stage makes: 50 Zipf-distributed
classes, an 8:1:1 split, drops for every kind of reason, 3,000 duplicate groups
(some spanning splits, some with label conflicts), balance (balanced_out rows
and augmented derived rows), face crops (derived rows) and a run record per
stage. The manifest is validated by ``Workspace.write_manifest``.

Then it times, in the same run:

- ``curate report`` end to end (a subprocess: imports, read, charts, thumbnails,
  write), wall and CPU seconds;
- ``curate status`` (the quick text view) on the same workspace, for scale;
- thumbnail decoding, CPU seconds on one thread: the report's reduced-scale
  decode (Pillow draft) vs a full-size decode (``load_display`` + ``thumbnail``),
  over every distinct file and over the JPEGs of 1 megapixel or more.

Prints one JSON line per measurement and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from curate.schema import MANIFEST_COLUMNS, conform  # noqa: E402
from curate.stages.ingest import IngestOptions, SourceSpec, ingest  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

N_CLASSES = 50
N_DUP_GROUPS = 3000


def build_workspace(root: Path, rows: int, corpus: Path, seed: int = 0) -> Workspace:
    """The synthetic workspace (idempotent: reused when already built)."""
    if (root / ".done").exists():
        return Workspace.open(root)
    import shutil

    from curate.demo import bundled_photos_dir

    if root.exists():
        shutil.rmtree(root)
    real = Workspace.create(root.parent / (root.name + "_real"), exist_ok=True)
    specs = [SourceSpec(corpus / s, s, "flat") for s in ("faces_by_person", "faces_misc", "photos")
             if (corpus / s).exists()]
    specs.append(SourceSpec(bundled_photos_dir(), "skimage", "flat"))
    real.run_stage("ingest", ingest, IngestOptions(specs, workers=2))
    base = real.read_manifest()
    pictures = base[(base["status"] == "kept") & base["width"].notna()].reset_index(drop=True)
    broken = base[base["reason"].isin(["unreadable", "truncated", "not_an_image", "empty_file"])]
    rng = np.random.default_rng(seed)

    # Plain rows: real files repeated under new names.
    n_derived_faces, n_aug = 2000, 2500
    n = rows - n_derived_faces - n_aug
    pick = rng.integers(0, len(pictures), n)
    m = pictures.iloc[pick].reset_index(drop=True).copy()
    ids = np.array([f"s{i:07d}" for i in range(n)])
    zipf = rng.zipf(1.3, n) % N_CLASSES
    labels = np.array([f"class_{k:02d}" for k in range(N_CLASSES)])[zipf]
    m["sample_id"] = ids
    m["source"] = rng.choice(["crawl", "kaggle", "portal", "phone"], n, p=[0.5, 0.25, 0.15, 0.1])
    m["label"] = labels
    m["rel_path"] = [f"{lab}/{i:07d}_{Path(p).name}" for i, lab, p in zip(range(n), labels, m["path"], strict=True)]
    m["sha256"] = [f"{i:064x}" for i in range(n)]
    m["split"] = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    m["decided_by"] = "ingest"
    m[["dup_group", "duplicate_of", "reason", "detail"]] = None
    m["label_conflict"] = False

    # Drops for every reason kind; rows with no picture point at the corpus's broken files.
    drop = rng.random(n)
    for reason, lo, hi in (("too_small", 0.00, 0.01), ("bad_aspect", 0.01, 0.015), ("unreadable", 0.015, 0.02),
                           ("truncated", 0.02, 0.022), ("not_an_image", 0.022, 0.025), ("rejected_in_review", 0.025, 0.03)):
        sel = (drop >= lo) & (drop < hi)
        m.loc[sel, ["status", "reason"]] = ["dropped", reason]
        if reason in ("unreadable", "truncated", "not_an_image") and len(broken):
            m.loc[sel, "path"] = rng.choice(broken["path"].to_numpy(), int(sel.sum()))
            m.loc[sel, ["width", "height"]] = None

    # Duplicate groups of 2-6 among kept rows; 3% straddle splits in the source, 1% have label conflicts.
    kept_idx = np.flatnonzero((m["status"] == "kept").to_numpy())
    sizes = rng.integers(2, 7, N_DUP_GROUPS)
    members = rng.choice(kept_idx, int(sizes.sum()), replace=False)
    start = 0
    for g, size in enumerate(sizes):
        grp = members[start:start + size]
        start += size
        keeper = m.at[grp[0], "sample_id"]
        if g % 33 != 0:
            m.loc[grp, "split"] = m.at[grp[0], "split"]
        if g % 100 == 0:
            m.loc[grp[1:], "label"] = "class_00"
            m.loc[grp, "label_conflict"] = True
        m.loc[grp, "dup_group"] = keeper
        m.loc[grp[1:], ["status", "reason", "duplicate_of", "decided_by"]] = ["dropped", "duplicate", keeper, "dedupe"]

    # Balance (train only): undersample big classes, oversample small ones with derived rows.
    train_kept = (m["split"] == "train") & (m["status"] == "kept")
    counts = m.loc[train_kept, "label"].value_counts()
    target = int(counts.median())
    for lab, c in counts.items():
        if c > target:
            rows_lab = m.index[train_kept & (m["label"] == lab)]
            out = rng.choice(rows_lab, c - target, replace=False)
            m.loc[out, ["status", "reason", "decided_by"]] = ["dropped", "balanced_out", "balance"]
    small = m[train_kept & m["label"].isin(counts[counts < target].index)]
    parents = small.iloc[rng.integers(0, len(small), n_aug)]
    aug = _derived(parents, "augment", "balance", "a")  # as curate balance writes its copies

    # Face crops of rows from the face folders: parents superseded.
    faces_src = m[(m["status"] == "kept") & m["path"].str.contains("faces_")]
    fparents = faces_src.iloc[rng.choice(len(faces_src), n_derived_faces, replace=True)]
    crops = _derived(fparents, "faces", "faces", "f")
    m.loc[m["sample_id"].isin(fparents["sample_id"]), ["status", "reason", "decided_by"]] = ["dropped", "superseded",
                                                                                               "faces"]
    no_face = m.index[(m["status"] == "kept")][:300]
    m.loc[no_face, ["status", "reason", "decided_by"]] = ["dropped", "no_face", "faces"]
    full = conform(pd.concat([m, aug, crops], ignore_index=True), MANIFEST_COLUMNS)
    full.loc[full["status"] == "kept", ["reason", "detail"]] = None

    ws = Workspace.create(root)
    ws.write_manifest(full)
    for cmd, opts in (("ingest", {"sources": ["crawl", "kaggle", "portal", "phone"]}), ("dedupe", {"max_hamming": 8}),
                      ("split", {"ratios": "8:1:1", "seed": 0}),
                      ("balance", {"target": target, "strategy": "both", "splits": ["train"]}),
                      ("faces", {"min_confidence": 0.5, "margin": 0.2}), ("check", {})):
        ws.record_run(cmd, opts, summary={"rows": len(full)})
        time.sleep(0.01)  # distinct start times keep the order
    (root / ".done").write_text("ok\n")
    return ws


def _derived(parents: pd.DataFrame, layout: str, stage: str, prefix: str) -> pd.DataFrame:
    d = parents.copy()
    d["parent_id"] = d["sample_id"]
    d["sample_id"] = [f"{prefix}{i:07d}" for i in range(len(d))]
    d["sha256"] = [f"{prefix}{i:063x}" for i in range(len(d))]
    d["layout"] = layout
    d["decided_by"] = stage
    d["transform"] = json.dumps({"op": layout})
    d[["dup_group", "duplicate_of"]] = None
    d["label_conflict"] = False
    return d


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, stdout). CPU time is what to
    compare on a shared machine: wall time grows with other people's load."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def thumbnails_draft_vs_full(paths: list[str]) -> dict[str, float]:
    """CPU seconds for 96 px thumbnails of ``paths``, one thread: the report's
    decoder (Pillow draft: JPEG DCT scaling) vs a full-size decode (load_display)."""
    from curate.imageio import load_display
    from curate.report.thumbs import thumbnail_bytes

    def cpu(fn: object) -> float:
        t0 = time.process_time()
        for p in paths:
            try:
                fn(p)  # type: ignore[operator]
            except Exception:
                continue
        return time.process_time() - t0

    draft = cpu(lambda p: thumbnail_bytes(p, 96, 70))
    full = cpu(lambda p: load_display(p).thumbnail((96, 96)))
    return {"files": len(paths), "draft_cpu_s": round(draft, 3), "full_cpu_s": round(full, 3),
            "ratio": round(full / max(draft, 1e-9), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ws = build_workspace(args.out / f"report_ws_{args.rows}", args.rows, args.corpus)
    print(json.dumps({"built": str(ws.root), "seconds": round(time.perf_counter() - t0, 1)}))
    curate = str(Path(sys.executable).parent / "curate")
    html = args.out / f"report_{args.rows}.html"
    t_report, cpu_report, out = timed([curate, "report", str(ws.root), "--out", str(html), "--json"])
    summary = json.loads(out)
    t_status, cpu_status, _ = timed([curate, "status", str(ws.root)])
    m = ws.read_manifest()
    res = {"rows": len(m), "report_wall_s": round(t_report, 2), "report_cpu_s": round(cpu_report, 2),
           "status_wall_s": round(t_status, 2), "status_cpu_s": round(cpu_status, 2), "bytes": summary["bytes"],
           "mb": round(summary["bytes"] / 1e6, 2), "thumbnails": summary["thumbnails"], "cpus": os.cpu_count(),
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(res))
    # Thumbnail decoding: every distinct readable file, and the large JPEGs among them.
    files = m[m["width"].notna()].drop_duplicates("path")
    big = files[(files["format"] == "JPEG") & (files["width"] * files["height"] >= 1_000_000)]
    thumbs = {"all": thumbnails_draft_vs_full(files["path"].tolist()),
              "jpeg_1mp": thumbnails_draft_vs_full(big["path"].tolist())}
    print(json.dumps(thumbs))
    print()
    print("| rows | `curate report` wall / CPU (s) | `curate status` wall / CPU (s) | report / status (CPU) "
          "| report size (MB) | thumbnails |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {res['rows']:,} | {res['report_wall_s']} / {res['report_cpu_s']} | {res['status_wall_s']} / "
          f"{res['status_cpu_s']} | {res['report_cpu_s'] / res['status_cpu_s']:.1f}x | {res['mb']} | {res['thumbnails']} |")
    print()
    print("| files | draft decode, CPU (s) | full decode, CPU (s) | full / draft |")
    print("|---|---:|---:|---:|")
    for name, t in thumbs.items():
        print(f"| {name} ({t['files']}) | {t['draft_cpu_s']} | {t['full_cpu_s']} | {t['ratio']}x |")


if __name__ == "__main__":
    main()
