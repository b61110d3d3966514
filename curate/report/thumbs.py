"""Small inline thumbnails for the report.

Every picture in the report is a ``data:image/jpeg;base64,...`` URI, so the
page needs nothing outside itself. Thumbnails are decoded at reduced scale
(Pillow ``draft``: JPEG DCT scaling, so a 12-megapixel JPEG costs about as
much as a 0.2-megapixel one), EXIF orientation is applied so they look as
the stages saw them, and they are encoded as small JPEGs (96 px, quality 70:
about 3 KB each).

    >>> from curate.demo import bundled_photos_dir
    >>> uri = thumbnail_uri(bundled_photos_dir() / "astronaut.png", size_px=32)
    >>> uri.startswith("data:image/jpeg;base64,")
    True
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from curate.imageio import apply_orientation, exif_orientation, register_openers, to_rgb

# Never decode more than this for a thumbnail: a decompression bomb that
# ingest let through (--max-pixels raised) must not stall the report.
MAX_THUMB_SOURCE_PIXELS = 100_000_000


def thumbnail_bytes(path: str | Path, size_px: int = 96, quality: int = 70) -> bytes:
    """JPEG bytes of ``path``'s first frame, fitted in ``size_px`` x ``size_px``.

    Raises ``OSError``/``ValueError`` (Pillow's own errors) when the file
    cannot be decoded; callers treat that as "no picture".
    """
    register_openers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            if im.width * im.height > MAX_THUMB_SOURCE_PIXELS:
                raise ValueError(f"{im.width}x{im.height} is too large for a thumbnail")
            orientation = exif_orientation(im)
            # Decode at >= 2x the target size; draft is a no-op for non-JPEG.
            im.draft("RGB", (2 * size_px, 2 * size_px))
            im.load()
            rgb = to_rgb(im)
    rgb.thumbnail((size_px, size_px), Image.Resampling.BICUBIC, reducing_gap=2.0)
    rgb = apply_orientation(rgb, orientation)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def thumbnail_uri(path: str | Path, size_px: int = 96, quality: int = 70) -> str:
    """:func:`thumbnail_bytes` as a ``data:`` URI."""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_bytes(path, size_px, quality)).decode("ascii")


def _safe_uri(path: str, size_px: int, quality: int) -> str | None:
    try:
        return thumbnail_uri(path, size_px, quality)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError):
        # A file changed or vanished since ingest: the report shows its path instead.
        return None


class ThumbnailPool:
    """Decode thumbnails in background threads while the caller draws plots.

    Pillow releases the GIL while it decodes and resizes, so threads use
    every core without the start-up cost of worker processes.

        >>> from curate.demo import bundled_photos_dir
        >>> with ThumbnailPool(workers=2) as pool:
        ...     pool.submit({"a": str(bundled_photos_dir() / "camera.png")})
        ...     uris = pool.results()
        >>> sorted(uris)
        ['a']
    """

    def __init__(self, workers: int = 0, size_px: int = 96, quality: int = 70) -> None:
        self.size_px = size_px
        self.quality = quality
        self._executor = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        self._futures: dict[str, Future[str | None]] = {}

    def submit(self, paths: Mapping[str, str]) -> None:
        """Queue ``key -> path``; a key already queued is not decoded twice."""
        for key, path in paths.items():
            if key not in self._futures:
                self._futures[key] = self._executor.submit(_safe_uri, path, self.size_px, self.quality)

    def results(self) -> dict[str, str | None]:
        """Wait for every queued thumbnail: key -> data URI, or None if it could not be decoded."""
        return {key: f.result() for key, f in self._futures.items()}

    def __enter__(self) -> ThumbnailPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
