"""curate.groups: the keeper policy, group marking and exact duplicates, on tables (no pixels).

The same policy decides at ingest (exact copies) and in dedupe (near copies);
tests/stages/test_dedupe.py runs both on real photos.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from curate.groups import UnionFind, apply_groups, connected_groups, is_copy_name, keeper_order, mark_exact
from curate.schema import MANIFEST_COLUMNS, conform


def row(sid: str, **kw: Any) -> dict[str, Any]:
    """One kept ingested row; ``kw`` overrides."""
    base = {"sample_id": sid, "source": "web", "path": f"/data/{sid}.jpg", "origin_path": f"/data/{sid}.jpg",
            "rel_path": f"{sid}.jpg", "layout": "flat", "status": "kept", "decided_by": "ingest",
            "width": 640, "height": 480, "sha256": hashlib.sha256(sid.encode()).hexdigest()}
    base.update(kw)
    return base


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows), MANIFEST_COLUMNS)


# -- the keeper order ----------------------------------------------------------------

@pytest.mark.parametrize("rows, kwargs, order", [
    # stable order: source, then path, then id
    ([row("b"), row("a")], {}, ["a", "b"]),
    # source priority first by default, then resolution
    ([row("a", source="s1", width=2000), row("b", source="s2")], {"source_order": ["s2"]}, ["b", "a"]),
    ([row("a", source="s1", width=2000), row("b", source="s2")],
     {"source_order": ["s2"], "criteria": ("resolution", "priority")}, ["a", "b"]),
    # more pixels first within a source
    ([row("a"), row("b", width=1280, height=960)], {}, ["b", "a"]),
    # annotated rows first (ahead of resolution when listed first)
    ([row("a", width=1280), row("b")], {"annotated": {"b"}, "criteria": ("annotated", "resolution")}, ["b", "a"]),
    # a copy name loses a tie ...
    ([row("a", rel_path="cat (1).jpg"), row("b", rel_path="cat.jpg")], {}, ["b", "a"]),
    # ... but not to a larger image
    ([row("a", rel_path="cat (1).jpg", width=1280), row("b", rel_path="cat.jpg")], {}, ["a", "b"]),
])
def test_keeper_order(rows: list[dict[str, Any]], kwargs: dict[str, Any], order: list[str]) -> None:
    m = table(rows)
    rank = keeper_order(m, **kwargs)
    assert m.loc[rank.sort_values().index, "sample_id"].tolist() == order


def test_rows_put_first_beat_every_criterion() -> None:
    m = table([row("a", width=4000, height=3000), row("b", rel_path="b (1).jpg")])
    rank = keeper_order(m, first=pd.Series([False, True], index=m.index))
    assert rank.tolist() == [1, 0]


# -- marking groups -----------------------------------------------------------------

def test_apply_groups_keeps_the_best_ranked_and_flags_conflicts() -> None:
    m = table([row("a", label="cat"), row("b", label="dog", width=1280), row("c", label="cat"), row("z")])
    out = apply_groups(m.copy(), [[0, 1, 2], [3]], decided_by="dedupe", rank=keeper_order(m))
    by = out.set_index("sample_id")
    assert by.loc["b", "status"] == "kept" and by.loc[["a", "c"], "duplicate_of"].tolist() == ["b", "b"]
    assert by.loc[["a", "c"], "reason"].tolist() == ["duplicate", "duplicate"]
    assert by.loc[["a", "c"], "detail"].tolist() == ["copy of b", "copy of b"]
    assert by.loc[["a", "b", "c"], "dup_group"].tolist() == ["b", "b", "b"]
    assert by.loc[["a", "b", "c"], "label_conflict"].tolist() == [True, True, True]
    assert by.loc["z", "status"] == "kept" and pd.isna(by.loc["z", "dup_group"])  # a group of one is none


def test_apply_groups_never_changes_protected_rows() -> None:
    m = table([row("a", decided_by="review"), row("b", width=1280)])
    out = apply_groups(m.copy(), [[0, 1]], decided_by="dedupe", rank=keeper_order(m), protected={0})
    by = out.set_index("sample_id")
    assert by.loc["a", ["status", "decided_by"]].tolist() == ["kept", "review"]
    assert pd.isna(by.loc["a", "dup_group"])  # not even its group mark
    assert by.loc["b", "status"] == "kept"  # b ranks first: a protected row still counts as a member


def test_mark_exact_groups_identical_bytes_and_leaves_later_decisions_alone() -> None:
    rows = [row("a", sha256="s"), row("b", sha256="s", rel_path="a (1).jpg"), row("c", sha256="s", decided_by="review"),
            row("d", sha256="t", status="dropped", reason="too_small"), row("e", sha256="t")]
    by = mark_exact(table(rows)).set_index("sample_id")
    assert by.loc["b", ["status", "reason", "duplicate_of", "decided_by"]].tolist() == [
        "dropped", "duplicate", "a", "ingest"]
    assert by.loc["c", ["status", "decided_by"]].tolist() == ["kept", "review"]  # a person decided it
    assert by.loc["d", "reason"] == "too_small" and by.loc["e", "status"] == "kept"  # only kept rows take part
    # Re-run with another priority: the earlier marks are recomputed, not stacked.
    again = mark_exact(mark_exact(table(rows)), source_order=["web"]).set_index("sample_id")
    assert again.loc[["a", "b"], "status"].tolist() == ["kept", "dropped"]


def test_connected_groups():
    groups = connected_groups(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert [g.tolist() for g in groups] == [[0, 1, 2], [4, 5]]
    assert connected_groups(0, np.zeros(0, int), np.zeros(0, int)) == []


def test_union_find_agrees_with_connected_groups() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 50, 40), rng.integers(0, 50, 40)
    uf = UnionFind(50)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        uf.union(x, y)
    for g in connected_groups(50, a, b):
        assert len({uf.find(int(i)) for i in g}) == 1
    roots = [uf.find(i) for i in range(50)]
    assert len(set(roots)) == 50 - sum(len(g) - 1 for g in connected_groups(50, a, b))


# -- copy names (issue 17: dedupe kept "chelsea (1).jpg" over "chelsea.jpg") ----------------------------

@pytest.mark.parametrize("name, is_copy", [
    ("chelsea (1).jpg", True),  # browsers (Chrome, Firefox, Edge) and Windows Explorer
    ("chelsea(2).jpg", True),  # the same without the space
    ("chelsea - Copy.jpg", True),  # Windows Explorer
    ("chelsea - Copy (2).jpg", True),
    ("chelsea - 복사본.jpg", True),  # Korean Windows
    ("chelsea copy.jpg", True),  # macOS Finder
    ("chelsea copy 3.jpg", True),
    ("Copy of chelsea.jpg", True),  # Google Drive, older Windows
    ("cat/chelsea (1).jpg", True),  # a path inside the source: the file name decides
    ("chelsea.jpg.1", True),  # wget
    ("chelsea.jpg", False),
    ("chelsea_1.jpg", False),  # frames, bursts and numbered datasets are named like this: not a copy
    ("chelsea-2.jpg", False),
    ("img1.jpg", False),
    ("copy.jpg", False),  # a photo called "copy" is not a copy of anything
    ("(1).jpg", False),
    ("photocopy.jpg", False),
])
def test_is_copy_name(name: str, is_copy: bool) -> None:
    assert is_copy_name(name) is is_copy
