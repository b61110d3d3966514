"""``curate train yolo``: hand a YOLO export to Ultralytics, when it is installed.

Ultralytics is an optional extra (``pip install 'curate[yolo]'``); set-up
installs it with the regular torch/torchvision builds, which run on the CPU.
tests/train/test_yolo.py trains YOLOv8n detect and classify for one epoch on
curate exports, offline.

What curate adds before the hand-over: it finds ``data.yaml`` (detect) or the
``train/`` folder (classify), and writes a copy of ``data.yaml`` into the
output folder whose ``path`` is the export's absolute folder. Ultralytics
resolves a *relative* ``path`` against its own ``datasets_dir`` setting, not
against the YAML's folder, which sends training to the wrong place.

    >>> task, data = yolo_data("export")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from curate.errors import CurateError, FormatError


def yolo_data(export: str | Path) -> tuple[str, Path]:
    """``(task, data)``: ``("detect", data.yaml)`` or ``("classify", export folder)``."""
    p = Path(export).absolute()
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
        return "detect", p
    if (p / "data.yaml").is_file():
        return "detect", p / "data.yaml"
    if (p / "train").is_dir():
        return "classify", p
    raise FormatError(p, None, expected="a YOLO export: data.yaml (detect) or train/class/image folders (classify)",
                      found="neither", hint="write one with `curate export WS --format yolo --out DIR`")


def resolved_data_yaml(data_yaml: Path, out_dir: Path) -> Path:
    """Copy ``data_yaml`` into ``out_dir`` with an absolute ``path``; return the copy."""
    try:
        data = yaml.safe_load(data_yaml.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise FormatError(data_yaml, None, message=f"cannot read it: {e}") from e
    if not isinstance(data, dict) or "names" not in data:
        raise FormatError(data_yaml, "names", expected="a mapping with names: (the class list)",
                          found=type(data).__name__ if not isinstance(data, dict) else "no names")
    base = Path(str(data.get("path") or "."))
    data["path"] = str(base if base.is_absolute() else (data_yaml.parent / base).resolve())
    out = out_dir / "data.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def train_yolo(export: str | Path, out: str | Path, *, model: str | None = None, epochs: int = 10,
               img_size: int = 640, batch_size: int = 16, seed: int = 0, device: str = "auto",
               overwrite: bool = False) -> dict[str, Any]:
    """Train an Ultralytics YOLO model on a YOLO export; results go under ``out``.

    The default model is built from its YAML (``yolov8n.yaml`` or
    ``yolov8n-cls.yaml``), so nothing is downloaded; pass ``model="yolov8n.pt"``
    to start from pretrained weights. With ``YOLO_OFFLINE=true`` in the
    environment, mixed precision is off (``amp=False``): Ultralytics' AMP check
    would download a model.
    """
    from curate.paths import check_output_for

    task, data = yolo_data(export)
    check_output_for(out, [export])  # before the slow import: an --out that could touch the export fails at once
    try:
        from ultralytics import YOLO
    except Exception as e:  # ImportError, or torchvision failing to load inside it
        raise CurateError("", field="ultralytics", expected="Ultralytics installed and importable",
                          found=f"{type(e).__name__}: {e}",
                          hint="pip install 'curate[yolo]'") from e
    from curate.train.loop import prepare_out  # torch, present once Ultralytics imports

    out_dir = prepare_out(out, overwrite, [export])
    if task == "detect":
        data = resolved_data_yaml(data, out_dir)
    name = model or ("yolov8n-cls.yaml" if task == "classify" else "yolov8n.yaml")
    yolo = YOLO(name, task=task)
    # Ultralytics' AMP check (GPU only) downloads a model to compare against; offline it cannot.
    offline = os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true")
    results = yolo.train(amp=not offline, data=str(data), epochs=epochs, imgsz=img_size, batch=batch_size, seed=seed,
                         deterministic=True, device=None if device == "auto" else device, project=str(out_dir),
                         name="ultralytics",
                         exist_ok=True, plots=False)
    return {"task": task, "data": str(data), "model": name, "save_dir": str(out_dir / "ultralytics"),
            "metrics": dict(getattr(results, "results_dict", {}) or {})}
