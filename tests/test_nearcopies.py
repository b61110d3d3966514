"""curate.nearcopies: the search dedupe and check share, over a table of ingested rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import skimage
from PIL import Image

from curate.nearcopies import DedupeOptions, near_copy_pairs
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace


def _rows(tmp_path: Path) -> pd.DataFrame:
    src = tmp_path / "src"
    src.mkdir()
    bundled = Path(skimage.__file__).parent / "data"  # skimage.data_dir is a download cache once pooch is installed
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        Image.open(bundled / name).convert("RGB").save(src / f"{Path(name).stem}.jpg", quality=92)
    cat = Image.open(bundled / "chelsea.png").convert("RGB")
    cat.crop((0, 60, 300, 300)).rotate(12, expand=False).save(src / "cat_part.jpg", quality=88)  # ~50%, turned
    ws = Workspace.create(str(tmp_path / "ws"))
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="s", layout="flat")], workers=1))
    return pd.read_parquet(ws.root / "manifest.parquet").sort_values("rel_path").reset_index(drop=True)


def test_a_turned_half_crop_is_found_by_the_keypoints_and_verified(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    names = rows["rel_path"].tolist()
    found = near_copy_pairs(rows, DedupeOptions(workers=1))
    pairs = {(names[a], names[b]) for a, b, ok in zip(found.a, found.b, found.accepted, strict=True) if ok}
    assert pairs == {("cat_part.jpg", "chelsea.jpg")}
    k = [i for i, (a, b) in enumerate(zip(found.a, found.b, strict=True))
         if {names[a], names[b]} == {"cat_part.jpg", "chelsea.jpg"}][0]
    assert found.pairs["kind"].iloc[k] == "copy"
    who, region, surround = found.geometry[k]
    assert surround == "picture" and len(region) == 4  # the crop lies inside the photo, which goes on around it
    # Without the keypoint search the hashes alone do not see it.
    hashes_only = near_copy_pairs(rows, DedupeOptions(workers=1, copies=False))
    assert not any({names[a], names[b]} == {"cat_part.jpg", "chelsea.jpg"}
                   for a, b, ok in zip(hashes_only.a, hashes_only.b, hashes_only.accepted, strict=True) if ok)
