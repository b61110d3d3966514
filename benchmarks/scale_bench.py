"""The manifest in parts at 20k, 200k and 1M rows: parent peak RSS and wall time of curate's commands.

A workspace of N rows is made from real rows replicated: skimage's photos are
ingested once, then their kept rows are repeated N times with their own
``sample_id``, ``rel_path``, ``sha256`` and a random 64-bit ``d4hash`` (so that
replicas are not near copies of each other), ten labels, and committed in
parts. Then each command runs as ``curate`` in its own process, and that
process's own peak RSS (``VmHWM`` at exit: the parent, not its workers)
and wall time are recorded:

- ``ingest`` of 20 new small files into the N-row workspace (the parent's
  table work: reading, merging and committing N rows; the parts it rewrote);
- ``status``, ``split``, ``export --dry-run`` (export planning, nothing written).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scale_bench.py --rows 20000 200000 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/curate-scale-bench")

# The command's own peak: VmHWM of its own memory map. Not ru_maxrss, which Linux carries over from the parent
# across fork and exec (a child of this benchmark, which holds the N-row table, would report the parent's peak).
_PEAK = ("import atexit, re, sys, time; t0 = time.perf_counter(); "
         "hwm = lambda: re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
         "atexit.register(lambda: print('BENCH', hwm(), time.perf_counter() - t0, file=sys.stderr)); "
         "sys.argv = ['curate', *sys.argv[1:]]; from curate.cli import main; main()")


def base_rows(skimage: Path) -> object:
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    ws = Workspace.create(WORK / "base")
    if not len(ws.read_manifest()):
        ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage, name="sk", layout="flat")], workers=1))
    m = ws.read_manifest()
    return m[m["status"] == "kept"].reset_index(drop=True)


def build(n: int, base, root: Path) -> dict:
    """A workspace of ``n`` replicated rows, committed in parts."""
    import pandas as pd

    from curate.workspace import Workspace

    t0 = time.perf_counter()
    idx = np.arange(n) % len(base)
    m = base.iloc[idx].reset_index(drop=True)
    rng = np.random.default_rng(n)
    ids = [hashlib.sha1(f"rep{i}".encode()).hexdigest()[:16] for i in range(n)]
    m["sample_id"] = ids
    m["rel_path"] = [f"r{i:07d}/{r}" for i, r in zip(range(n), m["rel_path"], strict=True)]
    m["sha256"] = [hashlib.sha256(s.encode()).hexdigest() for s in ids]
    m["d4hash"] = [f"{v:016x}" for v in rng.integers(0, 2**63, n, dtype=np.int64).tolist()]
    m["label"] = [f"class{i % 10}" for i in range(n)]
    m["split"] = None
    m["status"], m["reason"], m["duplicate_of"] = "kept", None, None
    shutil.rmtree(root, ignore_errors=True)
    ws = Workspace.create(root)
    (root / "sources.json").unlink(missing_ok=True)
    with ws.lock():
        ws.commit(m, pd.DataFrame(columns=["sample_id", "label", "x1", "y1", "x2", "y2"]),
                  files={"sources.json": ws.root.joinpath("..", "base", "sources.json").resolve().read_bytes()})
    return {"rows": n, "build_s": round(time.perf_counter() - t0, 1),
            "parquet_mb": round(sum(p.stat().st_size for p in ws.manifest_files()) / 2**20, 1)}


def run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("BENCH ")]
    if not line:
        return {"error": out.stderr[-1500:] + out.stdout[-500:]}
    kb, inner = line[-1].split()[1:]
    return {"peak_rss_mb": round(int(kb) / 1024), "wall_s": round(wall, 1), "rc": out.returncode,
            **({"output_tail": out.stdout[-300:]} if out.returncode else {})}


def parts_written(root: Path) -> tuple[int, int]:
    meta = json.loads((root / "curate.json").read_text())
    index = json.loads((root / meta["tables"] / "parts.json").read_text())["manifest"]
    return sum(e["written"] for e in index.values()), len(index)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--skimage", type=Path, default=None)
    ap.add_argument("--commands", nargs="+", default=["ingest", "status", "split", "export"])
    args = ap.parse_args()
    import skimage

    skimage_dir = args.skimage or Path(skimage.__file__).parent / "data"
    WORK.mkdir(exist_ok=True)
    base = base_rows(skimage_dir)
    small = WORK / "small"
    if not small.exists():  # 20 new small files for the ingest run
        from PIL import Image

        small.mkdir()
        for i in range(20):
            Image.new("RGB", (48, 40), (i * 12, 100, 200 - i * 9)).save(small / f"new{i:02d}.png")
    for n in args.rows:
        root = WORK / f"ws-{n}"
        out = {**build(n, base, root)}
        if "ingest" in args.commands:
            out["ingest"] = run(["ingest", str(small), "--into", str(root), "--source", "extra", "--layout", "flat",
                                 "--workers", "1"])
            out["ingest"]["parts_written"] = "{}/{}".format(*parts_written(root))
        if "status" in args.commands:
            out["status"] = run(["status", str(root)])
        if "split" in args.commands:
            out["split"] = run(["split", str(root)])
            out["split"]["parts_written"] = "{}/{}".format(*parts_written(root))
        if "export" in args.commands:
            out["export_dry_run"] = run(["export", str(root), "--format", "folder", "--out", str(WORK / "out"),
                                         "--dry-run"])
        print(json.dumps(out), flush=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
