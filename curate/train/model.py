"""Classifiers for ``curate train classify``, and their saved file.

``--model`` picks the network:

- ``small-cnn`` (the default): written out here, four blocks of 3x3
  convolution, batch norm, ReLU and 2x2 max pooling (widths w, 2w, 4w, 8w),
  then global average pooling, dropout and one linear layer. Global pooling
  makes it work at any ``img_size`` of 32 px or more.
- a torchvision classification model by name (``resnet18``,
  ``mobilenet_v3_small``, ``efficientnet_b0``, ...; ``torchvision:NAME`` is
  the same), built with ``torchvision.models.get_model``;
- ``timm:NAME``, built with ``timm.create_model`` (timm installed).

``pretrained=True`` loads the library's ImageNet weights (downloaded on
first use into ``$TORCH_HOME``, or the Hugging Face cache for timm) and
replaces the classifier head; when they cannot be had, the error says so in
one line. Backbones are imported inside the functions, so ``curate --help``
never imports torchvision or timm.

The saved file is a plain ``torch.save`` of a dict of tensors, strings and
numbers, so it loads with ``torch.load(path, weights_only=True)``::

    {"format": "curate.train.classify/1", "state_dict": ..., "classes": [...],
     "arch": {"name": "SmallCNN", "width": 16, "dropout": 0.2},   # or {"name": "torchvision:resnet18"}
     "preprocess": {"img_size": 64, "fit": "letterbox", "mean_rgb": [...], "std_rgb": [...]}}

    >>> import torch
    >>> SmallCNN(num_classes=3)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.errors import CurateError, FormatError, OptionError

MIN_IMG_SIZE = 32
MODEL_FORMAT = "curate.train.classify/1"
SMALL_CNN = "small-cnn"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Four conv blocks, global average pooling, dropout, linear: about 0.1 M
    parameters at ``width=16`` (0.39 M at 32)."""

    def __init__(self, num_classes: int, *, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.width = width
        self.dropout_p = dropout
        widths = [3, width, 2 * width, 4 * width, 8 * width]
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(widths, widths[1:], strict=False)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        logits: torch.Tensor = self.head(self.dropout(x))
        return logits


def arch_name(model_name: str) -> str:
    """The canonical name of ``--model``: ``SmallCNN``, ``torchvision:NAME`` or ``timm:NAME``.

    >>> arch_name("resnet18"), arch_name("timm:resnet18"), arch_name("small-cnn")
    ('torchvision:resnet18', 'timm:resnet18', 'SmallCNN')
    """
    if model_name in (SMALL_CNN, "SmallCNN"):
        return "SmallCNN"
    if model_name.startswith(("timm:", "torchvision:")):
        return model_name
    return f"torchvision:{model_name}"


def _torchvision_builder(name: str) -> Any:
    try:
        import torchvision
    except Exception as e:  # ImportError, or its compiled ops failing to load
        raise CurateError("", field="--model", expected="torchvision installed and importable",
                          found=f"{type(e).__name__}: {e}", hint="pip install 'curate[train]'") from None
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise OptionError("", field="--model", expected=f"{SMALL_CNN}, a torchvision classifier (e.g. resnet18, "
                          "mobilenet_v3_small, efficientnet_b0) or timm:NAME", found=repr(name))
    return torchvision.models


def _pretrained_error(name: str, e: BaseException) -> CurateError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CurateError("", field="--pretrained", expected=f"ImageNet weights for {name}",
                       found=f"none could be loaded ({type(e).__name__}: {first[:200]})",
                       hint="put the weights file in the library's cache ($TORCH_HOME, or the Hugging Face "
                            "cache for timm) on a machine that can download it, or train without --pretrained")


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last ``nn.Linear`` (the ImageNet head) for one with ``num_classes`` outputs."""
    parent, attr, last = None, "", None
    for module in model.modules():  # in definition order: the last linear layer is the head
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                parent, attr, last = module, child_name, child
    if parent is None or last is None:
        raise CurateError("", field="--model", expected="a classifier ending in a linear layer",
                          found=type(model).__name__)
    setattr(parent, attr, nn.Linear(last.in_features, num_classes))


def check_model_name(model_name: str) -> None:
    """Refuse a ``--model`` that names no network, before any image is decoded."""
    lib, _, base = arch_name(model_name).partition(":")
    if lib == "torchvision":
        _torchvision_builder(base)
    elif lib == "timm":
        if not _timm().is_model(base):
            raise OptionError("", field="--model", expected="a timm model name (timm.list_models())",
                              found=repr(base))


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise CurateError("", field="--model", expected="timm installed", found=f"{type(e).__name__}: {e}",
                          hint="pip install 'curate[train]'") from None
    return timm


def build_model(arch: dict[str, Any], num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """The network ``arch`` describes (see :func:`arch_name`), with ``num_classes`` outputs.

        >>> build_model({"name": "SmallCNN", "width": 8}, 3).head.out_features
        3
    """
    name = str(arch["name"])
    if name == "SmallCNN":
        return SmallCNN(num_classes, width=int(arch.get("width", 16)), dropout=float(arch.get("dropout", 0.2)))
    lib, _, base = name.partition(":")
    if lib == "timm":
        timm = _timm()
        if not timm.is_model(base):
            raise OptionError("", field="--model", expected="a timm model name (timm.list_models())",
                              found=repr(base))
        try:
            return timm.create_model(base, pretrained=pretrained, num_classes=num_classes)
        except Exception as e:  # no network, no cached weights
            if not pretrained:
                raise
            raise _pretrained_error(name, e) from None
    models = _torchvision_builder(base)
    if not pretrained:
        return models.get_model(base, weights=None, num_classes=num_classes)
    try:
        model = models.get_model(base, weights="DEFAULT")
    except Exception as e:  # URLError, HTTPError, a hash mismatch: weights not to be had
        raise _pretrained_error(name, e) from None
    _replace_head(model, num_classes)
    return model


def describe(model: nn.Module, name: str) -> dict[str, Any]:
    """The ``arch`` entry saved with ``model``."""
    if isinstance(model, SmallCNN):
        return {"name": "SmallCNN", "width": model.width, "dropout": model.dropout_p}
    return {"name": name}


def model_bytes(model: nn.Module, classes: list[str], preprocess: dict[str, Any], arch: dict[str, Any] | None = None
                ) -> bytes:
    """The saved-model file's bytes (see the module docstring for its layout)."""
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "arch": arch if arch is not None else describe(model, "SmallCNN"),
        "preprocess": preprocess,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_model(path: str | Path) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """Load a saved model: ``(model in eval mode, class names, preprocess settings)``.

        >>> model, classes, prep = load_model("out/model.pt")  # doctest: +SKIP
        >>> prep["img_size"], prep["fit"]  # doctest: +SKIP
        (64, 'letterbox')
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise FormatError(path, "format", expected=MODEL_FORMAT, found=found,
                          hint="this file was not written by `curate train classify`")
    model = build_model(payload["arch"], len(payload["classes"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, list(payload["classes"]), dict(payload["preprocess"])
