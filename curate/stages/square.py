"""``curate square``: make every kept row a ``size x size`` square, carrying its boxes.

Modes (geometry in :func:`curate.geometry.square_plan`):

- ``pad``: scale the long side to ``size``, centre it, fill the rest
  (``black``, ``white``, ``edge`` = replicate the border pixels, ``mean`` =
  the image's mean colour, or ``R,G,B``);
- ``crop``: scale the centred square of side min(w, h) to ``size``;
- ``stretch``: scale both sides to ``size`` (aspect ratio changes).

The image is resized first and padded after, so a 15754 x 1382 panorama never
becomes a 15754 x 15754 canvas. Resampling is Lanczos (Pillow), which maps
pixel edges exactly, so boxes in ``annotations.parquet`` are carried into the
new frame by the same affine map (see ``transform`` of the derived row).

Each square is a derived row (``layout = "square"``, ``parent_id`` set), and
its parent is dropped as ``superseded``. Re-running with the same options
finds every square already there and does no pixel work.

    >>> parse_fill("10,20,30")
    (10, 20, 30)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate.derive import (
    REREAD,
    DeriveResult,
    Outcome,
    all_stored,
    commit,
    derived_id,
    in_input_order,
    open_parent,
    parent_dicts,
    store_derived,
    stored_paths,
    with_hashes,
)
from curate.errors import OptionError
from curate.geometry import SQUARE_MODES, SquarePlan, square_plan
from curate.lineage import transform_inputs
from curate.parallel import WorkerCrash
from curate.schema import ANNOTATION_COLUMNS, conform
from curate.summary import summarize
from curate.workspace import StageResult, Workspace

LAYOUT = "square"
FILL_NAMES = ("black", "white", "edge", "mean")
UPSCALE_WARN_X = 2.0  # a square enlarged this much or more (an 80 px face crop to 160 px) is counted and warned
UPSCALE_EXAMPLES = 3
IN_PROCESS_MAX = 16  # below this many images a process pool costs more than it saves

Fill = str | tuple[int, int, int]


def parse_fill(text: str) -> Fill:
    """``black``/``white`` -> an RGB triple; ``edge``/``mean`` stay names; ``R,G,B`` -> a triple.

    Raises :class:`OptionError` for anything else.
    """
    t = text.strip().lower()
    if t == "black":
        return (0, 0, 0)
    if t == "white":
        return (255, 255, 255)
    if t in ("edge", "mean"):
        return t
    parts = t.split(",")
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise OptionError("", field="--fill", expected=f"one of {FILL_NAMES} or R,G,B with values 0-255",
                          found=text)
    return (rgb[0], rgb[1], rgb[2])


def make_square(img: Any, plan: SquarePlan, fill: Fill) -> Any:
    """Pixels for ``plan``: resize the planned region, then pad (pad mode) with ``fill``.

    ``img`` is a Pillow image in the displayed frame, of size ``plan.src_wh``.
    """
    from PIL import Image

    region = img.resize(plan.resized_wh, Image.Resampling.LANCZOS, box=plan.crop_xyxy, reducing_gap=3.0)
    if plan.resized_wh == (plan.size, plan.size):
        return region
    ox, oy = plan.offset_xy
    rw, rh = plan.resized_wh
    if fill == "edge":
        import cv2

        arr = cv2.copyMakeBorder(np.asarray(region), oy, plan.size - rh - oy, ox, plan.size - rw - ox,
                                 cv2.BORDER_REPLICATE)
        return Image.fromarray(arr, region.mode)
    if fill == "mean":
        arr = np.asarray(region).reshape(-1, len(region.getbands()))
        color: Any = tuple(int(round(v)) for v in arr.mean(axis=0))
    else:
        color = fill
    canvas = Image.new(region.mode, (plan.size, plan.size), color if region.mode != "L" else color[0])
    canvas.paste(region, (ox, oy))
    return canvas


def square_transform(plan: SquarePlan, fill: Fill) -> dict[str, Any]:
    """The ``transform`` record of a square; also the derived row's identity (derive.derived_id)."""
    rec: dict[str, Any] = {"op": "square", **plan.to_record(), "resample": "lanczos"}
    if plan.mode == "pad":
        rec["fill"] = list(fill) if isinstance(fill, tuple) else fill
    return rec


def plan_from_transform(transform: dict[str, Any]) -> SquarePlan:
    """Rebuild the plan a ``transform`` record describes (for carrying boxes, or undoing them)."""
    return SquarePlan(transform["mode"], int(transform["size"]), tuple(transform["src_wh"]),  # type: ignore[arg-type]
                      tuple(transform["crop_xyxy"]), tuple(transform["resized_wh"]),  # type: ignore[arg-type]
                      tuple(transform["offset_xy"]))  # type: ignore[arg-type]


@dataclass
class SquareOptions:
    """Options of ``curate square`` (see ``curate square --help``)."""

    size_px: int = 224
    mode: str = "pad"
    fill: str = "black"
    quality: int = 95
    workers: int = 0
    progress: bool = False
    engine: str | None = None  # per-image work on "local" or "ray" (None: $CURATE_ENGINE, else local)
    ray_address: str | None = None  # with engine "ray": a cluster to use (None: start a local one)

    def check(self) -> Fill:
        if self.mode not in SQUARE_MODES:
            raise OptionError("", field="--mode", expected=f"one of {SQUARE_MODES}", found=self.mode)
        if not 1 <= self.size_px <= 16384:
            raise OptionError("", field="--size", expected="a side between 1 and 16384 pixels", found=self.size_px)
        if not 1 <= self.quality <= 100:
            raise OptionError("", field="--quality", expected="a JPEG quality between 1 and 100", found=self.quality)
        return parse_fill(self.fill)


@dataclass(frozen=True)
class _Task:
    parent: dict[str, Any]
    transform: dict[str, Any]
    ws_root: str
    quality: int


def process_image(task: _Task) -> DeriveResult:
    """Decode one image, square it as planned, store it; return its derived row (or the error)."""
    parent, transform = task.parent, task.transform
    res = DeriveResult(parent["sample_id"])
    plan = plan_from_transform(transform)
    img = open_parent(res, parent, task.ws_root, expected_wh=plan.src_wh)  # its boxes fit that size
    if img is None:
        return res
    fill = transform.get("fill", (0, 0, 0))
    sq = make_square(img, plan, tuple(fill) if isinstance(fill, list) else fill)
    row = store_derived(Workspace(Path(task.ws_root)), parent, sq, transform, layout=LAYOUT, quality=task.quality)
    res.rows.append(with_hashes(row, sq))
    return res


def _crashed(task: _Task, crash: WorkerCrash) -> DeriveResult:
    """The result for an image whose worker process died on it every time: its row is dropped as worker_crashed."""
    return DeriveResult.crashed(task.parent, crash, "squaring it", "square")


def _run_tasks(tasks: list[_Task], workers: int, progress: bool, engine: str | None = None,
               ray_address: str | None = None) -> Iterator[DeriveResult]:
    from curate.engine import stream_map

    return stream_map(process_image, tasks, workers=workers, progress=progress, desc="square",
                      in_process_below=IN_PROCESS_MAX, max_chunk=16, on_crash=_crashed,
                      engine=engine, ray_address=ray_address)


def square(manifest: pd.DataFrame, options: SquareOptions, *, ws: Workspace,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Square every row ``curate square`` reads; carry boxes; supersede the parents.

        >>> from curate.workspace import Workspace  # doctest: +SKIP
        >>> Workspace.open("WS").run_stage("square", square, SquareOptions(size_px=160))  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    fill = options.check()
    out = manifest.copy()
    ann = annotations if annotations is not None else conform(pd.DataFrame(), ANNOTATION_COLUMNS)
    mask = transform_inputs(out, LAYOUT, reread=REREAD)
    rows = out[mask & out["width"].notna() & out["height"].notna()]
    existing = stored_paths(out)
    tasks: list[_Task] = []
    results: list[DeriveResult] = []
    upscaled: list[tuple[float, str]] = []  # (scale factor, row) of squares enlarged UPSCALE_WARN_X or more
    for parent in parent_dicts(rows, extra=("width", "height")):
        plan = square_plan((int(parent.pop("width")), int(parent.pop("height"))), options.size_px, options.mode)
        scale = max(plan.scale_xy)
        if scale >= UPSCALE_WARN_X - 1e-9:
            upscaled.append((scale, f"{parent['source']}/{parent['rel_path']} "
                                    f"({plan.src_wh[0]}x{plan.src_wh[1]}, {scale:.1f}x)"))
        transform = square_transform(plan, fill)
        did = derived_id(str(parent["sample_id"]), transform)
        if all_stored([did], existing):
            results.append(DeriveResult(parent["sample_id"], reused=[did]))
        else:
            tasks.append(_Task(parent, transform, str(ws.root), options.quality))
    results += list(_run_tasks(tasks, options.workers, options.progress, options.engine, options.ray_address))
    results = in_input_order(results, rows["sample_id"])

    done = Outcome(LAYOUT)
    counts, warnings = done.counts, done.warnings
    detail = f"square {options.size_px} {options.mode}"
    for res in results:
        if done.failed(res):
            continue
        done.add(res)
        done.decisions[res.sample_id] = ("dropped", "superseded", detail, LAYOUT)
    carried: Counter[str] = Counter()
    # Only the parents squared now: a parent that could not be read keeps its earlier square.
    out, ann, created = commit(out, ann, done, stale_parents=done.produced,
                               carry=lambda a, new, made: carry_square_boxes(a, new, made, carried))
    produced, new_rows = done.produced, done.new_rows
    summary = {**summarize(out), "square": {
        "images": len(results), "squares": len(produced), "new": len(created),
        "reused": len(produced) - len(created), "unreadable": counts["unreadable"],
        "worker_crashed": counts["worker_crashed"],
        "boxes_carried": carried["carried"], "boxes_clipped": carried["clipped"], "boxes_cut_off": carried["cut_off"],
        "stale": counts["stale"], "revived": counts["revived"], "seconds": round(time.perf_counter() - t0, 3),
        "upscaled_2x": len(upscaled),
    }}
    if upscaled:
        upscaled.sort(key=lambda t: (-round(t[0], 6), t[1]))
        few = ", ".join(name for _, name in upscaled[:UPSCALE_EXAMPLES])
        more = f" and {len(upscaled) - UPSCALE_EXAMPLES} more" if len(upscaled) > UPSCALE_EXAMPLES else ""
        warnings.insert(0, f"{len(upscaled)} images were enlarged {UPSCALE_WARN_X:g}x or more to "
                           f"{options.size_px} px, so their squares are blurry: {few}{more} (drop small faces "
                           "with `curate faces --min-face-px`, or choose a smaller --size)")
    if warnings:
        summary["warnings"] = warnings
    return StageResult(out, conform(ann, ANNOTATION_COLUMNS), summary=summary,
                       record={"fill_rgb": list(fill) if isinstance(fill, tuple) else fill},
                       objects_written=bool(new_rows))


def carry_square_boxes(ann: pd.DataFrame, rows: list[dict[str, Any]], created: set[str],
                       counts: Counter[str] | None = None) -> pd.DataFrame:
    """Parents' boxes mapped into their new squares (the rows in ``created``). Crop mode clips boxes, or cuts
    off those outside; ``counts`` (when given) adds up ``carried``, ``clipped`` and ``cut_off``."""
    counts = Counter() if counts is None else counts
    if not len(ann) or not created:
        return ann
    parents = {r["parent_id"] for r in rows if r["sample_id"] in created}
    by_parent = {pid: g for pid, g in ann[ann["sample_id"].isin(parents)].groupby("sample_id")}
    extra = []
    for r in rows:
        if r["sample_id"] not in created or r["parent_id"] not in by_parent:
            continue
        g = by_parent[r["parent_id"]]
        plan = plan_from_transform(json.loads(r["transform"]))
        exact = plan.map_xyxy(g[["x1", "y1", "x2", "y2"]].to_numpy())
        moved, keep = plan.carry_boxes(g[["x1", "y1", "x2", "y2"]].to_numpy())
        counts["cut_off"] += int((~keep).sum())
        counts["clipped"] += int((keep & ~np.isclose(moved, exact).all(axis=1)).sum())
        counts["carried"] += int(keep.sum())
        part = g[keep].copy()
        part[["x1", "y1", "x2", "y2"]] = moved[keep]
        part["sample_id"] = r["sample_id"]
        extra.append(part)
    return pd.concat([ann, *extra], ignore_index=True) if extra else ann
