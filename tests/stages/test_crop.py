"""`curate crop`: every box becomes a patch whose pixels match the displayed image; skipped boxes have reasons;
re-runs reuse and mark stale; patches chain with square, split, export and train."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from curate.cli import cli
from curate.errors import OptionError
from curate.stages.crop import CropOptions, crop, plan_patches
from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec
from curate.stages.ingest import ingest as run_ingest
from curate.stages.split import SplitOptions, parse_ratios, split
from curate.stages.square import SquareOptions, square
from curate.workspace import Workspace
from tests.conftest import tree_digest

# The per-image JSON of a metal-surface defect set: one file per image, boxes as [x1, y1, x2, y2].
METAL_MAPPING = {"image": "image", "boxes": "annotations", "box": {"label": "label", "xyxy": "bbox"}}


def write_metal_source(src: Path, images: dict[str, tuple[Path, list[tuple[str, list[float]]]]],
                       orient: dict[str, int] | None = None) -> Path:
    """Copy real photos into ``src`` with one metal-surface JSON per image (boxes in the displayed frame).

    ``orient``: images re-saved as JPEG with that EXIF orientation (their pixels stored turned), so the
    displayed frame differs from the stored one.
    """
    src.mkdir(parents=True, exist_ok=True)
    for name, (photo, boxes) in images.items():
        if orient and name in orient:
            shown = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
            stored = shown.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
            exif = Image.Exif()
            exif[0x0112] = orient[name]
            stored.save(src / name, quality=95, exif=exif)
        else:
            shutil.copy(photo, src / name)
        doc = {"image": name, "annotations": [{"label": lab, "bbox": box} for lab, box in boxes]}
        (src / f"{Path(name).stem}.json").write_text(json.dumps(doc))
    return src


def ingest_ws(tmp_path: Path, src: Path) -> Workspace:
    mapping = tmp_path / "metal.mapping.json"
    mapping.write_text(json.dumps(METAL_MAPPING))
    ws = Workspace.create(tmp_path / "ws")
    opts = IngestOptions([SourceSpec(src, name="metal", layout="json")], workers=1,
                         read_extra={"json_mapping": str(mapping)})
    ws.run_stage("ingest", run_ingest, opts)
    return ws


def run_crop(ws: Workspace, **kw) -> dict:
    kw.setdefault("workers", 1)
    return ws.run_stage("crop", crop, CropOptions(**kw)).summary["crop"]


def displayed(path: Path) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), dtype=np.int16)


def patches(ws: Workspace) -> pd.DataFrame:
    m = ws.read_manifest()
    return m[m["layout"] == "crop"]


# -- planning: one table of cases, no pixels ---------------------------------------------

def box(label: str, x1: float, y1: float, x2: float, y2: float) -> dict:
    return {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}


@pytest.mark.parametrize("boxes, options, windows, reasons", [
    # a box inside the image: the window is the box
    ([box("a", 10, 10, 50, 30)], {}, [[10, 10, 50, 30]], []),
    # a margin of 0.1 on each side, rounded outwards
    ([box("a", 10, 10, 50, 30)], {"margin_frac": 0.1}, [[6, 8, 54, 32]], []),
    # at the image edge: the margin is clamped to the image
    ([box("a", 80, 0, 100, 20)], {"margin_frac": 0.5}, [[70, 0, 100, 30]], []),
    # reaching past the image: cut to the part inside
    ([box("a", 90, 90, 130, 140)], {}, [[90, 90, 100, 100]], []),
    # a 1 px box: skipped as too small
    ([box("a", 5, 5, 6, 6)], {}, [], ["too_small"]),
    # a box left of the image: no area inside it
    ([box("a", -30, 10, -5, 40)], {}, [], ["outside_image"]),
    # the same box twice: one patch
    ([box("a", 10, 10, 50, 30), box("a", 10, 10, 50, 30)], {}, [[10, 10, 50, 30]], ["duplicate_box"]),
    # the same box with another class: the first class's patch, the second recorded as a conflict
    ([box("a", 10, 10, 50, 30), box("b", 10.2, 10, 50, 30)], {}, [[10, 10, 50, 30]], ["conflicting_box"]),
    # --classes leaves the others out, without a reason
    ([box("a", 10, 10, 50, 30), box("b", 60, 60, 90, 90)], {"classes": ("b",)}, [[60, 60, 90, 90]], []),
    # --square: widened around the box's centre
    ([box("a", 10, 10, 50, 30)], {"square": True}, [[10, 0, 50, 40]], []),
    # --square at a corner: slides inwards instead of shrinking
    ([box("a", 0, 90, 20, 100)], {"square": True}, [[0, 80, 20, 100]], []),
])
def test_plan_patches(boxes, options, windows, reasons):
    transforms, skipped = plan_patches(boxes, (100, 100), CropOptions(**options))
    assert [t["crop_xyxy"] for t in transforms] == windows
    assert [s["reason"] for s in skipped] == reasons


def test_plan_patches_label_from_row():
    transforms, _ = plan_patches([box("scratch", 10, 10, 50, 30)], (100, 100), CropOptions(label_from="row"),
                                 parent_label="defective")
    assert transforms[0]["label"] == "defective" and transforms[0]["box_label"] == "scratch"


@pytest.mark.parametrize("options, message", [
    ({"margin_frac": -0.1}, "--margin: expected a fraction of the box between 0 and 5, found -0.1"),
    ({"min_box_px": 0}, "--min-box-px: expected 1 or more pixels, found 0"),
    ({"label_from": "file"}, "--label-from: expected one of ('box', 'row'), found file"),
])
def test_options_are_checked(options, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CropOptions(**options).check()


# -- pixels, lineage and boxes on real photos ----------------------------------------------

@pytest.fixture()
def skimage_ws(tmp_path, skimage_dir) -> tuple[Workspace, Path]:
    """Three bundled photos (PNG, JPEG, and a JPEG stored turned with EXIF orientation 6), boxes of
    several classes, one box at the image edge, one overlapping its neighbour, one 1 px, one twice."""
    src = write_metal_source(tmp_path / "src", {
        "coffee.png": (skimage_dir / "coffee.png", [("cup", [150, 20, 460, 300]), ("spoon", [380, 250, 600, 400]),
                                                    ("dust", [5, 5, 6, 6]), ("cup", [150, 20, 460, 300])]),
        "rocket.jpg": (skimage_dir / "rocket.jpg", [("rocket", [280, 60, 380, 420]), ("edge", [590, 0, 640, 60])]),
        "chelsea.jpg": (skimage_dir / "chelsea.png", [("cat", [140, 20, 320, 260])]),
    }, orient={"chelsea.jpg": 6})
    return ingest_ws(tmp_path, src), src


def test_patches_match_a_numpy_crop_of_the_displayed_image(skimage_ws):
    ws, src = skimage_ws
    summary = run_crop(ws, margin_frac=0.1)
    assert summary["patches"] == 5 and summary["new"] == 5
    assert summary["skipped"] == {"too_small": 1, "duplicate_box": 1}
    assert summary["clamped"] == 5  # a 10 % margin reaches past the border for every one of these boxes
    m = ws.read_manifest()
    p = patches(ws)
    assert sorted(p["label"]) == ["cat", "cup", "edge", "rocket", "spoon"]
    assert set(p["label_origin"]) == {"crop"} and set(p["status"]) == {"kept"}
    parents = m.set_index("sample_id")
    for row in p.itertuples():
        t = json.loads(row.transform)
        x1, y1, x2, y2 = t["crop_xyxy"]
        origin = Path(row.origin_path)
        expected = displayed(origin)[y1:y2, x1:x2]
        got = np.asarray(Image.open(row.path).convert("RGB"), dtype=np.int16)
        assert got.shape == expected.shape
        assert (row.width, row.height) == (x2 - x1, y2 - y1)
        if origin.suffix == ".png":
            assert np.array_equal(got, expected), row.label  # lossless source, lossless patch
        else:
            assert np.abs(got - expected).mean() < 2.0, row.label  # JPEG q95 of the same pixels
        assert parents.loc[row.parent_id, "status"] == "kept"  # parents stay as they are
        assert t["box_label"] == row.label and t["margin_frac"] == 0.1
    # the turned photo: its patch is of the displayed image, not of the stored pixels
    cat = p[p["label"] == "cat"].iloc[0]
    x1, y1, x2, y2 = json.loads(cat["transform"])["crop_xyxy"]
    stored = np.asarray(Image.open(cat["origin_path"]).convert("RGB"), dtype=np.int16)
    got = np.asarray(Image.open(cat["path"]).convert("RGB"), dtype=np.int16)
    assert stored[y1:y2, x1:x2].shape != got.shape or np.abs(stored[y1:y2, x1:x2] - got).mean() > 10
    edge = p[p["label"] == "edge"].iloc[0]
    assert json.loads(edge["transform"])["clamped"] is True  # the margin met the image border


def test_overlapping_boxes_are_carried_clipped_into_the_patch(skimage_ws):
    ws, _ = skimage_ws
    run_crop(ws)
    p = patches(ws)
    ann = ws.read_annotations()
    cup = p[p["label"] == "cup"].iloc[0]
    boxes = ann[ann["sample_id"] == cup["sample_id"]].sort_values("label")
    # the cup patch is (150, 20)-(460, 300): its own box fills it, the spoon's corner is cut to the window
    assert boxes[["label", "x1", "y1", "x2", "y2"]].values.tolist() == [
        ["cup", 0.0, 0.0, 310.0, 280.0], ["cup", 0.0, 0.0, 310.0, 280.0], ["spoon", 230.0, 230.0, 310.0, 280.0]]


def test_rerun_reuses_and_a_changed_box_marks_its_patch_stale(skimage_ws):
    ws, _ = skimage_ws
    run_crop(ws)
    again = run_crop(ws)
    assert (again["new"], again["reused"], again["stale"]) == (0, 5, 0)
    ann = ws.read_annotations()
    m = ws.read_manifest()
    rocket_parent = m[m["rel_path"] == "rocket.jpg"]["sample_id"].iloc[0]
    moved = (ann["sample_id"] == rocket_parent) & (ann["label"] == "rocket")
    ann.loc[moved, "x2"] = 400.0  # a person widened the box (e.g. a Label Studio pull)
    ann.loc[(ann["sample_id"] == rocket_parent) & (ann["label"] == "edge"), "label"] = "rim"  # and renamed one
    ws.write_annotations(ann, m)
    third = run_crop(ws)
    assert (third["new"], third["reused"], third["stale"]) == (2, 3, 2)
    p = patches(ws)
    kept = p[p["status"] == "kept"]
    assert sorted(kept["label"]) == ["cat", "cup", "rim", "rocket", "spoon"]
    stale = p[p["status"] == "dropped"]
    assert sorted(stale["label"]) == ["edge", "rocket"]
    assert set(stale["reason"]) == {"superseded"} and stale["detail"].str.startswith("stale:").all()
    assert json.loads(kept[kept["label"] == "rocket"]["transform"].iloc[0])["box_xyxy"][2] == 400.0


def test_supersede_then_keep_again(skimage_ws):
    ws, _ = skimage_ws
    run_crop(ws, supersede=True)
    m = ws.read_manifest()
    parents = m[m["parent_id"].isna()]
    assert set(parents["reason"]) == {"superseded"} and set(parents["decided_by"]) == {"crop"}
    again = run_crop(ws, supersede=True)
    assert (again["new"], again["reused"]) == (0, 5)
    run_crop(ws)
    m = ws.read_manifest()
    assert set(m[m["parent_id"].isna()]["status"]) == {"kept"}
    assert (patches(ws)["status"] == "kept").all()


def test_classes_label_from_row_and_square(skimage_ws):
    ws, _ = skimage_ws
    summary = run_crop(ws, classes=("rocket", "edge"), square=True, label_from="row")
    assert summary["patches"] == 2 and summary["not_selected"] == 5
    p = patches(ws)
    assert p["label"].isna().all()  # the images have no label of their own
    assert (p["width"] == p["height"]).all()
    with pytest.raises(OptionError, match=r"--classes: expected box classes among \['cat', .*found bolt"):
        run_crop(ws, classes=("bolt",))


def test_an_image_gone_since_ingest_is_recorded_and_the_run_goes_on(skimage_ws):
    ws, src = skimage_ws
    (src / "rocket.jpg").unlink()
    summary = run_crop(ws)
    assert summary["unreadable"] == 1 and summary["patches"] == 3
    m = ws.read_manifest()
    assert m[m["rel_path"] == "rocket.jpg"]["reason"].tolist() == ["missing_file"]


def test_sources_are_never_written(skimage_ws):
    ws, src = skimage_ws
    before = tree_digest(src)
    run_crop(ws, margin_frac=0.2, supersede=True)
    assert tree_digest(src) == before


def test_cli_crop_and_its_error(skimage_ws):
    ws, _ = skimage_ws
    res = CliRunner().invoke(cli, ["crop", str(ws.root), "--classes", "bolt,nut", "--workers", "1"])
    assert res.exit_code == 1
    assert res.output == ("Error: --classes: expected box classes among ['cat', 'cup', 'dust', 'edge', 'rocket', "
                          "'spoon'], found bolt, nut (see `curate status` or the annotations)\n")
    res = CliRunner().invoke(cli, ["crop", str(ws.root), "--margin", "0.1", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["crop"]["patches"] == 5
    run = [r for r in ws.runs() if r["command"] == "crop"][-1]
    assert [(s["label"], s["reason"]) for s in run["skipped_boxes"]] == [("dust", "too_small"), ("cup", "duplicate_box")]


# -- the metal-surface workflow end to end, on the corpus photos ----------------------------------

def _corpus_boxes(photo: Path, n: int, rng: np.random.Generator) -> list[tuple[str, list[float]]]:
    """``n`` boxes of three defect classes at random places inside the displayed image."""
    w, h = ImageOps.exif_transpose(Image.open(photo)).size
    out = []
    for k in range(n):
        bw, bh = rng.uniform(0.15, 0.45) * w, rng.uniform(0.15, 0.45) * h
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out.append((("scratch", "dent", "rust")[k % 3], [round(x1, 1), round(y1, 1), round(x1 + bw, 1), round(y1 + bh, 1)]))
    return out


@pytest.mark.corpus
def test_metal_surface_workflow_on_corpus_photos(corpus, tmp_path):
    rng = np.random.default_rng(7)
    photos = [p for p in sorted((corpus / "photos").glob("*.jpg"))
              if "truncated" not in p.name and "corrupt" not in p.name and "junk" not in p.name][:8]
    photos += sorted((corpus / "faces_by_person" / "obama").glob("*.jpg"))[:4]
    images = {f"{k:02d}_{p.name}": (p, _corpus_boxes(p, 3, rng)) for k, p in enumerate(photos)}
    src = write_metal_source(tmp_path / "src", images, orient={next(iter(images)): 6})
    ws = ingest_ws(tmp_path, src)
    before = tree_digest(src)
    summary = run_crop(ws, margin_frac=0.1, supersede=True, workers=2)
    n_boxes = sum(len(b) for _, b in images.values())
    assert summary["patches"] + sum(summary["skipped"].values()) == n_boxes
    # every patch is the displayed image's pixels inside its window
    for row in patches(ws).itertuples():
        x1, y1, x2, y2 = json.loads(row.transform)["crop_xyxy"]
        expected = displayed(Path(row.origin_path))[y1:y2, x1:x2]
        got = np.asarray(Image.open(row.path).convert("RGB"), dtype=np.int16)
        assert got.shape == expected.shape and np.abs(got - expected).mean() < 2.5, row.origin_path
    ws.run_stage("square", square, SquareOptions(size_px=224, fill="black", workers=2))
    ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("6:2:2"), seed=0))
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"]
    assert set(kept["layout"]) == {"square"} and kept["label"].notna().all()
    # all patches of one photo land in one split
    per_photo = kept.groupby("origin_path")["split"].nunique()
    assert (per_photo == 1).all() and kept["split"].nunique() == 3
    out = tmp_path / "export"
    res = ws.run_stage("export", export, ExportOptions("folder", out))
    assert res.summary["images"] == len(kept)
    files = sorted(out.rglob("*.*"))
    assert len([f for f in files if f.parent.parent.name in ("train", "val", "test")]) == len(kept)
    assert {Image.open(f).size for f in files if f.suffix in (".jpg", ".png")} == {(224, 224)}
    assert {f.parent.name for f in files if f.suffix in (".jpg", ".png")} == {"scratch", "dent", "rust"}
    assert tree_digest(src) == before
    if importlib.util.find_spec("torch") is None:
        pytest.skip("curate train needs torch: pip install 'curate[train]'")
    res = CliRunner().invoke(cli, ["train", "classify", str(out), "--epochs", "1", "--img-size", "32",
                                   "--batch-size", "8", "--width", "8", "--threads", "1",
                                   "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout)
    assert trained["classes"] == 3 and sum(trained["images"].values()) == len(kept)


def test_a_folder_export_with_the_unlabelled_photos_still_kept_names_the_fix(skimage_ws, tmp_path):
    from curate.errors import ExportError

    ws, _ = skimage_ws
    run_crop(ws)
    with pytest.raises(ExportError, match="cut patches from, re-run it with --supersede"):
        ws.run_stage("export", export, ExportOptions("folder", tmp_path / "out"))
    run_crop(ws, supersede=True)
    assert ws.run_stage("export", export, ExportOptions("folder", tmp_path / "out")).summary["images"] == 5


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc", "yolo-cls", "csv", "json"])
def test_patches_chain_with_balance_and_every_export(skimage_ws, tmp_path, fmt):
    from curate.stages.balance import BalanceOptions, balance

    ws, _ = skimage_ws
    run_crop(ws, margin_frac=0.1, supersede=True)
    ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("1:0:0"), seed=0))
    res = ws.run_stage("balance", balance, BalanceOptions(target=3, strategy="oversample", workers=1))
    assert res.summary["copies_made"] > 0  # small classes got augmented patches, boxes carried
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"]
    assert set(kept["layout"]) == {"crop", "augment"}
    out = tmp_path / fmt
    summary = ws.run_stage("export", export, ExportOptions(fmt, out)).summary  # read back and compared
    assert summary["images"] == len(kept)
    if fmt in ("yolo", "coco", "voc", "json"):
        assert summary["boxes"] == len(ws.read_annotations().merge(kept[["sample_id"]]))


def test_a_photo_that_crashes_its_worker_is_recorded_and_the_rest_is_cut(tmp_path, skimage_dir, crashing_decoder):
    """A real segfault in the JPEG decoder of a pool worker: the photo is dropped as worker_crashed after the
    bounded retries, every other photo gives its patches, and a re-run with the decoder fixed cuts it too."""
    from tests.conftest import within

    base = [Image.open(skimage_dir / f).convert("RGB") for f in ("astronaut.png", "coffee.png", "chelsea.png")]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        base[i % 3].resize((200 + 3 * i, 150)).save(src / f"img_{i:02d}.jpg", quality=85)
    crashing_decoder.save_poison(base[0].resize((180, 240)), src / "poison.jpg", "segfault")
    for f in src.glob("*.jpg"):
        (src / f"{f.stem}.json").write_text(json.dumps({"image": f.name, "annotations": [
            {"label": "a", "bbox": [10, 10, 90, 90]}, {"label": "b", "bbox": [60, 40, 150, 140]}]}))
    ws = ingest_ws(tmp_path, src)  # ingest runs in this process: its decoder is fine
    summary = within(300, lambda: run_crop(ws, workers=2))
    assert summary["worker_crashed"] == 1 and summary["patches"] == 40
    m = ws.read_manifest()
    row = m[(m["rel_path"] == "poison.jpg") & m["parent_id"].isna()].iloc[0]
    assert (row["status"], row["reason"], row["decided_by"]) == ("dropped", "worker_crashed", "crop")
    assert "killed by signal 11 (SIGSEGV) (3 attempts)" in row["detail"]
    crashing_decoder.off()
    again = within(300, lambda: run_crop(ws, workers=2))
    assert (again["new"], again["reused"]) == (2, 40)
    assert ws.read_manifest().query("rel_path == 'poison.jpg' and parent_id.isna()")["status"].item() == "kept"
