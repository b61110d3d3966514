"""Kill points for tests only: a process started with this folder on ``PYTHONPATH`` kills itself
at a chosen file-system step, as a power cut, the OOM killer or ``kill`` would. Never on
curate's path otherwise, and nothing in curate knows about it.

``CURATE_TEST_KILL=OP:TEXT[:SIGNAL]`` (SIGNAL: ``KILL``, the default, or ``TERM``), once per process:

- ``replace``: right after an ``os.replace``/``os.rename`` whose destination name contains TEXT;
- ``rmtree``: right before a ``shutil.rmtree`` of a path whose name contains TEXT;
- ``create``: right before a file whose path contains TEXT is created with ``os.open``.

``CURATE_TEST_NO_RENAMEAT2=1`` hides ``renameat2`` from ``ctypes``, as on a C library without it
(macOS, old musl), so code takes its fallback.
"""

from __future__ import annotations

import os
import shutil
import signal

_spec = os.environ.get("CURATE_TEST_KILL", "")
_op, _, _rest = _spec.partition(":")
_text, _, _sig = _rest.partition(":")
_signal = signal.SIGTERM if _sig == "TERM" else signal.SIGKILL
_fired = False


def _fire() -> None:
    global _fired
    if not _fired:
        _fired = True
        os.kill(os.getpid(), _signal)


if _op == "replace":
    _replace, _rename = os.replace, os.rename

    def _replace_then_kill(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _replace(src, dst, *args, **kwargs)
        if _text in os.path.basename(os.fsdecode(dst)):
            _fire()

    def _rename_then_kill(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _rename(src, dst, *args, **kwargs)
        if _text in os.path.basename(os.fsdecode(dst)):
            _fire()

    os.replace, os.rename = _replace_then_kill, _rename_then_kill
elif _op == "rmtree":
    _rmtree = shutil.rmtree

    def _kill_then_rmtree(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _text in os.path.basename(os.fsdecode(path)):
            _fire()
        return _rmtree(path, *args, **kwargs)

    shutil.rmtree = _kill_then_rmtree  # type: ignore[assignment]
elif _op == "create":
    _open = os.open

    def _kill_then_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & os.O_CREAT and _text in os.fsdecode(path):
            _fire()
        return _open(path, flags, *args, **kwargs)

    os.open = _kill_then_open  # type: ignore[assignment]

if os.environ.get("CURATE_TEST_NO_RENAMEAT2"):
    import ctypes

    _getattr = ctypes.CDLL.__getattr__

    def _no_renameat2(self, name):  # type: ignore[no-untyped-def]
        if name == "renameat2":
            raise AttributeError(name)
        return _getattr(self, name)

    ctypes.CDLL.__getattr__ = _no_renameat2  # type: ignore[method-assign]
