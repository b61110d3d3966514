"""Streaming per-item work: in this process for small jobs, else curate's own spawn pool.

One mechanism for every per-image stage, so that they share the same choices:
spawn (the parent may hold threads: FiftyOne, pytest), chunks that keep every
core busy, a progress bar only when asked, and survival of a worker that dies.

:class:`WorkerPool` runs its workers as plain ``multiprocessing`` processes,
each with its own pipe, and sends a chunk of tasks to a worker only when that
worker is idle. A worker answers every task as soon as it is done, so the
parent always knows which task each worker is running. When a worker process
dies (SIGKILL from the out-of-memory killer, a segfault in a decoder,
``os._exit``), the parent sees it at once (its sentinel), charges the task it
was running, starts a fresh worker and goes on; the other workers are not
disturbed. ``multiprocessing.Pool`` instead waits forever for a result that
will never come (issue 13, issue 18). A task whose worker died more than
``retries`` times (default 2: three attempts in all) is given up: the caller's
``on_crash`` turns it into a result (stages make it a row dropped as
``worker_crashed``), or :class:`WorkerCrashedError` is raised.

An ``initializer`` sets up per-process state once (e.g. a face detector's
settings) in every process that runs tasks, this one included; a replacement
worker runs it again.

A job smaller than ``in_process_below`` (or one worker) runs in this process:
no start-up cost, but a crash there ends this process too (nothing can
survive a segfault in its own process).

    >>> sorted(stream_map(abs, [-2, 1], workers=1))
    [1, 2]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from curate.errors import CurateError, OptionError

T = TypeVar("T")
R = TypeVar("R")

# Retries of a task whose worker died, before it is given up (DESIGN.md, Scale:
# always bound retries; Ray's default of retrying forever restarted an actor
# 28 times in 150 s on one poison file, issue 18).
DEFAULT_RETRIES = 2
# Workers that die before they are ready (in the initializer, at import) this
# many times in a row stop the run: a pool that restarts them forever is the
# hang of multiprocessing.Pool with a failing initializer.
MAX_START_FAILURES = 3
# A worker asked to stop gets this long to exit on its own before it is terminated.
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class WorkerCrash:
    """A task given up because its worker process died on it every time.

    ``detail`` says how the last one died, e.g. ``"worker process killed by
    signal 9 (SIGKILL)"``; ``attempts`` is how many times it was tried.

        >>> WorkerCrash("worker process killed by signal 11 (SIGSEGV)", 3).message()
        'worker process killed by signal 11 (SIGSEGV) (3 attempts)'
    """

    detail: str
    attempts: int

    def message(self) -> str:
        return f"{self.detail} ({self.attempts} attempt{'s' if self.attempts != 1 else ''})"


class WorkerCrashedError(CurateError):
    """A worker process died and the caller gave no way to record it, or workers die while starting."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def exit_detail(exitcode: int | None) -> str:
    """How a worker process ended, in words.

    >>> exit_detail(-9)
    'worker process killed by signal 9 (SIGKILL)'
    >>> exit_detail(3)
    'worker process exited with code 3'
    """
    if exitcode is not None and exitcode < 0:
        try:
            name = f" ({signal.Signals(-exitcode).name})"
        except ValueError:
            name = ""
        return f"worker process killed by signal {-exitcode}{name}"
    return f"worker process exited with code {exitcode}"


def _worker_main(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[..., object] | None,
                 initargs: tuple[Any, ...]) -> None:
    """A worker's life: initializer once, then chunks of (index, task) until told to stop."""
    # Ctrl-C reaches the whole process group: the parent alone decides (it stops every
    # worker), rather than each worker dying with a traceback that reads like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if initializer is not None:
            initializer(*initargs)
    except Exception as e:
        _send_error(conn, "init_error", -1, e)
        return
    conn.send(("ready", -1, None))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):  # the parent has gone
            return
        if chunk is None:
            return
        for index, task in chunk:
            try:
                result = fn(task)
            except Exception as e:
                _send_error(conn, "error", index, e)
                break
            try:
                conn.send(("ok", index, result))
            except Exception as e:  # e.g. a result that cannot be pickled
                _send_error(conn, "error", index, e)
                break


def _send_error(conn: Connection, kind: str, index: int, e: Exception) -> None:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        conn.send((kind, index, (e, tb)))
    except Exception:  # the exception itself cannot be pickled: send its text
        conn.send((kind, index, (RuntimeError(f"{type(e).__name__}: {e}"), tb)))


class _Worker:
    """One worker process, its end of the pipe, and the chunk it is working on."""

    def __init__(self, ctx: Any, fn: Callable[[Any], Any], initializer: Callable[..., object] | None,
                 initargs: tuple[Any, ...]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, initializer, initargs), daemon=True)
        self.proc.start()
        child.close()  # only the worker holds it now, so its death reads as EOF here
        self.ready = False
        self.chunk: deque[int] = deque()  # indices sent and not yet answered, in the order they run
        self.since = time.monotonic()  # when the running task started (or the last answer came)
        self.killed_for: str | None = None  # why the parent killed it (a task over its time limit)

    def reap(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the process to end, kill it if it has not, and reap it."""
        self.proc.join(grace_s)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


class WorkerPool(Generic[T, R]):
    """Run ``fn`` over tasks in ``workers`` spawn processes that may die without harm.

    ``retries``: how many times a task whose worker died is tried again
    (attempts = 1 + retries) before it is given up. ``task_timeout_s``: a
    worker that has run one task longer than this is killed, and the task
    counted as crashed (None: no limit, so a task that never returns waits
    forever, as a task in this process would). The limit does not cover a
    worker's start: an initializer that never returns still waits forever.

    Costs: one message per task (about 35 us more per task than
    ``multiprocessing.Pool``'s chunked results; nothing next to an image
    decode, see docs/benchmarks.md), and a fresh worker per death.

        >>> with WorkerPool(abs, workers=2) as pool:
        ...     sorted(pool.imap_unordered([-3, 2, -1]))
        [1, 2, 3]
    """

    def __init__(self, fn: Callable[[T], R], workers: int = 0, *,
                 initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
                 retries: int = DEFAULT_RETRIES, task_timeout_s: float | None = None) -> None:
        if retries < 0:
            raise OptionError("", field="retries", expected="0 or more", found=retries)
        self.fn, self.initializer, self.initargs = fn, initializer, initargs
        self.workers = workers or os.cpu_count() or 1
        self.retries, self.task_timeout_s = retries, task_timeout_s
        self._ctx = mp.get_context("spawn")
        self._live: list[_Worker] = []
        self._start_failures = 0  # workers in a row that died before they were ready
        self.crashes = 0  # worker deaths that cost a task, for the caller's summary

    def __enter__(self) -> WorkerPool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (idle ones are asked, busy ones killed) and reap it."""
        live, self._live = self._live, []
        for w in live:
            if w.chunk:
                w.proc.kill()
            else:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for w in live:
            w.reap(max(0.0, deadline - time.monotonic()))

    def map(self, tasks: Sequence[T], *, chunksize: int = 1,
            on_crash: Callable[[T, WorkerCrash], R] | None = None) -> list[R]:
        """``[fn(t) for t in tasks]``, in task order (held in memory, like ``Pool.map``)."""
        out: list[Any] = [None] * len(tasks)
        for index, result in self.imap_indexed(tasks, chunksize=chunksize, on_crash=on_crash):
            out[index] = result
        return out

    def imap_unordered(self, tasks: Sequence[T], *, chunksize: int = 1,
                       on_crash: Callable[[T, WorkerCrash], R] | None = None) -> Iterator[R]:
        """``fn(t)`` for every task, in completion order; see :meth:`imap_indexed`."""
        for _, result in self.imap_indexed(tasks, chunksize=chunksize, on_crash=on_crash):
            yield result

    def imap_indexed(self, tasks: Sequence[T], *, chunksize: int = 1,
                     on_crash: Callable[[T, WorkerCrash], R] | None = None) -> Iterator[tuple[int, R]]:
        """``(i, fn(tasks[i]))`` for every task, in completion order.

        ``tasks[i]`` is taken only when its chunk is sent, so a lazy sequence
        stays lazy and memory stays bounded. A task given up after its worker
        died ``1 + retries`` times yields ``on_crash(task, WorkerCrash)``, or
        raises :class:`WorkerCrashedError` without ``on_crash``. An exception
        raised by ``fn`` (or the initializer) is raised here, with the
        worker's traceback as its cause.
        """
        job = _Job(tasks, max(1, chunksize), on_crash)
        left = len(tasks)
        try:
            while left:
                self._dispatch(job)
                self._wait(job)
                for item in job.done:
                    left -= 1
                    yield item
                job.done.clear()
        finally:
            if left:  # abandoned or failed midway: busy workers hold work nobody will collect
                for w in [w for w in self._live if w.chunk]:
                    self._live.remove(w)
                    w.proc.kill()
                    w.reap(0)

    # -- the parent's loop ------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        return _Worker(self._ctx, self.fn, self.initializer, self.initargs)

    def _dispatch(self, job: _Job[T, R]) -> None:
        """Start workers up to the pool size while there is work, and give each idle, ready worker a chunk."""
        busy = sum(1 for w in self._live if w.chunk)
        while len(self._live) < min(self.workers, busy + job.pending()):
            self._live.append(self._start_worker())
        for w in self._live:
            if not w.ready or w.chunk or not job.pending():
                continue
            indices = job.next_chunk()
            try:
                w.conn.send([(i, job.tasks[i]) for i in indices])
            except OSError:  # it died while idle: the chunk never reached it (its sentinel tells the rest)
                job.requeue.extendleft(reversed(indices))
                continue
            w.chunk.extend(indices)
            w.since = time.monotonic()

    def _wait(self, job: _Job[T, R]) -> None:
        """Wait for answers or deaths; finished (index, result) pairs go to ``job.done``."""
        timeout = None
        if self.task_timeout_s is not None:
            ends = [w.since + self.task_timeout_s - time.monotonic() for w in self._live if w.chunk]
            timeout = max(0.0, min(ends)) if ends else None
        by_handle: dict[Any, _Worker] = {}
        for w in self._live:
            by_handle[w.conn] = w
            by_handle[w.proc.sentinel] = w
        dead: list[_Worker] = []
        for handle in wait(list(by_handle), timeout):
            w = by_handle[handle]
            if not isinstance(handle, int) and w not in dead:  # its pipe, not its sentinel
                try:
                    self._receive(w, job)
                    while w.chunk and w.conn.poll():  # the rest of what it has sent: one wait() for many answers
                        self._receive(w, job)
                    continue
                except (EOFError, OSError):  # its end closed: it died; the sentinel says how
                    pass
            if w not in dead:
                dead.append(w)
        if self.task_timeout_s is not None:
            now = time.monotonic()
            for w in self._live:
                if w.chunk and now - w.since > self.task_timeout_s and w not in dead:
                    w.killed_for = f"no result after {self.task_timeout_s:g} s: worker process killed"
                    w.proc.kill()
                    dead.append(w)
        for w in dead:
            self._bury(w, job)

    def _receive(self, w: _Worker, job: _Job[T, R]) -> None:
        kind, index, payload = w.conn.recv()
        if kind == "ok":
            w.chunk.popleft()  # answers come in the order the chunk runs
            w.since = time.monotonic()
            job.done.append((index, payload))
            return
        if kind == "ready":
            w.ready = True
            self._start_failures = 0
            return
        exc, tb = payload  # "error" or "init_error": fn or the initializer raised
        exc.__cause__ = _RemoteTraceback(tb)
        raise exc

    def _bury(self, w: _Worker, job: _Job[T, R]) -> None:
        """A worker has died: keep what it answered, charge the task it was running, requeue the rest."""
        try:
            while w.conn.poll():  # answers it sent before it died are still in the pipe
                self._receive(w, job)
        except (EOFError, OSError):
            pass
        self._live.remove(w)
        w.reap(0)
        detail = w.killed_for or exit_detail(w.proc.exitcode)
        if not w.ready:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                raise WorkerCrashedError(
                    "", field="worker start", expected="worker processes that start",
                    found=f"{self._start_failures} in a row died before they were ready ({detail})",
                    hint="the initializer or an import crashes the process; run with --workers 1 to see why")
            return
        if not w.chunk:  # killed while idle: nothing lost
            return
        self.crashes += 1
        running = w.chunk.popleft()
        job.requeue.extendleft(reversed(w.chunk))  # not started: they go again, uncharged
        deaths = job.deaths[running] = job.deaths.get(running, 0) + 1
        if deaths <= self.retries:
            job.retry.append(running)
            return
        crash = WorkerCrash(detail, deaths)
        if job.on_crash is None:
            raise WorkerCrashedError("", field=f"task {running}", expected="a result", found=crash.message(),
                                     hint="the task crashes its worker process every time")
        job.done.append((running, job.on_crash(job.tasks[running], crash)))


class _Job(Generic[T, R]):
    """The state of one ``imap_indexed`` call: what is left to send, and what came back."""

    def __init__(self, tasks: Sequence[T], chunksize: int,
                 on_crash: Callable[[T, WorkerCrash], R] | None) -> None:
        self.tasks, self.chunksize, self.on_crash = tasks, chunksize, on_crash
        self.fresh = 0  # next index never sent
        self.requeue: deque[int] = deque()  # sent to a worker that died before starting them: uncharged
        self.retry: deque[int] = deque()  # their worker died on them: each goes alone, so a death names it
        self.deaths: dict[int, int] = {}  # index -> times its worker died on it
        self.done: list[tuple[int, Any]] = []

    def pending(self) -> int:
        return len(self.requeue) + len(self.retry) + len(self.tasks) - self.fresh

    def next_chunk(self) -> list[int]:
        if self.requeue:
            return [self.requeue.popleft() for _ in range(min(self.chunksize, len(self.requeue)))]
        if self.retry:
            return [self.retry.popleft()]
        stop = min(self.fresh + self.chunksize, len(self.tasks))
        indices = list(range(self.fresh, stop))
        self.fresh = stop
        return indices


def stream_map(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int = 0, progress: bool = False,
               desc: str = "", in_process_below: int = 32, max_chunk: int = 32,
               initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
               on_crash: Callable[[T, WorkerCrash], R] | None = None, retries: int = DEFAULT_RETRIES,
               task_timeout_s: float | None = None) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers`` 0 means all cores; jobs smaller than ``in_process_below`` run
    here, without starting processes. ``fn`` (and ``initializer``) must be
    importable (module-level functions) for the pool. ``initializer(*initargs)``
    runs once per pool worker, or once here before the first task when the
    job runs in this process. A task whose worker process died ``1 + retries``
    times yields ``on_crash(task, WorkerCrash)`` (see :class:`WorkerPool`).
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="img", file=sys.stderr, desc=desc)
    try:
        n = min(workers or os.cpu_count() or 1, len(tasks))
        if n <= 1 or len(tasks) < in_process_below:
            if initializer is not None and len(tasks):
                initializer(*initargs)
            for t in tasks:
                r = fn(t)
                if bar:
                    bar.update()
                yield r
            return
        # Chunks of up to max_chunk, at least 8 per worker, so that the last
        # ones finish together.
        chunksize = max(1, min(max_chunk, len(tasks) // (n * 8)))
        with WorkerPool(fn, n, initializer=initializer, initargs=initargs, retries=retries,
                        task_timeout_s=task_timeout_s) as pool:
            for r in pool.imap_unordered(tasks, chunksize=chunksize, on_crash=on_crash):
                if bar:
                    bar.update()
                yield r
    finally:
        if bar:
            bar.close()
