"""The registry: explicit formats, detection order, CLI choices from it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.formats import REGISTRY, detect, readable_formats, writable_formats

DATUMARO = "formats/datumaro"


def test_every_required_format_reads_and_writes():
    for name in ("folder", "yolo", "yolo-cls", "coco", "voc", "csv", "json"):
        assert REGISTRY[name].read is not None and REGISTRY[name].write is not None, name
    assert "flat" in readable_formats() and "flat" not in writable_formats()


def test_annotation_formats_are_detected_before_folders():
    order = sorted((f.detect_priority, f.name) for f in REGISTRY.values() if f.detect is not None)
    assert [n for _, n in order] == ["coco", "voc", "yolo", "createml", "json", "csv", "folder", "flat"]


@pytest.mark.parametrize("rel, name", [
    ("coco_dataset/coco_instances", "coco"),  # annotations/instances_*.json
    ("roboflow_dataset/coco", "coco"),  # <split>/_annotations.coco.json
    ("roboflow_dataset/voc", "voc"),  # <split>/*.xml beside images
    ("voc_dataset/voc_dataset2", "voc"),  # @.xml without objects sorts first
    ("roboflow_dataset/yolo", "yolo"),  # data.yaml
    ("yolo_dataset/strict", "yolo"),  # obj.data
    ("yolo_dataset/annotations", "yolo"),  # obj.names + Images/ + Annotations/*.txt (not VOC)
])
def test_detect_datumaro_samples(corpus, rel, name):
    assert detect(corpus / DATUMARO / rel).name == name


@pytest.mark.parametrize("args, choices", [
    (["export", "--help"], writable_formats()),
    (["convert", "--help"], ["auto", *readable_formats()]),
])
def test_cli_choices_come_from_the_registry(args, choices):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0
    flat = "".join(res.output.split())  # Click wraps long choice lists
    assert "[" + "|".join(choices) + "]" in flat


@pytest.mark.parametrize("min_side, reasons", [
    # the three sample images are byte-identical: one kept, two duplicates
    ("1", {"duplicate": 2}),
    # at the default --min-side the samples' 10x5 images are too small
    ("64", {"too_small": 3}),  # too_small rows take no part in duplicate groups
])
def test_ingest_detects_and_imports_roboflow_coco(corpus, tmp_path, min_side, reasons):
    import json

    from curate.workspace import Workspace

    src = corpus / DATUMARO / "roboflow_dataset/coco"
    res = CliRunner().invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws"), "--min-side", min_side,
                                   "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["reason"] == reasons and summary["run"]["boxes"] == 4
    m = Workspace.open(tmp_path / "ws").read_manifest()
    assert set(m["layout"]) == {"coco"} and sorted(m["split"]) == ["train", "train", "val"]


def test_relative_path_and_file_listing(tmp_path):
    from curate.formats.base import FileNames, relative_path

    assert relative_path(tmp_path / "a" / "b.jpg", tmp_path) == "a/b.jpg"
    assert relative_path(tmp_path / "a" / ".." / "b.jpg", tmp_path / "a") == "../b.jpg"  # not a prefix cut
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("")
    (tmp_path / "d" / "sub.txt").mkdir()  # a folder is not a file
    files = FileNames()
    assert files.isfile(tmp_path / "d" / "x.txt")
    assert not files.isfile(tmp_path / "d" / "sub.txt")
    assert not files.isfile(tmp_path / "d" / "y.txt")
    assert not files.isfile(tmp_path / "missing" / "x.txt")


def test_every_format_declares_what_it_carries_and_its_options():
    """The declarations the CLI and the round-trip tests read: a writer that carries nothing, or two formats
    that spell one option differently, would break them."""
    from curate.formats import format_options

    for fmt in REGISTRY.values():
        if fmt.write is not None:
            assert fmt.read is not None, fmt.name  # an export is verified by reading it back
            assert fmt.carries.labels or fmt.carries.boxes, fmt.name
    flags = [o.flag for o in format_options("both")]
    assert flags == ["--voc-one-based", "--json-mapping", "--no-split-dirs"] and len(set(flags)) == len(flags)
    assert [o.flag for o in format_options("write")] == flags  # every declared option is a writer's too


@pytest.mark.parametrize("command", ["export", "convert"])
def test_cli_format_options_come_from_the_declarations(command):
    from curate.formats import format_options

    cmd = cli.commands[command]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {o.flag for o in format_options("write" if command == "export" else "both")} <= opts


def test_registering_a_clashing_option_is_refused():
    from dataclasses import replace

    from curate.formats import register
    from curate.formats.base import FormatOption

    clash = FormatOption(key="voc_one_based", flag="--voc-one-based", help="another meaning", default=True)
    with pytest.raises(ValueError, match="declares --voc-one-based unlike another format does"):
        register(replace(REGISTRY["csv"], name="csv2", options=(clash,)))
    assert "csv2" not in REGISTRY
