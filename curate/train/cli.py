"""``curate train ...``: train on what curate exported.

This module is imported by ``curate.cli`` to register the group, so it must
not import torch: every command imports the training code inside its body.
Training needs the ``train`` extra (``pip install 'curate[train]'``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from curate.errors import CurateError

F = TypeVar("F", bound=Callable[..., Any])
FIT_CHOICES = ("letterbox", "stretch", "crop")


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise CurateError("", field="torch", expected="PyTorch installed", found=f"{type(e).__name__}: {e}",
                          hint="pip install 'curate[train]'") from None


def train_options(f: F) -> F:
    """The options every classifier training shares (one budget for compare's two runs)."""
    options = [
        click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Passes over the training images."),
        click.option("--img-size", "img_size", type=click.IntRange(min=32), default=64, show_default=True,
                     help="Side of the square input, in pixels (at least 32)."),
        click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seeds initialisation, shuffling and flips: same seed, same model (on CPU)."),
        click.option("--fit", type=click.Choice(FIT_CHOICES), default="letterbox", show_default=True,
                     help="How an image becomes a square: pad (letterbox), distort (stretch) or cut (crop)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True,
                     help="AdamW learning rate (cosine-annealed to 0)."),
        click.option("--model", default="small-cnn", show_default=True,
                     help="small-cnn, a torchvision classifier (resnet18, mobilenet_v3_small, efficientnet_b0, ...) "
                          "or timm:NAME."),
        click.option("--pretrained", is_flag=True,
                     help="Start from the library's ImageNet weights (downloaded on first use; not for small-cnn)."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (a GPU when torch sees one), cpu, cuda, cuda:N or mps."),
        click.option("--width", type=click.IntRange(min=1), default=16, show_default=True,
                     help="small-cnn only: channels of the first conv block (then 2x, 4x, 8x)."),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Torch threads for training (0 = torch's default, one per core)."),
        click.option("--no-augment", "no_augment", is_flag=True, help="Do not flip training images at random."),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for metrics and model files (new or empty, unless --overwrite)."),
        click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _config(no_augment: bool, **opts: Any) -> Any:
    from curate.train.loop import TrainConfig

    return TrainConfig(augment=not no_augment, **opts)


def _rounded(accuracy: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 4) for k, v in accuracy.items()}


def _progress(as_json: bool) -> bool:
    return sys.stderr.isatty() and not as_json


@click.group("train")
def train() -> None:
    """Train a model on an export (or a workspace), to check what curation bought.

    Needs the train extra: pip install 'curate[train]'.
    """


@train.command()
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@train_options
def classify(export_dir: Path, out: Path, overwrite: bool, as_json: bool, **opts: Any) -> None:
    """Train a classifier on EXPORT_DIR's train split and score every split.

    EXPORT_DIR is a folder or yolo-cls export (split/class/image) or a
    workspace. Writes metrics.json and model.pt into --out.
    """
    from curate.console import emit

    _need_torch()
    from curate.train.loop import format_confusion, train_classifier

    m = train_classifier(export_dir, _config(**opts), out, progress=_progress(as_json), overwrite=overwrite)
    summary = {"images": m["source"]["images"], "classes": len(m["classes"]), "model": m["model"]["name"],
               "device": m["device"], "accuracy": _rounded(m["accuracy"]),
               "balanced_accuracy": _rounded(m["balanced_accuracy"]),
               "final_loss": round(m["loss_per_epoch"][-1], 4), "out": str(out), "warnings": m["warnings"]}
    emit(summary, as_json, "trained")
    if not as_json:
        shown = "test" if "test" in m["splits"] else "val" if "val" in m["splits"] else "train"
        click.echo(f"{shown} split, per class:\n{format_confusion(m['splits'][shown])}")


@train.command()
@click.argument("raw_export", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("curated_export", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--leak-max-hamming", type=click.IntRange(0, 64), default=4, show_default=True,
              help="Leave out raw training images within this many pHash bits of a curated test image.")
@train_options
def compare(raw_export: Path, curated_export: Path, leak_max_hamming: int, out: Path, overwrite: bool,
            as_json: bool, **opts: Any) -> None:
    """Train on RAW_EXPORT and on CURATED_EXPORT alike; score both on the curated test split."""
    from curate.console import emit

    _need_torch()
    from curate.train.loop import compare_exports

    r = compare_exports(raw_export, curated_export, _config(**opts), out, progress=_progress(as_json),
                        overwrite=overwrite, leak_max_hamming=leak_max_hamming)
    summary = {"test_images": r["test"]["images"], "accuracy": _rounded(r["accuracy"]),
               "accuracy_95": {k: [round(x, 4) for x in v] if None not in v else v
                               for k, v in r["accuracy_95"].items()},
               "distinguishable": r["distinguishable"],
               "accuracy_on_shared_classes": _rounded({k: r[k]["test_accuracy_on_shared_classes"]
                                                       for k in ("raw", "curated")}),
               "train_images": {k: r[k]["train_images"] for k in ("raw", "curated")}, "out": str(out),
               "warnings": r["warnings"]}
    emit(summary, as_json, "compared")


@train.command()
@click.argument("export_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--model", default=None, help="Ultralytics model: a .yaml (from scratch, the default) or .pt weights.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--img-size", "img_size", type=click.IntRange(min=32), default=640, show_default=True)
@click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="Ultralytics device: auto (a GPU when present), cpu, 0, 0,1, ...")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for Ultralytics' run (new or empty, unless --overwrite).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def yolo(export_dir: Path, as_json: bool, **opts: Any) -> None:
    """Hand a YOLO export (data.yaml, or yolo-cls folders) to Ultralytics.

    Needs the yolo extra: pip install 'curate[yolo]'.
    """
    from curate.console import emit
    from curate.train.yolo import train_yolo

    emit(train_yolo(export_dir, **opts), as_json, "trained with Ultralytics")
