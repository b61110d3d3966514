"""The ``curate`` command line. Each command is a thin shell over one library
function: parse options, call it, print a summary. Only curate's own errors
become a one-line message and a non-zero exit; anything else is a bug and
keeps its traceback.

Heavy libraries (mediapipe, fiftyone, torch) are imported inside the
functions that need them, so ``curate --help`` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from curate import __version__
from curate.console import emit
from curate.errors import CurateError

F = TypeVar("F", bound=Callable[..., Any])


class CurateGroup(click.Group):
    """Turns :class:`CurateError` into ``Error: <message>`` and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CurateError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


def workspace_argument(f: F) -> F:
    return click.argument("workspace", type=click.Path(file_okay=False, path_type=Path))(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")(f)


def workers_option(f: F) -> F:
    return click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Worker processes for per-image work (0 = all cores).")(f)


def _label_map_options(f: F) -> F:
    f = click.option("--map", "maps", multiple=True, metavar="OLD=NEW",
                     help="Rename class OLD to NEW (merges it into NEW when NEW exists); repeat for more.")(f)
    return click.option("--label-map", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                        help="Label map file: YAML `old: new` lines, or a CSV with two columns old,new.")(f)


def _label_map(path: Path | None, maps: tuple[str, ...]) -> dict[str, str]:
    from curate.labelmap import parse_pairs, read_map_file

    out = read_map_file(path) if path else {}
    for old, new in parse_pairs(maps).items():
        if out.get(old, new) != new:
            raise click.BadParameter(f"{old!r} is mapped to {out[old]!r} in {path} and to {new!r} here",
                                     param_hint="--map")
        out[old] = new
    return out


def engine_options(f: F) -> F:
    """``--engine`` and ``--ray-address``: where the per-image work runs (docs/scale.md)."""
    f = click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="With --engine ray: the Ray cluster to use, e.g. HEAD:6379 or auto (default: $RAY_ADDRESS, "
                          "else a local cluster started and stopped for the command).")(f)
    return click.option("--engine", type=click.Choice(["local", "ray"]), default=None, envvar="CURATE_ENGINE",
                        help="Run the per-image work in curate's local process pool or on Ray Data  "
                             "[default: $CURATE_ENGINE, else local]")(f)


def _open_ws(path: Path):  # type: ignore[no-untyped-def]
    from curate.workspace import Workspace

    return Workspace.open(path)


@click.group(cls=CurateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curate")
def cli() -> None:
    """Turn messy image collections into clean, balanced, correctly labelled datasets.

    Every command takes a workspace folder; sources are never modified.
    """


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--into", "workspace", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Workspace folder (created if new).")
@click.option("--source", "names", multiple=True, help="Name for each SOURCE, in order (default: folder name).")
@click.option("--layout", default="auto", show_default=True,
              help="Force a layout/format for every SOURCE: auto, folder, flat, csv, or a format name.")
@click.option("--label", default=None, help="One label for every file of a flat source.")
@click.option("--split", "splits", multiple=True,
              help="Pin each SOURCE, in order, to a split: train, val, test (an official release), or auto.")
@click.option("--min-side", "min_side_px", type=click.IntRange(min=1), default=64, show_default=True,
              help="Drop images whose shorter side is below this many pixels (too_small).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=178_956_970, show_default=True,
              help="Drop images with more pixels than this, without decoding them (too_large).")
@click.option("--max-aspect", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Drop images whose long/short side ratio is above this (bad_aspect).")
@click.option("--max-file-mb", type=click.FloatRange(min=0, min_open=True), default=2048, show_default=True,
              help="Drop files larger than this many MiB without reading them (too_large).")
@click.option("--priority", default=None, help="Comma-separated source names, most trusted first, for keeping duplicates.")
@click.option("--follow-links", is_flag=True, help="Follow symbolic links that point outside a source.")
@click.option("--images-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder that a CSV/TXT list's file names are relative to (default: the list's folder).")
@click.option("--json-mapping", default=None, help="Field mapping for per-image JSON box files (file or name in schemas/).")
@_label_map_options
@workers_option
@engine_options
@json_option
def ingest(sources: tuple[Path, ...], workspace: Path, names: tuple[str, ...], layout: str, label: str | None,
           splits: tuple[str, ...], min_side_px: int, max_pixels: int, max_aspect: float, max_file_mb: float,
           priority: str | None, follow_links: bool, images_dir: Path | None, json_mapping: str | None,
           label_map: Path | None, maps: tuple[str, ...], workers: int, engine: str | None, ray_address: str | None,
           as_json: bool) -> None:
    """Read SOURCE folders or lists into a workspace, one manifest row per file."""
    from curate.imageio import ProbeOptions
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest_into

    for opt, given in (("--source", names), ("--split", splits)):
        if len(given) > len(sources):
            raise click.BadParameter(f"{len(given)} values for {len(sources)} sources", param_hint=opt)
    specs = [SourceSpec(p, names[i] if i < len(names) else None, layout, label,
                        splits[i] if i < len(splits) else None) for i, p in enumerate(sources)]
    extra = {k: v for k, v in {"images_dir": images_dir, "json_mapping": json_mapping}.items() if v is not None}
    probe = ProbeOptions(min_side_px=min_side_px, max_pixels=max_pixels, max_aspect=max_aspect,
                         max_file_bytes=int(max_file_mb * 2**20))
    opts = IngestOptions(specs, probe=probe, workers=workers, follow_links=follow_links,
                         priority=priority.split(",") if priority else None,
                         progress=sys.stderr.isatty() and not as_json, read_extra=extra,
                         label_map=_label_map(label_map, maps), engine=engine, ray_address=ray_address)
    ws, result = ingest_into(workspace, opts, record_options={
        "label_map": str(label_map) if label_map else None, "map": list(maps),
        "sources": [str(s) for s in sources], "names": list(names), "layout": layout, "label": label, "splits": list(splits),
        "min_side_px": min_side_px, "max_pixels": max_pixels, "max_aspect": max_aspect, "max_file_mb": max_file_mb,
        "priority": priority,
        "follow_links": follow_links, "workers": workers, "engine": engine})
    emit(result.summary, as_json, f"ingested into {ws.root}")


@cli.command()
@workspace_argument
@json_option
def status(workspace: Path, as_json: bool) -> None:
    """Print counts per status, reason, label, split and source."""
    from curate.summary import SUMMARY_COLUMNS, summarize

    ws = _open_ws(workspace)
    emit(summarize(ws.read_manifest(list(SUMMARY_COLUMNS))), as_json, str(ws.root))


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default="curate-demo")
@workers_option
@json_option
def demo(folder: Path, workers: int, as_json: bool) -> None:
    """Build a small messy source from bundled photos and curate it end to end."""
    from curate.demo import run_demo

    summary = run_demo(folder, workers=workers, progress=sys.stderr.isatty() and not as_json)
    emit(summary, as_json, f"demo workspace {folder / 'workspace'}")


# curate train (issue 7): the group module imports no torch; its commands do.
from curate.train.cli import train as _train_group  # noqa: E402

cli.add_command(_train_group)


# curate report (issue 6)
@cli.command("report")
@workspace_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: WS/report.html).")
@click.option("--samples", "per_reason", type=click.IntRange(0, 200), default=8, show_default=True,
              help="Pictures of dropped images shown per reason.")
@click.option("--max-groups", type=click.IntRange(0, 200), default=12, show_default=True,
              help="Duplicate groups shown, largest first.")
@click.option("--max-faces", type=click.IntRange(0, 1000), default=48, show_default=True,
              help="Face crops shown in the grid (a seeded sample).")
@click.option("--thumb-px", type=click.IntRange(16, 512), default=96, show_default=True,
              help="Thumbnail size in pixels (longer side).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the sampled pictures.")
@workers_option
@json_option
def report_cmd(workspace: Path, out: Path | None, per_reason: int, max_groups: int, max_faces: int,
               thumb_px: int, seed: int, workers: int, as_json: bool) -> None:
    """Write one self-contained HTML report of what happened to the dataset."""
    from curate.stages.report import ReportOptions, report

    ws = _open_ws(workspace)
    opts = ReportOptions(out=out, per_reason=per_reason, max_dup_groups=max_groups, max_faces=max_faces,
                         thumb_px=thumb_px, seed=seed, workers=workers)
    result = ws.run_stage("report", report, opts)
    if not as_json:
        click.echo(f"report written to {result.summary['out']} ({result.summary['bytes'] / 1e6:.2f} MB)")
    emit(result.summary, as_json, "report")


# curate review (issue 5)
@cli.command("review")
@workspace_argument
@click.option("--pull", is_flag=True,
              help="Apply the tags set in the App (reject, keep, label:<class>) to the manifest; no App.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="App port (default: FiftyOne's, 5151).")
@click.option("--address", default=None, help="Address to serve the App on (default: FiftyOne's, localhost).")
@click.option("--remote", is_flag=True, help="Serve the App without opening a browser (SSH port forwarding).")
@click.option("--no-launch", is_flag=True, help="Create or refresh the FiftyOne dataset only.")
@json_option
def review_cmd(workspace: Path, pull: bool, port: int | None, address: str | None, remote: bool,
               no_launch: bool, as_json: bool) -> None:
    """Look at every row in the FiftyOne App; --pull brings the App's tags back."""
    from curate.review.app import app_address, launch
    from curate.stages.review import pull_review, review

    ws = _open_ws(workspace)
    if pull:
        emit(pull_review(ws).summary, as_json, "review --pull")
        return
    app = None if no_launch else app_address(address, port)  # a busy port fails before the build
    emit(review(ws).summary, as_json, "review")
    if app is not None:
        launch(ws, app, remote=remote)


# curate export / curate convert (issue 3)
class _FormatChoice(click.Choice):
    """Format names from ``curate.formats.REGISTRY``, looked up only when used
    (the registry imports pandas, and ``curate --help`` must stay light)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from curate.formats import readable_formats, writable_formats

        return ("auto", *readable_formats()) if self.kind == "read" else tuple(writable_formats())

    @choices.setter
    def choices(self, value: Any) -> None:  # Choice.__init__ assigns; the registry is the source
        pass


def _export_write_options(f: F) -> F:
    for opt in reversed([
        click.option("--overwrite", is_flag=True, help="Replace a non-empty --out folder that is a curate export."),
        click.option("--force", is_flag=True,
                     help="With --overwrite: also replace a folder curate did not export (no .curate-export.json)."),
        click.option("--link", type=click.Choice(["copy", "hardlink", "symlink"]), default="copy", show_default=True,
                     help="How unchanged image bytes get into the export (re-encoded images are new files)."),
        click.option("--no-verify", is_flag=True, help="Skip reading the export back and comparing it with the rows."),
        click.option("--default-split", type=click.Choice(["train", "val", "test"]), default="train",
                     show_default=True, help="Split for rows that have none."),
        click.option("--classes", default=None,
                     help="Class order (ids): comma-separated names, or a file with one name per line."),
    ]):
        f = opt(f)
    return f


class _FormatCommand(click.Command):
    """A command that also takes the options the formats declare (``Format.options``): ``side="write"`` for
    ``curate export``, ``"both"`` for ``curate convert``. They are read from the registry when the command's
    options are first needed (parsing, ``--help``), not at import, so ``curate --help`` stays light; the
    callback gets them as ``format_options={key: value}``."""

    def __init__(self, *args: Any, side: str, **kwargs: Any) -> None:
        self._side = side
        self._format_keys: list[str] | None = None
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def params(self) -> list[click.Parameter]:
        if self._format_keys is None:
            from curate.formats import format_options

            declared = format_options(self._side)
            self._format_keys = [o.key for o in declared]
            at = next((i for i, p in enumerate(self._params) if p.name in ("workers", "as_json")), len(self._params))
            self._params[at:at] = [
                click.Option([o.flag, o.key], is_flag=True, flag_value=o.given, default=o.default, help=o.help)
                if o.is_flag else click.Option([o.flag, o.key], default=o.default, help=o.help) for o in declared]
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params = value

    def invoke(self, ctx: click.Context) -> Any:
        self.params  # noqa: B018  (the format options are declared before they are collected)
        keys = self._format_keys or []
        ctx.params["format_options"] = {k: ctx.params.pop(k) for k in keys if k in ctx.params}
        return super().invoke(ctx)


def _classes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    p = Path(value)
    names = p.read_text(encoding="utf-8").splitlines() if p.is_file() else value.split(",")
    return [n.strip() for n in names if n.strip()]


@cli.command("export", cls=_FormatCommand, side="write")
@workspace_argument
@click.option("--format", "fmt", required=True, type=_FormatChoice("write"), help="Dataset format to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write; must be new or empty unless --overwrite.")
@_export_write_options
@engine_options
@click.option("--dry-run", is_flag=True, help="Plan the export and print its counts; write nothing.")
@json_option
def export_cmd(workspace: Path, fmt: str, out: Path, overwrite: bool, force: bool, link: str, no_verify: bool,
               default_split: str, classes: str | None, format_options: dict[str, Any], engine: str | None,
               ray_address: str | None, dry_run: bool, as_json: bool) -> None:
    """Write the kept rows as a dataset (folder, yolo, yolo-cls, coco, voc, csv, json, createml), verified."""
    from curate.stages.export import ExportOptions, export, export_dry_run

    ws = _open_ws(workspace)
    opts = ExportOptions(fmt, out, overwrite=overwrite, force=force, link=link, verify=not no_verify,
                         default_split=default_split, classes=_classes(classes), format_options=format_options,
                         engine=engine, ray_address=ray_address, dry_run=dry_run)
    if dry_run:
        emit(export_dry_run(ws, opts), as_json, "export (dry run: nothing written)")
        return
    result = ws.run_stage("export", export, opts)
    emit(result.summary, as_json, "export")


@cli.command("convert", cls=_FormatCommand, side="both")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--from", "from_fmt", default="auto", show_default=True, type=_FormatChoice("read"),
              help="Format of SOURCE.")
@click.option("--to", "to_fmt", required=True, type=_FormatChoice("write"), help="Format to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write; must be new or empty unless --overwrite.")
@click.option("--images-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder the source's image names are relative to, when not beside the annotations.")
@_export_write_options
@workers_option
@json_option
def convert_cmd(source: Path, from_fmt: str, to_fmt: str, out: Path, images_dir: Path | None, overwrite: bool,
                force: bool, link: str, no_verify: bool, default_split: str, classes: str | None,
                format_options: dict[str, Any], workers: int, as_json: bool) -> None:
    """Convert a dataset between formats directly, without a workspace."""
    from curate.stages.convert import ConvertOptions, convert

    opts = ConvertOptions(source, to_fmt, out, from_format=from_fmt, overwrite=overwrite, force=force, link=link,
                          verify=not no_verify, default_split=default_split, classes=_classes(classes),
                          images_dir=images_dir, workers=workers, format_options=format_options)
    emit(convert(opts), as_json, "convert")


# curate split / balance / check (issue 4)
def _emit_report(summary: dict[str, Any], as_json: bool, text: str) -> None:
    """Print a split/balance/check report: JSON, or the text table with warnings on stderr."""
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(text)
    for w in summary.get("warnings") or []:
        click.echo(f"warning: {w}", err=True)


@cli.command("split")
@workspace_argument
@click.option("--ratios", default="8:1:1", show_default=True,
              help="train:val:test numbers, or named: train=0.8,val=0.1,test=0.1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the order of equal-sized groups.")
@click.option("--stratify", default="label", show_default=True,
              help="Column whose classes each get the ratios, or 'none'.")
@click.option("--group", default="dup", show_default=True,
              help="Rows that share a split: dup (duplicate groups), source, or a manifest column. "
                   "Duplicate groups and derived copies are always kept together.")
@click.option("--group-from", default=None,
              help="Fill the group column (e.g. one person): folder:N, the N-th folder of each path inside its "
                   "source (1 = first under the root, -1 = the file's own folder), or csv:FILE:COLUMN.")
@click.option("--near-bits", type=click.IntRange(-1, 16), default=4, show_default=True,
              help="Also keep rows whose phash is at most this many bits apart in one split (-1: off).")
@click.option("--resplit", is_flag=True, help="Reassign every row; without it existing splits are kept.")
@click.option("--strict", is_flag=True, help="Fail when a class has too few groups to reach every split.")
@json_option
def split_cmd(workspace: Path, ratios: str, seed: int, stratify: str, group: str, group_from: str | None,
              near_bits: int, resplit: bool, strict: bool, as_json: bool) -> None:
    """Assign train/val/test per class; duplicates and copies never straddle splits."""
    from curate.stages.split import SplitOptions, format_report, parse_ratios, split

    ws = _open_ws(workspace)
    opts = SplitOptions(ratios=parse_ratios(ratios), seed=seed,
                        stratify=None if stratify.lower() == "none" else stratify, group=group, near_bits=near_bits,
                        resplit=resplit, strict=strict, group_from=group_from)
    result = ws.run_stage("split", split, opts)
    _emit_report(result.summary, as_json, format_report(result.summary, f"split {ws.root} (seed {seed})"))


@cli.command("balance")
@workspace_argument
@click.option("--target", default="median", show_default=True,
              help="Rows per class in each balanced split: a number, or max, min, median of its classes.")
@click.option("--strategy", type=click.Choice(["undersample", "oversample", "both"]), default="both",
              show_default=True, help="Remove rows from big classes, add augmented copies to small ones, or both.")
@click.option("--splits", default="train", show_default=True,
              help="Comma-separated splits to balance ('none': rows without a split). val/test stay honest.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for ties and augmentation.")
@click.option("--augment", default=None,
              help="Copies' augmentation, KEY=VALUE,...: hflip, vflip, rotate_p (probabilities), rotate (degrees), "
                   "brightness, contrast (fractions), crop (smallest area), min_visibility, min_box_side.")
@click.option("--max-copies", type=click.IntRange(min=1), default=None, help="At most this many copies of one image.")
@click.option("--priority", default=None,
              help="Sources, most trusted first (e.g. mine,kaggle,crawl): undersampling removes rows of the "
                   "least trusted first; sources not named go before all named ones.")
@workers_option
@json_option
def balance_cmd(workspace: Path, target: str, strategy: str, splits: str, seed: int, augment: str | None,
                max_copies: int | None, priority: str | None, workers: int, as_json: bool) -> None:
    """Even out class counts: diverse undersampling, augmented oversampling (boxes carried)."""
    from curate.augment import parse_augment
    from curate.stages.balance import BalanceOptions, balance, format_balance, parse_splits, parse_target

    ws = _open_ws(workspace)
    opts = BalanceOptions(target=parse_target(target), strategy=strategy, splits=parse_splits(splits), seed=seed,
                          augment=parse_augment(augment), max_copies_per_image=max_copies, workers=workers,
                          priority=tuple(p.strip() for p in (priority or "").split(",") if p.strip()))
    result = ws.run_stage("balance", balance, opts)
    _emit_report(result.summary, as_json, format_balance(result.summary, f"balance {ws.root}"))


@cli.command("check")
@workspace_argument
@click.option("--min-per-class", type=click.IntRange(min=1), default=2, show_default=True,
              help="Fail when a class has fewer kept source images.")
@click.option("--min-side", "min_side_px", type=click.IntRange(min=1), default=64, show_default=True,
              help="Warn about kept images with a side below this many pixels.")
@click.option("--max-aspect", type=click.FloatRange(min=1.0), default=4.0, show_default=True,
              help="Warn about kept images whose long/short side ratio is above this.")
@click.option("--near-bits", type=click.IntRange(0, 16), default=4, show_default=True,
              help="Fail on kept pairs in different splits whose phash is at most this many bits apart.")
@click.option("--group", default=None, help="As for split --group (default: the last split's).")
@click.option("--skip", multiple=True, help="Check(s) to skip, by name; repeat or comma-separate.")
@click.option("--strict", is_flag=True, help="Warnings fail the run too.")
@json_option
@click.pass_context
def check_cmd(ctx: click.Context, workspace: Path, min_per_class: int, min_side_px: int, max_aspect: float,
              near_bits: int, group: str | None, skip: tuple[str, ...], strict: bool, as_json: bool) -> None:
    """Leakage and health report; exits 1 when a check fails (for CI)."""
    from curate.stages.check import CheckOptions, check, format_check

    ws = _open_ws(workspace)
    names = tuple(n.strip() for s in skip for n in s.split(",") if n.strip())
    opts = CheckOptions(min_per_class=min_per_class, min_side_px=min_side_px, max_aspect=max_aspect,
                        near_bits=near_bits, hash_column="phash", group=group, skip=names, strict=strict)
    result = ws.run_stage("check", check, opts)
    _emit_report(result.summary, as_json, format_check(result.summary, f"check {ws.root}"))
    if result.summary["failed"]:
        ctx.exit(1)


# --- faces, square, models (issue 9) -------------------------------------------------------------

@cli.command("faces")
@workspace_argument
@click.option("--min-confidence", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Keep faces the detector scores at least this high.")
@click.option("--margin", "margin_frac", type=click.FloatRange(0, 5), default=0.25, show_default=True,
              help="Crop margin on each side, as a fraction of the face box's width/height.")
@click.option("--select", type=click.Choice(["largest", "all", "most-central"]), default=None,
              help="Faces to keep per image  [default: largest; all with --boxes]")
@click.option("--min-face-px", type=click.IntRange(min=0), default=0, show_default=True,
              help="Ignore faces whose box is smaller than this many pixels on its shorter side.")
@click.option("--boxes", is_flag=True, help="Write faces as boxes into annotations.parquet instead of cropping.")
@click.option("--class-from", type=click.Choice(["face", "label"]), default="face", show_default=True,
              help="Box class with --boxes: 'face', or each row's label (e.g. me / other).")
@click.option("--drop-no-face", is_flag=True,
              help="With --boxes: drop images without a face (default: keep them as background images, no boxes).")
@click.option("--detector", type=click.Choice(["ensemble", "short-range", "full-range"]), default="ensemble",
              show_default=True, help="Both BlazeFace models plus tiles (best), or one model on the whole image (fast).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality of crops of lossy sources (crops of PNG sources are PNG).")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the face models (default: $CURATE_FACE_MODEL_DIR, the user cache, or a download).")
@workers_option
@engine_options
@json_option
def faces_cmd(workspace: Path, min_confidence: float, margin_frac: float, select: str | None, min_face_px: int,
              boxes: bool, class_from: str, drop_no_face: bool, detector: str, quality: int, model_dir: Path | None,
              workers: int, engine: str | None, ray_address: str | None, as_json: bool) -> None:
    """Find faces; crop each into a derived image, or write them as boxes (--boxes)."""
    from curate.stages.faces import FacesOptions, faces, record_options

    ws = _open_ws(workspace)
    opts = FacesOptions(min_confidence=min_confidence, margin_frac=margin_frac, select=select,
                        min_face_px=min_face_px, boxes=boxes, class_from=class_from, detector=detector,
                        workers=workers, quality=quality, model_dir=str(model_dir) if model_dir else None,
                        progress=sys.stderr.isatty() and not as_json, drop_no_face=drop_no_face,
                        engine=engine, ray_address=ray_address)
    result = ws.run_stage("faces", faces, opts, record_options=record_options(opts))
    emit(result.summary, as_json, f"faces in {ws.root}")


@cli.command("square")
@workspace_argument
@click.option("--size", "size_px", type=click.IntRange(1, 16384), default=224, show_default=True,
              help="Side of the square, in pixels.")
@click.option("--mode", type=click.Choice(["pad", "crop", "stretch"]), default="pad", show_default=True,
              help="pad: letterbox the whole image; crop: centre square; stretch: change the aspect ratio.")
@click.option("--fill", default="black", show_default=True, help="Pad colour: black, white, edge, mean or R,G,B.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality for lossy sources (PNG sources stay PNG).")
@workers_option
@engine_options
@json_option
def square_cmd(workspace: Path, size_px: int, mode: str, fill: str, quality: int, workers: int,
               engine: str | None, ray_address: str | None, as_json: bool) -> None:
    """Make each kept image a SIZE x SIZE square; boxes follow."""
    from curate.stages.square import SquareOptions, square

    ws = _open_ws(workspace)
    opts = SquareOptions(size_px=size_px, mode=mode, fill=fill, quality=quality, workers=workers,
                         progress=sys.stderr.isatty() and not as_json, engine=engine, ray_address=ray_address)
    result = ws.run_stage("square", square, opts)
    emit(result.summary, as_json, f"squares in {ws.root}")


@cli.command("crop")
@workspace_argument
@click.option("--margin", "margin_frac", type=click.FloatRange(0, 5), default=0.0, show_default=True,
              help="Context around each box, as a fraction of its width/height on each side (clamped to the image).")
@click.option("--min-box-px", type=click.IntRange(min=1), default=8, show_default=True,
              help="Skip boxes whose shorter side is below this many pixels (recorded as too_small).")
@click.option("--classes", default=None, help="Crop only these box classes (comma-separated).")
@click.option("--square", is_flag=True, help="Widen each window to a square around its box before cutting.")
@click.option("--label-from", type=click.Choice(["box", "row"]), default="box", show_default=True,
              help="Patch label: the box's class, or the image's own label.")
@click.option("--supersede", is_flag=True,
              help="Drop each photo that gave patches as superseded (for classification-only exports).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality of patches of lossy sources (patches of PNG sources are PNG).")
@workers_option
@engine_options
@json_option
def crop_cmd(workspace: Path, margin_frac: float, min_box_px: int, classes: str | None, square: bool,
             label_from: str, supersede: bool, quality: int, workers: int, engine: str | None,
             ray_address: str | None, as_json: bool) -> None:
    """Cut every annotated box into its own labelled sample (a patch)."""
    from curate.stages.crop import CropOptions, crop, record_options

    ws = _open_ws(workspace)
    opts = CropOptions(margin_frac=margin_frac, min_box_px=min_box_px, classes=_names(classes), square=square,
                       label_from=label_from, supersede=supersede, quality=quality, workers=workers,
                       progress=sys.stderr.isatty() and not as_json, engine=engine, ray_address=ray_address)
    result = ws.run_stage("crop", crop, opts, record_options=record_options(opts))
    emit(result.summary, as_json, f"crop in {ws.root}")


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(n.strip() for n in value.split(",") if n.strip())


@cli.group("models")
def models_group() -> None:
    """The face detector models: where they are, and fetching them."""


@models_group.command("fetch")
@click.option("--dir", "target", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Put the models here instead of the user cache (then use it as CURATE_FACE_MODEL_DIR).")
@json_option
def models_fetch_cmd(target: Path | None, as_json: bool) -> None:
    """Get the face models (checked by sha256); a no-op when they are already there."""
    from curate.models import fetch

    records = fetch(target)
    emit({r["model"]: f"{r['path']} (from {r['found_in']})" for r in records}, as_json, "face models")


@models_group.command("status")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Check this folder instead of $CURATE_FACE_MODEL_DIR.")
@json_option
def models_status_cmd(model_dir: Path | None, as_json: bool) -> None:
    """Where each face model would be taken from now (nothing is downloaded)."""
    from curate.models import status

    emit({str(r["model"]): r["path"] or r["problem"] for r in status(model_dir)}, as_json, "face models")


@cli.command("dedupe")
@workspace_argument
@click.option("--max-hamming", type=click.IntRange(0, 16), default=8, show_default=True,
              help="Bits of the 64-bit d4hash two images may differ by to become candidates.")
@click.option("--crops/--no-crops", default=True, show_default=True,
              help="Also match crop windows: crops up to ~20%, turns by a few degrees, watermarks.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check every candidate pair on the pixels (decodes only images in candidate pairs).")
@click.option("--priority", default=None, help="Comma-separated source names, most trusted first, for keeping.")
@click.option("--copies/--no-copies", default=True, show_default=True,
              help="Also match stored keypoints: crops to half the picture, screenshots, frames, captions, turns.")
@click.option("--keep", "keep", default="priority,uncropped,resolution,annotated", show_default=True,
              help="Keeper criteria in order (any of priority, uncropped, resolution, annotated); ties: source, path.")
@click.option("--min-contrast", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Rows whose hashed thumbnail has a grey-level std below this match only byte-identical copies.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing to the workspace.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every group (members, distances, kept one and why) to FILE.csv or FILE.json.")
@click.option("--conflicts", is_flag=True, help="List each group whose members carry different labels.")
@workers_option
@json_option
def dedupe_cmd(workspace: Path, max_hamming: int, crops: bool, verify: bool, priority: str | None, copies: bool,
               keep: str, min_contrast: float, dry_run: bool, report: Path | None, conflicts: bool, workers: int,
               as_json: bool) -> None:
    """Group near duplicates across sources; keep one of each group, drop the rest as duplicate."""
    from curate.stages.dedupe import DedupeOptions, dedupe

    ws = _open_ws(workspace)
    opts = DedupeOptions(max_hamming=max_hamming, crops=crops, verify=verify, min_contrast=min_contrast,
                         priority=priority.split(",") if priority else None,
                         keep=tuple(k.strip() for k in keep.split(",") if k.strip()), dry_run=dry_run, report=report,
                         conflicts=conflicts, workers=workers, progress=sys.stderr.isatty() and not as_json,
                         copies=copies)
    result = ws.run_stage("dedupe", dedupe, opts)
    emit(result.summary, as_json, f"dedupe {ws.root}" + (" (dry run: nothing written)" if dry_run else ""))


# --- relocate, prune (issue 17) -----------------------------------------------------------------

@cli.command("relocate")
@workspace_argument
@click.option("--source", "moves", multiple=True, metavar="NAME=NEWPATH",
              help="Re-root source NAME at NEWPATH (its folder, or its list file); repeat for more sources.")
@click.option("--search", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Find missing source files under this folder by sha256; repeat for more folders.")
@click.option("--verify", type=click.Choice(["all", "sample", "size"]), default="all", show_default=True,
              help="With --source: sha256 of every moved file, of a sample (--sample), or check sizes only.")
@click.option("--sample", "sample_size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Files hashed per source with --verify sample.")
@click.option("--dry-run", is_flag=True, help="Check and show what would change; write nothing.")
@workers_option
@json_option
def relocate_cmd(workspace: Path, moves: tuple[str, ...], search: tuple[Path, ...], verify: str, sample_size: int,
                 dry_run: bool, workers: int, as_json: bool) -> None:
    """Follow sources that moved: re-root one (--source NAME=NEWPATH) or find files by content (--search)."""
    from curate.stages.relocate import RelocateOptions, parse_source_moves, relocate

    ws = _open_ws(workspace)
    opts = RelocateOptions(sources=parse_source_moves(moves), search=list(search), verify=verify,
                           sample_size=sample_size, dry_run=dry_run, workers=workers)
    result = ws.run_stage("relocate", relocate, opts)
    emit(result.summary, as_json, f"relocate {ws.root}" + (" (dry run: nothing written)" if dry_run else ""))


@cli.command("prune")
@workspace_argument
@click.option("--missing", is_flag=True, help="Remove the rows dropped as missing_file (and their boxes).")
@click.option("--dry-run", is_flag=True, help="List what would be removed; write nothing.")
@json_option
def prune_cmd(workspace: Path, missing: bool, dry_run: bool, as_json: bool) -> None:
    """Remove rows of files that do not exist (missing_file); each removal is recorded in runs/."""
    from curate.stages.prune import PruneOptions, prune

    ws = _open_ws(workspace)
    result = ws.run_stage("prune", prune, PruneOptions(missing=missing, dry_run=dry_run))
    emit(result.summary, as_json, f"prune {ws.root}" + (" (dry run: nothing written)" if dry_run else ""))


# --- labels (issue 16) ---------------------------------------------------------------------------

@cli.command("labels")
@workspace_argument
@_label_map_options
@click.option("--unmap", multiple=True, metavar="OLD",
              help="Remove OLD from the active label map: its rows get their original label back; repeat for more.")
@click.option("--reset", is_flag=True, help="Remove the label map and every relabel: original labels back.")
@click.option("--resolve", default=None, metavar="majority|source:NAME|keep",
              help="Settle label conflicts in duplicate groups: the majority's label, source NAME's, or the kept copy's.")
@click.option("--find-issues", is_flag=True, help="Score every kept image for a likely wrong label (cleanlab).")
@click.option("--features", type=click.Choice(["pixels", "resnet18", "resnet50", "efficientnet_b0"]),
              default="pixels", show_default=True,
              help="Image features for --find-issues: curate's own, or a torchvision backbone (cached weights, else random).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the out-of-fold model of --find-issues.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds and the model.")
@click.option("--apply", type=click.Choice(["relabel", "drop"]), default=None,
              help="Fix the flagged rows: give them the suggested label, or drop them (mislabelled).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="With --apply: only flagged rows scored at least this.")
@click.option("--top", type=click.IntRange(min=1), default=None, help="With --apply: only the N highest-scored flagged rows.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@workers_option
@json_option
def labels_cmd(workspace: Path, label_map: Path | None, maps: tuple[str, ...], unmap: tuple[str, ...], reset: bool,
               resolve: str | None, find_issues: bool, features: str, folds: int, seed: int, apply: str | None,
               threshold: float | None, top: int | None, dry_run: bool, workers: int, as_json: bool) -> None:
    """Class list per source and split; map classes, settle conflicts, find and fix likely mislabels."""
    from curate.stages.labels import LabelsOptions, format_classes, labels

    ws = _open_ws(workspace)
    opts = LabelsOptions(_label_map(label_map, maps), unmap, reset, resolve, find_issues, features, folds, seed,
                         apply, threshold, top, dry_run, workers, progress=sys.stderr.isatty() and not as_json)
    result = ws.run_stage("labels", labels, opts)
    _emit_report(result.summary, as_json,
                 format_classes(result.summary, f"labels {ws.root}" + (" (dry run: nothing written)" if dry_run else "")))


# curate label (issue 16): the Label Studio round trip
@cli.command("label")
@workspace_argument
@click.argument("action", type=click.Choice(["push", "pull", "serve"]))
@click.option("--view", default="all", show_default=True,
              type=click.Choice(["all", "unlabelled", "no_boxes", "no_face", "label_issues", "label_conflicts"]),
              help="push: which rows become tasks.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="push: at most this many rows.")
@click.option("--classes", default=None, help="push: image classes to offer besides the workspace's (a,b,c).")
@click.option("--box-classes", default=None,
              help="push: box classes to offer besides the workspace's (default: its box classes, else its classes).")
@click.option("--title", default=None, help="push: project title (default: curate <workspace folder>).")
@click.option("--keep-running", is_flag=True, help="push: leave curate's server running for a person to label.")
@click.option("--url", default=None, help="A running Label Studio server (default: curate starts one on 127.0.0.1).")
@click.option("--token", default=None, envvar="LABEL_STUDIO_API_KEY",
              help="With --url: personal access token (or legacy token); env LABEL_STUDIO_API_KEY.")
@click.option("--document-root", default="/", show_default=True,
              help="With --url: the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT.")
@click.option("--label-studio", "binary", type=click.Path(dir_okay=False), default=None,
              help="The label-studio program (default: $CURATE_LABEL_STUDIO, .venv-labelstudio, PATH).")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=180, show_default=True,
              help="Seconds to wait for curate's server to start.")
@json_option
def label_cmd(workspace: Path, action: str, view: str, limit: int | None, classes: str | None,
              box_classes: str | None, title: str | None, keep_running: bool, url: str | None, token: str | None,
              document_root: str, binary: str | None, start_timeout: float, as_json: bool) -> None:
    """Label and draw boxes in Label Studio: push rows as tasks, pull the work back, or serve."""
    from curate.stages.label import PushOptions, ServerOptions, label

    ws = _open_ws(workspace)
    push = PushOptions(view=view, limit=limit, classes=list(_names(classes) or ()),
                       box_classes=list(_names(box_classes) or ()), title=title, document_root=document_root)
    label(ws, action, ServerOptions(url=url, token=token, binary=binary, start_timeout_s=start_timeout), push, keep_running=keep_running,
          echo=lambda m: click.echo(m, err=True),
          report=lambda r: emit(r.summary, as_json, f"label {action} {ws.root}"))


def main() -> None:
    cli(prog_name="curate")


# Keep functools imported for decorators added by other commands.
_ = functools
