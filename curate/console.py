"""Terminal output shared by the ``curate`` commands (curate/cli.py) and ``curate train`` (curate/train/cli.py).

    >>> emit({"model": "blaze_face", "seconds": 1.5, "sizes": [1, 2]}, False, "face models")
      model: blaze_face
      seconds: 1.5
      sizes: [1, 2]
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from typing import Any

import click


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


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a service manager) raises KeyboardInterrupt here, as Ctrl-C does, so ``finally``
    blocks clean up (an export's staging folder, a Label Studio server); the previous handler is restored
    afterwards (main thread only)."""

    def stop(signum: int, frame: Any) -> None:
        # One SIGTERM stops the command; a second one (sent again, or by two writer threads at once) must not
        # cut short the cleanup that follows (writer threads joined, a staging folder removed, a server stopped).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

