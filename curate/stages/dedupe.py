"""``curate dedupe``: near duplicates across all sources.

Exact duplicates (same sha256) are marked at ingest with
:func:`curate.groups.mark_exact`. ``curate dedupe`` (:func:`dedupe`) finds near
duplicates across all sources from the hashes stored at ingest (docs/dedupe.md):

1. **candidates** from a Hamming index (:mod:`curate.index`), never comparing
   every pair: whole images within ``max_hamming`` bits of ``d4hash`` in any of
   the eight flips/rotations (computed from the stored hash); with ``crops``,
   also an image whose crop windows match another's whole image (a crop) or
   the same window of another (a few degrees of rotation, a watermark).
2. **verification** of each candidate pair on the pixels
   (:mod:`curate.verify`), decoding only images that are in a candidate pair.
3. **groups**: connected components of the verified pairs and of identical
   bytes, marked through :func:`curate.groups.apply_groups`, so one policy
   (:mod:`curate.groups`) decides which copy is kept:

   1. source priority: the order sources were given (``--priority`` overrides);
   2. resolution: more pixels first;
   3. annotated rows (rows with boxes) first;
   4. a file name that is not a copy name (``x (1).jpg``, ``x - Copy.jpg``,
      ``Copy of x.jpg``: :func:`curate.groups.is_copy_name`) before one that is;
   5. stable order: source, then relative path, then sample_id.

   ``--keep`` reorders or drops the first three. Before them, the label vote:
   when the group's labels disagree and one holds a strict majority, the
   keeper is the best-ranked member carrying it (issue 16; not in a group a
   person decided in review).

Members of a group whose labels differ are flagged ``label_conflict``; the
conflict is reported, never silently resolved (the representative keeps its
own label, the others stay ``duplicate`` so nothing is exported twice);
``curate labels --resolve`` settles it as a recorded decision.

Re-running is idempotent: earlier ``dedupe`` decisions are recomputed, and rows
a person decided in review are never changed (a row kept in review stays kept
and is preferred as its group's representative). The augmented copies
``curate balance`` makes (``layout = augment``) are near copies of their
parent on purpose and never take part.

    >>> [k.kind for k in candidate_pairs(np.array([5, 5], dtype=np.uint64), None, 0).itertuples()]
    ['identical']
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curate.errors import OptionError
from curate.groups import (
    KEEP_CRITERIA,
    apply_groups,
    connected_groups,
    is_copy_name,
    keeper_order,
    minority_labels,
)
from curate.lineage import AUGMENT_LAYOUT
from curate.nearcopies import (  # the search lives on floor 1, shared with `curate check`; names kept here too
    COPY_MATCH_BITS,
    DedupeOptions,
    NearPairs,
    candidate_pairs,
    cap_partners,
    near_copy_pairs,
    verify_candidates,
)

__all__ = ["COPY_MATCH_BITS", "DedupeOptions", "NearPairs", "apply_groups", "candidate_pairs", "cap_partners",
           "connected_groups", "dedupe", "is_copy_name", "keeper_order", "near_copy_pairs", "verify_candidates"]

if TYPE_CHECKING:
    from curate.workspace import StageResult, Workspace


def _restore_decider(manifest: pd.DataFrame, rows: pd.Index) -> pd.Series:
    """Who decided a row before dedupe dropped it: ingest, or the stage that made it."""
    derived = manifest.loc[rows, "parent_id"].notna()
    return manifest.loc[rows, "layout"].where(derived, "ingest")


def _why_kept(k: dict[str, Any], r: dict[str, Any], criteria: Sequence[str], source_rank: dict[str, int],
              annotated: set[str], in_review: bool) -> str:
    """The first keeper criterion on which the kept row ``k`` beats the runner-up ``r``."""
    if in_review:
        return "kept in review"
    for c in criteria:
        if c == "priority" and source_rank[k["source"]] != source_rank[r["source"]]:
            return f"source priority: {k['source']} before {r['source']}"
        if c == "uncropped" and r.get("not_original") and not k.get("not_original"):
            return f"uncropped: {Path(str(r['rel_path'])).name} is a crop, or a padded or shown copy"
        if c == "resolution":
            pk = (_int(k["width"]) or 0) * (_int(k["height"]) or 0)
            pr = (_int(r["width"]) or 0) * (_int(r["height"]) or 0)
            if pk != pr:
                return f"resolution: {k['width']}x{k['height']} > {r['width']}x{r['height']}"
        if c == "annotated" and (k["sample_id"] in annotated) != (r["sample_id"] in annotated):
            return "annotated: has boxes"
    if is_copy_name(str(k["rel_path"])) != is_copy_name(str(r["rel_path"])):
        return f"name: {Path(str(r['rel_path'])).name} looks like a copy"
    return "stable order: source, path"


def _mark_containment(out: pd.DataFrame, rows: pd.Index, a: np.ndarray, b: np.ndarray, accepted: np.ndarray,
                      geometry: dict[int, tuple[str, tuple[tuple[float, float], ...], str]]) -> set[int]:
    """Set ``contained_in`` and ``match_region`` on rows found inside another (verified pairs only).

    Returns the rows that are not an original: a crop (the picture goes on
    around it in its container), or a padded or shown copy (a frame, caption
    band or window around the whole of the other picture).
    """
    not_original: set[int] = set()
    for k, (who, region, surround) in geometry.items():
        if not accepted[k] or who not in ("a", "b"):
            continue
        outer, inner = (a[k], b[k]) if who == "a" else (b[k], a[k])
        o, i = rows[int(outer)], rows[int(inner)]
        not_original.add(int(i) if surround == "picture" else int(o))
        if pd.notna(out.at[i, "contained_in"]):
            continue
        w, h = out.at[o, "width"], out.at[o, "height"]
        if pd.isna(w) or pd.isna(h):
            continue
        corners = [[round(x * float(w), 1), round(y * float(h), 1)] for x, y in region]
        out.at[i, "contained_in"] = out.at[o, "sample_id"]
        out.at[i, "match_region"] = json.dumps(corners)
    return not_original


def dedupe(manifest: pd.DataFrame, options: DedupeOptions, *, ws: Workspace | None = None,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Find near-duplicate groups among kept rows and keep one per group.

    Returns a :class:`curate.workspace.StageResult` (``write=False`` for a dry run).

    >>> import pathlib, tempfile
    >>> from curate.demo import bundled_photos_dir
    >>> from PIL import Image
    >>> from curate.workspace import Workspace
    >>> from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> cat = Image.open(bundled_photos_dir() / "chelsea.png")
    >>> cat.save(src / "cat.png"); cat.resize((225, 150)).save(src / "cat_small.jpg", quality=80)
    >>> Image.open(bundled_photos_dir() / "coffee.png").save(src / "coffee.png")
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> _ = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="s", layout="flat")], workers=1))
    >>> res = ws.run_stage("dedupe", dedupe, DedupeOptions(workers=1))
    >>> res.summary["dedupe"]["groups"], res.summary["dedupe"]["duplicates"]
    (1, 1)
    """
    from curate.workspace import StageResult

    t0 = time.perf_counter()
    unknown = [c for c in options.keep if c not in KEEP_CRITERIA]
    if unknown:
        raise OptionError("", field="--keep", expected=f"a comma-separated subset of {','.join(KEEP_CRITERIA)}",
                          found=",".join(options.keep))
    if not 0 <= options.max_hamming <= 16:
        raise OptionError("", field="--max-hamming", expected="0..16", found=options.max_hamming)
    if options.report is not None:
        from curate.paths import check_output, workspace_sources

        check_report_path(Path(options.report))
        if ws is not None:
            check_output(options.report, sources=workspace_sources(ws.root), workspace=ws.root, option="--report")
    out = manifest.copy()
    review = (out["decided_by"] == "review").to_numpy()
    # balance's augmented copies are near-copies on purpose (in their parent's split): never grouped
    copies = (out["layout"] == AUGMENT_LAYOUT).to_numpy()
    # Undo this stage's earlier decisions: they are recomputed below (idempotent).
    ours = out.index[(out["decided_by"] == "dedupe").to_numpy()]
    if len(ours):
        out.loc[ours, "decided_by"] = _restore_decider(out, ours)
        out.loc[ours, ["status", "reason", "duplicate_of", "detail"]] = ["kept", None, None, None]
    eligible = ~review & ~copies & (
        (out["status"] == "kept").to_numpy()
        | ((out["reason"] == "duplicate") & out["decided_by"].isin(["ingest"])).to_numpy()
    )
    members = eligible | (review & ~copies & (out["status"] == "kept").to_numpy())
    before = out[["status", "reason", "duplicate_of", "decided_by"]].copy()
    # Exact copies marked at ingest join the search as kept rows; unchanged
    # decisions are handed back to ingest below.
    exact = out.index[eligible & (out["status"] == "dropped").to_numpy()]
    out.loc[exact, ["status", "reason", "duplicate_of", "detail"]] = ["kept", None, None, None]
    out.loc[eligible, "dup_group"] = None
    out.loc[eligible, "label_conflict"] = False

    rows = out.index[members]
    out.loc[rows, ["contained_in", "match_region"]] = None  # recomputed below
    found = near_copy_pairs(out.loc[rows], options)
    pairs, a, b = found.pairs, found.a, found.b
    accepted, methods, agreement, why_not = found.accepted, found.methods, found.agreement, found.why_not
    low_info, unhashed, search_s, verify_s = found.low_info, found.unhashed, found.search_s, found.verify_s
    sub = out.loc[rows, ["sha256"]]
    not_original = _mark_containment(out, rows, a, b, accepted, found.geometry)
    # Identical bytes always group, found by hash or not (low-information rows too).
    ex = sub.reset_index(drop=True)
    ex = ex[ex["sha256"].notna()]
    ex_first = (ex.groupby("sha256").cumcount() > 0).to_numpy()
    first_pos = ex.index.to_series().groupby(ex["sha256"].to_numpy()).transform("first").to_numpy()
    ea = first_pos[ex_first].astype(np.int64)
    eb = ex.index.to_numpy()[ex_first].astype(np.int64)
    edge_a = np.concatenate([a[accepted], ea])
    edge_b = np.concatenate([b[accepted], eb])
    groups = connected_groups(len(rows), edge_a, edge_b)

    sources_order = list(options.priority or [])
    if ws is not None:
        from curate.workspace import load_sources

        known = load_sources(ws)
        sources_order += sorted(known, key=lambda s: known[s].get("order", 0))
    annotated = set(annotations["sample_id"]) if annotations is not None and len(annotations) else set()
    review_rows = {int(i) for i in rows[review[members]]}
    rank = keeper_order(out.loc[rows], sources_order, annotated, options.keep,
                        first=pd.Series(review[members], index=rows),
                        not_original=pd.Series(rows.isin(list(not_original)), index=rows))
    label_groups = [rows[g].tolist() for g in groups]
    out = apply_groups(out, label_groups, decided_by="dedupe", rank=rank, protected=review_rows)

    # Rows whose exact-duplicate decision from ingest is unchanged stay ingest's.
    changed = (out["status"] != before["status"]) | (out["duplicate_of"].fillna("") != before["duplicate_of"].fillna(""))
    regained = changed & (out["status"] == "kept") & (before["reason"] == "duplicate")
    out.loc[regained, "decided_by"] = "dedupe"
    unchanged_ingest = ~changed & (before["decided_by"] == "ingest") & (out["reason"] == "duplicate")
    out.loc[unchanged_ingest, "decided_by"] = "ingest"
    out.loc[unchanged_ingest, "detail"] = manifest.loc[unchanged_ingest, "detail"]

    edges = pd.DataFrame({"a": a, "b": b, "hamming": pairs["hamming"].to_numpy() if len(pairs) else [],
                          "kind": pairs["kind"].to_numpy() if len(pairs) else [],
                          "method": methods, "agreement": agreement, "accepted": accepted, "why_not": why_not})
    report = _group_report(out, rows, groups, edges, ea, eb, rank, options, sources_order, annotated, review_rows,
                           not_original)
    _annotate_details(out, report)
    rejected = _rejected_pairs(out, rows, edges)
    if options.report is not None:
        write_report(report, options.report, rejected)
    summary = _summary(out, manifest, report, pairs, accepted, methods, low_info, options,
                       timing={"search_s": round(search_s, 3), "verify_s": round(verify_s, 3),
                               "total_s": round(time.perf_counter() - t0, 3)})
    if unhashed:
        summary["warnings"] = [f"{unhashed} rows have no d4hash (ingested by an older curate) and match only "
                               "byte-identical copies: run `curate ingest` on their sources again to hash them"]
    record = {"groups": [{k: g[k] for k in ("group", "kept", "why", "size")} for g in report[:1000]]}
    new_ann = None
    if annotations is not None and len(annotations):  # the boxes of dropped copies move to the kept one
        from curate.boxes import merge_duplicate_boxes

        merged_ann, merged = merge_duplicate_boxes(out, annotations)
        new_ann = merged_ann if merged["added"] else None
        summary["boxes_from_duplicates"] = merged["added"]
        summary["box_conflicts"] = len(merged["conflicts"])
        if merged["conflicts"] or merged["not_moved"]:
            summary["warnings"] = summary.get("warnings", []) + merged["conflicts"] + merged["not_moved"]
    return StageResult(out, new_ann, summary=summary, record=record, write=not options.dry_run)


def _group_report(out: pd.DataFrame, rows: pd.Index, groups: list[np.ndarray], edges: pd.DataFrame,
                  ea: np.ndarray, eb: np.ndarray, rank: pd.Series, options: DedupeOptions,
                  sources_order: Sequence[str], annotated: set[str], review_rows: set[int],
                  not_original: set[int] | None = None) -> list[dict[str, Any]]:
    """One entry per group: members, how each was matched, which one is kept and why."""
    acc = edges[edges["accepted"]]
    exact = pd.DataFrame({"a": ea, "b": eb, "hamming": 0, "kind": "identical", "method": "exact",
                          "agreement": 1.0, "accepted": True})
    all_edges = pd.concat([acc, exact], ignore_index=True) if len(exact) else acc
    by_node: dict[int, list[dict[str, Any]]] = {}
    for e in all_edges.itertuples(index=False):
        for x, y in ((e.a, e.b), (e.b, e.a)):
            by_node.setdefault(int(x), []).append({"other": int(y), "hamming": int(e.hamming), "kind": e.kind,
                                                   "method": e.method, "agreement": e.agreement})
    report = []
    cols = ["sample_id", "source", "path", "rel_path", "label", "split", "width", "height", "contained_in",
            "match_region"]
    in_groups = rows[np.concatenate(groups)] if groups else rows[:0]
    table = out.loc[in_groups, cols]
    records = table.astype(object).where(table.notna(), None).to_dict("index")
    for i in records:
        records[i]["not_original"] = int(i) in (not_original or set())
    all_sources = sorted(out["source"].unique())
    source_rank = {s: i for i, s in enumerate(dict.fromkeys([*sources_order, *all_sources]))}
    rank_of = rank.to_dict()
    for g in groups:
        labels = [int(rows[i]) for i in g]
        # the order apply_groups keeps by: a person's keep, then the label vote, then the rank
        names = np.array([records[i]["label"] for i in labels], dtype=object)
        minority = dict(zip(labels, minority_labels(names, np.zeros(len(labels), np.int64)), strict=True))
        person = any(i in review_rows for i in labels)  # a person's choice beats the vote (as in apply_groups)
        ordered = sorted(labels, key=lambda i: (not person and bool(minority[i]), rank_of[i]))
        keeper = ordered[0]
        if keeper not in review_rows and keeper != min(labels, key=rank_of.__getitem__):
            label = records[keeper]["label"]
            why = f"label vote: {label} is the group's majority ({int((names == label).sum())} of {len(labels)})"
        else:
            why = _why_kept(records[keeper], records[ordered[1]], options.keep, source_rank, annotated,
                            keeper in review_rows)
        members = []
        for pos, i in zip(g, labels, strict=True):
            r = records[i]
            links = by_node.get(int(pos), [])
            best = min(links, key=lambda e: e["hamming"]) if links else {}
            agreement = best.get("agreement")
            members.append({
                "sample_id": r["sample_id"], "source": r["source"], "path": r["path"],
                "label": r["label"], "split": r["split"], "width": _int(r["width"]), "height": _int(r["height"]),
                "role": "kept" if i == keeper else ("kept (review)" if i in review_rows else "duplicate"),
                "matched_to": records[int(rows[best["other"]])]["sample_id"] if best else None,
                "hamming": best.get("hamming"), "match": best.get("kind"), "verified_by": best.get("method"),
                "agreement": None if agreement is None or pd.isna(agreement) else round(float(agreement), 3),
                "contained_in": r["contained_in"], "match_region": r["match_region"],
            })
        labelset = sorted({m["label"] for m in members if m["label"] is not None})
        splits = sorted({m["split"] for m in members if m["split"] is not None})
        kept_id = records[keeper]["sample_id"]
        report.append({
            "group": kept_id, "kept": kept_id, "why": why,
            "size": len(members), "label_conflict": len(labelset) > 1, "labels": labelset, "splits": splits,
            "sources": sorted({m["source"] for m in members}), "members": members,
        })
    report.sort(key=lambda g: (-g["size"], g["group"]))
    return report


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _annotate_details(out: pd.DataFrame, report: list[dict[str, Any]]) -> None:
    """Say in each newly dropped row's detail how it matched its group."""
    detail = {}
    for g in report:
        for m in g["members"]:
            if m["role"] == "duplicate":
                how = f" ({m['match']} match, {m['hamming']} bits, verified by {m['verified_by']})" if m["match"] else ""
                detail[m["sample_id"]] = f"near copy of {g['kept']}{how}"
    mine = ((out["decided_by"] == "dedupe") & (out["status"] == "dropped")).to_numpy()
    new = out.loc[mine, "sample_id"].map(detail)
    out.loc[new.index[new.notna()], "detail"] = new[new.notna()]


def _rejected_pairs(out: pd.DataFrame, rows: pd.Index, edges: pd.DataFrame) -> list[dict[str, Any]]:
    """Candidate pairs the verification turned down, nearest first (for tuning)."""
    rej = edges[~edges["accepted"]].sort_values("hamming", kind="mergesort")
    ids = out.loc[rows, "sample_id"].to_numpy()
    paths = out.loc[rows, "path"].to_numpy()
    return [{"sample_id": ids[e.a], "path": paths[e.a], "matched_to": ids[e.b], "other_path": paths[e.b],
             "hamming": int(e.hamming), "match": e.kind,
             "agreement": None if pd.isna(e.agreement) else round(float(e.agreement), 3), "why_not": e.why_not}
            for e in rej.itertuples(index=False)]


REPORT_COLUMNS = ("group", "size", "kept", "why_kept", "label_conflict", "sample_id", "role", "source", "path",
                  "label", "split", "width", "height", "matched_to", "hamming", "match", "verified_by",
                  "agreement", "why_not", "contained_in", "match_region")


def check_report_path(path: Path) -> str:
    """The report's format (".csv" or ".json"), or an OptionError saying what is wrong."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise OptionError("", field="--report", expected="a file name ending in .csv or .json", found=path.name)
    if not path.absolute().parent.is_dir():
        raise OptionError("", field="--report", expected="a file in an existing folder",
                          found=f"{path} (no folder {path.absolute().parent})")
    return suffix


def write_report(report: list[dict[str, Any]], path: Path, rejected: list[dict[str, Any]] | None = None) -> None:
    """Write the groups (and rejected candidate pairs) as JSON or CSV, by extension.

    JSON: ``{"groups": [...], "rejected_pairs": [...]}``. CSV: one row per
    group member (``role`` kept / duplicate / kept (review)) and one per
    rejected pair (``role`` rejected, ``why_not`` says why).
    """
    from curate.workspace import atomic_write_bytes

    path = Path(path)
    suffix = check_report_path(path)
    rejected = rejected or []
    if suffix == ".json":
        doc = {"groups": report, "rejected_pairs": rejected}
        atomic_write_bytes(path, (json.dumps(doc, indent=2, default=str) + "\n").encode(), sweep=True)
        return
    rows = []
    for g in report:
        for m in g["members"]:
            rows.append({"group": g["group"], "size": g["size"], "kept": g["kept"],
                         "why_kept": g["why"] if m["role"] == "kept" else "",
                         "label_conflict": g["label_conflict"], **m})
    for r in rejected:
        rows.append({"role": "rejected", "sample_id": r["sample_id"], "path": r["path"],
                     "matched_to": r["matched_to"], "hamming": r["hamming"], "match": r["match"],
                     "agreement": r["agreement"], "why_not": r["why_not"]})
    table = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    for c in ("size", "width", "height", "hamming"):
        table[c] = pd.array(table[c], dtype="Int64")
    atomic_write_bytes(path, table.to_csv(index=False).encode(), sweep=True)


def cross_split(report: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups whose members sit in more than one existing split (a leak until re-split)."""
    return [{"group": g["group"], "splits": g["splits"], "size": g["size"]} for g in report if len(g["splits"]) > 1]


def source_overlap(report: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each pair of sources: how many groups and member rows they share."""
    counts: dict[tuple[str, str], list[int]] = {}
    for g in report:
        by_src: dict[str, int] = {}
        for m in g["members"]:
            by_src[m["source"]] = by_src.get(m["source"], 0) + 1
        srcs = sorted(by_src)
        for i, s in enumerate(srcs):
            for t in srcs[i + 1:]:
                c = counts.setdefault((s, t), [0, 0])
                c[0] += 1
                c[1] += by_src[s] + by_src[t]
    return [{"sources": [s, t], "groups": c[0], "rows": c[1]}
            for (s, t), c in sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))]


def _summary(out: pd.DataFrame, before: pd.DataFrame, report: list[dict[str, Any]], pairs: pd.DataFrame,
             accepted: np.ndarray, methods: np.ndarray, low_info: int, options: DedupeOptions,
             timing: dict[str, float]) -> dict[str, Any]:
    from curate.summary import summarize

    newly = (out["reason"] == "duplicate") & (out["decided_by"] == "dedupe")
    was = (before["reason"] == "duplicate") & (before["decided_by"] == "dedupe")
    by_method = pd.Series(methods[accepted]).value_counts().to_dict() if len(methods) else {}
    conflicts = [{"group": g["group"], "labels": g["labels"], "size": g["size"]} for g in report if g["label_conflict"]]
    straddle = cross_split(report)
    info: dict[str, Any] = {
        "groups": len(report),
        "rows_in_groups": int(sum(g["size"] for g in report)),
        "duplicates": int(newly.sum()),
        "newly_dropped": int((newly & ~was).sum()),
        "restored": int((was & ~newly).sum()),
        "candidate_pairs": int(len(pairs)),
        "verified_pairs": int(accepted.sum()) if options.verify else None,
        "rejected_pairs": int((~accepted).sum()),
        "accepted_by": {str(k): int(v) for k, v in by_method.items()},
        "low_information": low_info,
        "label_conflicts": len(conflicts),
        "cross_split_groups": len(straddle),
        "source_overlap": source_overlap(report)[:20],
        "dry_run": options.dry_run,
        **timing,
    }
    if options.conflicts:
        info["conflicts"] = conflicts
    if straddle:
        info["cross_split"] = straddle[:20]
    if options.report is not None:
        info["report"] = str(options.report)
    return {**summarize(out), "dedupe": info}
