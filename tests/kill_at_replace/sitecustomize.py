"""Kills the main process at its Nth ``os.replace``, for tests only: never on curate's path otherwise.

A test puts this folder on ``PYTHONPATH`` and sets ``CURATE_TEST_KILL_AT_REPLACE=N``
for one ``curate`` command in a subprocess. Python imports this module when
that process starts; from then on, the main process's Nth ``os.replace`` (the
step that publishes every atomic write in curate) sends it SIGKILL instead,
as a power cut or the out-of-memory killer would. Worker processes count
nothing and are never killed by it. Without the variable it does nothing.
"""

from __future__ import annotations

import os
import signal

_KILL_AT = int(os.environ.get("CURATE_TEST_KILL_AT_REPLACE", "0") or 0)

if _KILL_AT > 0:
    import multiprocessing

    _replace = os.replace
    _calls = 0

    def _killing_replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        global _calls
        if multiprocessing.parent_process() is None:
            _calls += 1
            if _calls == _KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)

    os.replace = _killing_replace
