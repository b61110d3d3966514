"""curate.features: curate's own image descriptor and the torchvision backbone path (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curate.errors import CurateError
from curate.features import PIXEL_DIM, backbone_features, pixel_features, pretrained_weights_available


def test_pixel_features_tell_photos_apart_and_follow_the_displayed_image(skimage_dir, tmp_path):
    cat, coffee = (pixel_features(str(skimage_dir / n)) for n in ("chelsea.png", "coffee.png"))
    assert cat.shape == (PIXEL_DIM,) and np.isfinite(cat).all()
    # the same photo re-encoded is nearer than another photo
    Image.open(skimage_dir / "chelsea.png").save(tmp_path / "cat.jpg", quality=85)
    again = pixel_features(str(tmp_path / "cat.jpg"))
    assert np.linalg.norm(again - cat) < 0.5 * np.linalg.norm(coffee - cat)


def test_pixel_features_of_a_file_that_is_not_an_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("not an image")
    with pytest.raises(CurateError, match="x.jpg: cannot decode image"):
        pixel_features(str(bad))


def test_backbone_without_cached_weights_is_random_init_and_seeded(skimage_dir):
    assert not pretrained_weights_available("resnet18")  # nothing can be downloaded here
    paths = [str(skimage_dir / n) for n in ("chelsea.png", "camera.png")]
    a, info = backbone_features(paths, "resnet18", seed=3, side_px=64)
    b, _ = backbone_features(paths, "resnet18", seed=3, side_px=64)
    assert info == {"features": "resnet18", "weights": "random-init"}
    assert a.shape == (2, 512) and np.allclose(a, b)
    with pytest.raises(CurateError, match="--features: expected one of pixels, resnet18"):
        backbone_features(paths, "vgg11")
