"""Reading and probing a source without a workspace (curate.formats.source): what ingest and convert share."""

from __future__ import annotations

import shutil

import pytest

from curate.errors import SourceError
from curate.formats.source import IngestOptions, SourceSpec, read_and_probe, sample_id_for
from curate.imageio import ProbeOptions
from tests.conftest import tree_digest


def _source(tmp_path, skimage_dir):
    src = tmp_path / "src"
    (src / "cat").mkdir(parents=True)
    (src / "cup").mkdir()
    shutil.copy(skimage_dir / "chelsea.png", src / "cat" / "chelsea.png")
    shutil.copy(skimage_dir / "coffee.png", src / "cup" / "coffee.png")
    shutil.copy(skimage_dir / "coffee.png", src / "cup" / "coffee copy.png")  # the same bytes: both kept
    data = (skimage_dir / "rocket.jpg").read_bytes()
    (src / "cup" / "cut.jpg").write_bytes(data[: len(data) // 3])  # a download that stopped
    return src


def test_rows_and_decisions_without_a_workspace(tmp_path, skimage_dir):
    src = _source(tmp_path, skimage_dir)
    before = tree_digest(tmp_path)
    opts = IngestOptions([SourceSpec(src, name="s", layout="folder")],
                         probe=ProbeOptions(min_side_px=1, perceptual_hashes=False), workers=1)
    probed = read_and_probe([("s", src, opts.sources[0])], opts)
    assert tree_digest(tmp_path) == before  # no checkpoint, no workspace: nothing written anywhere
    rows = probed.rows.set_index("rel_path")
    assert sorted(rows.index) == ["cat/chelsea.png", "cup/coffee copy.png", "cup/coffee.png", "cup/cut.jpg"]
    assert rows.loc["cup/cut.jpg", "reason"] == "truncated"
    assert rows.loc["cat/chelsea.png", ["status", "label", "width", "height"]].tolist() == ["kept", "cat", 451, 300]
    assert rows.loc["cup/coffee.png", "sha256"] == rows.loc["cup/coffee copy.png", "sha256"]
    assert set(rows["reason"].dropna()) == {"truncated"}  # exact copies are not marked here (ingest's choice)
    assert rows.loc["cat/chelsea.png", "sample_id"] == sample_id_for("s", "cat/chelsea.png")
    assert rows["phash"].isna().all()  # perceptual_hashes=False: convert's probe
    assert (probed.probed_files, probed.reused, probed.annotations) == (4, 0, [])


def test_checkpoints_go_where_they_are_asked_to(tmp_path, skimage_dir):
    src = _source(tmp_path, skimage_dir)
    opts = IngestOptions([SourceSpec(src, name="s", layout="folder")], workers=1, checkpoint_every=1)
    read_and_probe([("s", src, opts.sources[0])], opts, checkpoints=tmp_path / "ckpt")
    assert len(list((tmp_path / "ckpt").glob("chunk-*.parquet"))) == 4  # one per probed file


def test_an_empty_source_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    opts = IngestOptions([SourceSpec(tmp_path / "empty", name="e", layout="flat")], workers=1)
    with pytest.raises(SourceError, match="expected at least one file to ingest, found an empty folder"):
        read_and_probe([("e", tmp_path / "empty", opts.sources[0])], opts)
