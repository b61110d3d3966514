"""curate split: the greedy assignment's properties, and the command.

The properties (Hypothesis, on synthetic manifests; a split needs no pixels):
disjoint cover of the kept rows, no unit in two splits, per-class counts
within one unit of their targets, determinism for a seed and independence from
row order.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.cli import cli
from curate.errors import OptionError
from curate.schema import MANIFEST_COLUMNS, SPLITS, conform
from curate.stages.split import SplitOptions, assign_splits, greedy_assign, split
from curate.units import parse_ratios
from curate.workspace import Workspace


def row(sid: str, label: str | None = "a", **kw: Any) -> dict[str, Any]:
    """One manifest row with the non-null columns filled; ``kw`` overrides."""
    base = {"sample_id": sid, "source": "src", "path": f"/data/{sid}.jpg", "origin_path": f"/data/{sid}.jpg",
            "rel_path": f"{sid}.jpg", "layout": "folder", "status": "kept", "label": label,
            "width": 100, "height": 80, "decided_by": "ingest"}
    base.update(kw)
    return base


def make_manifest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows), MANIFEST_COLUMNS)


def make_ws(tmp_path: Path, rows: list[dict[str, Any]], name: str = "ws") -> Workspace:
    ws = Workspace.create(tmp_path / name)
    ws.write_manifest(make_manifest(rows))
    return ws


# -- the assignment: properties ------------------------------------------------------

RATIOS = [parse_ratios(r) for r in ("8:1:1", "1:1:1", "6:2:2", "7:3:0", "train=1")]


@st.composite
def unit_tables(draw: st.DrawFn) -> tuple[pd.DataFrame, dict[str, str], str]:
    """A manifest of single-class units of four kinds; returns (manifest, row -> unit, group)."""
    group = draw(st.sampled_from(["dup", "person"]))
    rows: list[dict[str, Any]] = []
    unit_of: dict[str, str] = {}
    for u in range(draw(st.integers(1, 40))):
        cls = draw(st.sampled_from(["a", "b", "c"]))
        kind = draw(st.sampled_from(["single", "dup", "dup_kept", "crops", "person"]))
        size = draw(st.integers(1, 4))
        ids = [f"u{u}m{i}" for i in range(size)]
        if kind == "single":
            new = [row(ids[0], cls)]
        elif kind == "dup":  # one kept representative, the rest dropped as its duplicates
            new = [row(ids[0], cls, dup_group=ids[0])] + [
                row(i, cls, status="dropped", reason="duplicate", duplicate_of=ids[0], dup_group=ids[0])
                for i in ids[1:]]
        elif kind == "dup_kept":  # a near-duplicate group whose members were kept (e.g. in review)
            new = [row(i, cls, dup_group=ids[0]) for i in ids]
        elif kind == "crops":  # a superseded photo and its kept crops
            new = [row(f"u{u}root", cls, status="dropped", reason="superseded")] + [
                row(i, cls, parent_id=f"u{u}root") for i in ids]
        else:  # rows sharing a person: one unit only with --group person
            new = [row(i, cls, person=f"p{u}") for i in ids]
        for r in new:
            unit_of[r["sample_id"]] = f"u{u}" if kind != "person" or group == "person" else r["sample_id"]
        rows += new
    m = make_manifest(rows)
    if "person" not in m.columns:
        m["person"] = None
    return m, unit_of, group


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit_tables(), st.sampled_from(RATIOS), st.integers(0, 2**32 - 1))
def test_split_properties(table: tuple[pd.DataFrame, dict[str, str], str], ratios: dict[str, float],
                          seed: int) -> None:
    m, unit_of, group = table
    out = assign_splits(m, SplitOptions(ratios=ratios, seed=seed, group=group))
    kept = out[out["status"] == "kept"]
    # Disjoint cover: every kept row is in exactly one split, and only in one with a non-zero ratio.
    assert kept["split"].isin([s for s in SPLITS if ratios[s] > 0]).all()
    # No unit straddles two splits: not its kept rows, not its dropped duplicates or superseded parent.
    per_unit = out.groupby(out["sample_id"].map(unit_of))["split"].nunique(dropna=False)
    assert (per_unit == 1).all(), per_unit[per_unit > 1]
    # Per-class counts are within two units of their targets (one from the greedy pass, one more
    # where a unit moved so that the class reaches every split).
    unit_size: dict[tuple[str, str], int] = Counter(zip(kept["label"], kept["sample_id"].map(unit_of), strict=True))
    in_use = [s for s in SPLITS if ratios[s] > 0]
    for cls, rows in kept.groupby("label"):
        largest = max(n for (c, _), n in unit_size.items() if c == cls)
        counts = rows["split"].value_counts()
        for s in SPLITS:
            assert abs(counts.get(s, 0) - ratios[s] * len(rows)) < 2 * largest + 1e-9, (cls, s, counts.to_dict())
        # A class with at least as many units as splits reaches every split.
        if sum(1 for (c, _) in unit_size if c == cls) >= len(in_use):
            assert set(rows["split"]) == set(in_use), (cls, counts.to_dict())
    # Deterministic for a seed, and independent of the manifest's row order.
    again = assign_splits(m, SplitOptions(ratios=ratios, seed=seed, group=group))
    assert again["split"].equals(out["split"])
    shuffled = m.sample(frac=1.0, random_state=seed % 1000).reset_index(drop=True)
    out2 = assign_splits(shuffled, SplitOptions(ratios=ratios, seed=seed, group=group))
    assert out2.set_index("sample_id")["split"].to_dict() == out.set_index("sample_id")["split"].to_dict()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(1, 5), min_size=1, max_size=3),
                min_size=1, max_size=30), st.sampled_from(RATIOS))
def test_greedy_assign_never_picks_a_zero_ratio_split(units: list[dict[str, int]], ratios: dict[str, float]) -> None:
    # Multi-class units (label conflicts, --group source) too: every unit lands in a split in use.
    placed = greedy_assign(units, ratios)
    assert all(ratios[s] > 0 for s in placed)


def test_different_seeds_give_different_splits() -> None:
    m = make_manifest([row(f"s{i:02d}") for i in range(50)])
    a = assign_splits(m, SplitOptions(seed=1))["split"]
    b = assign_splits(m, SplitOptions(seed=2))["split"]
    assert a.value_counts().to_dict() == b.value_counts().to_dict() == {"train": 40, "val": 5, "test": 5}
    assert not a.equals(b)


def test_existing_split_kept_unless_resplit() -> None:
    rows = [row(f"t{i}", split="train") for i in range(10)] + [row(f"n{i}") for i in range(10)]
    m = make_manifest(rows)
    out = assign_splits(m, SplitOptions())
    assert (out["split"].iloc[:10] == "train").all()
    # The new rows fill the deficits left by the fixed ones: 20 rows at 8:1:1 -> 16/2/2 overall.
    assert out["split"].value_counts().to_dict() == {"train": 16, "val": 2, "test": 2}
    re = assign_splits(m, SplitOptions(resplit=True))
    assert re["split"].value_counts().to_dict() == {"train": 16, "val": 2, "test": 2}
    assert (re["split"].iloc[:10] != "train").any()


def test_pinned_rows_keep_their_split_even_with_resplit() -> None:
    # an official validation release (ingest --split val), one of whose photos is a copy of a train row
    rows = [row(f"v{i}", split="val", split_pinned=True) for i in range(10)] + [row(f"n{i}") for i in range(10)]
    rows.append(row("copy", split="train", dup_group="v0", duplicate_of="v0", status="dropped", reason="duplicate"))
    out = assign_splits(make_manifest(rows), SplitOptions(resplit=True))
    assert (out["split"].iloc[:10] == "val").all()
    assert out.loc[out["sample_id"] == "copy", "split"].item() == "val"  # a copy follows the pinned row
    assert set(out["split"].iloc[10:20]) <= {"train", "test"} and (out["split"].iloc[10:20] == "train").sum() >= 8


def test_new_member_of_a_split_group_joins_its_split() -> None:
    # A photo from the source's test split, and a later near-copy of it with no split.
    m = make_manifest([row("a", split="test", dup_group="a"), row("b", dup_group="a"),
                       row("c", parent_id="a", split="train")])  # a crop made before: follows its root
    out = assign_splits(m, SplitOptions())
    assert out["split"].tolist() == ["test", "test", "test"]


def test_augmented_copies_follow_their_parent_and_weigh_nothing() -> None:
    rows = [row(f"s{i}") for i in range(10)]
    rows += [row(f"s0c{k}", parent_id="s0", layout="augment", decided_by="balance") for k in range(30)]
    out = assign_splits(make_manifest(rows), SplitOptions(seed=4))
    real = out[out["layout"] != "augment"]
    assert real["split"].value_counts().to_dict() == {"train": 8, "val": 1, "test": 1}
    s0 = out.loc[out["sample_id"] == "s0", "split"].item()
    assert (out.loc[out["parent_id"] == "s0", "split"] == s0).all()


def test_unreadable_rows_keep_their_split() -> None:
    m = make_manifest([row("a"), row("bad", status="dropped", reason="unreadable", split="val", width=None)])
    out = assign_splits(m, SplitOptions(resplit=True))
    assert out["split"].tolist()[1] == "val"


# -- the stage --------------------------------------------------------------------

def faces_like() -> list[dict[str, Any]]:
    """Class sizes of ../shared/data/faces_by_person: 8,7,6,6,5,5,3,2,2,2,2,2,1."""
    sizes = [8, 7, 6, 6, 5, 5, 3, 2, 2, 2, 2, 2, 1]
    return [row(f"c{c:02d}i{i}", f"class{c:02d}") for c, n in enumerate(sizes) for i in range(n)]


def test_split_reports_ratios_and_small_classes() -> None:
    res = split(make_manifest(faces_like()), SplitOptions(seed=0))
    s = res.summary
    assert s["after"]["class00"] == {"train": 6, "val": 1, "test": 1}
    assert s["achieved"]["per_class"]["class00"] == {"train": 0.75, "val": 0.125, "test": 0.125}
    worst = s["achieved"]["largest_deviation"]
    # class06's three images go one to each split, so that every split has the class.
    assert s["after"]["class06"] == {"train": 1, "val": 1, "test": 1}
    assert worst == {"class": "class06", "split": "train", "achieved": 0.3333, "target": 0.8, "deviation": -0.4667}
    small = [w for w in s["warnings"] if "fewer than the 3 splits" in w]
    assert len(small) == 6  # five classes of 2 and one of 1
    assert ("class 'class12' has 1 kept image in 1 group, fewer than the 3 splits: cannot reach every split "
            "(train 1, val 0, test 0)") in small


def test_a_class_with_three_images_reaches_every_split() -> None:
    # Deficits alone put all three in train under 8:1:1 (train's deficit stays largest);
    # folder loaders would then number the classes of val and test differently (issue 14).
    rows = [row(f"big{i:02d}", "big") for i in range(20)] + [row(f"few{i}", "few") for i in range(3)]
    out = assign_splits(make_manifest(rows), SplitOptions(ratios=parse_ratios("8:1:1"), seed=0))
    few = out[out["label"] == "few"]["split"].value_counts().to_dict()
    assert few == {"train": 1, "val": 1, "test": 1}
    assert out[out["label"] == "big"]["split"].value_counts().to_dict() == {"train": 16, "val": 2, "test": 2}


def test_split_strict_refuses_small_classes() -> None:
    with pytest.raises(OptionError, match=r"class 'class12' has 1 kept image in 1 group"):
        split(make_manifest(faces_like()), SplitOptions(strict=True))


def test_split_without_labels_is_not_stratified() -> None:
    res = split(make_manifest([row(f"s{i}", None) for i in range(10)]), SplitOptions())
    assert res.summary["stratify"] is None
    assert res.manifest["split"].value_counts().to_dict() == {"train": 8, "val": 1, "test": 1}


def test_split_reports_source_groups_that_straddle() -> None:
    m = make_manifest([row("a", split="train", dup_group="a"), row("b", split="test", dup_group="a")])
    res = split(m, SplitOptions())
    assert res.manifest["split"].tolist() == ["train", "test"]  # kept as the source says ...
    assert any("1 groups keep rows from the source in more than one split" in w for w in res.summary["warnings"])
    res = split(m, SplitOptions(resplit=True))  # ... until --resplit
    assert res.manifest["split"].nunique() == 1


# -- the command ------------------------------------------------------------------

def test_cli_split_json_and_run_record(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, faces_like())
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--ratios", "train=0.8,val=0.1,test=0.1", "--seed", "3",
                                 "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["ratios"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert sum(sum(v.values()) for v in s["after"].values()) == 51
    m = ws.read_manifest()
    assert m["split"].notna().all()
    runs = [x for x in ws.runs() if x["command"] == "split"]
    assert runs[-1]["options"]["seed"] == 3 and runs[-1]["options"]["ratios"]["train"] == 0.8


def test_cli_split_text_table(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, faces_like())
    r = CliRunner().invoke(cli, ["split", str(ws.root)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["class", "train", "val", "test", "(none)", "ratios"]
    assert lines[2].split() == ["class00", "0", "->", "6", "0", "->", "1", "0", "->", "1", "8", "->", "0",
                                "0.75/0.12/0.12"]
    assert "largest deviation: class 'class06', train 0.33 vs target 0.80 (-0.47)" in r.stdout
    assert "warning: class 'class12' has 1 kept image in 1 group" in r.stderr


@pytest.mark.parametrize("args, message", [
    # a bad ratio string: the parser's message, as a one-line error
    (["--ratios", "8:2"], "Error: --ratios: expected train:val:test numbers (e.g. 8:1:1) or named ratios "
                          "(e.g. train=0.8,val=0.1,test=0.1), found '8:2'"),
    # a group column that does not exist names the columns that do
    (["--group", "person"], "Error: --group: expected dup, source or a manifest column"),
    # --strict turns the small-class warning into an error
    (["--strict"], "Error: class 'class00' has 1 kept image in 1 group, fewer than the 3 splits: cannot reach "
                   "every split (train 1, val 0, test 0) (add images, lower the number of splits, or drop --strict)"),
])
def test_cli_split_errors(tmp_path: Path, args: list[str], message: str) -> None:
    ws = make_ws(tmp_path, [row("a", "class00")])
    r = CliRunner().invoke(cli, ["split", str(ws.root), *args])
    assert r.exit_code == 1
    assert r.stderr.startswith(message), r.stderr
    assert ws.read_manifest()["split"].isna().all()  # nothing written


def test_split_counts_with_hypothesis_free_example() -> None:
    # A fixed example of the bound: one class of 10 rows in units of 4, 3, 2, 1 at 8:1:1.
    rows = []
    for u, size in enumerate([4, 3, 2, 1]):
        rows += [row(f"u{u}r{i}", dup_group=f"u{u}r0") for i in range(size)]
    out = assign_splits(make_manifest(rows), SplitOptions(seed=0))
    counts = out["split"].value_counts().to_dict()
    targets = {"train": 8, "val": 1, "test": 1}
    assert all(abs(counts.get(s, 0) - t) < 4 for s, t in targets.items())
    by_unit = defaultdict(set)
    for sid, s in zip(out["sample_id"], out["split"], strict=True):
        by_unit[sid.split("r")[0]].add(s)
    assert all(len(v) == 1 for v in by_unit.values())
    assert np.isin(out["split"], list(SPLITS)).all()


def test_near_duplicate_hashes_share_a_split() -> None:
    # Twenty pairs of re-encodes (2 bits apart) that no dedupe run has grouped.
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        h = int(rng.integers(0, 2**62)) << 1
        rows += [row(f"p{i}a", phash=f"{h:016x}"), row(f"p{i}b", phash=f"{h ^ 0b101:016x}")]
    m = make_manifest(rows)
    out = assign_splits(m, SplitOptions(seed=0)).set_index("sample_id")["split"]
    assert all(out[f"p{i}a"] == out[f"p{i}b"] for i in range(20))
    assert set(out) == {"train", "val", "test"}
    # 1 bit is too strict for these pairs, and -1 switches the hash links off: some pairs then straddle.
    for bits in (1, None):
        loose = assign_splits(m, SplitOptions(seed=0, near_bits=bits)).set_index("sample_id")["split"]
        assert any(loose[f"p{i}a"] != loose[f"p{i}b"] for i in range(20))


# -- new ratios without --resplit (issue 17) -----------------------------------------

def test_new_ratios_without_resplit_say_that_nothing_moved(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, faces_like())
    assert CliRunner().invoke(cli, ["split", str(ws.root)]).exit_code == 0
    before = ws.read_manifest()["split"].tolist()
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--ratios", "6:2:2"])
    assert r.exit_code == 0, r.output
    assert ws.read_manifest()["split"].tolist() == before
    assert ("warning: --ratios 0.60/0.20/0.20 differ from the last split's 0.80/0.10/0.10, but without --resplit "
            "the 51 kept rows that have a split keep it (0 rows placed now); add --resplit to reassign every row"
            ) in r.stderr
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--ratios", "6:2:2", "--resplit"])
    assert "differ from" not in r.stderr and ws.read_manifest()["split"].tolist() != before
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--ratios", "6:2:2"])  # the same ratios again: quiet
    assert "differ from" not in r.stderr


def test_ratios_differ_from_the_sources_own_splits() -> None:
    m = make_manifest([row(f"s{i}", split="train" if i < 5 else "test") for i in range(10)])
    res = split(m, SplitOptions())
    assert ("--ratios 0.80/0.10/0.10 differ from the existing splits' 0.50/0.00/0.50, but without --resplit the 10 "
            "kept rows that have a split keep it (0 rows placed now); add --resplit to reassign every row"
            ) in res.summary["warnings"]


# -- --group-from (issue 17): one person never in two splits ---------------------------

@pytest.mark.parametrize("paths, level, expected", [
    (["a/b/c.jpg", "a/d.jpg", "e.jpg"], 1, ["a", "a", None]),  # 1: the first folder under the source root
    (["a/b/c.jpg", "a/d.jpg", "e.jpg"], 2, ["b", None, None]),  # 2: the second; shallower paths get none
    (["a/b/c.jpg", "a/d.jpg", "e.jpg"], -1, ["b", "a", None]),  # -1: the folder the file is in
    (["a/b/c.jpg", "a/d.jpg", "e.jpg"], -2, ["a", None, None]),  # -2: the one above it
])
def test_folder_groups(paths: list[str], level: int, expected: list[str | None]) -> None:
    from curate.stages.split import folder_groups

    assert folder_groups(pd.Series(paths), level).tolist() == expected


@pytest.fixture(scope="module")
def people_ws(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """faces_by_person (51 photos of 13 people, one folder each), ingested flat: no labels, so
    nothing but --group-from keeps a person together."""
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest

    ws = Workspace.create(tmp_path_factory.mktemp("people") / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(corpus / "faces_by_person", layout="flat")], workers=1))
    return ws.root


def _copy_ws(root: Path, tmp_path: Path) -> Workspace:
    import shutil

    shutil.copytree(root, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws")


def _people_per_split(m: pd.DataFrame) -> dict[str, set[str]]:
    kept = m[m["status"] == "kept"]
    person = kept["rel_path"].str.split("/").str[0]
    return {p: set(g) for p, g in kept["split"].groupby(person)}


def test_group_from_folder_keeps_each_person_in_one_split(people_ws: Path, tmp_path: Path) -> None:
    ws = _copy_ws(people_ws, tmp_path)
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--near-bits", "-1", "--json"])
    assert r.exit_code == 0, r.output
    assert any(len(s) > 1 for s in _people_per_split(ws.read_manifest()).values())  # without it, people straddle
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--group-from", "folder:1", "--resplit"])
    assert r.exit_code == 0, r.output
    assert "  groups from --group-from folder:1: 13 (each kept in one split)" in r.stdout.splitlines()
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--group-from", "folder:1", "--resplit", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["group"], s["group_from"], s["groups"]) == ("group", "folder:1", 13)
    m = ws.read_manifest()
    assert all(len(splits) == 1 for splits in _people_per_split(m).values())
    assert set(m.loc[m["status"] == "kept", "split"]) == {"train", "val", "test"}
    assert (m["group"] == m["rel_path"].str.split("/").str[0]).all()  # stored in the manifest's group column
    pd.testing.assert_series_equal(split(m, SplitOptions(group_from="folder:-1", resplit=True)).manifest["split"],
                                   m["split"])  # -1 counts from the file: the same folder here

    # A person moved into a second split by hand: check fails, by the stored group column.
    obama = m.index[m["group"] == "obama"]
    m.loc[obama[0], "split"] = "test" if m.loc[obama[1], "split"] != "test" else "train"
    ws.write_manifest(m)
    r = CliRunner().invoke(cli, ["check", str(ws.root), "--json"])
    c = json.loads(r.stdout)
    assert r.exit_code == 1 and "group_leak" in c["failed"]
    leak = next(x for x in c["checks"] if x["name"] == "group_leak")
    assert leak["count"] == 1 and "obama/" in leak["examples"][0]


def test_group_from_csv(people_ws: Path, tmp_path: Path) -> None:
    ws = _copy_ws(people_ws, tmp_path)
    m = ws.read_manifest()
    table = tmp_path / "people.csv"
    lines = ["file,person"] + [f"{p},{p.split('/')[0].upper()}" for p in m["rel_path"]] + ["nobody/x.jpg,NOBODY"]
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = ws.run_stage("split", split, SplitOptions(group_from=f"csv:{table}:person"))
    assert res.summary["warnings"][0] == "--group-from: 1 lines of people.csv name no row of the workspace " \
                                         "(e.g. 'nobody/x.jpg')"
    m = ws.read_manifest()
    assert set(m["group"]) == {p.upper() for p in m["rel_path"].str.split("/").str[0]}
    assert all(len(splits) == 1 for splits in _people_per_split(m).values())


@pytest.mark.parametrize("spec, message", [
    ("folder:0", "Error: --group-from: expected folder:N (N = 1, 2, ... from the source root; -1, -2, ... from the "
                 "file) or csv:FILE:COLUMN, found 'folder:0' (folder levels start at 1 (from the source root) or -1 "
                 "(the file's own folder))"),
    ("folder:3", "Error: --group-from: expected folder:N (N = 1, 2, ... from the source root; -1, -2, ... from the "
                 "file) or csv:FILE:COLUMN, found 'folder:3' gives no kept row a group (check the level against a "
                 "path, e.g. "),
    ("person", "Error: --group-from: expected folder:N (N = 1, 2, ... from the source root; -1, -2, ... from the "
               "file) or csv:FILE:COLUMN, found 'person'"),
    ("csv:{tmp}/names.csv:age", "Error: --group-from: expected folder:N (N = 1, 2, ... from the source root; -1, "
                                "-2, ... from the file) or csv:FILE:COLUMN, found no column 'age' in names.csv "
                                "(columns: file, person)"),
    # img1.jpg is both alex_lacamoire's and angelina's: a bare file name would guess
    ("csv:{tmp}/names.csv:person", "Error: --group-from: expected folder:N (N = 1, 2, ... from the source root; "
                                   "-1, -2, ... from the file) or csv:FILE:COLUMN, found 1 file names in names.csv "
                                   "that several rows share (e.g. 'img1.jpg') (write the path inside the source, "
                                   "e.g. obama/1.jpg)"),
])
def test_group_from_errors(people_ws: Path, tmp_path: Path, spec: str, message: str) -> None:
    ws = _copy_ws(people_ws, tmp_path)
    (tmp_path / "names.csv").write_text("file,person\nimg1.jpg,alex\nbiden.jpg,biden\n", encoding="utf-8")
    r = CliRunner().invoke(cli, ["split", str(ws.root), "--group-from", spec.format(tmp=tmp_path)])
    assert r.exit_code == 1
    assert r.stderr.startswith(message), r.stderr
    assert ws.read_manifest()["split"].isna().all()
