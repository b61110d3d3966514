"""`curate crop` on 5,000 boxes next to the hand-written cv2 loop it replaces, in the same run.

    python benchmarks/crop_bench.py                  # 1,000 images x 5 boxes, 2 rounds
    python benchmarks/crop_bench.py --images 200     # a quick look

The source is made once in ``benchmarks/out/crop/src`` from the corpus photos
(``../shared/data``; scikit-image's bundled photos where it is absent): real
photos, upright, with 0-3 px cut off each side and saved as JPEG q92 (so no two
are exact duplicates) until there are ``--images`` of them, each with
a metal-surface JSON of ``--boxes`` random boxes (10-40 % of each side, three
classes, coordinates as ``bbox: [x1, y1, x2, y2]``).

Timed, in turns for ``--repeat`` rounds (the fastest round of each is reported):

- the hand loop (one process, as such scripts are written): ``json.load``,
  ``cv2.imread``, for each box ``image[y1:y2, x1:x2]`` with a 10 % margin
  clamped to the image, ``cv2.imwrite`` of a JPEG (OpenCV's default quality
  95); and the same loop padding each patch with black to a square and
  resizing it to 224 px before writing (the whole metal-surface recipe);
- ``curate crop --margin 0.1`` (the stage as a library call on an ingested
  workspace: plan from the annotations table, one decode per image, patches
  stored content-addressed with their perceptual hashes, lineage rows, boxes
  carried, manifest written), with 1 and 2 workers; and ``curate crop`` then
  ``curate square --size 224 --fill black``.

What each side does differs and the table says so: curate also reads EXIF
orientation, hashes every patch (for dedupe and the split's near-copy check),
and writes the manifest; the loop writes files only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "crop"
CORPUS = Path(os.environ.get("CURATE_TEST_DATA", HERE.parent.parent / "shared" / "data"))
CLASSES = ("scratch", "dent", "rust")
MAPPING = {"image": "image", "boxes": "annotations", "box": {"label": "label", "xyxy": "bbox"}}


def photos() -> list[Path]:
    """Readable photos to copy from: the corpus when present, else scikit-image's."""
    from PIL import Image

    if (CORPUS / "SOURCES.md").exists():
        found = sorted(CORPUS.glob("photos/*")) + sorted(CORPUS.glob("faces_by_person/*/*"))
    else:
        from curate.demo import bundled_photos_dir

        found = sorted(bundled_photos_dir().glob("*.*"))
    out = []
    for p in found:
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        try:
            with Image.open(p) as im:
                im.load()
                if min(im.size) >= 128:
                    out.append(p)
        except Exception:  # the corpus keeps broken files on purpose
            continue
    return out


def make_source(n_images: int, n_boxes: int, seed: int = 0) -> Path:
    from PIL import Image, ImageOps

    src = OUT / f"src-v2-{n_images}x{n_boxes}"
    if (src / ".done").exists():
        return src
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    pool = photos()
    for k in range(n_images):
        photo = pool[k % len(pool)]
        name = f"{k:05d}_{photo.stem}.jpg"
        with Image.open(photo) as im:  # a few pixels cut off: no two files are exact duplicates
            shown = ImageOps.exif_transpose(im).convert("RGB")
            cut = rng.integers(0, 4, size=4)
            shown = shown.crop((int(cut[0]), int(cut[1]), shown.width - int(cut[2]), shown.height - int(cut[3])))
            shown.save(src / name, quality=92)
            w, h = shown.size
        boxes = []
        for b in range(n_boxes):
            bw, bh = rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * h
            x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes.append({"label": CLASSES[b % 3], "bbox": [round(x1, 1), round(y1, 1), round(x1 + bw, 1),
                                                            round(y1 + bh, 1)]})
        (src / f"{Path(name).stem}.json").write_text(json.dumps({"image": name, "annotations": boxes}))
    (src / ".done").write_text("")
    return src


def hand_loop(src: Path, dst: Path, margin: float, pad_to: int | None) -> int:
    """The loop people write: read the JSON, imread, slice, (pad, resize), imwrite."""
    import cv2

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    n = 0
    for jf in sorted(src.glob("*.json")):
        doc = json.loads(jf.read_text())
        img = cv2.imread(str(src / doc["image"]))
        if img is None:
            continue
        h, w = img.shape[:2]
        for k, a in enumerate(doc["annotations"]):
            x1, y1, x2, y2 = a["bbox"]
            dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
            x1, y1 = max(0, int(x1 - dx)), max(0, int(y1 - dy))
            x2, y2 = min(w, int(np.ceil(x2 + dx))), min(h, int(np.ceil(y2 + dy)))
            patch = img[y1:y2, x1:x2]
            if pad_to:
                ph, pw = patch.shape[:2]
                side = max(ph, pw)
                top, left = (side - ph) // 2, (side - pw) // 2
                patch = cv2.copyMakeBorder(patch, top, side - ph - top, left, side - pw - left,
                                           cv2.BORDER_CONSTANT, value=(0, 0, 0))
                patch = cv2.resize(patch, (pad_to, pad_to), interpolation=cv2.INTER_AREA)
            (dst / a["label"]).mkdir(exist_ok=True)
            cv2.imwrite(str(dst / a["label"] / f"{jf.stem}_{k}.jpg"), patch)
            n += 1
    return n


def curate_ws(src: Path, root: Path) -> Path:
    """An ingested workspace, kept as a template (ingest is not what is timed here)."""
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    if (root / ".done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    mapping = OUT / "metal.mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    ws = Workspace.create(root)
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="metal", layout="json")], workers=2,
                                                 read_extra={"json_mapping": str(mapping)}))
    (root / ".done").write_text("")
    return root


def curate_run(template: Path, workers: int, square_too: bool) -> tuple[float, float, int]:
    """(wall s, CPU s of this process and its children, patches) for crop (+ square) on a fresh copy."""
    from curate.stages.crop import CropOptions, crop
    from curate.stages.square import SquareOptions, square
    from curate.workspace import Workspace

    root = OUT / "ws-run"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    ws = Workspace.open(root)
    c0, t0 = cpu_s(), time.perf_counter()
    res = ws.run_stage("crop", crop, CropOptions(margin_frac=0.1, supersede=square_too, workers=workers))
    if square_too:
        ws.run_stage("square", square, SquareOptions(size_px=224, fill="black", workers=workers))
    return time.perf_counter() - t0, cpu_s() - c0, res.summary["crop"]["patches"]


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--boxes", type=int, default=5, help="boxes per image")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    src = make_source(args.images, args.boxes)
    template = curate_ws(src, OUT / f"ws-v2-{args.images}x{args.boxes}")
    runs: dict[str, list[tuple[float, float, int]]] = {}

    def timed(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        c0, t0 = cpu_s(), time.perf_counter()
        n = fn()
        runs.setdefault(name, []).append((time.perf_counter() - t0, cpu_s() - c0, n))

    for _ in range(args.repeat):
        timed("hand loop: crop + imwrite (1 process)", lambda: hand_loop(src, OUT / "hand", 0.1, None))
        timed("hand loop: crop + pad + resize 224 + imwrite (1 process)",
              lambda: hand_loop(src, OUT / "hand", 0.1, 224))
        for workers in (1, 2):
            runs.setdefault(f"curate crop ({workers} worker{'s' if workers > 1 else ''})", []).append(
                curate_run(template, workers, False))
        runs.setdefault("curate crop + square 224 (2 workers)", []).append(curate_run(template, 2, True))
    base = min(r[0] for r in runs["hand loop: crop + imwrite (1 process)"])
    print(f"\n{args.images} images, {args.images * args.boxes} boxes, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; fastest of {args.repeat} rounds")
    print(f"{'':60s} {'wall s':>8s} {'CPU s':>8s} {'patches':>8s} {'boxes/s':>8s} {'vs loop':>8s}")
    for name, rs in runs.items():
        wall, cpu, n = min(rs)
        print(f"{name:60s} {wall:8.2f} {cpu:8.2f} {n:8d} {n / wall:8.0f} {wall / base:7.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
