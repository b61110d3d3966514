"""The manifest schema: declared once, validated on write, copied to schemas/."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from curate.errors import SchemaError
from curate.schema import MANIFEST_COLUMNS, REASONS, conform, schema_files, validate_manifest

REPO = Path(__file__).resolve().parents[1]


def test_schema_copies_are_current():
    for name, text in schema_files().items():
        path = REPO / "schemas" / name
        assert path.exists(), f"schemas/{name} missing: run python scripts/gen_schemas.py"
        assert path.read_text() == text, f"schemas/{name} is stale: run python scripts/gen_schemas.py"


def test_contract_columns_are_declared():
    contract = [c.name for c in MANIFEST_COLUMNS if c.contract]
    assert contract == ["sample_id", "source", "path", "origin_path", "parent_id", "sha256", "width", "height",
                        "label", "split", "status", "reason", "duplicate_of"]
    schema = json.loads((REPO / "schemas" / "manifest.schema.json").read_text())
    assert set(contract) <= set(schema["required"])


def test_every_reason_is_documented_in_docs():
    doc = (REPO / "docs" / "manifest.md").read_text()
    for reason in REASONS:
        assert f"`{reason}`" in doc, f"reason {reason} is not documented in docs/manifest.md"


def _row(**kw):
    base = {"sample_id": "a", "source": "s", "path": "/a.jpg", "origin_path": "/a.jpg", "status": "kept",
            "rel_path": "a.jpg", "layout": "flat"}
    return {**base, **kw}


@pytest.mark.parametrize(
    "rows, message",
    [
        # two rows with one id
        ([_row(), _row()], "sample_id: expected unique, found repeats (a, a)"),
        # status outside the closed set
        ([_row(status="maybe")], "status: expected one of ('kept', 'dropped'), found ['maybe']"),
        # a reason that is not documented
        ([_row(status="dropped", reason="ugly")], "reason: expected one of the documented reasons, found ['ugly']"),
        # a dropped row must say why
        ([_row(status="dropped")], "reason: expected a reason on dropped rows, found none on a"),
        # a kept row must not carry a reason
        ([_row(reason="too_small")], "reason: expected null on kept rows, found a reason on a"),
        # duplicates point at their representative
        ([_row(status="dropped", reason="duplicate")], "duplicate_of: expected set on duplicate rows, found null on a"),
        # unknown split name
        ([_row(split="valid")], "split: expected one of ('train', 'val', 'test') or null, found ['valid']"),
        # a parent that does not exist
        ([_row(parent_id="zz")], "parent_id: expected an existing sample_id, found ['zz']"),
        # a required column left empty
        ([_row(source=None)], "column 'source': expected no nulls, found 1"),
    ],
)
def test_validation_reports_the_problem(rows, message):
    with pytest.raises(SchemaError) as e:
        validate_manifest(pd.DataFrame(rows))
    assert message in str(e.value)


def test_validation_reports_every_problem_at_once():
    rows = [_row(status="maybe"), _row(sample_id="b", split="dev")]
    with pytest.raises(SchemaError) as e:
        validate_manifest(pd.DataFrame(rows))
    assert "status:" in str(e.value) and "split:" in str(e.value)


def test_conform_keeps_extra_columns_and_orders_declared_ones():
    df = conform(pd.DataFrame([_row(my_extra=3)]), MANIFEST_COLUMNS)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == [c.name for c in MANIFEST_COLUMNS]
    assert df["my_extra"].tolist() == [3]
    assert df["width"].dtype == "Int64"
