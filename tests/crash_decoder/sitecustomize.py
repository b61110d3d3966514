"""A JPEG decoder that crashes its process, for tests only: never on curate's path otherwise.

A test puts this folder on ``PYTHONPATH``, so that Python imports this module
when a (spawned) worker process starts, and only there: the test process
itself was started without it. From then on, decoding a JPEG whose comment
(COM segment) is one of the ``FAULTS`` below crashes the process inside
Pillow's ``load``, where a real decoder bug would: a segfault (a read of
address 0 through ctypes), or SIGKILL as the out-of-memory killer sends it.
Every other JPEG decodes as usual, so the rest of a run is undisturbed.

    img.save("poison.jpg", quality=85, comment=b"curate-test: segfault")
"""

from __future__ import annotations

import ctypes
import os
import signal

from PIL import JpegImagePlugin

FAULTS = {b"curate-test: segfault", b"curate-test: sigkill"}

_load = JpegImagePlugin.JpegImageFile.load


def _crashing_load(self):  # type: ignore[no-untyped-def]
    comment = self.info.get("comment")
    if comment == b"curate-test: segfault":
        ctypes.string_at(0)
    elif comment == b"curate-test: sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return _load(self)


JpegImagePlugin.JpegImageFile.load = _crashing_load  # type: ignore[method-assign]
