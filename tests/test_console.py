"""curate.console: the one way every command (curate and curate train) prints its summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import skimage

from curate.console import emit
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.summary import summarize
from curate.workspace import Workspace


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of a real ingest of scikit-image's photos, with a warning list added."""
    ws = Workspace.create(tmp_path_factory.mktemp("console") / "ws")
    res = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(Path(skimage.data_dir), name="sk",
                                                                   layout="flat")], workers=1))
    return {**res.summary, "warnings": [f"w{i}" for i in range(23)]}


def test_json_is_the_whole_summary(summary: dict, capsys: pytest.CaptureFixture[str]) -> None:
    emit(summary, True, "ingest")
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads(json.dumps(summary, default=str)) and err == ""


def test_text_has_the_table_the_extras_and_at_most_20_warnings(summary: dict,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    emit(summary, False, "ingested")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"ingested: {summary['rows']} rows"
    assert "  status:" in lines and "  by source:" in lines
    assert f"  run: {json.dumps(summary['run'], default=str)}" in lines  # a nested extra, as JSON on one line
    assert not any(line.startswith("  warnings:") for line in lines)  # warnings go to stderr ...
    warnings = err.splitlines()
    assert warnings[:20] == [f"warning: w{i}" for i in range(20)]  # ... the first 20, then a count
    assert warnings[20:] == ["warning: ... and 3 more (see the run record in runs/)"]


def test_a_summary_without_rows_prints_only_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    emit({**summarize(pd.DataFrame()), "x": 1}, False, "t")
    out, _ = capsys.readouterr()
    assert out.splitlines() == ["t: 0 rows", "  x: 1"]
