"""``curate ingest``: read sources into the workspace manifest.

Each source is read by a format reader (auto-detected or ``--layout``), every
file is probed once in a process pool (sha256, full decode at reduced scale,
EXIF-displayed size, perceptual hashes), and each file becomes one manifest
row, kept or dropped with a reason. Exact duplicates (same bytes) are marked
by :func:`curate.stages.dedupe.mark_exact`.

Resumable: probe results are checkpointed to ``WS/.partial/`` while the pool
runs, and files whose size and sha256 match an earlier result are not decoded
again. A run killed at any point and started again gives the same manifest as
one uninterrupted run.

    >>> import skimage, tempfile
    >>> from curate.workspace import Workspace
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> opts = IngestOptions([SourceSpec(skimage.data_dir, name="sk", layout="flat")], workers=1)
    >>> res = ws.run_stage("ingest", ingest, opts)
    >>> res.summary["run"]["files"] > 10
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import OptionError, SourceError
from curate.formats import REGISTRY, detect
from curate.formats.base import Box, Entry, ReadOptions, ReadResult
from curate.imageio import (
    INTRINSIC_REASONS,
    PROBE_COLUMNS,
    ProbeOptions,
    ProbeTask,
    _probe_task,
    threshold_reason,
)
from curate.schema import ANNOTATION_COLUMNS, MANIFEST_COLUMNS, conform, empty_annotations
from curate.stages.dedupe import mark_exact
from curate.summary import summarize
from curate.workspace import StageResult, Workspace, atomic_write_bytes, atomic_write_parquet

PARTIAL_DIR = ".partial/ingest"
SOURCES_FILE = "sources.json"


@dataclass
class SourceSpec:
    path: str | Path
    name: str | None = None
    layout: str = "auto"
    label: str | None = None


@dataclass
class IngestOptions:
    sources: list[SourceSpec]
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    workers: int = 0  # 0: all cores
    follow_links: bool = False
    priority: list[str] | None = None  # source names, most trusted first
    progress: bool = False
    checkpoint_every: int = 500  # results between checkpoints
    read_extra: dict[str, Any] = field(default_factory=dict)  # format-specific reader options


def sample_id_for(source: str, rel_path: str) -> str:
    """Stable id of an ingested row: same source name and path, same id."""
    return hashlib.sha1(f"{source}\0{rel_path}".encode()).hexdigest()[:16]


# -- sources -----------------------------------------------------------------

def load_sources(ws: Workspace) -> dict[str, dict[str, Any]]:
    p = ws.root / SOURCES_FILE
    if not p.exists():
        return {}
    return dict(json.loads(p.read_text()))


def _register_sources(ws: Workspace, specs: list[SourceSpec]) -> list[tuple[str, Path, SourceSpec]]:
    known = load_sources(ws)
    resolved: list[tuple[str, Path, SourceSpec]] = []
    seen: set[str] = set()
    for spec in specs:
        path = Path(spec.path).expanduser().absolute()
        if not path.exists():
            raise SourceError("", file=path, expected="an existing folder or file", found="nothing there")
        name = spec.name or (path.name if path.is_dir() else path.stem) or "source"
        if name in seen:
            raise SourceError(f"source name {name!r} given twice in one run", file=path,
                              hint="name each source with --source NAME")
        seen.add(name)
        if name in known and Path(known[name]["path"]) != path:
            raise SourceError(
                "", file=path, field="source name", expected="a new name or the same folder as before",
                found=f"{name!r}, already used for {known[name]['path']}", hint="pass --source NAME",
            )
        ws_real = os.path.realpath(ws.root)
        if os.path.realpath(path) == ws_real or os.path.realpath(path).startswith(ws_real + os.sep):
            raise SourceError("", file=path, expected="a source outside the workspace", found="the workspace itself")
        known[name] = {"path": str(path), "layout": spec.layout, "label": spec.label,
                       "order": known.get(name, {}).get("order", len(known))}
        resolved.append((name, path, spec))
    atomic_write_bytes(ws.root / SOURCES_FILE, (json.dumps(known, indent=2) + "\n").encode())
    return resolved


def read_source(path: Path, spec: SourceSpec, options: IngestOptions) -> tuple[str, ReadResult]:
    ropts = ReadOptions(label=spec.label, follow_links=options.follow_links, extra=dict(options.read_extra))
    if spec.layout == "auto":
        if path.is_file() and not REGISTRY["csv"].detect(path):  # type: ignore[misc]
            return "file", ReadResult([Entry(str(path), path.name, label=spec.label)])
        fmt = detect(path)
    else:
        if spec.layout not in REGISTRY or REGISTRY[spec.layout].read is None:
            from curate.formats import readable_formats

            raise OptionError("", field="--layout", expected=f"one of {readable_formats()}", found=spec.layout)
        fmt = REGISTRY[spec.layout]
    assert fmt.read is not None  # checked above; a registry invariant, not user input
    return fmt.name, fmt.read(path, ropts)


# -- probing -----------------------------------------------------------------

def _known_cache(manifest: pd.DataFrame, ws: Workspace) -> dict[str, dict[str, Any]]:
    cols = ["path", "file_size", "mtime_ns", "sha256", *PROBE_COLUMNS]
    frames = []
    origin = manifest[manifest["parent_id"].isna() & manifest["sha256"].notna()]
    if len(origin):
        frames.append(origin[cols])
    partial = ws.root / PARTIAL_DIR
    if partial.exists():
        for p in sorted(partial.glob("chunk-*.parquet")):
            try:
                frames.append(pd.read_parquet(p)[cols])
            except Exception:  # a chunk cut by a kill is simply not used
                continue
    if not frames:
        return {}
    df = pd.concat(frames, ignore_index=True).drop_duplicates("path", keep="last")
    df = df.astype(object).where(df.notna(), None)
    # A cached too_small/bad_aspect/duplicate row decoded fine: its intrinsic reason is None.
    df["reason"] = df["reason"].where(df["reason"].isin(list(INTRINSIC_REASONS)), None)
    return {r["path"]: r for r in df.to_dict("records")}


class _Checkpointer:
    def __init__(self, ws: Workspace, every: int) -> None:
        self.dir = ws.root / PARTIAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.pending: list[dict[str, Any]] = []
        self.n = len(list(self.dir.glob("chunk-*.parquet")))
        self.last = time.monotonic()

    def add(self, result: dict[str, Any]) -> None:
        if result.get("reused"):
            return
        self.pending.append(result)
        if len(self.pending) >= self.every or time.monotonic() - self.last > 10:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        df = pd.DataFrame(self.pending).drop(columns=["reused"], errors="ignore")
        for c in ("file_size", "mtime_ns", "n_frames", "exif_orientation", "width", "height", "hash_version"):
            if c in df:
                df[c] = pd.array(df[c], dtype="Int64")
        import pyarrow as pa

        schema = pa.Schema.from_pandas(df, preserve_index=False)
        atomic_write_parquet(df, self.dir / f"chunk-{self.n:06d}.parquet", schema)
        self.n += 1
        self.pending = []
        self.last = time.monotonic()


def _run_probes(tasks: list[ProbeTask], options: IngestOptions, ckpt: _Checkpointer) -> Iterator[dict[str, Any]]:
    from curate.parallel import stream_map

    jobs = [(t, options.probe) for t in tasks]
    for r in stream_map(_probe_task, jobs, workers=options.workers, progress=options.progress, desc="ingest"):
        ckpt.add(r)
        yield r


# -- rows --------------------------------------------------------------------

def stored_to_displayed_xyxy(xyxy: tuple[float, float, float, float], stored_wh: tuple[int, int],
                             orientation: int | None) -> tuple[float, float, float, float]:
    """A pixel box drawn on the *stored* pixels of an image with this EXIF
    orientation -> the same box on the displayed image (what
    :func:`curate.imageio.load_display` returns). Same table as Pillow's
    ``ImageOps.exif_transpose``.

    >>> stored_to_displayed_xyxy((0, 0, 10, 20), (100, 50), 6)  # 100x50 stored, shown 50x100
    (30.0, 0.0, 50.0, 10.0)
    """
    w, h = stored_wh
    x1, y1, x2, y2 = (float(v) for v in xyxy)

    def point(x: float, y: float) -> tuple[float, float]:
        return {2: (w - x, y), 3: (w - x, h - y), 4: (x, h - y), 5: (y, x),
                6: (h - y, x), 7: (h - y, w - x), 8: (y, w - x)}.get(orientation or 1, (x, y))

    (ax, ay), (bx, by) = point(x1, y1), point(x2, y2)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def clean_boxes(boxes: list[Box], width: int, height: int, *, declared_wh: tuple[int, int] | None = None,
                orientation: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Boxes in pixels of the displayed image, clamped; (rows, problems).

    A box partly outside the image is clamped (and reported); a box with zero
    area or wholly outside is dropped (and reported).

    ``declared_wh`` is the size the annotation file states. Equal to the
    displayed ``width x height``: the boxes are in the displayed frame. Equal to
    the stored size of an image whose EXIF orientation (5-8) swaps the axes:
    they were drawn on the stored pixels and are turned into the displayed
    frame. Anything else is reported, and the boxes are taken as given.
    """
    rows, problems = [], []
    stored_wh = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    to_display = False
    if declared_wh is not None and tuple(declared_wh) != (width, height):
        if tuple(declared_wh) == stored_wh:
            to_display = True
            problems.append(f"boxes were drawn on the stored {stored_wh[0]}x{stored_wh[1]} pixels; turned into the "
                            f"displayed {width}x{height} frame (EXIF orientation {orientation})")
        else:
            problems.append(f"annotation states {declared_wh[0]}x{declared_wh[1]} but the image is {width}x{height} "
                            "as displayed; boxes taken as given")
    for b in boxes:
        x1, y1, x2, y2 = b.x1, b.y1, b.x2, b.y2
        if b.normalized:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        elif to_display:
            x1, y1, x2, y2 = stored_to_displayed_xyxy((x1, y1, x2, y2), stored_wh, orientation)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):  # NaN/inf would survive min/max "clamping"
            problems.append(f"box {b.label} [{x1:g},{y1:g},{x2:g},{y2:g}] has a coordinate that is not a number: "
                            "dropped")
            continue
        if x2 < x1:
            x1, x2 = x2, x1
        if y2 < y1:
            y1, y2 = y2, y1
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            problems.append(f"box {b.label} [{x1:g},{y1:g},{x2:g},{y2:g}] lies outside the {width}x{height} image: dropped")
            continue
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            problems.append(f"box {b.label} [{x1:g},{y1:g},{x2:g},{y2:g}] clamped to the {width}x{height} image")
        if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
            problems.append(f"box {b.label} [{x1:g},{y1:g},{x2:g},{y2:g}] has zero area: dropped")
            continue
        rows.append({"label": b.label, "x1": cx1, "y1": cy1, "x2": cx2, "y2": cy2,
                     "score": b.score, "iscrowd": b.iscrowd})
    return rows, problems


def ingest(manifest: pd.DataFrame, options: IngestOptions, *, ws: Workspace,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Add or refresh the rows of ``options.sources``; see the module docstring."""
    if not options.sources:
        raise OptionError("", field="SOURCE", expected="at least one source folder or file", found="none")
    t0 = time.perf_counter()
    sources = _register_sources(ws, options.sources)
    all_sources = load_sources(ws)
    existing = manifest.set_index("sample_id", drop=False) if len(manifest) else manifest
    cache = _known_cache(manifest, ws)

    read: list[tuple[str, str, Entry]] = []  # (source, layout, entry)
    classes: dict[str, list[str]] = {}  # class lists the formats declare, in their order
    warnings: list[str] = []
    skipped: list[str] = []
    for name, path, spec in sources:
        layout, result = read_source(path, spec, options)
        if result.classes:
            classes[name] = result.classes
        warnings += [f"{name}: {w}" for w in result.warnings]
        skipped += [f"{name}: {s}" for s in result.skipped]
        read += [(name, layout, e) for e in result.entries]

    tasks = [ProbeTask(e.path, cache.get(e.path)) for _, _, e in read if e.reason is None]
    ckpt = _Checkpointer(ws, options.checkpoint_every)
    probed: dict[str, dict[str, Any]] = {}
    for r in _run_probes(tasks, options, ckpt):
        probed[r["path"]] = r
    ckpt.flush()

    rows, ann_rows, box_problems = [], [], []
    reused = 0
    seen_ids: set[str] = set()
    for name, layout, e in read:
        sid = sample_id_for(name, e.rel_path)
        if sid in seen_ids:  # e.g. a list naming one file twice: one row
            continue
        seen_ids.add(sid)
        row: dict[str, Any] = {
            "sample_id": sid, "source": name, "path": e.path, "origin_path": e.path, "parent_id": None,
            "rel_path": e.rel_path, "layout": layout, "label": e.label,
            "label_origin": "source" if e.label is not None else None,
            "split": e.split, "decided_by": "ingest", "duplicate_of": None, "dup_group": None,
            "label_conflict": False, "transform": None,
        }
        if e.reason is not None:
            row.update(status="dropped", reason=e.reason, detail=e.detail)
            try:
                st = os.lstat(e.path)
                row.update(file_size=st.st_size, mtime_ns=st.st_mtime_ns)
            except OSError:
                pass
        else:
            p = probed[e.path]
            reused += bool(p.get("reused"))
            row.update({k: p.get(k) for k in ("file_size", "mtime_ns", "sha256", *PROBE_COLUMNS)})
            reason, detail = p.get("reason"), p.get("detail")
            if reason is None:
                reason, detail = threshold_reason(p.get("width"), p.get("height"), options.probe)
            if reason == "too_large" and p.get("width") and p.get("height"):
                w, h = p["width"], p["height"]
                detail = f"{w}x{h} = {w * h} px > --max-pixels {options.probe.max_pixels}"
            row.update(status="dropped" if reason else "kept", reason=reason, detail=detail)
            if e.boxes and p.get("width") and p.get("height"):
                boxes, problems = clean_boxes(e.boxes, int(p["width"]), int(p["height"]),
                                              declared_wh=e.declared_wh, orientation=p.get("exif_orientation"))
                ann_rows += [{"sample_id": sid, "origin": layout, **b} for b in boxes]
                box_problems += [f"{name}/{e.rel_path}: {msg}" for msg in problems]
            elif e.boxes:
                box_problems.append(f"{name}/{e.rel_path}: {len(e.boxes)} boxes not imported: image is {row['reason']}")
        _carry_decisions(row, existing)
        rows.append(row)

    new = pd.DataFrame(rows) if rows else manifest.iloc[0:0]
    touched = {n for n, _, _ in sources}
    keep_old = manifest[~manifest["sample_id"].isin(seen_ids)].copy() if len(manifest) else manifest
    vanished = keep_old["source"].isin(touched) & keep_old["parent_id"].isna() & (keep_old["reason"] != "missing_file")
    if vanished.any():
        keep_old.loc[vanished, ["status", "reason", "detail", "decided_by"]] = [
            "dropped", "missing_file", "no longer in the source", "ingest"]
    combined = conform(pd.concat([keep_old, new], ignore_index=True), MANIFEST_COLUMNS)

    annotated: set[str] = set()
    ann = annotations if annotations is not None else empty_annotations()
    if len(ann):
        replaced = ann["sample_id"].isin(seen_ids)
        ann = ann[~replaced]
    if ann_rows:
        ann = pd.concat([ann, pd.DataFrame(ann_rows)], ignore_index=True)
    ann = conform(ann, ANNOTATION_COLUMNS)
    annotated = set(ann["sample_id"])

    order = sorted(all_sources, key=lambda s: all_sources[s].get("order", 0))
    priority = list(options.priority or []) + order
    combined = mark_exact(combined, priority, annotated)
    rank = combined["source"].map({s: i for i, s in enumerate(order)}).fillna(len(order))
    combined = combined.assign(_r=rank, _d=combined["parent_id"].notna())
    combined = combined.sort_values(["_r", "rel_path", "_d", "sample_id"], kind="mergesort").drop(columns=["_r", "_d"])
    combined = combined.reset_index(drop=True)

    import shutil

    shutil.rmtree(ws.root / PARTIAL_DIR, ignore_errors=True)
    this_run = combined[combined["sample_id"].isin(seen_ids)]
    run = {
        "files": len(seen_ids),
        "probed": len(tasks) - reused,
        "reused": reused,
        "new": int((~pd.Series(sorted(seen_ids)).isin(set(manifest["sample_id"]))).sum()) if len(manifest) else len(seen_ids),
        "kept": int((this_run["status"] == "kept").sum()),
        "dropped": int((this_run["status"] == "dropped").sum()),
        "vanished": int(vanished.sum()) if len(manifest) else 0,
        "seconds": round(time.perf_counter() - t0, 3),
        "boxes": len(ann_rows),
    }
    summary = {**summarize(combined), "run": run}
    if warnings or box_problems:
        summary["warnings"] = warnings + box_problems
    record = {"sources": {n: str(p) for n, p, _ in sources}, "skipped": skipped, "box_problems": box_problems,
              "classes": classes}
    return StageResult(combined, ann, summary=summary, record=record)


def _carry_decisions(row: dict[str, Any], existing: pd.DataFrame) -> None:
    """Keep decisions later stages or a person made on a row whose file is unchanged."""
    if not len(existing) or row["sample_id"] not in existing.index:
        return
    old = existing.loc[row["sample_id"]]
    same_file = old["sha256"] == row.get("sha256") and old["sha256"] is not None
    if not same_file:
        return
    if old["decided_by"] not in (None, "ingest") and not pd.isna(old["decided_by"]):
        for k in ("status", "reason", "detail", "duplicate_of", "dup_group", "label_conflict", "decided_by"):
            row[k] = old[k]
    if old.get("label_origin") not in (None, "source") and not pd.isna(old.get("label_origin")):
        row["label"], row["label_origin"] = old["label"], old["label_origin"]
    if row.get("split") is None and old["split"] is not None and not pd.isna(old["split"]):
        row["split"] = old["split"]
