"""Moving workspaces and sources (issue 17): a moved workspace still works, a moved source is
re-rooted with `curate relocate --source` or found by content with `--search`, and every message
about a missing source file names that fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import CurateError, OptionError, SourceError
from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.relocate import RelocateOptions, relocate
from curate.stages.square import SquareOptions, square
from curate.workspace import MARKER, Workspace
from tests.conftest import tree_digest

# Real photos bundled with scikit-image, two per class.
CLASSES = {"cat": ("chelsea.png", "coffee.png"), "space": ("astronaut.png", "rocket.jpg")}


def make_source(folder: Path, skimage_dir: Path) -> Path:
    for label, names in CLASSES.items():
        (folder / label).mkdir(parents=True)
        for n in names:
            shutil.copy2(skimage_dir / n, folder / label / n)
    return folder


def squared_workspace(root: Path, src: Path) -> Workspace:
    """Ingest ``src`` as source ``photos`` and square it: ingested rows plus derived rows in objects/."""
    ws = Workspace.create(root)
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="photos", layout="folder")], workers=1))
    ws.run_stage("square", square, SquareOptions(size_px=64, workers=1))
    return ws


def export_folder(ws: Workspace, out: Path) -> dict:
    return ws.run_stage("export", export, ExportOptions("folder", out)).summary


def exported(out: Path) -> list[str]:
    """The exported images (the class list, classes.txt, and the export's marker left out)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.*") if p.name not in ("classes.txt", ".curate-export.json"))


def test_a_moved_workspace_exports_and_records_its_new_folder(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = squared_workspace(tmp_path / "ws", src)
    export_folder(ws, tmp_path / "before")
    shutil.move(tmp_path / "ws", tmp_path / "moved" / "ws2")

    moved = Workspace.open(tmp_path / "moved" / "ws2")
    m = moved.read_manifest()
    derived = m[m["parent_id"].notna()]
    assert len(derived) == 4 and all(p.startswith(f"{moved.root}/objects/") for p in derived["path"])
    assert set(m.loc[m["parent_id"].isna(), "path"]) == {str(p) for p in src.rglob("*.*")}  # sources stay
    export_folder(moved, tmp_path / "after")
    assert exported(tmp_path / "after") == exported(tmp_path / "before")
    # persisted at that write: plain pandas sees the new paths, and curate.json the new folder
    plain = pd.read_parquet(moved.root / "manifest.parquet")
    assert all(p.startswith(f"{moved.root}/objects/") for p in plain.loc[plain["parent_id"].notna(), "path"])
    assert json.loads((moved.root / MARKER).read_text())["root"] == str(moved.root)
    assert moved.moved_from() is None


def test_a_workspace_from_before_the_root_was_recorded_is_found_by_its_objects(tmp_path, skimage_dir):
    ws = squared_workspace(tmp_path / "ws", make_source(tmp_path / "src", skimage_dir))
    meta = json.loads((ws.root / MARKER).read_text())
    del meta["root"]
    (ws.root / MARKER).write_text(json.dumps(meta))
    shutil.move(tmp_path / "ws", tmp_path / "ws2")
    moved = Workspace.open(tmp_path / "ws2")
    assert moved.moved_from(pd.read_parquet(moved.root / "manifest.parquet")) == str(tmp_path / "ws")
    export_folder(moved, tmp_path / "out")
    assert len(exported(tmp_path / "out")) == 4


def test_a_copied_workspace_uses_its_own_objects(tmp_path, skimage_dir):
    ws = squared_workspace(tmp_path / "ws", make_source(tmp_path / "src", skimage_dir))
    shutil.copytree(ws.root, tmp_path / "copy")
    m = Workspace.open(tmp_path / "copy").read_manifest()
    assert all(p.startswith(f"{tmp_path / 'copy'}/objects/") for p in m.loc[m["parent_id"].notna(), "path"])
    assert all(p.startswith(f"{ws.root}/objects/") for p in ws.read_manifest().query("parent_id.notna()")["path"])


def test_a_moved_source_is_named_by_square_then_relocate_fixes_it(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = squared_workspace(tmp_path / "ws", src)
    shutil.move(src, tmp_path / "disk2" / "photos")
    digest = tree_digest(tmp_path / "disk2")

    ws.run_stage("square", square, SquareOptions(size_px=96, workers=1))  # a new size reads the source again
    m = ws.read_manifest()
    assert (m["reason"] == "missing_file").sum() == 4
    detail = m.loc[m["reason"] == "missing_file", "detail"].iloc[0]
    assert "the source image is missing (source photos; if its folder moved, run " \
           f"`curate relocate {ws.root} --source photos=NEW_FOLDER`" in detail

    res = CliRunner().invoke(cli, ["relocate", str(ws.root), "--source", f"photos={tmp_path / 'disk2' / 'photos'}"])
    assert res.exit_code == 0, res.output
    m = ws.read_manifest()
    assert all(p.startswith(str(tmp_path / "disk2" / "photos")) for p in m["origin_path"])
    assert json.loads((ws.root / "sources.json").read_text())["photos"]["path"] == str(tmp_path / "disk2" / "photos")
    run = [r for r in ws.runs() if r["command"] == "relocate"][-1]
    assert run["summary"]["sources"]["photos"]["sha256_checked"] == 4
    assert run["summary"]["sources"]["photos"]["from"] == str(src)

    ws.run_stage("square", square, SquareOptions(size_px=96, workers=1))
    m = ws.read_manifest()
    assert (m["reason"] == "missing_file").sum() == 0
    export_folder(ws, tmp_path / "out")
    assert len(exported(tmp_path / "out")) == 4
    assert tree_digest(tmp_path / "disk2") == digest  # the moved source was only read


def test_export_of_a_moved_source_names_relocate(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="photos", layout="folder")], workers=1))
    shutil.move(src, tmp_path / "elsewhere")
    result = CliRunner().invoke(cli, ["export", str(ws.root), "--format", "folder", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    first = sorted(ws.read_manifest()["path"])[0]
    assert result.output == (
        f"Error: {first}: expected the source image of every row to export, found 4 missing (4 of source photos) "
        f"(source photos; if its folder moved, run `curate relocate {ws.root} --source photos=NEW_FOLDER`, or "
        f"`curate relocate {ws.root} --search FOLDER` to find the files by content; if the file is gone, re-run "
        f"`curate ingest` on the source and then `curate prune {ws.root} --missing`)\n")
    assert not (tmp_path / "x").exists()

    CliRunner().invoke(cli, ["relocate", str(ws.root), "--source", f"photos={tmp_path / 'elsewhere'}"],
                       catch_exceptions=False)
    export_folder(ws, tmp_path / "out")
    assert exported(tmp_path / "out") == [f"train/{c}/{n}" for c in sorted(CLASSES) for n in CLASSES[c]]


def test_relocate_refuses_a_folder_that_is_not_the_moved_source(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="photos", layout="folder")], workers=1))
    before = (ws.root / "curate.json").read_bytes()  # the pointer to the committed tables
    other = tmp_path / "other" / "cat"
    other.mkdir(parents=True)
    shutil.copy2(skimage_dir / "camera.png", other / "chelsea.png")  # same name, other bytes
    with pytest.raises(SourceError) as e:
        ws.run_stage("relocate", relocate, RelocateOptions(sources={"photos": tmp_path / "other"}, workers=1))
    assert str(e.value).startswith(f"{tmp_path / 'other'}: source photos: expected the folder the source's files "
                                   "moved to, found 1 of its files there, every one of them different")
    with pytest.raises(OptionError, match="expected a source of this workspace: photos, found cats"):
        ws.run_stage("relocate", relocate, RelocateOptions(sources={"cats": src}, workers=1))
    assert (ws.root / "curate.json").read_bytes() == before
    assert json.loads((ws.root / "sources.json").read_text())["photos"]["path"] == str(src)


def test_relocate_reports_files_missing_or_changed_at_the_new_place(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="photos", layout="folder")], workers=1))
    new = tmp_path / "new"
    shutil.move(src, new)
    (new / "cat" / "coffee.png").unlink()
    (new / "space" / "rocket.jpg").write_bytes((new / "space" / "rocket.jpg").read_bytes()[:-10] + b"0123456789")
    res = ws.run_stage("relocate", relocate, RelocateOptions(sources={"photos": new}, workers=1))
    got = res.summary["sources"]["photos"]
    assert (got["files"], got["present"], got["missing"], got["changed"]) == (4, 3, 1, 1)
    assert any("1 of 4 files are not in" in w and "--search FOLDER" in w for w in res.summary["warnings"])
    assert any(f"`curate ingest {new} --into WS --source photos`" in w for w in res.summary["warnings"])


def test_relocate_search_finds_moved_files_by_sha256(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = squared_workspace(tmp_path / "ws", src)
    archive = tmp_path / "archive"
    shutil.move(src, archive / "2024" / "photos-renamed")
    (archive / "2024" / "decoy.png").write_bytes((skimage_dir / "camera.png").read_bytes())
    res = CliRunner().invoke(cli, ["relocate", str(ws.root), "--search", str(archive), "--json"],
                             catch_exceptions=False)
    summary = json.loads(res.output)
    assert summary["search"] == {"missing_before": 4, "found": 4, "files_hashed": 4, "still_missing": 0}
    new_root = archive / "2024" / "photos-renamed"
    assert summary["sources"]["photos"] == {"from": str(src), "to": str(new_root)}
    m = ws.read_manifest()
    assert sorted(m.loc[m["parent_id"].isna(), "path"]) == sorted(str(p) for p in new_root.rglob("*.*"))
    assert all(p.startswith(str(new_root)) for p in m["origin_path"])
    assert json.loads((ws.root / "sources.json").read_text())["photos"]["path"] == str(new_root)
    assert len(ws.runs()[-1]["found"]) == 4
    # the workspace now reads the source at its new place: squares of another size can be made
    ws.run_stage("square", square, SquareOptions(size_px=32, workers=1))
    assert (ws.read_manifest()["reason"] == "missing_file").sum() == 0


def test_relocate_search_does_not_take_a_file_another_row_names(tmp_path, skimage_dir):
    src = make_source(tmp_path / "src", skimage_dir)
    ws = Workspace.create(tmp_path / "ws")
    run = IngestOptions([SourceSpec(src, name="photos", layout="folder")], workers=1)
    ws.run_stage("ingest", ingest, run)
    (src / "cat").rename(src / "Cat")  # the folder renamed: its files come back as new rows
    ws.run_stage("ingest", ingest, run)
    assert (ws.read_manifest()["reason"] == "missing_file").sum() == 2
    res = ws.run_stage("relocate", relocate, RelocateOptions(search=[src], workers=1))
    assert res.summary["search"]["found"] == 0 and res.summary["search"]["missing_before"] == 2


def test_relocate_needs_something_to_do(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(CurateError, match="expected --source NAME=NEWPATH or --search DIR, found neither"):
        ws.run_stage("relocate", relocate, RelocateOptions())
    result = CliRunner().invoke(cli, ["relocate", str(ws.root), "--source", "photos"])
    assert result.output == ("Error: --source: expected NAME=NEWPATH, found 'photos' "
                             "(e.g. --source photos=/mnt/disk2/photos)\n")


def test_corpus_workspace_and_source_both_moved_then_found_by_content(tmp_path, corpus):
    """The whole path on the corpus faces: ingest, square, move the workspace and the source, export
    names the fix, relocate --search finds every file by sha256, export writes every kept row."""
    src = shutil.copytree(corpus / "faces_by_person", tmp_path / "people")
    runner = CliRunner()
    ws_dir = tmp_path / "ws"
    for args in (["ingest", str(src), "--into", str(ws_dir), "--layout", "folder", "--workers", "1"],
                 ["square", str(ws_dir), "--size", "96", "--workers", "1"]):
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, res.output
    kept = int((Workspace.open(ws_dir).read_manifest()["status"] == "kept").sum())
    shutil.move(ws_dir, tmp_path / "moved" / "ws")
    shutil.move(src, tmp_path / "usb" / "backup" / "people")
    ws = Workspace.open(tmp_path / "moved" / "ws")

    res = runner.invoke(cli, ["square", str(ws.root), "--size", "128", "--workers", "1"])
    assert res.exit_code == 0 and f"`curate relocate {ws.root} --source people=NEW_FOLDER`" in res.output
    res = runner.invoke(cli, ["relocate", str(ws.root), "--search", str(tmp_path / "usb"), "--json"])
    found = json.loads(res.output)
    assert found["search"]["still_missing"] == 0 and found["search"]["found"] == found["search"]["missing_before"]
    assert found["sources"]["people"]["to"] == str(tmp_path / "usb" / "backup" / "people")
    res = runner.invoke(cli, ["export", str(ws.root), "--format", "folder", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert len(exported(tmp_path / "out")) >= kept


def test_crop_of_a_moved_source_names_relocate(tmp_path, skimage_dir):
    from curate.stages.crop import CropOptions, crop

    src = tmp_path / "boxes"
    src.mkdir()
    shutil.copy2(skimage_dir / "chelsea.png", src / "chelsea.png")
    (src / "boxes.csv").write_text("file,x1,y1,x2,y2,label\nchelsea.png,140,20,320,200,cat\n")
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src / "boxes.csv", name="boxes")], workers=1))
    shutil.move(src, tmp_path / "moved")
    res = ws.run_stage("crop", crop, CropOptions(workers=1))
    assert any(f"`curate relocate {ws.root} --source boxes=NEW_FOLDER`" in w for w in res.summary["warnings"])
    ws.run_stage("relocate", relocate, RelocateOptions(sources={"boxes": tmp_path / "moved" / "boxes.csv"}))
    assert json.loads((ws.root / "sources.json").read_text())["boxes"]["path"] == str(tmp_path / "moved" / "boxes.csv")
    ws.run_stage("crop", crop, CropOptions(workers=1))
    m = ws.read_manifest()
    assert (m["layout"] == "crop").sum() == 1 and not (m["reason"] == "missing_file").any()
