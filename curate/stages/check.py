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
so it never compares every pair; see :func:`curate.index.key_plan`.

    >>> [c for c, _ in CHECKS][:2]
    ['group_leak', 'near_duplicate_leak']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from curate.errors import OptionError
from curate.index import near_pairs_across_splits
from curate.lineage import AUGMENT_LAYOUT
from curate.schema import SPLITS
from curate.units import last_split_run, ratio_report, split_counts, unit_ids
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


@dataclass(kw_only=True)
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


def check_near_duplicate_leak(manifest: pd.DataFrame, units: np.ndarray, opts: CheckOptions) -> dict[str, Any]:
    """Kept rows in different splits that are copies of each other, found as ``curate dedupe`` finds them.

    Rows with the dedupe descriptors (``d4hash``, ``keypoints``) go through
    dedupe's own search and pixel verification (:func:`curate.nearcopies.near_copy_pairs`):
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
    from curate.nearcopies import DedupeOptions, near_copy_pairs

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

def check(manifest: pd.DataFrame, options: CheckOptions, *, ws: Workspace | None = None,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Run every check not skipped; the summary lists results and the failed names. Writes nothing."""
    unknown = set(options.skip) - set(CHECK_NAMES)
    if unknown:
        raise OptionError("", field="--skip", expected=f"check names from {list(CHECK_NAMES)}",
                          found=sorted(unknown))
    if options.hash_column not in ("phash", "dhash"):
        raise OptionError("", field="hash_column", expected="phash or dhash", found=options.hash_column)
    last = last_split_run(ws)
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
