"""``curate faces``: find faces with MediaPipe BlazeFace; crop them, or write them as boxes.

Detection runs on the EXIF-displayed image (:func:`curate.imageio.load_display`)
with the MediaPipe Tasks ``FaceDetector``. The default ``ensemble`` detector
combines both BlazeFace models and tiles large images (measured in
docs/faces.md: 27 of 28 hand-counted images right, against 22 for the bare
short-range model):

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

Crop mode (default): each selected face becomes a derived row (image in
``objects/``, ``parent_id`` set, crop box in the parent's frame in
``transform``), and the parent is dropped as ``superseded``. Box mode
(``--boxes``): faces are written to ``annotations.parquet`` (origin ``faces``)
and the row stays. In crop mode an image without a face is dropped
``no_face``. In box mode it stays kept, without boxes, as a background image
(its ``detail`` says no face was found): a detector learns from such negatives
(issue 14). ``--drop-no-face`` drops them ``no_face`` instead.

Detections are cached per file content and detector settings in
``WS/cache/``, so re-running with another margin or selection only crops.

    >>> select_faces([Face((0, 0, 10, 10), 0.9), Face((20, 20, 60, 60), 0.8)], "largest", (100, 100))
    [Face(xyxy=(20, 20, 60, 60), score=0.8, found_by='')]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curate.errors import CurateError, OptionError
from curate.geometry import box_area, crop_box_px, io_min, iou, tile_grid
from curate.locate import missing_file_message
from curate.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from curate.lineage import Decision
    from curate.parallel import WorkerCrash
    from curate.workspace import StageResult

# pandas (and the modules built on it) is imported inside the functions that make
# tables: a pool worker imports this module and starts faster without it.

LAYOUT = "faces"
SELECT_MODES = ("largest", "all", "most-central")
DETECTORS = ("ensemble", "short-range", "full-range")
CLASS_FROM = ("face", "label")
NO_FACE_DETAIL = "background image: "  # detail of a kept --boxes row without a face (then why none was found)
DETECTOR_VERSION = 2  # bump when detection changes, so cached detections are not reused
CACHE_DIR = "cache"
IN_PROCESS_MAX = 8  # fewer tasks than this run in-process: a worker's start (import mediapipe) costs ~1-2 s


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


def select_faces(faces: Sequence[Face], mode: str, image_wh: tuple[int, int], min_face_px: float = 0) -> list[Face]:
    """Faces to keep: those at least ``min_face_px`` on their shorter side, then by ``mode``.

    ``all`` keeps every one (best score first); ``largest`` the one with the
    biggest box; ``most-central`` the one whose centre is nearest the image
    centre (distances relative to the image size; ties go to the larger face).
    """
    big = [f for f in faces if f.short_side_px >= min_face_px]
    if not big:
        return []
    if mode == "all":
        return sorted(big, key=lambda f: -f.score)
    if mode == "largest":
        return [max(big, key=lambda f: (box_area(f.xyxy), f.score))]
    if mode == "most-central":
        w, h = image_wh

        def off_centre(f: Face) -> float:
            cx, cy = (f.xyxy[0] + f.xyxy[2]) / 2, (f.xyxy[1] + f.xyxy[3]) / 2
            return math.hypot(cx / w - 0.5, cy / h - 0.5)

        return [min(big, key=lambda f: (round(off_centre(f), 6), -box_area(f.xyxy)))]
    raise OptionError("", field="--select", expected=f"one of {SELECT_MODES}", found=mode)


def crop_transform(crop_xyxy: Sequence[int], margin_frac: float, detector: str) -> dict[str, Any]:
    """The identity of a face crop (derive.derived_id): what was cut, from which detector's face.

    Only exact values go in (integers, options); the face box and score, which
    are floats, are added to the row's ``transform`` record by :func:`face_record`.
    """
    return {
        "op": "face_crop",
        "crop_xyxy": [int(v) for v in crop_xyxy],
        "margin_frac": float(margin_frac),
        "detector": f"{detector}-v{DETECTOR_VERSION}",
    }


def face_record(row: dict[str, Any], face: Face) -> dict[str, Any]:
    """Add the face box (parent frame) and score to a crop row's ``transform`` JSON."""
    rec = json.loads(row["transform"])
    rec.update(face_xyxy=[round(float(v), 2) for v in face.xyxy], score=round(float(face.score), 4),
               found_by=face.found_by)
    row["transform"] = json.dumps(rec, sort_keys=True)
    return row


def plan_crops(faces: Sequence[Face], image_wh: tuple[int, int], margin_frac: float,
               detector: str) -> list[tuple[Face, dict[str, Any]]]:
    """(face, crop identity) per face, skipping faces whose clamped crop is empty or repeats another."""
    out, seen = [], set()
    for f in faces:
        box = crop_box_px(f.xyxy, margin_frac, image_wh)
        if box is None or box in seen:
            continue
        seen.add(box)
        out.append((f, crop_transform(box, margin_frac, detector)))
    return out


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


# -- options ---------------------------------------------------------------------

@dataclass(kw_only=True)
class FacesOptions:
    """Options of ``curate faces`` (see ``curate faces --help``)."""

    min_confidence: float = 0.5
    margin_frac: float = 0.25
    select: str | None = None  # None: "largest" for crops, "all" for --boxes
    min_face_px: int = 0
    boxes: bool = False
    class_from: str = "face"
    drop_no_face: bool = False  # box mode: drop images without a face instead of keeping them as background
    detector: str = "ensemble"
    workers: int = 0
    quality: int = 95
    model_dir: str | None = None
    progress: bool = False

    @property
    def select_mode(self) -> str:
        return self.select or ("all" if self.boxes else "largest")

    def check(self) -> None:
        problems = [
            ("--min-confidence", 0 < self.min_confidence <= 1, "a number in (0, 1]", self.min_confidence),
            ("--margin", 0 <= self.margin_frac <= 5, "a fraction of the face box between 0 and 5", self.margin_frac),
            ("--select", self.select is None or self.select in SELECT_MODES, f"one of {SELECT_MODES}", self.select),
            ("--min-face-px", self.min_face_px >= 0, "0 or more pixels", self.min_face_px),
            ("--class-from", self.class_from in CLASS_FROM, f"one of {CLASS_FROM}", self.class_from),
            ("--detector", self.detector in DETECTORS, f"one of {DETECTORS}", self.detector),
            ("--quality", 1 <= self.quality <= 100, "a JPEG quality between 1 and 100", self.quality),
        ]
        for name, ok, expected, found in problems:
            if not ok:
                raise OptionError("", field=name, expected=expected, found=found)
        if self.drop_no_face and not self.boxes:
            raise OptionError("", field="--drop-no-face", expected="--boxes together with --drop-no-face",
                              found="crop mode", hint="crop mode always drops images without a face")
        if self.class_from == "label" and not self.boxes:
            raise OptionError("", field="--class-from", expected="--boxes together with --class-from label",
                              found="crop mode", hint="box classes only exist in --boxes mode")


@dataclass(frozen=True)
class _WorkSettings:
    ws_root: str
    model_paths: dict[str, str]
    detector: DetectorConfig
    select: str
    min_face_px: int
    margin_frac: float
    boxes: bool
    quality: int


@dataclass
class _Task:
    parent: dict[str, Any]
    known: list[Face] | None = None  # cached detections: no need to detect again


# -- per-image work (runs in worker processes) -------------------------------------

_STATE: dict[str, Any] = {}  # per process: the settings, and the detector once made


def _init_worker(settings: _WorkSettings) -> None:
    _close_worker()
    _STATE["settings"] = settings


def _close_worker() -> None:
    det = _STATE.pop("detector", None)
    if det is not None:
        det.close()
    _STATE.clear()


def _detector(settings: _WorkSettings) -> FaceDetector:
    det = _STATE.get("detector")
    if det is None:  # one detector per process, made on first use (cached faces need none)
        det = FaceDetector(settings.model_paths, settings.detector)
        _STATE["detector"] = det
    return det


def process_image(task: _Task, settings: _WorkSettings, detector: FaceDetector | None = None) -> dict[str, Any]:
    """Decode, detect (unless known), select, crop, encode and store one image.

    A plain function of its inputs (the workspace path is the only shared
    state), so it runs unchanged in a pool or on a distributed engine.
    """
    from curate.derive import store_derived, with_hashes
    from curate.imageio import load_display

    parent = task.parent
    res: dict[str, Any] = {"sample_id": parent["sample_id"], "sha256": parent["sha256"], "faces": None,
                           "wh": None, "rows": [], "error": None, "reason": None}
    try:
        img = load_display(parent["path"])
    except CurateError as e:
        if Path(parent["path"]).exists():
            res.update(error=str(e), reason="unreadable")
        else:
            res.update(error=missing_file_message(parent["path"], parent["source"], settings.ws_root),
                       reason="missing_file")
        return res
    res["wh"] = img.size
    faces = task.known
    if faces is None:
        det = detector if detector is not None else _detector(settings)
        faces = det.detect(img)
    res["faces"] = faces
    if settings.boxes:
        return res
    chosen = select_faces(faces, settings.select, img.size, settings.min_face_px)
    ws = Workspace(Path(settings.ws_root))
    for face, transform in plan_crops(chosen, img.size, settings.margin_frac, settings.detector.detector):
        crop = img.crop(tuple(transform["crop_xyxy"]))
        row = store_derived(ws, parent, crop, transform, layout=LAYOUT, quality=settings.quality)
        res["rows"].append(with_hashes(face_record(row, face), crop))
    return res


def _pool_task(task: _Task) -> dict[str, Any]:
    return process_image(task, _STATE["settings"])


def _crashed(task: _Task, crash: WorkerCrash) -> dict[str, Any]:
    """The result for an image whose worker process died on it every time: its row is dropped as worker_crashed."""
    parent = task.parent
    return {"sample_id": parent["sample_id"], "sha256": parent["sha256"], "faces": None, "wh": None, "rows": [],
            "reason": "worker_crashed",
            "error": f"{parent['path']}: {crash.message()} while detecting faces (re-run `curate faces` to try again)"}


def _run_tasks(tasks: list[_Task], settings: _WorkSettings, workers: int, progress: bool) -> Iterator[dict[str, Any]]:
    from curate.parallel import stream_map

    try:
        yield from stream_map(_pool_task, tasks, workers=workers, progress=progress, desc="faces",
                              in_process_below=IN_PROCESS_MAX, max_chunk=8,
                              initializer=_init_worker, initargs=(settings,), on_crash=_crashed)
    finally:
        _close_worker()  # the detector of an in-process run (a pool's workers end with the pool)


# -- detection cache ---------------------------------------------------------------

def _cache_path(ws: Workspace, key: str) -> Path:
    return ws.root / CACHE_DIR / f"faces-{key}.parquet"


def _load_cache(ws: Workspace, key: str) -> dict[tuple[str, str], tuple[tuple[int, int], list[Face]]]:
    import pandas as pd

    path = _cache_path(ws, key)
    if not path.exists():
        return {}
    try:
        df = pd.read_parquet(path)
    except Exception:  # a damaged cache only costs a re-detection
        return {}
    return {(r.sample_id, r.sha256): ((int(r.width), int(r.height)), faces_from_json(r.faces))
            for r in df.itertuples(index=False)}


def _save_cache(ws: Workspace, key: str, cache: dict[tuple[str, str], tuple[tuple[int, int], list[Face]]]) -> None:
    import pandas as pd
    import pyarrow as pa

    from curate.workspace import atomic_write_parquet

    rows = [{"sample_id": s, "sha256": h, "width": wh[0], "height": wh[1], "faces": faces_to_json(f)}
            for (s, h), (wh, f) in cache.items()]
    df = pd.DataFrame(rows, columns=["sample_id", "sha256", "width", "height", "faces"])
    schema = pa.schema([("sample_id", pa.string()), ("sha256", pa.string()), ("width", pa.int64()),
                        ("height", pa.int64()), ("faces", pa.string())])
    atomic_write_parquet(df, _cache_path(ws, key), schema)


# -- the stage ---------------------------------------------------------------------

_PARENT_FIELDS = ("sample_id", "source", "path", "origin_path", "sha256", "label", "label_origin", "split",
                  "rel_path", "format")


def _parent_dicts(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The fields a worker needs of each row, nulls as None (to_dict: iterrows is slow at scale)."""
    sub = rows[list(_PARENT_FIELDS)].astype(object)
    return sub.where(sub.notna(), None).to_dict("records")


# Reasons this stage gives its inputs that a re-run reads again (a worker crash need not be the file's fault).
_REREAD = ("no_face", "unreadable", "missing_file", "worker_crashed")


def _inputs(manifest: pd.DataFrame, boxes: bool) -> tuple[pd.Series, int]:
    """Rows this run reads (mask), and how many were left alone because a person rejected them."""
    from curate.lineage import person_rejected, transform_inputs

    rejected = person_rejected(manifest)
    if boxes:
        by_me = (manifest["decided_by"] == LAYOUT) & manifest["reason"].isin(list(_REREAD))
        mask = ~rejected & ((manifest["status"] == "kept") | by_me)
    else:
        mask = transform_inputs(manifest, LAYOUT, reread=("superseded", *_REREAD))
    review = int(rejected.sum())
    return mask & manifest["path"].notna(), review


def faces(manifest: pd.DataFrame, options: FacesOptions, *, ws: Workspace,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Detect faces in the workspace's rows; crop them (default) or write them as boxes.

        >>> from curate.workspace import Workspace  # doctest: +SKIP
        >>> ws = Workspace.open("WS")  # doctest: +SKIP
        >>> ws.run_stage("faces", faces, FacesOptions(select="all")).summary["faces"]  # doctest: +SKIP
    """
    import pandas as pd

    from curate.derive import carry_boxes_into_crops, derived_id, upsert_rows
    from curate.lineage import Decision, mark_stale, revive, set_decisions
    from curate.models import resolve
    from curate.schema import ANNOTATION_COLUMNS, conform
    from curate.summary import summarize
    from curate.workspace import StageResult

    t0 = time.perf_counter()
    options.check()
    out = manifest.copy()
    ann = annotations if annotations is not None else conform(pd.DataFrame(), ANNOTATION_COLUMNS)
    mask, review_rows = _inputs(out, options.boxes)
    rows = out[mask]
    if options.class_from == "label":
        unlabelled = rows[rows["label"].isna()]
        if len(unlabelled):
            example = ", ".join(unlabelled["rel_path"].astype(str).head(3))
            raise OptionError("", field="--class-from label", expected="a label on every row to process",
                              found=f"{len(unlabelled)} rows without one (e.g. {example})",
                              hint="label them first, or use --class-from face")
    cfg = DetectorConfig(detector=options.detector, min_confidence=options.min_confidence)
    models = resolve(cfg.model_keys(), options.model_dir) if len(rows) else {}
    key = cfg.cache_key({k: m.spec.sha256 for k, m in models.items()}) if models else ""
    cache = _load_cache(ws, key) if key else {}
    settings = _WorkSettings(str(ws.root), {k: str(m.path) for k, m in models.items()}, cfg, options.select_mode,
                             options.min_face_px, options.margin_frac, options.boxes, options.quality)
    existing_paths = dict(zip(out["sample_id"], out["path"], strict=True))

    # Rows whose faces are cached and whose crops all exist need no pixels at all.
    tasks: list[_Task] = []
    results: list[dict[str, Any]] = []
    for parent in _parent_dicts(rows):
        known = cache.get((parent["sample_id"], parent["sha256"]))
        if known is None:
            tasks.append(_Task(parent))
            continue
        wh, found = known
        res = {"sample_id": parent["sample_id"], "sha256": parent["sha256"], "faces": found, "wh": wh,
               "rows": [], "error": None, "reason": None, "cached": True}
        if not options.boxes:
            chosen = select_faces(found, settings.select, wh, settings.min_face_px)
            plans = plan_crops(chosen, wh, settings.margin_frac, cfg.detector)
            ids = [derived_id(parent["sample_id"], p) for _, p in plans]
            if not all(i in existing_paths and Path(existing_paths[i]).exists() for i in ids):
                tasks.append(_Task(parent, known=found))
                continue
            res["existing_ids"] = ids
        results.append(res)
    results += list(_run_tasks(tasks, settings, options.workers, options.progress))
    order = {sid: n for n, sid in enumerate(rows["sample_id"])}
    results.sort(key=lambda r: order[r["sample_id"]])  # the pool returns in any order; the manifest must not

    # Apply the results: table operations only.
    per_image: Counter[int] = Counter()
    counts: Counter[str] = Counter()
    warnings: list[str] = []
    new_rows: list[dict[str, Any]] = []
    produced_by_parent: dict[str, list[str]] = {}
    boxes_out: list[dict[str, Any]] = []
    label_of = dict(zip(out["sample_id"], out["label"], strict=True))
    decisions: dict[str, Decision] = {}
    status_of = dict(zip(out["sample_id"], out["status"], strict=True))
    detail_of = dict(zip(out["sample_id"], out["detail"].astype(object).where(out["detail"].notna(), None),
                         strict=True))
    decided_of = dict(zip(out["sample_id"], out["decided_by"].astype(object).where(out["decided_by"].notna(), None),
                          strict=True))
    for res in results:
        sid = res["sample_id"]
        if res["error"] is not None:
            decisions[sid] = Decision("dropped", res["reason"], res["error"], LAYOUT)
            warnings.append(res["error"])
            counts["worker_crashed" if res["reason"] == "worker_crashed" else "unreadable"] += 1
            produced_by_parent[sid] = []
            continue
        found = res["faces"]
        wh = tuple(res["wh"])
        cache[(sid, res["sha256"])] = (wh, found)  # type: ignore[assignment]
        counts["cached" if res.get("cached") else "detected"] += 1
        chosen = select_faces(found, settings.select, wh, settings.min_face_px)  # type: ignore[arg-type]
        per_image[len([f for f in found if f.short_side_px >= settings.min_face_px])] += 1
        counts["faces_found"] += len(found)
        if not chosen:
            small = len(found)
            detail = f"no face scoring >= {options.min_confidence:g}" + (
                f" ({small} smaller than --min-face-px {options.min_face_px})" if small else "")
            counts["no_face"] += 1
            produced_by_parent[sid] = []
            if options.boxes and not options.drop_no_face:  # a background image: kept, with no boxes
                decided = None if status_of[sid] == "dropped" else decided_of[sid]
                decisions[sid] = Decision("kept", None, f"{NO_FACE_DETAIL}{detail}", decided)
                counts["background"] += 1
            else:
                decisions[sid] = Decision("dropped", "no_face", detail, LAYOUT)
            continue
        if options.boxes:
            if status_of[sid] == "kept" and str(detail_of[sid] or "").startswith(NO_FACE_DETAIL):
                decisions[sid] = Decision("kept", None, None, decided_of[sid])  # a face now: no longer background
            cls = "face" if options.class_from == "face" else str(label_of[sid])
            boxes_out += [{"sample_id": sid, "label": cls, "x1": f.xyxy[0], "y1": f.xyxy[1], "x2": f.xyxy[2],
                           "y2": f.xyxy[3], "score": round(f.score, 4), "origin": LAYOUT, "iscrowd": False}
                          for f in chosen]
            if status_of[sid] == "dropped":  # an earlier run found no face; this one does
                # decided_by None: no stage decision stands, so ingest's duplicate marking still sees the row
                decisions[sid] = Decision("kept", None, None, None)
            counts["boxes"] += len(chosen)
            continue
        ids = res.get("existing_ids") or [r["sample_id"] for r in res["rows"]]
        new_rows += res["rows"]
        produced_by_parent[sid] = ids
        decisions[sid] = Decision("dropped", "superseded", f"{len(ids)} face crop{'s' if len(ids) != 1 else ''}", LAYOUT)
        counts["crops"] += len(ids)

    out = set_decisions(out, decisions)
    if options.boxes:
        done = {r["sample_id"] for r in results}
        ann = ann[~(ann["sample_id"].isin(done) & (ann["origin"] == LAYOUT))]
        if boxes_out:
            ann = pd.concat([ann, pd.DataFrame(boxes_out)], ignore_index=True)
    else:
        before = set(out["sample_id"])
        out = upsert_rows(out, new_rows)
        created = [r["sample_id"] for r in new_rows if r["sample_id"] not in before]
        counts["crops_new"] = len(set(created))
        ann = carry_boxes_into_crops(ann, new_rows, set(created))
        produced = {i for ids in produced_by_parent.values() for i in ids}
        out, counts["revived"] = revive(out, produced, LAYOUT)
        previous = out[(out["layout"] == LAYOUT) & out["parent_id"].isin(list(produced_by_parent))]
        stale = set(previous["sample_id"]) - produced
        out, counts["stale"] = mark_stale(out, stale, LAYOUT)
    if key and len(results):
        _save_cache(ws, key, cache)

    summary = {**summarize(out), "faces": {
        "images": len(results),
        "faces_per_image": {str(k): v for k, v in sorted(per_image.items())},
        "faces_found": counts["faces_found"],
        "select": settings.select,
        ("boxes" if options.boxes else "crops"): counts["boxes" if options.boxes else "crops"],
        "no_face": counts["no_face"],
        **({"background": counts["background"]} if options.boxes else {}),
        "unreadable": counts["unreadable"],
        "worker_crashed": counts["worker_crashed"],
        "detected": counts["detected"],
        "from_cache": counts["cached"],
        "left_to_review": review_rows,
        **({} if options.boxes else {"crops_new": counts["crops_new"], "stale": counts["stale"],
                                     "revived": counts["revived"]}),
        "seconds": round(time.perf_counter() - t0, 3),
    }}
    if warnings:
        summary["warnings"] = warnings
    record = {"models": {k: {"path": str(m.path), "sha256": m.spec.sha256, "found_in": m.found_in}
                         for k, m in models.items()},
              "detector": asdict(cfg), "detector_cache": key}
    return StageResult(out, conform(ann, ANNOTATION_COLUMNS), summary=summary, record=record,
                       objects_written=bool(new_rows))


def record_options(options: FacesOptions) -> dict[str, Any]:
    """Options as recorded in runs/ (JSON-able)."""
    d = asdict(options)
    d["select"] = options.select_mode
    return d

