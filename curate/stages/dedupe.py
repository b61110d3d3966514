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

   ``--keep`` reorders or drops the first three.

Members of a group whose labels differ are flagged ``label_conflict``; the
conflict is reported, never silently resolved (the representative keeps its
own label, the others stay ``duplicate`` so nothing is exported twice).

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
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curate.errors import OptionError
from curate.groups import KEEP_CRITERIA, UnionFind, apply_groups, connected_groups, is_copy_name, keeper_order
from curate.lineage import AUGMENT_LAYOUT
from curate.parallel import WorkerCrash, WorkerPool
from curate.verify import PairCheck, VerifyOptions

if TYPE_CHECKING:
    from curate.workspace import StageResult, Workspace


@dataclass
class DedupeOptions:
    """Options of ``curate dedupe`` (see ``curate dedupe --help`` and docs/dedupe.md)."""

    max_hamming: int = 8  # d4hash bits for whole-image candidates (and crop windows)
    crops: bool = True  # also search crop windows
    verify: bool = True  # check candidate pairs on the pixels
    min_contrast: float = 3.0  # hash_contrast below this: no near-duplicate search
    priority: list[str] | None = None  # source names, most trusted first
    keep: tuple[str, ...] = KEEP_CRITERIA
    dry_run: bool = False
    report: Path | None = None  # .csv or .json
    conflicts: bool = False  # list every label conflict in the summary
    workers: int = 0  # 0: all cores
    max_partners: int = 32  # candidate pairs kept per image, nearest first
    copies: bool = True  # also search the stored keypoints (crops, screenshots, turns: curate.copydetect)
    verify_options: VerifyOptions = field(default_factory=VerifyOptions)
    progress: bool = False


# Whole-image matches need at most this many bits in the seven flipped/turned
# variants before the exact search is used; measured mirror/90-degree copies
# differ by 0-2 bits (docs/benchmarks.md), so the cheaper one-flip search is exact here.
_TURNED_EXACT_BITS = 5
# D4 variants queried: rot270 (index 6) is left out because a pair related by
# rot270 is found from its other side as rot90.
_TURNS = (1, 2, 3, 4, 5, 7)


def candidate_pairs(
    d4: np.ndarray,
    crops: np.ndarray | None,
    max_hamming: int,
) -> pd.DataFrame:
    """Candidate near-duplicate pairs among rows with hashes, from the Hamming index.

    ``d4``: uint64 d4hash per row; ``crops``: uint64 (rows, windows) or None.
    Returns one row per unordered pair: ``a``, ``b`` (positions, a < b),
    ``d4`` (turn ``D4_NAMES[d4]`` applied to image ``b`` lines it up with
    ``a``), ``hamming`` and ``kind`` (``identical``, ``whole``, ``turned``,
    ``crop``, ``window``), keeping the closest match of each pair.

    >>> h = np.array([0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0E, 0xFFFF0000FFFF0000], dtype=np.uint64)
    >>> candidate_pairs(h, None, 4)[["a", "b", "hamming", "kind"]].values.tolist()
    [[0, 1, 1, 'whole']]
    """
    from curate.hashing import d4_variants
    from curate.index import HammingIndex

    n = len(d4)
    frames: list[pd.DataFrame] = []
    if n < 2:
        return _empty_pairs()
    # Identical hashes: chain each to the first of its value (no quadratic blow-up).
    uniq, first, inverse = np.unique(d4, return_index=True, return_inverse=True)
    same = np.flatnonzero(first[inverse] != np.arange(n))
    if len(same):
        frames.append(_pairs(first[inverse[same]], same, 0, np.zeros(len(same), np.int64), "identical"))
    rep = first  # one row per distinct hash represents it in the searches
    index = HammingIndex(uniq, max_hamming)
    qi, xi, dist = index.search(uniq, exclude_self=True)
    frames.append(_pairs(rep[xi], rep[qi], 0, dist, "whole"))
    variants = d4_variants(uniq)
    turned_reach = min(index.flips, max(_TURNED_EXACT_BITS // index.blocks, 1))
    for t in _TURNS:
        # variants[t][q] ~ uniq[x]: turning image q by t lines it up with image x.
        qi, xi, dist = index.search(variants[t], reach=turned_reach)
        keep = qi != xi
        frames.append(_pairs(rep[xi[keep]], rep[qi[keep]], t, dist[keep], "turned"))
    if crops is not None:
        have = np.flatnonzero((crops != 0).any(axis=1)[rep])  # positions in uniq with windows
        wins = crops[rep[have]]
        for k in range(wins.shape[1]):
            # A window of q matches the whole of x: x is a crop of q.
            qi, xi, dist = index.search(wins[:, k], reach=min(index.flips, 1))
            q = have[qi]
            keep = q != xi
            frames.append(_pairs(rep[q[keep]], rep[xi[keep]], 0, dist[keep], "crop"))
            # The same window of both: turned a few degrees, a logo in another corner.
            w_index = HammingIndex(wins[:, k], max_hamming, table_flips=0)
            qi, xi, dist = w_index.search(wins[:, k], reach=min(w_index.flips, 1), exclude_self=True)
            frames.append(_pairs(rep[have[xi]], rep[have[qi]], 0, dist, "window"))
    pairs = pd.concat(frames, ignore_index=True)
    if not len(pairs):
        return _empty_pairs()
    kind_rank = pairs["kind"].map({"identical": 0, "whole": 1, "turned": 2, "crop": 3, "window": 4})
    pairs = pairs.assign(_k=kind_rank).sort_values(["hamming", "_k", "a", "b"], kind="mergesort")
    return pairs.drop_duplicates(["a", "b"]).drop(columns="_k").reset_index(drop=True)


def _pairs(a: np.ndarray, b: np.ndarray, d4: int, hamming: np.ndarray, kind: str) -> pd.DataFrame:
    """Pairs (image b turned by d4 ~ image a) normalised to a < b."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    turn = np.full(len(a), d4, np.int64)
    swap = a > b
    if swap.any():
        # From the other side the turn is the inverse: rot90 <-> rot270, others are their own.
        inverse = np.array([0, 1, 2, 3, 4, 6, 5, 7])
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        turn = np.where(swap, inverse[turn], turn)
    return pd.DataFrame({"a": a, "b": b, "d4": turn, "hamming": np.asarray(hamming, np.int64), "kind": kind})


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"a": pd.Series([], dtype=np.int64), "b": pd.Series([], dtype=np.int64),
                         "d4": pd.Series([], dtype=np.int64), "hamming": pd.Series([], dtype=np.int64),
                         "kind": pd.Series([], dtype=object)})


def cap_partners(pairs: pd.DataFrame, max_partners: int) -> pd.DataFrame:
    """Keep each image's ``max_partners`` nearest candidates (a guard against
    degenerate hashes that match thousands of images)."""
    if not len(pairs):
        return pairs
    ordered = pairs.sort_values(["hamming", "a", "b"], kind="mergesort")
    rank_a = ordered.groupby("a").cumcount()
    rank_b = ordered.groupby("b").cumcount()
    return ordered[(rank_a < max_partners) & (rank_b < max_partners)].sort_index()


def _restore_decider(manifest: pd.DataFrame, rows: pd.Index) -> pd.Series:
    """Who decided a row before dedupe dropped it: ingest, or the stage that made it."""
    derived = manifest.loc[rows, "parent_id"].notna()
    return manifest.loc[rows, "layout"].where(derived, "ingest")


def _pair_crashed(task: tuple[str, str, int, Any], crash: WorkerCrash) -> PairCheck:
    """A pair whose worker process died on it every time is not merged: it could not be verified. Which of
    the two files crashed the decoder is not known, so neither row is dropped; the reason is reported."""
    return PairCheck(False, "", 0.0, f"not verified: {crash.message()}")


def verify_candidates(paths: np.ndarray, a: np.ndarray, b: np.ndarray, d4: np.ndarray, known: np.ndarray,
                      options: DedupeOptions, *, geometry: dict[int, Any] | None = None,
                      hints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check candidate pairs on the pixels, nearest first, in parallel batches.

    ``known`` pairs (identical bytes) are accepted without decoding. A pair
    whose images are already joined through verified pairs is not decoded
    either (it cannot change the groups): its method is ``transitive``.
    Returns (accepted, method, agreement, why_not) per pair; ``geometry``, when
    given, receives ``pair number -> (container, region)`` for the verified
    pairs where one picture lies inside the other.
    """
    from curate.verify import verify_paths

    n = len(a)
    accepted = known.copy()
    methods = np.where(known, "exact", "").astype(object)
    agreement = np.where(known, 1.0, np.nan)
    why_not = np.full(n, "", dtype=object)
    uf = UnionFind(int(max(a.max(initial=0), b.max(initial=0))) + 1)
    for j in np.flatnonzero(known).tolist():
        uf.union(int(a[j]), int(b[j]))
    pending = np.flatnonzero(~known)
    workers = options.workers or os.cpu_count() or 1
    batch = max(64, 64 * workers)
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), unit="pair", file=sys.stderr, desc="verify")
    pool = None
    try:
        if workers > 1 and len(pending) >= 64:
            pool = WorkerPool(verify_paths, workers)
        queue: list[int] = [int(i) for i in pending]
        while queue:
            # One pair per group in a batch: a copy's other pairs into the same
            # group then become transitive, not decoded.
            todo: list[int] = []
            later: list[int] = []
            seen: set[int] = set()
            scanned = 0
            for i in queue:
                scanned += 1
                ra, rb = uf.find(int(a[i])), uf.find(int(b[i]))
                if ra == rb:
                    accepted[i], methods[i] = True, "transitive"
                    if bar:
                        bar.update()
                elif ra in seen or rb in seen:
                    later.append(i)
                else:
                    seen.update((ra, rb))
                    todo.append(i)
                    if len(todo) >= batch or scanned >= 16 * batch:
                        break
            queue = later + queue[scanned:]
            todo.sort(key=lambda i: (a[i], b[i]))  # a worker's image cache then serves repeats
            tasks = [(str(paths[a[i]]), str(paths[b[i]]), int(d4[i]), options.verify_options,
                      *(() if hints is None or not isinstance(hints[i], tuple) else (hints[i],))) for i in todo]
            if pool is not None:
                checks = pool.map(tasks, chunksize=max(1, len(tasks) // (workers * 4)), on_crash=_pair_crashed)
            else:
                checks = [verify_paths(t) for t in tasks]
            for i, c in zip(todo, checks, strict=True):
                accepted[i], agreement[i] = c.accepted, c.agreement
                methods[i] = c.method or "rejected"
                why_not[i] = "" if c.accepted else c.detail
                if c.accepted:
                    uf.union(int(a[i]), int(b[i]))
                    if geometry is not None and c.container:
                        geometry[i] = (c.container, c.region, c.surround)
            if bar:
                bar.update(len(todo))
    finally:
        if pool is not None:
            pool.close()
        if bar:
            bar.close()
    return accepted, methods, agreement, why_not


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


@dataclass
class NearPairs:
    """Candidate pairs of :func:`near_copy_pairs` (positions in its frame) and how each was verified."""

    pairs: pd.DataFrame
    a: np.ndarray
    b: np.ndarray
    accepted: np.ndarray
    methods: np.ndarray
    agreement: np.ndarray
    why_not: np.ndarray
    geometry: dict[int, tuple[str, tuple[tuple[float, float], ...], str]]
    low_info: int = 0
    unhashed: int = 0
    search_s: float = 0.0
    verify_s: float = 0.0


def near_copy_pairs(frame: pd.DataFrame, options: DedupeOptions) -> NearPairs:
    """The search and verification of ``curate dedupe`` over ``frame``'s rows (``curate check`` uses it too).

    Candidates come from the stored hashes (whole image, flips/turns, crop
    windows) and, with ``options.copies``, from the stored keypoints
    (:mod:`curate.copydetect`: crops to half the area, screenshots, frames,
    captions, turns up to 30 degrees, mirrors); every pair is then verified on
    the pixels unless ``options.verify`` is off. Positions ``a``, ``b`` index
    ``frame``'s rows; ``geometry`` maps a pair's number to which image contains
    the other (``"a"``/``"b"``) and where (see :class:`curate.verify.PairCheck`).
    """
    from curate.hashing import CROP_WINDOWS, crop_hashes_to_uint64, hashes_to_uint64

    sub = frame
    searchable = (sub["d4hash"].notna() & (pd.to_numeric(sub["hash_contrast"], errors="coerce").fillna(0)
                                           >= options.min_contrast)).to_numpy()
    low_info = int((sub["d4hash"].notna().to_numpy() & ~searchable).sum())
    unhashed = int((sub["d4hash"].isna() & sub["sha256"].notna()).sum())
    d4 = hashes_to_uint64(sub.loc[searchable, "d4hash"].tolist())
    crops = None
    if options.crops:
        ch = sub.loc[searchable, "crop_hashes"]
        ok = ch.notna().to_numpy()
        crops = np.zeros((int(searchable.sum()), len(CROP_WINDOWS)), np.uint64)
        if ok.any():
            crops[ok] = crop_hashes_to_uint64(ch[ok].tolist())
    t_search = time.perf_counter()
    pairs = candidate_pairs(d4, crops, options.max_hamming)
    if options.copies and "keypoints" in sub.columns:
        pairs = _with_copy_pairs(pairs, sub.loc[searchable, "keypoints"].tolist())
    pairs = cap_partners(pairs, options.max_partners)
    search_s = time.perf_counter() - t_search

    # Positions in `frame`: hashed rows map through their own positions.
    pos_of_hashed = np.flatnonzero(searchable)
    a = pos_of_hashed[pairs["a"].to_numpy()] if len(pairs) else np.zeros(0, np.int64)
    b = pos_of_hashed[pairs["b"].to_numpy()] if len(pairs) else np.zeros(0, np.int64)
    sha = sub["sha256"].to_numpy()
    same_bytes = (sha[a] == sha[b]) & pd.notna(sha[a]) if len(a) else np.zeros(0, bool)
    t_verify = time.perf_counter()
    geometry: dict[int, tuple[str, tuple[tuple[float, float], ...], str]] = {}
    if options.verify and len(a):
        accepted, methods, agreement, why_not = verify_candidates(
            sub["path"].to_numpy(), a, b, pairs["d4"].to_numpy(), same_bytes, options, geometry=geometry,
            hints=pairs["hint"].to_numpy() if "hint" in pairs.columns else None)
    else:
        accepted = np.ones(len(a), bool)
        methods = np.where(same_bytes, "exact", "hash").astype(object)
        agreement = np.where(same_bytes, 1.0, np.nan)
        why_not = np.full(len(a), "", dtype=object)
    return NearPairs(pairs, a, b, accepted, methods, agreement, why_not, geometry, low_info, unhashed,
                     search_s, time.perf_counter() - t_verify)


# Hamming distance reported for a pair found by keypoints, not by a hash (past any hash distance).
COPY_MATCH_BITS = 64


def _with_copy_pairs(pairs: pd.DataFrame, keypoints: list[Any]) -> pd.DataFrame:
    """Add the keypoint candidates (kind ``copy``) that the hash search did not already find."""
    from curate.copydetect import find_copy_pairs

    hints: list[Any] = []
    ka, kb, inliers, mirror = find_copy_pairs(keypoints, hints=hints)
    if not len(ka):
        return pairs
    copy = pd.DataFrame({"a": ka.astype(np.int64), "b": kb.astype(np.int64),
                         "d4": np.where(mirror, 2, 0).astype(np.int64),  # D4_NAMES[2] is the mirror
                         "hamming": np.full(len(ka), COPY_MATCH_BITS, np.int64), "kind": "copy",
                         "hint": pd.Series(hints, dtype=object)})
    # Most keypoint matches first, so that cap_partners keeps the best supported.
    copy = copy.iloc[np.argsort(-inliers, kind="stable")]
    merged = pd.concat([pairs, copy], ignore_index=True).drop_duplicates(["a", "b"], keep="first")
    return merged.reset_index(drop=True)


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

    >>> import pathlib, skimage, tempfile
    >>> from PIL import Image
    >>> from curate.workspace import Workspace
    >>> from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> cat = Image.open(pathlib.Path(skimage.data_dir) / "chelsea.png")
    >>> cat.save(src / "cat.png"); cat.resize((225, 150)).save(src / "cat_small.jpg", quality=80)
    >>> Image.open(pathlib.Path(skimage.data_dir) / "coffee.png").save(src / "coffee.png")
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
        ordered = sorted(labels, key=rank_of.__getitem__)
        keeper = ordered[0]
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
