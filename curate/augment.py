"""Augmented copies for oversampling: albumentations pipelines that carry boxes.

``curate balance --strategy oversample`` makes new training images from kept
ones. Each copy is one run of an albumentations pipeline with its own seed, so
the same (parent, copy number, seed, config) always gives the same pixels and
the same boxes. What the pipeline actually did (flip or not, rotation matrix,
brightness/contrast factors, crop window) is returned as plain JSON, and
balance stores it in the derived row's ``transform`` record.

The pipeline, in order (each step configurable, see :class:`AugmentConfig`):

1. horizontal flip (p=0.5), vertical flip (off by default: faces and most
   scenes are not upside down);
2. small rotation (up to 10 degrees, p=0.5), black fill: a reflected border
   would show mirrored, unlabelled objects;
3. brightness and contrast (up to 20 %, always);
4. crop-and-resize back to the parent's size (crop area 80-100 %, aspect kept).

Boxes are ``xyxy`` pixels of the displayed image. albumentations moves them
with every step (rotation: the rotated box's bounding box), clips them to the
output image, and drops a box when less than ``min_box_visibility`` of its
area is left, or when a side is shorter than ``min_box_side_px``.

    >>> import numpy as np
    >>> img = np.zeros((40, 60, 3), np.uint8)
    >>> out = augment_image(img, [(10, 5, 30, 25)], AugmentConfig(), seed=7)
    >>> out.image.shape, len(out.boxes_xyxy), out.box_index
    ((40, 60, 3), 1, [0])
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.errors import OptionError


@dataclass(frozen=True)
class AugmentConfig:
    """What an augmented copy may do. ``curate balance --augment KEY=VALUE,...``.

    >>> parse_augment("hflip=0,rotate=5").rotate_deg
    5.0
    """

    hflip_p: float = 0.5  # probability of a left-right flip
    vflip_p: float = 0.0  # probability of an upside-down flip
    rotate_deg: float = 10.0  # largest rotation angle, either way; 0: no rotation
    rotate_p: float = 0.5  # probability of rotating at all
    brightness: float = 0.2  # brightness change up to +-this fraction of the range
    contrast: float = 0.2  # contrast change up to +-this fraction
    crop_min_scale: float = 0.8  # smallest crop, as a fraction of the area; 1: no crop
    min_box_visibility: float = 0.3  # a box left with less of its area is dropped
    min_box_side_px: float = 2.0  # a box thinner than this after clipping is dropped


# --augment keys -> AugmentConfig fields (short names for the command line).
AUGMENT_KEYS: dict[str, str] = {
    "hflip": "hflip_p",
    "vflip": "vflip_p",
    "rotate": "rotate_deg",
    "rotate_p": "rotate_p",
    "brightness": "brightness",
    "contrast": "contrast",
    "crop": "crop_min_scale",
    "min_visibility": "min_box_visibility",
    "min_box_side": "min_box_side_px",
}
_PROBABILITIES = ("hflip_p", "vflip_p", "rotate_p", "min_box_visibility")
_FRACTIONS = ("brightness", "contrast")


def parse_augment(text: str | None, base: AugmentConfig | None = None) -> AugmentConfig:
    """``"hflip=0.5,rotate=10,crop=0.9"`` -> :class:`AugmentConfig` (unnamed keys keep defaults)."""
    cfg = base or AugmentConfig()
    if not text:
        return cfg
    changes: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in AUGMENT_KEYS:
            raise OptionError("", field="--augment", expected=f"KEY=VALUE with KEY one of {sorted(AUGMENT_KEYS)}",
                              found=repr(part))
        try:
            changes[AUGMENT_KEYS[key]] = float(value)
        except ValueError:
            raise OptionError("", field=f"--augment {key}", expected="a number", found=repr(value.strip())) from None
    return validate_config(dataclasses.replace(cfg, **changes))


def validate_config(cfg: AugmentConfig) -> AugmentConfig:
    """Range-check every field; refuse a config that changes nothing."""
    for name in _PROBABILITIES:
        v = getattr(cfg, name)
        if not 0.0 <= v <= 1.0:
            raise OptionError("", field=f"--augment {_key(name)}", expected="a probability in 0..1", found=v)
    for name in _FRACTIONS:
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise OptionError("", field=f"--augment {_key(name)}", expected="a fraction in 0..1 (exclusive)", found=v)
    if not 0.0 <= cfg.rotate_deg <= 45.0:
        raise OptionError("", field="--augment rotate", expected="degrees in 0..45 (small rotations)",
                          found=cfg.rotate_deg)
    if not 0.05 <= cfg.crop_min_scale <= 1.0:
        raise OptionError("", field="--augment crop", expected="the smallest crop area fraction, 0.05..1",
                          found=cfg.crop_min_scale)
    if cfg.min_box_side_px < 0:
        raise OptionError("", field="--augment min_box_side", expected="pixels >= 0", found=cfg.min_box_side_px)
    if not any_change(cfg):
        raise OptionError("", field="--augment", expected="at least one transform switched on",
                          found="every transform off", hint="copies would be identical to their parent")
    return cfg


def _key(field_name: str) -> str:
    return next(k for k, v in AUGMENT_KEYS.items() if v == field_name)


def any_change(cfg: AugmentConfig) -> bool:
    return (cfg.hflip_p > 0 or cfg.vflip_p > 0 or (cfg.rotate_deg > 0 and cfg.rotate_p > 0)
            or cfg.brightness > 0 or cfg.contrast > 0 or cfg.crop_min_scale < 1.0)


def _albumentations() -> Any:
    # albumentations asks PyPI for a newer version on import unless told not to;
    # these machines have no general internet access.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import sys

    if "albumentations" not in sys.modules and "torch" not in sys.modules:
        # albumentations imports its optional torch helpers (ToTensorV2), and with them
        # torch, whenever torch is installed: ~3 s of the ~7 s import here. We need no
        # tensors, so hide that submodule during the import (albumentations skips it on
        # ImportError) and un-hide it, so `import albumentations.pytorch` still works.
        sys.modules["albumentations.pytorch"] = None  # type: ignore[assignment]
        try:
            import albumentations as A
        finally:
            if sys.modules.get("albumentations.pytorch", 0) is None:
                del sys.modules["albumentations.pytorch"]
        return A
    import albumentations as A

    return A


def build_pipeline(cfg: AugmentConfig, width: int, height: int, seed: int) -> Any:
    """The albumentations ``Compose`` for one copy of a ``width`` x ``height`` image."""
    import cv2

    A = _albumentations()
    steps: list[Any] = []
    if cfg.hflip_p > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip_p))
    if cfg.vflip_p > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip_p))
    if cfg.rotate_deg > 0 and cfg.rotate_p > 0:
        steps.append(A.Rotate(limit=(-cfg.rotate_deg, cfg.rotate_deg), border_mode=cv2.BORDER_CONSTANT, fill=0,
                              p=cfg.rotate_p))
    if cfg.brightness > 0 or cfg.contrast > 0:
        steps.append(A.RandomBrightnessContrast(brightness_limit=(-cfg.brightness, cfg.brightness),
                                                contrast_limit=(-cfg.contrast, cfg.contrast), p=1.0))
    if cfg.crop_min_scale < 1.0:
        aspect = width / height
        steps.append(A.RandomResizedCrop(size=(height, width), scale=(cfg.crop_min_scale, 1.0),
                                         ratio=(aspect, aspect), p=1.0))
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["box_index"], clip=True,
                               filter_invalid_bboxes=True, min_visibility=cfg.min_box_visibility)
    with warnings.catch_warnings():
        # A colour-only pipeline leaves boxes as they are; albumentations warns that no step moves them.
        warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
        return A.Compose(steps, bbox_params=bbox_params, seed=seed, save_applied_params=True)


@dataclass
class Augmented:
    """One augmented copy: pixels, boxes in its own frame, and what was done."""

    image: np.ndarray  # HxWx3 uint8 RGB
    boxes_xyxy: list[tuple[float, float, float, float]]
    box_index: list[int]  # for each output box, its index in the input boxes
    applied: list[dict[str, Any]] = field(default_factory=list)
    boxes_dropped: int = 0  # input boxes that did not survive (cropped or rotated away)


def _clip_input(boxes: Sequence[Sequence[float]], width: int, height: int) -> tuple[np.ndarray, list[int]]:
    """Boxes clamped to the image; zero-area ones left out (albumentations rejects them)."""
    kept, index = [], []
    for i, b in enumerate(boxes):
        x1, y1 = max(0.0, float(b[0])), max(0.0, float(b[1]))
        x2, y2 = min(float(width), float(b[2])), min(float(height), float(b[3]))
        if x2 > x1 and y2 > y1:
            kept.append((x1, y1, x2, y2))
            index.append(i)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 4), index


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, float)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def applied_record(applied: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """albumentations' applied params -> JSON-safe list, with the rotation angle spelled out."""
    out = []
    for name, params in applied:
        p = {k: v for k, v in params.items() if k not in ("shape",)}
        if name == "Rotate" and "matrix" in p:
            m = np.asarray(p["matrix"])
            p["angle_deg"] = math.degrees(math.atan2(float(m[1, 0]), float(m[0, 0])))
        out.append({"name": name, "params": _jsonable(p)})
    return out


def augment_image(
    image: np.ndarray, boxes_xyxy: Sequence[Sequence[float]], cfg: AugmentConfig, seed: int
) -> Augmented:
    """Run the pipeline once on an RGB array; boxes come back in the new frame.

    Same ``image``, ``boxes``, ``cfg`` and ``seed`` give the same result.
    """
    height, width = image.shape[:2]
    clipped_in, index = _clip_input(boxes_xyxy, width, height)
    pipeline = build_pipeline(cfg, width, height, seed)
    res = pipeline(image=image, bboxes=clipped_in, box_index=index)
    out_img = res["image"]
    oh, ow = out_img.shape[:2]
    boxes: list[tuple[float, float, float, float]] = []
    out_index: list[int] = []
    for b, i in zip(np.asarray(res["bboxes"]).reshape(-1, 4), res["box_index"], strict=True):
        # albumentations clips already; clamp again so float noise never leaves the frame.
        x1, y1 = min(max(0.0, float(b[0])), ow), min(max(0.0, float(b[1])), oh)
        x2, y2 = min(max(0.0, float(b[2])), ow), min(max(0.0, float(b[3])), oh)
        if x2 - x1 < cfg.min_box_side_px or y2 - y1 < cfg.min_box_side_px or x2 <= x1 or y2 <= y1:
            continue
        boxes.append((x1, y1, x2, y2))
        out_index.append(int(round(float(i))))
    applied = applied_record(res.get("applied_transforms", []))
    return Augmented(out_img, boxes, out_index, applied, len(boxes_xyxy) - len(boxes))


def copy_seed(seed: int, parent_id: str, copy: int) -> int:
    """The seed of copy number ``copy`` of ``parent_id``: stable, independent of row order."""
    import hashlib

    digest = hashlib.sha256(f"{seed}\0{parent_id}\0{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
