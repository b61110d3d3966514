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


def emit(summary: dict[str, Any], as_json: bool, title: str) -> None:
    """Print a stage summary as text or JSON."""
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    from curate.summary import format_summary

    if "rows" in summary and "status" in summary:
        click.echo(format_summary(summary, title))
    extra = {k: v for k, v in summary.items()
             if k not in ("rows", "status", "reason", "label", "split", "source", "derived", "label_conflicts", "warnings")}
    for k, v in extra.items():
        click.echo(f"  {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    warnings = summary.get("warnings") or []
    for w in warnings[:20]:
        click.echo(f"warning: {w}", err=True)
    if len(warnings) > 20:
        click.echo(f"warning: ... and {len(warnings) - 20} more (see the run record in runs/)", err=True)


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
@click.option("--min-side", "min_side_px", type=click.IntRange(min=1), default=64, show_default=True,
              help="Drop images whose shorter side is below this many pixels (too_small).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=178_956_970, show_default=True,
              help="Drop images with more pixels than this, without decoding them (too_large).")
@click.option("--max-aspect", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Drop images whose long/short side ratio is above this (bad_aspect).")
@click.option("--priority", default=None, help="Comma-separated source names, most trusted first, for keeping duplicates.")
@click.option("--follow-links", is_flag=True, help="Follow symbolic links that point outside a source.")
@click.option("--images-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder that a CSV/TXT list's file names are relative to (default: the list's folder).")
@click.option("--json-mapping", default=None, help="Field mapping for per-image JSON box files (file or name in schemas/).")
@workers_option
@json_option
def ingest(sources: tuple[Path, ...], workspace: Path, names: tuple[str, ...], layout: str, label: str | None,
           min_side_px: int, max_pixels: int, max_aspect: float, priority: str | None, follow_links: bool,
           images_dir: Path | None, json_mapping: str | None, workers: int, as_json: bool) -> None:
    """Read SOURCE folders or lists into a workspace, one manifest row per file."""
    from curate.imageio import ProbeOptions
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest as run_ingest
    from curate.workspace import Workspace

    if len(names) > len(sources):
        raise click.BadParameter(f"{len(names)} names for {len(sources)} sources", param_hint="--source")
    specs = [SourceSpec(p, names[i] if i < len(names) else None, layout, label) for i, p in enumerate(sources)]
    extra = {k: v for k, v in {"images_dir": images_dir, "json_mapping": json_mapping}.items() if v is not None}
    opts = IngestOptions(specs, ProbeOptions(min_side_px, max_pixels, max_aspect), workers, follow_links,
                         priority.split(",") if priority else None, sys.stderr.isatty() and not as_json,
                         read_extra=extra)
    ws = Workspace.create(workspace)
    result = ws.run_stage("ingest", run_ingest, opts, record_options={
        "sources": [str(s) for s in sources], "names": list(names), "layout": layout, "label": label,
        "min_side_px": min_side_px, "max_pixels": max_pixels, "max_aspect": max_aspect, "priority": priority,
        "follow_links": follow_links, "workers": workers})
    emit(result.summary, as_json, f"ingested into {ws.root}")


@cli.command()
@workspace_argument
@json_option
def status(workspace: Path, as_json: bool) -> None:
    """Print counts per status, reason, label, split and source."""
    from curate.summary import summarize

    ws = _open_ws(workspace)
    emit(summarize(ws.read_manifest()), as_json, str(ws.root))


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default="curate-demo")
@workers_option
@json_option
def demo(folder: Path, workers: int, as_json: bool) -> None:
    """Build a small messy source from bundled photos and curate it end to end."""
    from curate.demo import run_demo

    summary = run_demo(folder, workers=workers, progress=sys.stderr.isatty() and not as_json)
    emit(summary, as_json, f"demo workspace {folder / 'workspace'}")


def main() -> None:
    cli(prog_name="curate")


# Keep functools imported for decorators added by other commands.
_ = functools
