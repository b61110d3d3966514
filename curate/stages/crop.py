"""``curate crop``: every annotated box becomes its own labelled sample (a patch).

A detection set becomes a classification set: defect patches, banknote
denominations, car-damage types, trash items. For every box in
``annotations.parquet`` of a row ``curate crop`` reads:

- the window is the box, clipped to the image, grown by ``--margin`` (a
  fraction of the box's width and height on each side), rounded outwards to
  whole pixels and clamped to the image (geometry in
  :func:`curate.geometry.crop_window_px`); ``--square`` widens it to a square
  around the box first, sliding inwards at an image edge, so that a later
  ``curate square`` needs no padding and nothing is distorted;
- the patch is cut from the displayed (EXIF-rotated) image, the frame boxes
  are stored in, and stored in ``objects/`` as a derived row
  (``layout = "crop"``, ``parent_id`` set). Its label is the box's class, or
  with ``--label-from row`` the image's own label. Its ``transform`` records
  the box, the window, the margin and whether the image edge clipped it;
- every box of the parent that overlaps the window (other objects in the
  patch, and the box itself) is carried into the patch's frame, clipped, so a
  detection export of patches is right too.

Each parent image is decoded once and all its boxes are cut from that decode,
on the same per-image executor as ``curate faces`` and ``curate square``.

Boxes that give no patch are recorded with a reason (counted in the summary;
each one, with its parent, class and box, in the run record in ``runs/``):

- ``too_small``: the box's shorter side (inside the image) is below ``--min-box-px``;
- ``outside_image``: the box has no area inside the image;
- ``duplicate_box``: same window and class as an earlier box of the same image
  (one patch is made);
- ``conflicting_box``: same window as an earlier box of another class (the
  first box's patch is made; the conflict is a warning to settle the label);
- boxes of classes left out by ``--classes`` are only counted.

Parents stay as they are and are never deleted; ``--supersede`` drops each
parent that gave patches as ``superseded`` (for classification-only exports,
which need a label on every kept row). ``split`` keeps every patch in the split
of the photo it was cut from. Re-running reuses every patch whose box and
options did not change, and marks stale (``superseded``, detail ``stale: ...``)
the patches whose box changed or went away, e.g. after a label pull.

    >>> plan_patches([{"label": "scratch", "x1": 10, "y1": 10, "x2": 50, "y2": 30}],
    ...              (100, 100), CropOptions(margin_frac=0.1))[0][0]["crop_xyxy"]
    [6, 8, 54, 32]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.derive import DeriveResult
from curate.errors import OptionError
from curate.geometry import clamp_xyxy, crop_window_px
from curate.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from curate.parallel import WorkerCrash
    from curate.workspace import StageResult

LAYOUT = "crop"
LABEL_FROM = ("box", "row")
SKIP_REASONS = ("too_small", "outside_image", "duplicate_box", "conflicting_box")
IN_PROCESS_MAX = 16  # below this many images a process pool costs more than it saves


@dataclass(kw_only=True)
class CropOptions:
    """Options of ``curate crop`` (see ``curate crop --help``)."""

    margin_frac: float = 0.0
    min_box_px: int = 8
    classes: tuple[str, ...] | None = None  # None: every class
    square: bool = False
    label_from: str = "box"
    supersede: bool = False
    quality: int = 95
    workers: int = 0
    progress: bool = False
    engine: str | None = None  # per-image work on "local" or "ray" (None: $CURATE_ENGINE, else local)
    ray_address: str | None = None  # with engine "ray": a cluster to use (None: start a local one)

    def check(self) -> None:
        problems = [
            ("--margin", 0 <= self.margin_frac <= 5, "a fraction of the box between 0 and 5", self.margin_frac),
            ("--min-box-px", self.min_box_px >= 1, "1 or more pixels", self.min_box_px),
            ("--label-from", self.label_from in LABEL_FROM, f"one of {LABEL_FROM}", self.label_from),
            ("--quality", 1 <= self.quality <= 100, "a JPEG quality between 1 and 100", self.quality),
            ("--classes", self.classes is None or len(self.classes) > 0, "one or more class names", self.classes),
        ]
        for name, ok, expected, found in problems:
            if not ok:
                raise OptionError("", field=name, expected=expected, found=found)


# -- planning (pure: no pixels) ------------------------------------------------------

def plan_patches(boxes: Sequence[dict[str, Any]], image_wh: tuple[int, int], options: CropOptions,
                 parent_label: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The patches one image's boxes give: ``(transforms, skipped)``.

    ``boxes`` are dicts with ``label`` and ``x1..y2`` (displayed frame), in
    annotation order. Each transform is the derived row's ``transform`` record
    (and identity); each skipped box is its dict with a ``reason``.
    """
    transforms: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seen: dict[tuple[int, ...], str] = {}
    for n, b in enumerate(boxes):
        label = str(b["label"])
        if options.classes is not None and label not in options.classes:
            continue
        xyxy = [float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"])]
        rec = {"box_index": n, "label": label, "xyxy": [round(v, 3) for v in xyxy]}
        cx1, cy1, cx2, cy2 = clamp_xyxy(xyxy, image_wh)
        fit = crop_window_px(xyxy, options.margin_frac, image_wh, square=options.square)
        if fit is None:
            skipped.append({**rec, "reason": "outside_image", "detail": f"image is {image_wh[0]}x{image_wh[1]}"})
            continue
        short = min(cx2 - cx1, cy2 - cy1)
        if short < options.min_box_px:
            skipped.append({**rec, "reason": "too_small",
                            "detail": f"shorter side {short:g} px < --min-box-px {options.min_box_px}"})
            continue
        window, clamped = fit
        first = seen.get(window)
        if first is not None:
            reason = "duplicate_box" if first == label else "conflicting_box"
            skipped.append({**rec, "reason": reason, "detail": f"same window {list(window)} as a box of "
                                                               f"class {first!r}"})
            continue
        seen[window] = label
        patch_label = label if options.label_from == "box" else parent_label
        transforms.append({
            "op": "crop", "box_xyxy": [round(v, 6) for v in xyxy], "box_label": label, "label": patch_label,
            "margin_frac": options.margin_frac, "square": options.square, "crop_xyxy": list(window),
            "src_wh": [int(image_wh[0]), int(image_wh[1])], "clamped": clamped,
        })
    return transforms, skipped


# -- per-image work (runs in worker processes) -----------------------------------------

@dataclass(frozen=True)
class _Task:
    parent: dict[str, Any]
    transforms: list[dict[str, Any]]
    ws_root: str
    quality: int
    label_from: str


def process_image(task: _Task) -> DeriveResult:
    """Decode one image once and cut, encode and store every planned patch of it.

    A plain function of its inputs (the workspace path is the only shared
    state), so it runs unchanged in a pool or on another engine.
    """
    from curate.derive import open_parent, store_derived, with_hashes

    parent = task.parent
    res = DeriveResult(parent["sample_id"])
    img = open_parent(res, parent, task.ws_root, expected_wh=task.transforms[0]["src_wh"])  # boxes fit that size
    if img is None:
        return res
    img.load()
    ws = Workspace(Path(task.ws_root))
    for transform in task.transforms:
        patch = img.crop(tuple(transform["crop_xyxy"]))
        label = transform["label"] if task.label_from == "box" else None
        row = store_derived(ws, parent, patch, transform, layout=LAYOUT, quality=task.quality, label=label)
        res.rows.append(with_hashes(row, patch))
    return res


def _crashed(task: _Task, crash: WorkerCrash) -> DeriveResult:
    """The result for a photo whose worker process died on it every time: the photo is dropped as worker_crashed."""
    return DeriveResult.crashed(task.parent, crash, "cutting its boxes", "crop")


def _run_tasks(tasks: list[_Task], workers: int, progress: bool, engine: str | None = None,
               ray_address: str | None = None) -> Iterator[DeriveResult]:
    from curate.engine import stream_map

    return stream_map(process_image, tasks, workers=workers, progress=progress, desc="crop",
                      in_process_below=IN_PROCESS_MAX, max_chunk=8, on_crash=_crashed,
                      engine=engine, ray_address=ray_address)


# -- the stage -----------------------------------------------------------------------

def _inputs(manifest: pd.DataFrame) -> pd.Series:
    """Rows this run reads: transform inputs, less anything made from a photo crop already read.

    Parents stay kept without ``--supersede``, so a later stage (``square``)
    derives from them too; those derived copies carry the same boxes and must
    not be cut again on a re-run.
    """
    from curate.derive import REREAD
    from curate.lineage import descendants, transform_inputs

    mask = transform_inputs(manifest, LAYOUT, reread=REREAD)
    crop_parents = set(manifest.loc[manifest["layout"] == LAYOUT, "parent_id"].dropna())
    below = descendants(manifest, crop_parents)
    return mask & ~manifest["sample_id"].isin(below) & manifest["width"].notna() & manifest["height"].notna()


def crop(manifest: pd.DataFrame, options: CropOptions, *, ws: Workspace,
         annotations: pd.DataFrame | None = None) -> StageResult:
    """Cut every box of the rows ``curate crop`` reads into a labelled patch.

        >>> from curate.workspace import Workspace  # doctest: +SKIP
        >>> Workspace.open("WS").run_stage("crop", crop, CropOptions(margin_frac=0.1))  # doctest: +SKIP
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
    from curate.schema import ANNOTATION_COLUMNS, conform
    from curate.summary import summarize
    from curate.workspace import StageResult

    t0 = time.perf_counter()
    options.check()
    out = manifest.copy()
    ann = annotations if annotations is not None else conform(pd.DataFrame(), ANNOTATION_COLUMNS)
    rows = out[_inputs(out)]
    known_classes = set(ann["label"].astype(str))
    if options.classes is not None and not set(options.classes) & known_classes:
        raise OptionError("", field="--classes", expected=f"box classes among {sorted(known_classes)}",
                          found=", ".join(options.classes), hint="see `curate status` or the annotations")
    boxes_of = {sid: g.to_dict("records") for sid, g in
                ann[ann["sample_id"].isin(set(rows["sample_id"]))].groupby("sample_id", sort=False)}
    existing = stored_paths(out)

    tasks: list[_Task] = []
    results: list[DeriveResult] = []
    skipped: list[dict[str, Any]] = []
    done = Outcome(LAYOUT)
    counts = done.counts
    for parent in parent_dicts(rows, extra=("width", "height")):
        boxes = boxes_of.get(parent["sample_id"])
        if not boxes:
            continue
        wh = (int(parent.pop("width")), int(parent.pop("height")))
        transforms, skips = plan_patches(boxes, wh, options, parent["label"])
        counts["boxes"] += len(boxes)
        counts["not_selected"] += len(boxes) - len(transforms) - len(skips)
        skipped += [{"sample_id": parent["sample_id"], "rel_path": parent["rel_path"], **s} for s in skips]
        if not transforms:
            continue
        ids = [derived_id(parent["sample_id"], t) for t in transforms]
        if all_stored(ids, existing):
            results.append(DeriveResult(parent["sample_id"], reused=ids))
        else:
            tasks.append(_Task(parent, transforms, str(ws.root), options.quality, options.label_from))
    results += list(_run_tasks(tasks, options.workers, options.progress, options.engine, options.ray_address))
    results = in_input_order(results, rows["sample_id"])

    for res in results:
        if done.failed(res):
            continue
        ids = done.add(res)
        if options.supersede:
            n = len(ids)
            done.decisions[res.sample_id] = ("dropped", "superseded", f"{n} box patch{'es' if n != 1 else ''}",
                                             LAYOUT)
    if not options.supersede:  # an earlier run superseded them, or could not read them; now they stay kept
        earlier = rows[(rows["decided_by"] == LAYOUT) & (rows["status"] == "dropped")]["sample_id"]
        done.decisions.update({sid: ("kept", None, None, None) for sid in earlier if sid in done.produced})
    n_ann = len(ann)
    out, ann, created = commit(out, ann, done, stale_parents=rows["sample_id"])
    warnings, decisions, new_rows, all_ids = done.warnings, done.decisions, done.new_rows, done.produced_ids()

    by_reason = Counter(s["reason"] for s in skipped)
    conflicts = [s for s in skipped if s["reason"] == "conflicting_box"]
    warnings += [f"{s['rel_path']}: box {s['box_index']} ({s['label']}) has {s['detail']}: settle its class, "
                 "then re-run `curate crop`" for s in conflicts]
    summary = {**summarize(out), "crop": {
        "images": len(results), "boxes": counts["boxes"], "patches": len(all_ids), "new": len(created),
        "reused": len(all_ids) - len(created), "skipped": {r: by_reason[r] for r in SKIP_REASONS if by_reason[r]},
        "not_selected": counts["not_selected"], "unreadable": counts["unreadable"],
        "worker_crashed": counts["worker_crashed"],
        "clamped": sum(1 for r in new_rows if '"clamped": true' in r["transform"]),
        "boxes_carried": len(ann) - n_ann, "parents_superseded": sum(1 for d in decisions.values()
                                                                     if d[1] == "superseded"),
        "stale": counts["stale"], "revived": counts["revived"], "seconds": round(time.perf_counter() - t0, 3),
    }}
    if warnings:
        summary["warnings"] = warnings
    return StageResult(out, conform(ann, ANNOTATION_COLUMNS), summary=summary, record={"skipped_boxes": skipped},
                       objects_written=bool(new_rows))


def record_options(options: CropOptions) -> dict[str, Any]:
    """Options as recorded in runs/ (JSON-able)."""
    d = asdict(options)
    d["classes"] = list(options.classes) if options.classes is not None else None
    return d
