"""``curate balance``: even out class counts, per split (by default only train).

For each balanced split, every class is brought to the target count:

- **undersampling** (a class above the target) keeps a *diverse* subset:
  farthest-point sampling on the stored 64-bit perceptual hashes (Hamming
  distance), so the rows removed are always those closest to a kept one.
  Near-duplicates therefore go first: if any pair of kept rows is within
  ``t`` bits, every removed row is within ``t`` bits of a kept row. Ties go
  to the larger image, then to a seeded draw. With ``priority`` (sources,
  most trusted first) the rows of less trusted sources go first: a source's
  rows are removed only when every less trusted source's are. Removed rows are dropped
  ``balanced_out`` (``decided_by = balance``) with the nearest kept row and
  its distance in ``detail``.
- **oversampling** (a class below the target) makes augmented copies with
  albumentations (:mod:`curate.augment`): copies are spread round-robin over
  the class's kept images (larger images first), each copy is a derived row
  in ``objects/`` with ``parent_id``, ``layout = augment`` and a ``transform``
  record holding the copy number, its seed, the config and the parameters
  albumentations applied. Boxes of the parent are carried through and written
  to ``annotations.parquet`` in the copy's frame. A copy follows its parent's
  split, so copies of one image never land in two splits.

Re-running is idempotent: balance first undoes its own earlier decisions in
the splits it balances (``balanced_out`` rows come back, earlier copies wait),
then decides again. The decision is a pure function of the other rows and the
options, so the same options give the same rows; copies are content- and
id-stable and are revived rather than made twice. Rows decided in review are
never changed: a reviewed kept row counts toward the target and is never
removed.

    >>> parse_target("median"), parse_target("1000")
    ('median', 1000)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate.augment import AugmentConfig, augment_image, copy_seed, validate_config
from curate.errors import CurateError, OptionError
from curate.lineage import AUGMENT_LAYOUT, BALANCE_DECIDER, reset_balance
from curate.parallel import WorkerCrash, WorkerPool
from curate.schema import ANNOTATION_COLUMNS, SPLITS, conform, empty_annotations
from curate.units import format_report
from curate.workspace import StageResult, Workspace

STRATEGIES = ("undersample", "oversample", "both")
TARGETS = ("max", "min", "median")
NO_SPLIT = "none"  # --splits name for rows without a split
DECIDER = BALANCE_DECIDER


@dataclass
class BalanceOptions:
    target: int | str = "median"  # rows per class, or max | min | median of the split's class counts
    strategy: str = "both"
    splits: tuple[str, ...] = ("train",)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    hash_column: str = "phash"
    near_dup_bits: int = 10  # removed rows this close to a kept one are reported as near-duplicates
    max_copies_per_image: int | None = None  # cap on copies of one image (the class may stay short)
    priority: tuple[str, ...] = ()  # sources, most trusted first: undersampling removes the others' rows first
    workers: int = 0  # processes rendering copies (0 = all cores)


def parse_target(text: str | int) -> int | str:
    """``"1000"`` -> 1000; ``"max"``, ``"min"``, ``"median"`` stay names."""
    if isinstance(text, int):
        value: int | str = text
    else:
        t = str(text).strip().lower()
        if t in TARGETS:
            return t
        try:
            value = int(t)
        except ValueError:
            raise OptionError("", field="--target", expected="a count per class or one of max, min, median",
                              found=repr(text)) from None
    if isinstance(value, int) and value < 1:
        raise OptionError("", field="--target", expected="a count >= 1", found=value)
    return value


def parse_splits(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"train,val"`` -> ``("train", "val")``; ``none`` means rows without a split."""
    from curate.formats.base import canonical_split

    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out: list[str] = []
    for p in parts:
        if not p:
            continue
        name = NO_SPLIT if p.lower() == NO_SPLIT else canonical_split(p)
        if name is None:
            raise OptionError("", field="--splits", expected=f"split names from {[*SPLITS, NO_SPLIT]}", found=repr(p))
        if name not in out:
            out.append(name)
    if not out:
        raise OptionError("", field="--splits", expected="at least one split", found=repr(text))
    return tuple(out)


def resolve_target(class_counts: dict[str, int], target: int | str) -> int:
    """The per-class count for one split. ``median`` rounds half up."""
    if isinstance(target, int):
        return target
    values = np.array(sorted(class_counts.values()), dtype=float)
    if not len(values):
        return 0
    if target == "max":
        return int(values.max())
    if target == "min":
        return int(values.min())
    return int(np.floor(np.median(values) + 0.5))


# -- diverse subsets -------------------------------------------------------------

def diverse_subset(
    hashes: np.ndarray,
    k: int,
    *,
    preference: np.ndarray | None = None,
    pinned: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    tier: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Farthest-point sampling of ``k`` rows by Hamming distance of 64-bit hashes.

    ``preference`` ranks rows (0 = most wanted) for the first pick and for ties;
    ``pinned`` rows are always in the subset (reviewed rows); rows not ``valid``
    (no hash) are taken first, as they cannot be compared. ``tier`` (0 = most
    trusted source) ranks above diversity: no row of a tier is taken while a row
    of a more trusted tier is left (farthest-point sampling within a tier). Returns
    ``(selected, nearest, distance)``: a mask, and for every row the selected row
    nearest to it and the distance in bits (-1 / 64 where unknown).

    >>> h = np.array([0, 1, 3, 2**64 - 1], dtype=np.uint64)  # 0, 1, 3 are 1-2 bits apart
    >>> diverse_subset(h, 2)[0].tolist()
    [True, False, False, True]
    """
    n = len(hashes)
    hashes = np.asarray(hashes, dtype=np.uint64)
    rank = np.arange(n) if preference is None else np.asarray(preference)
    pinned = np.zeros(n, bool) if pinned is None else np.asarray(pinned, bool).copy()
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    dist = np.full(n, 65, dtype=np.int64)  # above any real distance, so every row gets a nearest
    nearest = np.full(n, -1, dtype=np.int64)
    selected = np.zeros(n, bool)
    tiebreak = (n - 1 - rank).astype(np.int64)  # larger is better

    def take(i: int) -> None:
        selected[i] = True
        if valid[i]:
            d = np.bitwise_count(hashes ^ hashes[i]).astype(np.int64)
            better = valid & (d < dist)
            dist[better] = d[better]
            nearest[better] = i

    tiers = np.zeros(n, dtype=np.int64) if tier is None else np.asarray(tier, dtype=np.int64)
    for p in np.flatnonzero(pinned).tolist():
        take(p)
    for t in np.unique(tiers).tolist():
        in_tier = tiers == t
        # Rows without a hash first (cannot be judged), best preference first.
        unhashed = np.flatnonzero(~valid & ~selected & in_tier)
        for p in unhashed[np.argsort(rank[unhashed], kind="stable")].tolist():
            if selected.sum() >= k:
                break
            take(p)
        while selected.sum() < min(k, n) and (in_tier & ~selected).any():
            if not selected.any():
                nxt = int(np.argmin(np.where(valid & in_tier, rank, np.iinfo(np.int64).max)))
            else:
                nxt = int(np.argmax(np.where(selected | ~in_tier, -1, dist * n + tiebreak)))
            take(nxt)
    nearest[selected] = np.flatnonzero(selected)
    dist[selected] = 0
    return selected, nearest, np.where(valid, np.minimum(dist, 64), 64)


def _preference(rows: pd.DataFrame, seed: int) -> np.ndarray:
    """Rank rows: more pixels first, then a seeded draw that ignores row order."""
    import hashlib

    px = (rows["width"].fillna(0).astype("int64") * rows["height"].fillna(0).astype("int64")).to_numpy()
    draw = np.array([int.from_bytes(hashlib.sha1(f"{seed}\0{s}".encode()).digest()[:8], "big")
                     for s in rows["sample_id"].astype(str)], dtype=np.uint64)
    order = np.lexsort((draw, -px))
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows))
    return rank


def _hash_array(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    from curate.hashing import hashes_to_uint64

    col = rows[column].astype(object)
    valid = col.notna().to_numpy() & col.astype(str).str.len().eq(16).to_numpy()
    out = np.zeros(len(rows), dtype=np.uint64)
    if valid.any():
        out[valid] = hashes_to_uint64(col[valid].astype(str).tolist())
    return out, valid


# -- the stage -------------------------------------------------------------------

def _in_splits(manifest: pd.DataFrame, splits: tuple[str, ...]) -> pd.Series:
    s = manifest["split"].astype(object)
    mask = s.isin([x for x in splits if x != NO_SPLIT])
    if NO_SPLIT in splits:
        mask |= s.isna()
    return mask


def _split_name(value: Any) -> str:
    return NO_SPLIT if value is None or pd.isna(value) else str(value)


def _counts(manifest: pd.DataFrame, scope: pd.Series) -> dict[str, dict[str, int]]:
    """Kept labelled rows in scope: ``{class: {split: n}}``."""
    rows = manifest[scope & (manifest["status"] == "kept") & manifest["label"].notna()]
    out: dict[str, dict[str, int]] = {}
    for (c, s), n in rows.groupby([rows["label"].astype(str), rows["split"].map(_split_name)]).size().items():
        out.setdefault(str(c), {})[str(s)] = int(n)
    return out


def _check_options(manifest: pd.DataFrame, options: BalanceOptions) -> BalanceOptions:
    if options.strategy not in STRATEGIES:
        raise OptionError("", field="--strategy", expected=f"one of {list(STRATEGIES)}", found=options.strategy)
    if options.hash_column not in ("phash", "dhash"):
        raise OptionError("", field="hash_column", expected="phash or dhash", found=options.hash_column)
    if options.max_copies_per_image is not None and options.max_copies_per_image < 1:
        raise OptionError("", field="--max-copies", expected="a count >= 1", found=options.max_copies_per_image)
    splits = parse_splits(options.splits)
    target = parse_target(options.target)
    unknown = [p for p in options.priority if p not in set(manifest["source"].astype(str))]
    if unknown:
        raise OptionError("", field="--priority", expected="source names of the workspace "
                          f"({', '.join(sorted(set(manifest['source'].astype(str))))})", found=", ".join(unknown))
    validate_config(options.augment)
    scope = _in_splits(manifest, splits)
    labelled = scope & (manifest["status"] == "kept") & manifest["label"].notna()
    if not labelled.any():
        have = manifest.loc[(manifest["status"] == "kept") & manifest["label"].notna(), "split"].map(_split_name)
        found = ", ".join(f"{k} {v}" for k, v in have.value_counts().sort_index().items()) or "no labelled kept rows"
        hint = ("run `curate split WS` first, or pass --splits none to balance rows without a split"
                if (have == NO_SPLIT).any() else "choose splits that hold labelled kept rows")
        raise OptionError("", field="--splits", expected=f"labelled kept rows in {', '.join(splits)}",
                          found=found, hint=hint)
    return dataclasses.replace(options, splits=splits, target=target)


@dataclass
class _Plan:
    drops: list[tuple[int, str]] = field(default_factory=list)  # (index, detail)
    revive: list[int] = field(default_factory=list)
    make: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # (parent index, copy, identity)
    near_dups: int = 0
    warnings: list[str] = field(default_factory=list)


def _plan_undersample(rows: pd.DataFrame, target: int, options: BalanceOptions, plan: _Plan, where: str) -> None:
    pinned = (rows["decided_by"] == "review").to_numpy()
    if pinned.sum() > target:
        plan.warnings.append(f"{where}: {int(pinned.sum())} rows were kept in review, more than the target "
                             f"{target}; they stay")
    hashes, valid = _hash_array(rows, options.hash_column)
    if (~valid).any():
        plan.warnings.append(f"{where}: {int((~valid).sum())} rows have no {options.hash_column}; "
                             "they are kept first, as they cannot be compared")
    selected, nearest, dist = diverse_subset(hashes, target, preference=_preference(rows, options.seed),
                                             pinned=pinned, valid=valid, tier=source_tiers(rows, options.priority))
    ids = rows["sample_id"].to_numpy()
    for pos in np.flatnonzero(~selected):
        j, d = int(nearest[pos]), int(dist[pos])
        if j < 0:  # nothing kept could be compared with it (kept rows have no hash)
            plan.drops.append((rows.index[pos], f"diverse subset of {target}: no kept row with a "
                                                f"{options.hash_column} to compare"))
            continue
        if d <= options.near_dup_bits:
            plan.near_dups += 1
            detail = f"near-duplicate of kept {ids[j]} ({d} bits, {options.hash_column})"
        else:
            detail = f"diverse subset of {target}: nearest kept {ids[j]} is {d} bits away ({options.hash_column})"
        plan.drops.append((rows.index[pos], detail))


def source_tiers(rows: pd.DataFrame, priority: tuple[str, ...] | list[str]) -> np.ndarray | None:
    """Tier of each row's source for undersampling: its place in ``priority`` (most trusted first);
    sources not named come after all named ones. None without a priority.

    >>> source_tiers(pd.DataFrame({"source": ["crawl", "mine", "kaggle"]}), ["mine", "kaggle"]).tolist()
    [2, 0, 1]
    """
    if not priority:
        return None
    order = {s: i for i, s in enumerate(priority)}
    return rows["source"].map(lambda s: order.get(str(s), len(order))).to_numpy(dtype=np.int64)


def _identity(options: BalanceOptions, parent_id: str, copy: int) -> dict[str, Any]:
    """What makes a copy unique; its sample_id is derived from this."""
    return {"op": AUGMENT_LAYOUT, "copy": copy, "seed": copy_seed(options.seed, parent_id, copy),
            "config": dataclasses.asdict(options.augment)}


def _plan_oversample(out: pd.DataFrame, rows: pd.DataFrame, target: int, options: BalanceOptions,
                     plan: _Plan, where: str) -> None:
    from curate.derive import derived_id

    parents = rows[rows["layout"] != AUGMENT_LAYOUT]
    if not len(parents):
        plan.warnings.append(f"{where}: no original images to copy from; left at {len(rows)}")
        return
    parents = parents.iloc[np.argsort(_preference(parents, options.seed), kind="stable")]
    need = target - len(rows)
    cap = options.max_copies_per_image
    ids = set(out["sample_id"])
    index_of = pd.Series(out.index, index=out["sample_id"])
    per_parent = [0] * len(parents)
    made, copy = 0, 0
    # Round-robin: copy 0 of every parent, then copy 1, ... A copy decided in review is
    # neither revived nor remade; that parent simply gets its next copy number next round.
    while made < need:
        progress = False
        for j in range(len(parents)):
            if made >= need:
                break
            if cap is not None and per_parent[j] >= cap:
                continue
            progress = True
            parent = parents.iloc[j]
            identity = _identity(options, str(parent["sample_id"]), copy)
            sid = derived_id(str(parent["sample_id"]), identity)
            if sid in ids:
                i = index_of[sid]
                if out.at[i, "decided_by"] == "review":
                    continue
                plan.revive.append(int(i))
            else:
                plan.make.append((int(parent.name), copy, identity))  # type: ignore[call-overload]
            per_parent[j] += 1
            made += 1
        if not progress:
            break
        copy += 1
    if made < need:
        plan.warnings.append(f"{where}: {len(rows)} rows, target {target}: made {made} copies "
                             f"(at most {cap} per image with --max-copies {cap})")


@dataclass
class CopyTask:
    """The copies to render from one parent: plain data, so it can go to a worker process."""

    ws_root: str
    parent: dict[str, Any]
    boxes: list[dict[str, Any]]  # the parent's annotation rows
    copies: list[tuple[int, dict[str, Any]]]  # (copy number, identity record)
    config: AugmentConfig


def render_copies(task: CopyTask) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Decode the parent once, render each copy, store it in objects/; return (rows, boxes, warnings).

    Storing is safe from several processes: objects are written atomically under their content hash.
    """
    from PIL import Image

    from curate.derive import store_derived, with_hashes
    from curate.imageio import load_display

    ws = Workspace(Path(task.ws_root))
    parent = task.parent
    try:
        img = load_display(parent["path"])
    except CurateError as e:
        return [], [], [f"cannot copy {parent['sample_id']}: {e}"]
    arr = np.asarray(img)
    box_list = [[b["x1"], b["y1"], b["x2"], b["y2"]] for b in task.boxes]
    rows: list[dict[str, Any]] = []
    ann_rows: list[dict[str, Any]] = []
    for _copy, identity in task.copies:
        res = augment_image(arr, box_list, task.config, seed=int(identity["seed"]))
        pil = Image.fromarray(res.image)
        row = store_derived(ws, parent, pil, identity, layout=AUGMENT_LAYOUT)
        record = json.loads(row["transform"])
        record.update(parent_wh=[img.width, img.height], applied=res.applied,
                      boxes={"in": len(box_list), "out": len(res.boxes_xyxy), "dropped": res.boxes_dropped})
        row["transform"] = json.dumps(record, sort_keys=True)
        row["decided_by"] = DECIDER
        rows.append(with_hashes(row, pil))
        for (x1, y1, x2, y2), bi in zip(res.boxes_xyxy, res.box_index, strict=True):
            src = task.boxes[bi]
            ann_rows.append({"sample_id": row["sample_id"], "label": src["label"], "x1": x1, "y1": y1,
                             "x2": x2, "y2": y2, "score": src.get("score"), "origin": AUGMENT_LAYOUT,
                             "iscrowd": bool(src.get("iscrowd", False))})
    return rows, ann_rows, []


def _copies_crashed(task: CopyTask, crash: WorkerCrash) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """No copies of a parent whose worker process died on it every time; a warning says so, as for an
    unreadable parent (the parent row itself stays as it is: balance adds copies, it does not judge files)."""
    return [], [], [f"cannot copy {task.parent['sample_id']}: {crash.message()}"]


# Below this many copies a process pool costs more than it saves: each worker
# imports albumentations (and with it torch), about 5 s on the reference machine.
POOL_MIN_COPIES = 48


def _make_copies(ws: Workspace, out: pd.DataFrame, annotations: pd.DataFrame, plan: _Plan,
                 options: BalanceOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Render the planned copies, parent by parent, in a process pool when there are many."""
    import os

    by_parent: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for pidx, copy, identity in plan.make:
        by_parent.setdefault(pidx, []).append((copy, identity))
    boxes_by_id = {str(sid): g.to_dict("records") for sid, g in annotations.groupby("sample_id")} \
        if len(annotations) else {}
    tasks = []
    for pidx, copies in by_parent.items():
        parent = {k: (None if _isna(v) else v) for k, v in out.loc[pidx].to_dict().items()}
        tasks.append(CopyTask(str(ws.root), parent, boxes_by_id.get(str(parent["sample_id"]), []), copies,
                              options.augment))
    workers = options.workers or os.cpu_count() or 1
    if workers == 1 or len(plan.make) < POOL_MIN_COPIES or len(tasks) < 2:
        results = [render_copies(t) for t in tasks]
    else:
        with WorkerPool(render_copies, min(workers, len(tasks))) as pool:
            results = pool.map(tasks, chunksize=1, on_crash=_copies_crashed)
    rows = [r for res in results for r in res[0]]
    ann_rows = [a for res in results for a in res[1]]
    plan.warnings += [w for res in results for w in res[2]]
    return rows, ann_rows


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def balance(manifest: pd.DataFrame, options: BalanceOptions, *, ws: Workspace,
            annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: bring each class of each balanced split to the target (see the module docstring)."""
    from curate.derive import upsert_rows

    opts = _check_options(manifest, options)
    annotations = annotations if annotations is not None else empty_annotations()
    out = manifest.copy()
    scope = _in_splits(out, opts.splits)
    everything = pd.Series(True, index=manifest.index)
    before = _counts(manifest, everything)  # all splits, so the report shows val/test untouched
    reset_balance(out, scope)

    plan = _Plan()
    targets: dict[str, int] = {}
    pool = out[scope & (out["status"] == "kept") & out["label"].notna()]
    for split_name, in_split in pool.groupby(pool["split"].map(_split_name), sort=True):
        class_counts = in_split["label"].astype(str).value_counts().to_dict()
        target = resolve_target(class_counts, opts.target)
        targets[str(split_name)] = target
        for cls, rows in in_split.groupby(in_split["label"].astype(str), sort=True):
            where = f"{split_name}/{cls}"
            if len(rows) > target and opts.strategy in ("undersample", "both"):
                _plan_undersample(rows, target, opts, plan, where)
            elif len(rows) < target and opts.strategy in ("oversample", "both"):
                _plan_oversample(out, rows, target, opts, plan, where)

    for i, detail in plan.drops:
        out.loc[i, ["status", "reason", "decided_by", "detail"]] = ["dropped", "balanced_out", DECIDER, detail]
    if plan.revive:
        # A copy another automatic stage dropped (e.g. a dedupe run after balance, which sees a copy
        # as a near-duplicate of its parent) is taken back too: balance made it on purpose.
        out.loc[plan.revive, ["status", "reason", "detail", "duplicate_of", "decided_by"]] = [
            "kept", None, None, None, DECIDER]
    new_rows, new_ann = _make_copies(ws, out, annotations, plan, opts)
    out = upsert_rows(out, new_rows)
    if new_ann:
        made = {r["sample_id"] for r in new_rows}
        annotations = pd.concat([annotations[~annotations["sample_id"].isin(made)], pd.DataFrame(new_ann)],
                                ignore_index=True)
    annotations = conform(annotations, ANNOTATION_COLUMNS)

    after = _counts(out, pd.Series(True, index=out.index))
    unlabelled = int((scope & (manifest["status"] == "kept") & manifest["label"].isna()).sum())
    if unlabelled:
        plan.warnings.append(f"{unlabelled} kept rows in {', '.join(opts.splits)} have no label; not balanced")
    summary = {
        "target": targets,
        "strategy": opts.strategy,
        "splits": list(opts.splits),
        "before": before,
        "after": after,
        "balanced_out": len(plan.drops),
        "near_duplicates_removed": plan.near_dups,
        "copies_made": len(new_rows),
        "copies_revived": len(plan.revive),
        "warnings": plan.warnings,
    }
    record = {"created": [r["sample_id"] for r in new_rows]}
    return StageResult(out, annotations, summary=summary, record=record, objects_written=bool(new_rows))


def format_balance(summary: dict[str, Any], title: str) -> str:
    """Terminal table: kept labelled rows per class and split, before -> after."""
    targets = ", ".join(f"{s} {n}" for s, n in summary.get("target", {}).items())
    head = (f"{title}: {summary['strategy']} to {targets or '-'} per class; "
            f"{summary['balanced_out']} balanced out ({summary['near_duplicates_removed']} near-duplicates), "
            f"{summary['copies_made']} copies made, {summary['copies_revived']} kept from an earlier run")
    return format_report(summary, head)
