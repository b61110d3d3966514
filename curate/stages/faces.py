"""``curate faces``: find faces with MediaPipe BlazeFace; crop them, or write them as boxes.

Detection runs on the EXIF-displayed image (:func:`curate.imageio.load_display`)
with the ``ensemble`` detector of :mod:`curate.faces.detect` by default (both
BlazeFace models, and tiles where the whole image leaves something open; see
there and docs/faces.md).

Crop mode (default): each selected face becomes a derived row (image in
``objects/``, ``parent_id`` set, crop box in the parent's frame in
``transform``), and the parent is dropped as ``superseded``. Box mode
(``--boxes``): faces are written to ``annotations.parquet`` (origin ``faces``)
and the row stays. In crop mode an image without a face is dropped
``no_face``. In box mode it stays kept, without boxes, as a background image
(its ``detail`` says no face was found): a detector learns from such negatives
(issue 14). ``--drop-no-face`` drops them ``no_face`` instead.

Detections are cached per file content and detector settings in
``WS/cache/`` (:mod:`curate.faces.cache`), so re-running with another margin or
selection only crops.

    >>> select_faces([Face((0, 0, 10, 10), 0.9), Face((20, 20, 60, 60), 0.8)], "largest", (100, 100))
    [Face(xyxy=(20, 20, 60, 60), score=0.8, found_by='')]
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.derive import DeriveResult
from curate.errors import OptionError
from curate.faces.cache import load_cache, save_cache
from curate.faces.detect import DETECTOR_VERSION, DETECTORS, DetectorConfig, Face, FaceDetector
from curate.geometry import box_area, crop_box_px
from curate.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from curate.parallel import WorkerCrash
    from curate.workspace import StageResult

# pandas (and the modules built on it) is imported inside the functions that make
# tables: a pool worker imports this module and starts faster without it.

LAYOUT = "faces"
SELECT_MODES = ("largest", "all", "most-central")
CLASS_FROM = ("face", "label")
NO_FACE_DETAIL = "background image: "  # detail of a kept --boxes row without a face (then why none was found)
IN_PROCESS_MAX = 8  # fewer tasks than this run in-process: a worker's start (import mediapipe) costs ~1-2 s


# -- pure parts ------------------------------------------------------------------

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


# -- options ---------------------------------------------------------------------

@dataclass
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
    engine: str | None = None  # per-image work on "local" or "ray" (None: $CURATE_ENGINE, else local)
    ray_address: str | None = None  # with engine "ray": a cluster to use (None: start a local one)

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


@dataclass
class FaceResult(DeriveResult):
    """One image's result: the crops (``rows``, crop mode) and what detection found.

    ``faces``: every face found (before selection), in the displayed frame of
    size ``wh``; ``cached``: they came from the detection cache.
    """

    sha256: str | None = None
    faces: list[Face] | None = None
    wh: tuple[int, int] | None = None
    cached: bool = False


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


def process_image(task: _Task, settings: _WorkSettings, detector: FaceDetector | None = None) -> FaceResult:
    """Decode, detect (unless known), select, crop, encode and store one image.

    A plain function of its inputs (the workspace path is the only shared
    state), so it runs unchanged in a pool or on a distributed engine.
    """
    from curate.derive import open_parent, store_derived, with_hashes

    parent = task.parent
    res = FaceResult(parent["sample_id"], sha256=parent["sha256"])
    img = open_parent(res, parent, settings.ws_root)
    if img is None:
        return res
    res.wh = img.size
    faces = task.known
    if faces is None:
        det = detector if detector is not None else _detector(settings)
        faces = det.detect(img)
    res.faces = faces
    if settings.boxes:
        return res
    chosen = select_faces(faces, settings.select, img.size, settings.min_face_px)
    ws = Workspace(Path(settings.ws_root))
    for face, transform in plan_crops(chosen, img.size, settings.margin_frac, settings.detector.detector):
        crop = img.crop(tuple(transform["crop_xyxy"]))
        row = store_derived(ws, parent, crop, transform, layout=LAYOUT, quality=settings.quality)
        res.rows.append(with_hashes(face_record(row, face), crop))
    return res


def _pool_task(task: _Task) -> FaceResult:
    return process_image(task, _STATE["settings"])


def _crashed(task: _Task, crash: WorkerCrash) -> FaceResult:
    """The result for an image whose worker process died on it every time: its row is dropped as worker_crashed."""
    return FaceResult.crashed(task.parent, crash, "detecting faces", "faces")


def _run_tasks(tasks: list[_Task], settings: _WorkSettings, workers: int, progress: bool,
               engine: str | None = None, ray_address: str | None = None) -> Iterator[FaceResult]:
    from curate.engine import stream_map

    try:
        yield from stream_map(_pool_task, tasks, workers=workers, progress=progress, desc="faces",
                              in_process_below=IN_PROCESS_MAX, max_chunk=8,
                              initializer=_init_worker, initargs=(settings,), on_crash=_crashed,
                              engine=engine, ray_address=ray_address)
    finally:
        _close_worker()  # the detector of an in-process run (a pool's workers end with the pool)


# -- the stage ---------------------------------------------------------------------

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

    from curate.derive import (
        Outcome,
        all_stored,
        commit,
        derived_id,
        in_input_order,
        parent_dicts,
        stored_paths,
    )
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
    cache = load_cache(ws, key) if key else {}
    settings = _WorkSettings(str(ws.root), {k: str(m.path) for k, m in models.items()}, cfg, options.select_mode,
                             options.min_face_px, options.margin_frac, options.boxes, options.quality)
    existing_paths = stored_paths(out)

    # Rows whose faces are cached and whose crops all exist need no pixels at all.
    tasks: list[_Task] = []
    results: list[FaceResult] = []
    for parent in parent_dicts(rows):
        known = cache.get((parent["sample_id"], parent["sha256"]))
        if known is None:
            tasks.append(_Task(parent))
            continue
        wh, found = known
        res = FaceResult(parent["sample_id"], sha256=parent["sha256"], faces=found, wh=wh, cached=True)
        if not options.boxes:
            chosen = select_faces(found, settings.select, wh, settings.min_face_px)
            plans = plan_crops(chosen, wh, settings.margin_frac, cfg.detector)
            ids = [derived_id(parent["sample_id"], p) for _, p in plans]
            if not all_stored(ids, existing_paths):
                tasks.append(_Task(parent, known=found))
                continue
            res.reused = ids
        results.append(res)
    results += list(_run_tasks(tasks, settings, options.workers, options.progress, options.engine,
                               options.ray_address))
    results = in_input_order(results, rows["sample_id"])

    # Apply the results: table operations only.
    per_image: Counter[int] = Counter()
    done = Outcome(LAYOUT)
    counts, warnings, decisions = done.counts, done.warnings, done.decisions
    produced_by_parent = done.produced
    boxes_out: list[dict[str, Any]] = []
    label_of = dict(zip(out["sample_id"], out["label"], strict=True))
    status_of = dict(zip(out["sample_id"], out["status"], strict=True))
    detail_of = dict(zip(out["sample_id"], out["detail"].astype(object).where(out["detail"].notna(), None),
                         strict=True))
    decided_of = dict(zip(out["sample_id"], out["decided_by"].astype(object).where(out["decided_by"].notna(), None),
                          strict=True))
    for res in results:
        sid = res.sample_id
        if done.failed(res):
            produced_by_parent[sid] = []  # its earlier crops go stale
            continue
        found = res.faces or []  # set (with wh) whenever the image could be read
        wh = res.wh or (0, 0)
        cache[(sid, res.sha256)] = (wh, found)  # type: ignore[index]
        counts["cached" if res.cached else "detected"] += 1
        chosen = select_faces(found, settings.select, wh, settings.min_face_px)
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
                decisions[sid] = ("kept", None, f"{NO_FACE_DETAIL}{detail}", decided)
                counts["background"] += 1
            else:
                decisions[sid] = ("dropped", "no_face", detail, LAYOUT)
            continue
        if options.boxes:
            if status_of[sid] == "kept" and str(detail_of[sid] or "").startswith(NO_FACE_DETAIL):
                decisions[sid] = ("kept", None, None, decided_of[sid])  # a face now: no longer background
            cls = "face" if options.class_from == "face" else str(label_of[sid])
            boxes_out += [{"sample_id": sid, "label": cls, "x1": f.xyxy[0], "y1": f.xyxy[1], "x2": f.xyxy[2],
                           "y2": f.xyxy[3], "score": round(f.score, 4), "origin": LAYOUT, "iscrowd": False}
                          for f in chosen]
            if status_of[sid] == "dropped":  # an earlier run found no face; this one does
                # decided_by None: no stage decision stands, so ingest's duplicate marking still sees the row
                decisions[sid] = ("kept", None, None, None)
            counts["boxes"] += len(chosen)
            continue
        ids = done.add(res)
        decisions[sid] = ("dropped", "superseded", f"{len(ids)} face crop{'s' if len(ids) != 1 else ''}", LAYOUT)
        counts["crops"] += len(ids)

    if options.boxes:
        from curate.lineage import set_decisions

        out = set_decisions(out, decisions)
        seen = {r.sample_id for r in results}
        ann = ann[~(ann["sample_id"].isin(seen) & (ann["origin"] == LAYOUT))]
        if boxes_out:
            ann = pd.concat([ann, pd.DataFrame(boxes_out)], ignore_index=True)
    else:  # every parent read, found a face or not: crops it no longer gives go stale
        out, ann, created = commit(out, ann, done, stale_parents=produced_by_parent)
        counts["crops_new"] = len(created)
    if key and len(results):
        save_cache(ws, key, cache)

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
                       objects_written=bool(done.new_rows))


def record_options(options: FacesOptions) -> dict[str, Any]:
    """Options as recorded in runs/ (JSON-able)."""
    d = asdict(options)
    d["select"] = options.select_mode
    return d

