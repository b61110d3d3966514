"""``curate check``: a leakage and health report that CI can gate on.

Each check has a name, a result (``pass``, ``warn``, ``fail`` or ``info``), a
count and a few examples. ``curate check`` exits with status 1 when any check
fails (with ``--strict``: when any check fails or warns), so a pipeline stops
before training on a leaky or broken dataset.

Checks that **fail** the run (leaks and errors in the data itself):

- ``group_leak``: kept rows of one unit (a duplicate group, a derived row and
  its source image, or a ``--group`` value) sit in more than one split;
- ``near_duplicate_leak``: two kept rows in different splits that are copies
  of each other, though not grouped, found by ``curate dedupe``'s own search
  and pixel verification (crops to half the picture, screenshots, captions,
  turns; issue 15); rows without the dedupe descriptors (ingested by an older
  curate) by their perceptual hashes within ``--near-bits`` bits (default 4);
- ``label_conflict``: one duplicate group still carries different labels
  among its kept and duplicate rows (fix in review: relabel or reject);
- ``class_size``: a class with fewer than ``--min-per-class`` kept rows
  (default 2: one image cannot be both trained on and evaluated);
- ``mixed_sizes``: the workspace was squared (it has kept ``curate square``
  rows) but some kept rows are not that square size (issue 17: a "224x224"
  export held a 377x240 image).

Checks that **warn** (worth a look; ``--strict`` makes them fail):

- ``unsplit``: kept rows without a split while others have one;
- ``class_missing_from_split``: a class absent from a split that has rows;
- ``latent_leak``: a dropped duplicate whose split differs from its group's
  kept rows (a later ``keep`` in review would leak it);
- ``small_image`` / ``odd_aspect``: kept images with a side below
  ``--min-side`` pixels or a long/short ratio above ``--max-aspect``.

``split_ratios`` is information: the achieved ratios, overall and per class,
and the largest deviation from the ratios of the last ``curate split`` run.

The near-duplicate search compares only rows in different splits and only
candidates that agree exactly on a key made of hash slices (pigeonhole: cut
into ``b + r`` slices, two hashes within ``b`` bits agree on ``r`` of them),
so it never compares every pair; see :func:`key_plan`.

    >>> [c for c, _ in CHECKS][:2]
    ['group_leak', 'near_duplicate_leak']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from curate.errors import CurateError, OptionError
from curate.lineage import AUGMENT_LAYOUT
from curate.schema import SPLITS
from curate.workspace import StageResult, Workspace

SQUARE_LAYOUT = "square"  # ``layout`` of the rows `curate square` makes (curate.stages.square.LAYOUT)

# name -> what a failure means (the severity is decided per check below).
CHECKS: tuple[tuple[str, str], ...] = (
    ("group_leak", "fail"),
    ("near_duplicate_leak", "fail"),
    ("label_conflict", "fail"),
    ("class_size", "fail"),
    ("mixed_sizes", "fail"),
    ("unsplit", "warn"),
    ("class_missing_from_split", "warn"),
    ("latent_leak", "warn"),
    ("small_image", "warn"),
    ("odd_aspect", "warn"),
    ("split_ratios", "info"),
)
CHECK_NAMES = tuple(c for c, _ in CHECKS)


@dataclass
class CheckOptions:
    min_per_class: int = 2
    min_side_px: int = 64
    max_aspect: float = 4.0
    near_bits: int = 4  # pHash bits that count as a near-duplicate across splits (rows without d4hash only)
    hash_column: str = "phash"
    group: str | None = None  # like `split --group`; None: the group of the last split run, else dup
    skip: tuple[str, ...] = ()
    strict: bool = False  # warnings fail too
    max_examples: int = 5
    workers: int = 0  # verification processes for the near-duplicate search (0: all cores)


def _result(name: str, failed: bool, count: int, message: str, examples: list[Any] | None = None) -> dict[str, Any]:
    severity = dict(CHECKS)[name]
    status = "pass" if not failed else severity
    return {"name": name, "status": status, "count": int(count), "message": message, "examples": examples or []}


def _ids(rows: pd.DataFrame, limit: int) -> list[str]:
    return [f"{r.source}/{r.rel_path} ({r.split})" for r in rows.head(limit).itertuples()]


# -- individual checks -------------------------------------------------------------

def check_group_leak(manifest: pd.DataFrame, units: np.ndarray, limit: int) -> dict[str, Any]:
    kept = (manifest["status"] == "kept").to_numpy()
    df = pd.DataFrame({"unit": units, "split": manifest["split"].astype(object).to_numpy()})[kept].dropna()
    n_splits = df.groupby("unit")["split"].nunique()
    bad = n_splits[n_splits > 1].index
    examples = []
    for u in bad[:limit]:
        rows = manifest[kept & (units == u)]
        examples.append(", ".join(_ids(rows, 4)))
    msg = (f"{len(bad)} groups have kept rows in more than one split" if len(bad)
           else "no duplicate group, derived copy or group value spans two splits")
    return _result("group_leak", len(bad) > 0, len(bad), msg, examples)


def key_plan(max_bits: int, n: int, max_keys: int = 100) -> list[list[tuple[int, int]]]:
    """Which hash slices to match exactly so that no pair within ``max_bits`` is missed.

    The hash is cut into ``m = max_bits + r`` slices. Two hashes within
    ``max_bits`` bits differ in at most ``max_bits`` slices, so they agree on at
    least ``r`` of them: on every slice of some ``r``-combination. Each
    combination is one exact-match key of about ``64 r / m`` bits. ``r`` is the
    smallest that makes keys long enough for ``n`` rows to spread thin (buckets
    of about one row), within ``max_keys`` combinations.

    >>> [len(k) for k in key_plan(4, 1_000_000)][:2], len(key_plan(4, 1_000_000))
    ([3, 3], 35)
    """
    from itertools import combinations
    from math import comb

    want_bits = max(16, int(np.ceil(np.log2(max(n, 2)))) + 3)
    r = 1
    while 64 * r / (max_bits + r) < want_bits and comb(max_bits + r + 1, r + 1) <= max_keys:
        r += 1
    m = min(max_bits + r, 64)
    edges = np.linspace(0, 64, m + 1).round().astype(int)
    slices = [(int(edges[i]), int(edges[i + 1] - edges[i])) for i in range(m)]
    return [list(c) for c in combinations(slices, min(r, m))]


def _key(h: np.ndarray, slices: list[tuple[int, int]]) -> np.ndarray:
    key = np.zeros(len(h), dtype=np.uint64)
    offset = 0
    for shift, width in slices:
        part = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        key |= part << np.uint64(offset)
        offset += width
    return key


def near_pairs_across_splits(hashes: np.ndarray, split_codes: np.ndarray, max_bits: int) -> pd.DataFrame:
    """Pairs (i, j, bits) of positions in different splits with Hamming distance <= ``max_bits``.

    Candidates agree exactly on a key made of hash slices (pigeonhole, see
    :func:`key_plan`), so the work grows with the bucket sizes, not with n^2.
    Equal (hash, split) rows are collapsed first, so many identical hashes
    (blank images) cost one candidate, not n^2.

    >>> h = np.array([0b1111, 0b0111, 2**40], dtype=np.uint64)
    >>> near_pairs_across_splits(h, np.array([0, 1, 1]), 1)[["i", "j", "bits"]].values.tolist()
    [[0, 1, 1]]
    """
    empty = pd.DataFrame({"i": [], "j": [], "bits": []}, dtype=np.int64)
    if len(hashes) == 0:
        return empty
    base = pd.DataFrame({"h": hashes.astype(np.uint64), "s": split_codes.astype(np.int64)})
    uniq = base.drop_duplicates().reset_index(drop=True)
    uh, us = uniq["h"].to_numpy(), uniq["s"].to_numpy()
    found = []
    for slices in key_plan(max_bits, len(uniq)):
        df = pd.DataFrame({"k": _key(uh, slices), "u": np.arange(len(uniq)), "s": us})
        multi = df[df.groupby("k")["s"].transform("nunique") > 1]
        if not len(multi):
            continue
        pairs = multi.merge(multi, on="k", suffixes=("_a", "_b"))
        pairs = pairs[pairs["s_a"] < pairs["s_b"]]
        a, b = pairs["u_a"].to_numpy(), pairs["u_b"].to_numpy()
        bits = np.bitwise_count(uh[a] ^ uh[b]).astype(np.int64)
        close = bits <= max_bits  # verify here, so only true pairs are kept between keys
        found.append(pd.DataFrame({"u_a": a[close], "u_b": b[close], "bits": bits[close]}))
    if not found:
        return empty
    cand = pd.concat(found, ignore_index=True).drop_duplicates(["u_a", "u_b"])
    # Back from unique (hash, split) to row positions.
    rows = base.reset_index().merge(uniq.reset_index().rename(columns={"index": "u"}), on=["h", "s"])
    pos_of = rows.groupby("u")["index"].apply(list)
    out = [(i, j, int(b)) for ua, ub, b in cand.itertuples(index=False)
           for i in pos_of[ua] for j in pos_of[ub]]
    return pd.DataFrame(out, columns=["i", "j", "bits"], dtype=np.int64)


def check_near_duplicate_leak(manifest: pd.DataFrame, units: np.ndarray, opts: CheckOptions) -> dict[str, Any]:
    """Kept rows in different splits that are copies of each other, found as ``curate dedupe`` finds them.

    Rows with the dedupe descriptors (``d4hash``, ``keypoints``) go through
    dedupe's own search and pixel verification (:func:`curate.stages.dedupe.near_copy_pairs`):
    crops, screenshots, captions and turns straddling splits fail the check,
    not only copies within a few pHash bits (issue 15). Rows ingested by an
    older curate, without a ``d4hash``, keep the ``--near-bits`` pHash test.
    """
    copies = _verified_copies_across_splits(manifest, units, opts)
    legacy = _phash_leak(manifest[manifest["d4hash"].isna()] if "d4hash" in manifest.columns else manifest,
                         units if "d4hash" not in manifest.columns else units[manifest["d4hash"].isna().to_numpy()],
                         opts)
    count = copies["count"] + legacy["count"]
    examples = (copies["examples"] + legacy["examples"])[:opts.max_examples]
    if not count:
        return _result("near_duplicate_leak", False, 0,
                       "no kept pair across splits is a copy (dedupe's search and verification"
                       f"{'; pHash within ' + str(opts.near_bits) + ' bits for rows without d4hash' if legacy['rows'] else ''})")
    parts = []
    if copies["count"]:
        parts.append(f"{copies['count']} pairs of kept rows in different splits are verified copies (dedupe's search)")
    if legacy["count"]:
        parts.append(f"{legacy['count']} pairs of kept rows in different splits are within {opts.near_bits} bits "
                     f"({opts.hash_column})")
    return _result("near_duplicate_leak", True, count, "; ".join(parts), examples)


def _verified_copies_across_splits(manifest: pd.DataFrame, units: np.ndarray, opts: CheckOptions) -> dict[str, Any]:
    from curate.stages.dedupe import DedupeOptions, near_copy_pairs

    if "d4hash" not in manifest.columns:
        return {"count": 0, "examples": []}
    m = ((manifest["status"] == "kept") & manifest["split"].notna() & manifest["d4hash"].notna()).to_numpy()
    pos = np.flatnonzero(m)
    if len(pos) < 2 or manifest["split"].iloc[pos].nunique() < 2:
        return {"count": 0, "examples": []}
    frame = manifest.iloc[pos]
    found = near_copy_pairs(frame, DedupeOptions(workers=opts.workers))
    a, b = found.a[found.accepted], found.b[found.accepted]
    splits = frame["split"].to_numpy()
    cross = (splits[a] != splits[b]) & (units[pos[a]] != units[pos[b]])  # same unit: already a group_leak
    examples = []
    kind = found.pairs["kind"].to_numpy()[found.accepted][cross]
    for i, j, k in list(zip(a[cross], b[cross], kind, strict=True))[:opts.max_examples]:
        x, y = frame.iloc[i], frame.iloc[j]
        examples.append(f"{x['source']}/{x['rel_path']} ({x['split']}) ~ {y['source']}/{y['rel_path']} "
                        f"({y['split']}): {k} match, verified")
    return {"count": int(cross.sum()), "examples": examples}


def _phash_leak(manifest: pd.DataFrame, units: np.ndarray, opts: CheckOptions) -> dict[str, Any]:
    """The pHash test, for rows ingested before the dedupe descriptors existed."""
    from curate.hashing import hashes_to_uint64

    col = manifest[opts.hash_column].astype(object)
    m = ((manifest["status"] == "kept") & manifest["split"].notna() & col.notna()).to_numpy()
    m = m & col.astype(str).str.len().eq(16).to_numpy()
    pos = np.flatnonzero(m)
    hashes = hashes_to_uint64(col.iloc[pos].astype(str).tolist())
    codes = manifest["split"].iloc[pos].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    pairs = near_pairs_across_splits(hashes, codes, opts.near_bits)
    if len(pairs):
        pi, pj = pos[pairs["i"].to_numpy()], pos[pairs["j"].to_numpy()]
        pairs = pairs[units[pi] != units[pj]]  # same unit: already a group_leak
    examples = []
    for r in pairs.sort_values("bits").head(opts.max_examples).itertuples():
        a, b = manifest.iloc[pos[r.i]], manifest.iloc[pos[r.j]]
        examples.append(f"{a['source']}/{a['rel_path']} ({a['split']}) ~ {b['source']}/{b['rel_path']} "
                        f"({b['split']}): {r.bits} bits")
    return {"count": len(pairs), "examples": examples, "rows": len(pos)}


def check_label_conflict(manifest: pd.DataFrame, limit: int) -> dict[str, Any]:
    live = manifest["dup_group"].notna() & (
        (manifest["status"] == "kept") | (manifest["reason"] == "duplicate")) & manifest["label"].notna()
    df = manifest[live]
    n_labels = df.groupby("dup_group")["label"].nunique()
    has_kept = df[df["status"] == "kept"].groupby("dup_group").size()
    bad = [g for g in n_labels[n_labels > 1].index if g in has_kept.index]
    examples = []
    for g in bad[:limit]:
        rows = df[df["dup_group"] == g]
        examples.append(", ".join(f"{r.source}/{r.rel_path}={r.label}" for r in rows.head(4).itertuples()))
    msg = (f"{len(bad)} duplicate groups carry different labels (relabel or reject in `curate review`)"
           if bad else "every duplicate group has one label")
    return _result("label_conflict", bool(bad), len(bad), msg, examples)


def check_class_size(manifest: pd.DataFrame, opts: CheckOptions) -> dict[str, Any]:
    # Distinct source images, so augmented copies (or several crops of one photo) do not
    # make a one-image class look big enough to train and evaluate on.
    kept = manifest[(manifest["status"] == "kept") & manifest["label"].notna()]
    counts = kept.groupby(kept["label"].astype(str))["origin_path"].nunique()
    small = counts[counts < opts.min_per_class].sort_values()
    examples = [f"{c}: {n}" for c, n in small.head(opts.max_examples).items()]
    msg = (f"{len(small)} classes have fewer than {opts.min_per_class} kept source images" if len(small)
           else f"every class has at least {opts.min_per_class} kept source images")
    return _result("class_size", len(small) > 0, len(small), msg, examples)


def check_mixed_sizes(manifest: pd.DataFrame, limit: int) -> dict[str, Any]:
    kept = manifest[(manifest["status"] == "kept") & manifest["width"].notna() & manifest["height"].notna()]
    squares = kept[kept["layout"] == SQUARE_LAYOUT]
    if not len(squares):
        return _result("mixed_sizes", False, 0, "not squared (no kept `curate square` rows)")
    size = int(squares["width"].astype("int64").mode().min())
    w, h = kept["width"].astype("int64"), kept["height"].astype("int64")
    odd = kept[(w != size) | (h != size)]
    msg = (f"{len(odd)} kept rows are not {size}x{size} though the workspace was squared "
           f"(run `curate square WS --size {size}` again)" if len(odd)
           else f"every kept row is {size}x{size} (squared)")
    return _result("mixed_sizes", len(odd) > 0, len(odd), msg,
                   [f"{r.source}/{r.rel_path}: {r.width}x{r.height}" for r in odd.head(limit).itertuples()])


def check_unsplit(manifest: pd.DataFrame, limit: int) -> dict[str, Any]:
    kept = manifest[manifest["status"] == "kept"]
    missing = kept[kept["split"].isna()]
    if len(missing) == len(kept):
        return _result("unsplit", False, 0, "no split assigned yet (`curate split WS` assigns one)")
    msg = (f"{len(missing)} kept rows have no split (re-run `curate split WS`; existing splits are kept)"
           if len(missing) else "every kept row has a split")
    return _result("unsplit", len(missing) > 0, len(missing), msg, _ids(missing, limit))


def check_class_missing(manifest: pd.DataFrame, limit: int) -> dict[str, Any]:
    kept = manifest[(manifest["status"] == "kept") & manifest["label"].notna() & manifest["split"].notna()]
    present = set(kept["split"])
    table = pd.crosstab(kept["label"].astype(str), kept["split"].astype(str)) if len(kept) else pd.DataFrame()
    missing = [(c, s) for c in table.index for s in SPLITS if s in present and table.at[c, s] == 0]
    examples = [f"{c} not in {s}" for c, s in missing[:limit]]
    msg = (f"{len(missing)} (class, split) pairs are empty" if missing
           else "every class appears in every split in use")
    return _result("class_missing_from_split", bool(missing), len(missing), msg, examples)


def check_latent_leak(manifest: pd.DataFrame, units: np.ndarray, limit: int) -> dict[str, Any]:
    kept = (manifest["status"] == "kept").to_numpy()
    split = manifest["split"].astype(object).to_numpy()
    df = pd.DataFrame({"unit": units, "split": split})
    kept_split = df[kept].dropna().drop_duplicates("unit").set_index("unit")["split"]
    dup = (manifest["reason"] == "duplicate").to_numpy()
    expected = pd.Series(units).map(kept_split).to_numpy()
    bad = dup & pd.notna(expected) & (split != expected)
    rows = manifest[bad]
    msg = (f"{int(bad.sum())} dropped duplicates sit in another split than their group "
           "(re-run `curate split WS --resplit`)" if bad.any() else "dropped duplicates follow their group's split")
    return _result("latent_leak", bool(bad.any()), int(bad.sum()), msg, _ids(rows, limit))


def check_image_shape(manifest: pd.DataFrame, opts: CheckOptions) -> list[dict[str, Any]]:
    kept = manifest[(manifest["status"] == "kept") & manifest["width"].notna() & manifest["height"].notna()]
    w, h = kept["width"].astype("int64"), kept["height"].astype("int64")
    small = kept[np.minimum(w, h) < opts.min_side_px]
    aspect = np.maximum(w, h) / np.maximum(np.minimum(w, h), 1)
    odd = kept[aspect > opts.max_aspect]
    return [
        _result("small_image", len(small) > 0, len(small),
                f"{len(small)} kept images have a side below {opts.min_side_px} px" if len(small)
                else f"no kept image has a side below {opts.min_side_px} px",
                [f"{r.source}/{r.rel_path}: {r.width}x{r.height}" for r in small.head(opts.max_examples).itertuples()]),
        _result("odd_aspect", len(odd) > 0, len(odd),
                f"{len(odd)} kept images are more than {opts.max_aspect:g}:1" if len(odd)
                else f"no kept image is more than {opts.max_aspect:g}:1",
                [f"{r.source}/{r.rel_path}: {r.width}x{r.height}" for r in odd.head(opts.max_examples).itertuples()]),
    ]


def check_split_ratios(manifest: pd.DataFrame, target: dict[str, float] | None) -> dict[str, Any]:
    from curate.stages.split import ratio_report, split_counts

    # Augmented copies (made by balance, in train) are left out: the ratios are about real images.
    real = manifest[manifest["layout"] != AUGMENT_LAYOUT]
    counts = split_counts(real, "label" if real["label"].notna().any() else None)
    report = ratio_report(counts, target or {})
    overall = "/".join(f"{report['overall'][s]:.2f}" for s in SPLITS)
    msg = f"achieved train/val/test {overall}"
    if target:
        worst = report["largest_deviation"]
        msg += f" (target {'/'.join(f'{target.get(s, 0):.2f}' for s in SPLITS)}; augmented copies not counted)"
        if worst["class"] is not None:
            msg += (f"; largest deviation: class {worst['class']!r} {worst['split']} {worst['achieved']:.2f} "
                    f"vs {worst['target']:.2f}")
    res = _result("split_ratios", False, 0, msg)
    res["status"] = "info"
    res["ratios"] = report
    return res


# -- the command -------------------------------------------------------------------

def _last_split_run(ws: Workspace | None) -> dict[str, Any]:
    if ws is None:
        return {}
    from curate.stages.split import parse_ratios

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


def check(manifest: pd.DataFrame, options: CheckOptions, *, ws: Workspace | None = None,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Run every check not skipped; the summary lists results and the failed names. Writes nothing."""
    from curate.stages.split import unit_ids

    unknown = set(options.skip) - set(CHECK_NAMES)
    if unknown:
        raise OptionError("", field="--skip", expected=f"check names from {list(CHECK_NAMES)}",
                          found=sorted(unknown))
    if options.hash_column not in ("phash", "dhash"):
        raise OptionError("", field="hash_column", expected="phash or dhash", found=options.hash_column)
    last = _last_split_run(ws)
    group = options.group or last.get("group") or "dup"
    if group != "dup" and group not in manifest.columns:
        raise OptionError("", field="--group", expected="dup, source or a manifest column", found=repr(group))
    units = unit_ids(manifest, group)
    lim = options.max_examples
    runners = {
        "group_leak": lambda: [check_group_leak(manifest, units, lim)],
        "near_duplicate_leak": lambda: [check_near_duplicate_leak(manifest, units, options)],
        "label_conflict": lambda: [check_label_conflict(manifest, lim)],
        "class_size": lambda: [check_class_size(manifest, options)],
        "mixed_sizes": lambda: [check_mixed_sizes(manifest, lim)],
        "unsplit": lambda: [check_unsplit(manifest, lim)],
        "class_missing_from_split": lambda: [check_class_missing(manifest, lim)],
        "latent_leak": lambda: [check_latent_leak(manifest, units, lim)],
        "small_image odd_aspect": lambda: check_image_shape(manifest, options),
        "split_ratios": lambda: [check_split_ratios(manifest, last.get("ratios"))],
    }
    results: list[dict[str, Any]] = []
    for names, run in runners.items():
        if set(names.split()) <= set(options.skip):
            continue
        results += [r for r in run() if r["name"] not in options.skip]
    failing = {"fail", "warn"} if options.strict else {"fail"}
    summary = {
        "group": group,
        "checks": results,
        "failed": [r["name"] for r in results if r["status"] in failing],
        "warned": [r["name"] for r in results if r["status"] == "warn"],
        "kept_rows": int((manifest["status"] == "kept").sum()),
    }
    summary["ok"] = not summary["failed"]
    return StageResult(manifest, None, summary=summary, write=False, log_run=True)


def format_check(summary: dict[str, Any], title: str) -> str:
    """Terminal rendering: one line per check, examples indented under it."""
    verdict = "FAIL" if summary["failed"] else "OK"
    head = f"{title}: {verdict} ({len(summary['failed'])} failed, {len(summary['warned'])} warnings, " \
           f"{summary['kept_rows']} kept rows)"
    lines = [head]
    width = max((len(r["name"]) for r in summary["checks"]), default=0)
    for r in summary["checks"]:
        lines.append(f"  {r['status'].upper():<4}  {r['name']:<{width}}  {r['message']}")
        for e in r["examples"]:
            lines.append(f"        {'':<{width}}  - {e}")
    return "\n".join(lines)
