#!/usr/bin/env python3
"""Near-duplicate benchmark: curate dedupe against imagededup and cleanvision.

    python benchmarks/dedupe_bench.py [--out DIR] [--data ../shared/data] [--skip-peers] [--million]

1. Builds a near-duplicate set in ``DIR/set`` from the real photos of the
   shared corpus (never written into the repo): one copy of every distinct
   photo (known near-duplicate families reduced to one member, see
   ``EXCLUDE``) plus one copy per transform of the issue's list: resize (also
   to another aspect ratio), JPEG at quality 15, PNG of a JPEG, 20% crops
   (centred, off-centre, one side), mirror, 90/180/270 and 3-5 degree turns,
   brightness, contrast, blur, grayscale, a logo in a corner, letterbox padding.
   The distinct photos include the hard negatives of the corpus: several
   photos of each of 13 people, a stereo pair, textures, two pages of text.
2. Runs ``curate ingest`` + ``curate dedupe``, imagededup's pHash and dHash at
   their default threshold (10) and cleanvision's exact+near duplicate finder
   on the same folder, each as a subprocess (the peers through
   ../shared/peers/), timing each.
3. Scores every tool's groups against the truth: pair precision and recall
   over all pairs of copies of one photo, recall per transform (photo <-> its
   copy), and the false pairs found.
4. ``--million``: times ``dedupe`` (hash search and grouping, no pixel
   verification) over 1,000,000 synthetic 64-bit hashes with planted
   near copies (bit flips, flips/rotations), in this process, and reports peak memory.

Writes ``DIR/results.json`` and prints the markdown tables for docs/benchmarks.md.
Peers: ``pip install -e '.[bench]'`` (imagededup is installed with --no-deps;
its hashing methods need torchvision only by import, which the peer runner stubs).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"
# Near-duplicate families of the corpus (SOURCES.md) keep one member; files
# that ingest would drop anyway (unreadable, tiny, 11:1 aspect) and the almost
# black frame (no information to match) are left out.
EXCLUDE = (
    "corrupt", "truncated", "tiny", ".heif", "faces.csv", "formats/",
    "ukbench00120_", "alpha_channel_image", "hopper_", "hopper.avif",
    "obama-480p", "obama-720p", "fr_obama-240p", "fr_32bit",
    "ukbench09380.bmp", "ukbench09380.png", "ukbench09380.webp",
    "image_236", "image_408", "image_604", "image_417",
    # issue 15 finds these families too: a collage cut from biden.jpg and obama3.jpg, and crops/resizes of obama.jpg
    "fr_two_people", "fr_obama_partial_face", "fr_obama_small",
)
LOGO = "photos/imagededup_copyleft.tiff"


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _crop(img: Image.Image, keep_w: float, keep_h: float, rng: random.Random, centre: bool = False) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * keep_w)), max(1, round(h * keep_h))
    if centre:
        x, y = (w - cw) // 2, (h - ch) // 2
    else:  # a corner half of the time, anywhere else otherwise
        x = rng.choice([0, w - cw]) if rng.random() < 0.5 else rng.randint(0, w - cw)
        y = rng.choice([0, h - ch]) if rng.random() < 0.5 else rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def _side_crop(img: Image.Image, rng: random.Random) -> Image.Image:
    side = rng.choice(["left", "right", "top", "bottom"])
    w, h = img.size
    box = {"left": (round(w * 0.2), 0, w, h), "right": (0, 0, round(w * 0.8), h),
           "top": (0, round(h * 0.2), w, h), "bottom": (0, 0, w, round(h * 0.8))}[side]
    return img.crop(box)


def _watermark(img: Image.Image, logo: Image.Image) -> Image.Image:
    side = max(8, int(min(img.size) * 0.15))
    mark = logo.resize((side, side))
    out = img.copy()
    out.paste(mark, (img.width - side - int(img.width * 0.03), img.height - side - int(img.height * 0.03)))
    return out


def _letterbox(img: Image.Image) -> Image.Image:
    side = max(img.size)
    out = Image.new("RGB", (side, side), (0, 0, 0))
    out.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return out


def _crop_area(img: Image.Image, area: float, aspect: float, rng: random.Random) -> Image.Image:
    """A crop keeping ``area`` of the picture, ``aspect`` times wider (relative to the image) than tall, anywhere."""
    w, h = img.size
    fw = min(1.0, (area * aspect) ** 0.5)
    fh = min(1.0, area / fw)
    cw, ch = max(1, round(w * fw)), max(1, round(h * fh))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def _screenshot(img: Image.Image, rng: random.Random) -> Image.Image:
    """The photo at 70-100% inside an app window: title bar, side panel of text, grey background."""
    from PIL import ImageDraw

    k = rng.uniform(0.7, 1.0)
    shown = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.LANCZOS)
    bar, side = max(24, shown.height // 14), max(60, shown.width // 3)
    canvas = Image.new("RGB", (shown.width + side + 30, shown.height + bar + 30), (236, 236, 236))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, bar), fill=(48, 52, 64))
    draw.text((10, bar // 3), f"Viewer - IMG_{rng.randint(1000, 9999)}.JPG", fill=(255, 255, 255))
    for i in range(8):
        draw.text((shown.width + 24, bar + 20 + 18 * i), f"item {rng.randint(0, 999)}", fill=(20, 20, 20))
    canvas.paste(shown, (15, bar + 15))
    return canvas


def _caption(img: Image.Image, rng: random.Random) -> Image.Image:
    from PIL import ImageDraw

    band = max(30, img.height // 5)
    out = Image.new("RGB", (img.width, img.height + band), (255, 255, 255))
    out.paste(img, (0, band if rng.random() < 0.5 else 0))
    top = out.getpixel((0, 0)) == (255, 255, 255)
    ImageDraw.Draw(out).text((12, (band // 3) if top else img.height + band // 3), "me, after cleaning the dataset",
                             fill=(0, 0, 0))
    return out


def _collage(img: Image.Image, rng: random.Random) -> Image.Image:
    """The photo as one tile of a 2x2 collage with three flat-coloured tiles."""
    w, h = img.size
    out = Image.new("RGB", (2 * w + 6, 2 * h + 6), (255, 255, 255))
    slot = rng.randrange(4)
    for k in range(4):
        x, y = (k % 2) * (w + 6), (k // 2) * (h + 6)
        tile = img if k == slot else Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        out.paste(tile, (x, y))
    return out


def _turn_crop(img: Image.Image, deg: float) -> Image.Image:
    """Turned by ``deg`` and cropped to the largest upright rectangle with no fill corners."""
    import math

    w, h = img.size
    turned = img.rotate(deg, resample=Image.Resampling.BICUBIC, expand=True)
    a = math.radians(abs(deg))
    # Largest axis-aligned rectangle inside the turned w x h rectangle (keeps the aspect).
    k = min(w, h) / (w * math.sin(a) + h * math.cos(a)) if w >= h else min(w, h) / (h * math.sin(a) + w * math.cos(a))
    cw, ch = int(w * k), int(h * k)
    cx, cy = turned.width // 2, turned.height // 2
    return turned.crop((cx - cw // 2, cy - ch // 2, cx - cw // 2 + cw, cy - ch // 2 + ch))


def transforms(logo: Image.Image) -> dict[str, Callable[[Image.Image, random.Random], Image.Image]]:
    """Name -> f(image, rng): the transforms of issue 8, each applied alone, then issue 15's harder copies."""
    area20 = 0.8 ** 0.5  # keep 89.4% of each side: 20% of the area cut away
    return {
        "resize_half": lambda im, r: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS),
        "resize_aspect": lambda im, r: im.resize((max(1, round(im.width * 0.7)), im.height), Image.Resampling.LANCZOS),
        "jpeg_q15": lambda im, r: _jpeg(im, 15),
        "png": lambda im, r: im,  # saved as PNG (the photo itself is saved as JPEG)
        "crop_centre_20": lambda im, r: _crop(im, area20, area20, r, centre=True),
        "crop_offcentre_20": lambda im, r: _crop(im, area20, area20, r),
        "crop_side_20": _side_crop,
        "mirror": lambda im, r: ImageOps.mirror(im),
        "rot90": lambda im, r: im.transpose(Image.Transpose.ROTATE_90),
        "rot180": lambda im, r: im.transpose(Image.Transpose.ROTATE_180),
        "rot270": lambda im, r: im.transpose(Image.Transpose.ROTATE_270),
        "rot_3to5deg": lambda im, r: im.rotate(r.choice([-1, 1]) * r.uniform(3, 5), resample=Image.Resampling.BICUBIC),
        "brightness": lambda im, r: ImageEnhance.Brightness(im).enhance(1.35),
        "contrast": lambda im, r: ImageEnhance.Contrast(im).enhance(0.6),
        "blur": lambda im, r: im.filter(ImageFilter.GaussianBlur(max(1.0, min(im.size) / 250))),
        "grayscale": lambda im, r: ImageOps.grayscale(im).convert("RGB"),
        "watermark": lambda im, r: _watermark(im, logo),
        "letterbox": lambda im, r: _letterbox(im),
        # issue 15: copies that keep at least half of the picture
        "crop_half_any_aspect": lambda im, r: _crop_area(im, r.uniform(0.5, 0.6), r.choice([0.4, 1.0, 2.5]), r),
        "crop_centre_8pct": lambda im, r: im.crop((round(im.width * .08), round(im.height * .08),
                                                   round(im.width * .92), round(im.height * .92))),
        "crop_corner_80pct": lambda im, r: _crop(im, 0.8, 0.8, r),
        "screenshot": _screenshot,
        "caption": _caption,
        "frame": lambda im, r: ImageOps.expand(im, border=max(6, min(im.size) // 12),
                                               fill=tuple(r.randrange(256) for _ in range(3))),
        "collage_tile": _collage,
        "turn_15_crop": lambda im, r: _turn_crop(im, r.choice([-1, 1]) * 15),
        "turn_30_crop": lambda im, r: _turn_crop(im, r.choice([-1, 1]) * 30),
        "mirror_crop": lambda im, r: ImageOps.mirror(_crop_area(im, 0.6, 1.0, r)),
        "rot90_crop": lambda im, r: _crop_area(im, 0.6, 1.0, r).transpose(Image.Transpose.ROTATE_90),
        "mirror_screenshot": lambda im, r: _screenshot(ImageOps.mirror(im), r),
        "chain_crop_resize_q50": lambda im, r: _jpeg(_crop_area(im, 0.65, 1.0, r).resize(
            (max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS), 50),
        "chain_grey_crop_blur": lambda im, r: ImageOps.grayscale(_crop_area(im, 0.65, 1.0, r)).filter(
            ImageFilter.GaussianBlur(1.2)).convert("RGB"),
        "chain_turn_caption_q60": lambda im, r: _jpeg(_caption(_turn_crop(im, r.uniform(5, 12)), r), 60),
    }


def base_photos(data: Path) -> list[Path]:
    from curate.imageio import load_display

    out = []
    for p in sorted(data.rglob("*")):
        rel = p.relative_to(data).as_posix()
        if not p.is_file() or any(e in rel for e in EXCLUDE) or p.suffix.lower() in (".md", ".csv", ".txt"):
            continue
        try:
            img = load_display(p)
        except Exception:  # unreadable files are ingest's business, not this benchmark's
            continue
        if min(img.size) >= 64:
            out.append(p)
    return out


def build_set(data: Path, out: Path, seed: int = 0, max_photos: int = 0) -> dict[str, dict[str, str]]:
    """Write the photos and their copies; return {file name: {photo, transform}}.

    ``max_photos`` > 0 takes that many photos, evenly spaced in name order (a shorter run).
    """
    from curate.imageio import load_display

    out.mkdir(parents=True, exist_ok=True)
    logo = load_display(data / LOGO)
    tx = transforms(logo)
    truth: dict[str, dict[str, str]] = {}
    photos = base_photos(data)
    if 0 < max_photos < len(photos):
        photos = [photos[round(i * len(photos) / max_photos)] for i in range(max_photos)]
    for n, path in enumerate(photos):
        img = load_display(path)
        img.thumbnail((1024, 1024), Image.Resampling.LANCZOS)  # web-sized, keeps the run short
        photo = f"p{n:03d}"
        img.save(out / f"{photo}_original.jpg", quality=92)
        truth[f"{photo}_original.jpg"] = {"photo": photo, "transform": "original", "source": str(path.relative_to(data))}
        for name, fn in tx.items():
            rng = random.Random(f"{seed}:{photo}:{name}")
            copy = fn(img, rng)
            fname = f"{photo}_{name}.png" if name == "png" else f"{photo}_{name}.jpg"
            if name == "png":
                copy.save(out / fname)
            elif name == "jpeg_q15":
                copy.save(out / fname, quality=15)
            else:
                copy.save(out / fname, quality=90)
            truth[fname] = {"photo": photo, "transform": name, "source": str(path.relative_to(data))}
    return truth


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    # This checkout's curate, not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def run_curate(set_dir: Path, work: Path, workers: int, verify: bool = True) -> tuple[list[list[str]], dict]:
    import pandas as pd

    ws = work / ("ws" if verify else "ws_no_verify")
    if ws.exists():
        import shutil

        shutil.rmtree(ws)
    curate = [sys.executable, "-c", "import sys; from curate.cli import main; sys.argv[0] = 'curate'; main()"]
    t_ingest, _ = _run([*curate, "ingest", str(set_dir), "--into", str(ws), "--layout", "flat", "--min-side", "1",
                        "--max-aspect", "100", "--workers", str(workers), "--json"])
    t_dedupe, out = _run([*curate, "dedupe", str(ws), "--workers", str(workers), "--json",
                          "--report", str(work / f"curate_report{'' if verify else '_no_verify'}.json"),
                          "--verify" if verify else "--no-verify"])
    summary = json.loads(out)["dedupe"]
    m = pd.read_parquet(ws / "manifest.parquet")
    m["name"] = m["rel_path"]
    groups = [g["name"].tolist() for _, g in m[m["dup_group"].notna()].groupby("dup_group")]
    timing = {"ingest_s": round(t_ingest, 2), "dedupe_s": round(t_dedupe, 2), "wall_s": round(t_ingest + t_dedupe, 2),
              "search_s": summary["search_s"], "verify_s": summary["verify_s"],
              "candidate_pairs": summary["candidate_pairs"], "rejected_pairs": summary["rejected_pairs"]}
    return groups, timing


def run_imagededup(set_dir: Path, work: Path, method: str, workers: int) -> tuple[list[list[str]], dict]:
    out = work / f"imagededup_{method}.json"
    wall, stdout = _run([sys.executable, str(PEERS / "run_imagededup.py"), str(set_dir), str(out),
                         "--method", method, "--workers", str(workers)])
    stats = json.loads(stdout.strip().splitlines()[-1])
    return json.loads(out.read_text()), {"wall_s": round(wall, 2), "encode_s": stats["encode_s"]}


def run_cleanvision(set_dir: Path, work: Path, workers: int) -> tuple[list[list[str]], dict]:
    out = work / "cleanvision.json"
    wall, _ = _run([sys.executable, str(PEERS / "run_cleanvision.py"), str(set_dir), str(out),
                    "--issues", "exact_duplicates,near_duplicates", "--workers", str(workers)])
    return json.loads(out.read_text())["groups"], {"wall_s": round(wall, 2)}


def score(groups: list[list[str]], truth: dict[str, dict[str, str]]) -> dict:
    """Pair precision/recall, per-transform recall, and the false pairs."""
    group_of: dict[str, int] = {}
    for i, g in enumerate(groups):
        for name in g:
            group_of[os.path.basename(name)] = i
    predicted: set[tuple[str, str]] = set()
    for g in groups:
        names = sorted({os.path.basename(n) for n in g if os.path.basename(n) in truth})
        predicted.update(itertools.combinations(names, 2))
    by_photo: dict[str, list[str]] = {}
    for name, t in truth.items():
        by_photo.setdefault(t["photo"], []).append(name)
    true_pairs: set[tuple[str, str]] = set()
    for names in by_photo.values():
        true_pairs.update(itertools.combinations(sorted(names), 2))
    hit = predicted & true_pairs
    per: dict[str, list[bool]] = {}
    for name, t in truth.items():
        if t["transform"] == "original":
            continue
        orig = f"{t['photo']}_original.jpg"
        same = name in group_of and orig in group_of and group_of[name] == group_of[orig]
        per.setdefault(t["transform"], []).append(same)
    false_pairs = sorted(predicted - true_pairs)
    return {
        "precision": round(len(hit) / len(predicted), 4) if predicted else 1.0,
        "recall": round(len(hit) / len(true_pairs), 4) if true_pairs else 1.0,
        "predicted_pairs": len(predicted), "true_pairs": len(true_pairs),
        "per_transform": {k: round(float(np.mean(v)), 3) for k, v in per.items()},
        "false_pairs": [(a, b, truth[a]["source"], truth[b]["source"]) for a, b in false_pairs[:50]],
        "n_false_pairs": len(false_pairs),
    }


def million(n: int = 1_000_000, seed: int = 0, crops: bool = False) -> dict:
    """Time dedupe's hash search and grouping over ``n`` synthetic hashes."""
    import pandas as pd

    from curate.hashing import CROP_WINDOWS, d4_variants
    from curate.schema import MANIFEST_COLUMNS, conform
    from curate.stages.dedupe import DedupeOptions, dedupe

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    n_copies = n // 10  # 10% near copies of another row
    src = rng.choice(n - n_copies, size=n_copies, replace=False)
    dst = np.arange(n - n_copies, n)
    turn = np.where(rng.random(n_copies) < 0.3, rng.integers(0, 8, n_copies), 0)
    turned = d4_variants(codes[src])[turn, np.arange(n_copies)]
    flips = np.zeros(n_copies, np.uint64)
    n_bits = rng.integers(0, 7, n_copies)  # 0-6 bits, like resized/re-encoded copies
    for k in range(6):
        bit = np.uint64(1) << rng.integers(0, 64, n_copies).astype(np.uint64)
        flips |= np.where(n_bits > k, bit, np.uint64(0))
    codes[dst] = turned ^ flips
    raw = codes.astype(">u8").tobytes().hex()
    hexes = [raw[i:i + 16] for i in range(0, len(raw), 16)]
    frame = pd.DataFrame({
        "sample_id": [f"{i:08x}" for i in range(n)], "source": "synthetic", "path": [f"/x/{i}.jpg" for i in range(n)],
        "origin_path": [f"/x/{i}.jpg" for i in range(n)], "rel_path": [f"{i}.jpg" for i in range(n)],
        "layout": "flat", "status": "kept", "decided_by": "ingest", "width": 640, "height": 480,
        "sha256": [f"{i:064x}" for i in range(n)], "d4hash": hexes, "hash_contrast": 40.0,
    })
    if crops:
        win = rng.integers(0, 2**64, size=(n, len(CROP_WINDOWS)), dtype=np.uint64)
        frame["crop_hashes"] = ["".join(f"{int(c):016x}" for c in row) for row in win]
    manifest = conform(frame, MANIFEST_COLUMNS)
    del frame
    before_mb = _rss_mb()
    peak = [before_mb]
    stop = threading.Event()

    def sample() -> None:  # RSS while dedupe runs, every 50 ms
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    c = time.process_time()
    res = dedupe(manifest, DedupeOptions(verify=False, crops=crops, workers=1))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    stop.set()
    sampler.join()
    out = res.manifest
    dup_of = out["duplicate_of"].to_numpy()
    group = out["dup_group"].to_numpy()
    found = sum(group[s] is not None and group[s] == group[d] for s, d in zip(src, dst, strict=True))
    return {"rows": n, "crop_windows": crops, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "search_s": res.summary["dedupe"]["search_s"],
            "rss_before_mb": round(before_mb), "peak_rss_during_mb": round(peak[0]),
            "planted_copies": n_copies, "planted_found": round(found / n_copies, 4),
            "groups": res.summary["dedupe"]["groups"], "duplicates": int(pd.notna(dup_of).sum())}


def copies_scale(ws_manifest: Path, sizes: tuple[int, ...], seed: int = 0, peer: bool = True) -> list[dict]:
    """Time the keypoint search (candidates + RANSAC on stored keypoints, no pixels) at ``sizes`` rows.

    Rows are synthetic but made of real ORB descriptors: each takes 128 keypoints drawn from the bench
    set's stored keypoints (positions and descriptors of one real keypoint each, 3% of the bits flipped),
    so bit statistics and stop words are those of real photos. 10% of the rows are planted copies: 70%
    of another row's keypoints, moved by a random similarity transform, 6% of bits flipped. imagededup's
    ``find_duplicates`` on as many random 64-bit hashes runs in the same run for scale.
    """
    import pandas as pd

    from curate.copydetect import Features, candidate_pairs, decode, encode, match_features

    m = pd.read_parquet(ws_manifest, columns=["keypoints"])
    pool = [decode(v) for v in m["keypoints"].dropna()]
    xy = np.concatenate([f.xy / np.array(f.size_wh, np.float32) for f in pool])
    desc = np.concatenate([f.desc for f in pool])
    mdesc = np.concatenate([f.mirror_desc for f in pool])
    out = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        feats: list[Features] = []
        n_copies = n // 10

        def noisy(d: np.ndarray, p: float, rng: np.random.Generator = rng) -> np.ndarray:
            return d ^ np.packbits(rng.random((len(d), 256)) < p, axis=1)

        for _ in range(n - n_copies):
            pick = rng.integers(0, len(desc), 128)
            feats.append(Features((224, 168), xy[pick] * [224, 168], noisy(desc[pick], 0.03), noisy(mdesc[pick], 0.03)))
        src = rng.integers(0, n - n_copies, n_copies)
        for s_ in src:
            f = feats[s_]
            keep = rng.random(len(f.xy)) < 0.7
            ang, k = rng.uniform(-0.5, 0.5), rng.uniform(0.7, 1.4)
            rot = k * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            pts = (f.xy[keep] - 112) @ rot.T + 112
            feats.append(Features((224, 168), np.clip(pts, 0, 1000).astype(np.float32),
                                  noisy(f.desc[keep], 0.06), noisy(f.mirror_desc[keep], 0.06)))
        feats = [decode(encode(f)) for f in feats]  # as stored
        t = time.perf_counter()
        a, b, _ = candidate_pairs(feats)
        t_cand = time.perf_counter() - t
        t = time.perf_counter()
        inl = np.array([match_features(feats[i], feats[j]).inliers for i, j in zip(a, b, strict=True)])
        t_geo = time.perf_counter() - t
        found = set(zip(a[inl >= 8].tolist(), b[inl >= 8].tolist(), strict=True))
        planted = sum((min(s_, n - n_copies + k), max(s_, n - n_copies + k)) in found for k, s_ in enumerate(src))
        row = {"rows": n, "keypoints": int(sum(len(f.xy) for f in feats)), "candidate_s": round(t_cand, 1),
               "candidates": int(len(a)), "geometry_s": round(t_geo, 1), "copy_pairs": int((inl >= 8).sum()),
               "planted_found": round(planted / max(n_copies, 1), 4), "peak_rss_mb": round(_peak_mb())}
        if peer:
            row["imagededup_find_duplicates_s"] = _imagededup_find(n, seed)
        print(json.dumps(row), file=sys.stderr)
        out.append(row)
    return out


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _imagededup_find(n: int, seed: int) -> float:
    """Seconds imagededup's PHash.find_duplicates takes on ``n`` random hashes (threshold 10), in a subprocess."""
    code = f"""
import sys, time, logging, numpy as np
sys.path.insert(0, {str(PEERS)!r})
import stub_torchvision
logging.disable(logging.WARNING)
from imagededup.methods import PHash
rng = np.random.default_rng({seed})
codes = rng.integers(0, 2**63, size={n}, dtype=np.uint64)
enc = {{f"{{i}}.jpg": f"{{int(c):016x}}" for i, c in enumerate(codes)}}
t = time.perf_counter()
PHash(verbose=False).find_duplicates(encoding_map=enc, max_distance_threshold=10)
print(time.perf_counter() - t)
"""
    wall, out = _run([sys.executable, "-c", code])
    return round(float(out.strip().splitlines()[-1]), 1)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def markdown(results: dict) -> str:
    tools = [k for k in ("curate", "curate_no_verify", "imagededup_phash", "imagededup_dhash", "cleanvision")
             if k in results["scores"]]
    head = "| | " + " | ".join(tools) + " |\n|---|" + "---|" * len(tools) + "\n"
    rows = ["pair precision", "pair recall"]
    text = head
    for r in rows:
        key = r.split()[1]
        text += f"| {r} | " + " | ".join(f"{results['scores'][t][key]:.3f}" for t in tools) + " |\n"
    text += "| false pairs | " + " | ".join(str(results["scores"][t]["n_false_pairs"]) for t in tools) + " |\n"
    text += "| wall time (s) | " + " | ".join(str(results["timing"][t]["wall_s"]) for t in tools) + " |\n"
    for tname in results["scores"]["curate"]["per_transform"]:
        text += f"| recall: {tname} | " + " | ".join(
            f"{results['scores'][t]['per_transform'][tname]:.2f}" for t in tools) + " |\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/curate-dedupe-bench"))
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--max-photos", type=int, default=0, help="use this many of the corpus photos (0: all)")
    ap.add_argument("--million", action="store_true", help="also time 1,000,000 synthetic hashes")
    ap.add_argument("--million-only", action="store_true")
    ap.add_argument("--copies-scale", default="", help="comma-separated row counts: time the keypoint search only")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"scores": {}, "timing": {}}
    if a.copies_scale:
        sizes = tuple(int(x) for x in a.copies_scale.split(","))
        results["copies_scale"] = copies_scale(a.out / "ws" / "manifest.parquet", sizes, peer=not a.skip_peers)
        (a.out / "copies_scale.json").write_text(json.dumps(results["copies_scale"], indent=2))
        return
    if not a.million_only:
        set_dir = a.out / "set"
        truth_file = a.out / "truth.json"
        if not truth_file.exists():
            truth = build_set(a.data, set_dir, max_photos=a.max_photos)
            truth_file.write_text(json.dumps(truth, indent=1))
        truth = json.loads(truth_file.read_text())
        photos = len({t["photo"] for t in truth.values()})
        print(f"set: {len(truth)} images, {photos} photos", file=sys.stderr)
        results["set"] = {"images": len(truth), "photos": photos}
        runners: dict[str, Callable[[], tuple[list[list[str]], dict]]] = {
            "curate": lambda: run_curate(set_dir, a.out, a.workers),
            # The hash search alone: what the pixel verification adds.
            "curate_no_verify": lambda: run_curate(set_dir, a.out, a.workers, verify=False)}
        if not a.skip_peers:
            runners["imagededup_phash"] = lambda: run_imagededup(set_dir, a.out, "phash", a.workers)
            runners["imagededup_dhash"] = lambda: run_imagededup(set_dir, a.out, "dhash", a.workers)
            runners["cleanvision"] = lambda: run_cleanvision(set_dir, a.out, a.workers)
        for name, fn in runners.items():
            print(f"running {name} ...", file=sys.stderr)
            groups, timing = fn()
            results["timing"][name] = timing
            results["scores"][name] = score(groups, truth)
            s = results["scores"][name]
            print(f"  {name}: precision {s['precision']} recall {s['recall']} {timing}", file=sys.stderr)
        print(markdown(results))
    if a.million or a.million_only:
        for crops in (False, True):
            print(f"1,000,000 synthetic hashes, crop windows {crops} ...", file=sys.stderr)
            results.setdefault("million", []).append(million(crops=crops))
            print(json.dumps(results["million"][-1]), file=sys.stderr)
    (a.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k != "scores"}, indent=2, default=str))


if __name__ == "__main__":
    main()
