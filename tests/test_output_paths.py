"""Every path option of every command is listed here, and no output path can write into a source.

A new path option fails :func:`test_every_path_option_is_listed` until it is added to
OUTPUTS (with a case below that points it at a source) or to INPUTS.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.stages.export import ExportOptions, export
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.split import SplitOptions, parse_ratios, split
from curate.workspace import Workspace
from tests.conftest import tree_digest

# (command, parameter) -> what it is. Inputs are only read.
INPUTS = {
    ("ingest", "sources"), ("ingest", "images_dir"), ("convert", "source"), ("convert", "images_dir"),
    ("train classify", "export_dir"), ("train compare", "raw_export"), ("train compare", "curated_export"),
    ("train yolo", "export_dir"), ("faces", "model_dir"), ("models status", "model_dir"), ("relocate", "search"),
    ("label", "binary"),  # the Label Studio program to run
    ("ingest", "label_map"), ("labels", "label_map"),  # a label map file, read
    *((c, "workspace") for c in ("status", "report", "review", "export", "split", "balance", "check", "faces",
                                 "square", "crop", "dedupe", "relocate", "prune", "label",
                                 "labels")),
}
# Writes only the face model files, under their fixed names, each checked by sha256: it knows no workspace.
EXEMPT = {("models fetch", "target")}


def path_params(cmd: click.Command, prefix: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    if isinstance(cmd, click.Group):
        return {p for name, sub in cmd.commands.items() for p in path_params(sub, (*prefix, name))}
    return {(" ".join(prefix), p.name or "") for p in cmd.params if isinstance(p.type, click.Path)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, skimage_dir) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("outputs")
    src = base / "src"
    for cls, names in {"cat": ["chelsea.png", "coffee.png", "horse.png", "rocket.jpg"],
                       "space": ["astronaut.png", "moon.png", "camera.png", "coins.png"]}.items():
        (src / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(skimage_dir / n, src / cls / n)
    (src / "list.csv").write_text("file,label\ncat/chelsea.png,cat\n")
    ws = Workspace.create(base / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src)], workers=1))
    ws.run_stage("split", split, SplitOptions(ratios=parse_ratios("2:1:1"), near_bits=-1))
    ws.run_stage("export", export, ExportOptions("yolo-cls", base / "export"))
    return {"src": src, "ws": ws.root, "export": base / "export"}


# One case per output: the output aimed at a source file or folder (or, for train, into its input).
OUTPUT_CASES = {
    ("ingest", "workspace"): lambda s: ["ingest", s["src"], "--into", s["src"] / "cat" / "ws"],
    ("export", "out"): lambda s: ["export", s["ws"], "--format", "folder", "--out", s["src"] / "cat",
                                  "--overwrite", "--force"],
    ("convert", "out"): lambda s: ["convert", s["src"], "--to", "folder", "--out", s["src"] / "cat", "--overwrite",
                                   "--force"],
    ("dedupe", "report"): lambda s: ["dedupe", s["ws"], "--report", s["src"] / "list.csv"],
    ("report", "out"): lambda s: ["report", s["ws"], "--out", s["src"] / "cat" / "chelsea.png"],
    ("train classify", "out"): lambda s: ["train", "classify", s["ws"], "--out", s["src"] / "cat", "--overwrite",
                                          "--epochs", "1"],
    ("train compare", "out"): lambda s: ["train", "compare", s["export"], s["ws"], "--out", s["src"] / "space",
                                         "--overwrite", "--epochs", "1"],
    ("train yolo", "out"): lambda s: ["train", "yolo", s["export"], "--out", s["export"] / "train", "--overwrite",
                                      "--epochs", "1"],
    ("demo", "folder"): lambda s: ["demo", s["src"]],
}


def test_every_path_option_is_listed():
    found = path_params(cli)
    assert found == INPUTS | EXEMPT | set(OUTPUT_CASES), (
        f"unlisted: {sorted(found - INPUTS - EXEMPT - set(OUTPUT_CASES))}; "
        f"gone: {sorted((INPUTS | EXEMPT | set(OUTPUT_CASES)) - found)}")


@pytest.mark.parametrize("key", sorted(OUTPUT_CASES), ids=[" ".join(k) for k in sorted(OUTPUT_CASES)])
def test_no_output_option_writes_into_a_source(setup, key):
    before = {k: tree_digest(setup[k]) for k in ("src", "export")}
    args = [str(a) for a in OUTPUT_CASES[key](setup)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert {k: tree_digest(setup[k]) for k in ("src", "export")} == before
