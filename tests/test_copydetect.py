"""curate.copydetect: local features stored at ingest, the sub-quadratic candidate search, and the geometry.

Copies are made here from real photos with parameters chosen apart from
benchmarks/dedupe_bench.py's (other crop areas and aspects, other turns, other
canvases), so that the tests check kinds of edit, not the bench's numbers.
The hard negatives come from the shared corpus: several photos of one person,
ukbench's four views of one object, adjacent tiles of one photo, and two pages
of one document layout.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from curate.copydetect import (
    BUCKET_CAP,
    MIN_INLIERS,
    N_KEYPOINTS,
    _bucket_pairs,
    candidate_pairs,
    decode,
    describe,
    encode,
    find_copy_pairs,
    match_features,
)
from curate.stages.dedupe import DedupeOptions, dedupe
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.workspace import Workspace


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _turn_crop(img: Image.Image, deg: float, keep: float) -> Image.Image:
    turned = img.rotate(deg, resample=Image.Resampling.BICUBIC, expand=True)
    w, h = turned.size
    cw, ch = round(w * keep), round(h * keep)
    return turned.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _window(img: Image.Image, scale: float) -> Image.Image:
    """The photo shown at ``scale`` in a desktop window: a dark title bar, a white side panel with text lines."""
    shown = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    out = Image.new("RGB", (shown.width + 180, shown.height + 70), (250, 250, 250))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width, 30), fill=(20, 30, 50))
    for i in range(6):
        draw.text((shown.width + 30, 50 + 20 * i), f"comment {i}: nice shot", fill=(10, 10, 10))
    out.paste(shown, (12, 44))
    return out


# Each edit keeps at least half of the picture; parameters differ from the bench's.
EDITS = {
    "crop_52pct_wide": lambda im: im.crop((round(im.width * 0.05), round(im.height * 0.3),
                                           round(im.width * 0.95), round(im.height * 0.88))),
    "crop_55pct_tall": lambda im: im.crop((round(im.width * 0.3), 0, round(im.width * 0.88), round(im.height * 0.95))),
    "window_80pct": lambda im: _window(im, 0.8),
    "wide_frame": lambda im: ImageOps.expand(im, border=(40, 90), fill=(30, 140, 60)),
    "turn_22_crop": lambda im: _turn_crop(im, -22, 0.62),
    "mirror_rot90_crop": lambda im: ImageOps.mirror(im.crop((0, 0, round(im.width * 0.8), round(im.height * 0.75))))
    .transpose(Image.Transpose.ROTATE_90),
    "crop_resize_q40": lambda im: _jpeg(im.crop((round(im.width * 0.2), round(im.height * 0.1), im.width,
                                                 round(im.height * 0.85))).resize((220, 190)), 40),
    "grey_crop_blur": lambda im: ImageOps.grayscale(im.crop((0, round(im.height * 0.25), round(im.width * 0.75),
                                                             im.height))).filter(ImageFilter.GaussianBlur(1.6)),
}


def _photo(name: str) -> Image.Image:
    # The photos bundled in the package (skimage.data_dir points at a download cache once pooch is installed).
    return Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")


def test_describe_encode_decode_round_trip() -> None:
    gray = _gray(_photo("astronaut.png"))
    text = describe(gray)
    assert text is not None
    f = decode(text)
    assert 0 < len(f.xy) <= N_KEYPOINTS
    assert f.size_wh == (224, 224)  # 512 px resized to the feature size
    assert f.desc.shape == f.mirror_desc.shape == (len(f.xy), 32)
    assert encode(f) == text
    assert (f.xy >= 0).all() and (f.xy[:, 0] < 224).all()


def test_flat_image_has_no_keypoints_and_bad_values_are_refused() -> None:
    assert describe(np.full((300, 200), 128, np.uint8)) is None
    with pytest.raises(ValueError, match="expected"):
        decode(describe(_gray(_photo("coffee.png")))[:-8])
    with pytest.raises(ValueError):
        decode("not base64!")


def test_bucket_pairs_pairs_every_member_of_small_buckets_only() -> None:
    key = np.array([5, 7, 5, 5, 9, 7] + [3] * (BUCKET_CAP + 1), np.uint32)
    got = {tuple(divmod(int(p), len(key))) for p in _bucket_pairs(key, BUCKET_CAP)}
    assert got == {(0, 2), (0, 3), (2, 3), (1, 5)}  # the bucket of BUCKET_CAP + 1 is a stop word


@pytest.mark.parametrize("photo", ["astronaut.png", "chelsea.png", "coffee.png"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_copy_is_a_candidate_with_geometry(photo: str, edit: str) -> None:
    img = _photo(photo)
    copy = EDITS[edit](img)
    others = [_photo(n) for n in ("rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg")]
    values = [describe(_gray(x)) for x in (img, copy, *others)]
    a, b, inliers, mirror = find_copy_pairs(values)
    found = {(int(x), int(y)): (int(n), bool(m)) for x, y, n, m in zip(a, b, inliers, mirror, strict=True)}
    assert (0, 1) in found, f"{edit} of {photo} not found; pairs {found}"
    assert found[(0, 1)][0] >= MIN_INLIERS
    assert found[(0, 1)][1] == ("mirror" in edit)


def test_different_photos_share_no_geometry() -> None:
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png",
             "hubble_deep_field.jpg", "ihc.png", "coins.png", "brick.png"]
    values = [describe(_gray(_photo(n))) for n in names]
    a, b, _, _ = find_copy_pairs(values)
    assert not len(a), [(names[i], names[j]) for i, j in zip(a, b, strict=True)]


def test_candidates_grow_with_keypoints_not_pairs() -> None:
    """Many copies of one photo: the bucket cap keeps the candidate work bounded (stop words vote for nothing)."""
    img = _photo("chelsea.png")
    feats = [decode(describe(_gray(img.resize((300 + 7 * k, 200 + 5 * k))))) for k in range(40)]
    a, b, votes = candidate_pairs(feats)
    assert len(a) <= 40 * 39 // 2
    assert (votes >= 2).all()


# -- end to end through ingest and dedupe, with hard negatives from the corpus ----------------


def _ingest(src: Path, tmp: Path) -> Workspace:
    ws = Workspace.create(str(tmp / "ws"))
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="s", layout="flat")], workers=1))
    return ws


def _groups(ws: Workspace) -> dict[str, str | None]:
    m = pd.read_parquet(ws.root / "manifest.parquet")
    return dict(zip(m["rel_path"], m["dup_group"], strict=True))


def test_dedupe_groups_crop_and_screenshot_and_keeps_the_uncropped_original(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    img = _photo("astronaut.png")
    img.save(src / "astronaut.jpg", quality=92)
    EDITS["crop_55pct_tall"](img).save(src / "astronaut_crop.jpg", quality=90)
    EDITS["window_80pct"](img).save(src / "astronaut_window.png")
    _photo("coffee.png").save(src / "coffee.jpg")
    ws = _ingest(src, tmp_path)
    ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1))
    m = pd.read_parquet(ws.root / "manifest.parquet").set_index("rel_path")
    group = m.loc["astronaut.jpg", "dup_group"]
    assert group is not None
    assert m.loc["astronaut_crop.jpg", "dup_group"] == group
    assert m.loc["astronaut_window.png", "dup_group"] == group
    assert pd.isna(m.loc["coffee.jpg", "dup_group"])
    # Containment is recorded: the crop lies inside the original, in the right place.
    original = m.loc["astronaut.jpg", "sample_id"]
    crop = m.loc["astronaut_crop.jpg"]
    assert crop["contained_in"] in (original, m.loc["astronaut_window.png", "sample_id"])
    if crop["contained_in"] == original:
        corners = np.array(json.loads(crop["match_region"]))
        assert corners.shape == (4, 2)
        x1, y1 = corners.min(axis=0)
        x2, y2 = corners.max(axis=0)
        assert abs(x1 - 512 * 0.3) < 15 and abs(x2 - 512 * 0.88) < 15 and y1 < 15 and abs(y2 - 512 * 0.95) < 15
    # The original (not the crop) is kept when the crop is named before it and is a copy-free name.
    assert m.loc["astronaut_crop.jpg", "status"] == "dropped"
    assert pd.notna(m.loc["astronaut.jpg", "contained_in"]) or m.loc["astronaut.jpg", "status"] == "kept" \
        or m.loc["astronaut_window.png", "status"] == "kept"


def test_crop_loses_to_its_original_even_at_higher_resolution(tmp_path: Path) -> None:
    """The uncropped criterion comes before resolution: an upscaled crop is still the crop."""
    src = tmp_path / "src"
    src.mkdir()
    img = _photo("chelsea.png")  # 451 x 300
    img.save(src / "b_original.jpg", quality=92)
    crop = img.crop((60, 20, 400, 280)).resize((680, 520), Image.Resampling.LANCZOS)  # more pixels than the original
    crop.save(src / "a_crop_upscaled.jpg", quality=92)
    ws = _ingest(src, tmp_path)
    res = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1))
    m = pd.read_parquet(ws.root / "manifest.parquet").set_index("rel_path")
    assert m.loc["b_original.jpg", "status"] == "kept"
    assert m.loc["a_crop_upscaled.jpg", "status"] == "dropped"
    assert m.loc["a_crop_upscaled.jpg", "contained_in"] == m.loc["b_original.jpg", "sample_id"]
    assert res.summary["dedupe"]["groups"] == 1


def _tiles(img: Image.Image) -> list[Image.Image]:
    """Four adjacent, non-overlapping quarters of one big photo."""
    w, h = img.size
    return [img.crop((x, y, x + w // 2, y + h // 2)) for y in (0, h // 2) for x in (0, w // 2)]


def _pages(tmp: Path) -> list[Path]:
    """Two pages of one document layout: same header, rules and columns, other words."""
    out = []
    for k, words in enumerate((["quarterly", "revenue", "grew"], ["annual", "staff", "meeting"])):
        page = Image.new("RGB", (620, 880), (255, 255, 255))
        d = ImageDraw.Draw(page)
        d.rectangle((40, 40, 580, 110), fill=(30, 60, 120))
        d.text((60, 65), "ACME CORP - INTERNAL REPORT", fill=(255, 255, 255))
        for line in range(30):
            y = 150 + 22 * line
            text = " ".join(words[(line + i) % 3] + str((line * 7 + i * 3 + k * 11) % 97) for i in range(6))
            d.text((60, y), text, fill=(0, 0, 0))
            d.line((40, y + 18, 580, y + 18), fill=(200, 200, 200))
        p = tmp / f"page_{k}.png"
        page.save(p)
        out.append(p)
    return out


def test_hard_negatives_stay_apart_while_copies_are_found(corpus: Path, tmp_path: Path) -> None:
    """Several photos of one person, ukbench's 4 views of one object, adjacent tiles, two pages of a layout."""
    src = tmp_path / "src"
    src.mkdir()
    negatives: list[str] = []
    for person in ("angelina", "obama", "jennifer"):
        # obama.jpg, obama-480p.jpg and obama-720p.jpg are resized copies of one photo (SOURCES.md): not negatives
        photos = [p for p in sorted((corpus / "faces_by_person" / person).glob("*.jpg")) if "obama-" not in p.name]
        for p in photos[:4]:
            img = Image.open(p).convert("RGB")
            img.thumbnail((700, 700))
            name = f"{person}_{p.stem}.jpg"
            img.save(src / name, quality=92)
            negatives.append(name)
    ukbench = sorted(corpus.glob("photos/imagededup_ukbench0897*.jpg"))[:4] + sorted(
        corpus.glob("photos/imagededup_ukbench0899*.jpg"))[:4]
    for p in ukbench:
        Image.open(p).convert("RGB").save(src / p.name, quality=92)
        negatives.append(p.name)
    big = Image.open(corpus / "photos" / "skimage_coffee.png").convert("RGB").resize((1000, 800))
    for k, tile in enumerate(_tiles(big)):
        tile.save(src / f"tile_{k}.jpg", quality=92)
        negatives.append(f"tile_{k}.jpg")
    for p in _pages(src):
        negatives.append(p.name)
    # Positives in the same run, so that the test fails if nothing is ever merged.
    base = Image.open(corpus / "photos" / "skimage_chelsea.png").convert("RGB")
    base.save(src / "cat.jpg", quality=92)
    EDITS["turn_22_crop"](base).save(src / "cat_turned.jpg", quality=90)
    EDITS["crop_resize_q40"](base).save(src / "cat_chain.jpg")
    ws = _ingest(src, tmp_path)
    ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1))
    g = _groups(ws)
    assert g["cat.jpg"] is not None and g["cat_turned.jpg"] == g["cat.jpg"] == g["cat_chain.jpg"]
    merged = [(x, y) for x, y in itertools.combinations(negatives, 2) if g.get(x) is not None and g.get(x) == g.get(y)]
    assert not merged, merged


def test_turn_of_30_degrees_keeps_its_geometry() -> None:
    img = _photo("astronaut.png")
    copy = _turn_crop(img, 30, 0.6)
    m = match_features(decode(describe(_gray(img))), decode(describe(_gray(copy))))
    assert m.inliers >= MIN_INLIERS and not m.mirror
    angle = math.degrees(math.atan2(m.model[1, 0], m.model[0, 0]))
    assert abs(abs(angle) - 30) < 4
