"""Benchmark for curate.train: what does curation buy on faces_by_person?

Not a test. Run from the repository root::

    python benchmarks/train_bench.py [--epochs 40] [--img-size 64] [--seeds 0 1 2]

It builds three exports of ../shared/data/faces_by_person (51 photos, 13
people, 1-8 photos each):

- **raw**: the class folders as they are (whole photos, copies included).
- **split-only**: ingest, then ``split`` (6:2:2, duplicate groups kept
  together), then ``export --format folder``. These are the whole photos.
- **curated**: the same ingest and split (so the same photos are in each
  split), then ``faces`` (the largest face, cropped with a 0.25 margin; a
  crop takes its photo's split), then ``export``. These are the face crops.

The raw and split-only exports are each compared with the curated one with
``curate.train.loop.compare_exports``, which trains both sides with the same
seed and budget and scores them on the curated test split. Against raw, the
curated side is read from its workspace, so that the photos whose face crops
are test images are left out of raw training (lineage via ``origin_path``). There are two
reference points on the same test images: the majority class, and
1-nearest-neighbour on normalized pixels of the curated train split.

It prints a markdown table for docs/benchmarks.md and writes the raw
results to benchmarks/out/train_bench.json. It needs the corpus, torch,
and the ingest/faces/split/export stages. A stage that is missing is reported
and its export is skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "faces_by_person"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_workspace_export(root: Path, name: str, with_faces: bool, seed: int
                           ) -> tuple[Path | None, Path | None, dict[str, Any]]:
    """Ingest faces_by_person, split 6:2:2, optionally crop faces, export folder."""
    info: dict[str, Any] = {"steps": {}}
    try:
        from curate.stages.export import ExportOptions, export
        from curate.stages.ingest import IngestOptions, SourceSpec, ingest
        from curate.stages.split import SplitOptions, parse_ratios, split
        from curate.workspace import Workspace
    except ImportError as e:
        info["skipped"] = f"stage missing: {e}"
        return None, None, info
    ws = Workspace.create(root / f"ws-{name}")
    t = time.perf_counter()
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(CORPUS, "faces")], workers=2))
    info["steps"]["ingest_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("6:2:2"), seed=seed))
    info["steps"]["split_s"] = round(time.perf_counter() - t, 2)
    if with_faces:
        try:
            from curate.stages.faces import FacesOptions, faces
        except ImportError as e:
            info["skipped"] = f"faces stage missing: {e}"
            return None, None, info
        t = time.perf_counter()
        res = ws.run_stage("faces", faces, FacesOptions(workers=2))
        info["steps"]["faces_s"] = round(time.perf_counter() - t, 2)
        info["faces_summary"] = {k: res.summary.get(k) for k in ("status", "reason")}
    out = root / f"export-{name}"
    t = time.perf_counter()
    ws.run_stage("export", export, ExportOptions("folder", out))
    info["steps"]["export_s"] = round(time.perf_counter() - t, 2)
    from curate.train.data import discover

    info["images"] = discover(out).counts()
    return out, ws.root, info


def baselines(curated: Path, img_size: int) -> dict[str, float]:
    """Majority class and 1-NN on normalized pixels, on the curated test split."""
    import numpy as np

    from curate.train.data import ImageClassDataset, discover

    src = discover(curated)
    train = ImageClassDataset(src.split("train"), src.classes, img_size=img_size)
    test = ImageClassDataset(src.split("test"), src.classes, img_size=img_size)
    train.preload()
    test.preload()
    xtr = np.stack([train[i][0].numpy().ravel() for i in range(len(train))])
    xte = np.stack([test[i][0].numpy().ravel() for i in range(len(test))])
    ytr, yte = np.array(train.targets), np.array(test.targets)
    majority = np.bincount(ytr, minlength=len(src.classes)).argmax()
    d = ((xte[:, None, :] - xtr[None, :, :]) ** 2).sum(-1)
    nn_pred = ytr[d.argmin(1)]
    return {"majority_class": float((yte == majority).mean()), "nearest_neighbour_pixels": float((nn_pred == yte).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: robust when other jobs share the cores)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary exports")
    args = ap.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"needs the corpus at {CORPUS}")

    import torch

    from curate.train.loop import TrainConfig, compare_exports

    tmp = Path(tempfile.mkdtemp(prefix="curate-train-bench-"))
    results: dict[str, Any] = {"args": vars(args), "torch_version": torch.__version__,
                               "torch_threads": torch.get_num_threads(), "exports": {}, "runs": []}
    try:
        raw = tmp / "raw"
        shutil.copytree(CORPUS, raw)
        exports = {"raw": raw}
        curated_ws = None
        for name, with_faces in (("split-only", False), ("curated", True)):
            log(f"building {name} export ...")
            path, ws_root, info = build_workspace_export(tmp, name, with_faces, args.split_seed)
            results["exports"][name] = info
            log(f"  {info}")
            if path is not None:
                exports[name] = path
                curated_ws = ws_root if name == "curated" else curated_ws
        if "curated" not in exports:
            sys.exit(f"no curated export: {results['exports'].get('curated')}")
        results["baselines"] = baselines(exports["curated"], args.img_size)
        log(f"baselines: {results['baselines']}")
        for seed in args.seeds:
            cfg = TrainConfig(epochs=args.epochs, img_size=args.img_size, batch_size=args.batch_size,
                              width=args.width, seed=seed, threads=args.threads)
            for other in ("raw", "split-only"):
                if other not in exports:
                    continue
                log(f"seed {seed}: {other} vs curated ...")
                # The curated side is read from its workspace for raw: it knows which photo each test
                # crop was cut from, so copies of those photos are left out of raw training.
                curated_side = curated_ws if other == "raw" and curated_ws is not None else exports["curated"]
                r = compare_exports(exports[other], curated_side, cfg, tmp / f"cmp-{other}-{seed}")
                results["runs"].append({
                    "seed": seed, "other": other,
                    "accuracy": r["accuracy"],
                    "shared": {k: r[k]["test_accuracy_on_shared_classes"] for k in ("raw", "curated")},
                    "train_images": {k: r[k]["train_images"] for k in ("raw", "curated")},
                    "left_out": len(r["raw"]["left_out_as_copies_of_test_images"]),
                    "steps": {k: r[k]["steps"] for k in ("raw", "curated")},
                    "train_seconds": {k: r[k]["train_seconds"] for k in ("raw", "curated")},
                    "test_images": r["test"]["images"],
                    "classes_only_in_curated": r["classes_only_in_curated"],
                    "classes_only_in_raw": r["classes_only_in_raw"],
                })
                log(f"  {results['runs'][-1]}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    runs = results["runs"]
    print(f"\ncurated test split: {runs[0]['test_images']} images; "
          f"exports (train/val/test): { {k: v.get('images') for k, v in results['exports'].items()} }")
    print("\n| trained on | test accuracy, mean over seeds (each seed) | on shared classes | train images | "
          "steps | train s / model |")
    print("|---|---|---|---|---|---|")
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        rows.setdefault(r["other"], []).append({"acc": r["accuracy"]["raw"], "shared": r["shared"]["raw"],
                                                "n": r["train_images"]["raw"], "steps": r["steps"]["raw"],
                                                "s": r["train_seconds"]["raw"]})
        if r["other"] == "raw":
            rows.setdefault("curated", []).append({"acc": r["accuracy"]["curated"], "shared": r["shared"]["curated"],
                                                   "n": r["train_images"]["curated"],
                                                   "steps": r["steps"]["curated"], "s": r["train_seconds"]["curated"]})
    for name, rs in rows.items():
        accs = [x["acc"] for x in rs]
        shared = [x["shared"] for x in rs if x["shared"] is not None]
        print(f"| {name} | {statistics.mean(accs):.3f} ({', '.join(f'{a:.2f}' for a in accs)}) | "
              f"{statistics.mean(shared):.3f} | {rs[0]['n']} | {rs[0]['steps']} | "
              f"{statistics.mean(x['s'] for x in rs):.1f} |")
    b = results["baselines"]
    print(f"| (majority class) | {b['majority_class']:.3f} | | | | |")
    print(f"| (1-NN on pixels, curated train) | {b['nearest_neighbour_pixels']:.3f} | | | | |")


if __name__ == "__main__":
    main()
