"""A tiny split/class/image export made from real photos of ../shared/data/faces_by_person.

Built here, not by ``curate export`` (developed in parallel), so these tests
depend only on the layout the folder and yolo-cls writers promise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# The four people with six or more photos; per person the four smallest files
# (fast to decode): the smallest goes to test, the next to val, two to train.
# scarlett/img47.jpg (WebP content, .jpg name) is not among them; tests that
# need it copy it in themselves.
CLASSES = ("angelina", "jack", "jennifer", "scarlett")
PER_CLASS = 4


def smallest(folder: Path, n: int) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda p: (p.stat().st_size, p.name))[:n]


def make_export(corpus: Path, dst: Path, classes: tuple[str, ...] = CLASSES, per_class: int = PER_CLASS,
                split_names: tuple[str, str, str] = ("train", "val", "test")) -> Path:
    """Copy real photos into ``dst`` as split/class/image; return ``dst``."""
    train, val, test = split_names
    for cls in classes:
        for i, f in enumerate(smallest(corpus / "faces_by_person" / cls, per_class)):
            split = test if i == 0 else val if i == 1 else train
            (dst / split / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / split / cls / f.name)
    return dst


@pytest.fixture(scope="session")
def tiny_export(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only for tests: 4 classes x (2 train, 1 val, 1 test). Copy it before changing it."""
    return make_export(corpus, tmp_path_factory.mktemp("export") / "faces")


@pytest.fixture()
def export_copy(tiny_export: Path, tmp_path: Path) -> Path:
    """A private, writable copy of :func:`tiny_export`."""
    return Path(shutil.copytree(tiny_export, tmp_path / "export"))
