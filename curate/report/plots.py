"""matplotlib charts for the report, returned as PNG ``data:`` URIs.

Each function takes plain counts (pandas objects) and returns one chart.
They use matplotlib's object API (``Figure``, no pyplot), so no global state
is touched and no window is ever opened. matplotlib is imported inside each
function: ``curate --help`` must not pay for it.

    >>> import pandas as pd
    >>> uri = bar_chart(pd.Series({"cat": 3, "dog": 5}), title="labels")
    >>> uri.startswith("data:image/png;base64,")
    True
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Categories beyond this are summed into one "other (N)" bar, so a dataset
# with 1,000 classes still gets a readable chart (the tables list them all).
MAX_BARS = 30
WIDTH_IN = 6.0
DPI = 96

STATUS_COLORS = {"kept": "#2a9d8f", "dropped": "#e76f51"}
SPLIT_COLORS = {"train": "#4c78a8", "val": "#f58518", "test": "#b279a2", "(none)": "#9d9d9d"}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"]


def _figure(height_in: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, max(1.6, min(height_in, 14.0))), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def to_data_uri(fig: Figure) -> str:
    """Render ``fig`` as an optimised PNG ``data:`` URI."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Labels in scripts the default font lacks (e.g. Hangul) draw as boxes; that is not an error.
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _integer_ticks(ax: Axes) -> None:
    """Counts are whole numbers: no 2.5-row ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def top_n(df: pd.DataFrame, n: int = MAX_BARS) -> pd.DataFrame:
    """The ``n - 1`` largest rows (by row total) and one ``other (k)`` row summing the rest."""
    if len(df) <= n:
        return df
    order = df.sum(axis=1).sort_values(ascending=False, kind="mergesort").index
    head, rest = df.loc[order[: n - 1]], df.loc[order[n - 1:]]
    other = pd.DataFrame([rest.sum(axis=0)], index=[f"other ({len(rest)})"])
    return pd.concat([head, other])


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bar_chart(counts: pd.Series, *, title: str, xlabel: str = "rows", color: str = PALETTE[0]) -> str:
    """Horizontal bars, largest first: one bar per category."""
    return stacked_bar_chart(counts.rename("count").to_frame(), title=title, xlabel=xlabel, colors={"count": color},
                             legend=False)


def stacked_bar_chart(
    table: pd.DataFrame,
    *,
    title: str,
    xlabel: str = "rows",
    colors: dict[str, str] | None = None,
    legend: bool = True,
) -> str:
    """Horizontal stacked bars: one bar per index value, one segment per column."""
    table = top_n(table.fillna(0).astype("int64"))
    fig, ax = _figure(0.7 + 0.26 * len(table))
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for i, col in enumerate(table.columns):
        values = table[col].to_numpy(dtype=float)
        color = (colors or {}).get(str(col), PALETTE[i % len(PALETTE)])
        ax.barh(y, values, left=left, color=color, label=str(col), height=0.72)
        left += values
    ax.set_yticks(y, [_short(str(i)) for i in table.index], fontsize=8)
    ax.invert_yaxis()  # largest on top, as in the tables
    ax.set_xlim(0, max(1.0, float(left.max()) * 1.05) if len(left) else 1.0)
    _integer_ticks(ax)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    if legend and len(table.columns) > 1:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_data_uri(fig)


def before_after_chart(before: pd.Series, after: pd.Series, *, title: str) -> str:
    """Grouped horizontal bars per class: count before and after balancing."""
    table = top_n(pd.DataFrame({"before": before, "after": after}).fillna(0).astype("int64"))
    fig, ax = _figure(0.8 + 0.36 * len(table))
    y = np.arange(len(table))
    ax.barh(y - 0.2, table["before"], height=0.38, color="#9d9d9d", label="before balance")
    ax.barh(y + 0.2, table["after"], height=0.38, color=PALETTE[0], label="after balance")
    ax.set_yticks(y, [_short(str(i)) for i in table.index], fontsize=8)
    ax.invert_yaxis()
    _integer_ticks(ax)
    ax.set_xlabel("rows per class")
    ax.set_title(title, fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_data_uri(fig)


def size_chart(width: np.ndarray, height: np.ndarray, kept: np.ndarray, *, seed: int = 0,
               max_points: int = 20_000) -> str:
    """Scatter of displayed width x height (log axes), kept vs dropped.

    At most ``max_points`` points are drawn (a seeded sample): beyond that a
    scatter only gets slower, not more informative.
    """
    n = len(width)
    if n > max_points:
        idx = np.random.default_rng(seed).choice(n, max_points, replace=False)
        width, height, kept = width[idx], height[idx], kept[idx]
    fig, ax = _figure(4.2)
    for status, mask in (("kept", kept), ("dropped", ~kept)):
        if mask.any():
            ax.scatter(width[mask], height[mask], s=7, alpha=0.45, color=STATUS_COLORS[status],
                       label=f"{status} ({int(mask.sum()):,}{' sampled' if n > max_points else ''})",
                       edgecolors="none", rasterized=True)
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo = max(1.0, float(min(width.min(), height.min())) * 0.8)
    hi = float(max(width.max(), height.max())) * 1.25
    ax.plot([lo, hi], [lo, hi], color="#bbbbbb", lw=0.8, ls="--", label="square")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("width (px, displayed)")
    ax.set_ylabel("height (px, displayed)")
    ax.set_title("Image sizes", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return to_data_uri(fig)


def aspect_chart(aspect_wh: np.ndarray) -> str:
    """Histogram of width / height on a log axis, with common ratios marked."""
    fig, ax = _figure(3.0)
    a = aspect_wh[np.isfinite(aspect_wh) & (aspect_wh > 0)]
    lo, hi = min(float(a.min()), 0.5) * 0.9, max(float(a.max()), 2.0) * 1.1
    bins = np.geomspace(lo, hi, 60)
    ax.hist(a, bins=bins.tolist(), color=PALETTE[0])
    ax.set_xscale("log")
    for ratio, name in ((9 / 16, "9:16"), (3 / 4, "3:4"), (1.0, "1:1"), (4 / 3, "4:3"), (16 / 9, "16:9")):
        ax.axvline(ratio, color="#999999", lw=0.8, ls=":")
        ax.text(ratio, 1.0, name, transform=ax.get_xaxis_transform(), fontsize=7, ha="center", va="bottom")
    from matplotlib.ticker import NullFormatter

    ax.set_xticks([0.25, 0.5, 1, 2, 4], ["1/4", "1/2", "1", "2", "4"])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_xlabel("aspect ratio (width / height)")
    ax.set_ylabel("kept rows")
    ax.spines[["top", "right"]].set_visible(False)
    return to_data_uri(fig)
