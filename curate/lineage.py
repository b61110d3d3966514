"""Lineage of derived rows: which rows a transform reads, what it replaces, and tracing back.

Transform stages (``curate faces``, ``curate square``) make derived rows with
``parent_id`` set and ``layout`` naming the stage. The rules here make them
re-runnable:

- a transform reads the rows a fresh run would read: kept rows that do not
  descend from its own outputs, plus the rows it dropped itself last time
  (so ``superseded`` parents are processed again, not their crops);
- review decisions are seen the same way by every transform (faces, square,
  crop; :func:`person_rejected`): rows a person *kept or relabelled* are
  inputs like any kept row (the transform supersedes them and its outputs
  carry their label), rows a person *rejected* are not;
- a derived row a re-run no longer produces (its options changed) is dropped
  as ``superseded`` with a detail starting ``stale:``, and so are its kept
  descendants; if a later run produces it again it is kept again.

    >>> import pandas as pd
    >>> m = pd.DataFrame({"sample_id": ["a", "b", "c"], "parent_id": [None, "a", "b"]})
    >>> trace(m, "c")
    ['c', 'b', 'a']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

STALE_PREFIX = "stale:"
REVIEW = "review"
# ``layout`` of the augmented copies `curate balance` makes: deliberate near-copies of their
# parent, in the parent's split, so split, dedupe and check never treat them as photos.
AUGMENT_LAYOUT = "augment"
BALANCE_DECIDER = "balance"  # ``decided_by`` of the rows `curate balance` decides


def _children_index(manifest: pd.DataFrame) -> dict[str, list[str]]:
    kids: dict[str, list[str]] = {}
    sub = manifest[manifest["parent_id"].notna()]
    for sid, pid in zip(sub["sample_id"], sub["parent_id"], strict=True):
        kids.setdefault(str(pid), []).append(str(sid))
    return kids


def descendants(manifest: pd.DataFrame, ids: Iterable[str]) -> set[str]:
    """Every row derived, directly or not, from ``ids`` (not including them)."""
    kids = _children_index(manifest)
    out: set[str] = set()
    stack = [str(i) for i in ids]
    while stack:
        for k in kids.get(stack.pop(), []):
            if k not in out:
                out.add(k)
                stack.append(k)
    return out


def trace(manifest: pd.DataFrame, sample_id: str) -> list[str]:
    """The chain of sample_ids from ``sample_id`` back to its source row (itself first)."""
    parent = dict(zip(manifest["sample_id"].astype(str), manifest["parent_id"], strict=True))
    chain = [str(sample_id)]
    while True:
        p = parent.get(chain[-1])
        if p is None or pd.isna(p) or p in chain:
            return chain
        chain.append(str(p))


def kept_successors(manifest: pd.DataFrame) -> pd.Series:
    """For each row, the kept row it is or lives on as (index-aligned; None where nothing of it is kept).

    A kept row is its own successor. A row a transform replaced (``superseded``: photo -> face crop ->
    square) has the kept row at the end of its chain; with several (two faces of one photo), the one
    with the smallest sample_id.

        >>> m = pd.DataFrame({"sample_id": ["p", "c", "s", "x"], "parent_id": [None, "p", "c", None],
        ...                   "status": ["dropped", "dropped", "kept", "dropped"]})
        >>> kept_successors(m).tolist()
        ['s', 's', 's', None]
    """
    parent = dict(zip(manifest["sample_id"].astype(str), manifest["parent_id"], strict=True))
    succ: dict[str, str] = {}
    kept = sorted(manifest.loc[manifest["status"] == "kept", "sample_id"].astype(str))
    for sid in kept:
        succ[sid] = sid
    for sid in kept:
        p = parent.get(sid)
        seen = {sid}
        while isinstance(p, str) and p not in seen:
            seen.add(p)
            succ.setdefault(p, sid)
            p = parent.get(p)
    return pd.Series([succ.get(str(s)) for s in manifest["sample_id"]], index=manifest.index, dtype=object)


def is_stale(manifest: pd.DataFrame) -> pd.Series:
    return (manifest["reason"] == "superseded") & manifest["detail"].fillna("").astype(str).str.startswith(STALE_PREFIX)


def person_rejected(manifest: pd.DataFrame) -> pd.Series:
    """Rows a person rejected in review (index-aligned mask): no transform reads them.

    The one rule every transform follows (issue 17: ``square`` skipped a row
    relabelled in review, so a "224x224" export held a 377x240 image): a row a
    person kept or relabelled is an input like any kept row; a rejected one is not.

        >>> m = pd.DataFrame({"status": ["kept", "dropped", "kept"], "decided_by": ["review", "review", None]})
        >>> person_rejected(m).tolist()
        [False, True, False]
    """
    return (manifest["decided_by"] == REVIEW) & (manifest["status"] != "kept")


def transform_inputs(manifest: pd.DataFrame, layout: str, *, reread: Iterable[str] = ("superseded",)) -> pd.Series:
    """Rows the transform ``layout`` reads (index-aligned mask); rows a person rejected excluded.

    Rows a person kept or relabelled in review are read like any kept row (see
    :func:`person_rejected`).

    ``reread``: reasons this transform gives its inputs; rows it dropped with
    one of them are read again, so a re-run sees the same inputs as the first.
    """
    own_outputs = manifest["sample_id"][(manifest["layout"] == layout) & manifest["parent_id"].notna()]
    below = set(own_outputs) | descendants(manifest, own_outputs)
    not_below = ~manifest["sample_id"].isin(below)
    by_me = (manifest["decided_by"] == layout) & manifest["reason"].isin(list(reread)) & ~is_stale(manifest)
    return not_below & ~person_rejected(manifest) & ((manifest["status"] == "kept") | by_me)


def mark_stale(manifest: pd.DataFrame, ids: Iterable[str], stage: str) -> tuple[pd.DataFrame, int]:
    """Drop derived rows ``ids`` and their kept descendants as stale; (manifest, rows changed).

    Rows decided in review, and rows already dropped for another reason, stay as they are.
    """
    ids = set(ids)
    if not ids:
        return manifest, 0
    targets = ids | descendants(manifest, ids)
    hit = manifest["sample_id"].isin(targets) & (manifest["decided_by"] != REVIEW)
    hit &= (manifest["status"] == "kept") | (manifest["reason"] == "superseded") & ~is_stale(manifest)
    out = manifest.copy()
    detail = f"{STALE_PREFIX} not produced by the latest `curate {stage}` run (its options or input changed)"
    out.loc[hit, ["status", "reason", "detail", "decided_by"]] = ["dropped", "superseded", detail, stage]
    return out, int(hit.sum())


def revive(manifest: pd.DataFrame, ids: Iterable[str], stage: str) -> tuple[pd.DataFrame, int]:
    """Keep again the stale rows among ``ids`` (a re-run produced them again)."""
    hit = manifest["sample_id"].isin(set(ids)) & is_stale(manifest) & (manifest["decided_by"] != REVIEW)
    if not hit.any():
        return manifest, 0
    out = manifest.copy()
    out.loc[hit, ["status", "reason", "detail", "decided_by"]] = ["kept", None, None, stage]
    return out, int(hit.sum())


Decision = tuple[str, str | None, str | None, str | None]  # status, reason, detail, decided_by
DECISION_COLUMNS = ["status", "reason", "detail", "decided_by"]


def set_decisions(manifest: pd.DataFrame, decisions: Mapping[str, Decision]) -> pd.DataFrame:
    """Set status, reason, detail and decided_by of many rows at once (by sample_id).

    One vectorised assignment per column: per-row ``.loc`` writes would take
    minutes on a million-row manifest.
    """
    if not decisions:
        return manifest
    out = manifest.copy()
    sel = out["sample_id"].isin(list(decisions))
    ids = out.loc[sel, "sample_id"].tolist()
    for k, col in enumerate(DECISION_COLUMNS):
        out[col] = out[col].astype(object)
        out.loc[sel, col] = pd.Series([decisions[i][k] for i in ids], index=out.index[sel], dtype=object)
    return out


# -- undoing a balance (curate balance re-runs, curate split --resplit) -----------------------


def reset_balance(out: pd.DataFrame, scope: pd.Series) -> pd.Series:
    """Undo ``curate balance``'s earlier decisions in ``scope`` (in place): rows it balanced out are kept
    again, its augmented copies are dropped (waiting to be kept again or superseded). Returns the
    mask of those copies."""
    mine = scope & (out["decided_by"] == BALANCE_DECIDER)
    copies = mine & (out["layout"] == AUGMENT_LAYOUT)
    restore = mine & ~copies & (out["reason"] == "balanced_out")
    out.loc[restore, ["status", "reason", "detail"]] = ["kept", None, None]
    out.loc[copies, ["status", "reason", "detail"]] = ["dropped", "balanced_out", "copy not needed for the target"]
    return copies


def undo_balance(manifest: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Undo every balance decision not made in review (``split --resplit`` calls this:
    a balance made for old splits is wrong for new ones). Returns (manifest, copies, restored).

    >>> m = pd.DataFrame({"sample_id": ["a", "b", "c"], "status": ["dropped", "kept", "kept"],
    ...                   "reason": ["balanced_out", None, None], "detail": ["x", None, None],
    ...                   "decided_by": ["balance", "balance", "ingest"], "layout": ["flat", "augment", "flat"]})
    >>> out, copies, restored = undo_balance(m)
    >>> out["status"].tolist(), copies, restored
    (['kept', 'dropped', 'kept'], 1, 1)
    """
    out = manifest.copy()
    copies = reset_balance(out, pd.Series(True, index=out.index))
    restored = int(((manifest["decided_by"] == BALANCE_DECIDER) & (manifest["reason"] == "balanced_out")
                    & (manifest["layout"] != AUGMENT_LAYOUT)).sum())
    n_copies = int((copies & (manifest["status"] == "kept")).sum())
    out.loc[copies, "detail"] = "split changed; re-run `curate balance`"
    return out, n_copies, restored
