#!/usr/bin/env python3
"""`curate review` at scale: build, refresh and pull vs FiftyOne's own bare import, in one run.

    python benchmarks/review_bench.py [--n 20000] [--corpus ../shared/data]

Makes a workspace of N rows pointing at real photos (every readable image of the
corpus, ingested for real, the kept ones repeated under new sample_ids), with a
face box on every 4th row, 3% dropped as duplicates and 2% unreadable rows.
FiftyOne runs against a mongod in a temporary database folder. It times:

- baseline: FiftyOne alone, ``Dataset.add_samples`` of N samples with only a filepath
  (the least any FiftyOne import does);
- curate build: a new dataset with every field, the boxes and the saved views;
- curate refresh, nothing changed; and after 1% of the rows changed;
- curate pull of 1% tagged rows (apply, record in runs/, refresh).

Prints one JSON line per measurement and a Markdown table for docs/benchmarks.md.
Wall and CPU seconds of this process (mongod's own CPU is not included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timer:
    def __init__(self, name: str, results: list[dict]) -> None:
        self.name, self.results = name, results

    def __enter__(self) -> Timer:
        self.t0, self.c0 = time.perf_counter(), cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        rec = {"step": self.name, "wall_s": round(time.perf_counter() - self.t0, 2),
               "cpu_s": round(cpu_s() - self.c0, 2)}
        self.results.append(rec)
        print(json.dumps(rec), flush=True)


def make_workspace(root: Path, corpus: Path, n: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    from curate.schema import MANIFEST_COLUMNS, conform
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    ws = Workspace.create(root / "ws")
    specs = [SourceSpec(corpus / d) for d in ("faces_by_person", "photos", "faces_misc")]
    ws.run_stage("ingest", ingest, IngestOptions(specs, workers=2))
    base = ws.read_manifest()
    kept = base[base["status"] == "kept"].reset_index(drop=True)
    bad = base[base["width"].isna()].reset_index(drop=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        src = bad.iloc[i % len(bad)] if i % 50 == 0 else kept.iloc[i % len(kept)]
        row = src.to_dict()
        row.update(sample_id=f"r{i:08d}", rel_path=f"{i:08d}/{src['rel_path']}", dup_group=None,
                   duplicate_of=None, label_conflict=False)
        rows.append(row)
    m = pd.DataFrame(rows)
    dup = (np.arange(n) % 33 == 1) & m["width"].notna().to_numpy()
    m.loc[dup, ["status", "reason", "duplicate_of", "dup_group"]] = ["dropped", "duplicate", "r00000000", "r00000000"]
    m.loc[0, "dup_group"] = "r00000000"
    faces = m[(np.arange(n) % 4 == 0) & m["width"].notna().to_numpy()]
    w, h = faces["width"].astype(float).to_numpy(), faces["height"].astype(float).to_numpy()
    x1, y1 = w * rng.uniform(0.1, 0.4, len(w)), h * rng.uniform(0.1, 0.4, len(h))
    ann = pd.DataFrame({"sample_id": faces["sample_id"].to_numpy(), "label": "face", "x1": x1, "y1": y1,
                        "x2": x1 + w * 0.3, "y2": y1 + h * 0.3, "score": 0.9, "origin": "faces", "iscrowd": False})
    ws.write_manifest(conform(m, MANIFEST_COLUMNS))
    ws.write_annotations(ann)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--in-folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_folder is None:
        # Run in a child process, so that its mongod has stopped before the folder is removed.
        import subprocess

        tmp = Path(tempfile.mkdtemp(prefix="review-bench-"))
        try:
            subprocess.run([sys.executable, __file__, "--n", str(args.n), "--corpus", str(args.corpus),
                            "--in-folder", str(tmp)], check=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    run(args.n, args.corpus, args.in_folder)


def run(n: int, corpus: Path, tmp: Path) -> None:
    os.environ["FIFTYONE_DATABASE_DIR"] = str(tmp / "db")
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    results: list[dict] = []
    ws = make_workspace(tmp, corpus, n)
    import fiftyone as fo
    from fiftyone.core.media import IMAGE, get_media_type

    from curate.stages.review import dataset_name, pull_review, review

    fo.list_datasets()  # start mongod outside the timings
    # FiftyOne refuses a path whose name is not an image's (faces.csv): those rows are left out here
    paths = [p for p in ws.read_manifest()["path"] if get_media_type(p) == IMAGE]
    with Timer("baseline: FiftyOne add_samples(filepath only)", results):
        bare = fo.Dataset("bare")
        bare.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    with Timer("curate review: build", results):
        built = review(ws).summary
    with Timer("curate review: refresh, nothing changed", results):
        same = review(ws).summary
    m = ws.read_manifest()
    m.loc[m.index[::100], "split"] = "train"
    ws.write_manifest(m)
    with Timer("curate review: refresh, 1% of rows changed", results):
        refreshed = review(ws).summary
    ds = fo.load_dataset(dataset_name(ws.root))
    ds.match({"sample_id": {"$in": m.loc[m.index[5::100], "sample_id"].tolist()}}).tag_samples("reject")
    with Timer("curate review --pull: 1% of rows tagged", results):
        pulled = pull_review(ws).summary
    print(json.dumps({"built": {k: built[k] for k in ("samples", "added", "media")},
                      "same": {k: same[k] for k in ("updated", "unchanged")},
                      "refreshed": {k: refreshed[k] for k in ("updated", "unchanged")},
                      "pulled": pulled["changed"], "baseline_samples": len(paths)}), flush=True)
    base = results[0]
    print(f"\n| step ({n:,} rows) | wall (s) | CPU (s) | CPU vs baseline |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['step']} | {r['wall_s']} | {r['cpu_s']} | {r['cpu_s'] / base['cpu_s']:.1f}x |")
    print(f"\nload average during the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
