"""Lineage rules for re-runnable transforms, on small tables (no images)."""

from __future__ import annotations

import pandas as pd
import pytest

from curate.lineage import (
    descendants,
    is_stale,
    mark_stale,
    person_rejected,
    revive,
    set_decisions,
    trace,
    transform_inputs,
)


def table(rows: list[tuple]) -> pd.DataFrame:
    """rows: (sample_id, parent_id, layout, status, reason, decided_by, detail)."""
    cols = ["sample_id", "parent_id", "layout", "status", "reason", "decided_by", "detail"]
    return pd.DataFrame(rows, columns=cols)


# src -> crop1, crop2 (faces) ; crop1 -> sq1 (square); other: untouched source; rev: a person kept (or
# relabelled) it; rej: a person rejected it
CHAIN = table([
    ("src", None, "folder", "dropped", "superseded", "faces", "2 face crops"),
    ("crop1", "src", "faces", "dropped", "superseded", "square", "square 224 pad"),
    ("crop2", "src", "faces", "kept", None, "faces", None),
    ("sq1", "crop1", "square", "kept", None, "square", None),
    ("other", None, "folder", "kept", None, "ingest", None),
    ("rev", None, "folder", "kept", None, "review", None),
    ("nf", None, "folder", "dropped", "no_face", "faces", "no face scoring >= 0.5"),
    ("rej", None, "folder", "dropped", "rejected_in_review", "review", None),
])


def test_descendants_and_trace():
    assert descendants(CHAIN, ["src"]) == {"crop1", "crop2", "sq1"}
    assert descendants(CHAIN, ["other"]) == set()
    assert trace(CHAIN, "sq1") == ["sq1", "crop1", "src"]
    assert trace(CHAIN, "other") == ["other"]


@pytest.mark.parametrize("layout, reread, expected", [
    # faces reads its own superseded parents and no_face rows again, never its crops or what came of them
    ("faces", ("superseded", "no_face"), {"src", "other", "nf", "rev"}),
    # square reads kept rows not made by square, plus what it superseded itself (crop1)
    ("square", ("superseded",), {"crop1", "crop2", "other", "rev"}),
    # crop reads what square reads
    ("crop", ("superseded",), {"crop2", "sq1", "other", "rev"}),
])
def test_transform_inputs(layout, reread, expected):
    """One rule for every transform (issue 17): a row a person kept or relabelled is an input,
    a row a person rejected is not."""
    mask = transform_inputs(CHAIN, layout, reread=reread)
    assert set(CHAIN.loc[mask, "sample_id"]) == expected
    assert "rev" in expected and "rej" not in set(CHAIN.loc[mask, "sample_id"])


def test_person_rejected_is_the_one_review_rule():
    assert set(CHAIN.loc[person_rejected(CHAIN), "sample_id"]) == {"rej"}


def test_mark_stale_cascades_and_revive_restores():
    out, n = mark_stale(CHAIN, {"crop1"}, "faces")
    assert n == 2  # crop1 and its square
    stale = set(out.loc[is_stale(out), "sample_id"])
    assert stale == {"crop1", "sq1"}
    assert (out.set_index("sample_id").loc[["crop1", "sq1"], "status"] == "dropped").all()
    again, m = revive(out, {"crop1"}, "faces")
    assert m == 1
    row = again.set_index("sample_id").loc["crop1"]
    assert (row["status"], row["decided_by"]) == ("kept", "faces") and pd.isna(row["reason"])
    assert again.set_index("sample_id").loc["sq1", "status"] == "dropped"  # square's own re-run revives it


def test_mark_stale_leaves_review_and_other_reasons():
    t = table([
        ("p", None, "folder", "dropped", "superseded", "faces", "1 face crop"),
        ("c", "p", "faces", "kept", None, "review", None),  # a person kept this crop
        ("d", "p", "faces", "dropped", "rejected_in_review", "review", None),
    ])
    out, n = mark_stale(t, {"c", "d"}, "faces")
    assert n == 0
    pd.testing.assert_frame_equal(out, t)


def test_set_decisions_changes_only_the_named_rows():
    out = set_decisions(CHAIN, {"other": ("dropped", "no_face", "no face scoring >= 0.5", "faces"),
                                "nf": ("kept", None, None, None)})
    got = out.set_index("sample_id")
    assert got.loc["other", ["status", "reason", "decided_by"]].tolist() == ["dropped", "no_face", "faces"]
    assert got.loc["nf", "status"] == "kept" and pd.isna(got.loc["nf", "reason"])
    unchanged = ~out["sample_id"].isin(["other", "nf"])
    pd.testing.assert_frame_equal(out[unchanged].astype(object), CHAIN[unchanged].astype(object))
