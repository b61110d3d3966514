"""What ``curate report`` shows, as tables: pure functions of the manifest (testable without images).

Counts per source, status, reason, label and split; the class histogram before
and after ``curate balance``; the largest duplicate groups; the leakage tables
(groups, identical files and copies of one source file across splits, label
conflicts); seeded samples. :mod:`curate.report.render` draws them.

    >>> import pandas as pd
    >>> m = pd.DataFrame({"sample_id": ["a", "b", "c"], "dup_group": [None, None, None],
    ...                   "duplicate_of": [None, "a", None]})
    >>> duplicate_group_key(m).tolist()
    ['a', 'a', nan]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from curate.lineage import AUGMENT_LAYOUT
from curate.schema import REASONS, SPLITS

# Reasons whose files have no picture to show (nothing decodable, a decode
# would be dangerous (too_large; worker_crashed: its decode killed a process, and
# the report decodes in threads of its own process), or the file is not the user's image at all).
NO_PICTURE_REASONS = frozenset({
    "unreadable", "unknown_format", "truncated", "empty_file", "not_an_image", "broken_link", "missing_file",
    "worker_crashed", "special_file", "too_large", "system_file", "outside_source",
})
# Derived rows are recognised by the transform that made them: ``layout``
# (curate.derive.store_derived sets it to the stage's transform name). Not by
# ``decided_by``: a later stage that drops the row (balance dropping a face
# crop) overwrites that.
FACE_LAYOUTS = frozenset({"faces"})
AUGMENT_LAYOUTS = frozenset({AUGMENT_LAYOUT})
NONE = "(none)"


def text_col(m: pd.DataFrame, name: str) -> pd.Series:
    """A string column with nulls as ``(none)``."""
    return m[name].astype(object).where(m[name].notna(), NONE).astype(str)


def _made_by(m: pd.DataFrame, layouts: frozenset[str]) -> pd.Series:
    return m["parent_id"].notna() & m["layout"].isin(layouts)


def is_face_crop(m: pd.DataFrame) -> pd.Series:
    """Rows made by ``curate faces`` (derived, layout ``faces``)."""
    return _made_by(m, FACE_LAYOUTS)


def is_augmented(m: pd.DataFrame) -> pd.Series:
    """Copies made by ``curate balance`` when it oversamples (derived, layout ``augment``)."""
    return _made_by(m, AUGMENT_LAYOUTS)


def count_tables(m: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Counts per source, status, reason, label and split.

    Labels and splits count kept rows (what an export would write).

        >>> from curate.schema import conform, MANIFEST_COLUMNS
        >>> m = conform(pd.DataFrame({"sample_id": ["a", "b"], "source": ["s", "s"],
        ...     "status": ["kept", "dropped"], "reason": [None, "too_small"], "label": ["cat", "cat"]}),
        ...     MANIFEST_COLUMNS)
        >>> count_tables(m)["source"].loc["s"].tolist()
        [2, 1, 1, 0]
    """
    kept = m["status"] == "kept"
    derived = m["parent_id"].notna()
    source = pd.DataFrame({
        "rows": m.groupby("source").size(),
        "kept": kept.groupby(m["source"]).sum(),
        "dropped": (~kept).groupby(m["source"]).sum(),
        "derived": derived.groupby(m["source"]).sum(),
    }).astype("int64").sort_values("rows", ascending=False, kind="mergesort")
    source.index.name = "source"

    status = m["status"].value_counts().rename("rows").to_frame()
    status.index.name = "status"

    dropped = m[~kept]
    reason = pd.DataFrame({"rows": dropped["reason"].value_counts()})
    if len(reason):
        stages = dropped.groupby("reason")["decided_by"].agg(
            lambda s: ", ".join(sorted({str(v) for v in s.dropna()})))
        reason["decided by"] = stages.reindex(reason.index).fillna("")
        reason["meaning"] = [REASONS.get(str(r), "") for r in reason.index]
    reason.index.name = "reason"

    k = m[kept]
    label = pd.crosstab(text_col(k, "label"), text_col(k, "split"))
    order = [s for s in (*SPLITS, NONE) if s in label.columns]
    label = label.reindex(columns=order)
    label.columns = [str(c) for c in label.columns]
    label["kept"] = label.sum(axis=1)
    label = label.sort_values("kept", ascending=False, kind="mergesort").astype("int64")
    label.index.name = "label"
    label.columns.name = None

    split = text_col(k, "split").value_counts().rename("kept").to_frame()
    split = split.reindex([s for s in (*SPLITS, NONE) if s in split.index])
    split["share"] = (split["kept"] / max(1, len(k))).round(3)
    split.index.name = "split"
    return {"source": source, "status": status, "reason": reason, "label": label, "split": split}


@dataclass
class BalanceView:
    """Class counts before and after ``curate balance``, over the splits it touched."""

    ran: bool
    splits: list[str]
    table: pd.DataFrame  # index label; before, balanced_out, augmented, after
    runs: list[dict[str, Any]] = field(default_factory=list)


def balance_view(m: pd.DataFrame, runs: list[dict[str, Any]]) -> BalanceView:
    """Reconstruct the class histogram before balancing from the manifest.

    after = kept rows; before = kept rows not made by balance, plus rows
    balance dropped (``balanced_out``). Only splits balance touched are
    counted (by default it balances ``train`` and leaves val/test alone).

        >>> from curate.schema import conform, MANIFEST_COLUMNS
        >>> m = conform(pd.DataFrame({"sample_id": list("abc"), "source": "s", "label": ["x", "x", "y"],
        ...     "split": "train", "status": ["kept", "dropped", "kept"], "reason": [None, "balanced_out", None]}),
        ...     MANIFEST_COLUMNS)
        >>> balance_view(m, []).table.loc["x"].tolist()
        [2, 1, 0, 1]
    """
    balance_runs = [r for r in runs if r.get("command") == "balance"]
    made = is_augmented(m)
    # An augmented copy balance later found unneeded is dropped as balanced_out
    # too; it never existed before balancing, so it counts on neither side.
    out = (m["reason"] == "balanced_out") & ~made
    aug = made & (m["status"] == "kept")
    touched = out | aug
    ran = bool(balance_runs) or bool(touched.any())
    split = text_col(m, "split")
    splits = sorted(set(split[touched]), key=lambda s: (*SPLITS, NONE).index(s) if s in (*SPLITS, NONE) else 9)
    scope = split.isin(splits) if splits else pd.Series(True, index=m.index)
    label = text_col(m, "label")
    kept = (m["status"] == "kept") & scope
    table = pd.DataFrame({
        "before": label[(kept & ~aug) | (out & scope)].value_counts(),
        "balanced_out": label[out & scope].value_counts(),
        "augmented": label[aug & scope].value_counts(),
        "after": label[kept].value_counts(),
    }).fillna(0).astype("int64").sort_values("before", ascending=False, kind="mergesort")
    table.index.name = "label"
    return BalanceView(ran, splits, table, balance_runs)


def duplicate_group_key(m: pd.DataFrame) -> pd.Series:
    """The duplicate group of each row (null when in none): ``dup_group``, else
    ``duplicate_of``, else the row's own id when other rows point at it."""
    key = m["dup_group"].astype(object).where(m["dup_group"].notna(), m["duplicate_of"])
    is_target = m["sample_id"].isin(set(m["duplicate_of"].dropna()))
    key = key.where(key.notna(), m["sample_id"].where(is_target))
    sizes = key.map(key.value_counts())
    return key.where(sizes >= 2)


def largest_groups(m: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """The ``n`` largest duplicate groups, largest first; in each, the
    representative (the row the others point at) first, then kept rows."""
    key = duplicate_group_key(m)
    sizes = key.value_counts()
    if sizes.empty:
        return []
    ranked = sizes.rename("size").reset_index().rename(columns={"index": "key"})
    ranked.columns = ["key", "size"]
    ranked = ranked.sort_values(["size", "key"], ascending=[False, True], kind="mergesort").head(n)
    out = []
    for k in ranked["key"]:
        g = m[key == k].copy()
        g["_order"] = np.where(g["sample_id"] == k, 0, np.where(g["status"] == "kept", 1, 2))
        out.append(g.sort_values(["_order", "source", "rel_path"], kind="mergesort").drop(columns="_order"))
    return out


def leakage_tables(m: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Checks that something seen in training is not also in val/test.

    - ``groups_across_splits``: duplicate groups whose members carry more than
      one split (``kept_splits`` > 1 is a real leak: both would be exported);
    - ``same_bytes``: kept rows with identical sha256 in more than one split;
    - ``same_origin``: kept rows derived from one source file in more than one split;
    - ``label_conflicts``: duplicate groups whose rows carry different labels.
    """
    split = m["split"]
    kept = m["status"] == "kept"
    key = duplicate_group_key(m)
    in_group = key.notna()

    def spanning(mask: pd.Series, by: pd.Series) -> pd.Series:
        """key -> "train, val" for keys whose rows (under ``mask``) carry more than one split."""
        sub = pd.DataFrame({"key": by[mask & split.notna()], "split": split[mask & split.notna()]})
        n_splits = sub.groupby("key")["split"].nunique()
        sub = sub[sub["key"].isin(n_splits.index[n_splits > 1])].drop_duplicates()
        order = sub["split"].map({s: i for i, s in enumerate(SPLITS)})
        sub = sub.assign(order=order).sort_values(["key", "order"], kind="mergesort")
        return sub.groupby("key")["split"].agg(", ".join)

    spans = spanning(in_group, key)
    kept_spans = spanning(in_group & kept, key)
    groups = pd.DataFrame({
        "members": key[in_group].value_counts().reindex(spans.index),
        "splits": spans,
        "kept_splits": kept_spans.reindex(spans.index).fillna(""),
    })
    groups.index.name = "group"
    groups = groups.sort_values("members", ascending=False, kind="mergesort")

    def across(col: str) -> pd.DataFrame:
        has = kept & m[col].notna()
        sp = spanning(has, m[col])
        sub = m[has & m[col].isin(sp.index)]
        t = pd.DataFrame({"rows": sub.groupby(col).size(), "splits": sp})
        t.index.name = col
        return t.sort_values("rows", ascending=False, kind="mergesort")

    conflict = m["label_conflict"].astype(bool) & in_group
    ck = key[conflict]
    labels = text_col(m, "label")[conflict]
    conflicts = pd.DataFrame({
        "members": ck.value_counts(),
        "labels": labels.groupby(ck).agg(_label_counts),
    })
    conflicts.index.name = "group"
    conflicts = conflicts.sort_values("members", ascending=False, kind="mergesort")
    return {"groups_across_splits": groups, "same_bytes": across("sha256"),
            "same_origin": across("origin_path"), "label_conflicts": conflicts}


def _label_counts(labels: pd.Series) -> str:
    """``cat ×2, dog ×1``: most frequent first, ties by name."""
    vc = labels.value_counts().sort_index(kind="mergesort").sort_values(ascending=False, kind="mergesort")
    return ", ".join(f"{k} ×{v}" for k, v in vc.items())


def sample_rows(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A seeded sample of ``n`` rows, shown in a stable order."""
    if len(df) > n:
        df = df.sample(n=n, random_state=rng)
    return df.sort_values(["source", "rel_path", "sample_id"], kind="mergesort")


