"""Report charts: self-contained PNG data URIs drawn from the counts."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from PIL import Image

from curate.report.plots import bar_chart, before_after_chart, size_chart


def _png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_charts_are_inline_pngs():
    counts = pd.Series({"cat": 30, "dog": 12, "bird": 1})
    assert _png(bar_chart(counts, title="kept by label")).size[0] > 100
    assert _png(before_after_chart(counts, counts.clip(upper=12), title="balance")).size[1] > 50
    rng = np.random.default_rng(0)
    w, h = rng.integers(64, 2000, 50), rng.integers(64, 2000, 50)
    assert _png(size_chart(w, h, np.ones(50, dtype=bool))).mode in ("RGB", "RGBA", "P")
