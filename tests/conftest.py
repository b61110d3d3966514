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
from pathlib import Path

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
    import skimage

    return Path(skimage.data_dir)


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
