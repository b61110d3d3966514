"""``curate export``: write the kept rows as a dataset a trainer can read.

What an export guarantees (docs/formats.md has the per-format layouts):

- Only ``kept`` rows are written, by ``split``; rows without a split go to
  ``--default-split`` (``train``).
- Output file names are unique across the whole export, compared without case
  and without extension (YOLO and VOC pair files by stem): every name shared
  by two or more rows gets ``-<first 8 characters of sample_id>`` appended.
  Augmented copies made by ``curate balance`` are named ``<stem>-aug<k>``
  after the image they were made from.
- Images are placed by ``--link`` (copy, hardlink, symlink) when their bytes
  can be used as they are, and re-encoded upright otherwise
  (see :mod:`curate.formats.output`): boxes always match the pixels a
  consumer decodes, EXIF orientation included.
- Everything is written to a hidden staging folder next to ``--out``, read back
  with curate's own reader and compared with the kept rows (counts, splits,
  labels, boxes within 1e-6 of the image size; the displayed size of every
  re-encoded image, the byte count of every other; the sha256 of every image's
  bytes against the manifest, so a source changed since ingest is refused,
  naming ``curate ingest``), and only then renamed to ``--out``. A failed or
  interrupted (Ctrl-C, SIGTERM) export leaves nothing behind; a killed one
  never leaves ``--out`` missing for good (:func:`publish`, :func:`recover`).
- Every export holds ``.curate-export.json``. A non-empty ``--out`` is refused
  unless ``--overwrite``, which replaces only a curate export (``--force``:
  any folder); an ``--out`` that holds or lies in the workspace or a source is
  always refused (:func:`curate.paths.check_output`).
- The map from each written file back to its ``sample_id`` and source file is
  kept in ``WS/exports/`` (named in the run record).

The writing itself (plan, write, read-back, publish) lives a floor below, in
:mod:`curate.formats.publish`, which ``curate convert`` uses too; its names
are importable from here as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from curate.formats.publish import (  # noqa: F401  (importable from the stage as before)
    BOX_TOLERANCE_FRAC,
    CHANGED,
    MARKER_NAME,
    SPLIT_ORDER,
    ExportOptions,
    _release,
    boxes_match,
    check_options,
    check_target,
    content_changes,
    export_to,
    make_staging,
    output_rel_paths,
    plan_export,
    publish,
    recover,
    siblings,
    terminate_as_interrupt,
    unique_names,
    verify_export,
    write_dataset,
    write_marker,
    write_options,
    writer_for,
)
from curate.workspace import StageResult, Workspace, atomic_write_parquet, utc_now

# The manifest columns plan_export reads: `curate export --dry-run` reads only these from disk (docs/scale.md).
PLAN_COLUMNS = ["sample_id", "status", "path", "origin_path", "rel_path", "layout", "transform", "split", "label",
                "width", "height", "mode", "file_size", "sha256", "format", "exif_orientation"]


def dry_run_summary(plan: pd.DataFrame, boxes: pd.DataFrame, options: ExportOptions) -> dict[str, Any]:
    """What an export would write: images and boxes, per split and per action."""
    return {"dry_run": True, "format": options.format, "out": str(options.out), "images": len(plan),
            "boxes": len(boxes), "split": plan["split"].value_counts().sort_index().to_dict(),
            "action": plan["action"].value_counts().sort_index().to_dict()}


def export_dry_run(ws: Workspace, options: ExportOptions) -> dict[str, Any]:
    """Plan an export and count it, writing nothing: reads only :data:`PLAN_COLUMNS` of the manifest, so a
    large manifest in parts is never held whole (docs/scale.md#the-manifest-in-parts)."""
    check_options(options)
    plan, boxes = plan_export(ws.read_manifest(PLAN_COLUMNS), ws.read_annotations(), options.default_split)
    return dry_run_summary(plan, boxes, options)


def protected_paths(manifest: pd.DataFrame, ws: Workspace | None) -> list[Path]:
    """Folders an export must never replace: the workspace and every source root."""
    out = [ws.root] if ws is not None else []
    if ws is not None:
        from curate.workspace import load_sources

        out += [Path(s["path"]) for s in load_sources(ws).values()]
    return out


def export(manifest: pd.DataFrame, options: ExportOptions, *, ws: Workspace,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Export the kept rows of a workspace; see the module docstring.

    >>> ws.run_stage("export", export, ExportOptions("yolo", "out/yolo"))  # doctest: +SKIP
    """
    from curate.locate import require_files

    check_options(options)
    plan, boxes = plan_export(manifest, annotations, options.default_split)
    if options.dry_run:
        return StageResult(manifest, None, summary=dry_run_summary(plan, boxes, options), write=False)
    require_files(manifest[manifest["status"] == "kept"], ws.root)  # a moved source fails here, naming the fix
    summary = export_to(plan, boxes, options, protected_paths(manifest, ws),
                        marker={"workspace": str(ws.root), "export_id": f"{utc_now()}-{os.getpid()}"})
    files, classes = summary.pop("_files"), summary.pop("_classes")
    exports = ws.root / "exports"
    name = f"{utc_now().replace(':', '').replace('-', '').replace('.', '')}-{options.format}.parquet"
    mapping = pd.DataFrame({"sample_id": list(files), "file": list(files.values())})
    mapping = mapping.merge(plan[["sample_id", "origin_path", "action", "why"]], on="sample_id", how="left")
    import pyarrow as pa

    atomic_write_parquet(mapping, exports / name, pa.Schema.from_pandas(mapping, preserve_index=False))
    record = {"export": {"out": summary["out"], "format": options.format, "map": f"exports/{name}",
                         "classes": classes}}
    return StageResult(manifest, None, summary=summary, record=record)
