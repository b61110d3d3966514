#!/usr/bin/env bash
# Set up everything curate and its tests need on a fresh Debian 12 machine
# (Python 3.11, no GPU): system packages, a virtualenv in .venv with every
# extra, torch + torchvision and Ultralytics, FiftyOne's MongoDB for Debian 12,
# Keras (tensorflow-cpu) in a virtualenv of its own, .venv-keras, and Label Studio in .venv-labelstudio.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if command -v apt-get >/dev/null; then
  # chromium: headless screenshots/render tests (review, report);
  # libgl1/libglib2.0-0: OpenCV builds pulled in by mediapipe need them.
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium libgl1 libglib2.0-0 >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -d .venv ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# The regular torch/torchvision builds from the package index, pinned as a pair: they run on the CPU,
# and torchvision's compiled ops load (the local CPU build torch==2.13.0 cannot load them, so neither
# torchvision nor Ultralytics would import). About 5.5 GB with the CUDA libraries they bring.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e '.[all,train,yolo,dev]'
# Keras gets its own venv: with TensorFlow importable, mediapipe imports it, and importing torchvision
# after TensorFlow crashes the process (segfault; torch 2.14.1, tensorflow-cpu 2.21). The tests that read
# exports with Keras run .venv-keras/bin/python in a subprocess.
[ -d .venv-keras ] || "$PY" -m venv .venv-keras
.venv-keras/bin/python -m pip install -q --upgrade pip
.venv-keras/bin/python -m pip install -q 'tensorflow-cpu>=2.16'
# Label Studio gets its own venv too: it pins numpy, pyarrow and OpenCV versions that clash with curate's.
# `curate label` runs .venv-labelstudio/bin/label-studio and talks to it over HTTP (docs/labels.md).
[ -d .venv-labelstudio ] || "$PY" -m venv .venv-labelstudio
.venv-labelstudio/bin/python -m pip install -q --upgrade pip
.venv-labelstudio/bin/python -m pip install -q 'label-studio==1.23.2'
# Face models: extracted from the mediapipe==0.10.21 wheel into the user cache
# (see docs/faces.md); a no-op when already there.
.venv/bin/curate models fetch >/dev/null 2>&1 || echo "note: face models not fetched now; curate fetches them on first use"
echo "curate is set up: . .venv/bin/activate"
