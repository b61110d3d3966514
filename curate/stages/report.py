"""``curate report``: what happened to a workspace, as one self-contained HTML page.

The report reads only the manifest contract (``curate.schema``), the
annotations and the ``runs/`` records, so it shows every stage the same way,
whichever engineer wrote it. Sections, in order:

- counts per source, status, reason, label and split (tables and bar charts);
- the class histogram before and after ``curate balance`` (before = kept rows
  that balance did not make, plus rows it dropped as ``balanced_out``);
- the distribution of image sizes and aspect ratios;
- the largest duplicate groups, side by side, the kept one marked;
- a sample of dropped images per reason (files that cannot be decoded are
  listed by path instead);
- a grid of face crops (derived rows made by ``curate faces``);
- leakage checks: duplicate groups, byte-identical files and copies of one
  source file that span splits, and label conflicts;
- the runs recorded in ``runs/``, oldest first, with their options.

A section whose stage has not run says so instead of vanishing.

Only a fixed number of thumbnails is drawn (small JPEGs, decoded at reduced
scale in a thread pool), so a 50,000-row workspace reports in seconds and the
page stays a few MB (see docs/benchmarks.md).

    >>> import skimage, tempfile
    >>> from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    >>> from curate.workspace import Workspace
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> _ = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage.data_dir, "sk", "flat")], workers=1))
    >>> res = ws.run_stage("report", report, ReportOptions(workers=1))
    >>> res.summary["out"].endswith("report.html")
    True
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate import __version__
from curate.errors import OptionError
from curate.lineage import AUGMENT_LAYOUT, kept_successors
from curate.report import html as h
from curate.schema import REASONS, SPLITS
from curate.workspace import StageResult, Workspace, atomic_write_bytes, utc_now

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


@dataclass(frozen=True)
class ReportOptions:
    """What ``curate report`` draws. Every limit is a count of pictures or rows,
    so the report's size does not grow with the workspace."""

    out: Path | None = None  # default: WS/report.html
    thumb_px: int = 96
    thumb_quality: int = 70
    max_dup_groups: int = 12
    max_group_members: int = 8
    per_reason: int = 8
    max_faces: int = 48
    max_table_rows: int = 100
    seed: int = 0
    workers: int = 0  # thumbnail threads; 0 = one per core
    title: str | None = None

    def check(self) -> None:
        limits = {"--thumb-px": (self.thumb_px, 16, 512), "--thumb-quality": (self.thumb_quality, 1, 95),
                  "--samples": (self.per_reason, 0, 200), "--max-groups": (self.max_dup_groups, 0, 200),
                  "--max-faces": (self.max_faces, 0, 1000), "--workers": (self.workers, 0, 256)}
        for name, (value, lo, hi) in limits.items():
            if not lo <= value <= hi:
                raise OptionError("", field=name, expected=f"{lo}..{hi}", found=value)


# --------------------------------------------------------------------------
# Tables: pure functions of the manifest (testable without images)
# --------------------------------------------------------------------------

def _col(m: pd.DataFrame, name: str) -> pd.Series:
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
    label = pd.crosstab(_col(k, "label"), _col(k, "split"))
    order = [s for s in (*SPLITS, NONE) if s in label.columns]
    label = label.reindex(columns=order)
    label.columns = [str(c) for c in label.columns]
    label["kept"] = label.sum(axis=1)
    label = label.sort_values("kept", ascending=False, kind="mergesort").astype("int64")
    label.index.name = "label"
    label.columns.name = None

    split = _col(k, "split").value_counts().rename("kept").to_frame()
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
    split = _col(m, "split")
    splits = sorted(set(split[touched]), key=lambda s: (*SPLITS, NONE).index(s) if s in (*SPLITS, NONE) else 9)
    scope = split.isin(splits) if splits else pd.Series(True, index=m.index)
    label = _col(m, "label")
    kept = (m["status"] == "kept") & scope
    table = pd.DataFrame({
        "before": label[(kept & ~aug) | (out & scope)].value_counts(),
        "balanced_out": label[out & scope].value_counts(),
        "augmented": label[aug & scope].value_counts(),
        "after": label[kept].value_counts(),
    }).fillna(0).astype("int64").sort_values("before", ascending=False, kind="mergesort")
    table.index.name = "label"
    return BalanceView(ran, splits, table, balance_runs)


def _outline_crops(shown: pd.DataFrame, items: list[h.Thumb]) -> list[h.Thumb]:
    """Outline, on each container's picture, the region where a member of its group was found (dedupe's
    ``contained_in`` / ``match_region``): crops, and photos shown inside screenshots or frames (issue 15)."""
    import dataclasses
    import json

    if "contained_in" not in shown.columns:
        return items
    at = {str(sid): k for k, sid in enumerate(shown["sample_id"])}
    out = list(items)
    for _, r in shown.iterrows():
        k = at.get(str(r["contained_in"])) if pd.notna(r["contained_in"]) else None
        if k is None or out[k].outline or pd.isna(r.get("match_region")):
            continue
        outer = shown.iloc[k]
        try:
            corners = tuple((float(x), float(y)) for x, y in json.loads(str(r["match_region"])))
        except (ValueError, TypeError):
            continue
        if pd.notna(outer["width"]) and pd.notna(outer["height"]) and len(corners) == 4:
            out[k] = dataclasses.replace(out[k], outline=corners, outline_wh=(int(outer["width"]), int(outer["height"])),
                                         tooltip=out[k].tooltip + f"\noutlined: where {Path(str(r['rel_path'])).name} lies")
    return out


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
    labels = _col(m, "label")[conflict]
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


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def _where(row: pd.Series) -> str:
    return f"{row['source']}/{row['rel_path']}"


def _size(row: pd.Series) -> str:
    return f"{row['width']}×{row['height']}" if pd.notna(row["width"]) and pd.notna(row["height"]) else ""


def _badge(row: pd.Series) -> str:
    if row["status"] == "kept":
        return "kept"
    return "dup" if row["reason"] == "duplicate" else str(row["reason"])


def _as_kept(row: pd.Series) -> pd.Series:
    """A replaced row pictured as alive (framed green): it lives on as a kept derived row."""
    out = row.copy()
    out["status"] = "kept"
    return out


def _nfmt(n: int) -> str:
    return f"{int(n):,}"


def _count(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``."""
    return f"{int(n):,} {noun}{'' if int(n) == 1 else 's'}"


def _run_started(run: dict[str, Any]) -> str:
    return str(run.get("started", ""))[:19].replace("T", " ")


class _Renderer:
    """Builds the sections; collects thumbnail requests for one pool."""

    def __init__(self, m: pd.DataFrame, annotations: pd.DataFrame, runs: list[dict[str, Any]],
                 opts: ReportOptions) -> None:
        self.m = m
        self.ann = annotations
        self.runs = runs
        self.opts = opts
        self.rng = np.random.default_rng(opts.seed)
        self.commands = {str(r.get("command")) for r in runs}
        self.wanted: dict[str, str] = {}  # sample_id -> path, for thumbnails
        self.uris: dict[str, str | None] = {}
        # The kept row each row is or lives on as (photo -> face crop -> square): a row a transform
        # replaced is not a loss (issue 17: after `curate square` every crop read as "superseded").
        self.successor = kept_successors(m)
        self.replaced = (m["status"] != "kept") & (m["reason"] == "superseded") & self.successor.notna()
        self.rows_by_id = m.set_index(m["sample_id"].astype(str), drop=False)
        self.parents = dict(zip(m["sample_id"].astype(str), m["parent_id"], strict=True))
        self.dropped_samples = self._sample_dropped()
        self.face_sample = self._sample_faces()

    def _sample_dropped(self) -> dict[str, pd.DataFrame]:
        """Per reason with a picture: a seeded sample of decodable dropped rows."""
        m = self.m
        rng = np.random.default_rng(self.opts.seed)
        pictured = ((m["status"] == "dropped") & ~m["reason"].isin(NO_PICTURE_REASONS) & m["width"].notna()
                    & ~self.replaced)
        return {str(r): sample_rows(g, self.opts.per_reason, rng) for r, g in m[pictured].groupby("reason", sort=True)}

    def _sample_faces(self) -> pd.DataFrame:
        """Face crops whatever became of them, those kept now (as themselves or as what a later stage
        made of them, e.g. a square) first; ``_show`` is the row to picture."""
        is_crop = is_face_crop(self.m)
        crops = self.m[is_crop].assign(_show=self.successor[is_crop])
        kept = crops[crops["_show"].notna()]
        rng = np.random.default_rng(self.opts.seed + 1)
        n = self.opts.max_faces
        pick = kept.sample(n=n, random_state=rng) if len(kept) > n else kept
        rest = crops[crops["_show"].isna()]
        if len(pick) < n and len(rest):
            pick = pd.concat([pick, rest.sample(n=min(n - len(pick), len(rest)), random_state=rng)])
        pick = pick.assign(_dropped=pick["_show"].isna())
        pick["_show"] = pick["_show"].where(pick["_show"].notna(), pick["sample_id"])
        return pick.sort_values(["_dropped", "label", "rel_path", "sample_id"], kind="mergesort",
                                na_position="last").drop(columns="_dropped")

    def _chain(self, sample_id: str) -> str:
        """``photo 512×512 → faces 200×200 → square 224×224``: the rows from the source to this one."""
        ids = [sample_id]
        while isinstance(self.parents.get(ids[-1]), str) and self.parents[ids[-1]] not in ids:
            ids.append(str(self.parents[ids[-1]]))
        parts = []
        for sid in reversed(ids):
            r = self.rows_by_id.loc[sid]
            parts.append(f"{'photo' if pd.isna(r['parent_id']) else r['layout']} {_size(r)}".strip())
        return " → ".join(parts)

    def _fate(self, row: pd.Series) -> str:
        """Why nothing of a row is kept: its own reason, or, for a replaced row, its descendants'."""
        if row["reason"] != "superseded":
            return str(row["reason"])
        kids = self.m.loc[self.m["parent_id"] == row["sample_id"], "reason"].dropna()
        later = sorted(set(kids) - {"superseded"})
        return f"superseded, then {later[0]}" if later else "superseded"

    # -- thumbnails are requested first, decoded while the charts are drawn --
    def plan_thumbnails(self) -> None:
        for g in largest_groups(self.m, self.opts.max_dup_groups):
            self._want(g.head(self.opts.max_group_members))
        for rows in self.dropped_samples.values():
            self._want(rows)
        for sid in self.face_sample["_show"]:
            self.wanted[str(sid)] = str(self.rows_by_id.loc[str(sid), "path"])

    def _want(self, rows: pd.DataFrame) -> None:
        for sid, path in zip(rows["sample_id"], rows["path"], strict=True):
            self.wanted[str(sid)] = str(path)

    def _thumb(self, row: pd.Series, caption: str, *, badge: str = "", tooltip: str = "") -> h.Thumb:
        status = str(row["status"])
        tip = tooltip or f"{row['path']}\n{_size(row)} {status}" + (f" ({row['reason']})" if pd.notna(row["reason"]) else "")
        return h.Thumb(self.uris.get(str(row["sample_id"])), caption, tip, status, badge,
                       fallback="cannot decode now")

    # -- sections ------------------------------------------------------------
    def counts(self) -> h.Section:
        from curate.report import plots

        m = self.m
        if len(m) == 0:
            return h.Section("counts", "Counts", h.note("The workspace is empty: run <code>curate ingest</code>.",
                                                        "notrun"), ran=False)
        t = count_tables(m)
        n = self.opts.max_table_rows

        def block(title: str, table_html: str, chart_html: str = "") -> str:
            return f'<div class="grid"><div><h3>{title}</h3><div class="scroll">{table_html}</div></div>{chart_html}</div>'

        small = ('<div class="grid">'
                 f"<div><h3>Per status</h3>{h.table(t['status'], table_id='table-status')}</div>"
                 f"<div><h3>Per split (kept rows)</h3>{h.table(t['split'], table_id='table-split')}</div></div>")
        body = ("<p>Every file ever seen is one row of the manifest; a dropped row stays, with its reason. "
                "Labels and splits count kept rows, i.e. what an export writes.</p>" + small)
        body += block("Per source", h.table(t["source"], table_id="table-source", max_rows=n), h.chart(
            plots.stacked_bar_chart(t["source"][["kept", "dropped"]], title="Rows per source",
                                    colors=plots.STATUS_COLORS), "rows per source, kept and dropped"))
        if len(t["reason"]):
            body += block("Dropped, per reason", h.table(t["reason"], table_id="table-reason"), h.chart(
                plots.bar_chart(t["reason"]["rows"], title="Dropped rows per reason",
                                color=plots.STATUS_COLORS["dropped"]), "dropped rows per reason"))
        else:
            body += block("Dropped, per reason", "<p>Nothing was dropped.</p>")
        if len(t["label"]):
            body += block("Kept rows per label and split", h.table(t["label"], table_id="table-label", max_rows=n),
                          h.chart(plots.stacked_bar_chart(t["label"].drop(columns="kept"),
                                                          title="Kept rows per label (by split)",
                                                          colors=plots.SPLIT_COLORS), "kept rows per label and split"))
        return h.Section("counts", "Counts", body)

    def balance(self) -> h.Section:
        from curate.report import plots

        b = balance_view(self.m, self.runs)
        t = b.table
        if not b.ran:
            kept = t["after"][t.index != NONE]
            body = h.note("<code>curate balance</code> has not run: there is no <code>balance</code> record in "
                          "runs/, no row dropped as <code>balanced_out</code> and no augmented copy. The class "
                          "counts below are the current kept rows, so <em>before</em> equals <em>after</em>.",
                          "notrun")
            if len(kept) > 1 and kept.min() > 0:
                body += (f"<p>Imbalance now: largest class <b>{h.esc(kept.idxmax())}</b> ({_nfmt(kept.max())}), "
                         f"smallest <b>{h.esc(kept.idxmin())}</b> ({_nfmt(kept.min())}), "
                         f"ratio {kept.max() / kept.min():.1f}.</p>")
            body += h.table(t[["after"]].rename(columns={"after": "kept now"}), table_id="table-balance",
                            max_rows=self.opts.max_table_rows)
            return h.Section("balance", "Class balance", body, ran=False)
        scope = ", ".join(b.splits) if b.splits else "all splits"
        last = b.runs[-1] if b.runs else None
        how = (f" Last run {h.esc(_run_started(last))} with <code>{h.esc(_options_text(last.get('options', {})))}"
               "</code>." if last else "")
        changed = int(t["balanced_out"].sum() + t["augmented"].sum())
        body = (f"<p>Split(s) balanced: <b>{h.esc(scope)}</b>. <em>before</em> = kept rows balance did not make "
                "plus rows it dropped as <code>balanced_out</code>; <em>after</em> = kept rows now, including "
                f"augmented copies (derived rows made by balance).{how}</p>")
        if changed == 0:
            body += h.note("balance ran but changed nothing: the classes were already within its target.", "ok")
        body += '<div class="grid">' + h.chart(
            plots.before_after_chart(t["before"], t["after"], title=f"Rows per class, before and after ({scope})"),
            "class histogram before and after balancing") + '<div class="scroll">' + h.table(
            t, table_id="table-balance", max_rows=self.opts.max_table_rows) + "</div></div>"
        return h.Section("balance", "Class balance", body)

    def sizes(self) -> h.Section:
        from curate.report import plots

        m = self.m
        has = m["width"].notna() & m["height"].notna() & (m["width"] > 0) & (m["height"] > 0)
        if not has.any():
            return h.Section("sizes", "Image sizes", h.note("No row has a known size yet.", "notrun"), ran=False)
        sized = m[has]
        w = sized["width"].to_numpy(dtype="float64")
        hh = sized["height"].to_numpy(dtype="float64")
        kept = (sized["status"] == "kept").to_numpy()
        body = (f"<p>Displayed sizes (after EXIF orientation) of {_nfmt(has.sum())} rows; "
                f"{_nfmt((~has).sum())} rows have no size (never decoded).</p>")
        k = sized[kept]
        if len(k):
            kw, kh = k["width"].astype("float64"), k["height"].astype("float64")
            stats = pd.DataFrame({
                "width px": kw, "height px": kh, "megapixels": kw * kh / 1e6, "aspect w/h": kw / kh,
            }).quantile([0.0, 0.05, 0.5, 0.95, 1.0]).T
            stats.columns = ["min", "5%", "median", "95%", "max"]
            stats.index.name = f"kept rows ({len(k):,})"
            body += h.table(stats.round(3), table_id="table-sizes")
        charts = [h.chart(plots.size_chart(w, hh, kept, seed=self.opts.seed), "width and height of every image")]
        if len(k):
            charts.append(h.chart(plots.aspect_chart((k["width"] / k["height"]).to_numpy(dtype="float64")),
                                  "aspect ratio histogram of kept rows"))
        return h.Section("sizes", "Image sizes and aspect ratios", body + '<div class="grid">' + "".join(charts)
                         + "</div>")

    def duplicates(self) -> h.Section:
        m = self.m
        key = duplicate_group_key(m)
        n_groups = int(key.nunique())
        dedupe_ran = "dedupe" in self.commands
        body = ""
        if not dedupe_ran:
            body += h.note("<code>curate dedupe</code> (near duplicates) has not run: the groups below are exact "
                           "copies (identical bytes) found at ingest.", "notrun")
        if n_groups == 0:
            return h.Section("duplicates", "Duplicate groups", body + "<p>No duplicate groups.</p>", ran=dedupe_ran)
        in_group = key.notna()
        by = _col(m[in_group & (m["reason"] == "duplicate")], "decided_by").value_counts()
        sizes = key.value_counts().value_counts().sort_index().rename("groups").to_frame()
        sizes.index.name = "group size"
        n_dup = int((m["reason"] == "duplicate").sum())
        body += (f"<p><b>{_count(n_groups, 'group')}</b> hold {_count(in_group.sum(), 'row')}; "
                 f"{_count(n_dup, 'row')} {'is' if n_dup == 1 else 'are'} dropped as <code>duplicate</code> ("
                 + ", ".join(f"{_nfmt(v)} by {h.esc(k)}" for k, v in by.items())
                 + "). Each group keeps one representative (source priority, then resolution, then annotated "
                 "rows); the kept one is framed green and comes first.</p>")
        body += h.table(sizes, table_id="table-dup-sizes")
        for g in largest_groups(m, self.opts.max_dup_groups):
            rep = g.iloc[0]
            conflict = bool(g["label_conflict"].any())
            labels = sorted({str(v) for v in g["label"].dropna()})
            succ = self.successor[g.index[0]]
            now = ("" if rep["status"] == "kept" else
                   f" (kept as its {self.rows_by_id.loc[str(succ), 'layout']} row)" if self.replaced[g.index[0]]
                   else f" (since dropped: {rep['reason']})")
            head = (f"{_count(len(g), 'row')} · kept: {h.esc(_where(rep))} {h.esc(_size(rep))}{h.esc(now)}"
                    + (f" · labels: {h.esc(', '.join(labels))}" if labels else "")
                    + (' · <span class="badge dropped">label conflict</span>' if conflict else ""))
            shown = g.head(self.opts.max_group_members)
            items = [self._thumb(_as_kept(r) if self.replaced[i] else r,
                                 Path(str(r["rel_path"])).name,
                                 badge=(f"kept as {self.rows_by_id.loc[str(self.successor[i]), 'layout']}"
                                        if self.replaced[i] else _badge(r)))
                     for i, r in shown.iterrows()]
            items = _outline_crops(shown, items)
            more = f"<p>… and {len(g) - len(shown)} more</p>" if len(g) > len(shown) else ""
            body += f'<div class="group"><h4>{head}</h4>{h.thumbs(items)}{more}</div>'
        return h.Section("duplicates", "Duplicate groups", body, ran=dedupe_ran)

    def dropped(self) -> h.Section:
        m = self.m
        n_replaced = int(self.replaced.sum())
        replaced = (f"<p>{_count(n_replaced, 'row')} {'was' if n_replaced == 1 else 'were'} replaced by what a "
                    "later stage made of them (<code>superseded</code>: photo → face crop → square) and "
                    f"{'lives' if n_replaced == 1 else 'live'} on as kept rows: not losses, so not shown here "
                    "(see <a href=\"#faces\">Face crops</a>).</p>") if n_replaced else ""
        dropped = m[(m["status"] == "dropped") & ~self.replaced]
        if len(dropped) == 0:
            return h.Section("dropped", "Dropped images", "<p>Nothing was dropped.</p>" + replaced)
        pictures = self.dropped_samples
        body = (f"<p>{_nfmt(len(dropped))} dropped rows. For each reason, a sample of up to "
                f"{self.opts.per_reason} pictures; files that have no picture (cannot be decoded, not an image, "
                "missing) are listed by path with what was found.</p>" + replaced)
        order = [r for r in REASONS if r in set(dropped["reason"])]
        for reason in order:
            rows = dropped[dropped["reason"] == reason]
            body += (f'<h3 id="dropped-{h.esc(reason)}">{h.esc(reason)} · {_count(len(rows), "row")}</h3>'
                     f"<p>{h.esc(REASONS[reason])}.</p>")
            sample = pictures.get(reason)
            if sample is not None and len(sample):
                items = [self._thumb(r, Path(str(r["rel_path"])).name, tooltip=f"{r['path']}\n{_size(r)}\n"
                                     f"{r['detail'] if pd.notna(r['detail']) else ''}")
                         for _, r in sample.iterrows()]
                body += h.thumbs(items) + f"<p>showing {len(sample)} of {len(rows):,}</p>"
            no_pic = rows if sample is None else rows[~rows["sample_id"].isin(sample["sample_id"])]
            if reason in NO_PICTURE_REASONS or sample is None:
                listed = sample_rows(no_pic, 2 * self.opts.per_reason, self.rng)
                items_html = "".join(
                    f"<li><code>{h.esc(_where(r))}</code>"
                    + (f": {h.esc(r['detail'])}" if pd.notna(r["detail"]) else "") + "</li>"
                    for _, r in listed.iterrows())
                more = f"<li>… and {len(no_pic) - len(listed):,} more</li>" if len(no_pic) > len(listed) else ""
                body += f'<ul class="paths">{items_html}{more}</ul>'
        return h.Section("dropped", "Dropped images", body)

    def faces(self) -> h.Section:
        m = self.m
        crops = m[is_face_crop(m)]
        face_boxes = self.ann[self.ann["origin"] == "faces"] if len(self.ann) else self.ann
        ran = "faces" in self.commands or len(crops) > 0 or (m["reason"] == "no_face").any() or len(face_boxes) > 0
        if not ran:
            return h.Section("faces", "Face crops", h.note(
                "<code>curate faces</code> has not run: there are no face crops (derived rows made by faces) "
                "and no <code>no_face</code> rows.", "notrun"), ran=False)
        per_image = crops.groupby("parent_id").size()
        succ = self.successor[crops.index]
        live = crops[succ.notna()]
        later_layouts = pd.Series([self.rows_by_id.loc[str(x), "layout"] for x in succ[live.index]
                                   if str(x) not in set(live["sample_id"])], dtype=object).value_counts()
        fates = pd.Series([self._fate(r) for _, r in crops[succ.isna()].iterrows()], dtype=object).value_counts()
        through = "".join(
            f"{', ' if i else ' ('}{_nfmt(v)} as {'its' if v == 1 else 'their'} <code>{h.esc(k)}</code> "
            f"row{'' if v == 1 else 's'}" for i, (k, v) in enumerate(later_layouts.items()))
        body = (f"<p><b>{_count(len(crops), 'face crop')}</b> from {_count(per_image.size, 'image')}, "
                f"{_nfmt(len(live))} kept" + (through + ")" if through else "")
                + "".join(f", {_nfmt(v)} {h.esc(k)}" for k, v in fates.items())
                + f"; {_count((m['reason'] == 'no_face').sum(), 'image')} dropped as <code>no_face</code>"
                + (f"; {_nfmt(len(face_boxes))} face boxes in annotations.parquet (<code>--boxes</code> mode)"
                   if len(face_boxes) else "") + ". Each crop is shown as the row it is kept as now (a square "
                "made of it by <code>curate square</code>, say), with the chain from its photo in the tooltip; "
                "a crop nothing was kept from is framed red with the reason.</p>")
        if len(per_image):
            dist = per_image.value_counts().sort_index().rename("images").to_frame()
            dist.index.name = "faces per image"
            body += h.table(dist, table_id="table-faces-per-image")
        sample = self.face_sample
        if len(sample):
            items = []
            for _, r in sample.iterrows():
                shown = self.rows_by_id.loc[str(r["_show"])]
                alive = shown["status"] == "kept"
                caption = str(r["label"]) if pd.notna(r["label"]) else Path(str(r["rel_path"])).name
                badge = "" if shown["sample_id"] == r["sample_id"] else str(shown["layout"])
                items.append(h.Thumb(self.uris.get(str(shown["sample_id"])), caption,
                                     f"{_where(r)}\n{self._chain(str(shown['sample_id']))}\n{r['transform'] or ''}",
                                     "kept" if alive else "dropped", badge if alive else self._fate(r),
                                     fallback="cannot decode now"))
            body += h.thumbs(items) + f"<p>showing {len(sample)} of {len(crops):,} crops</p>"
        return h.Section("faces", "Face crops", body)

    def leakage(self) -> h.Section:
        m = self.m
        split_ran = "split" in self.commands or bool(m["split"].notna().any())
        t = leakage_tables(m)
        g = t["groups_across_splits"]
        leaking_groups = g[g["kept_splits"] != ""]
        checks = pd.DataFrame({
            "count": [len(leaking_groups), len(g), len(t["same_bytes"]), len(t["same_origin"]),
                      len(t["label_conflicts"])],
        }, index=pd.Index([
            "duplicate groups with kept rows in more than one split",
            "duplicate groups whose members carry more than one split",
            "identical files (sha256) kept in more than one split",
            "copies of one source file kept in more than one split",
            "label conflicts (duplicate groups with different labels)",
        ], name="check"))
        checks["result"] = ["LEAK" if leaking_groups.size else "ok",
                            "resolved (one member kept)" if len(g) and not leaking_groups.size else
                            ("LEAK" if len(g) else "ok"),
                            "LEAK" if len(t["same_bytes"]) else "ok",
                            "LEAK" if len(t["same_origin"]) else "ok",
                            "conflict" if len(t["label_conflicts"]) else "ok"]
        body = ""
        if not split_ran:
            body += h.note("<code>curate split</code> has not run and no row has a split: nothing can leak across "
                           "splits yet. Label conflicts are shown below all the same.", "notrun")
        leaks = len(leaking_groups) + len(t["same_bytes"]) + len(t["same_origin"])
        if split_ran:
            body += h.note(f"{leaks} leak(s) across splits among kept rows." if leaks else
                           "No leak across splits among kept rows.", "bad" if leaks else "ok")
        body += h.table(checks, table_id="table-leakage")
        n = self.opts.max_table_rows
        for name, title in (("groups_across_splits", "Duplicate groups spanning splits"),
                            ("same_bytes", "Identical files in more than one split"),
                            ("same_origin", "One source file in more than one split"),
                            ("label_conflicts", "Label conflicts")):
            if len(t[name]):
                body += f"<h3>{title}</h3>" + h.table(t[name], table_id=f"table-{name.replace('_', '-')}", max_rows=n)
        checks_run = [r for r in self.runs if r.get("command") == "check"]
        if checks_run:
            body += ("<h3>Last <code>curate check</code></h3><pre>"
                     + h.esc(_clip(json.dumps(checks_run[-1].get("summary", {}), indent=1, default=str)))
                     + "</pre>")
        return h.Section("leakage", "Leakage checks", body, ran=split_ran)

    def run_list(self) -> h.Section:
        if not self.runs:
            return h.Section("runs", "Runs", h.note("No run is recorded in runs/.", "notrun"), ran=False)
        rows = []
        for r in self.runs:
            after = r.get("counts_after") or {}
            summary = json.dumps(r.get("summary", {}), indent=1, default=str)
            rows.append({
                "started (UTC)": _run_started(r),
                "command": str(r.get("command", "")),
                "seconds": r.get("duration_s"),
                "kept / dropped after": f"{after.get('kept', 0):,} / {after.get('dropped', 0):,}",
                "options": f"<code>{h.esc(_options_text(r.get('options', {})))}</code>",
                "summary": f"<details><summary>summary</summary><pre>{h.esc(_clip(summary))}</pre></details>",
            })
        df = pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="#"))
        df["seconds"] = pd.to_numeric(df["seconds"], errors="coerce")
        body = (f"<p>{_count(len(rows), 'command')} recorded in runs/, oldest first.</p>"
                + h.table(df, table_id="table-runs", raw_html=("options", "summary")))
        return h.Section("runs", "Runs", body)


def _options_text(options: dict[str, Any]) -> str:
    parts = []
    for k, v in options.items():
        text = json.dumps(v, default=str, ensure_ascii=False)
        parts.append(f"{k}={_clip(text, 160)}")
    return "  ".join(parts)


def _clip(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_report(
    manifest: pd.DataFrame,
    annotations: pd.DataFrame,
    runs: list[dict[str, Any]],
    options: ReportOptions,
    *,
    title: str,
    meta: str = "",
) -> tuple[str, dict[str, Any]]:
    """The report page for these tables, and a summary of what it shows.

    Thumbnails are decoded in a thread pool while the charts are drawn.
    """
    from curate.report.thumbs import ThumbnailPool

    r = _Renderer(manifest, annotations, runs, options)
    r.plan_thumbnails()
    with ThumbnailPool(options.workers, options.thumb_px, options.thumb_quality) as pool:
        pool.submit(r.wanted)
        # Charts first (main thread), pictures meanwhile (pool threads).
        counts, balance, sizes = r.counts(), r.balance(), r.sizes()
        r.uris = pool.results()
        sections = [counts, balance, sizes, r.duplicates(), r.dropped(), r.faces(), r.leakage(), r.run_list()]
    m = manifest
    kept = int((m["status"] == "kept").sum())
    cards = [
        ("rows", _nfmt(len(m))), ("kept", _nfmt(kept)), ("dropped", _nfmt(len(m) - kept)),
        ("derived", _nfmt(m["parent_id"].notna().sum())),
        ("labels (kept)", _nfmt(m.loc[m["status"] == "kept", "label"].nunique())),
        ("boxes", _nfmt(len(annotations))), ("runs", _nfmt(len(runs))),
    ]
    page = h.page(title, meta, cards, sections,
                  footer_html=f"made by curate {h.esc(__version__)} · self-contained: this file loads nothing "
                              "from outside itself")
    drawn = sum(1 for u in r.uris.values() if u)
    summary = {
        "rows": len(m),
        "thumbnails": drawn,
        "thumbnails_failed": len(r.uris) - drawn,
        "sections": {s.section_id: ("shown" if s.ran else "not run") for s in sections},
    }
    return page, summary


def report(manifest: pd.DataFrame, options: ReportOptions, *, ws: Workspace,
           annotations: pd.DataFrame) -> StageResult:
    """Write the HTML report of ``ws`` to ``options.out`` (default ``WS/report.html``).

    Reads the tables and ``runs/``; changes nothing in the workspace, so the
    result is not written back and no run is recorded.
    """
    options.check()
    from curate.paths import check_output, workspace_sources

    out = Path(options.out) if options.out is not None else ws.root / "report.html"
    out = check_output(out, sources=workspace_sources(ws.root), workspace=ws.root)
    if out.is_dir():
        raise OptionError("", field="--out", expected="a file name for the HTML report", found=f"a folder: {out}",
                          hint="add a file name, e.g. --out report.html")
    t0 = time.perf_counter()
    runs = ws.runs()
    meta = (f"workspace <code>{h.esc(ws.root)}</code> · generated {h.esc(utc_now()[:19].replace('T', ' '))} UTC "
            f"· curate {h.esc(__version__)}")
    page, summary = render_report(manifest, annotations, runs, options,
                                  title=options.title or f"curate report: {ws.name}", meta=meta)
    data = page.encode("utf-8")
    atomic_write_bytes(out.absolute(), data)
    summary = {"out": str(out.absolute()), "bytes": len(data), **summary,
               "seconds": round(time.perf_counter() - t0, 2)}
    return StageResult(manifest=manifest, summary=summary, write=False)
