#!/usr/bin/env python3
"""Ingest throughput: curate vs imagededup's PHash.encode_images, in one run.

    python benchmarks/ingest_bench.py [--n 5000] [--workers 2] [--corpus ../shared/data]

Builds N distinct JPEGs (random crops, scales and re-encodes of the real photos
in the corpus, typical crawl sizes 480-1600 px) once into benchmarks/out/, then
times, on the same files and the same number of workers:

- curate's full ingest (read once, sha256, full decode at reduced JPEG scale,
  EXIF size, perceptual hashes, manifest write), and
- imagededup PHash.encode_images (decode + pHash only), via the peer runner in
  ../shared/peers/run_imagededup.py (imagededup: pip install --no-deps imagededup;
  pip install PyWavelets scikit-learn).

Peak memory (max RSS of the process tree) is measured for curate at N and 10xN
(`--scale 10`, hard links of the same files under new names) to show it stays flat.
Prints one JSON line per measurement and a Markdown table for docs/benchmarks.md.
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
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def build_set(corpus: Path, out: Path, n: int, seed: int = 0) -> Path:
    """N distinct JPEGs derived from the corpus photos (idempotent)."""
    done = out / f".done-{n}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = []
    for sub in ("photos", "faces_by_person", "faces_misc"):
        for p in sorted((corpus / sub).rglob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
                try:
                    with Image.open(p) as im:
                        im.load()
                        if min(im.size) >= 200 and max(im.size) / min(im.size) < 3:
                            sources.append(im.convert("RGB"))
                except Exception:
                    continue
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x, y, x + cw, y + ch))
        side = int(rng.integers(480, 1600))
        scale = side / max(crop.size)
        crop = crop.resize((max(1, int(crop.width * scale)), max(1, int(crop.height * scale))), Image.Resampling.BILINEAR)
        crop.save(out / f"img_{i:06d}.jpg", quality=int(rng.integers(70, 95)))
    done.touch()
    return out


def link_scaled(src: Path, dst: Path, factor: int) -> Path:
    """factor x the files of src, as hard links with new names (same pixels, more rows)."""
    done = dst / f".done-{factor}"
    if done.exists():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.jpg"))
    for k in range(factor):
        for f in files:
            target = dst / f"{k:02d}_{f.name}"
            if not target.exists():
                os.link(f, target)
    done.touch()
    return dst


def run(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, out.stdout


def curate_ingest(src: Path, ws: Path, workers: int) -> tuple[float, float, int]:
    import shutil

    shutil.rmtree(ws, ignore_errors=True)
    # This checkout's curate (on PYTHONPATH, set in main), not whichever one is installed.
    curate = [sys.executable, "-c", "import sys; from curate.cli import main; sys.argv[0] = 'curate'; main()"]
    wall, _, out = run([*curate, "ingest", str(src), "--into", str(ws), "--layout", "flat",
                        "--workers", str(workers), "--json"])
    rows = json.loads(out)["rows"]
    peak = peak_rss_of([*curate, "ingest", str(src), "--into", str(ws) + "-mem", "--layout", "flat",
                        "--workers", str(workers), "--json"])
    shutil.rmtree(str(ws) + "-mem", ignore_errors=True)
    return wall, peak, rows


def peak_rss_of(cmd: list[str]) -> float:
    """Peak of (parent + workers) RSS in MiB, sampled every 50 ms from /proc."""
    import psutil

    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        try:
            procs = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)
    return peak


def imagededup_encode(src: Path, workers: int) -> tuple[float, int]:
    runner = REPO.parent / "shared" / "peers" / "run_imagededup.py"
    out_json = HERE / "out" / "imagededup_groups.json"
    _, _, out = run([sys.executable, str(runner), str(src), str(out_json), "--method", "phash",
                     "--workers", str(workers)])
    rec = json.loads(out.strip().splitlines()[-1])
    return rec["encode_s"], rec["images"]


def main() -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--scale", type=int, default=10, help="memory check at n x scale files (0 to skip)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the two tools this many times and keep each one's fastest run, so a "
                         "change in machine load hits both alike")
    a = ap.parse_args()
    src = build_set(a.corpus, HERE / "out" / f"jpegs_{a.n}", a.n)
    # Warm the page cache for both tools alike.
    for f in src.glob("*.jpg"):
        f.read_bytes()
    t_cur = t_idd = float("inf")
    for _ in range(a.rounds):
        t, mem_cur, rows = curate_ingest(src, HERE / "out" / "ws", a.workers)
        t_cur = min(t_cur, t)
        t, n_idd = imagededup_encode(src, a.workers)
        t_idd = min(t_idd, t)
    res = {"images": a.n, "workers": a.workers,
           "curate_s": round(t_cur, 2), "curate_img_per_s": round(rows / t_cur, 1),
           "imagededup_encode_s": round(t_idd, 2), "imagededup_img_per_s": round(n_idd / t_idd, 1),
           "ratio": round((rows / t_cur) / (n_idd / t_idd), 2), "curate_peak_rss_mib": round(mem_cur)}
    print(json.dumps(res))
    if a.scale:
        big = link_scaled(src, HERE / "out" / f"jpegs_{a.n}x{a.scale}", a.scale)
        t_big, mem_big, rows_big = curate_ingest(big, HERE / "out" / "ws_big", a.workers)
        res_big = {"images": rows_big, "curate_s": round(t_big, 2), "curate_img_per_s": round(rows_big / t_big, 1),
                   "curate_peak_rss_mib": round(mem_big)}
        print(json.dumps(res_big))
    print()
    print("| images | curate img/s | imagededup encode img/s | ratio | curate peak RSS |")
    print("|---|---|---|---|---|")
    print(f"| {a.n} | {res['curate_img_per_s']} | {res['imagededup_img_per_s']} | {res['ratio']}x | "
          f"{res['curate_peak_rss_mib']} MiB |")
    if a.scale:
        print(f"| {res_big['images']} | {res_big['curate_img_per_s']} | - | - | {res_big['curate_peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
