#!/usr/bin/env python3
"""curate's pool vs multiprocessing.Pool, and how fast a dead worker is noticed, in one run.

    python benchmarks/pool_bench.py [--n 1000] [--workers 2] [--rounds 5]

- Throughput: ingest's real probe (sha256, decode at reduced scale, hashes) over N
  JPEGs made from scikit-image's photos, through ``curate.parallel.stream_map``
  and through ``multiprocessing.Pool.imap_unordered`` with the same chunk size
  (what stream_map used before issue 18), alternating, median of the rounds.
- Per-task overhead: the same on 100,000 trivial tasks.
- Detection: time from a worker's SIGKILL to the parent knowing (``on_crash``
  called, retries 0), and to ``BrokenProcessPool`` in
  ``concurrent.futures.ProcessPoolExecutor`` on the same fault.
- Cost of one poison file: the probe run again with one file whose worker is
  killed on every attempt (3 attempts, 3 fresh workers).

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from curate.imageio import ProbeOptions, ProbeTask, _probe_task
from curate.parallel import WorkerCrash, stream_map

POISON = "poison.jpg"


def build(dst: Path, n: int) -> list[str]:
    """N distinct JPEGs, 900-950 x 700, from scikit-image's bundled photos (idempotent)."""
    from PIL import Image

    from curate.demo import bundled_photos_dir

    dst.mkdir(parents=True, exist_ok=True)
    paths = [dst / f"img_{i:05d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    base = [Image.open(bundled_photos_dir() / f).convert("RGB") for f in ("astronaut.png", "coffee.png", "chelsea.png")]
    for i, p in enumerate(paths):
        base[i % 3].rotate(i * 7 % 360).resize((900 + i % 50, 700)).save(p, quality=85)
    return [str(p) for p in paths]


def mp_pool_map(fn: Any, tasks: list[Any], workers: int, max_chunk: int = 32) -> list[Any]:
    """What stream_map did before issue 18: a spawn Pool's imap_unordered, same chunk size."""
    chunksize = max(1, min(max_chunk, len(tasks) // (workers * 8)))
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(pool.imap_unordered(fn, tasks, chunksize=chunksize))


def probe_or_die(job: tuple[ProbeTask, ProbeOptions]) -> dict[str, Any]:
    """The real probe, except that the poison file kills its worker, as the out-of-memory killer would."""
    if job[0].path.endswith(POISON):
        os.kill(os.getpid(), signal.SIGKILL)
    return _probe_task(job)


def crashed(job: Any, crash: WorkerCrash) -> dict[str, Any]:
    return {"crashed": crash.message(), "at": time.monotonic()}


def double(x: int) -> int:
    return 2 * x


def die_at_5(x: int) -> int:
    if x == 5:
        Path(os.environ["POOL_BENCH_MARK"]).write_text(repr(time.monotonic()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return x


def detection(rounds: int, workers: int) -> dict[str, float]:
    """Milliseconds from a worker's SIGKILL to curate's on_crash, and to ProcessPoolExecutor's BrokenProcessPool."""
    mark = Path(tempfile.mkdtemp()) / "died_at"
    os.environ["POOL_BENCH_MARK"] = str(mark)  # inherited by the spawned workers
    ours: list[float] = []
    futures: list[float] = []
    for _ in range(rounds):
        out = list(stream_map(die_at_5, list(range(40)), workers=workers, in_process_below=0, max_chunk=1,
                              retries=0, on_crash=lambda t, c: -time.monotonic()))  # when the parent knew
        ours.append(-min(out) - float(mark.read_text()))
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            for f in [ex.submit(die_at_5, i) for i in range(40)]:
                try:
                    f.result()
                except BrokenProcessPool:
                    futures.append(time.monotonic() - float(mark.read_text()))
                    break
    return {"curate_ms_median": 1e3 * statistics.median(ours), "curate_ms_max": 1e3 * max(ours),
            "process_pool_executor_ms_median": 1e3 * statistics.median(futures),
            "process_pool_executor_ms_max": 1e3 * max(futures)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "pool")
    args = ap.parse_args()
    paths = build(args.out, args.n)
    jobs = [(ProbeTask(p), ProbeOptions()) for p in paths]

    times: dict[str, list[float]] = {"curate": [], "multiprocessing.Pool": []}
    for _ in range(args.rounds):
        for name in times:
            t0 = time.perf_counter()
            n = len(list(stream_map(_probe_task, jobs, workers=args.workers)) if name == "curate"
                    else mp_pool_map(_probe_task, jobs, args.workers))
            times[name].append(time.perf_counter() - t0)
            assert n == len(jobs)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"measure": "probe throughput", "files": len(jobs), "workers": args.workers,
                      "rounds": args.rounds, **{f"{k} img/s": round(len(jobs) / v, 1) for k, v in med.items()},
                      "time ratio curate/Pool": round(med["curate"] / med["multiprocessing.Pool"], 3),
                      "load average": os.getloadavg()[0]}))

    trivial = list(range(100_000))
    tiny: dict[str, list[float]] = {"curate": [], "multiprocessing.Pool": []}
    for _ in range(2):
        for name in tiny:
            t0 = time.perf_counter()
            list(stream_map(double, trivial, workers=args.workers)) if name == "curate" \
                else mp_pool_map(double, trivial, args.workers)
            tiny[name].append(time.perf_counter() - t0)
    print(json.dumps({"measure": "overhead per trivial task (us)",
                      **{k: round(1e6 * min(v) / len(trivial), 1) for k, v in tiny.items()}}))

    print(json.dumps({"measure": "worker death noticed after", **{k: round(v, 1) for k, v in
                                                                   detection(args.rounds, args.workers).items()}}))

    poison = args.out / POISON
    poison.write_bytes(Path(paths[0]).read_bytes())
    t0 = time.perf_counter()
    out = list(stream_map(probe_or_die, [*jobs, (ProbeTask(str(poison)), ProbeOptions())], workers=args.workers,
                          on_crash=crashed))
    poisoned = time.perf_counter() - t0
    assert sum("crashed" in r for r in out) == 1
    print(json.dumps({"measure": "one poison file (3 attempts)", "seconds": round(poisoned, 2),
                      "undisturbed seconds (median above)": round(med["curate"], 2),
                      "extra seconds": round(poisoned - med["curate"], 2)}))


if __name__ == "__main__":
    main()
