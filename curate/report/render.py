"""The HTML page of ``curate report``: sections drawn from :mod:`curate.report.tables`, thumbnails
(:mod:`curate.report.thumbs`, in a thread pool while the charts are drawn), charts
(:mod:`curate.report.plots`) and markup (:mod:`curate.report.html`).

:func:`render_report` turns the tables (manifest, annotations, ``runs/``
records) into one self-contained page and a summary of what it shows; the
``curate report`` stage (:mod:`curate.stages.report`) reads the workspace and
writes the page.

    >>> from curate.schema import empty_annotations, empty_manifest
    >>> page, summary = render_report(empty_manifest(), empty_annotations(), [], ReportOptions(workers=1), title="t")
    >>> page.startswith("<!DOCTYPE html>"), summary["sections"]["runs"]
    (True, 'not run')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate import __version__
from curate.errors import OptionError
from curate.lineage import kept_successors
from curate.report import html as h
from curate.report.tables import (
    NO_PICTURE_REASONS,
    NONE,
    balance_view,
    count_tables,
    duplicate_group_key,
    is_face_crop,
    largest_groups,
    leakage_tables,
    sample_rows,
    text_col,
)
from curate.schema import REASONS


@dataclass(frozen=True, kw_only=True)
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
    max_label_issues: int = 24  # likely mislabels pictured, most likely first
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


def _raw(m: pd.DataFrame, name: str) -> pd.Series:
    """A column as it is (nulls kept), or all null when the manifest predates it."""
    return m[name] if name in m.columns else pd.Series(None, index=m.index, dtype=object)


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
        self._want(self.label_issue_rows())

    def label_issue_rows(self) -> pd.DataFrame:
        """Rows flagged by ``curate labels --find-issues`` (still flagged, or dropped as mislabelled), by score."""
        m = self.m
        flagged = _raw(m, "suggested_label").notna() | (m["reason"] == "mislabelled")
        score = pd.to_numeric(_raw(m, "label_issue_score"), errors="coerce")
        sel = flagged & m["width"].notna()
        # (assign the scores of the selected rows only: a Series assigned to an empty frame would add rows)
        return m[sel].assign(_s=score[sel].to_numpy()).sort_values(
            ["_s", "sample_id"], ascending=[False, True], kind="mergesort").head(self.opts.max_label_issues)


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
        by = text_col(m[in_group & (m["reason"] == "duplicate")], "decided_by").value_counts()
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

    def labels(self) -> h.Section:
        m = self.m
        original = _raw(m, "original_label")
        score = pd.to_numeric(_raw(m, "label_issue_score"), errors="coerce")
        ran = "labels" in self.commands or bool(score.notna().any())
        moved = m[original.notna() & m["label"].notna() & (original != m["label"])]
        body = ""
        if not ran and not len(moved):
            return h.Section("labels", "Labels", h.note(
                "<code>curate labels</code> has not run: no label map, no settled conflicts, no mislabel search "
                "(<code>curate labels WS --find-issues</code>).", "notrun"), ran=False)
        if len(moved):
            renamed = (moved.groupby([original[moved.index], moved["label"], _raw(moved, "label_origin").fillna(NONE)])
                       .size().rename("rows").reset_index())
            renamed.columns = ["original label", "label now", "set by", "rows"]
            body += (f"<p><b>{_count(len(moved), 'row')}</b> carry a label other than their source's "
                     "(<code>original_label</code> keeps it; <code>curate labels WS --reset</code> undoes all).</p>"
                     + h.table(renamed.set_index("original label"), table_id="table-relabels",
                               max_rows=self.opts.max_table_rows))
        conflicts = int(m.loc[_raw(m, "label_conflict").fillna(False).astype(bool), "dup_group"].nunique())
        body += (f"<p>{_count(conflicts, 'duplicate group')} with a label conflict left "
                 "(<code>curate labels WS --resolve majority|source:NAME|keep</code>).</p>")
        flagged = self.label_issue_rows()
        n_flagged = int((_raw(m, "suggested_label").notna() | (m["reason"] == "mislabelled")).sum())
        if score.notna().any():
            body += (f"<p><b>{_count(n_flagged, 'likely mislabel')}</b> among {_nfmt(int(score.notna().sum()))} "
                     "scored images (confident learning over out-of-fold predictions). Most likely first; the "
                     "caption is the label → the class the picture looks like.</p>")
            items = [self._thumb(r, f"{r['label']} → {r['suggested_label'] if pd.notna(r['suggested_label']) else '?'}",
                                 badge=f"{r['_s']:.2f}" if pd.notna(r["_s"]) else "",
                                 tooltip=f"{r['path']}\nscore {r['_s']:.3f}\n{_where(r)}")
                     for _, r in flagged.iterrows()]
            body += h.thumbs(items) + (f"<p>showing {len(flagged)} of {n_flagged:,}</p>" if n_flagged else "")
        return h.Section("labels", "Labels", body, ran=ran)

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
        sections = [counts, balance, sizes, r.duplicates(), r.dropped(), r.faces(), r.labels(), r.leakage(),
                    r.run_list()]
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
