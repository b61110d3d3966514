"""Walking sources: names the file system gives that the manifest cannot hold, and files that are not files.

A zip made on Windows with a Korean code page and unpacked on Linux leaves CP949 bytes in names; they are not
UTF-8, so they can be neither stored in the (UTF-8) manifest nor opened later from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from curate.walk import printable, walk

CP949_NAME = "사진".encode("cp949") + b".jpg"  # b'\xbb\xe7\xc1\xf8.jpg'
CP949_DIR = "고양이".encode("cp949")


def make_source(root: Path, skimage_dir: Path) -> Path:
    src = root / "src"
    for cls in ("cat", "dog"):
        (src / cls).mkdir(parents=True)
    photo = Image.open(skimage_dir / "chelsea.png").convert("RGB")
    photo.save(src / "cat" / "ok.jpg", quality=90)
    photo.save(src / "cat" / "고양이 사진.jpg", quality=85)  # valid UTF-8 Korean: kept
    photo.rotate(90, expand=True).save(src / "dog" / "ok.jpg", quality=90)
    shutil.copy(src / "cat" / "ok.jpg", os.fsencode(src / "cat") + b"/" + CP949_NAME)
    bad_dir = os.fsencode(src) + b"/" + CP949_DIR
    os.mkdir(bad_dir)
    photo.resize((200, 133)).save(os.fsdecode(bad_dir + b"/a.jpg"))
    os.mkfifo(src / "dog" / "pipe.jpg")  # opening it would block forever
    # links whose own name, or whose target's name outside the source, is not UTF-8
    outside = os.fsencode(root) + b"/" + CP949_NAME
    shutil.copy(src / "cat" / "ok.jpg", outside)
    os.symlink(outside, os.fsencode(src / "dog") + b"/" + CP949_NAME)
    os.symlink(outside, src / "dog" / "link_out.jpg")
    return src


def test_printable_is_identity_for_utf8_and_escapes_the_rest() -> None:
    assert printable("사진 한 장.jpg") == "사진 한 장.jpg"
    assert printable(os.fsdecode(b"cat/" + CP949_NAME)) == "cat/\\xbb\\xe7\\xc1\\xf8.jpg"


def test_walk_flags_bad_names_and_skips_fifos(tmp_path: Path, skimage_dir: Path) -> None:
    src = make_source(tmp_path, skimage_dir)
    files = {f.rel_path: f for f in walk(src)}
    bad = files["cat/\\xbb\\xe7\\xc1\\xf8.jpg"]
    assert (bad.reason, bad.path) == ("bad_filename", str(src / "cat" / "\\xbb\\xe7\\xc1\\xf8.jpg"))
    assert files["\\xb0\\xed\\xbe\\xe7\\xc0\\xcc/a.jpg"].reason == "bad_filename"
    assert files["cat/고양이 사진.jpg"].reason is None
    assert "dog/pipe.jpg" not in files
    assert files["dog/\\xbb\\xe7\\xc1\\xf8.jpg"].reason == "outside_source"
    out_link = files["dog/link_out.jpg"]
    assert out_link.reason == "outside_source"
    assert out_link.detail == f"link points to {tmp_path}/\\xbb\\xe7\\xc1\\xf8.jpg; use --follow-links"
    for f in files.values():  # everything the walk yields can be stored as UTF-8
        f.path.encode("utf-8")
        f.rel_path.encode("utf-8")


def test_ingest_records_bad_names_and_goes_on(tmp_path: Path, skimage_dir: Path) -> None:
    src = make_source(tmp_path, skimage_dir)
    ws = tmp_path / "ws"
    exe = Path(sys.executable).with_name("curate")
    p = subprocess.run([str(exe), "ingest", str(src), "--into", str(ws), "--json"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    m = pd.read_parquet(ws / "manifest.parquet").set_index("rel_path")
    assert m.loc["cat/\\xbb\\xe7\\xc1\\xf8.jpg", ["status", "reason", "label"]].tolist() == [
        "dropped", "bad_filename", "cat"]
    assert m.loc["\\xb0\\xed\\xbe\\xe7\\xc0\\xcc/a.jpg", ["status", "reason", "label"]].tolist() == [
        "dropped", "bad_filename", "\\xb0\\xed\\xbe\\xe7\\xc0\\xcc"]
    assert "convmv" in m.loc["cat/\\xbb\\xe7\\xc1\\xf8.jpg", "detail"]
    assert (m.loc[["cat/ok.jpg", "cat/고양이 사진.jpg", "dog/ok.jpg"], "status"] == "kept").all()
    assert len(m) == 7  # the FIFO is not a row; the run record lists it
    assert (m.loc[["dog/\\xbb\\xe7\\xc1\\xf8.jpg", "dog/link_out.jpg"], "reason"] == "outside_source").all()
    assert json.loads(p.stdout)["reason"]["bad_filename"] == 2
    (run,) = [json.loads(r.read_text()) for r in (ws / "runs").glob("*-ingest-*.json")]
    assert any("dog/pipe.jpg" in s for s in run.get("skipped", []))
    # later commands read the workspace without tripping on the escaped names
    for cmd in (["status", str(ws)], ["export", str(ws), "--format", "folder", "--out", str(tmp_path / "out")]):
        q = subprocess.run([str(exe), *cmd], capture_output=True, text=True, timeout=300)
        assert q.returncode == 0, q.stderr
    exported = sorted(f.relative_to(tmp_path / "out").parent.as_posix() for f in (tmp_path / "out").rglob("*.jpg"))
    assert exported == ["train/cat", "train/cat", "train/dog"]  # the three kept photos, nothing else
