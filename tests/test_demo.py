"""`curate demo`: the main job on data built from scikit-image's bundled photos, and what it says without them."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_the_main_job(tmp_path):
    from click.testing import CliRunner

    from curate.cli import cli

    res = CliRunner().invoke(cli, ["demo", str(tmp_path / "demo"), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["status"]["kept"] > 0 and summary["reason"]["truncated"] == 1
    assert (tmp_path / "demo" / "export").is_dir()


def test_demo_without_scikit_image_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['skimage'] = None; sys.modules['skimage.data'] = None; "
            "from click.testing import CliRunner; from curate.cli import cli; "
            f"r = CliRunner().invoke(cli, ['demo', {str(tmp_path / 'demo')!r}]); "
            "print(r.exit_code); print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[:2] == [
        "1", "Error: curate demo: expected scikit-image, whose bundled photos the demo uses, found it is not "
             "installed (pip install 'curate[demo]')"]
