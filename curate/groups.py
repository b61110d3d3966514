"""Duplicate groups and the keeper policy: which copy of a group is kept.

Shared by ``curate ingest`` (exact duplicates, :func:`mark_exact`) and
``curate dedupe`` (near duplicates): both mark their groups through
:func:`apply_groups`, so one policy (:func:`keeper_order`) decides which copy is
kept:

1. source priority: the order sources were given (``--priority`` overrides);
2. resolution: more pixels first;
3. annotated rows (rows with boxes) first;
4. a file name that is not a copy name (``x (1).jpg``, ``x - Copy.jpg``,
   ``Copy of x.jpg``: :func:`is_copy_name`) before one that is;
5. stable order: source, then relative path, then sample_id.

Table operations only: no image is opened here.

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

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

# "uncropped": the original before a crop of it or a padded/shown copy of it (issue 15; dedupe's keypoint search).
KEEP_CRITERIA = ("priority", "uncropped", "resolution", "annotated")

# File names that browsers and file managers give a second copy of a file (issue 17: dedupe kept
# "chelsea (1).jpg" over "chelsea.jpg"). Such a name loses a tie to one that is not. Not counted:
# "x_1.jpg", "x-2.jpg", "x1.jpg" (frames, bursts and numbered datasets are named that way).
_COPY_STEM = re.compile(
    r"""(?ix)
    ( \s?\(\d+\)                                 # x (1), x(2): browser downloads, Windows
    | \s-\s(copy|kopie|copie|copia|복사본|コピー)(\s\(\d+\))?   # x - Copy, x - Copy (2): Windows, localised
    | \scopy(\s\d+)?                             # x copy, x copy 2: macOS Finder
    )$""")
_COPY_PREFIX = re.compile(r"(?i)^copy(\s\(\d+\))?\sof\s")  # Copy of x: Google Drive, older Windows
_WGET_COPY = re.compile(r"(?i)\.(jpe?g|png|gif|bmp|tiff?|webp|heic|avif)\.\d+$")  # x.jpg.1: wget


def is_copy_name(name: str) -> bool:
    """True when a file name looks like an OS or browser copy of another file.

    >>> [is_copy_name(n) for n in ["chelsea (1).jpg", "chelsea(2).jpg", "chelsea - Copy.jpg", "Copy of chelsea.jpg",
    ...                             "chelsea copy 2.jpg", "chelsea.jpg.1", "chelsea.jpg", "chelsea_1.jpg", "copy.jpg"]]
    [True, True, True, True, True, True, False, False, False]
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if _WGET_COPY.search(base):
        return True
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return bool(_COPY_STEM.search(stem) and _COPY_STEM.sub("", stem).strip()) or bool(
        _COPY_PREFIX.match(stem) and _COPY_PREFIX.sub("", stem).strip())


def keeper_order(
    manifest: pd.DataFrame,
    source_order: Sequence[str] | None = None,
    annotated: set[str] | None = None,
    criteria: Sequence[str] = KEEP_CRITERIA,
    first: pd.Series | None = None,
    not_original: pd.Series | None = None,
) -> pd.Series:
    """Rank of each row by the keeper policy (0 = kept first). Index-aligned.

    ``criteria`` orders (or leaves out) ``priority``, ``uncropped``, ``resolution`` and
    ``annotated``; then a name that is not an OS/browser copy name
    (:func:`is_copy_name`) beats one that is, and the stable order (source,
    rel_path, sample_id) breaks the remaining ties. ``first`` (bool, index-aligned) puts rows before all criteria (rows a
    person kept in review). ``not_original`` (bool, index-aligned) marks crops and padded or shown copies of
    another member, which ``uncropped`` ranks after the original.
    """
    sources = list(dict.fromkeys([*(source_order or []), *sorted(manifest["source"].unique())]))
    src_rank = manifest["source"].map({s: i for i, s in enumerate(sources)}).astype(int)
    pixels = (manifest["width"].fillna(0).astype("int64") * manifest["height"].fillna(0).astype("int64")).to_numpy()
    has_boxes = manifest["sample_id"].isin(annotated or set()).to_numpy()
    keys = pd.DataFrame({
        "first": ~(first.to_numpy(dtype=bool) if first is not None else np.zeros(len(manifest), bool)),
        "priority": src_rank.to_numpy(),
        "uncropped": (not_original.to_numpy(dtype=bool) if not_original is not None
                      else np.zeros(len(manifest), bool)),
        "resolution": -pixels,
        "annotated": ~has_boxes,
        "copy_name": manifest["rel_path"].astype(str).map(is_copy_name).to_numpy(dtype=bool),
        "source": manifest["source"].to_numpy(),
        "rel": manifest["rel_path"].to_numpy(),
        "id": manifest["sample_id"].to_numpy(),
    }, index=manifest.index)
    by = ["first", *criteria, "copy_name", "source", "rel", "id"]
    order = keys.sort_values(by, kind="mergesort").index
    return pd.Series(np.arange(len(order)), index=order).reindex(manifest.index)


def minority_labels(labels: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """True for members whose label is not their group's strict-majority label (False where none has one).

    Unlabelled members do not vote, and are in the minority when a majority exists.

        >>> minority_labels(np.array(["a", "b", "a", "x", "y", None, None, "c"], dtype=object),
        ...                 np.array([0, 0, 0, 1, 1, 2, 2, 2])).tolist()
        [False, True, False, False, False, True, True, False]
    """
    lab = pd.Series(labels, dtype=object)
    t = pd.DataFrame({"g": gid, "l": lab.astype(str).to_numpy(), "has": lab.notna().to_numpy()})
    counts = t[t["has"]].groupby(["g", "l"]).size().rename("n").reset_index()
    counts = counts.sort_values(["g", "n"], ascending=[True, False], kind="mergesort")
    top = counts.groupby("g").head(2)
    first = top.groupby("g")["n"].transform("first")
    last = top.groupby("g")["n"].transform("last")
    n_top = top.groupby("g")["n"].transform("size")
    lead = top[(top["n"] == first) & ((n_top == 1) | (last < first))]
    winner = pd.Series(lead["l"].to_numpy(), index=lead["g"].to_numpy())
    won = pd.Series(gid).map(winner)
    return (won.notna() & (~t["has"] | (t["l"] != won))).to_numpy(dtype=bool)


def apply_groups(
    manifest: pd.DataFrame,
    groups: Iterable[Sequence[int]],
    *,
    decided_by: str,
    rank: pd.Series,
    detail: str = "",
    protected: set[int] | None = None,
    label_vote: bool = True,
) -> pd.DataFrame:
    """Mark each group (of index labels): keep the best-ranked, drop the rest as duplicate.

    With ``label_vote``, a group whose labels disagree keeps its best-ranked
    member among those carrying the strict majority label (no majority: the
    rank alone decides), so the kept copy carries the group's label (issue 16).

    Rows in ``protected`` (decided in review) are never changed, though they
    still count as group members. Vectorised: a million rows in seconds.
    """
    out = manifest
    member_lists = [list(g) for g in groups if len(g) >= 2]
    if not member_lists:
        return out
    idx = np.concatenate([np.asarray(g) for g in member_lists])
    gid = np.repeat(np.arange(len(member_lists)), [len(g) for g in member_lists])
    table = pd.DataFrame({"i": idx, "g": gid, "r": rank.loc[idx].to_numpy()})
    # The label vote: when a group's labels disagree and one label holds a strict majority, the copy
    # kept is the best-ranked one carrying it. Not in a group with a row a person decided (review):
    # their choice, carried by the rank, comes first.
    table["minority"] = minority_labels(out.loc[idx, "label"].to_numpy(dtype=object), gid) if label_vote else False
    if protected:
        person_groups = set(table.loc[table["i"].isin(list(protected)), "g"])
        table.loc[table["g"].isin(person_groups), "minority"] = False
    table = table.sort_values(["g", "minority", "r"], kind="mergesort")
    keeper = table.groupby("g")["i"].transform("first").to_numpy()
    table["keeper_id"] = out.loc[keeper, "sample_id"].to_numpy()
    labels = out.loc[table["i"].to_numpy(), "label"]
    n_labels = pd.Series(labels.to_numpy(), index=table.index).groupby(table["g"]).transform("nunique")
    table["conflict"] = n_labels.to_numpy() > 1
    free = ~table["i"].isin(list(protected or ())).to_numpy()
    t = table[free]
    rows = t["i"].to_numpy()
    out.loc[rows, "dup_group"] = t["keeper_id"].to_numpy()
    out.loc[rows, "label_conflict"] = t["conflict"].to_numpy()
    rest = t[t["i"].to_numpy() != keeper[free]]
    drop = rest["i"].to_numpy()
    out.loc[drop, "status"] = "dropped"
    out.loc[drop, "reason"] = "duplicate"
    out.loc[drop, "duplicate_of"] = rest["keeper_id"].to_numpy()
    out.loc[drop, "decided_by"] = decided_by
    out.loc[drop, "detail"] = detail or ("copy of " + rest["keeper_id"].astype(str)).to_numpy()
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


def connected_groups(n: int, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Connected components (of size >= 2) of the graph with ``n`` nodes and edges a-b.

    >>> [g.tolist() for g in connected_groups(5, np.array([0, 3]), np.array([1, 1]))]
    [[0, 1, 3]]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return []
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    in_group = np.flatnonzero(np.bincount(labels)[labels] >= 2)  # singletons are no group
    order = in_group[np.argsort(labels[in_group], kind="stable")]
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(order, cuts) if len(order) else []


class UnionFind:
    """Union-find over ``n`` integer nodes, with path compression.

    >>> uf = UnionFind(4); uf.union(0, 2); uf.find(2) == uf.find(0), uf.find(1) == uf.find(0)
    (True, False)
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return int(root)

    def union(self, x: int, y: int) -> None:
        self.parent[self.find(x)] = self.find(y)
