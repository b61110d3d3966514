"""Engines for per-image work: curate's local pool, or a Ray Data pipeline.

Every per-image stage calls :func:`stream_map` here, which has the contract
of :func:`curate.parallel.stream_map` (completion order, ``on_crash``, an
initializer once per worker process) and one more argument, ``engine``
(``--engine`` on the command line, else the ``CURATE_ENGINE`` environment
variable, else ``local``), that picks who runs the tasks: curate's local pool
(:mod:`curate.parallel`) or Ray. This is the one place where the engine is
chosen, so the per-image functions are the same code on both engines.

On Ray the tasks become a Ray Data pipeline: ``ray.data.from_items`` over the
task list, then ``map_batches`` with an actor class (a pool of up to
``workers`` actors, one CPU each, that grows as CPUs are free). Each actor
keeps one :class:`curate.parallel.WorkerPool` of a single worker process for
its whole life, which runs the stage's initializer once (a face detector's
model is loaded once per actor), and runs every task of every batch the
actor is given. So:

- A file that crashes its decoder kills the actor's worker process, not the
  actor: the file is charged and retried exactly as in the local pool
  (``1 + retries`` attempts), then given up, and the stage's ``on_crash`` makes
  the same ``worker_crashed`` row with the same detail. Ray's own retries
  never see it, so one poison file cannot use up the actor's restarts (Ray's
  defaults retry forever: 28 restarts in 150 s on one such file, issue 18).
- An actor that dies itself (its node removed, the actor killed) is
  restarted by Ray at most :data:`ACTOR_RESTARTS` times, and the batch it was
  running is run again (at most :data:`BATCH_RETRIES` times); the results
  are the same, since a task is a plain function of its file. Past those
  bounds the run stops with :class:`RayEngineError` instead of retrying
  forever (a restart still waits for a free CPU, as any Ray task does).

Results come back as they finish (completion order, as from the local pool);
stages sort them by their own keys. A task list larger than
:data:`WINDOW` runs as several pipelines one after another, so the driver
holds at most one window of pickled tasks.

When no Ray session is open, one is opened for the call: connected to
``ray_address`` (or ``RAY_ADDRESS``) when given, else a local cluster that is
started for the call and stopped after it. An open session (a test's
cluster, a notebook's ``ray.init``) is used as it is and left open.

    >>> resolve_engine("ray"), resolve_engine(None, env={})
    ('ray', 'local')
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from curate.errors import CurateError, OptionError
from curate.parallel import (
    DEFAULT_RETRIES,
    WorkerCrash,
    WorkerCrashedError,
    WorkerPool,
    _RemoteTraceback,
    _Worker,
)
from curate.parallel import stream_map as local_stream_map

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")
ENGINE_ENV = "CURATE_ENGINE"
# An actor that dies itself (not its worker process: a node lost, the actor killed) is
# restarted by Ray this many times, and the batch it held is run again this many times.
# Ray Data's defaults for its actors are -1, forever (issue 18).
ACTOR_RESTARTS = 4
BATCH_RETRIES = 4
# Tasks per pipeline: the driver pickles one window of tasks at a time into Ray's object store.
WINDOW = 65536
# A pipeline whose first actor cannot start (a cluster without a free CPU, an image that
# cannot be pulled) fails after this long; Ray Data's default, -1, waits forever.
WAIT_FOR_ACTORS_S = 600
# Tasks per batch at most (a batch is one call of an actor); fewer when there are few tasks,
# so that every actor gets several batches and the last ones finish together.
MAX_BATCH = 64


class RayEngineError(CurateError):
    """The Ray engine cannot run: ray is not installed, the cluster cannot be reached, or Ray gave up."""


# The engine of the code inside an :func:`engine_scope` block: (engine, ray_address).
_SCOPE: ContextVar[tuple[str | None, str | None]] = ContextVar("curate_engine", default=(None, None))


@contextlib.contextmanager
def engine_scope(engine: str | None, ray_address: str | None = None) -> Iterator[None]:
    """Per-image work started inside the block, by code that does not take an engine itself,
    runs on ``engine`` (e.g. an export's image writes, made by the format's writer).

        >>> with engine_scope("ray", "ray://head:10001"):
        ...     resolve_engine(None), scope_address(None)
        ('ray', 'ray://head:10001')
        >>> resolve_engine(None, env={})
        'local'
    """
    token = _SCOPE.set((engine, ray_address))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def scope_address(ray_address: str | None) -> str | None:
    """``ray_address`` when given, else the one of the enclosing :func:`engine_scope`."""
    return ray_address or _SCOPE.get()[1]


def resolve_engine(engine: str | None, env: Mapping[str, str] | None = None) -> str:
    """The engine to use: ``engine`` when given, else the enclosing :func:`engine_scope`'s,
    else ``$CURATE_ENGINE``, else ``local``.

    >>> resolve_engine(None, env={"CURATE_ENGINE": "ray"})
    'ray'
    >>> resolve_engine("spark")
    Traceback (most recent call last):
    ...
    curate.errors.OptionError: --engine: expected one of ('local', 'ray'), found spark
    """
    env = os.environ if env is None else env
    name = engine or _SCOPE.get()[0] or env.get(ENGINE_ENV) or "local"
    if name not in ENGINES:
        where = ENGINE_ENV if name == env.get(ENGINE_ENV) else "--engine"
        raise OptionError("", field=where, expected=f"one of {ENGINES}", found=name)
    return name


def stream_map(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int = 0, progress: bool = False,
               desc: str = "", in_process_below: int = 32, max_chunk: int = 32,
               initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
               on_crash: Callable[[T, WorkerCrash], R] | None = None, retries: int = DEFAULT_RETRIES,
               task_timeout_s: float | None = None, engine: str | None = None,
               ray_address: str | None = None) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order, on ``engine``.

    ``local``: :func:`curate.parallel.stream_map` with every other argument.
    ``ray``: :func:`ray_map` on the cluster at ``ray_address`` (else
    ``RAY_ADDRESS``, else a local one), however small the job (the user chose
    where it runs); ``in_process_below`` does not apply. None: the enclosing
    :func:`engine_scope`'s, else ``$CURATE_ENGINE``, else ``local``.

        >>> sorted(stream_map(abs, [-2, 1], workers=1, engine="local"))
        [1, 2]
    """
    if resolve_engine(engine) == "local":
        yield from local_stream_map(fn, tasks, workers=workers, progress=progress, desc=desc,
                                    in_process_below=in_process_below, max_chunk=max_chunk, initializer=initializer,
                                    initargs=initargs, on_crash=on_crash, retries=retries,
                                    task_timeout_s=task_timeout_s)
        return
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="img", file=sys.stderr, desc=desc)
    try:
        for r in ray_map(fn, tasks, workers=workers, max_chunk=max_chunk, initializer=initializer, initargs=initargs,
                         on_crash=on_crash, retries=retries, task_timeout_s=task_timeout_s,
                         address=scope_address(ray_address)):
            if bar:
                bar.update()
            yield r
    finally:
        if bar:
            bar.close()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the extra, not only the core)
    except ImportError as e:
        raise RayEngineError("", field="--engine ray", expected="ray[data] installed", found=f"{e}",
                             hint="pip install 'curate[ray]', or use --engine local") from e
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int = 0) -> Iterator[Any]:
    """An open Ray session for the block: the one already open, else one connected to
    ``address`` (or ``RAY_ADDRESS``), else a local cluster of ``workers`` CPUs (0: all
    cores) started here and stopped at the end of the block. Yields the ``ray`` module."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address or os.environ.get("RAY_ADDRESS"):
        kwargs["address"] = address or os.environ["RAY_ADDRESS"]
    else:
        # "local": a cluster of its own, even when another runs on this machine (Ray's own default
        # would join the last one started here; --ray-address auto asks for that).
        kwargs["address"] = "local"
        if workers:
            kwargs["num_cpus"] = workers
    # The driver's C++ log lines go to the terminal, and Ray Data prints one as an error per
    # pipeline: that an actor whose constructor arguments were lost could not be restarted
    # (ray-project/ray#53727; the pipeline holds them while it runs). Only for the processes
    # started here; Ray's log files keep everything else.
    level = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    os.environ["RAY_BACKEND_LOG_LEVEL"] = level or "fatal"
    try:
        ray.init(**kwargs)
    except Exception as e:  # ConnectionError, a timeout, a bad address: all say the same to the user
        raise RayEngineError("", field="--ray-address", expected="a Ray cluster to connect to or start",
                             found=f"{type(e).__name__}: {e}",
                             hint="check the address (HEAD:6379, auto, or ray://HEAD:10001) and that the cluster runs; "
                                  "leave --ray-address out to start a local one") from e
    finally:
        if level is None:
            del os.environ["RAY_BACKEND_LOG_LEVEL"]
    try:
        yield ray
    finally:
        ray.shutdown()


class _Crashed:
    """What an actor sends back for a task its worker process died on every time."""

    def __init__(self, detail: str, attempts: int) -> None:
        self.detail, self.attempts = detail, attempts


class _ActorPool(WorkerPool[Any, Any]):
    """A :class:`~curate.parallel.WorkerPool` started from inside a Ray worker process."""

    def _start_worker(self) -> _Worker:
        # A spawned process first runs its parent's __main__ again: in a Ray worker that is Ray's
        # default_worker.py, whose imports cost 0.5-2.5 s a worker here and are no use to a task.
        # The worker starts with an empty __main__ instead.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            return super()._start_worker()
        finally:
            sys.modules["__main__"] = main


class RayWorker:
    """A Ray Data actor: one curate :class:`~curate.parallel.WorkerPool` of one worker
    process, kept for the actor's life, that runs every task of every batch it is given.

    A batch is ``{"i": task indices, "task": pickled tasks}``; the answer is
    ``{"i": indices, "result": pickled ("ok", result) | ("crash", detail, attempts)
    | ("error", exception, traceback)}``, one per task, in any order.
    """

    def __init__(self, fn: Callable[[Any], Any], initializer: Callable[..., object] | None,
                 initargs: tuple[Any, ...], retries: int, task_timeout_s: float | None, version: str) -> None:
        from curate import __version__

        if version != __version__:  # a cluster node with another curate would make other rows
            raise RayEngineError("", field="curate on a Ray worker", expected=f"version {version} (the driver's)",
                                 found=__version__, hint="install the same curate on every node of the cluster")
        self.pool = _ActorPool(fn, 1, initializer=initializer, initargs=initargs, retries=retries,
                                task_timeout_s=task_timeout_s)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        indices = [int(i) for i in batch["i"]]
        tasks = [pickle.loads(b) for b in batch["task"]]

        def crashed(_task: Any, crash: WorkerCrash) -> _Crashed:
            return _Crashed(crash.detail, crash.attempts)

        answers: dict[int, bytes] = {}
        try:
            for k, r in self.pool.imap_indexed(tasks, chunksize=len(tasks), on_crash=crashed):
                answer = ("crash", r.detail, r.attempts) if isinstance(r, _Crashed) else ("ok", r)
                answers[k] = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # the task's own exception: raised in the driver, as the local pool does
            import traceback

            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            try:
                error = pickle.dumps(("error", e, tb), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                error = pickle.dumps(("error", RuntimeError(f"{type(e).__name__}: {e}"), tb))
            return {"i": np.array(indices[:1], dtype=np.int64), "result": np.array([error], dtype=object)}
        keys = sorted(answers)
        return {"i": np.array([indices[k] for k in keys], dtype=np.int64),
                "result": np.array([answers[k] for k in keys], dtype=object)}

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


def batch_size_for(n_tasks: int, actors: int, max_chunk: int = MAX_BATCH) -> int:
    """Tasks per batch: up to ``max_chunk``, at least 8 batches per actor (as the local pool's chunks).

    >>> batch_size_for(10, 2), batch_size_for(100_000, 4), batch_size_for(100_000, 4, max_chunk=8)
    (1, 64, 8)
    """
    return max(1, min(max_chunk, MAX_BATCH, n_tasks // (actors * 8)))


def ray_map(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int = 0, max_chunk: int = MAX_BATCH,
            initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
            on_crash: Callable[[T, WorkerCrash], R] | None = None, retries: int = DEFAULT_RETRIES,
            task_timeout_s: float | None = None, address: str | None = None) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, run on Ray Data; the contract of
    :func:`curate.parallel.stream_map` (completion order, ``on_crash``, the
    initializer once per worker process, the task's own exception raised here).

    ``workers``: actors (0: one per CPU of the cluster). ``address``: a cluster
    to connect to when no Ray session is open (see :func:`ray_session`).
    """
    if not len(tasks):
        return
    with ray_session(address, workers) as ray, _quiet_ray_data(), _data_context(ray, {
        "enable_progress_bars": False,  # curate draws its own bar (--progress); Ray's would interleave
        "print_on_execution_start": False,
        "max_errored_blocks": 0,  # a batch Ray gave up on stops the run: never a silently missing file
        "wait_for_min_actors_s": WAIT_FOR_ACTORS_S,
    }):
        from curate import __version__

        job = (fn, initializer, initargs, retries, task_timeout_s, __version__)
        cpus = int(ray.cluster_resources().get("CPU", 0))  # now: an autoscaling cluster may add more
        for start in range(0, len(tasks), WINDOW):
            window = range(start, min(start + WINDOW, len(tasks)))
            actors = max(1, min(workers or cpus, len(window)))
            # From the CPUs there are now up to --workers, as the cluster grows; one actor is enough to go on.
            pool = _actor_pool_strategy(ray, actors, max(1, min(actors, cpus)))
            size = batch_size_for(len(window), actors, max_chunk)
            items = [{"i": i, "task": pickle.dumps(tasks[i], protocol=pickle.HIGHEST_PROTOCOL)} for i in window]
            ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / size))
            del items
            with warnings.catch_warnings():
                # Ray 2.60 says actor options as keywords are deprecated, and has no other way to
                # bound an actor's restarts: the default, -1, restarts forever (issue 18).
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(RayWorker, batch_size=size, batch_format="numpy", fn_constructor_args=job,
                                    compute=pool, num_cpus=1,
                                    max_restarts=ACTOR_RESTARTS, max_task_retries=BATCH_RETRIES)
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for i, blob in zip(batch["i"], batch["result"], strict=True):
                        kind, *payload = pickle.loads(blob)
                        if kind == "ok":
                            yield payload[0]
                        elif kind == "crash":
                            crash = WorkerCrash(payload[0], payload[1])
                            if on_crash is None:
                                raise WorkerCrashedError("", field=f"task {int(i)}", expected="a result",
                                                         found=crash.message(),
                                                         hint="the task crashes its worker process every time")
                            yield on_crash(tasks[int(i)], crash)
                        else:
                            exc, tb = payload
                            exc.__cause__ = _RemoteTraceback(tb)
                            raise exc
            except ray.exceptions.RayError as e:
                raise RayEngineError("", field="Ray pipeline", expected="every batch run",
                                     found=f"{type(e).__name__}: {_last_line(e)}",
                                     hint=f"Ray restarts an actor at most {ACTOR_RESTARTS} times and runs a batch "
                                          f"again at most {BATCH_RETRIES} times; see the Ray logs "
                                          "(/tmp/ray/session_latest/logs on each node)") from e


def _actor_pool_strategy(ray: Any, actors: int, initial: int) -> Any:
    """Ray Data's autoscaling actor pool of 1 to ``actors`` actors, ``initial`` to start with (Ray 2.40 and
    2.41 have no ``initial_size``: they start with one)."""
    import inspect

    strategy = ray.data.ActorPoolStrategy
    if "initial_size" in inspect.signature(strategy).parameters:
        return strategy(min_size=1, max_size=actors, initial_size=initial)
    return strategy(min_size=1, max_size=actors)


@contextlib.contextmanager
def _data_context(ray: Any, settings: dict[str, Any]) -> Iterator[None]:
    """Ray Data's settings for curate's pipelines, and the session's own back afterwards
    (a session the user opened is left as it was)."""
    ctx = ray.data.DataContext.get_current()
    before = {k: getattr(ctx, k) for k in settings}
    for k, v in settings.items():
        setattr(ctx, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(ctx, k, v)


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1][:300] if text else type(e).__name__


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's log lines (a plan, "execution finished", "progress bars disabled") kept off the
    user's terminal: curate reports what happened, and an error reaches the user as an exception."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
