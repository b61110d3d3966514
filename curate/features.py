"""Image features for finding likely mislabels (``curate labels --find-issues``).

Two kinds, chosen on measurement (docs/labels.md, benchmarks/labels_bench.py):

- ``pixels``: curate's own hand-made descriptor of the displayed image, a plain
  function of one file (so the process pool runs it): a colour histogram in
  HSV (8x4x4 bins), a histogram of oriented gradients of a 64x64 grey
  thumbnail (scikit-image's ``hog``), and an 8x8 colour thumbnail. 644 numbers,
  about 10 ms an image.
- ``resnet18`` / ``resnet50`` / ``efficientnet_b0``: the pooled embedding of a
  torchvision backbone. Its ImageNet weights are used when torchvision finds
  them in its cache (``$TORCH_HOME``); nothing is downloaded. Without them the
  network is randomly initialised (a seeded random projection of the pixels),
  which is what tests on this machine run.

    >>> import skimage.data, pathlib  # the photos shipped in the package (data_dir moves when pooch is installed)
    >>> v = pixel_features(str(pathlib.Path(skimage.data.__file__).parent / "chelsea.png"))
    >>> v.shape, v.dtype.name
    ((644,), 'float32')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PIXEL_DIM = 8 * 4 * 4 + 324 + 8 * 8 * 3
BACKBONES = ("resnet18", "resnet50", "efficientnet_b0")
FEATURES = ("pixels", *BACKBONES)


def pixel_features(path: str) -> np.ndarray:
    """curate's own descriptor of one image (see the module docstring); raises CurateError if undecodable."""
    from PIL import Image
    from skimage.feature import hog

    from curate.imageio import load_display

    img = load_display(path, draft_px=128)
    small = img.resize((64, 64), Image.Resampling.BILINEAR)
    hsv = np.asarray(small.convert("HSV"), dtype=np.int64)
    bins = (hsv[..., 0] * 8 // 256) * 16 + (hsv[..., 1] * 4 // 256) * 4 + (hsv[..., 2] * 4 // 256)
    colour = np.bincount(bins.ravel(), minlength=128).astype(np.float32) / bins.size
    grey = np.asarray(small.convert("L"), dtype=np.float32) / 255.0
    grad = hog(grey, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2), feature_vector=True)
    thumb = np.asarray(img.resize((8, 8), Image.Resampling.BOX), dtype=np.float32).ravel() / 255.0
    return np.concatenate([colour, grad.astype(np.float32), thumb]).astype(np.float32)


def pretrained_weights_available(arch: str) -> bool:
    """True when torchvision's cache already holds ``arch``'s ImageNet weights (nothing is downloaded)."""
    import torch.hub
    import torchvision.models as tvm

    weights = tvm.get_model_weights(arch).DEFAULT
    name = os.path.basename(weights.url)
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).exists()


def backbone_features(paths: Sequence[str], arch: str = "resnet18", *, seed: int = 0, batch: int = 32,
                      side_px: int = 160) -> tuple[np.ndarray, dict[str, Any]]:
    """Pooled embeddings of ``paths`` from a torchvision backbone, and how they were made.

    Pretrained weights when cached, else a seeded random initialisation
    (``info["weights"]`` says which). Images are letterboxed to ``side_px``
    squares and normalised as ImageNet models expect.
    """
    import torch
    import torchvision.models as tvm
    from PIL import Image

    from curate.imageio import load_display

    if arch not in BACKBONES:
        from curate.errors import OptionError

        raise OptionError("", field="--features", expected=f"one of {', '.join(FEATURES)}", found=arch)
    pretrained = pretrained_weights_available(arch)
    torch.manual_seed(seed)
    weights = tvm.get_model_weights(arch).DEFAULT if pretrained else None
    model = tvm.get_model(arch, weights=weights)
    head = "fc" if hasattr(model, "fc") else "classifier"
    setattr(model, head, torch.nn.Identity())
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            arrays = []
            for p in paths[start:start + batch]:
                img = load_display(p, draft_px=side_px)
                img.thumbnail((side_px, side_px), Image.Resampling.BILINEAR)
                canvas = Image.new("RGB", (side_px, side_px))
                canvas.paste(img, ((side_px - img.width) // 2, (side_px - img.height) // 2))
                arrays.append(np.asarray(canvas, dtype=np.float32) / 255.0)
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
            out.append(model((x - mean) / std).numpy())
    emb = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    return emb.astype(np.float32), {"features": arch, "weights": "imagenet" if pretrained else "random-init"}
