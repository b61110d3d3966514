"""curate.faces.cache: detections kept per file content and settings; a damaged file costs a re-detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.faces.cache import CACHE_DIR, cache_path, load_cache, save_cache
from curate.faces.detect import DetectorConfig, Face, FaceDetector
from curate.imageio import load_display
from curate.models import resolve
from curate.workspace import Workspace


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


def test_real_detections_round_trip(ws: Workspace, skimage_dir: Path) -> None:
    models = {k: str(r.path) for k, r in resolve().items()}
    img = load_display(skimage_dir / "astronaut.png")
    with FaceDetector(models, DetectorConfig()) as det:
        found = det.detect(img)
    assert len(found) == 1
    cache = {("s1", "sha-a"): (img.size, found), ("s2", "sha-b"): ((10, 10), [])}
    save_cache(ws, "key1", cache)
    assert cache_path(ws, "key1") == ws.root / CACHE_DIR / "faces-key1.parquet"
    assert load_cache(ws, "key1") == cache  # the very same floats: rounded once, at detection
    assert load_cache(ws, "other") == {}  # other settings: nothing cached


@pytest.mark.parametrize("damage", [
    b"",  # an empty file (a run killed while writing it, before atomic writes)
    b"PAR1 not a parquet file",  # garbage
])
def test_a_damaged_cache_is_empty_not_an_error(ws: Workspace, damage: bytes) -> None:
    save_cache(ws, "k", {("s", "h"): ((5, 5), [Face((0, 0, 1, 1), 0.9, "short_range")])})
    cache_path(ws, "k").write_bytes(damage)
    assert load_cache(ws, "k") == {}

