"""Writing, verifying and publishing a dataset without a stage (curate.formats.publish): what export and
convert share, with the format's own options from its declaration."""

from __future__ import annotations

import json
import shutil

import pytest

from curate.errors import OptionError
from curate.formats.publish import (
    MARKER_NAME,
    ExportOptions,
    check_options,
    export_to,
    plan_export,
    write_options,
)
from curate.formats.source import IngestOptions, SourceSpec, read_and_probe
from curate.schema import MANIFEST_COLUMNS, conform, empty_annotations


@pytest.mark.parametrize("options, message", [
    # an option of another format, set: refused, naming the formats
    (ExportOptions("yolo", "o", format_options={"voc_one_based": True}),
     "--voc-one-based: expected an option of the formats used (yolo), found an option of voc only"),
    # no format declares it
    (ExportOptions("yolo", "o", format_options={"bogus": 1}),
     "bogus: expected an option a registered format declares, found 'bogus'"),
])
def test_format_options_are_checked_against_the_declaration(options, message):
    with pytest.raises(OptionError) as e:
        check_options(options)
    assert str(e.value) == message


def test_format_options_at_their_default_pass_and_reach_only_their_writer():
    check_options(ExportOptions("yolo", "o", format_options={"voc_one_based": False}))  # the default: harmless
    assert write_options(ExportOptions("folder", "o", format_options={"split_dirs": False,
                                                                      "voc_one_based": False})).extra == {
        "split_dirs": False}
    with pytest.raises(TypeError):  # options after format and out are keyword-only
        ExportOptions("folder", "o", True)  # type: ignore[misc]


def test_rows_read_without_a_workspace_are_written_verified_and_published(tmp_path, skimage_dir):
    src = tmp_path / "src"
    (src / "cat").mkdir(parents=True)
    shutil.copy(skimage_dir / "chelsea.png", src / "cat" / "chelsea.png")
    opts = IngestOptions([SourceSpec(src, name="s", layout="folder")], workers=1)
    probed = read_and_probe([("s", src, opts.sources[0])], opts)
    plan, boxes = plan_export(conform(probed.rows, MANIFEST_COLUMNS), empty_annotations())
    out = tmp_path / "out"
    summary = export_to(plan, boxes, ExportOptions("folder", out, format_options={"split_dirs": False}), [src])
    assert summary["verified"] == "1 images read back" and summary["splits"] == {"train": 1}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        MARKER_NAME, "cat", "cat/chelsea.png", "classes.txt"]  # --no-split-dirs: class/image
    assert json.loads((out / MARKER_NAME).read_text())["format"] == "folder"
