"""`curate square`: pixels and boxes agree after pad/crop/stretch; lineage traces back; big images stay small."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.errors import OptionError
from curate.geometry import square_plan
from curate.lineage import trace
from curate.stages.check import CheckOptions, check
from curate.stages.faces import FacesOptions, faces
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.square import SquareOptions, make_square, parse_fill, square
from curate.workspace import Workspace
from tests.conftest import within

GREEN = (0, 255, 0)


def make_ws(root: Path, src: Path, **ingest_kw) -> Workspace:
    ws = Workspace.create(root)
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="src", layout="flat")], workers=1, **ingest_kw))
    return ws


def run_square(ws: Workspace, **kw) -> dict:
    kw.setdefault("workers", 1)
    return ws.run_stage("square", square, SquareOptions(**kw)).summary


def kept_children(m: pd.DataFrame, parent_id: str) -> pd.DataFrame:
    return m[(m["parent_id"] == parent_id) & (m["status"] == "kept")]


@pytest.mark.parametrize("text, expected", [
    ("black", (0, 0, 0)),
    ("white", (255, 255, 255)),
    ("edge", "edge"),  # replicate the border pixels
    ("mean", "mean"),  # the image's mean colour
    ("12, 34,56", (12, 34, 56)),  # R,G,B with spaces
])
def test_parse_fill(text, expected):
    assert parse_fill(text) == expected


@pytest.mark.parametrize("text", ["purple", "1,2", "0,0,256", "a,b,c"])
def test_parse_fill_rejects(text):
    with pytest.raises(OptionError, match="--fill: expected one of"):
        parse_fill(text)


# -- boxes follow the pixels ---------------------------------------------------------

@pytest.fixture()
def marked(tmp_path, skimage_dir) -> tuple[Workspace, dict[str, tuple[int, int, int, int]]]:
    """Real photos with solid green rectangles painted in, and those rectangles as annotation boxes."""
    src = tmp_path / "src"
    src.mkdir()
    astro = Image.open(skimage_dir / "astronaut.png").convert("RGB")
    rects = {
        "wide.png": (astro.crop((0, 100, 512, 400)), (200, 90, 320, 170)),  # 512x300, box near the centre
        "tall.png": (astro.crop((100, 0, 400, 512)), (37, 301, 121, 389)),  # 300x512, box off-centre
        "odd.jpg": (astro.crop((3, 7, 482, 390)).resize((479, 383)), (150, 120, 331, 271)),  # JPEG, odd sizes
    }
    boxes = {}
    for name, (img, box) in rects.items():
        img.paste(GREEN, box)
        img.save(src / name, **({"quality": 97} if name.endswith(".jpg") else {}))
        boxes[name] = box
    ws = make_ws(tmp_path / "ws", src)
    m = ws.read_manifest()
    ann = pd.DataFrame([{"sample_id": m.loc[m["rel_path"] == n, "sample_id"].iloc[0], "label": "mark",
                         "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "origin": "test"} for n, b in boxes.items()])
    ws.write_annotations(ann, m)
    return ws, boxes


def green_box(img: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box (xyxy, pixel edges) of the clearly green pixels."""
    a = np.asarray(img.convert("RGB")).astype(int)
    mask = (a[..., 1] > 160) & (a[..., 0] < 110) & (a[..., 2] < 110)
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("mode, size", [
    ("pad", 224),  # letterbox to the usual size
    ("pad", 97),  # odd size: uneven margins
    ("crop", 160),  # centre square
    ("stretch", 128),  # aspect changes
])
def test_boxes_cover_the_same_pixels_after_the_transform(marked, mode, size):
    ws, _ = marked
    summary = run_square(ws, size_px=size, mode=mode, fill="white")
    m = ws.read_manifest()
    ann = ws.read_annotations()
    squares = m[m["layout"] == "square"]
    assert len(squares) == 3 and (squares["width"] == size).all() and (squares["height"] == size).all()
    for _, row in squares.iterrows():
        boxes = ann[ann["sample_id"] == row["sample_id"]]
        with Image.open(row["path"]) as im:
            assert im.size == (size, size)
            if boxes.empty:  # only crop mode may cut a box off
                assert mode == "crop"
                continue
            found = green_box(im)
        carried = boxes.iloc[0][["x1", "y1", "x2", "y2"]].to_numpy(float)
        assert np.abs(carried - np.array(found)).max() <= 1.0, (row["rel_path"], carried, found)
    assert summary["square"]["boxes_carried"] + summary["square"]["boxes_cut_off"] == 3


def test_crop_mode_cuts_off_boxes_outside_the_centre(marked):
    ws, _ = marked
    s = run_square(ws, size_px=64, mode="crop")["square"]
    # tall.png: 300x512 keeps rows 106..406; its box (301..389) is inside; none is cut off here
    assert (s["boxes_cut_off"], s["boxes_carried"]) == (0, 3)


def test_encoding_png_stays_png_and_jpeg_quality_is_recorded(marked):
    ws, _ = marked
    run_square(ws, size_px=100, quality=80)
    m = ws.read_manifest().set_index("rel_path")
    sq = m[m["layout"] == "square"]
    assert Path(sq.loc["wide.png", "path"]).suffix == ".png" and sq.loc["wide.png", "format"] == "PNG"
    assert Path(sq.loc["odd.jpg", "path"]).suffix == ".jpg" and sq.loc["odd.jpg", "format"] == "JPEG"
    assert json.loads(sq.loc["odd.jpg", "transform"])["encoding"] == {"ext": "jpg", "quality": 80}
    assert json.loads(sq.loc["wide.png", "transform"])["encoding"] == {"ext": "png", "quality": None}


@pytest.mark.parametrize("fill, corner", [
    ("white", (255, 255, 255)),
    ("10,200,30", (10, 200, 30)),
    ("edge", None),  # the top-left source pixel, repeated outwards
    ("mean", "mean"),
])
def test_fill(skimage_dir, fill, corner):
    img = Image.open(skimage_dir / "astronaut.png").convert("RGB").crop((0, 0, 512, 256))
    plan = square_plan(img.size, 128, "pad")  # bars above and below
    out = make_square(img, plan, parse_fill(fill))
    got = out.getpixel((0, 0))
    if corner is None:
        corner = out.getpixel((0, plan.offset_xy[1]))
    elif corner == "mean":
        region = np.asarray(out)[plan.offset_xy[1]:plan.offset_xy[1] + plan.resized_wh[1]]
        corner = tuple(int(round(v)) for v in region.reshape(-1, 3).mean(axis=0))
    assert got == corner


def test_rerun_reuses_and_a_new_size_replaces(marked):
    ws, _ = marked
    run_square(ws, size_px=64)
    first = ws.read_manifest()
    s = run_square(ws, size_px=64)["square"]
    assert (s["new"], s["reused"], s["stale"]) == (0, 3, 0)
    pd.testing.assert_frame_equal(ws.read_manifest(), first)
    s = run_square(ws, size_px=32)["square"]
    assert (s["new"], s["stale"]) == (3, 3)
    m = ws.read_manifest()
    assert sorted(m.loc[m["status"] == "kept", "width"]) == [32, 32, 32]
    assert len(ws.read_annotations()) == 3 + 3 + 3  # source boxes, and one per square ever made


def test_rows_kept_or_relabelled_in_review_are_squared_rejected_ones_are_not(marked):
    """Issue 17: a row relabelled in review was skipped, so a "224x224" export held a 377x240 image."""
    ws, _ = marked
    m = ws.read_manifest()
    relabel = m["rel_path"] == "wide.png"
    m.loc[relabel, ["label", "label_origin", "decided_by"]] = ["astronaut", "review", "review"]
    reject = m["rel_path"] == "tall.png"
    m.loc[reject, ["status", "reason", "decided_by"]] = ["dropped", "rejected_in_review", "review"]
    ws.write_manifest(m)
    run_square(ws, size_px=64)
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"]
    assert sorted(zip(kept["rel_path"], kept["width"], kept["height"], strict=True)) == [
        ("odd.jpg", 64, 64), ("wide.png", 64, 64)]
    assert kept.set_index("rel_path").loc["wide.png", "label"] == "astronaut"  # the person's label carried
    tall = m[m["rel_path"] == "tall.png"]
    assert tall[["status", "reason", "decided_by"]].values.tolist() == [["dropped", "rejected_in_review", "review"]]
    summary = ws.run_stage("check", check, CheckOptions()).summary
    assert {r["name"]: r["status"] for r in summary["checks"]}["mixed_sizes"] == "pass"


def test_check_flags_a_kept_row_that_is_not_the_square_size(marked):
    ws, _ = marked
    run_square(ws, size_px=64)
    m = ws.read_manifest()
    # A person keeps the original of one square again: the export would mix 512x300 with 64x64.
    wide = (m["rel_path"] == "wide.png") & m["parent_id"].isna()
    m.loc[wide, ["status", "reason", "decided_by"]] = ["kept", None, "review"]
    ws.write_manifest(m)
    res = {r["name"]: r for r in ws.run_stage("check", check, CheckOptions()).summary["checks"]}
    assert res["mixed_sizes"]["status"] == "fail"
    assert res["mixed_sizes"]["message"] == ("1 kept rows are not 64x64 though the workspace was squared "
                                             "(run `curate square WS --size 64` again)")
    assert res["mixed_sizes"]["examples"] == ["src/wide.png: 512x300"]


def test_small_images_enlarged_2x_or_more_are_counted_and_named(marked):
    ws, _ = marked
    summary = run_square(ws, size_px=1024)  # 512x300 -> 2.0x, 300x512 -> 2.0x, 479x383 -> 2.14x
    assert summary["square"]["upscaled_2x"] == 3
    assert summary["warnings"][0] == (
        "3 images were enlarged 2x or more to 1024 px, so their squares are blurry: src/odd.jpg (479x383, 2.1x), "
        "src/tall.png (300x512, 2.0x), src/wide.png (512x300, 2.0x) (drop small faces with "
        "`curate faces --min-face-px`, or choose a smaller --size)")
    assert run_square(ws, size_px=64)["square"]["upscaled_2x"] == 0


def test_cli_bad_fill_is_one_line(marked):
    ws, _ = marked
    res = CliRunner().invoke(cli, ["square", str(ws.root), "--fill", "purple"])
    assert res.exit_code == 1
    assert res.output == ("Error: --fill: expected one of ('black', 'white', 'edge', 'mean') or R,G,B with values "
                          "0-255, found purple\n")


# -- chaining and lineage ----------------------------------------------------------------

def test_ingest_faces_square_traces_back_to_the_source(tmp_path, skimage_dir, copy_tree):
    src = copy_tree(skimage_dir, "photos", files=["astronaut.png"])
    ws = make_ws(tmp_path / "ws", src)
    ws.run_stage("faces", faces, FacesOptions(workers=1, margin_frac=0.4, boxes=False))
    ws.run_stage("square", square, SquareOptions(size_px=160, mode="pad", fill="edge", workers=1))
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"]
    assert len(kept) == 1 and kept.iloc[0]["layout"] == "square"
    chain = trace(m, kept.iloc[0]["sample_id"])
    rows = m.set_index("sample_id").loc[chain]
    assert rows["layout"].tolist() == ["square", "faces", "flat"]
    assert set(rows["origin_path"]) == {str(src / "astronaut.png")}
    sq, crop = (json.loads(t) for t in rows["transform"].iloc[:2])
    assert (sq["op"], crop["op"]) == ("square", "face_crop")
    # every parameter is in the records: redoing it from the source file gives the same pixels
    source = Image.open(src / "astronaut.png").convert("RGB")
    again = make_square(source.crop(tuple(crop["crop_xyxy"])), square_plan(tuple(sq["src_wh"]), sq["size"], sq["mode"]),
                        sq["fill"])
    with Image.open(kept.iloc[0]["path"]) as im:
        assert im.tobytes() == again.tobytes()


@pytest.mark.slow  # decodes a 15754 x 1382 PNG in a fresh interpreter
def test_a_panorama_is_resized_before_padding(tmp_path, corpus, copy_tree):
    """Padding 15754 x 1382 at full size would need a 745 MB canvas; resizing first keeps the peak far lower."""
    src = copy_tree(corpus / "photos", "pano", files=["cleanvision_image_604.png"])
    ws = make_ws(tmp_path / "ws", src, probe=__import__("curate.imageio").imageio.ProbeOptions(max_aspect=20))
    # VmHWM, not getrusage's ru_maxrss: Linux carries the forking parent's peak
    # (here the pytest worker's) into ru_maxrss across exec, VmHWM starts afresh.
    code = ("import re, sys; from curate.workspace import Workspace; "
            "from curate.stages.square import SquareOptions, square; "
            "r = Workspace.open(sys.argv[1]).run_stage('square', square, SquareOptions(size_px=224, workers=1)); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "print(r.summary['square']['new'], hwm // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(ws.root)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    new, peak_mb = map(int, out.stdout.split())
    assert new == 1
    assert peak_mb < 500, f"peak {peak_mb} MB"
    m = ws.read_manifest()
    sq = m[m["layout"] == "square"].iloc[0]
    assert json.loads(sq["transform"])["resized_wh"] == [224, 20]


def test_an_image_that_crashes_its_worker_drops_its_row_and_the_rest_is_unchanged(tmp_path, skimage_dir,
                                                                                  crashing_decoder):
    """A real segfault in the JPEG decoder of a pool worker (issue 18): the parent row is dropped as
    worker_crashed after the bounded retries, every other row and object is as in an undisturbed run,
    and a re-run (decoder fixed) squares it."""
    src = tmp_path / "src"
    src.mkdir()
    base = [Image.open(skimage_dir / f).convert("RGB") for f in ("astronaut.png", "coffee.png", "chelsea.png")]
    for i in range(20):
        base[i % 3].rotate(i * 11).resize((200 + 3 * i, 150)).save(src / f"img_{i:02d}.jpg", quality=85)
    crashing_decoder.save_poison(base[0].resize((180, 240)), src / "poison.jpg", "segfault")
    ws = make_ws(tmp_path / "ws", src)  # ingest runs here, in this process: the decoder is fine here
    clean_ws = make_ws(tmp_path / "ws_clean", src)

    summary = within(300, lambda: run_square(ws, size_px=64, workers=2))
    assert summary["square"]["worker_crashed"] == 1
    m = ws.read_manifest()
    poison = m[m["rel_path"] == "poison.jpg"]
    row = poison[poison["parent_id"].isna()].iloc[0]
    assert (row["status"], row["reason"], row["decided_by"]) == ("dropped", "worker_crashed", "square")
    assert "killed by signal 11 (SIGSEGV) (3 attempts)" in row["detail"]
    assert len(poison) == 1  # no square was made of it

    crashing_decoder.off()
    run_square(clean_ws, size_px=64, workers=2)
    clean = clean_ws.read_manifest()

    def comparable(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
        return frame.assign(path=frame["path"].str.replace(str(root), "WS", regex=False)).reset_index(drop=True)

    others = clean["rel_path"] != "poison.jpg"
    pd.testing.assert_frame_equal(comparable(m[m["rel_path"] != "poison.jpg"], ws.root),
                                  comparable(clean[others], clean_ws.root))
    within(300, lambda: run_square(ws, size_px=64, workers=2))  # tries it again, and now it works
    pd.testing.assert_frame_equal(comparable(ws.read_manifest(), ws.root), comparable(clean, clean_ws.root))


def test_small_face_crops_enlarged_2x_are_counted_and_warned(corpus, tmp_path, copy_tree):
    """Issue 17: small face crops of a group photo, squared to twice their size or more, are blurry."""
    src = copy_tree(corpus / "faces_misc", "groups", files=["deepface_selfie-many-people.jpg",
                                                            "facenet_multiface.jpg"])
    ws = make_ws(tmp_path / "ws", src)
    ws.run_stage("faces", faces, FacesOptions(workers=1, select="all"))
    m = ws.read_manifest()
    crops = m[(m["layout"] == "faces") & (m["status"] == "kept")]
    small = crops[crops[["width", "height"]].max(axis=1) * 2 <= 320]
    assert 0 < len(small) < len(crops)  # the faces of the group photos, not every one
    summary = run_square(ws, size_px=320)
    assert summary["square"]["upscaled_2x"] == len(small)
    smallest = crops.loc[crops[["width", "height"]].max(axis=1).idxmin()]
    warning = summary["warnings"][0]
    assert warning.startswith(f"{len(small)} images were enlarged 2x or more to 320 px, so their squares are blurry: "
                              f"src/{smallest['rel_path']} ({smallest['width']}x{smallest['height']}, ")
