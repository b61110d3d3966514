"""`curate prune WS --missing` (issue 17): rows of files that do not exist are removed with their boxes,
on record; everything else stays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from curate.cli import cli
from curate.errors import OptionError
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.prune import PruneOptions, prune
from curate.workspace import Workspace


def renamed_folder_workspace(tmp_path: Path, skimage_dir: Path) -> tuple[Workspace, IngestOptions]:
    """A source whose class folder was renamed between two ingests: its two files stay as missing_file rows."""
    src = tmp_path / "src"
    for label, names in {"cat": ("chelsea.png", "coffee.png"), "space": ("astronaut.png", "rocket.jpg")}.items():
        (src / label).mkdir(parents=True)
        for n in names:
            shutil.copy2(skimage_dir / n, src / label / n)
    ws = Workspace.create(tmp_path / "ws")
    run = IngestOptions([SourceSpec(src, name="photos", layout="folder")], workers=1)
    ws.run_stage("ingest", ingest, run)
    (src / "cat").rename(src / "Cat")
    ws.run_stage("ingest", ingest, run)
    return ws, run


def test_prune_missing_removes_the_rows_of_files_that_are_gone_and_records_them(tmp_path, skimage_dir):
    ws, _ = renamed_folder_workspace(tmp_path, skimage_dir)
    m = ws.read_manifest()
    assert len(m) == 6 and (m["reason"] == "missing_file").sum() == 2

    dry = CliRunner().invoke(cli, ["prune", str(ws.root), "--missing", "--dry-run", "--json"], catch_exceptions=False)
    assert json.loads(dry.output)["would_remove"] == ["photos/cat/chelsea.png", "photos/cat/coffee.png"]
    assert len(ws.read_manifest()) == 6 and [r["command"] for r in ws.runs()] == ["ingest", "ingest"]

    result = CliRunner().invoke(cli, ["prune", str(ws.root), "--missing"], catch_exceptions=False)
    assert "removed: 2" in result.output
    m = ws.read_manifest()
    assert len(m) == 4 and not (m["reason"] == "missing_file").any()
    assert sorted(m["rel_path"]) == ["Cat/chelsea.png", "Cat/coffee.png", "space/astronaut.png", "space/rocket.jpg"]
    run = ws.runs()[-1]
    assert run["command"] == "prune" and run["counts_before"] == {"dropped": 2, "kept": 4}
    assert run["counts_after"] == {"kept": 4}
    assert [(r["source"], r["rel_path"], r["detail"]) for r in run["removed"]] == [
        ("photos", "cat/chelsea.png", "no longer in the source"), ("photos", "cat/coffee.png", "no longer in the source")]


def test_prune_removes_the_boxes_of_a_listed_file_that_never_existed(tmp_path, skimage_dir):
    src = tmp_path / "list"
    src.mkdir()
    shutil.copy2(skimage_dir / "chelsea.png", src / "chelsea.png")
    (src / "boxes.csv").write_text("file,x1,y1,x2,y2,label\nchelsea.png,10,10,100,100,cat\n"
                                   "lost.jpg,10,10,50,50,dog\n")
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src / "boxes.csv", name="boxes")], workers=1))
    assert set(ws.read_manifest()["reason"].dropna()) == {"missing_file"}
    res = ws.run_stage("prune", prune, PruneOptions(missing=True))
    assert res.summary["removed"] == 1
    m, ann = ws.read_manifest(), ws.read_annotations()
    assert list(m["rel_path"]) == ["chelsea.png"]
    assert set(ann["sample_id"]) <= set(m["sample_id"]) and list(ann["label"]) == ["cat"]


def test_prune_keeps_a_missing_file_row_whose_file_is_back(tmp_path, skimage_dir):
    ws, run = renamed_folder_workspace(tmp_path, skimage_dir)
    (tmp_path / "src" / "Cat").rename(tmp_path / "src" / "cat")  # renamed back, not ingested yet
    res = ws.run_stage("prune", prune, PruneOptions(missing=True))
    assert res.summary["removed"] == 0
    assert res.summary["warnings"][0].startswith("2 missing_file rows have a file again")
    assert len(ws.read_manifest()) == 6


def test_prune_needs_missing(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    try:
        ws.run_stage("prune", prune, PruneOptions())
    except OptionError as e:
        assert str(e) == ("prune: expected what to prune: --missing, found nothing "
                          "(`curate prune WS --missing` removes the rows of files that do not exist)")
    else:
        raise AssertionError("prune without --missing must be refused")
