"""ruff and mypy over the package (CLI included), as CI runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("tool, args", [
    ("ruff", ["check", "curate", "tests", "benchmarks", "scripts"]),
    ("mypy", []),  # configured in pyproject.toml: packages = ["curate"]
])
def test_tool_is_clean(tool, args):
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    out = subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tests_mirror_the_package():
    """Every module under curate/ has its test file at the same place under tests/ (STYLE.md)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    missing = []
    for module in sorted((root / "curate").rglob("*.py")):
        rel = module.relative_to(root / "curate")
        if rel.name == "__init__.py":
            continue
        expected = root / "tests" / rel.parent / f"test_{rel.name}"
        if not expected.exists():
            missing.append(str(expected.relative_to(root)))
    assert missing == [], f"modules without a test file: {missing}"
