#!/usr/bin/env python3
"""The Ray engine's overhead against curate's local pool, on this machine, in one run.

    python benchmarks/engine_bench.py [--n 1000] [--workers 2] [--rounds 3]

- Start-up, measured apart: a local Ray cluster of ``--workers`` CPUs started
  (``ray.init``) and stopped (``ray.shutdown``), and the memory its processes
  hold once a pipeline has run (RSS of every process under this one).
- Throughput: ingest's real probe (sha256, decode at reduced scale, hashes)
  over N JPEGs made from scikit-image's photos, through
  ``curate.engine.stream_map`` with ``engine="local"`` (curate's spawn pool)
  and ``engine="ray"`` (a Ray Data pipeline on the already started cluster:
  actors started, tasks run, actors stopped), alternating, median of the rounds.
- What a command pays: one ``engine="ray"`` call with no session open, so
  that it starts and stops its own cluster (what ``curate ingest --engine ray``
  does), against the local pool's time.
- One poison file on Ray: the probe again with one file that SIGKILLs its
  worker process on every attempt (3 attempts), against the same run without it.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pool_bench import POISON, build, crashed, probe_or_die  # same files, same poison as the pool benchmark

from curate.engine import stream_map
from curate.imageio import ProbeOptions, ProbeTask, _probe_task


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def tree_rss_mb() -> float:
    """RSS of this process's descendants (a local Ray cluster: GCS, raylet, workers), in MB."""
    import psutil

    total = 0
    for p in psutil.Process().children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "curate-engine-bench")
    args = ap.parse_args()

    import ray

    paths = build(args.dir / "files", args.n)
    tasks = [(ProbeTask(p), ProbeOptions()) for p in paths]
    emit(what="setup", files=len(tasks), workers=args.workers, cpus=os.cpu_count(), load=os.getloadavg()[0],
         ray=ray.__version__)

    def local() -> int:
        return len(list(stream_map(_probe_task, tasks, workers=args.workers, engine="local", in_process_below=0)))

    def on_ray() -> int:
        return len(list(stream_map(_probe_task, tasks, workers=args.workers, engine="ray")))

    # What a command pays: its own cluster, started and stopped inside the call.
    t_local_cold, _ = timed(local)
    t_ray_cold, n = timed(on_ray)
    assert n == len(tasks)
    emit(what="one command, cluster started and stopped inside", local_s=round(t_local_cold, 2),
         ray_s=round(t_ray_cold, 2), ratio=round(t_ray_cold / t_local_cold, 2))

    t_start, _ = timed(lambda: ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                                        logging_level="ERROR"))
    try:
        local_s, ray_s = [], []
        for _ in range(args.rounds):
            local_s.append(timed(local)[0])
            ray_s.append(timed(on_ray)[0])
        rss = tree_rss_mb()
        lo, ry = statistics.median(local_s), statistics.median(ray_s)
        emit(what="throughput, warm cluster", local_s=round(lo, 2), ray_s=round(ry, 2),
             local_img_s=round(len(tasks) / lo, 1), ray_img_s=round(len(tasks) / ry, 1), ratio=round(ry / lo, 2),
             rounds=args.rounds, load=os.getloadavg()[0])
        emit(what="local cluster memory after a pipeline", rss_mb=round(rss))

        poisoned = [*tasks[:-1], (ProbeTask(str(Path(paths[0]).with_name(POISON))), ProbeOptions())]
        Path(poisoned[-1][0].path).write_bytes(Path(paths[0]).read_bytes())
        t_clean, _ = timed(lambda: list(stream_map(probe_or_die, tasks, workers=args.workers, engine="ray",
                                                   on_crash=crashed)))
        t_poison, out = timed(lambda: list(stream_map(probe_or_die, poisoned, workers=args.workers, engine="ray",
                                                      on_crash=crashed)))
        gave_up = [r for r in out if "crashed" in r]
        emit(what="one poison file on ray", clean_s=round(t_clean, 2), poisoned_s=round(t_poison, 2),
             extra_s=round(t_poison - t_clean, 2), given_up=[r["crashed"] for r in gave_up])
    finally:
        t_stop, _ = timed(ray.shutdown)
    emit(what="local cluster start / stop", start_s=round(t_start, 2), stop_s=round(t_stop, 2))


if __name__ == "__main__":
    main()
