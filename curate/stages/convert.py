"""``curate convert``: one dataset format to another, without a user workspace.

The conversion is ``ingest`` followed by ``export``, run in a throwaway
workspace that lives inside the export's own staging folder (next to
``--out``), so nothing is written outside ``--out`` and a failed conversion
leaves nothing behind. It differs from ``ingest`` + ``export`` in what it
keeps:

- no image is dropped for its size or shape (``--min-side 1``, no aspect limit);
- byte-identical files are all converted (a conversion is not a clean-up);
- the probe skips the perceptual hashes, which only dedupe uses: every image
  is still decoded in full (at the smallest scale the codec offers), so
  truncated and unreadable files are still caught and every size is the
  EXIF-displayed one;
- the source's class list keeps its order (YOLO ``names``, COCO categories
  by id, VOC ``labelmap.txt``), so class ids only change where the target
  format demands it (COCO ids start at 1).

Files that cannot be converted (unreadable, missing, not images) are counted
by reason in the summary; box problems (clamped, dropped) are listed as
warnings.

    >>> ConvertOptions("coco_dir", "yolo", "out").from_format
    'auto'
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import ExportError, OptionError, SourceError
from curate.stages.export import (
    ExportOptions,
    _release,
    check_options,
    check_target,
    export_to,
    make_staging,
    plan_export,
    recover,
    terminate_as_interrupt,
)

CONVERT_WS = ".curate-convert-workspace"


@dataclass
class ConvertOptions:
    source: str | Path
    to_format: str
    out: str | Path
    from_format: str = "auto"
    overwrite: bool = False
    link: str = "copy"
    verify: bool = True
    default_split: str = "train"
    classes: list[str] | None = None  # default: the source's own class list
    split_dirs: bool = True
    voc_one_based: bool = False
    workers: int = 0
    read_extra: dict[str, Any] = field(default_factory=dict)  # json_mapping, images_dir, voc_one_based
    force: bool = False  # with overwrite: replace a non-empty --out that is not a curate export


def source_format(source: Path, name: str) -> str:
    """The reader to use for ``source``: ``name``, or the detected one for ``auto``."""
    from curate.formats import REGISTRY, detect, readable_formats

    if name == "auto":
        return detect(source).name
    if name not in REGISTRY or REGISTRY[name].read is None:
        raise OptionError("", field="--from", expected=f"auto or one of {readable_formats()}", found=repr(name))
    return name


def convert(options: ConvertOptions) -> dict[str, Any]:
    """Convert ``options.source`` to ``options.to_format`` at ``options.out``; return the summary."""
    from curate.imageio import ProbeOptions
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    source = Path(options.source).expanduser().absolute()
    if not source.exists():
        raise SourceError("", file=source, expected="an existing dataset folder or file", found="nothing there")
    out = Path(options.out).expanduser().absolute()
    eopts = ExportOptions(options.to_format, out, options.overwrite, options.link, options.verify,
                          options.default_split, options.classes, options.split_dirs, options.voc_one_based,
                          extra={"json_mapping": options.read_extra.get("json_mapping")}, force=options.force)
    check_options(eopts)
    layout = source_format(source, options.from_format)
    recovered = recover(out)
    check_target(out, options.overwrite, [source], force=options.force)
    staging, held = make_staging(out)
    with terminate_as_interrupt():  # SIGTERM during the read, too, removes the staging folder
        try:
            ws = Workspace.create(staging / CONVERT_WS)
            read_extra = {"voc_one_based": options.voc_one_based, **options.read_extra}
            iopts = IngestOptions([SourceSpec(source, name="source", layout=layout)],
                                  ProbeOptions(min_side_px=1, max_aspect=float("inf"), perceptual_hashes=False),
                                  workers=options.workers, read_extra=read_extra,
                                  # Checkpoints make a re-run of ingest resume; this workspace is gone
                                  # after the run, so fewer of them (each is an fsync'd Parquet file).
                                  checkpoint_every=5000, exact_duplicates=False)
            res = ws.run_stage("ingest", ingest, iopts)
            manifest = res.manifest
            annotations = res.annotations
            if eopts.classes is None:
                eopts.classes = (res.record.get("classes") or {}).get("source")
            shutil.rmtree(ws.root)
            dropped = manifest[manifest["status"] == "dropped"]
            if len(dropped) == len(manifest):
                reasons = ", ".join(f"{k} {v}" for k, v in dropped["reason"].value_counts().items())
                raise SourceError("", file=source, expected=f"at least one readable image in this {layout} dataset",
                                  found=f"none ({reasons or 'no files'})", hint="check --from and --images-dir")
            plan, boxes = plan_export(manifest, annotations, options.default_split)
            try:
                summary = export_to(plan, boxes, eopts, [source], staging=(staging, held),
                                    marker={"source": str(source), "from": layout})
            except ExportError as e:
                if e.field != "boxes":
                    raise
                # The advice of a workspace export (curate faces ...) does not apply here: say how the source was read.
                notes = manifest[manifest["rel_path"].str.lower().str.endswith((".json", ".xml"))]["rel_path"]
                hint = (f"{len(notes)} annotation-like files sit among the images (e.g. {notes.iloc[0]}): if they "
                        f"describe the images, convert with --from json --json-mapping FILE (or --from voc)"
                        if len(notes) else "name the source's format with --from, or convert to folder or yolo-cls")
                raise ExportError("", file=source, field="boxes", expected=e.expected,
                                  found=f"{e.found}: the source was read as {layout} and no box came with it",
                                  hint=hint) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            _release(held)
    summary.pop("_files")
    summary.pop("_classes")
    summary.pop("format")
    summary = {"from": layout, "to": options.to_format, **summary}
    if len(dropped):
        summary["not_converted"] = {str(k): int(v) for k, v in dropped["reason"].value_counts().items()}
    warnings = list(res.summary.get("warnings", [])) + list(summary.pop("warnings", []))
    if warnings:
        summary["warnings"] = warnings
    if recovered:
        summary["recovered"] = recovered
    return summary
