"""Streaming per-item work: in this process for small jobs, else a spawn pool.

One mechanism for every per-image stage, so that they share the same choices:
spawn (the parent may hold threads: FiftyOne, pytest), ``imap_unordered`` with
a chunk size that keeps both cores busy, and a progress bar only when asked.
An ``initializer`` sets up per-process state once (e.g. a face detector's
settings) in every process that runs tasks, this one included.

    >>> sorted(stream_map(abs, [-2, 1], workers=1))
    [1, 2]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def stream_map(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int = 0, progress: bool = False,
               desc: str = "", in_process_below: int = 32, max_chunk: int = 32,
               initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers`` 0 means all cores; jobs smaller than ``in_process_below`` run
    here, without starting processes. ``fn`` (and ``initializer``) must be
    importable (module-level functions) for the pool. ``initializer(*initargs)``
    runs once per pool worker, or once here before the first task when the
    job runs in this process.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="img", file=sys.stderr, desc=desc)
    try:
        n = min(workers or os.cpu_count() or 1, len(tasks))
        results: Iterable[R]
        if n <= 1 or len(tasks) < in_process_below:
            if initializer is not None and len(tasks):
                initializer(*initargs)
            results = (fn(t) for t in tasks)
            for r in results:
                if bar:
                    bar.update()
                yield r
            return
        ctx = mp.get_context("spawn")
        chunksize = max(1, min(max_chunk, len(tasks) // (n * 8)))
        with ctx.Pool(n, initializer=initializer, initargs=initargs) as pool:
            for r in pool.imap_unordered(fn, tasks, chunksize=chunksize):
                if bar:
                    bar.update()
                yield r
    finally:
        if bar:
            bar.close()



