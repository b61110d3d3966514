"""curate balance: diverse undersampling, augmented oversampling with boxes, idempotence.

Real photos come from ../shared/data/faces_by_person (the ``corpus`` fixture):
a few small images of four people, with synthetic boxes added so that box
handling is exercised. The selection logic itself is tested on hash tables.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from curate.cli import cli
from curate.errors import OptionError
from curate.stages.balance import (
    BalanceOptions,
    balance,
    diverse_subset,
    parse_splits,
    parse_target,
    resolve_target,
)
from curate.stages.split import SplitOptions, split
from curate.workspace import Workspace
from tests.stages.test_split import make_manifest, make_ws, row

# -- options ---------------------------------------------------------------------

@pytest.mark.parametrize("counts, target, expected", [
    ({"a": 8, "b": 3, "c": 1}, "max", 8),
    ({"a": 8, "b": 3, "c": 1}, "min", 1),
    ({"a": 8, "b": 3, "c": 1}, "median", 3),
    ({"a": 8, "b": 3}, "median", 6),  # 5.5 rounds half up
    ({"a": 8, "b": 3}, 1000, 1000),  # a number is used as it is
])
def test_resolve_target(counts: dict[str, int], target: int | str, expected: int) -> None:
    assert resolve_target(counts, target) == expected


@pytest.mark.parametrize("call, message", [
    (lambda: parse_target("most"), "--target: expected a count per class or one of max, min, median, found 'most'"),
    (lambda: parse_target("0"), "--target: expected a count >= 1, found 0"),
    (lambda: parse_splits("train,holdout"), "--splits: expected split names from ['train', 'val', 'test', 'none'], "
                                            "found 'holdout'"),
])
def test_option_errors(call: Any, message: str) -> None:
    with pytest.raises(OptionError) as e:
        call()
    assert str(e.value) == message


def test_parse_splits_aliases_and_none() -> None:
    assert parse_splits("training, valid,none,train") == ("train", "val", "none")


# -- diverse subsets ---------------------------------------------------------------

def _bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a ^ b).astype(int)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40), st.integers(1, 40))
def test_diverse_subset_removes_the_closest_first(values: list[int], k: int) -> None:
    h = np.array(values, dtype=np.uint64)
    sel, nearest, dist = diverse_subset(h, k)
    assert sel.sum() == min(k, len(h))
    s = np.flatnonzero(sel)
    # Every row's distance to the subset is right, and its nearest is a selected row.
    for i in range(len(h)):
        assert sel[nearest[i]]
        assert dist[i] == _bits(h[s], h[i]).min() == _bits(h[nearest[i]], h[i])
    # Farthest-point property: no removed row is farther from the subset than two kept rows
    # are from each other. So if two kept rows are near-duplicates (within t bits), every
    # removed row is within t bits of a kept one: near-duplicates go first.
    if (~sel).any() and len(s) > 1:
        closest_kept_pair = min(_bits(h[a], h[b]) for a in s for b in s if a < b)
        assert dist[~sel].max() <= closest_kept_pair


def test_diverse_subset_keeps_pinned_and_unhashed_rows() -> None:
    h = np.array([0, 0, 1, 2**64 - 1, 7], dtype=np.uint64)
    valid = np.array([True, True, True, True, False])
    pinned = np.array([False, True, False, False, False])
    sel, _, _ = diverse_subset(h, 3, pinned=pinned, valid=valid)
    # the pinned row, the row without a hash (cannot be judged), then the farthest one
    assert sel.tolist() == [False, True, False, True, True]


def test_diverse_subset_prefers_the_better_row_on_ties() -> None:
    h = np.array([0, 0, 0], dtype=np.uint64)  # three identical hashes
    sel, _, _ = diverse_subset(h, 1, preference=np.array([2, 0, 1]))
    assert sel.tolist() == [False, True, False]


# -- undersampling on tables (no pixels needed) ---------------------------------------

def _hash_rows(n: int, label: str, **kw: Any) -> list[dict[str, Any]]:
    rng = np.random.default_rng(len(label))
    out = []
    for i in range(n):
        h = int(rng.integers(0, 2**63)) | (i << 60)
        out.append(row(f"{label}{i:02d}", label, split="train", phash=f"{h:016x}", **kw))
    return out


def test_undersample_marks_rows_and_respects_review() -> None:
    rows = _hash_rows(12, "a") + _hash_rows(5, "b")
    rows[0]["decided_by"] = "review"  # a person kept a00: never removed
    rows[-1].update(split="val")  # b04 is in val, which is not balanced by default
    rows.append(row("a_copy", "a", split="train", phash=rows[3]["phash"]))  # an exact hash twin of a03
    m = make_manifest(rows)
    res = balance(m, BalanceOptions(target="min", strategy="undersample"), ws=None)  # type: ignore[arg-type]
    out = res.manifest.set_index("sample_id")
    kept_a = out[(out["label"] == "a") & (out["status"] == "kept")]
    assert len(kept_a) == 4  # min over train: b has 4 there
    assert out.loc["a00", "status"] == "kept"
    dropped = out[out["reason"] == "balanced_out"]
    assert len(dropped) == 13 - 4 and (dropped["decided_by"] == "balance").all()
    assert {"a03", "a_copy"} & set(dropped.index)  # one of the twins went
    twin = "a_copy" if "a_copy" in dropped.index else "a03"
    assert dropped.loc[twin, "detail"].startswith("near-duplicate of kept ")
    assert out.loc["b04", "status"] == "kept"
    assert res.summary["after"] == {"a": {"train": 4}, "b": {"train": 4, "val": 1}}
    assert res.summary["near_duplicates_removed"] >= 1
    # Idempotent: a second run decides the same rows.
    again = balance(res.manifest, BalanceOptions(target="min", strategy="undersample"), ws=None)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(again.manifest, res.manifest)


def test_balance_needs_rows_in_the_split(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, [row("a"), row("b", "b")])
    r = CliRunner().invoke(cli, ["balance", str(ws.root)])
    assert r.exit_code == 1
    assert r.stderr == ("Error: --splits: expected labelled kept rows in train, found none 2 (run `curate split WS` "
                        "first, or pass --splits none to balance rows without a split)\n")


# -- oversampling on real photos -------------------------------------------------------

SUBSET = {
    "jack": ["img16.jpg", "img17.jpg", "img61.jpg", "img62.jpg"],
    "kit_harington": ["john1.jpeg", "john2.jpeg"],
    "jeff": ["img21.jpg"],
    "obama": ["obama-480p.jpg", "obama-720p.jpg", "obama1.jpg", "obama2.jpg"],  # 480p/720p: 0 bits apart
}


@pytest.fixture(scope="module")
def base_ws(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small workspace of real faces photos: all train except jack/img62 (val); boxes on every image."""
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest

    root = tmp_path_factory.mktemp("balance")
    src = root / "faces"
    for person, files in SUBSET.items():
        (src / person).mkdir(parents=True)
        for f in files:
            shutil.copy2(corpus / "faces_by_person" / person / f, src / person / f)
    ws = Workspace.create(root / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, "faces")], workers=1))
    m = ws.read_manifest()
    m["split"] = np.where(m["rel_path"] == "jack/img62.jpg", "val", "train")
    ws.write_manifest(m)
    boxes = []
    for r in m.itertuples():
        w, h = int(r.width), int(r.height)  # a centre box, and one touching the right edge
        boxes.append({"sample_id": r.sample_id, "label": "face", "x1": 0.3 * w, "y1": 0.2 * h, "x2": 0.6 * w,
                      "y2": 0.7 * h, "origin": "test", "iscrowd": False})
        boxes.append({"sample_id": r.sample_id, "label": "badge", "x1": 0.85 * w, "y1": 0.4 * h, "x2": float(w),
                      "y2": 0.5 * h, "score": 0.9, "origin": "test", "iscrowd": False})
    ws.write_annotations(pd.DataFrame(boxes), m)
    return ws.root


@pytest.fixture()
def faces_ws(base_ws: Path, tmp_path: Path) -> Workspace:
    shutil.copytree(base_ws, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws")


def _object_files(ws: Workspace) -> set[str]:
    return {str(p) for p in ws.objects_dir.rglob("*") if p.is_file()}


def test_oversample_real_photos_records_copies_and_boxes(faces_ws: Workspace) -> None:
    ws = faces_ws
    before = ws.read_manifest()
    r = CliRunner().invoke(cli, ["balance", str(ws.root), "--target", "max", "--strategy", "oversample", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["target"] == {"train": 4}
    assert s["after"] == {"jack": {"train": 4, "val": 1}, "kit_harington": {"train": 4},
                          "jeff": {"train": 4}, "obama": {"train": 4}}
    assert s["copies_made"] == 1 + 2 + 3 and s["balanced_out"] == 0  # jack 3, kit 2, jeff 1 -> 4

    m = ws.read_manifest().set_index("sample_id", drop=False)
    ann = ws.read_annotations()
    copies = m[m["layout"] == "augment"]
    assert len(copies) == 6
    assert copies["parent_id"].value_counts().sort_values().tolist() == [1, 1, 1, 3]  # round-robin over parents
    for c in copies.itertuples():
        parent = m.loc[c.parent_id]
        assert (c.split, c.label, c.origin_path, c.status, c.decided_by) == (
            parent["split"], parent["label"], parent["origin_path"], "kept", "balance")
        data = Path(c.path).read_bytes()
        assert Path(c.path).parent.parent == ws.objects_dir
        assert hashlib.sha256(data).hexdigest() == c.sha256
        with Image.open(c.path) as im:
            assert im.size == (c.width, c.height) == (parent["width"], parent["height"])
        assert isinstance(c.phash, str) and len(c.phash) == 16
        t = json.loads(c.transform)
        assert t["op"] == "augment" and t["parent_wh"] == [parent["width"], parent["height"]]
        assert isinstance(t["seed"], int) and t["config"]["rotate_deg"] == 10.0
        names = [a["name"] for a in t["applied"]]
        assert "RandomBrightnessContrast" in names and "RandomResizedCrop" in names
        boxes = ann[ann["sample_id"] == c.sample_id]
        parent_boxes = ann[ann["sample_id"] == c.parent_id]
        assert t["boxes"] == {"in": 2, "out": len(boxes), "dropped": 2 - len(boxes)}
        assert len(boxes) >= 1 and set(boxes["label"]) <= set(parent_boxes["label"])
        assert (boxes["origin"] == "augment").all()
        # Boxes stay inside the copy's own frame.
        assert ((boxes["x1"] >= 0) & (boxes["y1"] >= 0) & (boxes["x2"] <= c.width) & (boxes["y2"] <= c.height)
                & (boxes["x1"] < boxes["x2"]) & (boxes["y1"] < boxes["y2"])).all()
    # val is untouched.
    val_before = before[before["split"] == "val"].reset_index(drop=True)
    val_after = ws.read_manifest()
    val_after = val_after[val_after["split"] == "val"].reset_index(drop=True)
    pd.testing.assert_frame_equal(val_before, val_after)

    # Re-running is idempotent: the same rows, boxes and files, nothing duplicated.
    files = _object_files(ws)
    r2 = CliRunner().invoke(cli, ["balance", str(ws.root), "--target", "max", "--strategy", "oversample", "--json"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout)["copies_made"] == 0 and json.loads(r2.stdout)["copies_revived"] == 6
    pd.testing.assert_frame_equal(ws.read_manifest(), m.reset_index(drop=True))
    pd.testing.assert_frame_equal(ws.read_annotations(), ann)
    assert _object_files(ws) == files


def test_both_strategies_change_target_and_come_back(faces_ws: Workspace) -> None:
    ws = faces_ws
    first = ws.run_stage("balance", balance, BalanceOptions(target=3))
    s = first.summary
    assert {c: v["train"] for c, v in s["after"].items()} == {"jack": 3, "kit_harington": 3, "jeff": 3, "obama": 3}
    m1, a1 = ws.read_manifest(), ws.read_annotations()
    out = m1[m1["reason"] == "balanced_out"]
    # obama: 4 -> 3, and the one removed is a twin of the 480p/720p pair (0 bits apart).
    obama = out[out["label"] == "obama"]
    assert len(obama) == 1 and obama["rel_path"].item() in ("obama/obama-480p.jpg", "obama/obama-720p.jpg")
    assert obama["detail"].item().startswith("near-duplicate of kept ")
    # A lower target: copies not needed any more are dropped, not deleted.
    second = ws.run_stage("balance", balance, BalanceOptions(target=2))
    assert {c: v["train"] for c, v in second.summary["after"].items()} == {
        "jack": 2, "kit_harington": 2, "jeff": 2, "obama": 2}
    m2 = ws.read_manifest()
    assert len(m2) == len(m1)
    assert (m2.loc[m2["layout"] == "augment", "reason"].dropna() == "balanced_out").all()
    # Back to the first target: the first result again. Only decided_by differs: a row balance
    # removed and then brought back says balance decided to keep it (its earlier decider is not kept).
    ws.run_stage("balance", balance, BalanceOptions(target=3))
    m3 = ws.read_manifest()
    back = (m1["decided_by"] != m3["decided_by"])
    assert (m3.loc[back, "decided_by"] == "balance").all() and (m3.loc[back, "status"] == "kept").all()
    pd.testing.assert_frame_equal(m3.drop(columns="decided_by"), m1.drop(columns="decided_by"))
    pd.testing.assert_frame_equal(ws.read_annotations(), a1)


def test_review_decisions_stand(faces_ws: Workspace) -> None:
    ws = faces_ws
    ws.run_stage("balance", balance, BalanceOptions(target=3, strategy="oversample"))
    m = ws.read_manifest()
    copies = m.index[m["layout"] == "augment"]
    rejected = m.at[copies[0], "sample_id"]
    m.loc[copies[0], ["status", "reason", "decided_by"]] = ["dropped", "rejected_in_review", "review"]
    kept_by_person = m.index[(m["label"] == "obama")][0]
    m.loc[kept_by_person, "decided_by"] = "review"
    ws.write_manifest(m)
    res = ws.run_stage("balance", balance, BalanceOptions(target=1))
    out = ws.read_manifest().set_index("sample_id")
    assert out.loc[rejected, "reason"] == "rejected_in_review"  # not revived
    assert out.loc[m.at[kept_by_person, "sample_id"], "status"] == "kept"  # not balanced out
    assert res.summary["after"]["obama"]["train"] == 1
    # The rejected copy's place is taken by the next copy number, so the class still reaches the target.
    res = ws.run_stage("balance", balance, BalanceOptions(target=3, strategy="oversample"))
    assert {c: v["train"] for c, v in res.summary["after"].items()} == {
        "jack": 3, "kit_harington": 3, "jeff": 3, "obama": 4}
    assert ws.read_manifest().set_index("sample_id").loc[rejected, "reason"] == "rejected_in_review"


def test_resplit_undoes_balance(faces_ws: Workspace) -> None:
    ws = faces_ws
    ws.run_stage("balance", balance, BalanceOptions(target=3))
    res = ws.run_stage("split", split, SplitOptions(resplit=True, seed=1))
    assert any(w.startswith("--resplit undid the last balance (") for w in res.summary["warnings"])
    m = ws.read_manifest()
    copies = m[m["layout"] == "augment"]
    assert (copies["status"] == "dropped").all() and (copies["reason"] == "balanced_out").all()
    assert not ((m["layout"] != "augment") & (m["reason"] == "balanced_out")).any()
    # Every copy still sits in its parent's split.
    parent_split = m.set_index("sample_id")["split"]
    assert (copies["split"].to_numpy() == parent_split.loc[copies["parent_id"]].to_numpy()).all()


def test_balance_text_output(faces_ws: Workspace) -> None:
    r = CliRunner().invoke(cli, ["balance", str(faces_ws.root), "--target", "2", "--strategy", "undersample"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    # jack 3 -> 2, obama 4 -> 2 (its 480p/720p twins both go: each is 28 bits from the two kept)
    assert lines[0] == (f"balance {faces_ws.root}: undersample to train 2 per class; 3 balanced out "
                        "(0 near-duplicates), 0 copies made, 0 kept from an earlier run")
    assert lines[1].split() == ["class", "train", "val"]
    assert lines[2].split() == ["jack", "3", "->", "2", "1"]


def test_pool_renders_the_same_copies(faces_ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two worker processes (spawned, each importing albumentations) must give exactly the
    # rows, boxes and files one process gives.
    import curate.stages.balance as balance_module

    other = Workspace.open(shutil.copytree(faces_ws.root, tmp_path / "seq"))
    monkeypatch.setattr(balance_module, "POOL_MIN_COPIES", 1)
    faces_ws.run_stage("balance", balance, BalanceOptions(target="max", strategy="oversample", workers=2))
    other.run_stage("balance", balance, BalanceOptions(target="max", strategy="oversample", workers=1))
    a, b = faces_ws.read_manifest(), other.read_manifest()
    assert (a["layout"] == "augment").sum() == 6
    cols = [c for c in a.columns if c != "path"]  # paths differ only by the workspace folder
    pd.testing.assert_frame_equal(a[cols], b[cols])
    pd.testing.assert_frame_equal(faces_ws.read_annotations(), other.read_annotations())
    assert {p.name for p in faces_ws.objects_dir.rglob("*.jpg")} == {p.name for p in other.objects_dir.rglob("*.jpg")}


# -- --priority: the user's own photos go last (issue 17) -------------------------------

@pytest.fixture()
def mine_and_crawl(corpus: Path, tmp_path: Path) -> Workspace:
    """Six real obama photos from two sources: two of the user's own ("mine"), four crawled. The crawled
    obama-480p.jpg is the same photo as the user's obama-720p.jpg (0 bits apart)."""
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest

    own = {"mine": ["obama-720p.jpg", "obama.jpg"], "crawl": ["obama-480p.jpg", "obama1.jpg", "obama2.jpg",
                                                              "obama3.jpg"]}
    for source, files in own.items():
        (tmp_path / source / "obama").mkdir(parents=True)
        for f in files:
            shutil.copy2(corpus / "faces_by_person" / "obama" / f, tmp_path / source / "obama" / f)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(tmp_path / "crawl", "crawl"),
                                                  SourceSpec(tmp_path / "mine", "mine")], workers=1))
    m = ws.read_manifest()
    m["split"] = "train"
    ws.write_manifest(m)
    return ws


def _kept_sources(ws: Workspace) -> list[str]:
    m = ws.read_manifest()
    return sorted(m.loc[m["status"] == "kept", "source"])


def test_undersampling_removes_the_least_trusted_source_first(mine_and_crawl: Workspace) -> None:
    ws = mine_and_crawl
    ws.run_stage("balance", balance, BalanceOptions(target=2, strategy="undersample"))
    assert _kept_sources(ws) != ["mine", "mine"]  # by diversity alone, one of the user's photos goes
    r = CliRunner().invoke(cli, ["balance", str(ws.root), "--target", "3", "--strategy", "undersample",
                                 "--priority", "mine,crawl"])
    assert r.exit_code == 0, r.output
    assert _kept_sources(ws) == ["crawl", "mine", "mine"]  # both of mine, then the most diverse crawled one
    m = ws.read_manifest()
    assert m.loc[m["rel_path"] == "obama/obama-480p.jpg", "status"].tolist() == ["dropped"]  # the copy of mine
    ws.run_stage("balance", balance, BalanceOptions(target=1, strategy="undersample", priority=("mine",)))
    assert _kept_sources(ws) == ["mine"]
    r = CliRunner().invoke(cli, ["balance", str(ws.root), "--strategy", "undersample", "--priority", "own"])
    assert r.exit_code == 1
    assert r.stderr == "Error: --priority: expected source names of the workspace (crawl, mine), found own\n"


def test_diverse_subset_takes_tiers_in_order() -> None:
    h = np.array([0, 2**64 - 1, 1, 3], dtype=np.uint64)
    tier = np.array([1, 1, 0, 0])  # the two rows of tier 0 are 1 bit apart, still taken first
    assert diverse_subset(h, 2, tier=tier)[0].tolist() == [False, False, True, True]
    assert diverse_subset(h, 3, tier=tier)[0].tolist() == [False, True, True, True]  # then the farthest of tier 1


def test_augmented_copies_are_named_as_copies_in_an_export(faces_ws: Workspace, tmp_path: Path) -> None:
    ws = faces_ws
    ws.run_stage("balance", balance, BalanceOptions(target="max", strategy="oversample"))
    out = tmp_path / "export"
    r = CliRunner().invoke(cli, ["export", str(ws.root), "--format", "folder", "--out", str(out)])
    assert r.exit_code == 0, r.output
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg*"))
    # k is the copy number the row's transform records (from 0), so a file leads back to its row
    assert [n for n in names if n.startswith("train/jeff/")] == [
        "train/jeff/img21-aug0.jpg", "train/jeff/img21-aug1.jpg", "train/jeff/img21-aug2.jpg", "train/jeff/img21.jpg"]
    assert sum("-aug" in n for n in names) == 6
