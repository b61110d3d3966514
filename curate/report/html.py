"""HTML pieces of the report: escaping, tables, figures, thumbnails, sections, page.

Everything is plain strings with every value escaped by :func:`esc`. The page
carries its own CSS and no script, and a Content-Security-Policy that lets it
load nothing but inline ``data:`` images, so it cannot reach outside itself
even by accident.

    >>> import pandas as pd
    >>> html = table(pd.DataFrame({"rows": [3]}, index=pd.Index(["a<b"], name="source")), table_id="t")
    >>> "a&lt;b" in html and 'id="t"' in html
    True
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# No network, no scripts: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde1e8; --bg:#ffffff; --panel:#f6f7f9;
        --kept:#2a9d8f; --dropped:#e76f51; --warn:#b7791f; --ok:#2f855a; --bad:#c53030; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:20px 32px 12px; border-bottom:1px solid var(--line); background:var(--panel); }
header h1 { margin:0 0 4px; font-size:22px; }
header .meta { color:var(--muted); font-size:12px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin-top:12px; }
.card { background:var(--bg); border:1px solid var(--line); border-radius:6px; padding:6px 12px; min-width:92px; }
.card b { display:block; font-size:20px; }
.card span { color:var(--muted); font-size:12px; }
nav { padding:8px 32px; border-bottom:1px solid var(--line); font-size:13px; position:sticky; top:0;
      background:var(--bg); z-index:2; }
nav a { margin-right:14px; color:#2b6cb0; text-decoration:none; }
main { padding:0 32px 40px; max-width:1400px; }
section { border-bottom:1px solid var(--line); padding:14px 0 18px; }
h2 { font-size:18px; margin:6px 0 8px; }
h3 { font-size:14px; margin:14px 0 6px; }
p { margin:6px 0; max-width:980px; }
.note { border-left:4px solid #90a4c0; background:var(--panel); padding:6px 10px; margin:8px 0; max-width:980px; }
.note.notrun { border-left-color:var(--warn); }
.note.ok { border-left-color:var(--ok); }
.note.bad { border-left-color:var(--bad); }
.grid { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
.scroll { max-height:560px; overflow:auto; }
table { border-collapse:collapse; font-size:12.5px; margin:4px 0 10px; }
th, td { border-bottom:1px solid var(--line); padding:3px 10px 3px 6px; text-align:left; vertical-align:top; }
th { background:var(--panel); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.more { color:var(--muted); font-style:italic; }
figure { margin:6px 0; }
figure img.chart { max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:12px; }
.thumbs { display:flex; flex-wrap:wrap; gap:8px; margin:4px 0 12px; }
.thumb { width:112px; font-size:11px; color:var(--muted); overflow:hidden; }
.thumb img, .thumb .noimg { display:block; width:104px; height:104px; object-fit:contain;
        background:var(--panel); border:3px solid var(--line); border-radius:4px; }
.thumb.kept img { border-color:var(--kept); }
.thumb.dropped img { border-color:var(--dropped); }
.thumb .noimg { display:flex; align-items:center; justify-content:center; text-align:center; font-size:11px; }
.thumb .cap { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.thumb .pic { position:relative; width:104px; height:104px; }
.thumb .pic svg { position:absolute; left:3px; top:3px; width:98px; height:98px; pointer-events:none; }
.thumb .pic polygon { fill:none; stroke:#e63946; stroke-width:2.5; vector-effect:non-scaling-stroke; }
.badge { display:inline-block; padding:0 5px; border-radius:3px; color:#fff; font-size:10.5px; font-weight:600; }
.badge.kept { background:var(--kept); }
.badge.dropped { background:var(--dropped); }
.group { border:1px solid var(--line); border-radius:6px; padding:6px 10px; margin:8px 0; }
.group h4 { margin:0 0 4px; font-size:13px; font-weight:600; }
code, pre { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12px; }
pre { background:var(--panel); padding:6px 8px; overflow:auto; max-height:320px; white-space:pre-wrap; }
details summary { cursor:pointer; color:#2b6cb0; }
ul.paths { margin:4px 0 10px; padding-left:18px; font-size:12px; }
footer { padding:12px 32px; color:var(--muted); font-size:12px; }
"""


def esc(value: object) -> str:
    """HTML-escape anything (None and NaN become an empty string)."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


def _cell(value: object) -> tuple[str, bool]:
    """(text, is_number) for one table cell."""
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), False
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "", False
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}", True
    if isinstance(value, numbers.Real):
        f = float(value)
        return (f"{f:,.0f}" if f.is_integer() or abs(f) >= 100 else f"{f:.3g}"), True
    return esc(value), False


def table(df: pd.DataFrame, *, table_id: str, max_rows: int | None = None, raw_html: Sequence[str] = ()) -> str:
    """``df`` as an HTML table: the index is the first column (named by ``df.index.name``).

    Numbers are right-aligned with thousands separators. Columns named in
    ``raw_html`` hold HTML made by this module and are not escaped again.
    """
    index_name = df.index.name or ""
    head = "".join(
        f'<th class="num">{esc(c)}</th>' if pd.api.types.is_numeric_dtype(df[c]) and c not in raw_html
        else f"<th>{esc(c)}</th>"
        for c in df.columns
    )
    rows = []
    shown = df if max_rows is None else df.head(max_rows)
    for idx, rec in zip(shown.index, shown.itertuples(index=False), strict=True):
        cells = [f"<th>{esc(idx)}</th>"]
        for col, value in zip(df.columns, rec, strict=True):
            if col in raw_html:
                cells.append(f"<td>{value}</td>")
                continue
            text, is_num = _cell(value)
            cells.append(f'<td class="num">{text}</td>' if is_num else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if max_rows is not None and len(df) > max_rows:
        rows.append(f'<tr><td class="more" colspan="{len(df.columns) + 1}">… and {len(df) - max_rows:,} more</td></tr>')
    return (f'<table id="{esc(table_id)}"><thead><tr><th>{esc(index_name)}</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def chart(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img class="chart" src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def note(text_html: str, kind: str = "") -> str:
    """A highlighted paragraph. ``kind``: "" (info), "notrun", "ok" or "bad"."""
    return f'<div class="note {esc(kind)}">{text_html}</div>'


@dataclass(frozen=True)
class Thumb:
    """One picture in a grid: a data URI (or None: show ``fallback`` text instead)."""

    uri: str | None
    caption: str
    tooltip: str = ""
    status: str = ""  # "kept" / "dropped" frames and badges the picture
    badge: str = ""
    fallback: str = "no picture"
    # A region to outline on the picture (a crop of it found by dedupe): corners in
    # the pixels of an image of ``outline_wh``, drawn over the picture as shown.
    outline: tuple[tuple[float, float], ...] = ()
    outline_wh: tuple[int, int] = (0, 0)


def thumbs(items: Iterable[Thumb]) -> str:
    out = []
    for t in items:
        pic = (f'<img src="{t.uri}" alt="{esc(t.caption)}" loading="eager">' if t.uri
               else f'<div class="noimg">{esc(t.fallback)}</div>')
        if t.uri and t.outline and min(t.outline_wh) > 0:
            # The SVG's viewBox is the image's pixel frame, fitted like the picture (object-fit: contain).
            points = " ".join(f"{float(x):.1f},{float(y):.1f}" for x, y in t.outline)
            pic = (f'<div class="pic">{pic}<svg viewBox="0 0 {t.outline_wh[0]} {t.outline_wh[1]}" '
                   f'preserveAspectRatio="xMidYMid meet"><polygon points="{esc(points)}"/></svg></div>')
        badge = f'<span class="badge {esc(t.status)}">{esc(t.badge)}</span> ' if t.badge else ""
        out.append(f'<div class="thumb {esc(t.status)}" title="{esc(t.tooltip)}">{pic}'
                   f'<div class="cap">{badge}{esc(t.caption)}</div></div>')
    return f'<div class="thumbs">{"".join(out)}</div>'


@dataclass(frozen=True)
class Section:
    section_id: str
    title: str
    body: str
    ran: bool = True  # False: the section says its stage has not run


def page(title: str, meta_html: str, cards: Sequence[tuple[str, str]], sections: Sequence[Section],
         footer_html: str = "") -> str:
    """The whole document."""
    nav = "".join(f'<a href="#{esc(s.section_id)}">{esc(s.title)}</a>' for s in sections)
    card_html = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in cards)
    body = "".join(
        f'<section id="{esc(s.section_id)}" data-ran="{"yes" if s.ran else "no"}">'
        f"<h2>{esc(s.title)}</h2>{s.body}</section>"
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body><header><h1>{esc(title)}</h1><div class=\"meta\">{meta_html}</div>"
        f'<div class="cards">{card_html}</div></header>\n'
        f"<nav>{nav}</nav>\n<main>{body}</main>\n"
        f"<footer>{footer_html}</footer></body></html>\n"
    )
