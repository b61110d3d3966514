"""``curate prune WS --missing``: forget rows whose file does not exist.

A decision is a row, not a deletion (docs/manifest.md): a dropped image stays in
the manifest so that anyone can see what happened to it. A ``missing_file``
row is different. It is about no image at all: a list named a file that
never existed, or a file that was in a source is gone (a folder renamed
between two ingests leaves one such row per file, for good: a real run left
74). There is nothing to look at, export or restore, and the row only hides
the real counts. So these rows, and only these, may be removed, by an
explicit command, and the run record in ``runs/`` lists every row removed
(sample id, source, path, detail), so the removal is itself on record.

What stays:

- a ``missing_file`` row whose file exists again (a source came back or was
  relocated): ``curate ingest`` restores it;
- a ``missing_file`` row that derived rows descend from (a face crop of a
  photo that is gone): the lineage of the derived rows needs it.

    >>> PruneOptions(missing=True).check()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from curate.errors import OptionError
from curate.summary import summarize
from curate.workspace import StageResult, Workspace

RECORD_FIELDS = ("sample_id", "source", "path", "rel_path", "label", "detail", "decided_by")


@dataclass(kw_only=True)
class PruneOptions:
    missing: bool = False  # remove missing_file rows (the only kind of row prune removes)
    dry_run: bool = False

    def check(self) -> None:
        if not self.missing:
            raise OptionError("", field="prune", expected="what to prune: --missing", found="nothing",
                              hint="`curate prune WS --missing` removes the rows of files that do not exist")


def prune(manifest: pd.DataFrame, options: PruneOptions, *, ws: Workspace,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Remove ``missing_file`` rows and their boxes; see the module docstring.

        >>> ws.run_stage("prune", prune, PruneOptions(missing=True))  # doctest: +SKIP
    """
    options.check()
    candidates = manifest[manifest["reason"] == "missing_file"]
    back = candidates[[os.path.lexists(p) for p in candidates["path"].astype(str)]]
    parents = set(manifest.loc[~manifest["sample_id"].isin(set(candidates["sample_id"])), "parent_id"].dropna())
    lineage = candidates[candidates["sample_id"].isin(parents)]
    gone = candidates[~candidates["sample_id"].isin(set(back["sample_id"]) | set(lineage["sample_id"]))]
    ids = set(gone["sample_id"])
    out = manifest[~manifest["sample_id"].isin(ids)].reset_index(drop=True)
    ann = annotations
    boxes = 0
    if annotations is not None and len(annotations):
        drop = annotations["sample_id"].isin(ids)
        boxes = int(drop.sum())
        ann = annotations[~drop].reset_index(drop=True)
    removed = gone[list(RECORD_FIELDS)].astype(object)
    removed_rows: list[dict[str, Any]] = removed.where(removed.notna(), None).to_dict("records")
    summary: dict[str, Any] = {
        **summarize(out), "removed": len(ids), "boxes_removed": boxes,
        "removed_per_source": {str(k): int(v) for k, v in gone["source"].value_counts().sort_index().items()},
    }
    warnings = []
    if len(back):
        warnings.append(f"{len(back)} missing_file rows have a file again (e.g. {back['path'].iloc[0]}); kept: "
                        "run `curate ingest` on their source to restore them")
    if len(lineage):
        warnings.append(f"{len(lineage)} missing_file rows have derived rows (e.g. {lineage['path'].iloc[0]}); "
                        "kept for their lineage")
    if warnings:
        summary["warnings"] = warnings
    if options.dry_run:
        summary["would_remove"] = [f"{r['source']}/{r['rel_path']}" for r in removed_rows]
    return StageResult(out, ann if boxes else None, summary=summary, record={"removed": removed_rows},
                       write=not options.dry_run and bool(ids), log_run=not options.dry_run)
