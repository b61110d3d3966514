"""The command line as a whole: help, documentation, import cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from curate.cli import cli

REPO = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        out.append((full, cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, full + " ")
    return out


def test_every_command_has_help_and_is_documented():
    docs = (REPO / "README.md").read_text() + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    runner = CliRunner()
    for name, cmd in _commands(cli):
        assert cmd.help, f"`curate {name}` has no help text"
        res = runner.invoke(cli, [*name.split(), "--help"])
        assert res.exit_code == 0, res.output
        assert f"curate {name}" in docs, f"`curate {name}` is not mentioned in README.md or docs/"


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from click.testing import CliRunner; from curate.cli import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
            "heavy = ('torch', 'torchvision', 'timm', 'ultralytics', 'tensorflow', 'keras', 'fiftyone', "
            "'mediapipe', 'cv2', 'albumentations', 'matplotlib', 'pandas'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"`curate --help` imported {out.stdout.strip()}"


def test_unknown_workspace_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(cli, ["status", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'nope'}: expected a curate workspace, found no curate.json "
                          "(create one with `curate ingest SOURCE --into WS`)\n")
