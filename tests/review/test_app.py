"""curate.review.app without a database: the media files the App shows, and the port check.

The dataset, its views, pulling tags and the App itself run against a real mongod in
tests/stages/test_review.py.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from curate.errors import OptionError
from curate.review.app import MEDIA_DIR, AppAddress, _prune_media, check_port, media_for
from curate.schema import MANIFEST_COLUMNS, conform
from curate.workspace import Workspace

# find_spec, not importorskip: importing fiftyone at collection would make it connect before the
# fiftyone_env fixture points it at a temporary database (tests/conftest.py refuses that).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("fiftyone") is None,
                                reason="the review extra is not installed (pip install 'curate[review]')")


@pytest.fixture(autouse=True)
def _fiftyone_db(fiftyone_env):
    """media_for imports fiftyone.core.media, and importing fiftyone connects to a database: point it at the
    test database first (tests/conftest.py refuses a fiftyone imported before that, in any later test)."""
    return fiftyone_env


def row(sid: str, path: Path | str, **kw: object) -> dict[str, object]:
    return {"sample_id": sid, "source": "s", "path": str(path), "origin_path": str(path), "rel_path": Path(path).name,
            "layout": "flat", "status": "kept", "decided_by": "ingest", "sha256": f"{sid:0<64}", **kw}


def test_media_files_for_each_kind_of_row(tmp_path: Path, skimage_dir: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    src = tmp_path / "src"
    src.mkdir()
    cat = Image.open(skimage_dir / "chelsea.png").convert("RGB")
    cat.save(src / "cat.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned, as curate measures it
    cat.save(src / "turned.jpg", exif=exif)
    cat.save(src / "IMG_0001", format="JPEG")  # a JPEG without an extension: FiftyOne goes by the name
    m = conform(pd.DataFrame([
        row("a", src / "cat.png", format="PNG", width=451, height=300, file_size=10),
        row("b", src / "turned.jpg", format="JPEG", exif_orientation=6, width=300, height=451),
        row("c", src / "IMG_0001", format="JPEG", width=451, height=300),
        row("d", src / "gone.jpg", status="dropped", reason="unreadable", detail="cannot identify image file"),
    ]), MANIFEST_COLUMNS)
    media = media_for(ws, m)
    assert {k: v.kind for k, v in media.items()} == {"a": "original", "b": "preview", "c": "original",
                                                    "d": "placeholder"}
    assert media["a"].filepath == str(src / "cat.png") and media["a"].mime_type == "image/png"
    with Image.open(media["b"].filepath) as preview:  # upright, as boxes are stored
        assert (preview.format, preview.size) == ("JPEG", (300, 451)) == ("JPEG", (media["b"].width,
                                                                                  media["b"].height))
    link = Path(media["c"].filepath)
    assert link.suffix == ".jpg" and link.parent == ws.root / MEDIA_DIR
    assert link.read_bytes() == (src / "IMG_0001").read_bytes()  # the bytes served unchanged
    with Image.open(media["d"].filepath) as card:
        assert card.size == (media["d"].width, media["d"].height) == (480, 360)
    assert all(not Path(p).is_relative_to(src) for p in (media["b"].filepath, media["d"].filepath))
    # files no sample refers to any more are removed; the rest stay
    assert _prune_media(ws, [media["b"].filepath, media["c"].filepath]) == 1
    assert Path(media["b"].filepath).exists() and not Path(media["d"].filepath).exists()


def test_a_busy_port_is_refused_and_a_free_one_passes() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OptionError) as e:
            check_port("127.0.0.1", port)
        assert str(e.value) == (f"--port: expected a free port on 127.0.0.1, found {port}, in use by another "
                                "program (pass --port with another number)")
    check_port("127.0.0.1", port)  # closed again: free
    assert AppAddress("127.0.0.1", port).url == f"http://127.0.0.1:{port}/"
