"""COCO -> YOLO -> COCO on 5,000 images and 40,000 boxes: curate next to globox and Datumaro.

    python benchmarks/convert_bench.py                 # all three, one run, figures for docs/benchmarks.md
    python benchmarks/convert_bench.py --images 500    # a quick look
    git archive COMMIT | tar -x -C /tmp/before          # curate as it was, next to curate now, in one run:
    python benchmarks/convert_bench.py --curate-before /tmp/before --skip datumaro

The dataset is made once in ``benchmarks/out/convert/`` from scikit-image's
bundled photos: 5,000 JPEGs (random crops, 96-200 px a side), split 4,000
train / 1,000 val (Datumaro's Ultralytics exporter refuses a dataset without
val), with 8 boxes per image over 10 categories: one COCO file per split.

Each tool converts COCO -> YOLO, then that YOLO -> COCO, and the time of each
leg is taken inside the tool's own process (interpreter start-up excluded).
The tools take turns for ``--repeat`` rounds (default 2) and each one's
fastest round is reported.
What each one does per leg differs, and the table says so:

- curate (``convert``): reads the annotations, opens every image (sha256,
  size, EXIF orientation, a full decode at 1/8 scale that catches truncation;
  no perceptual hashes), copies the images, writes the labels, then reads the
  result back and compares it (``--no-verify`` skips that last step; timed too);
- globox: annotations only (``from_coco``/``save_yolo_v5``; reading YOLO back
  opens every image's header for its size); it copies no image;
- Datumaro (``coco_instances`` -> ``yolo_ultralytics`` -> ``coco_instances``,
  ``save_media=True`` so the images are copied as by curate).

Datumaro pins pandas 2.3, Pillow 12, OpenCV 4 and pyarrow 25 (curate's
environment has pandas 3.1, Pillow 13, OpenCV 5, pyarrow 26), so it runs from
its own virtual environment (``benchmarks/out/datumaro-venv``, created on first
use with ``pip install datumaro``), in a subprocess of this run.

Afterwards every tool's final COCO file is read back with pycocotools and its
image and box counts are printed, so a fast tool that loses boxes shows.

``--curate-before DIR`` adds curate from another source tree (an older commit)
as one more tool, run in a subprocess with ``DIR`` first on the path and timed
inside it like Datumaro: a before/after comparison against globox in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "convert"
DATUMARO_VENV = HERE / "out" / "datumaro-venv"
DATUMARO_VERSION = "1.13.12"
CATEGORIES = [f"class_{i}" for i in range(10)]

DATUMARO_SCRIPT = r"""
import json, sys, time, logging
logging.disable(logging.WARNING)
from datumaro.components.dataset import Dataset
src, mid, dst = sys.argv[1:4]
t0 = time.perf_counter()
Dataset.import_from(src, "coco_instances").export(mid, "yolo_ultralytics", save_media=True)
t1 = time.perf_counter()
Dataset.import_from(mid, "yolo").export(dst, "coco_instances", save_media=True)  # Datumaro: import as "yolo"
t2 = time.perf_counter()
import datumaro
print(json.dumps({"to_yolo": t1 - t0, "to_coco": t2 - t1, "version": datumaro.__version__}))
"""


SPLITS = (("train", 0.8), ("val", 0.2))  # Ultralytics (and Datumaro's exporter for it) need both


def make_dataset(root: Path, n_images: int, boxes_per_image: int, seed: int = 0) -> Path:
    """Write images/{train,val}/*.jpg and annotations/instances_{train,val}.json (once per size)."""
    marker = root / "annotations" / "made.json"
    if marker.exists() and json.loads(marker.read_text()) == {"images": n_images, "boxes": boxes_per_image}:
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "annotations").mkdir(parents=True)
    from curate.demo import bundled_photos_dir

    rng = np.random.default_rng(seed)
    photos = [Image.open(bundled_photos_dir() / n).convert("RGB")
              for n in ("astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg")]
    start, ann_id = 0, 1
    for split, frac in SPLITS:
        count = round(n_images * frac) if split == "train" else n_images - start
        (root / "images" / split).mkdir(parents=True)
        images, annotations = [], []
        for i in range(start, start + count):
            photo = photos[i % len(photos)]
            w, h = (int(v) for v in rng.integers(96, 201, size=2))
            x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
            name = f"{i:05d}.jpg"
            photo.crop((x, y, x + w, y + h)).save(root / "images" / split / name, quality=85)
            images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
            for _ in range(boxes_per_image):
                bw, bh = float(rng.uniform(4, w / 2)), float(rng.uniform(4, h / 2))
                bx, by = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
                annotations.append({"id": ann_id, "image_id": i + 1,
                                    "category_id": int(rng.integers(1, len(CATEGORIES) + 1)),
                                    "bbox": [round(bx, 2), round(by, 2), round(bw, 2), round(bh, 2)],
                                    "area": round(bw * bh, 2), "iscrowd": 0, "segmentation": []})
                ann_id += 1
        doc = {"info": {"description": "curate convert benchmark"}, "licenses": [],
               "categories": [{"id": k + 1, "name": c, "supercategory": ""} for k, c in enumerate(CATEGORIES)],
               "images": images, "annotations": annotations}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
        start += count
    marker.write_text(json.dumps({"images": n_images, "boxes": boxes_per_image}))
    return root


def run_curate(src: Path, work: Path, verify: bool, workers: int) -> dict[str, Any]:
    from curate.stages.convert import ConvertOptions, convert

    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    convert(ConvertOptions(src, "yolo", work / "yolo", from_format="coco", verify=verify, workers=workers))
    t1 = time.perf_counter()
    convert(ConvertOptions(work / "yolo", "coco", work / "coco", from_format="yolo", verify=verify, workers=workers))
    t2 = time.perf_counter()
    return {"to_yolo": t1 - t0, "to_coco": t2 - t1, "result": sorted((work / "coco/annotations").glob("*.json"))}


CURATE_BEFORE_SCRIPT = r"""
import json, shutil, sys, time
from pathlib import Path
from curate.stages.convert import ConvertOptions, convert
src, work, verify, workers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
shutil.rmtree(work, ignore_errors=True)
t0 = time.perf_counter()
convert(ConvertOptions(src, "yolo", work / "yolo", from_format="coco", verify=verify, workers=workers))
t1 = time.perf_counter()
convert(ConvertOptions(work / "yolo", "coco", work / "coco", from_format="yolo", verify=verify, workers=workers))
t2 = time.perf_counter()
print(json.dumps({"to_yolo": t1 - t0, "to_coco": t2 - t1}))
"""


def run_curate_before(tree: Path, src: Path, work: Path, verify: bool, workers: int) -> dict[str, Any]:
    """curate from another source tree, in a subprocess (two versions cannot share one process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = subprocess.run([sys.executable, "-c", CURATE_BEFORE_SCRIPT, str(src), str(work), "1" if verify else "0",
                          str(workers)], capture_output=True, text=True, env=env, cwd=tree, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["result"] = sorted((work / "coco/annotations").glob("*.json"))
    return res


def run_globox(src: Path, work: Path) -> dict[str, Any]:
    from globox import AnnotationSet

    shutil.rmtree(work, ignore_errors=True)
    (work / "labels").mkdir(parents=True)
    t0 = time.perf_counter()
    for split, _ in SPLITS:
        ann = AnnotationSet.from_coco(src / f"annotations/instances_{split}.json")
        ann.save_yolo_v5(work / "labels" / split, label_to_id={c: i for i, c in enumerate(CATEGORIES)})
    t1 = time.perf_counter()
    for split, _ in SPLITS:
        back = AnnotationSet.from_yolo_v5(work / "labels" / split, image_folder=src / "images" / split)
        back.save_coco(work / f"instances_{split}.json",
                       label_to_id={str(i): i + 1 for i in range(len(CATEGORIES))}, auto_ids=True)
    t2 = time.perf_counter()
    return {"to_yolo": t1 - t0, "to_coco": t2 - t1, "result": sorted(work.glob("instances_*.json"))}


def datumaro_python(path: str | None) -> Path:
    if path:
        return Path(path)
    py = DATUMARO_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {DATUMARO_VENV} (pip install datumaro=={DATUMARO_VERSION}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(DATUMARO_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"datumaro=={DATUMARO_VERSION}"], check=True)
    return py


def run_datumaro(src: Path, work: Path, python: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    out = subprocess.run([str(python), "-c", DATUMARO_SCRIPT, str(src), str(work / "yolo"), str(work / "coco")],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"Datumaro failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["result"] = sorted((work / "coco/annotations").glob("*.json"))
    return res


def coco_counts(paths: list[Path]) -> tuple[int, int, int]:
    """(images, annotations in the files, annotations pycocotools keeps: one per unique id)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    images = listed = kept = 0
    for path in paths:
        with contextlib.redirect_stdout(io.StringIO()):
            c = COCO(str(path))
        images += len(c.imgs)
        listed += len(c.dataset["annotations"])
        kept += len(c.anns)
    return images, listed, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--boxes-per-image", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0, help="curate worker processes (0 = all cores)")
    ap.add_argument("--datumaro-python", default=None, help="python of an environment with datumaro installed")
    ap.add_argument("--skip", action="append", default=[], choices=["curate", "globox", "datumaro"])
    ap.add_argument("--repeat", type=int, default=2, help="rounds; each tool's fastest counts")
    ap.add_argument("--curate-before", type=Path, default=None,
                    help="source tree of an older curate to run next to this one (e.g. from `git archive`)")
    args = ap.parse_args()

    src = make_dataset(OUT / f"coco-{args.images}", args.images, args.boxes_per_image)
    n_img, n_box, _ = coco_counts(sorted((src / "annotations").glob("instances_*.json")))
    print(f"# {n_img} images, {n_box} boxes; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}; load average at start "
          + " ".join(f"{v:.1f}" for v in os.getloadavg()), flush=True)
    runs: dict[str, Any] = {}
    if "curate" not in args.skip:
        runs["curate"] = lambda: run_curate(src, OUT / "work-curate", True, args.workers)
        runs["curate --no-verify"] = lambda: run_curate(src, OUT / "work-curate-nv", False, args.workers)
    if args.curate_before is not None:
        before = args.curate_before.resolve()
        runs["curate before"] = lambda: run_curate_before(before, src, OUT / "work-curate-before", True, args.workers)
        runs["curate before --no-verify"] = lambda: run_curate_before(before, src, OUT / "work-curate-before-nv",
                                                                      False, args.workers)
    if "globox" not in args.skip:
        runs["globox"] = lambda: run_globox(src, OUT / "work-globox")
    if "datumaro" not in args.skip:
        python = datumaro_python(args.datumaro_python)
        runs["datumaro"] = lambda: run_datumaro(src, OUT / "work-datumaro", python)
    # Rounds go through the tools in turn, and each tool's fastest round counts: the
    # first round also pays for cold file caches and imports, whoever goes first.
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for name, run in runs.items():
            res = run()
            label = f"datumaro {res.pop('version')}" if name == "datumaro" else name
            best = results.get(label)
            if best is None or res["to_yolo"] + res["to_coco"] < best["to_yolo"] + best["to_coco"]:
                results[label] = res
    base = results.get("curate")
    print(f"{'tool':26} {'COCO->YOLO s':>12} {'YOLO->COCO s':>12} {'total s':>8} {'vs curate':>9}  "
          "images / boxes in the COCO files / boxes pycocotools loads")
    for name, r in results.items():
        total = r["to_yolo"] + r["to_coco"]
        ratio = total / (base["to_yolo"] + base["to_coco"]) if base else float("nan")
        imgs, listed, kept = coco_counts(r["result"])
        print(f"{name:26} {r['to_yolo']:12.2f} {r['to_coco']:12.2f} {total:8.2f} {ratio:8.2f}x  "
              f"{imgs} / {listed} / {kept}")
    print("# load average at the end " + " ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
