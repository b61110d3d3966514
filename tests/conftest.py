"""Shared fixtures.

Real photos come from two places:
- ``../shared/data`` (the project's corpus; not redistributable, so never copied
  into the repo). Tests that need it use the ``corpus`` fixture and skip with a
  stated reason on machines without it. ``CURATE_TEST_DATA`` overrides the path.
- scikit-image's bundled ``skimage/data`` photos, present wherever curate is
  installed: core tests use those (``skimage_dir``).

Bad files are always derived from real photos inside ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("CURATE_TEST_DATA", REPO.parent / "shared" / "data"))
CORPUS_REASON = (
    f"needs the shared photo corpus at {CORPUS} (../shared/data, not redistributable); "
    "set CURATE_TEST_DATA to run these tests"
)


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "SOURCES.md").exists():
        pytest.skip(CORPUS_REASON)
    return CORPUS


@pytest.fixture(scope="session")
def skimage_dir() -> Path:
    import skimage.data

    # The photos shipped in the package: skimage.data_dir points at a download cache once pooch is installed.
    return Path(skimage.data.__file__).parent


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 + mtime of every file under root: proves a source was not touched."""
    out = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
                continue
            st = p.stat()
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{st.st_mtime_ns}:{st.st_size}"
    return out


@pytest.fixture()
def copy_tree(tmp_path: Path):
    """Copy (part of) a real photo folder into tmp_path, to derive bad files next to real ones."""

    def _copy(src: Path, name: str | None = None, files: list[str] | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        if files is None:
            shutil.copytree(src, dst)
        else:
            dst.mkdir(parents=True, exist_ok=True)
            for f in files:
                (dst / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / f, dst / f)
        return dst

    return _copy


@pytest.fixture(scope="session")
def fiftyone_env():
    """FiftyOne against a real mongod whose database lives in a temporary folder,
    so tests never touch the user's own FiftyOne data. Returns the ``fiftyone``
    module. Must be requested before anything imports fiftyone in the process.

    The folder is a ``tempfile.mkdtemp`` of its own, not under pytest's basetemp:
    a second pytest session started meanwhile prunes old basetemp folders, and
    took a running mongod's database with them (seen with parallel sessions)."""
    import atexit
    import sys
    import tempfile

    if "fiftyone" in sys.modules and not os.environ.get("CURATE_TEST_FO_DB"):
        pytest.fail("fiftyone was imported before the fiftyone_env fixture configured a temporary database")
    db_dir = Path(tempfile.mkdtemp(prefix="curate-test-fiftyone-db-"))
    atexit.register(shutil.rmtree, db_dir, True)
    os.environ["CURATE_TEST_FO_DB"] = str(db_dir)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(db_dir)
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = str(db_dir / "datasets")
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    import fiftyone as fo

    assert str(fo.config.database_dir) == str(db_dir), "FiftyOne did not take the temporary database folder"
    return fo


CRASH_DECODER = Path(__file__).resolve().parent / "crash_decoder"
# Never import these into pytest's own processes (--doctest-modules would): they crash their process on purpose.
collect_ignore = ["crash_decoder", "kill_points", "kill_at_replace"]


class CrashingDecoder:
    """Makes worker processes started while it is on crash while decoding a JPEG whose
    comment names a fault (see tests/crash_decoder/sitecustomize.py). The test's own
    process is never affected: the hook is loaded only at a process's start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.on()

    def on(self) -> None:
        self.monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(CRASH_DECODER), *self._others()]))

    def off(self) -> None:
        """The decoder is fixed: workers started from now on decode every file."""
        self.monkeypatch.setenv("PYTHONPATH", os.pathsep.join(self._others()))

    @staticmethod
    def _others() -> list[str]:
        return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(CRASH_DECODER)]

    @staticmethod
    def save_poison(img: Any, path: Path, fault: str) -> Path:
        """Write ``img`` as a JPEG that crashes its decoder (``fault``: ``segfault`` or ``sigkill``)."""
        img.convert("RGB").save(path, quality=85, comment=f"curate-test: {fault}".encode())
        return path


@pytest.fixture()
def crashing_decoder(monkeypatch: pytest.MonkeyPatch) -> CrashingDecoder:
    """A :class:`CrashingDecoder`, on."""
    return CrashingDecoder(monkeypatch)


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (rather than hanging the suite) if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"still running after {seconds} s: hung")
    if "error" in box:
        raise box["error"]
    return box.get("value")
