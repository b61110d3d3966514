"""Face detection with MediaPipe BlazeFace: the detector, its settings and the pure merging rules.

The default ``ensemble`` detector combines both BlazeFace models and tiles large
images (measured in docs/faces.md: 27 of 28 hand-counted images right, against
22 for the bare short-range model):

1. the image is shrunk (integer box filter) so its long side is at most
   ``work_max_side_px``; faces are mapped back to full resolution;
2. the short-range model (close-ups) runs on the whole image; one big, sure
   face (a portrait) settles it, and so do several with no hint (below)
   elsewhere. Otherwise the full-range model (small faces, groups) runs on the
   whole image too. Faces must score ``min_confidence``; weaker detections
   (down to ``hint_min_confidence``) are kept as hints;
3. where the whole-image passes leave evidence they could not settle (a face
   seen by one pass below ``sure_score``, or a hint no face explains), the
   full-range model runs again on those of the 2 x 2 overlapping tiles that
   overlap it, which makes small faces larger in its 192 px input. Tile faces
   must score at least ``tile_min_confidence`` and must not touch a tile
   border inside the image (a cut face is found whole in the neighbouring tile);
4. overlapping faces are merged by non-maximum suppression (IoU, and
   intersection over the smaller box, so a face inside a bigger one counts once).

mediapipe is imported only when a :class:`FaceDetector` is made. The model
files are found (or fetched) by :mod:`curate.models`; ``curate faces``
(:mod:`curate.stages.faces`) selects and crops the faces found here.

    >>> nms_faces([Face((0, 0, 10, 10), 0.6, "a"), Face((1, 1, 10, 10), 0.9, "b")])
    [Face(xyxy=(1, 1, 10, 10), score=0.9, found_by='b+a')]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from curate.geometry import io_min, iou, tile_grid

DETECTORS = ("ensemble", "short-range", "full-range")
DETECTOR_VERSION = 2  # bump when detection changes, so cached detections are not reused


@dataclass(frozen=True)
class Face:
    """One face: box in the displayed image's pixels (xyxy), detector score, and which pass found it."""

    xyxy: tuple[float, float, float, float]
    score: float
    found_by: str = ""

    @property
    def short_side_px(self) -> float:
        return min(self.xyxy[2] - self.xyxy[0], self.xyxy[3] - self.xyxy[1])


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings. Defaults were chosen on faces_misc/faces.csv (docs/faces.md)."""

    detector: str = "ensemble"
    min_confidence: float = 0.5
    tile_min_confidence: float = 0.7
    work_max_side_px: int = 1024
    tile_grid_n: int = 2
    tile_overlap_frac: float = 0.25
    min_tile_px: int = 192  # the full-range model's input side: smaller tiles add nothing
    tile_border_px: float = 2.0
    nms_iou: float = 0.3
    nms_io_min: float = 0.6
    sure_score: float = 0.7  # below this, an ensemble face must be found by two passes
    portrait_face_frac: float = 0.15  # one face this big (of the short side): no tiles; 0 = always tile
    # Ensemble: the whole-image passes also report detections down to this score. One below
    # min_confidence that no face explains is a hint (a face seen too small or too weakly);
    # tiles run only where there is a hint or an unconfirmed face (docs/faces.md).
    # 0 = no hints: all 4 tiles whenever the whole image is not one portrait face (detector v1).
    hint_min_confidence: float = 0.15

    def model_keys(self) -> tuple[str, ...]:
        return {"ensemble": ("short_range", "full_range"), "short-range": ("short_range",),
                "full-range": ("full_range",)}[self.detector]

    def cache_key(self, model_sha256: Mapping[str, str]) -> str:
        import hashlib

        rec = {**asdict(self), "version": DETECTOR_VERSION,
               "models": {k: model_sha256[k] for k in self.model_keys()}}
        return hashlib.sha1(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


# -- pure parts ------------------------------------------------------------------

def nms_faces(faces: Sequence[Face], iou_max: float = 0.3, io_min_max: float = 0.6) -> list[Face]:
    """Greedy non-maximum suppression: best score first; drop faces overlapping a kept one.

    A kept face's ``found_by`` lists every pass that found it (``+``-joined),
    which :func:`confirmed` uses.

    >>> nms_faces([Face((0, 0, 10, 10), 0.6, "a"), Face((1, 1, 10, 10), 0.9, "b"), Face((50, 50, 60, 60), 0.7, "a")])
    [Face(xyxy=(1, 1, 10, 10), score=0.9, found_by='b+a'), Face(xyxy=(50, 50, 60, 60), score=0.7, found_by='a')]
    """
    kept: list[tuple[Face, list[str]]] = []
    for f in sorted(faces, key=lambda f: -f.score):
        for k, passes in kept:
            if iou(f.xyxy, k.xyxy) > iou_max or io_min(f.xyxy, k.xyxy) > io_min_max:
                if f.found_by and f.found_by not in passes:
                    passes.append(f.found_by)
                break
        else:
            kept.append((f, [f.found_by] if f.found_by else []))
    return [Face(k.xyxy, k.score, "+".join(passes)) for k, passes in kept]


def confirmed(faces: Sequence[Face], sure_score: float) -> list[Face]:
    """Faces scoring at least ``sure_score``, or found by two or more passes (models/tiles).

    A weak face seen by one model only is the typical false positive
    (e.g. a backdrop next to a head); a real face is usually seen twice.
    """
    return [f for f in faces if f.score >= sure_score or len(f.found_by.split("+")) >= 2]


def tile_evidence(merged: Sequence[Face], whole: Sequence[Face], hints: Sequence[Face],
                  cfg: DetectorConfig) -> list[Face]:
    """What the whole-image passes saw but could not settle: faces left unconfirmed
    (in ``merged`` but not in ``whole``), and hints (detections below
    ``min_confidence``) that overlap no face found so far.

    The ensemble runs a 2 x 2 tile only where it overlaps such evidence: without
    it, tiles added no face on any of our test images (docs/faces.md), and each
    tile costs a full-range pass.

    >>> cfg, face = DetectorConfig(), Face((10, 10, 50, 50), 0.9, "short_range")
    >>> tile_evidence([face], [face], [Face((12, 12, 48, 48), 0.3, "full_range")], cfg)  # the face, seen weakly
    []
    >>> tile_evidence([face], [face], [Face((80, 10, 90, 20), 0.3, "full_range")], cfg)  # something else
    [Face(xyxy=(80, 10, 90, 20), score=0.3, found_by='full_range')]
    """
    settled = set(whole)
    return [f for f in merged if f not in settled] + [
        h for h in hints
        if all(iou(h.xyxy, f.xyxy) <= cfg.nms_iou and io_min(h.xyxy, f.xyxy) <= cfg.nms_io_min for f in merged)]


def faces_to_json(faces: Sequence[Face]) -> str:
    return json.dumps([[round(v, 2) for v in f.xyxy] + [round(f.score, 4), f.found_by] for f in faces])


def faces_from_json(text: str) -> list[Face]:
    return [Face((a, b, c, d), s, by) for a, b, c, d, s, by in json.loads(text)]


# -- detection (MediaPipe) -------------------------------------------------------

@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence the C++ log lines MediaPipe/LiteRT print on fd 2 (they ignore GLOG env vars)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceDetector:
    """The configured BlazeFace model(s), created once and reused for many images.

        >>> from curate.models import resolve  # doctest: +SKIP
        >>> det = FaceDetector({k: str(r.path) for k, r in resolve().items()})  # doctest: +SKIP
        >>> det.detect(image).faces  # doctest: +SKIP
    """

    def __init__(self, model_paths: Mapping[str, str], config: DetectorConfig | None = None) -> None:
        self.config = cfg = config or DetectorConfig()
        # (model, score floor) per pass. The ensemble's whole-image passes report hints below
        # min_confidence; its tiles keep min_confidence (MediaPipe's NMS blends every box it keeps).
        floor = cfg.min_confidence
        if cfg.detector == "ensemble":
            hint_floor = min(cfg.hint_min_confidence or floor, floor)
            passes = {"short_range": ("short_range", hint_floor), "full_range": ("full_range", hint_floor),
                      "full_range/tile": ("full_range", floor)}
        else:
            passes = {key: (key, floor) for key in cfg.model_keys()}
        with quiet_native_stderr():
            from mediapipe.tasks.python import BaseOptions, vision

            self._models = {
                name: vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
                    base_options=BaseOptions(model_asset_path=str(model_paths[key])),
                    min_detection_confidence=score_floor,
                ))
                for name, (key, score_floor) in passes.items()
            }

    def close(self) -> None:
        with quiet_native_stderr():
            for det in self._models.values():
                det.close()
        self._models = {}

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, key: str, rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._models[key].detect(image)
        out = []
        for d in result.detections:
            b = d.bounding_box
            out.append((float(b.origin_x), float(b.origin_y), float(b.origin_x + b.width),
                        float(b.origin_y + b.height), float(d.categories[0].score)))
        return out

    def detect_array(self, rgb: np.ndarray, source_px_per_px: float = 1.0) -> list[Face]:
        """Faces in an RGB array (H x W x 3, uint8), in its own pixels, after NMS.

        ``source_px_per_px``: how many pixels of the original image one array
        pixel stands for; tiles are used when they hold at least
        ``min_tile_px`` original pixels on their shorter side.
        """
        cfg = self.config
        h, w = rgb.shape[:2]
        found: list[Face] = []
        with quiet_native_stderr():
            if cfg.detector != "ensemble":
                for key in self._models:
                    found += [Face((x1, y1, x2, y2), s, key) for x1, y1, x2, y2, s in self._run(key, rgb)]
                return nms_faces(found, cfg.nms_iou, cfg.nms_io_min)
            # Cheapest first: the short-range model alone settles a portrait (one big, sure face),
            # or a few such faces with nothing else seen (a couple).
            hints: list[Face] = []
            found = self._faces_and_hints("short_range", rgb, hints)
            short = nms_faces(found, cfg.nms_iou, cfg.nms_io_min)
            if self._short_settles(short, hints, (w, h)):
                return short
            found += self._faces_and_hints("full_range", rgb, hints)
            merged = nms_faces(found, cfg.nms_iou, cfg.nms_io_min)
            whole = confirmed(merged, cfg.sure_score)
            if self._tiles_add_nothing(whole, (w, h)):
                return whole
            tiles = tile_grid((w, h), cfg.tile_grid_n, cfg.tile_overlap_frac)
            tile_side = min(tiles[0][2] - tiles[0][0], tiles[0][3] - tiles[0][1])
            if tile_side * source_px_per_px < cfg.min_tile_px:
                return whole
            if cfg.hint_min_confidence:  # else every tile, always
                evidence = tile_evidence(merged, whole, hints, cfg)
                tiles = [t for t in tiles if any(_overlaps(e.xyxy, t) for e in evidence)]
            for tx1, ty1, tx2, ty2 in tiles:
                for x1, y1, x2, y2, s in self._run("full_range/tile", rgb[ty1:ty2, tx1:tx2]):
                    if s < cfg.tile_min_confidence or _touches_inner_border(
                            (x1, y1, x2, y2), (tx1, ty1, tx2, ty2), (w, h), cfg.tile_border_px):
                        continue
                    found.append(Face((x1 + tx1, y1 + ty1, x2 + tx1, y2 + ty1), s, "full_range/tile"))
        return confirmed(nms_faces(found, cfg.nms_iou, cfg.nms_io_min), cfg.sure_score)

    def _faces_and_hints(self, key: str, rgb: np.ndarray, hints: list[Face]) -> list[Face]:
        """One whole-image pass: faces scoring min_confidence; the weaker detections go to ``hints``."""
        faces: list[Face] = []
        for x1, y1, x2, y2, s in self._run(key, rgb):
            (faces if s >= self.config.min_confidence else hints).append(Face((x1, y1, x2, y2), s, key))
        return faces

    def _short_settles(self, short: list[Face], hints: list[Face], wh: tuple[int, int]) -> bool:
        """Every short-range face sure and portrait-sized; with more than one, no hint elsewhere."""
        cfg = self.config
        if not short or not all(f.score >= cfg.sure_score and self._is_portrait(f, wh) for f in short):
            return False
        return len(short) == 1 or (bool(cfg.hint_min_confidence) and not tile_evidence(short, short, hints, cfg))

    def _tiles_add_nothing(self, whole: list[Face], wh: tuple[int, int]) -> bool:
        """One big, confirmed face (a portrait): tiles would only look for small faces that are not there."""
        return len(whole) == 1 and self._is_portrait(whole[0], wh)

    def _is_portrait(self, face: Face, wh: tuple[int, int]) -> bool:
        frac = self.config.portrait_face_frac
        return bool(frac) and face.short_side_px >= frac * min(wh)

    def detect(self, img: Any) -> list[Face]:
        """Faces in a Pillow image (displayed frame), in its full-resolution pixels."""
        w, h = img.size
        k = max(1, math.ceil(max(w, h) / self.config.work_max_side_px))
        # Image.reduce is an exact k x k box filter and fast; detection needs no more
        # than ~1024 px (the models see 128/192 px), and it avoids a full-size array copy.
        work = img.reduce(k) if k > 1 else img
        sx, sy = w / work.width, h / work.height
        faces = self.detect_array(np.asarray(work if work.mode == "RGB" else work.convert("RGB")), min(sx, sy))
        out = []
        for f in faces:
            x1, y1, x2, y2 = _clip((f.xyxy[0] * sx, f.xyxy[1] * sy, f.xyxy[2] * sx, f.xyxy[3] * sy), w, h)
            # Rounded once here, so a box read back from the detection cache is the very same number.
            out.append(Face((round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)), round(f.score, 4), f.found_by))
        return out


def _clip(b: tuple[float, float, float, float], w: int, h: int) -> tuple[float, float, float, float]:
    """Faces may reach past the image (BlazeFace predicts the whole face); keep the box inside."""
    return (min(max(b[0], 0.0), w), min(max(b[1], 0.0), h), min(max(b[2], 0.0), w), min(max(b[3], 0.0), h))


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _touches_inner_border(box: Sequence[float], tile: Sequence[int], wh: tuple[int, int], px: float) -> bool:
    """Does ``box`` (in the tile's own pixels) touch a tile border that is not the image border?"""
    x1, y1, x2, y2 = box
    tx1, ty1, tx2, ty2 = tile
    w, h = wh
    return bool((tx1 > 0 and x1 <= px) or (ty1 > 0 and y1 <= px)
                or (tx2 < w and x2 >= tx2 - tx1 - px) or (ty2 < h and y2 >= ty2 - ty1 - px))
