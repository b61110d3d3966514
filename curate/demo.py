"""``curate demo``: a small messy source made from photos bundled with
scikit-image, curated end to end (ingest, dedupe, split, export). Needs no
file from outside installed packages.

The messy source (``FOLDER/messy``) is a folder-of-class dump with the usual
problems: an exact copy, a resized and re-encoded near-copy, a truncated JPEG,
a thumbnail, an HTML page saved as ``.jpg``, an empty file, a PNG named
``.jpg``, an EXIF-rotated photo and a ``.DS_Store``.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from curate.errors import CurateError

# (class, skimage file) pairs. All are bundled in the scikit-image wheel.
DEMO_IMAGES = [
    ("animals", "chelsea.png"), ("animals", "astronaut.png"),
    ("objects", "coffee.png"), ("objects", "rocket.jpg"), ("objects", "motorcycle_left.png"),
    ("textures", "brick.png"), ("textures", "grass.png"), ("textures", "gravel.png"),
    ("scenes", "camera.png"), ("scenes", "hubble_deep_field.jpg"), ("scenes", "coins.png"),
]


def bundled_photos_dir() -> Path:
    """The folder of photos the scikit-image wheel ships (``skimage/data``: astronaut.png, chelsea.png, ...).

    Not ``skimage.data_dir``: where pooch is installed (``curate[faces]`` brings it, for the face models) that
    names scikit-image's download cache, which holds nothing until each file has been fetched.

        >>> (bundled_photos_dir() / "chelsea.png").is_file()
        True
    """
    import skimage.data

    return Path(skimage.data.__file__).parent


def build_messy_source(root: Path) -> Path:
    """Write the messy demo source under ``root``; return its path."""
    try:
        data = bundled_photos_dir()
    except ImportError as e:
        from curate.errors import CurateError

        raise CurateError("", field="curate demo", expected="scikit-image, whose bundled photos the demo uses",
                          found="it is not installed", hint="pip install 'curate[demo]'") from e

    src = root / "messy"
    if src.exists():
        shutil.rmtree(src)
    for label, name in DEMO_IMAGES:
        d = src / label
        d.mkdir(parents=True, exist_ok=True)
        Image.open(data / name).convert("RGB").save(d / (Path(name).stem + ".jpg"), quality=90)
    # An exact copy in another class folder's neighbour (a second crawl).
    shutil.copy(src / "animals" / "chelsea.jpg", src / "animals" / "chelsea (1).jpg")
    # A near-copy: resized and re-encoded at low quality.
    Image.open(src / "objects" / "coffee.jpg").resize((300, 200)).save(src / "objects" / "coffee_small.jpg", quality=40)
    # A truncated JPEG: the download stopped half way.
    raw = (src / "objects" / "rocket.jpg").read_bytes()
    (src / "objects" / "rocket_partial.jpg").write_bytes(raw[: len(raw) // 2])
    # A thumbnail.
    Image.open(data / "astronaut.png").convert("RGB").resize((48, 48)).save(src / "animals" / "astronaut_thumb.jpg")
    # An HTML error page saved with an image name, an empty file, OS junk.
    (src / "scenes" / "download.jpg").write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    (src / "scenes" / "empty.jpg").write_bytes(b"")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    # A PNG named .jpg (kept: recognised by content).
    Image.open(data / "page.png").save(src / "textures" / "page.jpg", format="PNG")
    # A phone photo stored sideways with EXIF orientation 6.
    sideways = Image.open(data / "motorcycle_right.png").convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    sideways.save(buf, format="JPEG", exif=exif, quality=90)
    (src / "objects" / "motorcycle_phone.jpg").write_bytes(buf.getvalue())
    return src


def run_demo(folder: Path, *, workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Build the messy source, then run the main job into ``FOLDER/workspace``:
    ingest -> dedupe -> split 8:1:1 -> export (folder layout) to ``FOLDER/export``.
    Returns the workspace summary, with each step's own summary under ``steps``."""
    from curate.stages.dedupe import DedupeOptions, dedupe
    from curate.stages.export import ExportOptions, export
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.stages.split import SplitOptions, split
    from curate.summary import summarize
    from curate.workspace import Workspace

    folder = Path(folder).absolute()
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "workspace" / "curate.json").is_file():
        # the demo replaces FOLDER/source, FOLDER/workspace and FOLDER/export: only in a folder it made
        raise CurateError("", file=folder, expected="a new or empty folder, or one made by curate demo",
                          found=f"a folder with {sum(1 for _ in folder.iterdir())} entries",
                          hint="choose another FOLDER")
    folder.mkdir(parents=True, exist_ok=True)
    src = build_messy_source(folder)
    ws_dir = folder / "workspace"
    if ws_dir.exists():
        shutil.rmtree(ws_dir)
    ws = Workspace.create(ws_dir)
    steps: dict[str, Any] = {}
    res = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, "messy")], workers=workers, progress=progress))
    steps["ingest"] = res.summary["run"]
    res = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=workers))
    steps["dedupe"] = {k: v for k, v in res.summary.items() if k not in ("status", "reason", "label", "split", "source")}
    res = ws.run_stage("split", split, SplitOptions(seed=0))
    steps["split"] = "8:1:1 by label, duplicate groups kept together"
    res = ws.run_stage("export", export, ExportOptions(format="folder", out=folder / "export", overwrite=True))
    steps["export"] = str(folder / "export")
    summary = summarize(ws.read_manifest())
    summary["steps"] = steps
    return summary
