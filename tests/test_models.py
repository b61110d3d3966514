"""Face model resolution: explicit folder, cache, installed mediapipe 0.10, download; sha256 checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curate.errors import ModelNotFoundError
from curate.models import (
    ENV_CACHE_DIR,
    ENV_MODEL_DIR,
    MODELS,
    cache_dir,
    locate,
    mediapipe_modules_dir,
    resolve,
    sha256_file,
)

CURATE = Path(sys.executable).parent / "curate"


@pytest.fixture(scope="module")
def real_models() -> dict[str, Path]:
    """The real model files (fetched into the user cache on first use)."""
    return {k: r.path for k, r in resolve().items()}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_MODEL_DIR, ENV_CACHE_DIR, "XDG_CACHE_HOME")}
    env.update(extra)
    return env


@pytest.mark.parametrize("environ, expected", [
    ({"HOME": "/h"}, None),  # default: ~/.cache/curate/models
    ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/curate/models"),  # XDG base directory honoured
    ({"XDG_CACHE_HOME": "/xdg", ENV_CACHE_DIR: "/c"}, "/c/models"),  # curate's own variable wins
])
def test_cache_dir(environ, expected):
    want = Path(expected) if expected else Path.home() / ".cache" / "curate" / "models"
    assert cache_dir(environ) == want


def test_explicit_folder_without_the_model_is_an_error(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        locate("short_range", environ={ENV_MODEL_DIR: str(tmp_path)})
    assert str(e.value) == (
        f"{tmp_path}: model (CURATE_FACE_MODEL_DIR): expected a folder holding face_detection_short_range.tflite, "
        f"found no such file there (run `curate models fetch --dir {tmp_path}`, or unset CURATE_FACE_MODEL_DIR "
        "to use the user cache)"
    )


def test_a_damaged_model_is_refused(tmp_path, real_models):
    data = real_models["full_range"].read_bytes()
    (tmp_path / MODELS["full_range"].filename).write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(ModelNotFoundError, match=r"expected face_detection_full_range_sparse.tflite with sha256 "
                                                 r"2c3728e6da56\.\.\., found sha256 [0-9a-f]{12}\.\.\., 338373 bytes"):
        locate("full_range", model_dir=tmp_path)


def test_a_good_copy_in_an_explicit_folder_is_used(tmp_path, real_models):
    for key, path in real_models.items():
        shutil.copy(path, tmp_path / MODELS[key].filename)
    found = resolve(model_dir=tmp_path, download=False)
    assert {k: (r.found_in, r.path.parent) for k, r in found.items()} == {
        "short_range": ("explicit", tmp_path), "full_range": ("explicit", tmp_path)}


@pytest.mark.skipif(mediapipe_modules_dir() is not None, reason="an installed mediapipe 0.10 ships the models")
def test_nothing_found_and_no_download_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve(["short_range"], download=False, environ={"XDG_CACHE_HOME": str(tmp_path)})
    text = str(e.value)
    assert text.startswith(f"{tmp_path / 'curate' / 'models'}: face model not found: face_detection_short_range.tflite")
    assert "run `curate models fetch` on a machine that can reach pypi.org" in text
    assert "mediapipe==0.10.21 (mediapipe/modules/face_detection/)" in text


@pytest.mark.slow  # downloads the 35 MB mediapipe 0.10.21 wheel from the package index
def test_fresh_machine_fetches_the_models_itself(tmp_path):
    """Empty cache, no model folder: `curate models fetch` gets both models (URL or the 0.10.21 wheel)."""
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run([str(CURATE), "models", "fetch"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "cache" / "curate" / "models"
    for spec in MODELS.values():
        assert sha256_file(folder / spec.filename) == spec.sha256
        assert f"{folder / spec.filename} (from " in out.stdout
    again = subprocess.run([str(CURATE), "models", "status"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"short_range: {folder / MODELS['short_range'].filename}" in again.stdout


def test_fetch_into_a_folder_for_offline_use(tmp_path, real_models):
    """--dir fills a folder that CURATE_FACE_MODEL_DIR can name later (found in the cache: copied, no download)."""
    env = clean_env(XDG_CACHE_HOME=str(real_models["short_range"].parent.parent.parent))
    target = tmp_path / "offline"
    out = subprocess.run([str(CURATE), "models", "fetch", "--dir", str(target)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(s.filename for s in MODELS.values())
    assert out.stdout.count("(from cache)") == 2
    found = resolve(environ={ENV_MODEL_DIR: str(target)}, download=False)
    assert {r.found_in for r in found.values()} == {"explicit"}


def test_models_inside_an_installed_mediapipe_010_are_used(tmp_path, real_models):
    """A mediapipe 0.10.x install has mediapipe/modules/face_detection/*.tflite: step 3 finds them there."""
    site = tmp_path / "site"
    pkg = site / "mediapipe" / "modules" / "face_detection"
    pkg.mkdir(parents=True)
    (site / "mediapipe" / "__init__.py").write_text("__version__ = '0.10.21'\n")
    for key, path in real_models.items():
        shutil.copy(path, pkg / MODELS[key].filename)
    code = ("from curate.models import resolve; "
            "print(sorted((k, r.found_in, str(r.path)) for k, r in resolve(download=False).items()))")
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "empty-cache"), PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted([
        ("full_range", "mediapipe", str(pkg / MODELS["full_range"].filename)),
        ("short_range", "mediapipe", str(pkg / MODELS["short_range"].filename)),
    ]))


def test_fetch_into_a_folder_that_cannot_be_made_is_a_one_line_error(tmp_path):
    from click.testing import CliRunner

    from curate.cli import cli

    blocker = tmp_path / "file"
    blocker.write_text("")
    res = CliRunner().invoke(cli, ["models", "fetch", "--dir", str(blocker / "models")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {blocker / 'models'}: --dir: expected a folder curate can create and write the "
                          "face models into, found NotADirectoryError: Not a directory (choose another --dir)\n")


@pytest.mark.slow  # downloads the 35 MB mediapipe 0.10.21 wheel where the official URL cannot be reached
def test_download_goes_through_pooch_url_first_then_the_pinned_wheel(tmp_path):
    """In process, on an empty cache: each model comes from the official URL or, failing that (as on machines
    that reach only package registries), from the pinned wheel; pooch checks the download's sha256, and each
    model's own sha256 is checked again. No `pip` process is started."""
    if mediapipe_modules_dir() is not None:
        pytest.skip("the installed mediapipe ships the models: nothing would be downloaded")
    found = resolve(environ={"XDG_CACHE_HOME": str(tmp_path)}, cache=tmp_path / "models")
    assert {r.found_in for r in found.values()} <= {"url", "wheel"}
    for key, r in found.items():
        assert r.path == tmp_path / "models" / MODELS[key].filename and sha256_file(r.path) == MODELS[key].sha256
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(s.filename for s in MODELS.values())


def test_a_download_with_another_hash_is_refused(tmp_path):
    """pooch refuses bytes whose sha256 is not the pinned one, and leaves no file behind (served over HTTP on
    127.0.0.1: the same path as a download from the network)."""
    import functools
    import http.server
    import threading

    from curate.models import _download

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "model.tflite").write_bytes(b"not the model")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.tflite"
        with pytest.raises(ValueError, match="SHA256 hash of downloaded file"):
            _download(url, MODELS["short_range"].sha256, tmp_path / "cache", "m.tflite", 5.0)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "cache" / "m.tflite").exists()
