#!/usr/bin/env python3
"""Face-crop throughput: `curate faces` against the bare MediaPipe detector, same images, same cores.

    python benchmarks/faces_bench.py [--n 300] [--workers 2] [--repeats 3] [--corpus ../shared/data]

The images: N distinct JPEGs made once into benchmarks/out/faces_<N>/ from the
corpus face photos (faces_by_person/ and faces_misc/): each a random 85-100 %
crop around the centre, scaled to a long side of 480-1600 px (typical crawl
sizes), JPEG quality 80-95. They are ingested once into a template workspace,
outside the timing. Each measurement runs in a fresh interpreter, in turns, so
machine load hits every kind alike:

- ``bare``: what a hand-written script does: a process pool of ``--workers``,
  one MediaPipe Tasks FaceDetector (BlazeFace short range, confidence 0.5) per
  worker, and per image ``load_display`` (decode + EXIF) -> numpy -> ``detect``.
  No crops, nothing written.
- ``curate``: ``curate faces`` on a fresh copy of the workspace, default options
  (ensemble detector, largest face), ``--workers``: decode, detect, select,
  crop, encode, hash, store in objects/, manifest rows, atomic write, run record.
- ``curate-short``: the same with ``--detector short-range`` (one model, no
  tiles), to separate the pipeline's own cost from the ensemble's extra passes.

Wall time includes starting the pool (importing mediapipe in each worker) for
all kinds. CPU seconds are user+sys of the whole process tree; each kind also
runs on the first quarter of the images, so the per-image (steady-state) CPU
cost and the fixed start-up cost can be told apart.

On a loaded machine that steady-state figure (a difference of two runs) is
noisy, so ``--interleaved`` adds a second measure of the per-image cost: one
process, warmed up, takes the images one by one and times (process CPU, which
includes MediaPipe's threads) the bare work, then curate's per-image function
(``process_image``: decode, detect, select, crop, encode, hash, store) with
each detector, on the same image before going on to the next, so that load
changes hit every kind alike. Prints JSON lines and Markdown tables for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_DET: dict[str, Any] = {}


def _bare_init(model_path: str) -> None:
    from mediapipe.tasks.python import BaseOptions, vision

    from curate.faces.detect import quiet_native_stderr

    with quiet_native_stderr():
        _DET["det"] = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=model_path), min_detection_confidence=0.5))


def _bare_one(path: str) -> int:
    import mediapipe as mp
    import numpy as np

    from curate.faces.detect import quiet_native_stderr
    from curate.imageio import load_display

    img = np.asarray(load_display(path))
    with quiet_native_stderr():
        return len(_DET["det"].detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=img)).detections)


def build_set(corpus: Path, out: Path, n: int, seed: int = 0) -> Path:
    """N distinct JPEGs derived from the corpus face photos (idempotent)."""
    import numpy as np
    from PIL import Image

    from curate.imageio import load_display

    done = out / f".done-{n}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = []
    for sub in ("faces_by_person", "faces_misc"):
        for p in sorted((corpus / sub).rglob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
                try:
                    img = load_display(p)
                except Exception:
                    continue
                if min(img.size) >= 200:
                    sources.append(img)
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        f = rng.uniform(0.85, 1.0)
        cw, ch = int(w * f), int(h * f)
        x, y = (w - cw) // 2 + int(rng.integers(-(w - cw) // 2, (w - cw) // 2 + 1)), (h - ch) // 2
        crop = im.crop((x, y, x + cw, y + ch))
        scale = int(rng.integers(480, 1600)) / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                           Image.Resampling.BILINEAR)
        crop.save(out / f"face_{i:05d}.jpg", quality=int(rng.integers(80, 96)))
    done.touch()
    return out


def run_bare(paths: list[str], workers: int) -> dict[str, Any]:
    import multiprocessing as mp

    from curate.models import resolve

    model = str(resolve(["short_range"])["short_range"].path)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_bare_init, initargs=(model,)) as pool:
        counts = list(pool.imap_unordered(_bare_one, paths, chunksize=1))
    return {"images": len(paths), "faces": sum(counts), "with_face": sum(c > 0 for c in counts)}


def run_curate(ws_dir: str, workers: int, detector: str) -> dict[str, Any]:
    from curate.stages.faces import FacesOptions, faces
    from curate.workspace import Workspace

    res = Workspace.open(ws_dir).run_stage("faces", faces, FacesOptions(workers=workers, detector=detector))
    f = res.summary["faces"]
    return {"images": f["images"], "faces": f["faces_found"], "crops": f["crops"], "no_face": f["no_face"]}


def run_interleaved(ws_dir: str) -> dict[str, Any]:
    """Per-image CPU ms of bare and ``process_image`` (ensemble, short-range), image by image in one process."""
    import mediapipe as mp
    import numpy as np

    from curate.derive import parent_dicts
    from curate.faces.detect import DetectorConfig, FaceDetector, quiet_native_stderr
    from curate.imageio import load_display
    from curate.models import resolve
    from curate.stages import faces as F
    from curate.workspace import Workspace

    m = Workspace.open(ws_dir).read_manifest()
    parents = parent_dicts(m[m["status"] == "kept"])
    models = {k: str(r.path) for k, r in resolve().items()}
    _bare_init(models["short_range"])
    runs = {}
    for name, detector in (("curate", "ensemble"), ("curate-short", "short-range")):
        cfg = DetectorConfig(detector=detector)
        # each its own objects/ folder, so no run finds another's crop already stored
        settings = F._WorkSettings(str(Path(ws_dir) / name), models, cfg, "largest", 0, 0.25, False, 95)
        runs[name] = (settings, FaceDetector(models, cfg))

    def bare(parent: dict[str, Any]) -> None:
        img = np.asarray(load_display(parent["path"]))
        with quiet_native_stderr():
            _DET["det"].detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=img))

    for p in parents[:5]:  # warm-up: first calls of each model are slower
        bare(p)
        for settings, det in runs.values():
            F.process_image(F._Task(p), settings, det)
    cpu = dict.fromkeys(["bare", *runs], 0.0)
    for p in parents:
        t = time.process_time()
        bare(p)
        cpu["bare"] += time.process_time() - t
        for name, (settings, det) in runs.items():
            t = time.process_time()
            F.process_image(F._Task(p), settings, det)
            cpu[name] += time.process_time() - t
    return {"images": len(parents), **{f"{k}_ms": round(1000 * v / len(parents), 2) for k, v in cpu.items()}}


def child(kind: str, arg: str, workers: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; wall and CPU seconds of its whole process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", kind, arg, "--workers", str(workers)],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr}")
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec.update(kind=kind, wall_s=round(wall, 3),
               cpu_s=round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=300, help="number of images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interleaved", action="store_true", help="also measure per-image CPU image by image, in turns")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, arg = args.child
        if kind == "bare":
            rec = run_bare(json.loads(Path(arg).read_text()), args.workers)
        elif kind == "interleaved":
            rec = run_interleaved(arg)
        else:
            rec = run_curate(arg, args.workers, "short-range" if kind == "curate-short" else "ensemble")
        print(json.dumps(rec))
        return

    from curate.models import resolve
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    resolve()  # models in the cache before any timing
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="faces-bench-"))
    try:
        images = build_set(args.corpus, HERE / "out" / f"faces_{args.n}", args.n)
        small = tmp / "small"  # the first quarter, to tell fixed costs (start-up) from per-image costs
        small.mkdir()
        for p in sorted(images.glob("*.jpg"))[: args.n // 4]:
            os.link(p, small / p.name)
        sizes: dict[str, tuple[Path, list[str]]] = {}
        for label, folder in (("small", small), ("full", images)):
            template = Workspace.create(tmp / f"template-{label}")
            template.run_stage("ingest", ingest, IngestOptions([SourceSpec(folder, name="faces", layout="flat")],
                                                               workers=args.workers))
            m = template.read_manifest()
            paths = m.loc[m["status"] == "kept", "path"].tolist()
            (tmp / f"paths-{label}.json").write_text(json.dumps(paths))
            sizes[label] = (template.root, paths)
        kinds = ("bare", "curate", "curate-short")
        results: dict[tuple[str, str], list[dict[str, Any]]] = {(k, s): [] for k in kinds for s in sizes}
        for r in range(args.repeats):
            for label in sizes:
                for kind in kinds:  # in turns, so load changes hit every kind alike
                    if kind == "bare":
                        rec = child(kind, str(tmp / f"paths-{label}.json"), args.workers)
                    else:
                        ws = tmp / f"ws-{kind}-{label}-{r}"
                        shutil.copytree(sizes[label][0], ws)
                        rec = child(kind, str(ws), args.workers)
                    rec.update(repeat=r, size=label)
                    results[(kind, label)].append(rec)
                    print(json.dumps(rec), flush=True)
        med = {key: {"wall_s": statistics.median(x["wall_s"] for x in v),
                     "cpu_s": statistics.median(x["cpu_s"] for x in v), "faces": v[0]["faces"]}
               for key, v in results.items()}
        n, ns = len(sizes["full"][1]), len(sizes["small"][1])
        load = os.getloadavg()[0]
        print(f"\n{n} images ({ns} for the fixed-cost run), {args.workers} workers, median of {args.repeats}; "
              f"load average (1 min) {load_start:.1f} at the start, {load:.1f} at the end\n")
        print("| run | what it does | images/s, whole run (wall) | CPU ms / image, whole run | CPU ms / image, "
              "steady state | fixed CPU s (start-up) | vs bare, whole run (CPU) | vs bare, steady state (CPU) | faces |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        what = {"bare": "decode + short-range detect", "curate": "`curate faces` (ensemble): decode, detect, crop, "
                "encode, hash, store, manifest", "curate-short": "`curate faces --detector short-range`"}
        per = {k: (med[(k, "full")]["cpu_s"] - med[(k, "small")]["cpu_s"]) / (n - ns) for k in kinds}
        for k in kinds:
            full = med[(k, "full")]
            fixed = full["cpu_s"] - per[k] * n
            print(f"| {k} | {what[k]} | {n / full['wall_s']:.1f} | {1000 * full['cpu_s'] / n:.0f} | "
                  f"{1000 * per[k]:.1f} | {fixed:.1f} | {med[('bare', 'full')]['cpu_s'] / full['cpu_s']:.0%} | "
                  f"{per['bare'] / per[k]:.0%} | {full['faces']} |")
        if args.interleaved:
            inter = []
            for r in range(args.repeats):
                ws = tmp / f"ws-interleaved-{r}"
                shutil.copytree(sizes["full"][0], ws)
                rec = child("interleaved", str(ws), 1)
                rec.update(repeat=r)
                inter.append(rec)
                print(json.dumps(rec), flush=True)
            print(f"\nInterleaved, one process, per image in turns; median of {args.repeats}; load average (1 min) "
                  f"{os.getloadavg()[0]:.1f} at the end\n")
            print("| run | CPU ms / image | vs bare |")
            print("|---|---:|---:|")
            ms = {k: statistics.median(x[f"{k}_ms"] for x in inter) for k in kinds}
            for k in kinds:
                print(f"| {k} | {ms[k]:.1f} | {ms['bare'] / ms[k]:.0%} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
