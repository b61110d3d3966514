"""Workspace summaries: what `curate status` counts, and its text table."""

from __future__ import annotations

import pandas as pd

from curate.schema import MANIFEST_COLUMNS, conform
from curate.summary import format_summary, status_counts, summarize


def _manifest() -> pd.DataFrame:
    rows = [
        {"sample_id": "a", "source": "kaggle", "status": "kept", "label": "cat", "split": "train"},
        {"sample_id": "b", "source": "kaggle", "status": "kept", "label": "cat", "split": None},
        {"sample_id": "c", "source": "mine", "status": "dropped", "reason": "too_small", "label": "dog"},
        {"sample_id": "d", "source": "mine", "status": "kept", "label": "dog", "split": "val", "parent_id": "c",
         "label_conflict": True},
    ]
    return conform(pd.DataFrame(rows), MANIFEST_COLUMNS)


def test_labels_and_splits_count_kept_rows_only():
    s = summarize(_manifest())
    assert s["rows"] == 4 and s["status"] == {"kept": 3, "dropped": 1}
    assert s["reason"] == {"too_small": 1}
    assert s["label"] == {"cat": 2, "dog": 1}  # the dropped dog is not counted
    assert s["split"] == {"(none)": 1, "train": 1, "val": 1}
    assert s["source"] == {"kaggle": {"rows": 2, "kept": 2}, "mine": {"rows": 2, "kept": 1}}
    assert (s["derived"], s["label_conflicts"]) == (1, 1)
    assert status_counts(_manifest()) == {"kept": 3, "dropped": 1}


def test_an_empty_workspace():
    empty = conform(pd.DataFrame(), MANIFEST_COLUMNS)
    assert summarize(empty)["rows"] == 0 and status_counts(empty) == {}
    assert format_summary(summarize(empty), "ws") == "ws: 0 rows"


def test_text_table():
    text = format_summary(summarize(_manifest()), "ws")
    assert text.splitlines()[:3] == ["ws: 4 rows", "  status:", "    kept           3"]
    assert "    mine          1 kept of 2" in text
    assert text.endswith("  derived rows: 1\n  rows in label conflicts: 1")
