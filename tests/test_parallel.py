"""curate.parallel.stream_map: the same results in-process and in a spawn pool; the initializer runs in each."""

from __future__ import annotations

import os

import pytest

from curate.parallel import stream_map

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
