"""Split units and ratios: which rows must share a split, and how the splits are counted.

Shared by ``curate split`` (which places the units), ``curate check`` (which
reports a unit spread over two splits) and ``curate balance`` (which prints
the same per-class table). Table operations only: no image is opened.

A *unit* is a connected component of the rows' links (:func:`unit_ids`):
lineage (``parent_id``), duplicate groups (``dup_group``, ``duplicate_of``), a
``--group`` column, and perceptual hashes within ``--near-bits`` bits.

    >>> import pandas as pd
    >>> m = pd.DataFrame({"sample_id": ["a", "b", "c"], "parent_id": [None, "a", None],
    ...                   "dup_group": [None, None, None], "duplicate_of": [None, None, None]})
    >>> unit_ids(m).tolist()
    [0, 0, 1]
    >>> parse_ratios("8:1:1")
    {'train': 0.8, 'val': 0.1, 'test': 0.1}
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curate.errors import CurateError, OptionError
from curate.schema import SPLITS

if TYPE_CHECKING:
    from curate.workspace import Workspace

NONE_LABEL = "(none)"  # the class or split of rows that have none, in counts and tables
RATIO_SUM_TOLERANCE = 1e-3  # named fractions must sum to 1 within this
GROUP_COLUMN = "group"  # the column `split --group-from` fills; it always binds a unit


# -- split names -------------------------------------------------------------

# Split names as each ecosystem writes them -> curate's canonical name.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}


# AI-Hub's folder names: "1.Training" / "2.Validation" (a number before the name) and
# "[T원천]x" / "[V라벨링]x" (T = training, V = validation; 원천 = source images, 라벨링 = labels).
_NUMBERED = re.compile(r"^\d{1,3}\s*[._\-)]\s*([a-z]+)$")
_BRACKETED = re.compile(r"^\[([tv])(원천|라벨링|source|label(?:ing)?)\]")


def canonical_split(name: str | None) -> str | None:
    """'valid' -> 'val' etc.; None for names that are not a split.

    >>> [canonical_split(n) for n in ("Valid", "1.Training", "02_validation", "[V라벨링]car_01", "01.원천데이터")]
    ['val', 'train', 'val', 'val', None]
    """
    if name is None:
        return None
    n = name.strip().lower()
    if n in SPLIT_ALIASES:
        return SPLIT_ALIASES[n]
    m = _NUMBERED.match(n)
    if m:
        return SPLIT_ALIASES.get(m.group(1))
    m = _BRACKETED.match(n)
    if m:
        return "train" if m.group(1) == "t" else "val"
    return None


# -- ratios ------------------------------------------------------------------

def parse_ratios(text: str) -> dict[str, float]:
    """``"8:1:1"`` or ``"train=0.8,val=0.1,test=0.1"`` -> ratios summing to 1.

    The colon form needs three numbers (train:val:test). The named form may
    leave a split out (ratio 0) and accepts aliases such as ``valid``. Named
    fractions (any value with a fraction part) must sum to 1; named whole
    numbers are weights, like the colon form.

    >>> parse_ratios("8:1:1")
    {'train': 0.8, 'val': 0.1, 'test': 0.1}
    >>> parse_ratios("train=3,valid=1")
    {'train': 0.75, 'val': 0.25, 'test': 0.0}
    """
    text = text.strip()
    expected = "train:val:test numbers (e.g. 8:1:1) or named ratios (e.g. train=0.8,val=0.1,test=0.1)"
    raw: dict[str, float] = dict.fromkeys(SPLITS, 0.0)
    try:
        if "=" in text:
            for part in text.split(","):
                if not part.strip():
                    continue
                name, _, value = part.partition("=")
                split = canonical_split(name)
                if split is None:
                    raise OptionError("", field="--ratios", expected=f"split names {list(SPLITS)}",
                                      found=repr(name.strip()))
                raw[split] += float(value)
        else:
            parts = [p for p in text.replace("/", ":").split(":")]
            if len(parts) != 3:
                raise OptionError("", field="--ratios", expected=expected, found=repr(text))
            raw = dict(zip(SPLITS, (float(p) for p in parts), strict=True))
    except ValueError:
        raise OptionError("", field="--ratios", expected=expected, found=repr(text)) from None
    if any(v < 0 or not np.isfinite(v) for v in raw.values()) or sum(raw.values()) <= 0:
        raise OptionError("", field="--ratios", expected="non-negative ratios with a positive sum", found=repr(text))
    total = sum(raw.values())
    if "=" in text and any(v != int(v) for v in raw.values()) and abs(total - 1) > RATIO_SUM_TOLERANCE:
        # Fractions that do not add up are a typo, not a scale (issue 17: 0.8+0.2+0.2 was quietly rescaled).
        raise OptionError("", field="--ratios", expected="named fractions summing to 1",
                          found=f"{text!r} (sum {total:g})",
                          hint="e.g. train=0.6,val=0.2,test=0.2; whole numbers are weights: train=8,val=1,test=1")
    return {s: raw[s] / total for s in SPLITS}


def format_ratios(ratios: dict[str, float]) -> str:
    return "/".join(f"{ratios.get(s, 0.0):.2f}" for s in SPLITS)


# -- units -------------------------------------------------------------------

def root_positions(manifest: pd.DataFrame) -> np.ndarray:
    """Position of each row's root ancestor (the ingested row it descends from)."""
    ids = pd.Index(manifest["sample_id"])
    parent = ids.get_indexer(manifest["parent_id"].astype(object))
    pos = np.arange(len(manifest))
    root = np.where(parent >= 0, parent, pos)
    for _ in range(64):  # lineage is shallow (crop of a square of a photo); 64 guards a cycle
        nxt = np.where(parent[root] >= 0, parent[root], root)
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root


def _links_by_key(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every row with a non-null value to the first row with that value."""
    codes, _ = pd.factorize(values.astype(object), use_na_sentinel=True)
    pos = np.arange(len(values))
    has = codes >= 0
    if not has.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    first = np.full(codes.max() + 1, -1, dtype=np.int64)
    # reversed assignment leaves the first occurrence in place
    first[codes[has][::-1]] = pos[has][::-1]
    return pos[has], first[codes[has]]


def _near_hash_links(manifest: pd.DataFrame, near_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining rows whose ``phash`` values are within ``near_bits`` bits.

    Equal hashes are joined by key; near ones by the pigeonhole search of
    ``curate check``, run once over the distinct hashes (so a thousand blank
    images cost one entry, not a million pairs).
    """
    from curate.hashing import hashes_to_uint64
    from curate.index import near_pairs_across_splits

    col = manifest["phash"].astype(object)
    valid = (col.notna() & col.astype(str).str.len().eq(16)).to_numpy()
    pos = np.flatnonzero(valid)
    if len(pos) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    h = hashes_to_uint64(col.iloc[pos].astype(str).tolist())
    uniq, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    src, dst = [pos], [pos[first[inverse]]]  # every row to the first row with its hash
    if near_bits > 0 and len(uniq) > 1:
        pairs = near_pairs_across_splits(uniq, np.arange(len(uniq)), near_bits)
        src.append(pos[first[pairs["i"].to_numpy()]])
        dst.append(pos[first[pairs["j"].to_numpy()]])
    return np.concatenate(src), np.concatenate(dst)


def unit_ids(manifest: pd.DataFrame, group: str = "dup", near_bits: int | None = None) -> np.ndarray:
    """Component id of each row: rows that must share one split get the same id.

    Joins lineage (``parent_id``), duplicate groups (``dup_group``,
    ``duplicate_of``), unless ``group == "dup"`` equal values of ``group``, and
    with ``near_bits`` rows whose perceptual hashes are that close.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(manifest)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ids = pd.Index(manifest["sample_id"])
    pos = np.arange(n)
    src, dst = [], []
    parent = ids.get_indexer(manifest["parent_id"].astype(object))
    m = parent >= 0
    src.append(pos[m])
    dst.append(parent[m])
    for col in ("dup_group", "duplicate_of"):
        a, b = _links_by_key(manifest[col])
        src.append(a)
        dst.append(b)
        rep = ids.get_indexer(manifest[col].astype(object))  # also join the representative itself
        m = rep >= 0
        src.append(pos[m])
        dst.append(rep[m])
    # The `group` column (`split --group-from`) always binds: a person never straddles splits,
    # whatever --group a later split or check names.
    for col in dict.fromkeys([c for c in (group, GROUP_COLUMN) if c != "dup" and c in manifest.columns]):
        a, b = _links_by_key(manifest[col])
        src.append(a)
        dst.append(b)
    if near_bits is not None and near_bits >= 0:
        a, b = _near_hash_links(manifest, near_bits)
        src.append(a)
        dst.append(b)
    s, d = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(s), dtype=np.int8), (s, d)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def strata_of(manifest: pd.DataFrame, stratify: str | None) -> pd.Series:
    if stratify is None:
        return pd.Series(["(all)"] * len(manifest), index=manifest.index, dtype=object)
    s = manifest[stratify].astype(object)
    return s.where(s.notna(), NONE_LABEL).astype(str)


# -- counts and the ratio report ----------------------------------------------

def split_counts(manifest: pd.DataFrame, stratify: str | None = "label") -> dict[str, dict[str, int]]:
    """Kept rows per class and split: ``{class: {split: n}}`` (split ``(none)`` when unset)."""
    kept = manifest[manifest["status"] == "kept"]
    if not len(kept):
        return {}
    cls = strata_of(kept, stratify)
    spl = kept["split"].astype(object).where(kept["split"].notna(), NONE_LABEL)
    table = pd.crosstab(cls.to_numpy(), spl.to_numpy())
    return {str(c): {str(s): int(v) for s, v in row.items() if v} for c, row in table.iterrows()}


def ratio_report(counts: dict[str, dict[str, int]], ratios: dict[str, float]) -> dict[str, Any]:
    """Achieved ratio per class and split, and the largest deviation from ``ratios``."""
    per_class: dict[str, dict[str, float]] = {}
    worst: dict[str, Any] = {"class": None, "split": None, "achieved": None, "target": None, "deviation": 0.0}
    for c, per in sorted(counts.items()):
        total = sum(v for s, v in per.items() if s in SPLITS)
        if not total:
            continue
        per_class[c] = {s: round(per.get(s, 0) / total, 4) for s in SPLITS}
        for s in SPLITS:
            dev = per.get(s, 0) / total - ratios.get(s, 0.0)
            if abs(dev) > abs(worst["deviation"]) + 1e-12:
                worst = {"class": c, "split": s, "achieved": round(per.get(s, 0) / total, 4),
                         "target": round(ratios.get(s, 0.0), 4), "deviation": round(dev, 4)}
    overall: dict[str, int] = {s: 0 for s in SPLITS}
    for per in counts.values():
        for s in SPLITS:
            overall[s] += per.get(s, 0)
    n = sum(overall.values())
    return {
        "per_class": per_class,
        "overall": {s: round(v / n, 4) if n else 0.0 for s, v in overall.items()},
        "largest_deviation": worst,
    }


def format_report(summary: dict[str, Any], title: str) -> str:
    """Terminal table: kept rows per class and split (before -> after) and, after a split, the
    achieved ratios per class and the largest deviation."""
    before, after = summary.get("before", {}), summary.get("after", {})
    classes = sorted(set(before) | set(after))
    if not classes:
        return title + "\n  no kept rows"
    cols = [s for s in [*SPLITS, NONE_LABEL] if any(s in d.get(c, {}) for d in (before, after) for c in classes)]
    achieved = summary.get("achieved", {}).get("per_class", {})
    cells = {}
    for c in classes:
        for s in cols:
            b, a = before.get(c, {}).get(s, 0), after.get(c, {}).get(s, 0)
            cells[c, s] = f"{b}" if a == b else f"{b} -> {a}"
        if achieved:
            cells[c, "ratios"] = format_ratios(achieved[c]) if c in achieved else "-"
    if achieved:
        cols.append("ratios")
    cw = max(5, *(len(c) for c in classes))
    widths = {s: max(len(s), *(len(cells[c, s]) for c in classes)) for s in cols}
    lines = [title, "  " + "class".ljust(cw) + "".join(f"  {s:>{widths[s]}}" for s in cols)]
    for c in classes:
        lines.append("  " + c.ljust(cw) + "".join(f"  {cells[c, s]:>{widths[s]}}" for s in cols))
    if summary.get("group_from"):
        lines.append(f"  groups from --group-from {summary['group_from']}: {summary.get('groups')} "
                     "(each kept in one split)")
    if summary.get("achieved"):
        rep = summary["achieved"]
        lines.append(f"  overall train/val/test {format_ratios(rep['overall'])} "
                     f"(target {format_ratios(summary.get('ratios', {}))})")
        w = rep["largest_deviation"]
        if w["class"] is not None:
            lines.append(f"  largest deviation: class {w['class']!r}, {w['split']} {w['achieved']:.2f} "
                         f"vs target {w['target']:.2f} ({w['deviation']:+.2f})")
    return "\n".join(lines)


def last_split_run(ws: Workspace | None) -> dict[str, Any]:
    """The options of the last ``curate split`` run recorded in ``ws``, with
    ``ratios`` parsed to a dict (None when the record's ratios cannot be read)."""
    if ws is None:
        return {}
    runs = [r for r in ws.runs() if r.get("command") == "split"]
    last = dict(runs[-1].get("options") or {}) if runs else {}
    ratios = last.get("ratios")
    if isinstance(ratios, str):  # as typed ("8:1:1"), e.g. a record written by hand or another tool
        try:
            last["ratios"] = parse_ratios(ratios)
        except CurateError:
            last["ratios"] = None
    elif not isinstance(ratios, dict):
        last["ratios"] = None
    return last
