"""curate check: each check on a small table that trips it, exit codes, and the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import OptionError
from curate.stages.check import CheckOptions, check
from tests.stages.test_split import make_manifest, make_ws, row


def healthy() -> list[dict[str, Any]]:
    """Two classes of 5 images, split 3/1/1 each, with far-apart hashes."""
    rows = []
    for c, label in enumerate(("cat", "dog")):
        for i, s in enumerate(["train", "train", "train", "val", "test"]):
            h = (0x0F0F0F0F0F0F0F0F * (i + 1) + c * 0x123456789) % 2**64
            rows.append(row(f"{label}{i}", label, split=s, phash=f"{h:016x}"))
    return rows


def results(rows: list[dict[str, Any]], **opts: Any) -> dict[str, dict[str, Any]]:
    res = check(make_manifest(rows), CheckOptions(**opts))
    assert res.write is False  # check never changes the workspace
    return {r["name"]: r for r in res.summary["checks"]}


def test_healthy_workspace_passes() -> None:
    r = results(healthy())
    assert {n: v["status"] for n, v in r.items()} == {
        "group_leak": "pass", "near_duplicate_leak": "pass", "label_conflict": "pass", "class_size": "pass",
        "mixed_sizes": "pass",
        "unsplit": "pass", "class_missing_from_split": "pass", "latent_leak": "pass", "small_image": "pass",
        "odd_aspect": "pass", "split_ratios": "info"}


def _with(changes: dict[str, dict[str, Any]], extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rows = healthy()
    for r in rows:
        r.update(changes.get(r["sample_id"], {}))
    return rows + (extra or [])


@pytest.mark.parametrize("rows, name, status, count", [
    # a duplicate group kept in two splits (e.g. both kept in review)
    (_with({"cat0": {"dup_group": "cat0"}, "cat3": {"dup_group": "cat0"}}), "group_leak", "fail", 1),
    # a derived crop in another split than its photo
    (_with({}, [row("crop", "cat", parent_id="cat4", split="train")]), "group_leak", "fail", 1),
    # two kept images 2 bits apart in train and test
    (_with({"cat4": {"phash": "0f0f0f0f0f0f0f0c"}}), "near_duplicate_leak", "fail", 1),
    # the same pair inside one split is no leak
    (_with({"cat1": {"phash": "0f0f0f0f0f0f0f0c"}}), "near_duplicate_leak", "pass", 0),
    # a group whose representative and dropped duplicate disagree on the label
    (_with({"cat0": {"dup_group": "cat0"}}, [row("x", "dog", status="dropped", reason="duplicate",
                                                   duplicate_of="cat0", dup_group="cat0", split="train")]),
     "label_conflict", "fail", 1),
    # ... resolved in review: the other copy rejected
    (_with({"cat0": {"dup_group": "cat0"}}, [row("x", "dog", status="dropped", reason="rejected_in_review",
                                                   dup_group="cat0", split="train")]),
     "label_conflict", "pass", 0),
    # a class with one source image, even with augmented copies of it
    (_with({}, [row("owl", "owl", split="train"),
                row("owl_c", "owl", split="train", parent_id="owl", layout="augment", origin_path="/data/owl.jpg")]),
     "class_size", "fail", 1),
    # a kept row without a split while the rest have one
    (_with({"cat2": {"split": None}}), "unsplit", "warn", 1),
    # a class that is missing from val
    (_with({"dog3": {"split": "train"}}), "class_missing_from_split", "warn", 1),
    # a dropped duplicate left in another split than its group's kept row
    (_with({"cat0": {"dup_group": "cat0"}}, [row("x", "cat", status="dropped", reason="duplicate",
                                                   duplicate_of="cat0", dup_group="cat0", split="test")]),
     "latent_leak", "warn", 1),
    # a kept 40 px thumbnail
    (_with({"cat1": {"width": 40, "height": 40}}), "small_image", "warn", 1),
    # a kept 5:1 panorama
    (_with({"cat1": {"width": 500, "height": 100}}), "odd_aspect", "warn", 1),
])
def test_each_check_trips(rows: list[dict[str, Any]], name: str, status: str, count: int) -> None:
    r = results(rows)[name]
    assert (r["status"], r["count"]) == (status, count), r
    if status != "pass":
        assert r["examples"]


def test_near_duplicate_example_names_both_files() -> None:
    r = results(_with({"cat4": {"phash": "0f0f0f0f0f0f0f0c"}}))["near_duplicate_leak"]
    assert r["examples"] == ["src/cat0.jpg (train) ~ src/cat4.jpg (test): 2 bits"]
    assert r["message"] == "1 pairs of kept rows in different splits are within 4 bits (phash)"


def test_options_change_thresholds() -> None:
    rows = _with({"cat4": {"phash": "0f0f0f0f0f0f0f0c"}, "cat1": {"width": 40, "height": 40}})
    r = results(rows, near_bits=1, min_side_px=32, min_per_class=6)
    assert r["near_duplicate_leak"]["status"] == "pass"  # 2 bits > 1
    assert r["small_image"]["status"] == "pass"
    assert r["class_size"]["status"] == "fail" and r["class_size"]["examples"] == ["cat: 5", "dog: 5"]


def test_strict_and_skip() -> None:
    rows = _with({"cat2": {"split": None}})
    assert check(make_manifest(rows), CheckOptions()).summary["failed"] == []
    assert check(make_manifest(rows), CheckOptions(strict=True)).summary["failed"] == ["unsplit"]
    s = check(make_manifest(rows), CheckOptions(strict=True, skip=("unsplit", "odd_aspect"))).summary
    assert s["failed"] == [] and {"unsplit", "odd_aspect"}.isdisjoint(r["name"] for r in s["checks"])
    assert "small_image" in [r["name"] for r in s["checks"]]
    with pytest.raises(OptionError, match=r"--skip: expected check names from \['group_leak', "):
        check(make_manifest(rows), CheckOptions(skip=("leaks",)))


def test_group_column_from_last_split_run(tmp_path: Path) -> None:
    # Split by person, then someone moves one of ann's photos to test by hand.
    rows = [row(f"r{i}", "cat", person=p) for i, p in enumerate(["ann"] * 4 + ["bob"] * 4 + ["cy"] * 2)]
    ws = make_ws(tmp_path, rows)
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--group", "person", "--ratios", "train=0.5,test=0.5"])
    assert r.exit_code == 0, r.output
    m = ws.read_manifest()
    ann = m.index[m["person"] == "ann"]
    m.loc[ann[0], "split"] = "test" if m.loc[ann[1], "split"] == "train" else "train"
    ws.write_manifest(m)
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--json"])
    s = json.loads(r.stdout)
    assert s["group"] == "person" and "group_leak" in s["failed"] and r.exit_code == 1
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--group", "dup", "--json"])
    assert "group_leak" not in json.loads(r.stdout)["failed"]


def test_split_ratios_against_the_last_split(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, [row(f"r{i}", "cat") for i in range(10)])
    CliRunner().invoke(cli, ["split", str(ws.root), "--ratios", "6:2:2"])
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--json"])
    ratios = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "split_ratios")
    assert ratios["message"] == ("achieved train/val/test 0.60/0.20/0.20 (target 0.60/0.20/0.20; augmented copies "
                                 "not counted)")
    assert ratios["ratios"]["per_class"]["cat"] == {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.mark.parametrize(("ratios", "target"), [("6:2:2", "0.60/0.20/0.20"), ("train=0.5,test=0.5", "0.50/0.00/0.50"),
                                               ("not ratios", None), (7, None)])
def test_split_ratios_of_a_hand_written_split_record(tmp_path: Path, ratios: object, target: str | None) -> None:
    ws = make_ws(tmp_path, [row(f"r{i}", "cat", split="train") for i in range(10)])
    ws.record_run("split", {"ratios": ratios})  # as typed, not as `curate split` records it
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--json"])
    msg = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "split_ratios")["message"]
    assert msg.startswith("achieved train/val/test 1.00/0.00/0.00")
    assert (f"(target {target};" in msg) if target else "target" not in msg


# -- the command ------------------------------------------------------------------

def test_cli_exit_codes_and_text(tmp_path: Path) -> None:
    ok = make_ws(tmp_path, healthy(), "ok")
    r = CliRunner().invoke(cli, ["check", str(ok.root)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"check {ok.root}: OK (0 failed, 0 warnings, 10 kept rows)"
    bad = make_ws(tmp_path, _with({"cat4": {"phash": "0f0f0f0f0f0f0f0c"}}), "bad")
    r = CliRunner().invoke(cli, ["check", str(bad.root)])
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0] == f"check {bad.root}: FAIL (1 failed, 0 warnings, 10 kept rows)"
    assert lines[2].split()[:2] == ["FAIL", "near_duplicate_leak"]
    assert lines[3].strip() == "- src/cat0.jpg (train) ~ src/cat4.jpg (test): 2 bits"
    r = CliRunner().invoke(cli, ["check", str(bad.root), "--skip", "near_duplicate_leak,class_size"])
    assert r.exit_code == 0, r.output


def test_cli_bad_skip_name(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, healthy())
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--skip", "leaks"])
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: --skip: expected check names from ['group_leak', 'near_duplicate_leak', ")
    assert r.stderr.rstrip().endswith("found ['leaks']")


def test_installed_command_gates_ci(tmp_path: Path) -> None:
    # The real `curate` entry point, as a CI job would run it.
    exe = Path(sys.executable).parent / "curate"
    bad = make_ws(tmp_path, _with({"cat0": {"dup_group": "cat0"}, "cat3": {"dup_group": "cat0"}}), "bad")
    p = subprocess.run([str(exe), "check", str(bad.root), "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert json.loads(p.stdout)["failed"] == ["group_leak"]


def test_a_check_is_recorded_in_runs_and_changes_no_table(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, _with({"cat4": {"phash": "0f0f0f0f0f0f0f0c"}}))
    before = (ws.root / "curate.json").read_bytes()  # the pointer to the committed tables
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--min-per-class", "3"])
    assert r.exit_code == 1
    (rec,) = [run for run in ws.runs() if run["command"] == "check"]
    assert rec["options"]["min_per_class"] == 3
    assert rec["summary"]["failed"] == ["near_duplicate_leak"]
    assert (ws.root / "curate.json").read_bytes() == before


def test_a_crop_straddling_splits_fails_the_check(tmp_path: Path) -> None:
    """A crop keeping ~60% of a photo, in test while the photo is in train, is a leak (issue 15).

    Its pHash is far from the photo's (the old pHash <= 4 test passed it); dedupe's search finds it.
    """
    import pandas as pd
    import skimage
    from PIL import Image

    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    src = tmp_path / "src"
    src.mkdir()
    photos = {"cat": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg", "astronaut": "astronaut.png"}
    for name, f in photos.items():
        Image.open(Path(skimage.__file__).parent / "data" / f).convert("RGB").save(src / f"{name}.jpg", quality=92)
    cat = Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB")
    cat.crop((120, 40, 451, 300)).save(src / "cat_crop.jpg", quality=85)  # 64% of the picture
    ws = Workspace.create(str(tmp_path / "ws"))
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="s", layout="flat")], workers=1))
    m = pd.read_parquet(ws.root / "manifest.parquet")
    split = {"cat.jpg": "train", "cat_crop.jpg": "test", "coffee.jpg": "train", "rocket.jpg": "test",
             "astronaut.jpg": "val"}
    m["split"] = m["rel_path"].map(split)
    m["label"] = "x"
    from curate.hashing import hamming

    ph = m.set_index("rel_path")["phash"]
    assert hamming(ph["cat.jpg"], ph["cat_crop.jpg"]) > 4  # the old test could not see it
    res = check(m, CheckOptions(workers=1, skip=("class_size", "split_ratios")))
    leak = {r["name"]: r for r in res.summary["checks"]}["near_duplicate_leak"]
    assert leak["status"] == "fail" and leak["count"] == 1, leak
    assert "cat.jpg (train)" in leak["examples"][0] and "cat_crop.jpg (test)" in leak["examples"][0]
    # The same photos all in one split: no leak.
    m["split"] = "train"
    res = check(m, CheckOptions(workers=1, skip=("class_size", "split_ratios")))
    assert {r["name"]: r for r in res.summary["checks"]}["near_duplicate_leak"]["status"] == "pass"
