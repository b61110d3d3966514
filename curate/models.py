"""The face detector models: where to find them, how to fetch them, how to check them.

curate detects faces with MediaPipe's BlazeFace models, run by the Tasks
``FaceDetector``. Newer ``mediapipe`` wheels ship no model files, so curate
resolves each model in this order (docs/faces.md, "The face model"):

1. an explicit folder: the ``model_dir`` argument (``--model-dir``) or the
   ``CURATE_FACE_MODEL_DIR`` environment variable;
2. the user cache folder, ``$XDG_CACHE_HOME/curate/models`` (default
   ``~/.cache/curate/models``; ``CURATE_CACHE_DIR`` replaces ``$XDG_CACHE_HOME/curate``);
3. an installed ``mediapipe`` 0.10.x package (``mediapipe/modules/face_detection/``);
4. download into the cache: the official model URL, else the file extracted
   from the ``mediapipe==0.10.21`` wheel on the package index (one pinned
   wheel file: the ``.tflite`` bytes are the same in every platform's wheel).

Downloads go through pooch (retries, a temporary file renamed into place, the
hash checked), and every file is checked against the sha256 pinned below
before it is used, so a truncated download or a different model with the
same name is refused. Nothing shells out to ``pip``.

    >>> MODELS["short_range"].filename
    'face_detection_short_range.tflite'
    >>> cache_dir({"XDG_CACHE_HOME": "/x"}).as_posix()
    '/x/curate/models'
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from curate.errors import ModelNotFoundError

ENV_MODEL_DIR = "CURATE_FACE_MODEL_DIR"
ENV_CACHE_DIR = "CURATE_CACHE_DIR"
WHEEL_REQUIREMENT = "mediapipe==0.10.21"
# The package index's file of that release, pinned by URL and sha256 (as the index lists them): any platform's
# wheel will do, since the .tflite files inside are the same bytes on every platform.
WHEEL_URL = ("https://files.pythonhosted.org/packages/ad/83/56f760fecdc60de84c529d6c05c9dfc7d972617c6632bd254d5e021e5b16/"
             "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
URL_TIMEOUT_S = 15.0
WHEEL_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ModelSpec:
    """One model file: its name, pinned digest, and where it can come from."""

    key: str
    filename: str
    sha256: str
    size_bytes: int
    urls: tuple[str, ...]
    wheel_member: str
    input_px: int  # side of the square the model sees

    @property
    def short_sha(self) -> str:
        return self.sha256[:12]


# Digests and URLs: mediapipe's third_party/external_files.bzl pins exactly these
# bytes at these generations, and they are byte-identical to the files in the
# mediapipe 0.10.21 wheel (checked when this table was written).
MODELS: dict[str, ModelSpec] = {
    "short_range": ModelSpec(
        key="short_range",
        filename="face_detection_short_range.tflite",
        sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        size_bytes=229_714,
        urls=(
            "https://storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite"
            "?generation=1677044301978921",
        ),
        wheel_member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
        input_px=128,
    ),
    "full_range": ModelSpec(
        key="full_range",
        filename="face_detection_full_range_sparse.tflite",
        sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        size_bytes=676_746,
        urls=(
            "https://storage.googleapis.com/mediapipe-assets/face_detection_full_range_sparse.tflite"
            "?generation=1674261618323821",
        ),
        wheel_member="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        input_px=192,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """A verified model file and where it was found (explicit, cache, mediapipe, url, wheel)."""

    spec: ModelSpec
    path: Path
    found_in: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user cache folder for models (not created here)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_CACHE_DIR):
        return Path(env[ENV_CACHE_DIR]).expanduser() / "models"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "curate" / "models"


def explicit_dir(model_dir: str | Path | None, environ: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """The folder the user named (argument first, then environment), and how it was named."""
    env = os.environ if environ is None else environ
    if model_dir is not None:
        return Path(model_dir).expanduser(), "--model-dir"
    if env.get(ENV_MODEL_DIR):
        return Path(env[ENV_MODEL_DIR]).expanduser(), ENV_MODEL_DIR
    return None


def mediapipe_modules_dir() -> Path | None:
    """``mediapipe/modules/face_detection`` of an installed mediapipe, if it has one.

    Found without importing mediapipe (importing it takes seconds).
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        d = Path(root) / "modules" / "face_detection"
        if d.is_dir():
            return d
    return None


def _verified(path: Path, spec: ModelSpec) -> bool:
    try:
        return path.is_file() and path.stat().st_size == spec.size_bytes and sha256_file(path) == spec.sha256
    except OSError:
        return False


def _mismatch(path: Path, spec: ModelSpec, via: str) -> ModelNotFoundError:
    try:
        found = f"sha256 {sha256_file(path)[:12]}..., {path.stat().st_size} bytes"
    except OSError as e:
        found = f"an unreadable file ({e})"
    return ModelNotFoundError(
        "", file=path, field=f"model ({via})", expected=f"{spec.filename} with sha256 {spec.short_sha}...",
        found=found, hint=f"replace it with the file from {WHEEL_REQUIREMENT} or run `curate models fetch`",
    )


def locate(
    key: str,
    model_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    cache: Path | None = None,
) -> ResolvedModel | None:
    """Find a verified local copy of model ``key`` without downloading (steps 1-3).

    A folder named explicitly must hold a good copy: a missing or different file
    there is an error, not a reason to look elsewhere.
    """
    spec = MODELS[key]
    named = explicit_dir(model_dir, environ)
    if named is not None:
        folder, via = named
        path = folder / spec.filename
        if not path.exists():
            raise ModelNotFoundError(
                "", file=folder, field=f"model ({via})", expected=f"a folder holding {spec.filename}",
                found="no such file there",
                hint=f"run `curate models fetch --dir {folder}`, or unset {ENV_MODEL_DIR} to use the user cache",
            )
        if not _verified(path, spec):
            raise _mismatch(path, spec, via)
        return ResolvedModel(spec, path, "explicit")
    cached = (cache or cache_dir(environ)) / spec.filename
    if _verified(cached, spec):
        return ResolvedModel(spec, cached, "cache")
    mp_dir = mediapipe_modules_dir()
    if mp_dir is not None and _verified(mp_dir / spec.filename, spec):
        return ResolvedModel(spec, mp_dir / spec.filename, "mediapipe")
    return None


def _store(data: bytes, spec: ModelSpec, folder: Path) -> Path:
    """Write verified bytes atomically into ``folder``."""
    from curate.workspace import atomic_write_bytes

    path = folder / spec.filename
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)  # a model is not a secret; others sharing the folder may read it
    return path


def _download(url: str, sha256: str, folder: Path, name: str, timeout_s: float) -> Path:
    """``url`` downloaded into ``folder/name`` by pooch, its sha256 checked (a mismatch is a ValueError)."""
    try:
        import pooch
    except ImportError as e:  # the faces extra brings it: pip install 'curate[faces]'
        raise OSError(f"pooch is not installed ({e}); install curate[faces]") from None

    downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout_s)
    return Path(pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=name, path=folder, downloader=downloader))


def _problem(url: str, e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{url.split('?')[0]}: {type(e).__name__}: {text[:300]}"


def _from_url(spec: ModelSpec, folder: Path, problems: list[str]) -> Path | None:
    """The model from its official URL (step 4, first try), stored in ``folder``."""
    for url in spec.urls:
        try:
            with tempfile.TemporaryDirectory(prefix="curate-model-") as tmp:
                got = _download(url, spec.sha256, Path(tmp), spec.filename, URL_TIMEOUT_S)
                return _store(got.read_bytes(), spec, folder)
        except Exception as e:  # network errors (requests), a changed file (ValueError): try the next source
            problems.append(_problem(url, e))
    return None


def _from_wheel(specs: list[ModelSpec], folder: Path, problems: list[str]) -> dict[str, Path]:
    """The models from the pinned ``mediapipe==0.10.21`` wheel on the package index (step 4, fallback)."""
    out: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="curate-mediapipe-") as tmp:
        try:
            wheel = _download(WHEEL_URL, WHEEL_SHA256, Path(tmp), WHEEL_URL.rsplit("/", 1)[1], WHEEL_TIMEOUT_S)
        except Exception as e:  # as above: reported with the other tries
            problems.append(_problem(WHEEL_URL, e))
            return out
        try:
            with zipfile.ZipFile(wheel) as zf:
                for spec in specs:
                    try:
                        data = zf.read(spec.wheel_member)
                    except KeyError:
                        problems.append(f"{wheel.name}: no {spec.wheel_member}")
                        continue
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != spec.sha256:
                        problems.append(f"{wheel.name}:{spec.filename}: sha256 {digest[:12]}..., expected {spec.short_sha}...")
                        continue
                    out[spec.key] = _store(data, spec, folder)
        except zipfile.BadZipFile as e:
            problems.append(f"{wheel.name}: {e}")
    return out


def resolve(
    keys: Iterable[str] = tuple(MODELS),
    model_dir: str | Path | None = None,
    *,
    download: bool = True,
    environ: Mapping[str, str] | None = None,
    cache: Path | None = None,
) -> dict[str, ResolvedModel]:
    """Verified paths of the models ``keys``, fetching missing ones into the cache.

    Raises :class:`ModelNotFoundError` saying how to provide a model when no
    way works.

        >>> sorted(resolve(["short_range"], download=False))  # doctest: +SKIP
        ['short_range']
    """
    out: dict[str, ResolvedModel] = {}
    missing: list[ModelSpec] = []
    for key in keys:
        found = locate(key, model_dir, environ, cache=cache)
        if found is not None:
            out[key] = found
        else:
            missing.append(MODELS[key])
    if not missing:
        return out
    problems: list[str] = []
    folder = cache or cache_dir(environ)
    if download:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problems.append(f"cannot create the cache folder: {e}")
            download = False
    if download:
        still: list[ModelSpec] = []
        for spec in missing:
            path = _from_url(spec, folder, problems)
            if path is not None:
                out[spec.key] = ResolvedModel(spec, path, "url")
            else:
                still.append(spec)
        if still:
            for key, path in _from_wheel(still, folder, problems).items():
                out[key] = ResolvedModel(MODELS[key], path, "wheel")
    lost = [s for s in missing if s.key not in out]
    if lost:
        names = ", ".join(s.filename for s in lost)
        tried = "; ".join(problems) if problems else "download not allowed"
        raise ModelNotFoundError(
            f"face model not found: {names} (tried: {tried})", file=folder,
            hint=(f"run `curate models fetch` on a machine that can reach pypi.org, or copy the files from "
                  f"{WHEEL_REQUIREMENT} (mediapipe/modules/face_detection/) into {folder} "
                  f"or into a folder named by {ENV_MODEL_DIR}"),
        )
    return out


def status(model_dir: str | Path | None = None) -> list[dict[str, str | None]]:
    """Where each model would be taken from now, without downloading."""
    rows: list[dict[str, str | None]] = []
    for key, spec in MODELS.items():
        row: dict[str, str | None] = {"model": key, "file": spec.filename, "sha256": spec.sha256}
        try:
            found = locate(key, model_dir)
        except ModelNotFoundError as e:
            row.update(path=None, found_in=None, problem=str(e))
        else:
            row.update(path=str(found.path) if found else None, found_in=found.found_in if found else None,
                       problem=None if found else "not on this machine; `curate models fetch` gets it")
        rows.append(row)
    return rows


def fetch(target_dir: str | Path | None = None) -> list[dict[str, str]]:
    """Make every model available in the user cache, or in ``target_dir`` if given.

    Returns one record per model: its path and where it came from. A folder
    filled with ``target_dir`` can be used as ``CURATE_FACE_MODEL_DIR``, e.g. on
    a machine without network access.
    """
    env = dict(os.environ)
    env.pop(ENV_MODEL_DIR, None)  # fetch fills a folder; the named folder is a target, not a source
    dest = Path(target_dir).expanduser().absolute() if target_dir is not None else cache_dir(env)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=dest, prefix=".curate-write-test-")
        probe.close()
    except OSError as e:
        raise ModelNotFoundError("", file=dest, field="--dir" if target_dir is not None else "model cache",
                                 expected="a folder curate can create and write the face models into",
                                 found=f"{type(e).__name__}: {e.strerror or e}",
                                 hint="choose another --dir" if target_dir is not None
                                 else "set CURATE_CACHE_DIR to a writable folder") from e
    resolved: dict[str, ResolvedModel] = {}
    if target_dir is not None:  # copies already on this machine (user cache, mediapipe) need no download
        for key in MODELS:
            found = locate(key, environ=env)
            if found is not None:
                resolved[key] = found
    rest = [k for k in MODELS if k not in resolved]
    if rest:
        resolved.update(resolve(rest, download=True, environ=env, cache=dest))
    out = []
    for key, r in resolved.items():
        path = r.path
        if path.parent.resolve() != dest.resolve():  # found inside mediapipe: keep a copy in the folder too
            path = _store(path.read_bytes(), r.spec, dest)
        out.append({"model": key, "path": str(path), "found_in": r.found_in, "sha256": r.spec.sha256})
    return out
