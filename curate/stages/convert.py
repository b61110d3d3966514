"""``curate convert``: one dataset format to another, without a workspace.

The conversion reads the source with its format's reader and probes every
file it names, with ingest's own read-and-probe step
(:func:`curate.formats.source.read_and_probe`), then writes, verifies and
publishes the rows as ``export`` does (:func:`curate.formats.publish.export_to`):
both live a floor below the stages, so convert imports no other stage.
Nothing is written outside ``--out``: there is no workspace, the probe keeps
no checkpoints, and the export is staged next to ``--out`` and renamed, so a
failed conversion leaves nothing behind. It differs from ``ingest`` +
``export`` in what it keeps:

- no image is dropped for its size or shape (``--min-side 1``, no aspect limit);
- byte-identical files are all converted (a conversion is not a clean-up:
  duplicates are never marked);
- the probe skips the perceptual hashes, which only dedupe uses: every image
  is still decoded in full (at the smallest scale the codec offers), so
  truncated and unreadable files are still caught and every size is the
  EXIF-displayed one;
- the source's class list keeps its order (YOLO ``names``, COCO categories
  by id, VOC ``labelmap.txt``), so class ids only change where the target
  format demands it (COCO ids start at 1).

Files that cannot be converted (unreadable, missing, not images) are counted
by reason in the summary; box problems (clamped, dropped) are listed as
warnings. The format options (``--voc-one-based``, ``--json-mapping``,
``--no-split-dirs``) are the ones the two formats declare
(:attr:`curate.formats.base.Format.options`).

    >>> ConvertOptions("coco_dir", "yolo", "out").from_format
    'auto'
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.errors import ExportError, OptionError, SourceError
from curate.formats.publish import ExportOptions, check_options, check_target, export_to, plan_export, recover

SOURCE_NAME = "source"  # the one source's name: sample ids (and so name suffixes) are made from it


@dataclass(frozen=True)
class ConvertOptions:
    """What to convert, to which format, and where; every option after those three is keyword-only.

    ``format_options`` are the options the two formats declare (``{"voc_one_based": True}``, ...): each is
    passed to the reader and the writer that take it.
    """

    source: str | Path
    to_format: str
    out: str | Path
    _: KW_ONLY
    from_format: str = "auto"
    overwrite: bool = False
    force: bool = False  # with overwrite: replace a non-empty --out that is not a curate export
    link: str = "copy"
    verify: bool = True
    default_split: str = "train"
    classes: list[str] | None = None  # default: the source's own class list
    images_dir: str | Path | None = None  # where the source's image names are relative to, when not beside it
    workers: int = 0
    format_options: dict[str, Any] = field(default_factory=dict)


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
    import pandas as pd

    from curate.formats import check_format_options, options_for
    from curate.formats.source import IngestOptions, SourceSpec, read_and_probe
    from curate.imageio import ProbeOptions
    from curate.schema import ANNOTATION_COLUMNS, MANIFEST_COLUMNS, conform, empty_annotations

    source = Path(options.source).expanduser().absolute()
    if not source.exists():
        raise SourceError("", file=source, expected="an existing dataset folder or file", found="nothing there")
    out = Path(options.out).expanduser().absolute()
    write_extra = {k: v for k, v in options.format_options.items()
                   if (o := _declared(options.to_format, k)) is not None and o.write}
    eopts = ExportOptions(options.to_format, out, overwrite=options.overwrite, force=options.force,
                          link=options.link, verify=options.verify, default_split=options.default_split,
                          classes=options.classes, format_options=write_extra)
    check_options(eopts)
    layout = source_format(source, options.from_format)
    recovered = recover(out)  # before the read: a refused --out fails at once
    check_target(out, options.overwrite, [source], force=options.force)
    check_format_options(options.format_options, read=layout, write=options.to_format)
    read_extra: dict[str, Any] = options_for(layout, "read", options.format_options)
    if options.images_dir is not None:
        read_extra["images_dir"] = options.images_dir
    iopts = IngestOptions([SourceSpec(source, name=SOURCE_NAME, layout=layout)],
                          probe=ProbeOptions(min_side_px=1, max_aspect=float("inf"), perceptual_hashes=False),
                          workers=options.workers, read_extra=read_extra, checkpoint_every=5000,
                          exact_duplicates=False)
    # Read and probe before anything is made next to --out: a source that cannot be read leaves nothing.
    probed = read_and_probe([(SOURCE_NAME, source, iopts.sources[0])], iopts)
    manifest = conform(probed.rows if probed.rows is not None else pd.DataFrame(), MANIFEST_COLUMNS)
    annotations = conform(pd.concat([empty_annotations(), pd.DataFrame(probed.annotations)], ignore_index=True)
                          if probed.annotations else empty_annotations(), ANNOTATION_COLUMNS)
    if eopts.classes is None:
        eopts = replace(eopts, classes=probed.classes.get(SOURCE_NAME))
    dropped = manifest[manifest["status"] == "dropped"]
    if len(dropped) == len(manifest):
        reasons = ", ".join(f"{k} {v}" for k, v in dropped["reason"].value_counts().items())
        raise SourceError("", file=source, expected=f"at least one readable image in this {layout} dataset",
                          found=f"none ({reasons or 'no files'})", hint="check --from and --images-dir")
    plan, boxes = plan_export(manifest, annotations, options.default_split)
    try:
        summary = export_to(plan, boxes, eopts, [source], marker={"source": str(source), "from": layout})
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
    summary.pop("_files")
    summary.pop("_classes")
    summary.pop("format")
    recovered += summary.pop("recovered", [])
    summary = {"from": layout, "to": options.to_format, **summary}
    if len(dropped):
        summary["not_converted"] = {str(k): int(v) for k, v in dropped["reason"].value_counts().items()}
    warnings = probed.warnings + probed.box_problems + list(summary.pop("warnings", []))
    if warnings:
        summary["warnings"] = warnings
    if recovered:
        summary["recovered"] = recovered
    return summary


def _declared(fmt: str, key: str) -> Any:
    from curate.formats import REGISTRY

    return REGISTRY[fmt].option(key) if fmt in REGISTRY else None
