"""``curate ingest``: read sources into the workspace manifest.

Each source is read by a format reader (auto-detected or ``--layout``), every
file is probed once in a process pool (sha256, full decode at reduced scale,
EXIF-displayed size, perceptual hashes), and each file becomes one manifest
row, kept or dropped with a reason. Exact duplicates (same bytes) are marked
by :func:`curate.groups.mark_exact`.

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

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from curate.boxes import merge_duplicate_boxes
from curate.errors import OptionError, SourceError
from curate.formats import REGISTRY, detect
from curate.formats.base import Box, Entry, ReadOptions, ReadResult, canonical_split
from curate.groups import mark_exact
from curate.imageio import (
    INTRINSIC_REASONS,
    PROBE_COLUMNS,
    ProbeOptions,
    ProbeTask,
    _probe_task,
    threshold_reason,
)
from curate.parallel import DEFAULT_RETRIES, WorkerCrash
from curate.paths import check_source_place, confine
from curate.schema import ANNOTATION_COLUMNS, MANIFEST_ARROW, MANIFEST_COLUMNS, conform, empty_annotations
from curate.summary import summarize
from curate.workspace import (
    SOURCES_FILE,
    StageResult,
    Workspace,
    atomic_write_bytes,
    load_sources,
    sources_bytes,
)

PARTIAL_DIR = ".partial/ingest"


@dataclass
class SourceSpec:
    path: str | Path
    name: str | None = None
    layout: str = "auto"
    label: str | None = None
    # Pin every file of the source to this split (an official train/val/test release); "auto": the
    # source's own split folders, and forget an earlier pin; None: as the source was registered.
    split: str | None = None


@dataclass
class IngestOptions:
    sources: list[SourceSpec]
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    workers: int = 0  # 0: all cores
    follow_links: bool = False
    priority: list[str] | None = None  # source names, most trusted first
    progress: bool = False
    checkpoint_every: int = 500  # results between checkpoints
    # Mark byte-identical files as duplicates of one kept copy (moving their boxes to it). Off for
    # `curate convert`, which converts every copy.
    exact_duplicates: bool = True
    retries: int = DEFAULT_RETRIES  # tries again of a file whose worker process died, before worker_crashed
    task_timeout_s: float | None = None  # a file probed longer than this kills its worker (None: no limit)
    read_extra: dict[str, Any] = field(default_factory=dict)  # format-specific reader options
    engine: str | None = None  # per-image work on "local" or "ray" (None: $CURATE_ENGINE, else local)
    ray_address: str | None = None  # with engine "ray": a cluster to use (None: start a local one)


def sample_id_for(source: str, rel_path: str) -> str:
    """Stable id of an ingested row: same source name and path, same id."""
    return hashlib.sha1(f"{source}\0{rel_path}".encode()).hexdigest()[:16]


# -- sources -----------------------------------------------------------------

def _register_sources(ws: Workspace, specs: list[SourceSpec]
                      ) -> tuple[list[tuple[str, Path, SourceSpec]], dict[str, dict[str, Any]]]:
    """(name, path, spec) of each source of this run, and every source with them: nothing is written
    until the run succeeds, so a failed ingest records no source (issue 17)."""
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
                found=f"{name!r}, already used for {known[name]['path']}",
                hint=f"pass --source NAME for a new source; if {known[name]['path']} moved here, "
                     f"run `curate relocate {ws.root} --source {name}={path}`",
            )
        check_source_place(path, ws.root)
        pin = known.get(name, {}).get("split") if spec.split is None else canonical_split(spec.split)
        if spec.split not in (None, "auto") and pin is None:
            raise OptionError("", field="--split", expected="train, val, test or auto", found=spec.split)
        known[name] = {"path": str(path), "layout": spec.layout, "label": spec.label,
                       "order": known.get(name, {}).get("order", len(known)), "split": pin}
        resolved.append((name, path, replace(spec, split=pin)))
    return resolved, known


# A file with one of these suffixes, given as SOURCE, describes images: it is never ingested as one file.
ANNOTATION_SUFFIXES = (".json", ".xml", ".yaml", ".yml", ".csv", ".tsv", ".txt")


def read_source(path: Path, spec: SourceSpec, options: IngestOptions) -> tuple[str, ReadResult]:
    """(layout, what its reader found) for one source.

    A file given as the source is auto-detected like a folder (a COCO JSON, a
    VOC XML, a ``data.yaml``, a per-image JSON, a list); an annotation-like
    file that no format recognises is an error, and any other file is one
    image.
    """
    ropts = ReadOptions(label=spec.label, follow_links=options.follow_links, extra=dict(options.read_extra))
    if spec.layout == "auto":
        if path.is_file():
            try:
                fmt = detect(path)
            except SourceError:
                if path.suffix.lower() in ANNOTATION_SUFFIXES:
                    raise SourceError("", file=path, expected="a COCO JSON, a VOC XML, a YOLO data.yaml, a "
                                      "per-image JSON or a CSV/TXT list", found="a file no format recognises",
                                      hint="force a layout with --layout (and --json-mapping for per-image "
                                      "JSON)") from None
                return "file", ReadResult([Entry(str(path), path.name, label=spec.label)])
        else:
            fmt = detect(path)
    else:
        if spec.layout not in REGISTRY or REGISTRY[spec.layout].read is None:
            from curate.formats import readable_formats

            raise OptionError("", field="--layout", expected=f"one of {readable_formats()}", found=spec.layout)
        fmt = REGISTRY[spec.layout]
    assert fmt.read is not None  # checked above; a registry invariant, not user input
    result = fmt.read(path, ropts)
    if fmt.name in ("folder", "flat"):
        result.warnings += _annotation_files_hint(result.entries)
    return fmt.name, result


def _check_something_to_ingest(path: Path, layout: str, result: ReadResult) -> None:
    """A SourceError when a source yields nothing to ingest: an empty folder, a list without rows, or a
    list none of whose names is a file (a README given as a list). Exiting 0 on such a source hid the mistake."""
    if not result.entries:
        found = "an empty folder" if path.is_dir() else f"no image listed in it (read as {layout})"
        raise SourceError("", file=path, expected="at least one file to ingest", found=found,
                          hint="check the path, or force a layout with --layout")
    if layout == "csv" and all(e.reason == "missing_file" for e in result.entries):
        first = result.entries[0].rel_path
        raise SourceError("", file=path, field="file", expected="a list naming image files",
                          found=f"{len(result.entries)} names, none of them an existing file (first: {first!r})",
                          hint="names in a list are relative to its folder, or to --images-dir")


def _annotation_files_hint(entries: list[Entry]) -> list[str]:
    """A warning when an auto-detected class/flat folder holds JSON or XML files next to its images.

    They become rows dropped as ``not_an_image``, and their boxes are lost: the
    likely layout is a per-image annotation format, which the user must name.
    """
    found = [e.rel_path for e in entries if e.rel_path.lower().endswith((".json", ".xml"))]
    if not found:
        return []
    kind = "json --json-mapping FILE (per-image JSON boxes, docs/formats.md)" \
        if found[0].lower().endswith(".json") else "voc (Pascal VOC XML)"
    return [f"{len(found)} annotation-like files sit among the images (e.g. {found[0]}) and were read as "
            f"files, not as boxes: if they describe the images, ingest again with --layout {kind}"]


# -- probing -----------------------------------------------------------------

# What a probe returns, typed as in the manifest, plus whether it was reused.
_PROBE_FIELDS = ("path", "file_size", "mtime_ns", "sha256", *PROBE_COLUMNS)
_PROBE_SCHEMA = pa.schema([pa.field(c, MANIFEST_ARROW.field(c).type) for c in _PROBE_FIELDS]
                          + [pa.field("reused", pa.bool_())])


class _KnownCache:
    """Earlier probe results by path (manifest rows and checkpoint chunks), for
    :func:`curate.imageio.probe_file` to reuse.

    Kept as one object array per column, with a row's dict made only when its
    task is sent: a dict per cached path cost about 1 KB a row (issue 2).
    """

    def __init__(self, manifest: pd.DataFrame, ws: Workspace) -> None:
        frames = []
        origin = manifest[manifest["parent_id"].isna() & manifest["sha256"].notna()]
        if len(origin):
            frames.append(origin[list(_PROBE_FIELDS)])
        partial = ws.root / PARTIAL_DIR
        if partial.exists():
            for p in sorted(partial.glob("chunk-*.parquet")):
                try:
                    frames.append(pd.read_parquet(p)[list(_PROBE_FIELDS)])
                except Exception:  # a chunk cut by a kill is simply not used
                    continue
        self.columns: dict[str, np.ndarray] = {}
        self.row: dict[str, int] = {}
        if not frames:
            return
        df = pd.concat(frames, ignore_index=True).drop_duplicates("path", keep="last")
        # A cached too_small/bad_aspect/duplicate row decoded fine: its intrinsic reason is None.
        df["reason"] = df["reason"].where(df["reason"].isin(list(INTRINSIC_REASONS)), None)
        for c in _PROBE_FIELDS:
            s = df[c].astype(object)
            self.columns[c] = s.where(s.notna(), None).to_numpy(dtype=object)
        self.row = {p: i for i, p in enumerate(self.columns["path"])}

    def get(self, path: str) -> dict[str, Any] | None:
        i = self.row.get(path)
        return None if i is None else {c: v[i] for c, v in self.columns.items()}


class _ProbeJobs(Sequence[tuple[ProbeTask, ProbeOptions]]):
    """The pool's jobs, each made when the pool takes it, so that a re-run's
    cached rows stay columns until their turn."""

    def __init__(self, paths: list[str], cache: _KnownCache, options: ProbeOptions) -> None:
        self.paths, self.cache, self.options = paths, cache, options

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> tuple[ProbeTask, ProbeOptions]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[ProbeTask, ProbeOptions]]: ...

    def __getitem__(self, i: int | slice) -> tuple[ProbeTask, ProbeOptions] | list[tuple[ProbeTask, ProbeOptions]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        path = self.paths[i]
        return ProbeTask(path, self.cache.get(path)), self.options


class _ProbeResults:
    """Probe results as they stream in from the pool.

    Held as Arrow record batches, about 0.5 KB a row where a result dict took
    about 3 KB (issue 2: peak memory must stay flat; docs/benchmarks.md), and
    the freshly decoded ones written to ``WS/.partial/ingest/`` as they come,
    so that a killed run loses at most one batch.
    """

    def __init__(self, ws: Workspace, every: int) -> None:
        self.dir = ws.root / PARTIAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.pending: list[dict[str, Any]] = []
        self.batches: list[pa.RecordBatch] = []
        self.n = len(list(self.dir.glob("chunk-*.parquet")))
        self.last = time.monotonic()

    def add(self, result: dict[str, Any]) -> None:
        self.pending.append(result)
        if len(self.pending) >= self.every or time.monotonic() - self.last > 10:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        import pyarrow.parquet as pq

        batch = pa.RecordBatch.from_pylist(self.pending, schema=_PROBE_SCHEMA)
        fresh = batch.filter(pa.array([not r.get("reused") for r in self.pending]))
        if fresh.num_rows:  # reused results are in the manifest already
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_batches([fresh.select(list(_PROBE_FIELDS))]), sink, compression="zstd")
            atomic_write_bytes(self.dir / f"chunk-{self.n:06d}.parquet", sink.getvalue().to_pybytes())
            self.n += 1
        self.batches.append(batch)
        self.pending = []
        self.last = time.monotonic()

    def take_table(self) -> pa.Table:
        """All results as one table. This object lets go of them, so that the
        caller holds the only copy and can free it."""
        self.flush()
        table = pa.Table.from_batches(self.batches, schema=_PROBE_SCHEMA)
        self.batches = []
        return table


def _probe_crashed(job: tuple[ProbeTask, ProbeOptions], crash: WorkerCrash) -> dict[str, Any]:
    """The probe result of a file whose worker process died on it every time: dropped as ``worker_crashed``.

    Its bytes are not read here (this process must not decode it), so its
    sha256 stays null: a re-run then finds nothing to reuse and tries the file
    again, since a crash need not be the file's fault (a full disk, the
    out-of-memory killer, a decoder since fixed).

        >>> r = _probe_crashed((ProbeTask("/nonexistent.jpg"), ProbeOptions()), WorkerCrash("killed", 3))
        >>> r["reason"], r["sha256"], r["detail"]
        ('worker_crashed', None, 'killed (3 attempts)')
    """
    task, _ = job
    result: dict[str, Any] = {"path": task.path, "file_size": None, "mtime_ns": None, "sha256": None,
                              **dict.fromkeys(PROBE_COLUMNS), "reused": False}
    result.update(reason="worker_crashed", detail=crash.message())
    try:
        st = os.stat(task.path)
        result.update(file_size=st.st_size, mtime_ns=st.st_mtime_ns)
    except OSError:
        pass
    return result


def _probe(paths: list[str], cache: _KnownCache, options: IngestOptions, ws: Workspace) -> _ProbeResults:
    """Probe every path in the pool; one result per path, in completion order."""
    from curate.engine import stream_map

    results = _ProbeResults(ws, options.checkpoint_every)
    jobs = _ProbeJobs(paths, cache, options.probe)
    for r in stream_map(_probe_task, jobs, workers=options.workers, progress=options.progress, desc="ingest",
                        on_crash=_probe_crashed, retries=options.retries, task_timeout_s=options.task_timeout_s,
                        engine=options.engine, ray_address=options.ray_address):
        results.add(r)
    results.flush()
    return results


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


_ENTRY_COLUMNS = ("sample_id", "source", "path", "rel_path", "layout", "label", "split", "reason", "detail")


@dataclass
class _ReadRows:
    """What the readers found, as columns of the rows this run writes (one per
    sample_id, the first entry naming it), rather than an entry or dict per row."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _ENTRY_COLUMNS})
    boxed: list[tuple[int, Entry]] = field(default_factory=list)  # (row, entry) of probed entries with boxes
    to_probe: list[str] = field(default_factory=list)  # every entry not dropped by its reader, in read order
    classes: dict[str, list[str]] = field(default_factory=dict)  # class lists the formats declare, in order
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pinned: set[str] = field(default_factory=set)  # sample_ids whose split ingest --split set
    row_of: dict[str, int] = field(default_factory=dict)  # sample_id -> its row in columns
    source_problems: list[str] = field(default_factory=list)  # label and split conflicts inside a source

    def _report_repeat(self, name: str, sid: str, e: Entry) -> None:
        """A second entry for one file: a label or split that differs from the first is reported, never dropped
        silently (the first is kept). The same image in two splits is a leak the source already has."""
        row = self.row_of.get(sid)
        if row is None:
            return
        for what, first, again in (("label", self.columns["label"][row], e.label),
                                   ("split", self.columns["split"][row], e.split)):
            if first is not None and again is not None and first != again:
                kind = "label_conflict" if what == "label" else "split_leak"
                self.source_problems.append(f"{name}: {kind}: {e.rel_path} is given the {what}s {first!r} and "
                                            f"{again!r}; kept {first!r}")

    def add(self, name: str, layout: str, result: ReadResult, seen_ids: set[str], pin: str | None = None,
            roots: Sequence[str | Path] = (), follow_links: bool = False) -> None:
        """Add a source's entries; ``pin`` replaces every entry's split (``ingest --split``).

        Entries a reader took from an annotation file or list are confined to
        ``roots`` (:func:`curate.paths.confine`): one that resolves outside is
        dropped as ``outside_source``.
        """
        cols = self.columns
        for e in result.entries:
            if not result.walked and e.reason is None:
                e.path, reason, detail = confine(e.path, roots, follow_links=follow_links)
                if reason is not None:
                    e.reason, e.detail = reason, detail
            if pin is not None:
                e.split = pin
                self.pinned.add(sample_id_for(name, e.rel_path))
            if e.reason is None:
                self.to_probe.append(e.path)
            sid = sample_id_for(name, e.rel_path)
            if sid in seen_ids:  # e.g. a list naming one file twice: one row, the first entry's
                self._report_repeat(name, sid, e)
                continue
            seen_ids.add(sid)
            self.row_of[sid] = len(cols["sample_id"])
            if e.boxes and e.reason is None:
                self.boxed.append((len(cols["sample_id"]), e))
            for c, v in zip(_ENTRY_COLUMNS, (sid, name, e.path, e.rel_path, layout, e.label, e.split,
                                             e.reason, e.detail), strict=True):
                cols[c].append(v)


def _objects(values: Any) -> pd.Series:
    """A str column as Python objects. pandas 3 would infer its Arrow-backed
    ``str`` dtype, which :func:`curate.schema.conform` turns back into a new
    object per cell; built as objects, equal cells can share one."""
    return pd.Series(values, dtype=object)


def _new_rows(read: _ReadRows, results: _ProbeResults, opts: ProbeOptions
              ) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str], int]:
    """(rows of this run, their boxes, box problems, rows whose probe was reused)."""
    probed = results.take_table()
    cols = read.columns
    n = len(cols["sample_id"])
    # Each row takes the probe of its path (the last one, as a path listed twice
    # is probed twice); rows its reader dropped take none.
    last = probed.num_rows - 1
    at_backwards = pc.index_in(pa.array(cols["path"], pa.string()),
                               value_set=probed["path"].take(pa.array(np.arange(last, -1, -1))))
    at = pc.subtract(pa.scalar(last, at_backwards.type), at_backwards)
    at = pc.if_else(pa.array([r is None for r in cols["reason"]], pa.bool_()), at, pa.nulls(n, at.type))
    reused = int(pc.sum(probed["reused"].take(at)).as_py() or 0)
    probe = {c: probed[c].take(at).to_pylist() for c in _PROBE_FIELDS if c != "path"}  # the cells, as Python values
    del probed, at
    # Arrow's allocator keeps freed memory for reuse; hand the probe table's back.
    pa.default_memory_pool().release_unused()
    width, height = probe["width"], probe["height"]
    reason, detail = probe["reason"], probe["detail"]
    file_size, mtime_ns = probe["file_size"], probe["mtime_ns"]
    for i in range(n):
        if cols["reason"][i] is not None:  # decided by the reader, not probed
            reason[i], detail[i] = cols["reason"][i], cols["detail"][i]
            try:
                st = os.lstat(cols["path"][i])
                file_size[i], mtime_ns[i] = st.st_size, st.st_mtime_ns
            except OSError:
                pass
            continue
        r, d, w, h = reason[i], detail[i], width[i], height[i]
        if r is None:
            r, d = threshold_reason(w, h, opts)
        if r == "too_large" and w and h:
            d = f"{w}x{h} = {w * h} px > --max-pixels {opts.max_pixels}"
        reason[i], detail[i] = r, d

    ann_rows: list[dict[str, Any]] = []
    box_problems: list[str] = []
    orientation = probe["exif_orientation"]
    for i, e in read.boxed:
        where = f"{cols['source'][i]}/{e.rel_path}"
        if width[i] and height[i]:
            boxes, problems = clean_boxes(e.boxes, int(width[i]), int(height[i]), declared_wh=e.declared_wh,
                                          orientation=orientation[i])
            ann_rows += [{"sample_id": cols["sample_id"][i], "origin": cols["layout"][i], **b} for b in boxes]
            box_problems += [f"{where}: {msg}" for msg in problems]
        else:
            box_problems.append(f"{where}: {len(e.boxes)} boxes not imported: image is {reason[i]}")

    shared: dict[Any, Any] = {}  # one object per distinct value of the few-valued columns
    new = pd.DataFrame({
        **{c: _objects(cols[c]) for c in ("sample_id", "source", "path", "rel_path", "layout", "label", "split")},
        "origin_path": _objects(cols["path"]), "parent_id": _objects([None] * n),
        "label_origin": _objects(["source" if v is not None else None for v in cols["label"]]),
        "decided_by": _objects(["ingest"] * n), "duplicate_of": _objects([None] * n),
        "dup_group": _objects([None] * n), "label_conflict": np.zeros(n, dtype=bool),
        "transform": _objects([None] * n),
        "split_pinned": np.array([sid in read.pinned for sid in cols["sample_id"]], dtype=bool),
        "status": _objects(["dropped" if r else "kept" for r in reason]),
        "reason": _objects([shared.setdefault(v, v) for v in reason]), "detail": _objects(detail),
        "file_size": pd.array(file_size, dtype="Int64"), "mtime_ns": pd.array(mtime_ns, dtype="Int64"),
    })
    for c in ("sha256", *PROBE_COLUMNS):
        if c in ("reason", "detail"):
            continue
        values = probe.pop(c)
        if pa.types.is_string(_PROBE_SCHEMA.field(c).type):
            new[c] = _objects([shared.setdefault(v, v) for v in values] if c in ("format", "mode") else values)
        elif pa.types.is_integer(_PROBE_SCHEMA.field(c).type):
            new[c] = pd.array(values, dtype="Int64")
        else:
            new[c] = pd.Series(values, dtype="float64")
    return new, ann_rows, box_problems, reused


def ingest(manifest: pd.DataFrame, options: IngestOptions, *, ws: Workspace,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Add or refresh the rows of ``options.sources``; see the module docstring."""
    if not options.sources:
        raise OptionError("", field="SOURCE", expected="at least one source folder or file", found="none")
    t0 = time.perf_counter()
    sources, all_sources = _register_sources(ws, options.sources)
    if options.read_extra.get("images_dir"):  # read as a source is: it may not hold or lie in the workspace
        check_source_place(options.read_extra["images_dir"], ws.root)

    read = _ReadRows()
    seen_ids: set[str] = set()
    for name, path, spec in sources:
        layout, result = read_source(path, spec, options)
        _check_something_to_ingest(path, layout, result)
        if result.classes:
            read.classes[name] = result.classes
        read.warnings += [f"{name}: {w}" for w in result.warnings]
        read.skipped += [f"{name}: {s}" for s in result.skipped]
        roots = [path if path.is_dir() else path.parent, *([options.read_extra["images_dir"]]
                                                            if options.read_extra.get("images_dir") else [])]
        read.add(name, layout, result, seen_ids, pin=spec.split, roots=roots, follow_links=options.follow_links)
        del result

    n_tasks = len(read.to_probe)
    results = _probe(read.to_probe, _KnownCache(manifest, ws), options, ws)
    if seen_ids:
        new, ann_rows, box_problems, reused = _new_rows(read, results, options.probe)
        new = _carry_decisions(new, manifest)
    else:
        new, ann_rows, box_problems, reused = manifest.iloc[0:0], [], [], 0
    warnings, skipped, classes = read.warnings + read.source_problems, read.skipped, read.classes
    source_problems = read.source_problems
    del read

    touched = {n for n, _, _ in sources}
    keep_old = manifest[~manifest["sample_id"].isin(seen_ids)].copy() if len(manifest) else manifest
    vanished = keep_old["source"].isin(touched) & keep_old["parent_id"].isna() & (keep_old["reason"] != "missing_file")
    if vanished.any():
        keep_old.loc[vanished, ["status", "reason", "detail", "decided_by"]] = [
            "dropped", "missing_file", "no longer in the source", "ingest"]
    combined = conform(pd.concat([keep_old, new], ignore_index=True), MANIFEST_COLUMNS)
    del keep_old, new

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
    merged: dict[str, Any] = {"added": 0, "conflicts": [], "not_moved": []}
    if options.exact_duplicates:
        combined = mark_exact(combined, priority, annotated)
        ann, merged = merge_duplicate_boxes(combined, ann)
    rank = combined["source"].map({s: i for i, s in enumerate(order)}).fillna(len(order))
    combined = combined.assign(_r=rank, _d=combined["parent_id"].notna())
    combined = combined.sort_values(["_r", "rel_path", "_d", "sample_id"], kind="mergesort").drop(columns=["_r", "_d"])
    combined = combined.reset_index(drop=True)

    import shutil

    shutil.rmtree(ws.root / PARTIAL_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):  # .partial/ itself, when no other stage keeps checkpoints there
        (ws.root / PARTIAL_DIR).parent.rmdir()
    this_run = combined[combined["sample_id"].isin(seen_ids)]
    run = {
        "files": len(seen_ids),
        "probed": n_tasks - reused,
        "reused": reused,
        "new": int((~pd.Series(sorted(seen_ids)).isin(set(manifest["sample_id"]))).sum()) if len(manifest) else len(seen_ids),
        "kept": int((this_run["status"] == "kept").sum()),
        "dropped": int((this_run["status"] == "dropped").sum()),
        "vanished": int(vanished.sum()) if len(manifest) else 0,
        "seconds": round(time.perf_counter() - t0, 3),
        "boxes": len(ann_rows),
        "boxes_from_duplicates": merged["added"],
        "box_conflicts": len(merged["conflicts"]),
    }
    summary = {**summarize(combined), "run": run}
    box_problems += merged["conflicts"] + merged["not_moved"]
    if warnings or box_problems:
        summary["warnings"] = warnings + box_problems
    record = {"sources": {n: str(p) for n, p, _ in sources}, "skipped": skipped, "box_problems": box_problems,
              "classes": classes, "source_problems": source_problems}
    return StageResult(combined, ann, summary=summary, record=record, files={SOURCES_FILE: sources_bytes(all_sources)})


def ingest_into(root: str | Path, options: IngestOptions, *,
                record_options: dict[str, Any] | None = None) -> tuple[Workspace, StageResult]:
    """Create the workspace at ``root`` when it is new, and ingest ``options.sources`` into it.

    A failed first ingest (a bad ``--layout``, an unreadable list, any
    error) leaves nothing behind: the folders curate made are removed, and a
    folder that was there (empty) is emptied again. A failed later ingest
    leaves the workspace as it was: the tables and ``sources.json`` are
    written only when the run succeeds. An interrupted run (Ctrl-C, kill)
    keeps its checkpoints in ``.partial/``, so that running it again resumes.

        >>> import skimage, tempfile
        >>> root = Path(tempfile.mkdtemp()) / "new" / "ws"
        >>> opts = IngestOptions([SourceSpec(skimage.data_dir, layout="no-such-layout")], workers=1)
        >>> try:
        ...     ingest_into(root, opts)
        ... except OptionError:
        ...     pass
        >>> root.parent.exists()
        False
    """
    from curate.workspace import MARKER

    root = Path(root).expanduser().absolute()
    for spec in options.sources:  # before the workspace is made: nothing is ever written inside a source
        if Path(spec.path).expanduser().exists():
            check_source_place(spec.path, root)
    if options.read_extra.get("images_dir"):  # --images-dir is read as a source is
        check_source_place(options.read_extra["images_dir"], root)
    fresh = not (root / MARKER).exists()
    made = next((p for p in reversed([root, *root.parents]) if not p.exists()), None)  # the first folder curate makes
    ws = Workspace.create(root)
    try:
        return ws, ws.run_stage("ingest", ingest, options, record_options=record_options)
    except Exception:
        if fresh:
            _remove_new_workspace(root, made)
        raise


def _remove_new_workspace(root: Path, made: Path | None) -> None:
    """Undo :meth:`Workspace.create` of a first ingest: the folders it made, or what it put in an empty one."""
    import shutil

    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    for p in root.iterdir():  # the folder was empty before (create refuses any other)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _carry_decisions(new: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Keep decisions later stages or a person made on rows whose file is unchanged."""
    if not len(manifest):
        return new
    cols = ["sha256", "status", "reason", "detail", "duplicate_of", "dup_group", "label_conflict", "decided_by",
            "label", "label_origin", "split"]
    old = manifest.set_index("sample_id")[cols].reindex(new["sample_id"])
    old_sha = old["sha256"].to_numpy(dtype=object)
    same_file = pd.notna(old_sha) & (old_sha == new["sha256"].to_numpy(dtype=object))
    decided = same_file & old["decided_by"].notna().to_numpy() & (old["decided_by"] != "ingest").to_numpy()
    relabelled = same_file & old["label_origin"].notna().to_numpy() & (old["label_origin"] != "source").to_numpy()
    split_before = same_file & new["split"].isna().to_numpy() & old["split"].notna().to_numpy()
    for mask, names in ((decided, ("status", "reason", "detail", "duplicate_of", "dup_group", "decided_by")),
                        (relabelled, ("label", "label_origin")), (split_before, ("split",))):
        for c in names:
            if mask.any():
                new.loc[mask, c] = old[c].to_numpy(dtype=object)[mask]
    if decided.any():
        new.loc[decided, "label_conflict"] = old["label_conflict"].to_numpy()[decided].astype(bool)
    return new
