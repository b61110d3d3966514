#!/usr/bin/env python3
"""`curate labels --find-issues` on the corpus with labels flipped on purpose: precision and recall.

    python benchmarks/labels_bench.py [--corpus ../shared/data] [--flip 0.08] [--seeds 5] [--features pixels,resnet18]

Three classes of real photos: ``person`` (faces_by_person/, 51 portraits),
``photo`` (photos/ without the scikit-image ones: objects, scenes, test
fixtures) and ``science`` (scikit-image's bundled photos: microscopy,
astronomy, textures, greyscale). For each seed, FLIP of the readable images are
put in another class's folder (the wrong label), the folders are ingested for
real, and ``--find-issues`` runs with each feature set. The flagged set
(cleanlab's ``find_label_issues``) is compared with the flips:

- precision: flagged rows that were flipped / flagged rows;
- recall: flipped rows flagged / flipped rows;
- the random baseline flags as many rows, drawn at random (its expected
  precision is the flip rate, its recall flagged / rows);
- top-k precision: the k highest ``label_issue_score`` rows, k = the number of flips.

Prints one JSON line per run and a Markdown table for docs/labels.md.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402


def readable(p: Path) -> bool:
    try:
        with Image.open(p) as im:
            im.load()
        return min(im.size) >= 64
    except Exception:
        return False


def class_files(corpus: Path) -> dict[str, list[Path]]:
    import skimage.data

    # the photos shipped in the package (skimage.data_dir points at a download cache when pooch is installed)
    sk = sorted(p for p in Path(skimage.data.__file__).parent.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    people = sorted((corpus / "faces_by_person").rglob("*.*"))
    photos = sorted(p for p in (corpus / "photos").iterdir() if not p.name.startswith("skimage_")
                    and not p.name.startswith("retinaface_"))  # retinaface_img3 is a face
    out = {"person": people, "photo": photos, "science": sk}
    return {k: [p for p in v if readable(p)] for k, v in out.items()}


def build(files: dict[str, list[Path]], flip: float, seed: int, root: Path) -> dict[str, str]:
    """A class-folder source with ``flip`` of the files in a wrong folder; returns rel_path -> true class."""
    import numpy as np

    rng = np.random.default_rng(seed)
    items = [(c, p) for c, ps in files.items() for p in ps]
    n_flip = max(1, round(flip * len(items)))
    flipped = set(rng.choice(len(items), n_flip, replace=False).tolist())
    classes = sorted(files)
    truth = {}
    for i, (c, p) in enumerate(items):
        label = c
        if i in flipped:
            label = rng.choice([k for k in classes if k != c])
        d = root / str(label)
        d.mkdir(parents=True, exist_ok=True)
        name = f"{c}_{i:04d}{p.suffix.lower()}"
        shutil.copy2(p, d / name)
        truth[f"{label}/{name}"] = c
    return truth


def run(corpus: Path, flip: float, seeds: int, features: list[str]) -> list[dict]:
    import numpy as np

    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.stages.labels import LabelsOptions, labels
    from curate.workspace import Workspace

    files = class_files(corpus)
    rows = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            truth = build(files, flip, seed, src)
            ws = Workspace.create(Path(tmp) / "ws")
            ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="bench", layout="folder")], workers=2))
            for feat in features:
                t0 = time.perf_counter()
                res = ws.run_stage("labels", labels, LabelsOptions(find_issues=True, features=feat, seed=seed,
                                                                   workers=2))
                secs = time.perf_counter() - t0
                m = res.manifest[res.manifest["label_issue_score"].notna()]
                wrong = np.array([truth[r] != lab for r, lab in zip(m["rel_path"], m["label"], strict=True)])
                flagged = m["suggested_label"].notna().to_numpy()
                fixed = np.array([truth[r] == s for r, s in zip(m["rel_path"], m["suggested_label"], strict=True)])
                k = int(wrong.sum())
                top = np.argsort(-m["label_issue_score"].to_numpy(), kind="stable")[:k]
                rng = np.random.default_rng(1000 + seed)
                rand_p, rand_r = [], []
                for _ in range(200):
                    pick = rng.choice(len(m), max(1, int(flagged.sum())), replace=False)
                    rand_p.append(wrong[pick].mean())
                    rand_r.append(wrong[pick].sum() / max(k, 1))
                info = res.summary["find_issues"]
                row = {"seed": seed, "features": feat, "weights": info["weights"], "rows": len(m), "flipped": k,
                       "flagged": int(flagged.sum()),
                       "precision": round(float(wrong[flagged].mean()) if flagged.any() else 0.0, 3),
                       "recall": round(float(wrong[flagged].sum() / max(k, 1)), 3),
                       "suggested_right": round(float(fixed[flagged & wrong].mean()) if (flagged & wrong).any() else 0, 3),
                       "topk_precision": round(float(wrong[top].mean()), 3),
                       "random_precision": round(float(np.mean(rand_p)), 3),
                       "random_recall": round(float(np.mean(rand_r)), 3),
                       "oof_accuracy": info["accuracy_out_of_fold"], "seconds": round(secs, 2)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| features | weights | rows | flipped | flagged | precision | recall | top-k precision | "
             "suggested label right | random precision | random recall | out-of-fold accuracy | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for feat in dict.fromkeys(r["features"] for r in rows):
        rs = [r for r in rows if r["features"] == feat]

        def mean(key: str, rs: list[dict] = rs) -> float:
            return statistics.mean(r[key] for r in rs)

        lines.append(f"| {feat} | {rs[0]['weights']} | {rs[0]['rows']} | {mean('flipped'):.1f} | {mean('flagged'):.1f} | "
                     f"{mean('precision'):.2f} | {mean('recall'):.2f} | {mean('topk_precision'):.2f} | "
                     f"{mean('suggested_right'):.2f} | {mean('random_precision'):.2f} | {mean('random_recall'):.2f} | "
                     f"{mean('oof_accuracy'):.2f} | {mean('seconds'):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--flip", type=float, default=0.08)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--features", default="pixels,resnet18")
    args = ap.parse_args()
    rows = run(args.corpus, args.flip, args.seeds, args.features.split(","))
    print(f"\nmean of {args.seeds} seeds, {args.flip:.0%} of labels flipped\n")
    print(table(rows))


if __name__ == "__main__":
    main()
