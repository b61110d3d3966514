"""Workspace summaries: counts per status, reason, label, split and source.

    >>> import pandas as pd
    >>> m = pd.DataFrame({"status": ["kept", "dropped"], "reason": [None, "too_small"], "label": ["cat", "cat"],
    ...                   "split": [None, None], "source": ["a", "a"], "parent_id": [None, None]})
    >>> summarize(m)["status"]
    {'dropped': 1, 'kept': 1}
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def _counts(s: pd.Series, none: str = "(none)") -> dict[str, int]:
    vc = s.fillna(none).astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))}


def status_counts(manifest: pd.DataFrame) -> dict[str, int]:
    if len(manifest) == 0:
        return {}
    return _counts(manifest["status"])


# The columns summarize() reads: `curate status` reads only these from disk (a manifest in parts, read by column).
SUMMARY_COLUMNS = ("status", "reason", "label", "split", "source", "parent_id", "label_conflict")


def summarize(manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts a person looks at first. Labels and splits count kept rows only."""
    if len(manifest) == 0:
        return {"rows": 0, "status": {}, "reason": {}, "label": {}, "split": {}, "source": {}}
    kept = manifest[manifest["status"] == "kept"]
    dropped = manifest[manifest["status"] == "dropped"]
    by_source = {}
    for name, g in manifest.groupby("source", sort=True):
        by_source[str(name)] = {"rows": int(len(g)), "kept": int((g["status"] == "kept").sum())}
    return {
        "rows": int(len(manifest)),
        "status": _counts(manifest["status"]),
        "reason": _counts(dropped["reason"]) if len(dropped) else {},
        "label": _counts(kept["label"]) if len(kept) else {},
        "split": _counts(kept["split"]) if len(kept) else {},
        "source": by_source,
        "derived": int(manifest["parent_id"].notna().sum()),
        "label_conflicts": int(manifest["label_conflict"].sum()) if "label_conflict" in manifest else 0,
    }


def format_summary(summary: dict[str, Any], title: str = "workspace") -> str:
    """Plain-text rendering of :func:`summarize` for the terminal."""
    lines = [f"{title}: {summary['rows']} rows"]
    if not summary["rows"]:
        return lines[0]

    def table(name: str, counts: dict[str, Any]) -> None:
        if not counts:
            return
        lines.append(f"  {name}:")
        width = max(len(k) for k in counts)
        for k, v in counts.items():
            if isinstance(v, dict):
                lines.append(f"    {k:<{width}}  {v['kept']:>7} kept of {v['rows']}")
            else:
                lines.append(f"    {k:<{width}}  {v:>7}")

    table("status", summary["status"])
    table("dropped, by reason", summary["reason"])
    table("kept, by label", summary["label"])
    table("kept, by split", summary["split"])
    table("by source", summary["source"])
    if summary.get("derived"):
        lines.append(f"  derived rows: {summary['derived']}")
    if summary.get("label_conflicts"):
        lines.append(f"  rows in label conflicts: {summary['label_conflicts']}")
    return "\n".join(lines)
