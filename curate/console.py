"""Terminal output shared by the ``curate`` commands (curate/cli.py) and ``curate train`` (curate/train/cli.py).

    >>> emit({"model": "blaze_face", "seconds": 1.5, "sizes": [1, 2]}, False, "face models")
      model: blaze_face
      seconds: 1.5
      sizes: [1, 2]
"""

from __future__ import annotations

import json
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
