"""curate.units: ratio parsing, split units, counts and the ratio report (tables only, no pixels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curate.errors import OptionError
from curate.schema import SPLITS
from curate.units import (
    NONE_LABEL,
    canonical_split,
    format_report,
    last_split_run,
    parse_ratios,
    ratio_report,
    root_positions,
    split_counts,
    unit_ids,
)
from curate.workspace import Workspace
from tests.stages.test_split import make_manifest, row  # the same manifest-row helpers

# -- split names, as ecosystems write them ---------------------------------------------

@pytest.mark.parametrize("name, split", [
    ("train", "train"), ("Training", "train"), ("TRN", "train"),  # common spellings, any case
    ("valid", "val"), ("Validation", "val"), ("dev", "val"),  # Roboflow, AI-Hub, Kaggle
    ("test", "test"), ("testing", "test"),
    ("1.Training", "train"), ("02_Validation", "val"), ("3-test", "test"),  # AI-Hub's numbered folders
    ("[T원천]생활폐기물_01", "train"), ("[V라벨링]car", "val"),  # AI-Hub's archive folders
    ("1.원천데이터", None), ("images", None), ("trainer", None), ("", None), (None, None),  # not splits
])
def test_canonical_split(name, split):
    assert canonical_split(name) == split


# -- ratios ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("8:1:1", (0.8, 0.1, 0.1)),  # the usual colon form
    ("80:10:10", (0.8, 0.1, 0.1)),  # any scale: normalised
    ("7/2/1", (0.7, 0.2, 0.1)),  # slashes read like colons
    ("train=0.8,val=0.1,test=0.1", (0.8, 0.1, 0.1)),  # named form
    ("train=3,valid=1", (0.75, 0.25, 0.0)),  # an alias, and a split left out gets 0
    (" test=1 , train=1 ", (0.5, 0.0, 0.5)),  # order and spaces do not matter
    ("8:2:0", (0.8, 0.2, 0.0)),  # an explicit zero
])
def test_parse_ratios(text: str, expected: tuple[float, float, float]) -> None:
    got = parse_ratios(text)
    assert list(got) == list(SPLITS)
    assert [round(got[s], 6) for s in SPLITS] == list(expected)


@pytest.mark.parametrize("text, message", [
    # two numbers are ambiguous (train:val or train:test?), so the colon form needs three
    ("8:2", "--ratios: expected train:val:test numbers (e.g. 8:1:1) or named ratios "
            "(e.g. train=0.8,val=0.1,test=0.1), found '8:2'"),
    # an unknown split name
    ("train=0.8,holdout=0.2", "--ratios: expected split names ['train', 'val', 'test'], found 'holdout'"),
    # not a number
    ("8:x:1", "--ratios: expected train:val:test numbers (e.g. 8:1:1) or named ratios "
              "(e.g. train=0.8,val=0.1,test=0.1), found '8:x:1'"),
    # negative
    ("8:-1:1", "--ratios: expected non-negative ratios with a positive sum, found '8:-1:1'"),
    # all zero
    ("0:0:0", "--ratios: expected non-negative ratios with a positive sum, found '0:0:0'"),
    # named fractions that do not add up to 1 are a typo: refused, not quietly rescaled (issue 17)
    ("train=0.8,val=0.2,test=0.2", "--ratios: expected named fractions summing to 1, found "
                                   "'train=0.8,val=0.2,test=0.2' (sum 1.2) (e.g. train=0.6,val=0.2,test=0.2; whole "
                                   "numbers are weights: train=8,val=1,test=1)"),
])
def test_parse_ratios_errors(text: str, message: str) -> None:
    with pytest.raises(OptionError) as e:
        parse_ratios(text)
    assert str(e.value) == message


# -- units ------------------------------------------------------------------------

def test_units_join_lineage_duplicates_and_group_column() -> None:
    m = make_manifest([
        row("p", status="dropped", reason="superseded"),  # a photo replaced by two face crops
        row("c1", parent_id="p"), row("c2", parent_id="p"),
        row("g", parent_id="c1"),  # a copy of a crop: still the same photo
        row("r", dup_group="r"), row("d", status="dropped", reason="duplicate", duplicate_of="r", dup_group="r"),
        row("x", person="ann"), row("y", person="ann"), row("z", person="bob"),
    ])
    u = unit_ids(m, "dup")
    assert len({u[0], u[1], u[2], u[3]}) == 1
    assert u[4] == u[5] and u[4] != u[0]
    assert len({u[6], u[7], u[8]}) == 3  # person is not a group unless asked
    u = unit_ids(m, "person")
    assert u[6] == u[7] != u[8]
    assert root_positions(m).tolist() == [0, 0, 0, 0, 4, 5, 6, 7, 8]


def test_units_join_near_hashes_only_when_asked() -> None:
    # Two re-encodes 2 bits apart that no dedupe run grouped, and one far hash.
    m = make_manifest([row("a", phash=f"{0x3C5A9F017E22D4B8:016x}"), row("b", phash=f"{0x3C5A9F017E22D4BB:016x}"),
                       row("c", phash=f"{0x0F0F3C3C55551234:016x}")])
    assert len(set(unit_ids(m, "dup").tolist())) == 3
    near = unit_ids(m, "dup", near_bits=2)
    assert near[0] == near[1] != near[2]
    assert len(set(unit_ids(m, "dup", near_bits=1).tolist())) == 3  # 1 bit is too strict for this pair


# -- counts and the ratio report -----------------------------------------------------

def test_split_counts_and_ratio_report() -> None:
    m = make_manifest([row("c1", "cat", split="train"), row("c2", "cat", split="train"), row("c3", "cat", split="val"),
                       row("d1", "dog", split="train"), row("d2", "dog"),  # no split yet
                       row("x", "dog", split="test", status="dropped", reason="duplicate")])  # not counted
    counts = split_counts(m)
    assert counts == {"cat": {"train": 2, "val": 1}, "dog": {"train": 1, NONE_LABEL: 1}}
    rep = ratio_report(counts, parse_ratios("8:1:1"))
    assert rep["per_class"]["cat"] == {"train": 0.6667, "val": 0.3333, "test": 0.0}
    assert rep["overall"] == {"train": 0.75, "val": 0.25, "test": 0.0}
    assert rep["largest_deviation"] == {"class": "cat", "split": "val", "achieved": 0.3333, "target": 0.1,
                                        "deviation": 0.2333}
    text = format_report({"before": counts, "after": counts, "achieved": rep, "ratios": parse_ratios("8:1:1")}, "t")
    assert text.splitlines()[1].split() == ["class", "train", "val", NONE_LABEL, "ratios"]
    assert "largest deviation: class 'cat', val 0.33 vs target 0.10 (+0.23)" in text


@pytest.mark.parametrize("recorded, expected", [
    ({"ratios": {"train": 0.5, "val": 0.5, "test": 0.0}, "group": "person"},  # as `curate split` records it
     {"ratios": {"train": 0.5, "val": 0.5, "test": 0.0}, "group": "person"}),
    ({"ratios": "8:1:1"}, {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1}}),  # as typed, by hand
    ({"ratios": "8:2"}, {"ratios": None}),  # unreadable: no target rather than an error
    ({"ratios": 7}, {"ratios": None}),
])
def test_last_split_run(tmp_path: Path, recorded: dict[str, Any], expected: dict[str, Any]) -> None:
    ws = Workspace.create(tmp_path / "ws")
    assert last_split_run(None) == {} and last_split_run(ws) == {"ratios": None}  # no run yet
    ws.record_run("split", {"ratios": "1:1:1"})
    ws.record_run("check", {"ratios": "1:0:0"})  # another command's options are not a split's
    ws.record_run("split", recorded)
    assert last_split_run(ws) == expected
