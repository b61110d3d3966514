"""A small convolutional classifier in plain PyTorch, and its saved file.

No torchvision here (there is no CPU build of it on our machines), so the
network is written out: four blocks of 3x3 convolution, batch norm, ReLU and
2x2 max pooling (widths w, 2w, 4w, 8w), then global average pooling, dropout
and one linear layer. Global pooling makes it work at any ``img_size`` of 32 px
or more (four halvings leave at least 2x2 cells).

The saved file is a plain ``torch.save`` of a dict of tensors, strings and
numbers, so it loads with ``torch.load(path, weights_only=True)``::

    {"format": "curate.train.classify/1", "state_dict": ..., "classes": [...],
     "arch": {"name": "SmallCNN", "width": 16, "dropout": 0.2},
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

from curate.errors import FormatError

MIN_IMG_SIZE = 32
MODEL_FORMAT = "curate.train.classify/1"


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


def model_bytes(model: SmallCNN, classes: list[str], preprocess: dict[str, Any]) -> bytes:
    """The saved-model file's bytes (see the module docstring for its layout)."""
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": model.state_dict(),
        "classes": list(classes),
        "arch": {"name": "SmallCNN", "width": model.width, "dropout": model.dropout_p},
        "preprocess": preprocess,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_model(path: str | Path) -> tuple[SmallCNN, list[str], dict[str, Any]]:
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
    arch = payload["arch"]
    model = SmallCNN(len(payload["classes"]), width=int(arch["width"]), dropout=float(arch["dropout"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, list(payload["classes"]), dict(payload["preprocess"])
