"""``curate ingest``: read sources into the workspace manifest.

Each source is read by a format reader (auto-detected or ``--layout``), every
file is probed once in a process pool (sha256, full decode at reduced scale,
EXIF-displayed size, perceptual hashes), and each file becomes one manifest
row, kept or dropped with a reason. Exact duplicates (same bytes) are marked
by :func:`curate.groups.mark_exact`. The reading and probing itself lives a
floor below, in :mod:`curate.formats.source` (``curate convert`` runs it too);
its names are importable from here as before.

Resumable: probe results are checkpointed to ``WS/.partial/`` while the pool
runs, and files whose size and sha256 match an earlier result are not decoded
again. A run killed at any point and started again gives the same manifest as
one uninterrupted run.

    >>> import tempfile
    >>> from curate.demo import bundled_photos_dir
    >>> from curate.workspace import Workspace
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> opts = IngestOptions([SourceSpec(bundled_photos_dir(), name="sk", layout="flat")], workers=1)
    >>> res = ws.run_stage("ingest", ingest, opts)
    >>> res.summary["run"]["files"] > 10
    True
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from curate.boxes import merge_duplicate_boxes
from curate.errors import OptionError, SourceError
from curate.formats.base import canonical_split
from curate.formats.source import (  # noqa: F401  (importable from the stage as before)
    ANNOTATION_SUFFIXES,
    IngestOptions,
    Probed,
    SourceSpec,
    _KnownCache,
    clean_boxes,
    read_and_probe,
    read_source,
    sample_id_for,
    stored_to_displayed_xyxy,
)
from curate.groups import mark_exact
from curate.paths import check_source_place
from curate.schema import ANNOTATION_COLUMNS, MANIFEST_COLUMNS, conform, empty_annotations
from curate.summary import summarize
from curate.workspace import (
    SOURCES_FILE,
    StageResult,
    Workspace,
    load_sources,
    sources_bytes,
)

PARTIAL_DIR = ".partial/ingest"


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


def ingest(manifest: pd.DataFrame, options: IngestOptions, *, ws: Workspace,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Add or refresh the rows of ``options.sources``; see the module docstring."""
    if not options.sources:
        raise OptionError("", field="SOURCE", expected="at least one source folder or file", found="none")
    t0 = time.perf_counter()
    sources, all_sources = _register_sources(ws, options.sources)
    if options.read_extra.get("images_dir"):  # read as a source is: it may not hold or lie in the workspace
        check_source_place(options.read_extra["images_dir"], ws.root)

    probed = read_and_probe(sources, options, cache=_KnownCache(manifest, ws.root / PARTIAL_DIR),
                            checkpoints=ws.root / PARTIAL_DIR)
    seen_ids, n_tasks = probed.seen_ids, probed.probed_files
    if probed.rows is not None:
        new, ann_rows, box_problems, reused = probed.rows, probed.annotations, probed.box_problems, probed.reused
        new = _carry_decisions(new, manifest)
    else:
        new, ann_rows, box_problems, reused = manifest.iloc[0:0], [], [], 0
    warnings, skipped, classes = probed.warnings, probed.skipped, probed.classes
    source_problems = probed.source_problems
    del probed

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

    combined, label_changes, active_map, map_files = _apply_label_map(ws, combined, options.label_map)
    if active_map:
        from curate.labelmap import apply_box_map

        ann, boxes_renamed = apply_box_map(ann, active_map, options.label_map)
        if boxes_renamed:
            label_changes.append({"boxes": boxes_renamed, "by": "labelmap"})

    order = sorted(all_sources, key=lambda s: all_sources[s].get("order", 0))
    priority = list(options.priority or []) + order
    merged: dict[str, Any] = {"added": 0, "conflicts": [], "not_moved": []}
    if options.exact_duplicates:
        combined = mark_exact(combined, priority, annotated)
        ann, merged = merge_duplicate_boxes(combined, ann)
    if active_map:  # groups dedupe made: their labels may agree now, or disagree
        from curate.labelmap import refresh_conflicts

        combined = refresh_conflicts(combined)
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
    from curate.labelmap import similar_class_names, similar_warning

    similar = similar_class_names(combined, ann, order)
    label_warnings = [similar_warning(g, ws.root) for g in similar]
    if label_changes:
        run["relabelled_by_map"] = len(label_changes)
    if similar:
        summary["similar_labels"] = [{"names": g["names"], "suggest": g["suggest"]} for g in similar]
    if warnings or box_problems or label_warnings:
        summary["warnings"] = warnings + box_problems + label_warnings
    record = {"sources": {n: str(p) for n, p, _ in sources}, "skipped": skipped, "box_problems": box_problems,
              "classes": classes, "source_problems": source_problems, "similar_labels": similar,
              "label_map": active_map, "label_changes": label_changes}
    return StageResult(combined, ann, summary=summary, record=record,
                       files={SOURCES_FILE: sources_bytes(all_sources), **map_files})


def _apply_label_map(ws: Workspace, manifest: pd.DataFrame, given: dict[str, str]
                     ) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, str], dict[str, bytes]]:
    """Apply the workspace's active label map (and one given now, merged into it) to the source labels."""
    from curate.labelmap import LABELMAP_FILE, apply_map, check_map, compose, map_bytes, map_from_bytes

    stored = map_from_bytes(ws.read_file(LABELMAP_FILE))
    if given:
        check_map(given)
    active = compose(stored, given) if given else stored
    if not active and not stored:
        return manifest, [], {}, {}
    out, changes = apply_map(manifest, active, given)
    files = {LABELMAP_FILE: map_bytes(active)} if active != stored else {}
    return out, changes, active, files


def ingest_into(root: str | Path, options: IngestOptions, *,
                record_options: dict[str, Any] | None = None) -> tuple[Workspace, StageResult]:
    """Create the workspace at ``root`` when it is new, and ingest ``options.sources`` into it.

    A failed first ingest (a bad ``--layout``, an unreadable list, any
    error) leaves nothing behind: the folders curate made are removed, and a
    folder that was there (empty) is emptied again. A failed later ingest
    leaves the workspace as it was: the tables and ``sources.json`` are
    written only when the run succeeds. An interrupted run (Ctrl-C, kill)
    keeps its checkpoints in ``.partial/``, so that running it again resumes.

        >>> import tempfile
        >>> from curate.demo import bundled_photos_dir
        >>> root = Path(tempfile.mkdtemp()) / "new" / "ws"
        >>> opts = IngestOptions([SourceSpec(bundled_photos_dir(), layout="no-such-layout")], workers=1)
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
            "label", "label_origin", "split", "original_label", "label_detail", "label_issue_score",
            "suggested_label"]
    for c in cols:  # a manifest written before a column existed
        if c not in manifest.columns:
            manifest = manifest.assign(**{c: None})
    old = manifest.set_index("sample_id")[cols].reindex(new["sample_id"])
    old_sha = old["sha256"].to_numpy(dtype=object)
    same_file = pd.notna(old_sha) & (old_sha == new["sha256"].to_numpy(dtype=object))
    decided = same_file & old["decided_by"].notna().to_numpy() & (old["decided_by"] != "ingest").to_numpy()
    relabelled = same_file & old["label_origin"].notna().to_numpy() & (old["label_origin"] != "source").to_numpy()
    split_before = same_file & new["split"].isna().to_numpy() & old["split"].notna().to_numpy()
    for mask, names in ((decided, ("status", "reason", "detail", "duplicate_of", "dup_group", "decided_by")),
                        (relabelled, ("label", "label_origin", "label_detail")), (split_before, ("split",)),
                        (same_file, ("label_issue_score", "suggested_label"))):
        for c in names:
            if mask.any():
                new.loc[mask, c] = old[c].to_numpy(dtype=object)[mask]
    if decided.any():
        new.loc[decided, "label_conflict"] = old["label_conflict"].to_numpy()[decided].astype(bool)
    # the label as first read is set once: a list that changes a file's label later does not rewrite it
    first = old["original_label"].notna().to_numpy()
    if first.any():
        new.loc[first, "original_label"] = old["original_label"].to_numpy(dtype=object)[first]
    return new
