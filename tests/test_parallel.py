"""curate.parallel: the same results in-process and in a spawn pool; the initializer runs in each;
a worker process that dies (SIGKILL, a segfault, exit) costs at most its task, and nothing hangs."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Sequence

import pytest

from curate.parallel import DEFAULT_RETRIES, WorkerCrash, WorkerCrashedError, WorkerPool, stream_map
from tests.conftest import within

_STATE: dict[str, int] = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _add(x: int) -> tuple[int, int]:
    """x plus the offset the initializer set in this process, and the process id."""
    return x + _STATE["offset"], os.getpid()


@pytest.mark.parametrize("workers, in_process_below", [
    (1, 32),  # one worker: always here
    (2, 32),  # 10 tasks under the in-process limit: here
    (2, 0),  # a 2-process spawn pool
])
def test_initializer_runs_wherever_the_tasks_run(workers, in_process_below):
    _STATE.clear()
    out = list(stream_map(_add, list(range(10)), workers=workers, in_process_below=in_process_below,
                          initializer=_init, initargs=(100,)))
    assert sorted(v for v, _ in out) == list(range(100, 110))
    pids = {pid for _, pid in out}
    assert (pids == {os.getpid()}) == (in_process_below > 0)


def test_no_tasks_no_initializer():
    _STATE.clear()
    assert list(stream_map(_add, [], workers=1, initializer=_init, initargs=(1,))) == []
    assert _STATE == {}


# -- a worker that dies ----------------------------------------------------------------
# Tasks are (value, fault): the fault, if any, happens in the worker process that runs
# that task, the way a decoder's segfault or the out-of-memory killer would strike.


def _work(task: tuple[int, str, str]) -> int:
    """value * 10, after the task's fault: SIGKILL or a segfault of this process, a hang,
    or (with a marker file) a fault on the first attempt only."""
    value, fault, marker = task
    if fault and marker:  # only the first attempt fails: the marker records that it happened
        if os.path.exists(marker):
            fault = ""
        else:
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV, as a crashing C decoder does
    elif fault == "exit":
        os._exit(3)
    elif fault == "hang":
        time.sleep(3600)
    elif fault == "wait_for_kill":  # sleeps until the test kills this process from outside
        time.sleep(60)
    elif fault == "raise":
        raise ValueError(f"task {value} is bad")
    return value * 10


def _crashed(task: tuple[int, str, str], crash: WorkerCrash) -> tuple[int, str, int]:
    return task[0], crash.detail, crash.attempts


def _tasks(n: int, faults: dict[int, str], marker: str = "") -> list[tuple[int, str, str]]:
    return [(i, faults.get(i, ""), marker if i in faults else "") for i in range(n)]


@pytest.mark.parametrize("fault, detail", [
    ("sigkill", "worker process killed by signal 9 (SIGKILL)"),  # the out-of-memory killer
    ("segfault", "worker process killed by signal 11 (SIGSEGV)"),  # a crashing decoder, for real
    ("exit", "worker process exited with code 3"),  # a library calling exit()
])
def test_a_task_that_kills_its_worker_is_given_up_and_the_rest_is_unchanged(fault, detail):
    tasks = _tasks(120, {37: fault})
    out = within(60, lambda: list(stream_map(_work, tasks, workers=2, in_process_below=0, on_crash=_crashed)))
    crashed = [r for r in out if isinstance(r, tuple)]
    assert crashed == [(37, detail, 1 + DEFAULT_RETRIES)]  # tried three times, then given up
    assert sorted(r for r in out if not isinstance(r, tuple)) == [i * 10 for i in range(120) if i != 37]


def test_retries_are_bounded_and_a_crash_without_on_crash_is_an_error():
    tasks = _tasks(40, {3: "sigkill"})
    out = within(60, lambda: list(stream_map(_work, tasks, workers=2, in_process_below=0, on_crash=_crashed,
                                              retries=0)))
    assert [r for r in out if isinstance(r, tuple)] == [(3, "worker process killed by signal 9 (SIGKILL)", 1)]
    with pytest.raises(WorkerCrashedError, match=r"task 3: expected a result, found worker process killed by "
                                                 r"signal 9 \(SIGKILL\) \(3 attempts\)"):
        within(60, lambda: list(stream_map(_work, tasks, workers=2, in_process_below=0)))


def test_a_crash_on_the_first_attempt_only_costs_nothing(tmp_path):
    tasks = _tasks(60, {10: "segfault"}, marker=str(tmp_path / "crashed-once"))
    with WorkerPool(_work, 2) as pool:
        out = within(60, lambda: pool.map(tasks, chunksize=4, on_crash=_crashed))
        assert pool.crashes == 1
    assert out == [i * 10 for i in range(60)]  # the retry succeeded; map keeps task order


def test_a_worker_killed_from_outside_mid_task(tmp_path):
    """SIGKILL from another process, as the OOM killer sends it, while the worker runs a task."""
    marker = tmp_path / "pid"
    tasks = _tasks(80, {5: "wait_for_kill"}, marker=str(marker))

    def run() -> list[object]:
        out = []
        killed = False
        for r in stream_map(_work, tasks, workers=2, in_process_below=0, on_crash=_crashed, max_chunk=2):
            out.append(r)
            if not killed and marker.exists() and marker.read_text():
                os.kill(int(marker.read_text()), signal.SIGKILL)
                killed = True
        while not killed:  # every other task finished first: kill it now
            if marker.exists() and marker.read_text():
                os.kill(int(marker.read_text()), signal.SIGKILL)
                killed = True
        return out

    out = within(60, run)
    assert sorted(out) == [i * 10 for i in range(80)]  # task 5 ran again, and passed


def test_a_worker_killed_while_idle_is_replaced():
    with WorkerPool(_add_pid, 2, initializer=_init, initargs=(0,)) as pool:
        first = within(60, lambda: pool.map(list(range(20)), chunksize=2))
        victim = first[0][1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(victim):
            time.sleep(0.01)
        second = within(60, lambda: pool.map(list(range(20)), chunksize=2))
        assert pool.crashes == 0  # it held no task: nothing lost, nothing charged
    assert [v for v, _ in second] == list(range(20))
    assert victim not in {pid for _, pid in second}


def test_a_task_that_never_returns_is_killed_after_its_time_limit():
    tasks = _tasks(20, {4: "hang"})
    t0 = time.monotonic()
    out = within(60, lambda: list(stream_map(_work, tasks, workers=2, in_process_below=0, on_crash=_crashed,
                                              retries=1, task_timeout_s=1.0)))
    assert [r for r in out if isinstance(r, tuple)] == [(4, "no result after 1 s: worker process killed", 2)]
    assert time.monotonic() - t0 < 30


def test_an_exception_in_a_task_is_raised_here_with_the_workers_traceback():
    with pytest.raises(ValueError, match="task 6 is bad") as info:
        within(60, lambda: list(stream_map(_work, _tasks(30, {6: "raise"}), workers=2, in_process_below=0)))
    assert "_work" in str(info.value.__cause__)  # the remote traceback


def test_an_initializer_that_raises_or_crashes_stops_the_run_instead_of_restarting_forever():
    with pytest.raises(ValueError, match="bad settings"):
        within(60, lambda: list(stream_map(_add, list(range(10)), workers=2, in_process_below=0,
                                            initializer=_bad_init, initargs=("raise",))))
    with pytest.raises(WorkerCrashedError, match="died before they were ready"):
        within(60, lambda: list(stream_map(_add, list(range(10)), workers=2, in_process_below=0,
                                            initializer=_bad_init, initargs=("sigkill",))))


def test_a_worker_death_is_seen_at_once():
    """The parent learns of a dead worker from its process sentinel, not a time-out:
    three deaths and two fresh workers cost well under the seconds a time-out would."""
    t0 = time.monotonic()
    within(60, lambda: list(stream_map(_work, _tasks(4, {0: "sigkill"}), workers=2, in_process_below=0,
                                        on_crash=_crashed)))
    assert time.monotonic() - t0 < 20


def _add_pid(x: int) -> tuple[int, int]:
    return _add(x)


def _bad_init(how: str) -> None:
    if how == "raise":
        raise ValueError("bad settings")
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class _Lazy(Sequence[int]):
    """A sequence that records the highest index taken from it, like ingest's lazily made jobs."""

    def __init__(self, n: int) -> None:
        self.n, self.highest = n, -1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        self.highest = max(self.highest, i)
        return i


def test_tasks_are_taken_when_sent_and_an_abandoned_run_leaves_no_worker_behind():
    tasks = _Lazy(10_000)
    pool = WorkerPool(_add_pid, 2, initializer=_init, initargs=(0,))
    stream = pool.imap_unordered(tasks, chunksize=4)
    first = [next(stream) for _ in range(10)]
    assert tasks.highest < 100  # a few chunks per worker, not the whole sequence: memory stays bounded
    pids = {pid for _, pid in first}
    stream.close()  # the caller stops early: busy workers are killed, idle ones stopped by close()
    pool.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.01)
    assert not any(_alive(p) for p in pids)
