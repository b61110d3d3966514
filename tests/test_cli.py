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


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts} | {"--help"}


def test_every_option_is_documented():
    """Each option of each command appears in README.md or docs/ (as sqlite-utils checks its docs)."""
    import re

    text = "".join(p.read_text() for p in _docs())
    missing = []
    for name, cmd in _commands(cli):
        for param in cmd.params:
            flags = [o for o in getattr(param, "opts", []) + getattr(param, "secondary_opts", []) if o.startswith("--")]
            if not isinstance(param, click.Option) or not flags or flags[0] in ("--help", "--json", "--workers"):
                continue
            if not any(re.search(re.escape(f) + r"(?![\w-])", text) for f in flags):
                missing.append((name, flags[0]))
    assert missing == [], f"options not mentioned in README.md or docs/: {missing}"


def test_documented_command_lines_use_real_options():
    """Every `--flag` written after `curate COMMAND` in README.md or docs/ is an option of that command."""
    import re

    commands = dict(_commands(cli))
    stale = []
    for doc in _docs():
        for line in doc.read_text().splitlines():
            line = line.split(" # ")[0]  # a shell comment may name other commands' options
            for m in re.finditer(r"curate ([a-z][a-z-]*(?: [a-z][a-z-]*)?)([^`|]*)", line):
                words = m.group(1).split()
                name = m.group(1) if m.group(1) in commands else words[0]
                if name not in commands:
                    continue
                rest = m.group(2) if name == m.group(1) else " ".join(words[1:]) + m.group(2)
                stale += [(doc.name, name, flag) for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", rest)
                          if flag not in _options(commands[name])]
    assert stale == [], f"documented options that the command does not have: {stale}"
