"""curate dedupe: grouping and keeper policy on tables, near copies of real photos, the command.

Table tests need no pixels (``verify=False``): hashes are written into the rows.
Photo tests apply every transform of issue 8 to real photos inside tmp_path
(skimage's bundled photos always; the shared corpus when present) and include
hard negatives: a stereo pair, textures, two pages of text, several photos of
the same person, an almost black frame next to a page.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from curate.cli import cli
from curate.errors import OptionError
from curate.groups import mark_exact
from curate.hashing import CROP_WINDOWS, D4_NAMES, d4_variants
from curate.schema import MANIFEST_COLUMNS, conform
from curate.stages.dedupe import DedupeOptions, candidate_pairs, cap_partners, dedupe, verify_candidates
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace
from tests.conftest import within

A = 0x3C5A_9F01_7E22_D4B8  # an arbitrary 63-bit d4hash (the top bit is the DC bit: 0)
FAR = 0x0F0F_3C3C_5555_1234


def near(code: int, *bits: int) -> str:
    for b in bits:
        code ^= 1 << b
    return f"{code:016x}"


def row(sid: str, d4: int | str | None = A, **kw: Any) -> dict[str, Any]:
    """One kept manifest row with a d4hash; ``kw`` overrides."""
    base = {"sample_id": sid, "source": "web", "path": f"/data/{sid}.jpg", "origin_path": f"/data/{sid}.jpg",
            "rel_path": f"{sid}.jpg", "layout": "flat", "status": "kept", "decided_by": "ingest",
            "width": 640, "height": 480, "sha256": hashlib.sha256(sid.encode()).hexdigest(),
            "d4hash": d4 if isinstance(d4, str) or d4 is None else f"{d4:016x}", "hash_contrast": 40.0}
    base.update(kw)
    return base


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows), MANIFEST_COLUMNS)


def run(rows: list[dict[str, Any]] | pd.DataFrame, annotations: pd.DataFrame | None = None, **kw: Any):
    kw = {"verify": False, "crops": False, "workers": 1, **kw}
    manifest = table(rows) if isinstance(rows, list) else rows
    return dedupe(manifest, DedupeOptions(**kw), annotations=annotations)


def by_id(m: pd.DataFrame) -> pd.DataFrame:
    return m.set_index("sample_id")


# -- grouping and keeper policy, on tables ------------------------------------


@pytest.mark.parametrize(("rows", "opts", "kept"), [
    # source priority: --priority names the most trusted source first
    ([row("a", source="scraped"), row("b", near(A, 3), source="curated")], {"priority": ["curated"]}, "b"),
    # resolution: more pixels win within one source
    ([row("a"), row("b", near(A, 3), width=1280, height=960)], {}, "b"),
    # priority beats resolution by default ...
    ([row("a", source="curated"), row("b", near(A, 3), source="scraped", width=1280, height=960)],
     {"priority": ["curated"]}, "a"),
    # ... unless --keep puts resolution first
    ([row("a", source="curated"), row("b", near(A, 3), source="scraped", width=1280, height=960)],
     {"priority": ["curated"], "keep": ("resolution", "priority")}, "b"),
    # stable order (source, then path) when nothing else differs
    ([row("b", near(A, 3)), row("a")], {}, "a"),
])
def test_keeper_policy(rows, opts, kept):
    out = by_id(run(rows, **opts).manifest)
    dropped = [s for s in out.index if s != kept]
    assert out.loc[kept, "status"] == "kept" and out.loc[kept, "dup_group"] == kept
    for s in dropped:
        assert (out.loc[s, "status"], out.loc[s, "reason"], out.loc[s, "duplicate_of"]) == ("dropped", "duplicate", kept)
        assert out.loc[s, "decided_by"] == "dedupe" and out.loc[s, "dup_group"] == kept


def test_annotated_rows_are_preferred():
    rows = [row("a"), row("b", near(A, 5))]
    boxes = pd.DataFrame({"sample_id": ["b"], "label": ["cat"], "x1": [1.0], "y1": [1.0], "x2": [9.0], "y2": [9.0]})
    assert by_id(run(rows).manifest).loc["b", "duplicate_of"] == "a"  # stable order without boxes
    assert by_id(run(rows, annotations=boxes).manifest).loc["a", "duplicate_of"] == "b"


def test_far_hashes_and_radius():
    rows = [row("a"), row("b", near(A, 1, 2, 3, 4, 5, 6)), row("c", FAR)]  # b: 6 bits away
    assert by_id(run(rows).manifest).loc["b", "duplicate_of"] == "a"
    out = by_id(run(rows, max_hamming=5).manifest)
    assert (out["status"] == "kept").all() and out["dup_group"].isna().all()


def test_groups_chain_across_sources():
    rows = [row("a", source="s1"), row("b", near(A, 2), source="s2"), row("c", near(A, 2, 9), source="s3"),
            row("z", FAR, source="s3")]
    res = run(rows, priority=["s3", "s1"])
    out = by_id(res.manifest)
    assert out.loc[["a", "b"], "duplicate_of"].tolist() == ["c", "c"]
    assert out.loc["z", "status"] == "kept"
    overlap = {tuple(o["sources"]): o["groups"] for o in res.summary["dedupe"]["source_overlap"]}
    assert overlap == {("s1", "s2"): 1, ("s1", "s3"): 1, ("s2", "s3"): 1}


def test_turned_copy_is_found_from_the_stored_hash():
    rot90 = D4_NAMES.index("rot90")
    turned = int(d4_variants(np.array([A], np.uint64))[rot90, 0])
    out = by_id(run([row("a"), row("b", turned)]).manifest)
    assert out.loc["b", "duplicate_of"] == "a"


def test_candidate_pairs_report_the_turn():
    # b is a turned by rot90, so turning b by rot270 lines it up with a.
    h = np.array([A, d4_variants(np.array([A], np.uint64))[D4_NAMES.index("rot90"), 0]], np.uint64)
    pairs = candidate_pairs(h, None, 4)
    assert pairs[["a", "b", "hamming", "kind"]].values.tolist() == [[0, 1, 0, "turned"]]
    assert D4_NAMES[int(pairs.loc[0, "d4"])] == "rot270"


def test_candidate_pairs_crop_and_window_kinds():
    rng = np.random.default_rng(0)
    d4 = rng.integers(0, 2**63, 3, dtype=np.uint64)
    crops = rng.integers(0, 2**63, (3, len(CROP_WINDOWS)), dtype=np.uint64)
    crops[0, 4] = d4[1]  # image 1 is the centre window of image 0: a crop
    crops[2, 7] = crops[0, 7] ^ np.uint64(1)  # images 0 and 2 share one window: a turn/logo elsewhere
    kinds = {(int(p.a), int(p.b)): p.kind for p in candidate_pairs(d4, crops, 8).itertuples()}
    assert kinds == {(0, 1): "crop", (0, 2): "window"}


def test_cap_partners_keeps_nearest():
    pairs = pd.DataFrame({"a": [0, 0, 0, 1], "b": [1, 2, 3, 2], "d4": 0, "hamming": [3, 1, 2, 0], "kind": "whole"})
    kept = cap_partners(pairs, 2)
    assert sorted(zip(kept["a"], kept["b"], strict=True)) == [(0, 2), (0, 3), (1, 2)]


def test_label_conflicts_are_marked_not_resolved():
    rows = [row("a", label="cat"), row("b", near(A, 1), label="dog"), row("c", FAR, label="dog")]
    res = run(rows, conflicts=True)
    out = by_id(res.manifest)
    assert out.loc[["a", "b"], "label_conflict"].tolist() == [True, True]
    assert out.loc[["a", "b"], "label"].tolist() == ["cat", "dog"]  # labels untouched
    assert not out.loc["c", "label_conflict"]
    assert res.summary["dedupe"]["conflicts"] == [{"group": "a", "labels": ["cat", "dog"], "size": 2}]


def test_cross_split_groups_are_reported():
    rows = [row("a", split="train"), row("b", near(A, 1), split="test"), row("c", FAR, split="train"),
            row("d", near(FAR, 2), split="train")]
    info = run(rows).summary["dedupe"]
    assert info["cross_split_groups"] == 1
    assert info["cross_split"] == [{"group": "a", "splits": ["test", "train"], "size": 2}]


def test_review_decisions_are_never_changed():
    rows = [row("a"), row("b", near(A, 1), decided_by="review"),  # kept by a person: becomes the keeper
            row("c", near(A, 2), status="dropped", reason="rejected_in_review", decided_by="review")]
    out = by_id(run(rows).manifest)
    assert out.loc["a", "duplicate_of"] == "b" and out.loc["a", "decided_by"] == "dedupe"
    assert out.loc["b", ["status", "decided_by"]].tolist() == ["kept", "review"]
    assert pd.isna(out.loc["b", "dup_group"])  # a person's row is not even annotated
    assert out.loc["c", ["status", "reason", "decided_by"]].tolist() == ["dropped", "rejected_in_review", "review"]


def test_rerun_is_idempotent_and_recomputes_its_own_decisions():
    rows = [row("a"), row("b", near(A, 1)), row("c", FAR),
            row("d", near(FAR, 1), parent_id="c", layout="faces", decided_by="faces")]  # a derived face crop
    first = run(rows).manifest
    pd.testing.assert_frame_equal(first, run(first).manifest)
    assert by_id(first).loc[["b", "d"], "duplicate_of"].tolist() == ["a", "c"]
    # b's and d's files changed (hashes far from everything): the old decisions are undone
    changed = first.set_index("sample_id")
    changed.loc["b", "d4hash"] = f"{A ^ 0x00FF_00FF_0000_0000:016x}"
    changed.loc["d", "d4hash"] = f"{FAR ^ 0x0000_0000_FF00_FF00:016x}"
    res = run(changed.reset_index())
    out = by_id(res.manifest)
    assert out.loc["b", ["status", "decided_by"]].tolist() == ["kept", "ingest"]
    assert out.loc["d", ["status", "decided_by"]].tolist() == ["kept", "faces"]  # a derived row: its stage again
    assert pd.isna(out.loc["b", "duplicate_of"]) and pd.isna(out.loc["b", "detail"])
    assert res.summary["dedupe"]["restored"] == 2


def test_augmented_copies_from_balance_are_left_alone():
    # balance's copies hash next to their parent on purpose: grouping them would undo the balancing
    rows = [row("a", split="train"), row("b", near(A, 2), split="train"),
            row("a_aug1", near(A, 1), parent_id="a", layout="augment", decided_by="balance", split="train"),
            row("a_aug2", near(A, 1), parent_id="a", layout="augment", status="dropped", reason="balanced_out",
                decided_by="balance", split="train")]
    res = run(rows)
    out = by_id(res.manifest)
    assert out.loc["b", "duplicate_of"] == "a"  # real photos still group
    assert out.loc["a_aug1", ["status", "decided_by"]].tolist() == ["kept", "balance"]
    assert out.loc["a_aug2", ["status", "reason"]].tolist() == ["dropped", "balanced_out"]
    assert out.loc[["a_aug1", "a_aug2"], "dup_group"].isna().all()
    assert res.summary["dedupe"]["groups"] == 1


def test_exact_duplicates_from_ingest_keep_their_decision():
    rows = [row("a", sha256="s"), row("b", sha256="s"), row("c", FAR)]
    marked = mark_exact(table(rows))
    assert by_id(marked).loc["b", ["duplicate_of", "decided_by"]].tolist() == ["a", "ingest"]
    out = by_id(run(marked).manifest)
    assert out.loc["b", ["status", "duplicate_of", "decided_by", "detail"]].tolist() == [
        "dropped", "a", "ingest", "copy of a"]
    # A higher-priority near copy takes over the group: the exact copy follows it.
    rows.append(row("d", near(A, 2), source="curated"))
    out = by_id(run(mark_exact(table(rows)), priority=["curated"]).manifest)
    assert out.loc[["a", "b"], "duplicate_of"].tolist() == ["d", "d"]
    assert out.loc[["a", "b"], "decided_by"].tolist() == ["dedupe", "dedupe"]


def test_priority_can_change_the_keeper_of_an_exact_group():
    rows = [row("a", sha256="s", source="s1"), row("b", sha256="s", source="s2")]
    marked = by_id(mark_exact(table(rows), source_order=["s1", "s2"]))
    assert marked.loc["b", "duplicate_of"] == "a"
    out = by_id(run(marked.reset_index(), priority=["s2"]).manifest)
    assert out.loc["b", ["status", "decided_by"]].tolist() == ["kept", "dedupe"]
    assert pd.isna(out.loc["b", "reason"]) and pd.isna(out.loc["b", "duplicate_of"])
    assert out.loc["a", ["status", "duplicate_of", "decided_by"]].tolist() == ["dropped", "b", "dedupe"]


def test_low_information_rows_match_only_identical_bytes():
    # The SOURCES.md trap: a page whose plain dHash is 0x0 and an almost black frame.
    rows = [row("page", 0, hash_contrast=48.5), row("dark", near(0, 1, 2, 3), hash_contrast=0.5),
            row("dark_copy", near(0, 1, 2, 3), hash_contrast=0.5, sha256=row("dark")["sha256"])]
    res = run(rows)
    out = by_id(res.manifest)
    assert out.loc["page", "status"] == "kept" and pd.isna(out.loc["page", "dup_group"])
    assert out.loc["dark_copy", "duplicate_of"] == "dark"  # same bytes still group
    assert res.summary["dedupe"]["low_information"] == 2


def test_rows_without_hashes_are_left_alone():
    out = by_id(run([row("a", None), row("b", None)]).manifest)
    assert (out["status"] == "kept").all()


def test_dry_run_writes_nothing_but_the_report(tmp_path):
    res = run([row("a"), row("b", near(A, 1))], dry_run=True, report=tmp_path / "r.json")
    assert res.write is False
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["groups"][0]["kept"] == "a" and doc["groups"][0]["why"] == "stable order: source, path"
    assert [m["role"] for m in doc["groups"][0]["members"]] == ["kept", "duplicate"]


@pytest.mark.parametrize(("opts", "message"), [
    ({"keep": ("resolution", "size")},  # an unknown criterion
     "--keep: expected a comma-separated subset of priority,uncropped,resolution,annotated, found resolution,size"),
    ({"report": Path("groups.txt")},  # neither .csv nor .json
     "--report: expected a file name ending in .csv or .json, found groups.txt"),
    ({"max_hamming": 20}, "--max-hamming: expected 0..16, found 20"),
])
def test_bad_options(opts, message):
    with pytest.raises(OptionError) as e:
        run([row("a"), row("b", near(A, 1))], **opts)
    assert str(e.value) == message


# -- near copies of real photos ---------------------------------------------------


def _pad_square(img: Image.Image) -> Image.Image:
    side = max(img.size)
    out = Image.new("RGB", (side, side))
    out.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return out


def _crop(img: Image.Image, box_frac: tuple[float, float, float, float]) -> Image.Image:
    w, h = img.size
    x0, y0, x1, y1 = box_frac
    return img.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _logo(img: Image.Image, logo: Image.Image, rng: random.Random) -> Image.Image:
    side = int(min(img.size) * 0.15)
    out = img.copy()
    out.paste(logo.resize((side, side)), (img.width - side - 8, img.height - side - 8))
    return out


# Each transform of issue 8, applied alone; (name, function of (image, logo, rng), file extension).
TRANSFORMS = [
    ("resize_half", lambda im, lg, r: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), "jpg"),
    ("other_aspect", lambda im, lg, r: im.resize((int(im.width * 0.7), im.height), Image.Resampling.LANCZOS), "jpg"),
    ("jpeg_q15", lambda im, lg, r: _jpeg(im, 15), "jpg"),
    ("as_png", lambda im, lg, r: im, "png"),
    ("crop_centre_20", lambda im, lg, r: _crop(im, (0.053, 0.053, 0.947, 0.947)), "jpg"),
    ("crop_corner_20", lambda im, lg, r: _crop(im, (0.106, 0.0, 1.0, 0.894)), "jpg"),
    ("crop_side_20", lambda im, lg, r: _crop(im, (0.2, 0.0, 1.0, 1.0)), "jpg"),
    ("mirror", lambda im, lg, r: ImageOps.mirror(im), "jpg"),
    ("rot90", lambda im, lg, r: im.transpose(Image.Transpose.ROTATE_90), "jpg"),
    ("rot180", lambda im, lg, r: im.transpose(Image.Transpose.ROTATE_180), "jpg"),
    ("rot270", lambda im, lg, r: im.transpose(Image.Transpose.ROTATE_270), "jpg"),
    ("rot_4deg", lambda im, lg, r: im.rotate(4, resample=Image.Resampling.BICUBIC), "jpg"),
    ("brighter", lambda im, lg, r: ImageEnhance.Brightness(im).enhance(1.35), "jpg"),
    ("less_contrast", lambda im, lg, r: ImageEnhance.Contrast(im).enhance(0.6), "jpg"),
    ("blur", lambda im, lg, r: im.filter(ImageFilter.GaussianBlur(2)), "jpg"),
    ("grayscale", lambda im, lg, r: ImageOps.grayscale(im), "jpg"),
    ("logo", _logo, "jpg"),
    ("letterbox", lambda im, lg, r: _pad_square(im), "jpg"),
]


def write_copies(photos: dict[str, Image.Image], logo: Image.Image, out: Path) -> None:
    """Each photo as JPEG plus one file per transform, named ``<photo>__<transform>.<ext>``."""
    out.mkdir(parents=True, exist_ok=True)
    for stem, img in photos.items():
        img.save(out / f"{stem}__original.jpg", quality=92)
        for name, fn, ext in TRANSFORMS:
            fn(img, logo, random.Random(stem + name)).save(out / f"{stem}__{name}.{ext}", **(
                {"quality": 15} if name == "jpeg_q15" else {"quality": 90} if ext == "jpg" else {}))


def dedupe_folder(folder: Path, ws_dir: Path, **kw: Any) -> tuple[Workspace, pd.DataFrame, dict]:
    ws = Workspace.create(ws_dir)
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(folder, name="set", layout="flat")], workers=1))
    res = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1, **kw))
    return ws, ws.read_manifest(), res.summary


def grouping(manifest: pd.DataFrame) -> dict[str, str | None]:
    """rel_path -> dup_group (None when in no group)."""
    return {p: (g if isinstance(g, str) else None)
            for p, g in zip(manifest["rel_path"], manifest["dup_group"], strict=True)}


def misses_and_false_merges(groups: dict[str, str | None]) -> tuple[list[str], list[tuple[str, str]]]:
    """Copies (``<photo>__<transform>``) not grouped with their photo, and groups joining two photos."""
    misses = []
    for name, g in groups.items():
        if "__" in name and not name.endswith("__original.jpg"):
            orig = groups.get(name.split("__")[0] + "__original.jpg")
            if g is None or g != orig:
                misses.append(name)
    members: dict[str, set[str]] = {}
    for name, g in groups.items():
        if g is not None:
            members.setdefault(g, set()).add(name.split("__")[0])
    false = [(a, b) for names in members.values() for a in names for b in names if a < b]
    return sorted(misses), false


@pytest.fixture(scope="module")
def skimage_set(tmp_path_factory, skimage_dir) -> tuple[Path, Workspace, pd.DataFrame, dict]:
    """Four skimage photos with every transform, plus skimage's hard negatives."""
    root = tmp_path_factory.mktemp("skset")
    photos = {n: Image.open(skimage_dir / f"{n}.{e}").convert("RGB")
              for n, e in [("coffee", "png"), ("astronaut", "png"), ("rocket", "jpg"), ("chelsea", "png")]}
    logo = Image.open(skimage_dir / "logo.png").convert("RGB")
    folder = root / "set"
    write_copies(photos, logo, folder)
    # Hard negatives, as they are: a stereo pair, textures, two pages of text.
    for name in ("motorcycle_left.png", "motorcycle_right.png", "brick.png", "gravel.png", "grass.png",
                 "page.png", "text.png", "camera.png", "moon.png"):
        shutil.copy(skimage_dir / name, folder / name)
    ws, manifest, summary = dedupe_folder(folder, root / "ws")
    return folder, ws, manifest, summary


def test_every_transform_of_a_real_photo_is_grouped(skimage_set):
    _, _, manifest, summary = skimage_set
    misses, false = misses_and_false_merges(grouping(manifest))
    assert misses == []
    assert false == []  # the stereo pair, the textures and the pages stay apart
    assert summary["dedupe"]["groups"] == 4
    assert summary["dedupe"]["candidate_pairs"] >= summary["dedupe"]["groups"]


def test_keeper_is_the_largest_copy_and_details_say_how(skimage_set):
    _, _, manifest, _ = skimage_set
    m = manifest.set_index("rel_path")
    for stem in ("coffee", "astronaut", "rocket", "chelsea"):
        group = m[m["dup_group"] == m.loc[f"{stem}__original.jpg", "dup_group"]]
        keeper = group[group["status"] == "kept"]
        assert len(keeper) == 1
        px = group["width"].astype(int) * group["height"].astype(int)
        assert int(keeper["width"].iloc[0]) * int(keeper["height"].iloc[0]) == px.max()
        for detail in group.loc[group["status"] == "dropped", "detail"]:
            assert detail.startswith("near copy of ") or detail.startswith("copy of ")


def test_cli_dry_run_report_then_run(skimage_set, tmp_path):
    _, ws, _, _ = skimage_set
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy)
    before = (copy / "curate.json").read_bytes()  # the pointer to the committed tables
    runner = CliRunner()
    res = runner.invoke(cli, ["dedupe", str(copy), "--dry-run", "--report", str(tmp_path / "g.csv"),
                              "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["dedupe"]["dry_run"] is True
    assert (copy / "curate.json").read_bytes() == before
    report = pd.read_csv(tmp_path / "g.csv")
    assert set(report["role"]) >= {"kept", "duplicate"}
    why = report.loc[report["role"] == "kept", "why_kept"]
    assert len(why) == 4 and why.str.startswith(("resolution", "stable order")).all()
    assert why.str.startswith("resolution").any()  # e.g. coffee: the padded copy has the most pixels
    res = runner.invoke(cli, ["dedupe", str(copy), "--workers", "1", "--keep", "priority,resolution"])
    assert res.exit_code == 0, res.output
    assert "dedupe:" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--keep", "newest"], "Error: --keep: expected a comma-separated subset of priority,uncropped,resolution,annotated, "
                           "found newest\n"),
    (["--report", "groups.xlsx"], "Error: --report: expected a file name ending in .csv or .json, found groups.xlsx\n"),
])
def test_cli_errors(tmp_path, args, message):
    ws = Workspace.create(tmp_path / "ws")
    ws.write_manifest(table([row("a"), row("b", near(A, 1))]))
    res = CliRunner().invoke(cli, ["dedupe", str(ws.root), "--no-verify", *args])
    assert res.exit_code == 1
    assert res.output == message


def test_installed_command_runs(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.write_manifest(table([row("a"), row("b", near(A, 1)), row("c", FAR)]))
    curate = Path(sys.executable).with_name("curate")
    proc = subprocess.run([str(curate), "dedupe", str(ws.root), "--no-verify", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dedupe"]["duplicates"] == 1
    assert ws.runs()[-1]["command"] == "dedupe"


# -- the shared corpus ---------------------------------------------------------------


CORPUS_PHOTOS = ["faces_misc/3ddfa_test2.jpg", "faces_misc/fr_two_people.jpg", "photos/pillow_flower.jpg"]
# Files kept as they are: near-but-different photos and the low-information trap.
CORPUS_NEGATIVES = [
    "photos/skimage_page.png", "photos/cleanvision_image_417.png", "photos/skimage_text.png",
    "photos/imagededup_ukbench08976.jpg", "photos/imagededup_ukbench08996.jpg", "photos/imagededup_ukbench09012.jpg",
    "photos/imagededup_ukbench09040.jpg", "photos/skimage_motorcycle_left.png", "photos/skimage_motorcycle_right.png",
    "photos/skimage_brick.png", "photos/skimage_gravel.png", "faces_misc/fa_grass.jpg",
    "photos/cleanvision_image_103.png", "photos/cleanvision_image_408.png",  # a real near-duplicate pair
]


@pytest.mark.corpus
def test_corpus_transforms_and_hard_negatives(corpus, tmp_path, copy_tree):
    from curate.imageio import load_display

    photos = {Path(p).stem: load_display(corpus / p) for p in CORPUS_PHOTOS}
    for img in photos.values():
        img.thumbnail((800, 800))
    logo = load_display(corpus / "photos/imagededup_copyleft.tiff")
    folder = tmp_path / "set"
    write_copies(photos, logo, folder)
    copy_tree(corpus, "set", CORPUS_NEGATIVES)  # into the same folder, names as in the corpus
    # Every photo of every person in faces_by_person: same face, different photos.
    copy_tree(corpus / "faces_by_person", "set/people")
    _, manifest, summary = dedupe_folder(folder, tmp_path / "ws")
    groups = grouping(manifest)
    copies = {k: v for k, v in groups.items() if "__" in k}
    misses, false = misses_and_false_merges(copies)
    assert misses == [] and false == []
    by_group: dict[str, set[str]] = {}
    for name, g in groups.items():
        if "__" not in name and g is not None:
            by_group.setdefault(g, set()).add(Path(name).name)
    # fr_two_people.jpg is a collage of two portraits cut from faces_by_person's biden.jpg and obama3.jpg:
    # its copies and biden.jpg are one picture (issue 15 finds collage tiles). No other copy joins a corpus file.
    two_people = {v for k, v in copies.items() if k.startswith("fr_two_people__")}
    assert {g for g, names in by_group.items() if names & {"biden.jpg", "obama3.jpg"}} <= two_people
    assert not (set(by_group) & set(copies.values())) - two_people
    # Only the real near duplicates group: one photo colour-graded, obama's photo
    # at 480p/720p plus a crop of it (faces_by_person/obama, per SOURCES.md), and the collage's two sources.
    assert sorted(map(sorted, by_group.values())) == [
        ["biden.jpg", "obama3.jpg"],
        ["cleanvision_image_103.png", "cleanvision_image_408.png"],
        ["obama-480p.jpg", "obama-720p.jpg", "obama.jpg"],
    ]
    assert summary["dedupe"]["low_information"] >= 1  # the almost black frame


def test_a_pair_that_crashes_its_worker_is_not_merged_and_the_rest_is_unchanged(tmp_path, skimage_dir,
                                                                                crashing_decoder):
    """A real segfault in the JPEG decoder of a verify worker (issue 18): the pair is reported as not
    verified, the other pairs get the same answers as an undisturbed run, and nothing hangs."""
    names = ["astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
             "gravel.png", "horse.png", "moon.png", "page.png", "rocket.jpg"]
    paths = []
    for n in names:
        Image.open(skimage_dir / n).convert("RGB").save(tmp_path / f"{Path(n).stem}.jpg", quality=90)
        paths.append(str(tmp_path / f"{Path(n).stem}.jpg"))
    paths.append(str(crashing_decoder.save_poison(Image.open(skimage_dir / "astronaut.png"), tmp_path / "poison.jpg",
                                                  "segfault")))
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))] + [(0, len(names))]
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    d4 = np.zeros(len(pairs), dtype=int)
    known = np.zeros(len(pairs), dtype=bool)
    opts = DedupeOptions(workers=2)
    path_arr = np.array(paths, dtype=object)
    accepted, methods, _, why_not = within(300, lambda: verify_candidates(path_arr, a, b, d4, known, opts))
    assert not accepted[-1] and why_not[-1] == "not verified: worker process killed by signal 11 (SIGSEGV) (3 attempts)"
    crashing_decoder.off()
    clean = verify_candidates(path_arr, a, b, d4, known, opts)
    assert clean[0][-1]  # the poison file is a re-encoded copy of the astronaut: verified once it decodes
    assert list(accepted[:-1]) == list(clean[0][:-1]) and list(why_not[:-1]) == list(clean[3][:-1])


# -- copy names lose ties (issue 17: dedupe kept "chelsea (1).jpg" over "chelsea.jpg"; the names: tests/test_groups.py)

def test_copy_names_lose_ties_at_ingest_and_in_dedupe(tmp_path: Path, skimage_dir: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    cat = Image.open(skimage_dir / "chelsea.png").convert("RGB")
    cat.save(src / "chelsea.jpg", quality=95)
    shutil.copy2(src / "chelsea.jpg", src / "chelsea (1).jpg")  # the same bytes, downloaded twice
    cat.save(src / "Copy of chelsea.jpg", quality=80)  # the same size, re-encoded: a near duplicate
    ws, m, summary = dedupe_folder(src, tmp_path / "ws", report=str(tmp_path / "groups.csv"))
    rows = m.set_index("rel_path")
    report = pd.read_csv(tmp_path / "groups.csv")
    kept_line = report[report["role"] == "kept"].iloc[0]
    assert Path(kept_line["path"]).name == "chelsea.jpg"
    assert kept_line["why_kept"] in ("name: chelsea (1).jpg looks like a copy",
                                     "name: Copy of chelsea.jpg looks like a copy")
    assert rows.loc["chelsea.jpg", "status"] == "kept"
    assert rows.loc["chelsea (1).jpg", ["status", "reason", "decided_by"]].tolist() == ["dropped", "duplicate",
                                                                                       "ingest"]
    assert rows.loc["Copy of chelsea.jpg", ["status", "reason", "decided_by"]].tolist() == ["dropped", "duplicate",
                                                                                           "dedupe"]
    assert set(rows["dup_group"]) == {rows.loc["chelsea.jpg", "sample_id"]}


def test_the_label_vote_keeps_a_copy_with_the_groups_majority_label(tmp_path, skimage_dir):
    """Issue 16: near copies in three sources, the most trusted one mislabelled: the kept copy carries the label
    two of the three agree on, and the group report says why."""
    from PIL import Image as PILImage

    from curate.stages.dedupe import DedupeOptions, dedupe
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    cat = PILImage.open(skimage_dir / "chelsea.png")
    specs = []
    for name, label, size in (("trusted", "dog", (451, 300)), ("b", "cat", (400, 266)), ("c", "cat", (300, 200))):
        (tmp_path / name / label).mkdir(parents=True)
        cat.resize(size).save(tmp_path / name / label / "chelsea.jpg", quality=90)
        specs.append(SourceSpec(tmp_path / name, name=name, layout="folder"))
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions(specs, workers=1))
    res = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1, report=tmp_path / "groups.json"))
    m = ws.read_manifest()
    kept = m[m["status"] == "kept"]
    assert kept["source"].tolist() == ["b"] and kept["label"].tolist() == ["cat"]  # not trusted's dog
    assert m["label_conflict"].all()  # reported, not settled: `curate labels --resolve` settles it
    group = json.loads((tmp_path / "groups.json").read_text())["groups"][0]
    assert group["why"] == "label vote: cat is the group's majority (2 of 3)"
    assert res.summary["label_conflicts"] == 3  # rows in conflicting groups
