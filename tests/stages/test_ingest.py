"""`curate ingest`: layouts, per-file checks, duplicates, resume, safety."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.imageio import ProbeOptions
from curate.stages.ingest import IngestOptions, SourceSpec, ingest, sample_id_for
from curate.workspace import Workspace
from tests.conftest import tree_digest, within


def run_ingest(ws_dir: Path, *specs: SourceSpec, **kw) -> tuple[Workspace, pd.DataFrame, dict]:
    ws = Workspace.create(ws_dir)
    kw.setdefault("workers", 1)
    res = ws.run_stage("ingest", ingest, IngestOptions(list(specs), **kw))
    return ws, ws.read_manifest(), res.summary


def by_name(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.set_index("rel_path")


# -- bad files, derived from a real photo ------------------------------------

@pytest.fixture()
def messy(tmp_path, skimage_dir) -> Path:
    """A flat folder of real photos plus every bad case ingest must survive."""
    src = tmp_path / "messy"
    src.mkdir()
    photo = Image.open(skimage_dir / "chelsea.png").convert("RGB")  # 451x300
    photo.save(src / "good.jpg", quality=90)
    good = (src / "good.jpg").read_bytes()
    (src / "empty.jpg").write_bytes(b"")  # zero bytes
    (src / "error_page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")  # HTML named .jpg
    (src / "cut.jpg").write_bytes(good[: len(good) // 2])  # download stopped half way
    rng = np.random.default_rng(0)
    (src / "garbage.jpg").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())  # no header at all
    photo.save(src / "really_png.jpg", format="PNG")  # PNG named .jpg: kept
    (src / "notes.txt").write_text("shot on my phone\n")
    (src / "meta.json").write_text('{"a": 1}')
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 32)
    (src / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 60)
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._good.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    (src / ".hidden.jpg").write_bytes(good)
    photo.resize((40, 27)).save(src / "thumb.jpg")  # below --min-side 64
    photo.resize((1400, 80)).save(src / "banner.jpg")  # aspect 17.5
    photo.save(src / "사진 한 장.jpg", quality=80)  # Korean name with spaces
    photo.convert("CMYK").save(src / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(src / "palette.gif")
    arr16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(arr16).save(src / "deep16.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "alpha.png")
    photo.save(src / "photo.webp")
    photo.save(src / "photo.tiff")
    photo.save(src / "photo.bmp")
    import pillow_heif

    pillow_heif.register_heif_opener()
    photo.save(src / "phone.heic", quality=80)
    photo.save(src / "phone.avif", quality=60)
    # Stored sideways with EXIF orientation 6, as phones do.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(src / "rotated.jpg", exif=exif)
    shutil.copy(src / "good.jpg", src / "good_copy.jpg")  # exact duplicate
    # Links: inside (followed), outside (refused), dangling, and a loop.
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(src / "good.jpg", outside)
    os.symlink(src / "good.jpg", src / "link_inside.jpg")
    os.symlink(outside, src / "link_outside.jpg")
    os.symlink(src / "gone.jpg", src / "dangling.jpg")
    (src / "sub").mkdir()
    os.symlink(src, src / "sub" / "loop")
    return src


EXPECTED = {
    # file: (status, reason)
    "good.jpg": ("kept", None),
    "empty.jpg": ("dropped", "empty_file"),
    "error_page.jpg": ("dropped", "not_an_image"),
    "cut.jpg": ("dropped", "truncated"),
    "garbage.jpg": ("dropped", "unknown_format"),  # no decoder knows the bytes
    "really_png.jpg": ("kept", None),
    "notes.txt": ("dropped", "not_an_image"),
    "meta.json": ("dropped", "not_an_image"),
    ".DS_Store": ("dropped", "system_file"),
    "Thumbs.db": ("dropped", "system_file"),
    "__MACOSX/._good.jpg": ("dropped", "system_file"),
    ".hidden.jpg": ("dropped", "hidden"),
    "thumb.jpg": ("dropped", "too_small"),
    "banner.jpg": ("dropped", "bad_aspect"),
    "사진 한 장.jpg": ("kept", None),
    "cmyk.jpg": ("kept", None),
    "palette.gif": ("kept", None),
    "deep16.png": ("kept", None),
    "alpha.png": ("kept", None),
    "photo.webp": ("kept", None),
    "photo.tiff": ("kept", None),
    "photo.bmp": ("kept", None),
    "phone.heic": ("kept", None),
    "phone.avif": ("kept", None),
    "rotated.jpg": ("kept", None),
    "good_copy.jpg": ("dropped", "duplicate"),
    "link_outside.jpg": ("dropped", "outside_source"),
    "dangling.jpg": ("dropped", "broken_link"),
}


def test_every_bad_case_gets_its_reason_and_nothing_is_lost(tmp_path, messy):
    before = tree_digest(messy)
    _, m, summary = run_ingest(tmp_path / "ws", SourceSpec(messy))
    rows = by_name(m)
    for name, (status, reason) in EXPECTED.items():
        assert (rows.loc[name, "status"], rows.loc[name, "reason"]) == (status, reason), name
    # link_inside.jpg duplicates good.jpg byte for byte; one of the three is kept.
    trio = rows.loc[["good.jpg", "good_copy.jpg", "link_inside.jpg"]]
    assert (trio["status"] == "kept").sum() == 1
    # Every file under the source is a row (the loop is walked once): nothing silently lost.
    walked = {str(p.relative_to(messy)) for p in messy.rglob("*") if (p.is_file() or p.is_symlink())
              and "loop" not in p.parts}
    assert walked <= set(rows.index)
    assert summary["run"]["files"] == len(m)
    assert tree_digest(messy) == before, "a source file was changed"
    # details name what was found, never a Python object's address
    assert not m["detail"].dropna().str.contains(" object at 0x").any()
    assert rows.loc["garbage.jpg", "detail"].startswith("no image decoder recognises the .jpg file's bytes")


def test_recognised_by_content_and_sizes_as_displayed(tmp_path, messy):
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(messy))
    rows = by_name(m)
    assert rows.loc["really_png.jpg", "format"] == "PNG"
    assert rows.loc["phone.heic", "format"] == "HEIF"
    assert rows.loc["phone.avif", "format"] == "AVIF"
    assert rows.loc["cmyk.jpg", "mode"] == "CMYK"
    assert rows.loc["deep16.png", "mode"].startswith("I")
    # Stored 300x451 with orientation 6: displayed 451x300, like the upright original.
    assert rows.loc["rotated.jpg", "exif_orientation"] == 6
    assert (rows.loc["rotated.jpg", "width"], rows.loc["rotated.jpg", "height"]) == (451, 300)
    # Upright copy and sideways-stored copy hash alike once orientation is applied.
    from curate.hashing import hamming

    assert hamming(rows.loc["rotated.jpg", "phash"], rows.loc["good.jpg", "phash"]) <= 4
    # Every decodable image has hashes; undecodable ones have none.
    kept = m[m["status"] == "kept"]
    assert kept["phash"].notna().all() and kept["sha256"].notna().all()
    assert rows.loc["garbage.jpg", "phash"] is None


def test_thresholds_are_options(tmp_path, messy):
    opts = ProbeOptions(min_side_px=16, max_pixels=120_000, max_aspect=20)
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(messy), probe=opts)
    rows = by_name(m)
    assert rows.loc["thumb.jpg", "status"] == "kept"
    assert rows.loc["banner.jpg", "status"] == "kept"  # 1400x80 = 112,000 px, aspect 17.5
    assert rows.loc["good.jpg", "reason"] == "too_large"  # 451x300 = 135,300 px > 120,000
    assert "135300 px > --max-pixels 120000" in rows.loc["good.jpg", "detail"]


def test_decompression_bomb_is_not_decoded(tmp_path):
    src = tmp_path / "bomb"
    src.mkdir()
    # 20000x20000 of one colour compresses to a few hundred bytes of PNG: 400 MP.
    Image.new("L", (20000, 20000)).save(src / "bomb.png", optimize=True)
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(src))
    row = m.iloc[0]
    assert (row["reason"], row["width"], row["height"]) == ("too_large", 20000, 20000)


# -- layouts -----------------------------------------------------------------

def test_folder_of_class(tmp_path, corpus):
    _, m, summary = run_ingest(tmp_path / "ws", SourceSpec(corpus / "faces_by_person"))
    assert len(m) == 51 and (m["layout"] == "folder").all()
    counts = m[m["status"] == "kept"]["label"].value_counts()
    assert sorted(counts.tolist(), reverse=True) == [8, 7, 6, 6, 5, 5, 3, 2, 2, 2, 2, 2, 1]
    assert m["source"].unique().tolist() == ["faces_by_person"]
    assert summary["label"]["angelina"] == 8
    # The WebP file named .jpg is read by content.
    assert by_name(m).loc["scarlett/img47.jpg", "format"] == "WEBP"


def test_flat_crawl_of_real_photos(tmp_path, corpus):
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(corpus / "photos"))
    rows = by_name(m)
    assert len(m) == 62 and m["label"].isna().all()
    expect = {
        "imagededup_ukbench09268_corrupt.jpg": "unknown_format",  # garbage from byte 0
        "pillow_truncated_jpeg.jpg": "truncated",  # opens, fails on load
        "skimage_no_time_for_that_tiny.gif": "too_small",  # 14x25
        "cleanvision_image_604.png": "bad_aspect",  # 15754x1382
    }
    for name, reason in expect.items():
        assert rows.loc[name, "reason"] == reason, name
    # Byte-identical files: one kept per group, the others point at it.
    for group in (["imagededup_ukbench09380.jpg", "imagededup_ukbench09380.bmp", "imagededup_ukbench09380.png"],
                  ["cleanvision_image_142.png", "cleanvision_image_236.png"]):
        g = rows.loc[group]
        assert (g["status"] == "kept").sum() == 1
        keeper = g[g["status"] == "kept"]["sample_id"].iloc[0]
        assert (g[g["status"] == "dropped"]["duplicate_of"] == keeper).all()
        assert (g["dup_group"] == keeper).all()
    # EXIF orientation 6: displayed size is portrait-swapped.
    r = rows.loc["imagededup_ukbench09268.jpg"]
    assert r["exif_orientation"] == 6 and r["height"] > r["width"]
    assert rows.loc["pillow_pil_sample_cmyk.jpg", "status"] == "kept"
    assert rows.loc["imagededup_giphy.gif", "n_frames"] == 4


def test_split_class_layout_and_aliases(tmp_path, skimage_dir):
    src = tmp_path / "ds"
    for split, label, name in [("train", "cat", "chelsea.png"), ("valid", "cat", "chelsea.png"),
                               ("test", "cup", "coffee.png"), ("train", "cup", "coffee.png")]:
        d = src / split / label
        d.mkdir(parents=True, exist_ok=True)
        img = Image.open(skimage_dir / name).convert("RGB")
        img = img.rotate(5 * len(split))  # distinct bytes per split
        img.save(d / f"{split}_{Path(name).stem}.jpg")
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(src))
    got = sorted(zip(m["split"], m["label"], strict=True))
    assert got == [("test", "cup"), ("train", "cat"), ("train", "cup"), ("val", "cat")]


def test_flat_with_one_label(tmp_path, skimage_dir):
    src = tmp_path / "me"
    src.mkdir()
    shutil.copy(skimage_dir / "astronaut.png", src / "a.png")
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(src, label="me"))
    assert m["label"].tolist() == ["me"]


@pytest.mark.parametrize(
    "name, text",
    [
        # Kaggle style with a header and bare ids (no extension)
        ("labels.csv", "id,label\nchelsea,cat\ncoffee,cup\nmissing,cup\n"),
        # no header, extensions given
        ("labels.csv", "chelsea.png,cat\ncoffee.png,cup\nmissing.png,cup\n"),
        # TXT list separated by spaces
        ("labels.txt", "chelsea.png cat\ncoffee.png cup\nmissing.png cup\n"),
    ],
)
def test_csv_and_txt_lists(tmp_path, skimage_dir, name, text):
    src = tmp_path / "list"
    src.mkdir()
    for f in ("chelsea.png", "coffee.png"):
        shutil.copy(skimage_dir / f, src / f)
    (src / name).write_text(text)
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(src / name))
    rows = m.set_index(m["path"].map(lambda p: Path(p).stem))
    assert rows.loc["chelsea", "label"] == "cat" and rows.loc["coffee", "label"] == "cup"
    assert rows.loc["missing", "reason"] == "missing_file"
    assert (m["layout"] == "csv").all()
    # A row with no file has no mtime; the others keep theirs to the nanosecond
    # (a float column on the way used to round them).
    assert pd.isna(rows.loc["missing", "mtime_ns"])
    assert rows.loc["chelsea", "mtime_ns"] == os.stat(src / "chelsea.png").st_mtime_ns


# -- duplicates across sources -------------------------------------------------

def test_exact_duplicates_across_sources_follow_priority(tmp_path, skimage_dir):
    a, b = tmp_path / "kaggle", tmp_path / "crawl"
    for d in (a, b):
        d.mkdir()
        shutil.copy(skimage_dir / "coffee.png", d / "coffee.png")
    _, m, _ = run_ingest(tmp_path / "ws", SourceSpec(a), SourceSpec(b))
    assert m.set_index("source").loc["kaggle", "status"] == "kept"  # first source wins
    _, m2, _ = run_ingest(tmp_path / "ws2", SourceSpec(a), SourceSpec(b), priority=["crawl"])
    assert m2.set_index("source").loc["crawl", "status"] == "kept"
    assert m2.set_index("source").loc["kaggle", "duplicate_of"] == sample_id_for("crawl", "coffee.png")


def test_label_conflicts_are_flagged_not_resolved(tmp_path, skimage_dir):
    src = tmp_path / "src"
    for label in ("cat", "dog"):
        (src / label).mkdir(parents=True)
        shutil.copy(skimage_dir / "chelsea.png", src / label / "x.png")
    _, m, summary = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert m["label_conflict"].all() and summary["label_conflicts"] == 2
    assert sorted(m["label"]) == ["cat", "dog"]  # labels untouched


# -- re-runs, resume, concurrency --------------------------------------------

def test_rerun_adds_only_new_or_changed_files(tmp_path, skimage_dir):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("chelsea.png", "coffee.png", "camera.png"):
        shutil.copy(skimage_dir / f, src / f)
    ws, m1, s1 = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert s1["run"]["probed"] == 3
    _, m2, s2 = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert s2["run"]["probed"] == 0 and s2["run"]["reused"] == 3
    pd.testing.assert_frame_equal(m1, m2)
    shutil.copy(skimage_dir / "rocket.jpg", src / "rocket.jpg")  # new
    Image.open(skimage_dir / "brick.png").save(src / "camera.png")  # changed content
    _, m3, s3 = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert s3["run"]["probed"] == 2 and s3["run"]["new"] == 1
    assert len(m3) == 4
    (src / "coffee.png").unlink()  # gone from the source: recorded, not forgotten
    _, m4, _ = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert by_name(m4).loc["coffee.png", "reason"] == "missing_file"
    assert len(ws.runs()) == 4


def test_thresholds_change_without_decoding_again(tmp_path, messy):
    run_ingest(tmp_path / "ws", SourceSpec(messy))
    _, m, s = run_ingest(tmp_path / "ws", SourceSpec(messy), probe=ProbeOptions(min_side_px=16))
    assert by_name(m).loc["thumb.jpg", "status"] == "kept"
    assert s["run"]["probed"] == 0


def _make_many(dst: Path, skimage_dir: Path, n: int) -> None:
    dst.mkdir(parents=True)
    base = [Image.open(skimage_dir / f).convert("RGB") for f in ("astronaut.png", "coffee.png", "chelsea.png")]
    for i in range(n):
        img = base[i % 3].rotate(i * 7 % 360).resize((900 + i % 50, 700))
        img.save(dst / f"img_{i:04d}.jpg", quality=85)


RESUME_SCRIPT = """
import sys
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
ws = Workspace.create(sys.argv[1])
ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(sys.argv[2], name="src")], workers=1, checkpoint_every=10))
"""


def test_resume_after_sigkill_gives_the_same_manifest(tmp_path, skimage_dir):
    src = tmp_path / "src"
    _make_many(src, skimage_dir, 150)
    ws_dir = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(ws_dir), str(src)])
    partial = ws_dir / ".partial" / "ingest"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(partial.glob("chunk-*.parquet"))) < 2:
        if proc.poll() is not None:
            pytest.fail("ingest finished before it could be killed; make the source bigger")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ws_dir / "manifest.parquet").exists()
    done_before = len(pd.concat([pd.read_parquet(p) for p in partial.glob("chunk-*.parquet")]))
    ws, resumed, s = run_ingest(ws_dir, SourceSpec(src, name="src"))
    assert s["run"]["reused"] >= done_before > 0  # checkpointed work was not decoded again
    _, clean, _ = run_ingest(tmp_path / "ws_clean", SourceSpec(src, name="src"))
    pd.testing.assert_frame_equal(resumed, clean)
    assert not partial.exists()


def test_concurrent_run_is_refused_with_a_clear_message(tmp_path, skimage_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(skimage_dir / "coffee.png", src)
    ws = Workspace.create(tmp_path / "ws")
    with ws.lock():
        result = CliRunner().invoke(cli, ["ingest", str(src), "--into", str(ws.root)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {ws.root}: another curate command is changing this workspace "
        "(wait for it to finish; the lock is released when that process ends)\n"
    )
    assert not ws.manifest_path.exists()


# -- CLI -----------------------------------------------------------------------

def test_cli_errors_name_the_fix(tmp_path, skimage_dir):
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(skimage_dir), "--into", str(tmp_path / "ws"), "--layout", "parquet"])
    assert res.exit_code == 1
    assert res.output.startswith("Error: --layout: expected one of [")
    assert res.output.rstrip().endswith("found parquet")
    a, b = tmp_path / "a" / "imgs", tmp_path / "b" / "imgs"
    for d in (a, b):
        d.mkdir(parents=True)
        shutil.copy(skimage_dir / "coffee.png", d)
    assert runner.invoke(cli, ["ingest", str(a), "--into", str(tmp_path / "ws2")]).exit_code == 0
    res = runner.invoke(cli, ["ingest", str(b), "--into", str(tmp_path / "ws2")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {b}: source name: expected a new name or the same folder as before, "
                          f"found 'imgs', already used for {a} (pass --source NAME for a new source; "
                          f"if {a} moved here, run `curate relocate {tmp_path / 'ws2'} --source imgs={b}`)\n")


def test_installed_command_in_a_subprocess(tmp_path, skimage_dir):
    import json

    exe = Path(sys.executable).parent / "curate"
    out = subprocess.run([str(exe), "ingest", str(skimage_dir), "--into", str(tmp_path / "ws"), "--layout", "flat",
                          "--json", "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rows"] == summary["run"]["files"] > 20
    assert summary["status"]["kept"] >= 20
    status = subprocess.run([str(exe), "status", str(tmp_path / "ws")], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "status:" in status.stdout and "kept" in status.stdout


def test_parallel_and_serial_give_the_same_manifest(tmp_path, corpus):
    _, serial, _ = run_ingest(tmp_path / "ws1", SourceSpec(corpus / "faces_misc"), workers=1)
    _, parallel, _ = run_ingest(tmp_path / "ws2", SourceSpec(corpus / "faces_misc"), workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_demo_runs_on_bundled_photos_only(tmp_path):
    res = CliRunner().invoke(cli, ["demo", str(tmp_path / "demo"), "--json", "--workers", "1"])
    assert res.exit_code == 0, res.output
    import json

    s = json.loads(res.output)
    for reason in ("truncated", "too_small", "not_an_image", "empty_file", "system_file"):
        assert s["reason"].get(reason, 0) >= 1, reason
    assert s["reason"]["duplicate"] >= 2  # the exact copy and the resized, re-encoded one
    assert set(s["split"]) == {"train", "val", "test"}
    exported = [p for p in (tmp_path / "demo" / "export").rglob("*")
                if p.is_file() and p.name not in ("classes.txt", ".curate-export.json")]
    assert len(exported) == s["status"]["kept"]  # one image per kept row, next to the class list


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- official splits, and JSON next to images ------------------------------------------

def test_split_option_pins_a_source_and_is_remembered(tmp_path, skimage_dir):
    from curate.stages.split import SplitOptions, split

    train = tmp_path / "kaggle"
    val = tmp_path / "official_val"
    for folder, names in ((train, ("astronaut", "coffee", "chelsea", "rocket")), (val, ("camera", "moon"))):
        (folder / "objects").mkdir(parents=True)
        for n in names:
            shutil.copy(next(skimage_dir.glob(f"{n}.*")), folder / "objects")
    ws, m, _ = run_ingest(tmp_path / "ws", SourceSpec(train), SourceSpec(val, split="val"))
    assert m.groupby("source")["split"].apply(lambda s: sorted(set(s.dropna()))).to_dict() == {
        "kaggle": [], "official_val": ["val"]}
    assert m[m["source"] == "official_val"]["split_pinned"].all() and not m[m["source"] == "kaggle"]["split_pinned"].any()
    ws.run_stage("split", split, SplitOptions(resplit=True, ratios={"train": 0.5, "val": 0.0, "test": 0.5}))
    m = ws.read_manifest()
    assert set(m[m["source"] == "official_val"]["split"]) == {"val"}
    # a re-run without --split keeps the pin (sources.json); --split auto forgets it
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(val)], workers=1))
    assert ws.read_manifest().query("source == 'official_val'")["split_pinned"].all()
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(val, split="auto")], workers=1))
    assert not ws.read_manifest().query("source == 'official_val'")["split_pinned"].any()


def test_split_option_refuses_an_unknown_split(tmp_path, skimage_dir):
    res = CliRunner().invoke(cli, ["ingest", str(skimage_dir), "--into", str(tmp_path / "ws"), "--split", "holdout",
                                   "--layout", "flat", "--workers", "1"])
    assert res.exit_code == 1
    assert res.output == "Error: --split: expected train, val, test or auto, found holdout\n"


def test_json_next_to_images_names_the_likely_layout(tmp_path, skimage_dir):
    src = tmp_path / "waste"
    (src / "bottle").mkdir(parents=True)
    shutil.copy(skimage_dir / "coffee.png", src / "bottle" / "a.png")
    (src / "bottle" / "a.json").write_text('{"objects": [{"name": "pet", "rect": [1, 2, 30, 40]}]}')
    _, m, summary = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert m.set_index("rel_path").loc["bottle/a.json", "reason"] == "not_an_image"
    assert ("waste: 1 annotation-like files sit among the images (e.g. bottle/a.json) and were read as files, not "
            "as boxes: if they describe the images, ingest again with --layout json --json-mapping FILE "
            "(per-image JSON boxes, docs/formats.md)") in summary["warnings"]


def test_a_file_removed_before_its_read_is_missing_not_unreadable(tmp_path, skimage_dir):
    from curate.imageio import probe_file

    gone = tmp_path / "gone.jpg"
    shutil.copy(skimage_dir / "rocket.jpg", gone)
    gone.unlink()  # listed by the walk, deleted before the worker read it
    res = probe_file(str(gone), ProbeOptions())
    assert (res["reason"], res["detail"]) == ("missing_file", "the file was removed while curate ran")


# -- a worker process that dies ------------------------------------------------


def test_a_file_that_crashes_its_worker_is_dropped_and_the_rest_is_unchanged(tmp_path, skimage_dir,
                                                                             crashing_decoder):
    """A real segfault and a real SIGKILL inside the JPEG decoder of a pool worker (issue 13, issue 18):
    the run finishes, each poison file is `worker_crashed` after the bounded retries, every other row
    equals an undisturbed run's, and a re-run (decoder fixed) tries the crashed files again."""
    src = tmp_path / "src"
    _make_many(src, skimage_dir, 40)
    photo = Image.open(skimage_dir / "astronaut.png")
    crashing_decoder.save_poison(photo.resize((640, 640)), src / "poison_segv.jpg", "segfault")
    crashing_decoder.save_poison(photo.resize((600, 640)), src / "poison_kill.jpg", "sigkill")
    spec = SourceSpec(src, name="src")
    _, crashed, summary = within(300, lambda: run_ingest(tmp_path / "ws", spec, workers=2))  # no hang
    rows = by_name(crashed)
    for name, signame in (("poison_segv.jpg", "SIGSEGV"), ("poison_kill.jpg", "SIGKILL")):
        assert (rows.loc[name, "status"], rows.loc[name, "reason"]) == ("dropped", "worker_crashed")
        assert rows.loc[name, "detail"] == f"worker process killed by signal {11 if signame == 'SIGSEGV' else 9} " \
                                           f"({signame}) (3 attempts)"
        assert pd.isna(rows.loc[name, "sha256"]) and rows.loc[name, "file_size"] > 0
    assert summary["reason"]["worker_crashed"] == 2

    crashing_decoder.off()  # the decoder is fixed
    _, clean, _ = run_ingest(tmp_path / "ws_clean", spec, workers=2)
    poison = clean["rel_path"].isin(["poison_segv.jpg", "poison_kill.jpg"])
    assert (clean.loc[poison, "status"] == "kept").all()
    others = crashed[~crashed["rel_path"].isin(["poison_segv.jpg", "poison_kill.jpg"])]
    pd.testing.assert_frame_equal(others.reset_index(drop=True), clean[~poison].reset_index(drop=True))

    _, again, s2 = run_ingest(tmp_path / "ws", spec, workers=2)
    assert s2["run"]["probed"] == 2  # only the crashed files are decoded again
    pd.testing.assert_frame_equal(again, clean)


def _pool_workers(pid: int) -> list[int]:
    """Pids of the spawn pool workers among ``pid``'s children (not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return out


def test_a_worker_killed_from_outside_does_not_hang_the_installed_command(tmp_path, skimage_dir):
    """Issue 13's case: SIGKILL one worker of a running `curate ingest`, as the out-of-memory killer does.
    The command finishes, and since the file it was on decodes fine when tried again, the manifest equals
    an undisturbed run's."""
    src = tmp_path / "src"
    _make_many(src, skimage_dir, 600)
    exe = Path(sys.executable).parent / "curate"
    proc = subprocess.Popen([str(exe), "ingest", str(src), "--into", str(tmp_path / "ws"), "--source", "src",
                             "--workers", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        workers = _pool_workers(proc.pid)
        if len(workers) == 2:
            time.sleep(0.3)  # let them start and take work (a quiet machine probes 600 files in about 2 s)
            try:
                os.kill(workers[0], signal.SIGKILL)
                victim = workers[0]
            except ProcessLookupError:  # that worker was already replaced or gone: try the next one
                pass
        time.sleep(0.01)
    assert victim is not None, "ingest finished before a worker could be killed; make the source bigger"
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("curate ingest hung after one of its workers was killed")
    assert proc.returncode == 0, err
    assert json.loads(out)["run"]["files"] == 600
    _, clean, _ = run_ingest(tmp_path / "ws_clean", SourceSpec(src, name="src"), workers=2)
    pd.testing.assert_frame_equal(Workspace.open(tmp_path / "ws").read_manifest(), clean)


# -- a failed ingest leaves no debris (issue 17) -------------------------------

@pytest.fixture()
def bad_list(tmp_path) -> Path:
    """A file named .csv holding bytes that are not text (a download that went wrong), in a folder of its own
    (the folder of a list is its source: a workspace never goes inside it)."""
    path = tmp_path / "lists" / "labels.csv"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize("case", [
    "bad_layout",  # --layout names no format
    "unreadable_list",  # a list that is not UTF-8 text
    "second_source_fails",  # the first source is fine, the second raises a CurateError
])
def test_a_failed_first_ingest_leaves_no_workspace(tmp_path, skimage_dir, bad_list, case):
    ws = tmp_path / "new" / "ws"
    args = {"bad_layout": [str(skimage_dir), "--layout", "nope"],
            "unreadable_list": [str(bad_list), "--layout", "csv"],
            "second_source_fails": [str(skimage_dir), str(bad_list)]}[case]
    result = CliRunner().invoke(cli, ["ingest", *args, "--into", str(ws), "--workers", "1"])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert not (tmp_path / "new").exists()


def test_a_failed_first_ingest_into_an_empty_folder_leaves_it_empty(tmp_path, bad_list):
    (tmp_path / "ws").mkdir()
    result = CliRunner().invoke(cli, ["ingest", str(bad_list), "--into", str(tmp_path / "ws"), "--layout", "csv"])
    assert result.output == (f"Error: {bad_list}: expected UTF-8 text, found undecodable byte at offset 1 "
                             "(re-save the list as UTF-8)\n")
    assert list((tmp_path / "ws").iterdir()) == []


def test_a_failed_later_ingest_leaves_the_workspace_as_it_was(tmp_path, skimage_dir, bad_list):
    ws, _, _ = run_ingest(tmp_path / "ws", SourceSpec(skimage_dir, name="sk", layout="flat"))
    before = tree_digest(ws.root)
    for args in (["--layout", "nope"], []):
        result = CliRunner().invoke(cli, ["ingest", str(bad_list), "--into", str(ws.root), "--workers", "1", *args])
        assert result.exit_code == 1
    assert tree_digest(ws.root) == before
    assert list(json.loads((ws.root / "sources.json").read_text())) == ["sk"]


def _photo_source(root: Path, skimage_dir: Path) -> Path:
    for cls, names in {"cat": ["chelsea.png", "coffee.png"], "space": ["astronaut.png", "rocket.jpg"]}.items():
        (root / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(skimage_dir / n, root / cls / n)
    (root / "list.csv").write_text("file,label\ncat/chelsea.png,cat\nspace/rocket.jpg,space\n")
    return root


@pytest.mark.parametrize("given, into", [
    ("src", "src/ws"),  # the workspace inside the source folder
    ("src/list.csv", "src/ws"),  # ... inside the folder of a list given as the source
    ("src", "src/cat/ws"),  # ... deeper down
])
def test_a_workspace_inside_a_source_is_refused_and_nothing_is_written(tmp_path, skimage_dir, given, into):
    src = _photo_source(tmp_path / "src", skimage_dir)
    before = tree_digest(src)
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / given), "--into", str(tmp_path / into)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {src}: expected a workspace outside the source, found the workspace "
                          f"{tmp_path / into} inside it (choose an --into folder outside {src})\n")
    assert tree_digest(src) == before and not (tmp_path / into).exists()


def test_a_source_holding_the_workspace_or_inside_it_is_refused(tmp_path, skimage_dir):
    _photo_source(tmp_path / "data" / "src", skimage_dir)
    ws, m, _ = run_ingest(tmp_path / "data" / "ws", SourceSpec(tmp_path / "data" / "src"))
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(tmp_path / "data"), "--into", str(ws.root)])  # holds ws/objects/...
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'data'}: expected a workspace outside the source, found the "
                          f"workspace {ws.root} inside it (choose an --into folder outside {tmp_path / 'data'})\n")
    res = runner.invoke(cli, ["ingest", str(ws.root / "objects"), "--into", str(ws.root)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {ws.root / 'objects'}: expected a source outside the workspace, found a path "
                          f"inside the workspace {ws.root} (curate never reads its own files as a source)\n")
    assert ws.read_manifest().equals(m)


def test_follow_links_never_walks_into_a_workspace(tmp_path, skimage_dir):
    """A link to the workspace (or to a file in it) inside a source: curate would ingest itself."""
    src = _photo_source(tmp_path / "src", skimage_dir)
    (src / "list.csv").unlink()
    ws, m, _ = run_ingest(tmp_path / "ws", SourceSpec(src))
    assert len(m) == 4
    # give the workspace files of its own: an object, as faces/square/balance write them
    obj = ws.objects_dir / "ab" / ("ab" * 32 + ".png")
    obj.parent.mkdir(parents=True)
    shutil.copy(skimage_dir / "horse.png", obj)
    other = Workspace.create(src / "space" / "old-ws")  # someone's workspace left inside the data
    shutil.copy(skimage_dir / "moon.png", other.objects_dir / "moon.png")
    os.symlink(ws.root, src / "ws-link")
    os.symlink(obj, src / "cat" / "linked.png")
    ws, m, _ = run_ingest(tmp_path / "ws", SourceSpec(src), follow_links=True)
    assert sorted(m["rel_path"]) == ["cat/chelsea.png", "cat/coffee.png", "cat/linked.png", "space/astronaut.png",
                                     "space/rocket.jpg"]
    linked = m.set_index("rel_path").loc["cat/linked.png"]
    assert (linked["status"], linked["reason"]) == ("dropped", "outside_source")
    assert linked["detail"] == f"link points into the curate workspace {ws.root}, never a source"


def test_images_dir_is_placed_as_a_source_is(tmp_path, skimage_dir):
    """--images-dir is read like a source: one that holds the workspace, or lies in it (WS/objects: curate's
    own derived images read back as photos), is refused like a source there, before anything is written."""
    src = _photo_source(tmp_path / "src", skimage_dir)
    ws, _, _ = run_ingest(tmp_path / "ws", SourceSpec(src))
    before = sorted(p.name for p in (tmp_path / "ws").rglob("*"))
    for images_dir, message in ((ws.root / "objects", f"{ws.root / 'objects'}: expected a source outside the workspace"),
                                (tmp_path, f"{tmp_path}: expected a workspace outside the source")):
        res = CliRunner().invoke(cli, ["ingest", str(src / "list.csv"), "--into", str(ws.root), "--images-dir",
                                       str(images_dir)])
        assert res.exit_code == 1 and res.output.startswith(f"Error: {message}"), res.output
    assert sorted(p.name for p in (tmp_path / "ws").rglob("*")) == before
