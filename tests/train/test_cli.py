"""``curate train ...`` on the command line, and training as an optional extra."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from curate.cli import cli
from curate.train.yolo import resolved_data_yaml, yolo_data


def _has_torch() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: blocked on purpose
        return False


needs_torch = pytest.mark.skipif(not _has_torch(), reason="curate.train needs torch: pip install 'curate[train]'")
QUICK = ["--epochs", "1", "--img-size", "32", "--batch-size", "8", "--width", "8", "--threads", "1"]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@needs_torch
def test_classify_end_to_end(tiny_export: Path, tmp_path: Path):
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["train", "classify", str(tiny_export), *QUICK, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["images"] == {"train": 8, "val": 4, "test": 4}
    assert summary["classes"] == 4
    assert all(0.0 <= a <= 1.0 for a in summary["accuracy"].values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == summary["accuracy"]
    assert metrics["config"]["width"] == 8 and metrics["config"]["augment"] is True
    assert (out / "model.pt").stat().st_size > 0


@needs_torch
@pytest.mark.parametrize("args, error", [
    # an --out with files in it
    (["--out", "{tmp}/full"], "Error: {tmp}/full: --out: expected an empty or new folder, found a folder "
                              "with files in it (pass --overwrite to write into it anyway)\n"),
])
def test_classify_errors_are_one_line(tiny_export: Path, tmp_path: Path, args: list[str], error: str):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    res = CliRunner().invoke(cli, ["train", "classify", str(tiny_export), *QUICK,
                                   *[a.format(tmp=tmp_path) for a in args]])
    assert res.exit_code == 1
    assert res.stderr == error.format(tmp=tmp_path)


@needs_torch
def test_classify_without_a_train_split_says_what_it_found(tiny_export: Path, tmp_path: Path):
    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    shutil.rmtree(export / "train")
    res = CliRunner().invoke(cli, ["train", "classify", str(export), *QUICK, "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {export}: train split: expected training images, found none "
                          "(found only ['test', 'val'])\n")


def test_img_size_below_32_is_refused_by_the_option(tiny_export: Path, tmp_path: Path):
    res = CliRunner().invoke(cli, ["train", "classify", str(tiny_export), "--img-size", "16", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "Invalid value for '--img-size': 16 is not in the range x>=32." in res.stderr


@needs_torch
def test_compare_end_to_end(tiny_export: Path, tmp_path: Path):
    res = CliRunner().invoke(cli, ["train", "compare", str(tiny_export), str(tiny_export), *QUICK,
                                   "--out", str(tmp_path / "cmp"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["test_images"] == 4
    # the same export on both sides: raw loses the 4 test images as copies, nothing else
    assert summary["train_images"] == {"raw": 8, "curated": 8}
    assert (tmp_path / "cmp" / "compare.json").exists()


def test_core_cli_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from curate.cli import cli; "
            "r1 = CliRunner().invoke(cli, ['--help']); r2 = CliRunner().invoke(cli, ['train', '--help']); "
            "r3 = CliRunner().invoke(cli, ['train', 'classify', '--help']); "
            "assert r1.exit_code == r2.exit_code == r3.exit_code == 0; print('torch' in sys.modules)")
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_without_torch_the_core_works_and_train_says_how_to_get_it(tiny_export: Path, tmp_path: Path):
    # sys.modules["torch"] = None makes every `import torch` fail, as on a machine without it.
    code = ("import sys; sys.modules['torch'] = None; from click.testing import CliRunner; "
            "from curate.cli import cli; "
            "assert CliRunner().invoke(cli, ['--help']).exit_code == 0; "
            f"r = CliRunner().invoke(cli, ['train', 'classify', {str(tiny_export)!r}, '--out', {str(tmp_path / 'o')!r}]); "
            "print(r.exit_code); print(r.stderr, end='')")
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ("1\nError: torch: expected PyTorch installed, found ModuleNotFoundError: "
                          "import of torch halted; None in sys.modules (pip install 'curate[train]')\n")
    assert not (tmp_path / "o").exists()


def test_installed_command_lists_train():
    exe = shutil.which("curate") or str(Path(sys.executable).parent / "curate")
    res = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for name in ("classify", "compare", "yolo"):
        assert f"  {name} " in res.stdout


# -- curate train yolo ---------------------------------------------------------------------

def test_yolo_without_ultralytics_says_how_to_get_it(tmp_path: Path):
    # Ultralytics blocked in a fresh interpreter: what a user without the yolo extra sees.
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "data.yaml").write_text("names: [face]\n")
    res = _python(
        "import sys; sys.modules['ultralytics'] = None\n"
        "from click.testing import CliRunner\nfrom curate.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['train', 'yolo', {str(tmp_path / 'export')!r}, '--out', "
        f"{str(tmp_path / 'o')!r}])\n"
        "print(r.exit_code); print(r.stderr, end='')")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ("1\nError: ultralytics: expected Ultralytics installed and importable, found ModuleNotFoundError: "
                          "import of ultralytics halted; None in sys.modules (pip install 'curate[yolo]')\n")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("layout, task", [
    ({"data.yaml": "names: [face]\n"}, "detect"),          # YOLO detect export
    ({"train/face/a.jpg": "", "val/face/b.jpg": ""}, "classify"),  # yolo-cls export
])
def test_yolo_finds_the_task_from_the_export(tmp_path: Path, layout: dict[str, str], task: str):
    for rel, text in layout.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert yolo_data(tmp_path)[0] == task


def test_yolo_data_yaml_gets_an_absolute_path(tmp_path: Path):
    # Ultralytics resolves a relative `path` against its own datasets_dir, not the YAML's folder.
    export = tmp_path / "export"
    export.mkdir()
    (export / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: face\n")
    copy = resolved_data_yaml(export / "data.yaml", tmp_path / "out")
    data = yaml.safe_load(copy.read_text())
    assert data["path"] == str(export) and data["names"] == {0: "face"} and data["train"] == "images/train"
    assert (export / "data.yaml").read_text().startswith("path: .\n")  # the export is not touched
