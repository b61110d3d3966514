"""Streaming per-item work: in this process for small jobs, else a spawn pool.

One mechanism for every per-image stage, so that they share the same choices:
spawn (the parent may hold threads: FiftyOne, pytest), ``imap_unordered`` with
a chunk size that keeps both cores busy, and a progress bar only when asked.

    >>> sorted(stream_map(abs, [-2, 1], workers=1))
    [1, 2]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def stream_map(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int = 0, progress: bool = False,
               desc: str = "", in_process_below: int = 32, max_chunk: int = 32) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers`` 0 means all cores; jobs smaller than ``in_process_below`` run
    here, without starting processes. ``fn`` must be importable (a module-level
    function) for the pool.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="img", file=sys.stderr, desc=desc)
    try:
        n = min(workers or os.cpu_count() or 1, len(tasks))
        results: Iterable[R]
        if n <= 1 or len(tasks) < in_process_below:
            results = (fn(t) for t in tasks)
            for r in results:
                if bar:
                    bar.update()
                yield r
            return
        ctx = mp.get_context("spawn")
        chunksize = max(1, min(max_chunk, len(tasks) // (n * 8)))
        with ctx.Pool(n) as pool:
            for r in pool.imap_unordered(fn, tasks, chunksize=chunksize):
                if bar:
                    bar.update()
                yield r
    finally:
        if bar:
            bar.close()



