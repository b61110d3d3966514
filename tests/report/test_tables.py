"""curate.report.tables: what the report shows, computed from manifests alone (no images)."""

from __future__ import annotations

import pandas as pd
import pytest

from curate.report.tables import balance_view, count_tables, duplicate_group_key, leakage_tables
from curate.schema import MANIFEST_COLUMNS, conform


def manifest_of(**cols: list[object]) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base: dict[str, object] = {"sample_id": [f"r{i}" for i in range(n)], "source": ["s"] * n,
                               "status": ["kept"] * n, "rel_path": [f"{i}.jpg" for i in range(n)],
                               "path": [f"/x/{i}.jpg" for i in range(n)], "layout": ["flat"] * n}
    base.update(cols)
    return conform(pd.DataFrame(base), MANIFEST_COLUMNS)


@pytest.mark.parametrize("dup_group, duplicate_of, expected", [
    # dup_group set on every member: that is the group
    (["r0", "r0", None], [None, "r0", None], ["r0", "r0", None]),
    # only duplicate_of set (an older writer): the target joins its group
    ([None, None, None], [None, "r0", "r0"], ["r0", "r0", "r0"]),
    # a lone dup_group (group of one) is no group
    (["r0", None, None], [None, None, None], [None, None, None]),
    # two groups side by side
    (["r0", "r0", "r2", "r2"], [None, "r0", None, "r2"], ["r0", "r0", "r2", "r2"]),
])
def test_duplicate_group_key(dup_group, duplicate_of, expected):
    n = len(expected)
    m = manifest_of(dup_group=dup_group, duplicate_of=duplicate_of,
           status=["kept" if d is None else "dropped" for d in duplicate_of],
           reason=[None if d is None else "duplicate" for d in duplicate_of], label=[None] * n)
    got = duplicate_group_key(m)
    assert [None if pd.isna(v) else v for v in got] == expected


@pytest.mark.parametrize("rows, expected", [
    # undersampled: 3 kept + 2 balanced_out -> before 5, after 3
    ([("a", "train", "kept", None, None, "ingest")] * 3 + [("a", "train", "dropped", "balanced_out", None, "balance")] * 2,
     {"a": [5, 2, 0, 3]}),
    # oversampled: 1 kept + 2 augmented derived rows -> before 1, after 3
    ([("b", "train", "kept", None, None, "ingest")] + [("b", "train", "kept", None, "r0", "balance")] * 2,
     {"b": [1, 0, 2, 3]}),
    # val untouched by balance is out of scope: only train is counted
    ([("a", "train", "dropped", "balanced_out", None, "balance"), ("a", "train", "kept", None, None, "ingest"),
      ("a", "val", "kept", None, None, "ingest")], {"a": [2, 1, 0, 1]}),
    # an augmented copy balance dropped again (balanced_out) existed neither before nor after
    ([("d", "train", "kept", None, None, "ingest"), ("d", "train", "kept", None, "r0", "balance"),
      ("d", "train", "dropped", "balanced_out", "r0", "balance")], {"d": [1, 0, 1, 2]}),
    # a face crop balance dropped: decided_by is now balance, but it was there before
    ([("e", "train", "kept", None, "r0", "faces"), ("e", "train", "dropped", "balanced_out", "r0", "faces")],
     {"e": [2, 1, 0, 1]}),
    # face crops are derived too, but not by balance: they count as before and after
    ([("c", "train", "kept", None, None, "ingest"), ("c", "train", "kept", None, "r0", "faces"),
      ("c", "train", "dropped", "balanced_out", None, "balance")], {"c": [3, 1, 0, 2]}),
])
def test_balance_view(rows, expected):
    label, split, status, reason, parent, by = (list(x) for x in zip(*rows, strict=True))
    # As the stages write them: balance's copies have layout "augment", face crops "faces";
    # balance marks what it drops (even a face crop) decided_by "balance".
    layout = ["augment" if b == "balance" and p else b for b, p in zip(by, parent, strict=True)]
    decided = ["balance" if r == "balanced_out" else b for b, r in zip(by, reason, strict=True)]
    m = manifest_of(label=label, split=split, status=status, reason=reason, parent_id=parent, decided_by=decided,
           layout=layout)
    view = balance_view(m, [])
    assert view.ran and view.splits == ["train"]
    assert {k: v.tolist() for k, v in view.table.iterrows()} == expected


def test_balance_view_not_run_counts_all_kept_rows():
    m = manifest_of(label=["a", "a", "b"], split=["train", "val", None])
    view = balance_view(m, [])
    assert not view.ran and view.splits == []
    assert view.table["after"].to_dict() == {"a": 2, "b": 1}
    assert balance_view(m, [{"command": "balance"}]).ran  # ran but changed nothing


@pytest.mark.parametrize("case, split, status, sha, origin, expect", [
    # a group whose dropped copy sits in test: spans splits, but only train is kept (resolved)
    ("resolved", ["train", "test"], ["kept", "dropped"], ["x", "x"], ["/a", "/b"], (1, 0, 0)),
    # both kept in different splits (e.g. un-dropped in review): a leak, twice over (same bytes too)
    ("leak", ["train", "test"], ["kept", "kept"], ["x", "x"], ["/a", "/b"], (1, 1, 0)),
    # same split: nothing to report
    ("same split", ["val", "val"], ["kept", "dropped"], ["x", "x"], ["/a", "/b"], (0, 0, 0)),
])
def test_leakage_tables(case, split, status, sha, origin, expect):
    m = manifest_of(split=split, status=status, sha256=sha, origin_path=origin, dup_group=["r0", "r0"],
           duplicate_of=[None, None if status[1] == "kept" else "r0"],
           reason=[None, None if status[1] == "kept" else "duplicate"])
    t = leakage_tables(m)
    spanning, same_bytes, same_origin = expect
    assert len(t["groups_across_splits"]) == spanning, case
    assert len(t["same_bytes"]) == same_bytes, case
    assert len(t["same_origin"]) == same_origin, case


def test_leakage_same_origin_and_label_conflicts():
    m = manifest_of(split=["train", "test", "train"], origin_path=["/p", "/p", "/q"], sha256=["1", "2", "3"],
           parent_id=[None, None, None], label=["cat", "dog", "cat"], dup_group=["r1", "r1", None],
           label_conflict=[True, True, False])
    t = leakage_tables(m)
    assert t["same_origin"].to_dict("index") == {"/p": {"rows": 2, "splits": "train, test"}}
    assert t["label_conflicts"].to_dict("index") == {"r1": {"members": 2, "labels": "cat ×1, dog ×1"}}


def test_count_tables_count_kept_rows_for_labels_and_splits():
    m = manifest_of(label=["a", "a", "b", None], split=["train", "val", "train", None],
           status=["kept", "kept", "dropped", "kept"], reason=[None, None, "too_small", None],
           decided_by=["ingest"] * 4)
    t = count_tables(m)
    assert t["label"].to_dict("index") == {"a": {"train": 1, "val": 1, "(none)": 0, "kept": 2},
                                           "(none)": {"train": 0, "val": 0, "(none)": 1, "kept": 1}}
    assert t["reason"].loc["too_small", "rows"] == 1
    assert t["split"]["kept"].to_dict() == {"train": 1, "val": 1, "(none)": 1}
