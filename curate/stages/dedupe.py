"""Duplicate groups and the keeper policy.

Exact duplicates (same sha256) are marked at ingest with :func:`mark_exact`.
Both that and the near-duplicate search mark groups through
:func:`apply_groups`, so one policy decides which copy is kept:

1. source priority: the order sources were given (``--priority`` overrides);
2. resolution: more pixels first;
3. annotated rows (rows with boxes) first;
4. stable order: source, then relative path, then sample_id.

Members of a group whose labels differ are flagged ``label_conflict``; the
conflict is reported, never silently resolved (the representative keeps its
own label, the others stay ``duplicate`` so nothing is exported twice).

    >>> import pandas as pd
    >>> from curate.schema import conform, MANIFEST_COLUMNS
    >>> m = conform(pd.DataFrame({
    ...     "sample_id": ["a", "b"], "source": ["s1", "s2"], "path": ["/a", "/b"],
    ...     "origin_path": ["/a", "/b"], "sha256": ["x", "x"], "status": ["kept", "kept"],
    ...     "width": [10, 10], "height": [10, 10], "rel_path": ["a", "b"], "layout": ["flat"] * 2,
    ...     "decided_by": ["ingest"] * 2}), MANIFEST_COLUMNS)
    >>> out = mark_exact(m, source_order=["s2", "s1"])
    >>> out.set_index("sample_id").loc["a", "duplicate_of"]
    'b'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def keeper_order(
    manifest: pd.DataFrame,
    source_order: Sequence[str] | None = None,
    annotated: set[str] | None = None,
) -> pd.Series:
    """Rank of each row by the keeper policy (0 = kept first). Index-aligned."""
    sources = list(dict.fromkeys([*(source_order or []), *sorted(manifest["source"].unique())]))
    src_rank = manifest["source"].map({s: i for i, s in enumerate(sources)}).astype(int)
    pixels = (manifest["width"].fillna(0).astype("int64") * manifest["height"].fillna(0).astype("int64")).to_numpy()
    has_boxes = manifest["sample_id"].isin(annotated or set()).to_numpy()
    keys = pd.DataFrame({
        "src": src_rank.to_numpy(),
        "px": -pixels,
        "ann": ~has_boxes,
        "source": manifest["source"].to_numpy(),
        "rel": manifest["rel_path"].to_numpy(),
        "id": manifest["sample_id"].to_numpy(),
    }, index=manifest.index)
    order = keys.sort_values(["src", "px", "ann", "source", "rel", "id"], kind="mergesort").index
    return pd.Series(np.arange(len(order)), index=order).reindex(manifest.index)


def apply_groups(
    manifest: pd.DataFrame,
    groups: Iterable[Sequence[int]],
    *,
    decided_by: str,
    rank: pd.Series,
    detail: str = "",
) -> pd.DataFrame:
    """Mark each group (of index labels): keep the best-ranked, drop the rest as duplicate."""
    out = manifest
    for members in groups:
        members = list(members)
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda i: rank[i])
        keeper = ordered[0]
        keeper_id = out.at[keeper, "sample_id"]
        labels = {lab for lab in out.loc[members, "label"] if lab is not None and not pd.isna(lab)}
        conflict = len(labels) > 1
        out.loc[members, "dup_group"] = keeper_id
        out.loc[members, "label_conflict"] = conflict
        rest = ordered[1:]
        out.loc[rest, "status"] = "dropped"
        out.loc[rest, "reason"] = "duplicate"
        out.loc[rest, "duplicate_of"] = keeper_id
        out.loc[rest, "decided_by"] = decided_by
        out.loc[rest, "detail"] = detail or f"copy of {keeper_id}"
    return out


def mark_exact(
    manifest: pd.DataFrame,
    source_order: Sequence[str] | None = None,
    annotated: set[str] | None = None,
) -> pd.DataFrame:
    """Group rows with identical bytes (sha256) and keep one per group.

    Only rows that ingest decided (kept, or earlier exact duplicates) take part;
    decisions made later by a person (review) or another stage are left alone.
    """
    out = manifest.copy()
    eligible = (
        (out["decided_by"].isin(["ingest"]) | out["decided_by"].isna())
        & ((out["status"] == "kept") | (out["reason"] == "duplicate"))
        & out["sha256"].notna()
    )
    # Reset earlier exact-duplicate marks among eligible rows: recomputed below.
    was_dup = eligible & (out["reason"] == "duplicate")
    out.loc[was_dup, ["status", "reason", "duplicate_of", "detail"]] = ["kept", None, None, None]
    out.loc[eligible, "dup_group"] = None
    out.loc[eligible, "label_conflict"] = False
    sub = out[eligible]
    sizes = sub.groupby("sha256")["sha256"].transform("size")
    multi = sub[sizes > 1]
    if len(multi) == 0:
        return out
    rank = keeper_order(out.loc[multi.index], source_order, annotated)
    groups = multi.groupby("sha256").groups.values()
    return apply_groups(out, groups, decided_by="ingest", rank=rank)
