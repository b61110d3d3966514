"""Kill points for tests only: a process started with this folder on ``PYTHONPATH`` kills itself
at a chosen file-system step, as a power cut, the OOM killer or ``kill`` would. Never on
curate's path otherwise, and nothing in curate knows about it.

``CURATE_TEST_KILL=OP:TEXT[:SIGNAL]`` (SIGNAL: ``KILL``, the default, or ``TERM``), once per process:

- ``replace``: right after an ``os.replace``/``os.rename`` whose destination name contains TEXT;
- ``rmtree``: right before a ``shutil.rmtree`` of a path whose name contains TEXT;
- ``create``: right before a file whose path contains TEXT is created with ``os.open``;
- ``step``: TEXT is a number N: right before the main process's Nth write step (below).

A *write step* is each ``os.replace``/``os.rename`` and each creation of a file or folder that
did not exist (``os.open`` with ``O_CREAT``, ``open``/``io.open`` for writing, ``os.link``,
``os.symlink``, ``os.mkdir``; pathlib, ``tempfile`` and ``shutil`` go through these) of the main
process; worker processes neither count nor die. ``CURATE_TEST_STEPS=FILE`` appends one line
``<kind>\t<path>`` per step to FILE, so that a test finds the number of steps of a command at run
time (an uninterrupted run with it is the same run as without it) and then kills at each.

``CURATE_TEST_NO_RENAMEAT2=1`` hides ``renameat2`` from ``ctypes``, as on a C library without it
(macOS, old musl), so code takes its fallback.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading

_spec = os.environ.get("CURATE_TEST_KILL", "")
_op, _, _rest = _spec.partition(":")
_text, _, _sig = _rest.partition(":")
_signal = signal.SIGTERM if _sig == "TERM" else signal.SIGKILL
_fired = False


_lock = threading.Lock()


def _fire() -> None:
    global _fired
    with _lock:  # writer threads reach a kill point at once: one signal, as documented
        if _fired:
            return
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
elif _op == "step" or os.environ.get("CURATE_TEST_STEPS"):
    import builtins
    import io
    import multiprocessing

    _kill_at = int(_text) if _op == "step" and _text else 0
    _log = os.environ.get("CURATE_TEST_STEPS")
    _log_fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if _log else None
    _steps = 0
    _real = {"replace": os.replace, "rename": os.rename, "open": os.open, "link": os.link,
             "symlink": os.symlink, "mkdir": os.mkdir, "io_open": io.open}

    def _step(kind: str, path: object) -> None:
        global _steps
        if multiprocessing.parent_process() is not None:  # a worker: never counted, never killed
            return
        if kind != "replace" and os.path.lexists(path):  # type: ignore[arg-type]  # opened, not created
            return
        _steps += 1
        if _log_fd is not None:
            os.write(_log_fd, f"{kind}\t{os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else path}\n"
                     .encode(errors="replace"))
        if _steps == _kill_at:
            _fire()

    def _replace_step(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _step("replace", dst)
        return _real["replace"](src, dst, *args, **kwargs)

    def _rename_step(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _step("replace", dst)
        return _real["rename"](src, dst, *args, **kwargs)

    def _open_step(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & os.O_CREAT:
            _step("create", path)
        return _real["open"](path, flags, *args, **kwargs)

    def _link_step(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _step("create", dst)
        return _real["link"](src, dst, *args, **kwargs)

    def _symlink_step(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _step("create", dst)
        return _real["symlink"](src, dst, *args, **kwargs)

    def _mkdir_step(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        _step("mkdir", path)
        return _real["mkdir"](path, *args, **kwargs)

    def _io_open_step(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if not isinstance(file, int) and any(c in mode for c in "wxa+"):
            _step("create", file)
        return _real["io_open"](file, mode, *args, **kwargs)

    os.replace, os.rename, os.open = _replace_step, _rename_step, _open_step  # type: ignore[assignment]
    os.link, os.symlink, os.mkdir = _link_step, _symlink_step, _mkdir_step  # type: ignore[assignment]
    io.open = builtins.open = _io_open_step  # type: ignore[assignment]
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
