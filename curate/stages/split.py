"""``curate split``: leak-free, stratified train/val/test splits.

The split is a table operation on the manifest; no image is opened.

**Units.** Rows that must share a split are joined into one *unit* (a
connected component of the rows' links, found with scipy in one pass):

- a derived row (face crop, square, augmented copy) and its parent, up to the
  source file it came from (``parent_id``);
- the members of a duplicate group (``dup_group``, ``duplicate_of``),
  including members dropped as ``duplicate``: they get their group's split so
  that a later ``keep`` in review cannot leak a copy into another split;
- rows whose stored perceptual hashes (``phash``) are within ``--near-bits``
  bits (default 4, the threshold ``curate check`` fails on), so near-copies stay
  together even where ``curate dedupe`` has not grouped them;
- with ``--group source|COLUMN``, every row sharing that column's value (all
  photos of one person, all frames of one video). Duplicate groups and lineage
  are always joined as well.

A unit weighs as many samples as it has kept rows, counted per class.

**Assignment.** Units keep an existing split (from the source, or an earlier
run) unless ``--resplit``; a unit holding a row pinned by ``curate ingest
--split`` keeps the pinned split even then. Each class's target per split is ``ratio x kept
rows of that class``. The free units are placed largest first (equal sizes in
an order drawn from ``--seed``), each into the split where its class has the
largest remaining deficit (for a unit holding several classes: the largest
deficit weighted by its rows of each class). A split is never chosen while
another has a larger deficit, so a split overshoots its target by less than
one unit, and per-class counts end within one unit of their targets (two
after the coverage step below; the property tests in
tests/stages/test_split.py check both, and determinism).

**Every class in every split.** Deficits alone can leave a small class out of
``val`` or ``test`` (three single images under 8:1:1 all go to train). So after
the greedy pass, each split a class lacks takes that class's smallest unit from
the split with most of its units (which keeps at least one). A class then has
rows in every split whenever it has as many units as splits; its counts end
within two units of their targets instead of one.

**Small classes.** A class with fewer units than splits with a non-zero ratio
cannot reach every split. Its units still go where the deficits say (mostly
train) and the run reports it with the counts, as a warning; ``--strict``
turns that into an error.

Rows of a unit without kept rows (e.g. an unreadable file) keep their split.

    >>> import pandas as pd
    >>> from curate.schema import conform, MANIFEST_COLUMNS
    >>> m = conform(pd.DataFrame({"sample_id": [f"s{i}" for i in range(10)], "status": ["kept"] * 10,
    ...                           "label": ["cat"] * 10}), MANIFEST_COLUMNS)
    >>> out = assign_splits(m, SplitOptions(ratios=parse_ratios("8:1:1"), seed=1))
    >>> out["split"].value_counts().to_dict()
    {'train': 8, 'val': 1, 'test': 1}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate.errors import OptionError
from curate.lineage import AUGMENT_LAYOUT, undo_balance
from curate.schema import SPLITS

# NONE_LABEL, format_report and parse_ratios stay importable from here (README, docs/split-balance.md).
from curate.units import (
    GROUP_COLUMN,
    format_ratios,
    last_split_run,
    ratio_report,
    root_positions,
    split_counts,
    strata_of,
    unit_ids,
)
from curate.units import NONE_LABEL as NONE_LABEL
from curate.units import format_report as format_report
from curate.units import parse_ratios as parse_ratios
from curate.workspace import StageResult, Workspace

DEFAULT_RATIOS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass
class SplitOptions:
    ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIOS))
    seed: int = 0
    stratify: str | None = "label"  # a column, or None for no stratification
    group: str = "dup"  # dup | source | a manifest column
    near_bits: int | None = 4  # also join rows whose phash is this close (None: only dup_group)
    resplit: bool = False
    strict: bool = False  # a class that cannot reach every split is an error, not a warning
    group_from: str | None = None  # folder:N or csv:FILE:COLUMN -> the `group` column (see group_values)


# -- --group-from: fill the `group` column -----------------------------------------

GROUP_KEY_COLUMNS = ("file", "path", "filename", "file_name", "image")  # CSV key column, else the first


def _group_from_error(found: str, hint: str | None = None) -> OptionError:
    return OptionError("", field="--group-from", expected="folder:N (N = 1, 2, ... from the source root; "
                       "-1, -2, ... from the file) or csv:FILE:COLUMN", found=found, hint=hint)


def folder_groups(rel_paths: pd.Series, level: int) -> pd.Series:
    """The ``level``-th folder of each path (1 = the first folder under the source root; -1 = the file's
    own folder); null where the path is not that deep.

    >>> folder_groups(pd.Series(["faces/obama/a.jpg", "faces/b.jpg", "c.jpg"]), -1).tolist()
    ['obama', 'faces', None]
    >>> folder_groups(pd.Series(["faces/obama/a.jpg", "faces/b.jpg"]), 2).tolist()
    ['obama', None]
    """
    out = []
    for p in rel_paths.astype(str):
        folders = p.replace("\\", "/").split("/")[:-1]
        k = level - 1 if level > 0 else level
        out.append(folders[k] if -len(folders) <= k < len(folders) else None)
    return pd.Series(out, index=rel_paths.index, dtype=object)


def csv_groups(manifest: pd.DataFrame, file: str, column: str) -> tuple[pd.Series, list[str]]:
    """Group values from a CSV (key column ``file``/``path``/... or the first; value ``column``).

    A key matches a row by its path inside the source (``rel_path``), ``source/rel_path``, the
    absolute source path, or the bare file name when only one row has it. Returns the values
    (null for rows the CSV does not name) and warnings.
    """
    import csv

    p = Path(file)
    if not p.is_file():
        raise _group_from_error(f"no file {file!r}", "name an existing CSV file: csv:FILE:COLUMN")
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        lines = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if column not in header:
        raise _group_from_error(f"no column {column!r} in {p.name} (columns: {', '.join(header) or 'none'})")
    key = next((h for h in header if h.lower() in GROUP_KEY_COLUMNS), header[0])
    if key == column:
        raise _group_from_error(f"{column!r} is also the key column of {p.name}",
                                f"add a file column ({', '.join(GROUP_KEY_COLUMNS)}) naming each image")
    rel = manifest["rel_path"].astype(str).str.replace("\\", "/", regex=False)
    exact: dict[str, list[int]] = {}  # rows sharing a key (two sources' obama/1.jpg, derived rows) all match
    for i, (src, r, origin) in enumerate(zip(manifest["source"].astype(str), rel, manifest["origin_path"].astype(str),
                                             strict=True)):
        for k in dict.fromkeys((r, f"{src}/{r}", origin)):
            exact.setdefault(k, []).append(i)
    by_name: dict[str, set[str]] = {}
    names = rel.str.rsplit("/", n=1).str[-1]
    for r, n in zip(rel, names, strict=True):
        by_name.setdefault(n, set()).add(r)
    values: list[Any] = [None] * len(manifest)
    unmatched: list[str] = []
    ambiguous: list[str] = []
    for line in lines:
        k = line.get(key, "").replace("\\", "/").removeprefix("./")
        value = line.get(column) or None
        if not k:
            continue
        if k in exact:
            hits = exact[k]
        elif "/" not in k and len(by_name.get(k, ())) == 1:
            hits = [int(i) for i in np.flatnonzero((names == k).to_numpy())]
        elif "/" not in k and k in by_name:
            ambiguous.append(k)
            continue
        else:
            unmatched.append(k)
            continue
        for i in hits:
            values[i] = value
    if ambiguous:
        raise _group_from_error(f"{len(ambiguous)} file names in {p.name} that several rows share "
                                f"(e.g. {ambiguous[0]!r})", "write the path inside the source, e.g. obama/1.jpg")
    warnings = []
    if unmatched:
        warnings.append(f"--group-from: {len(unmatched)} lines of {p.name} name no row of the workspace "
                        f"(e.g. {unmatched[0]!r})")
    return pd.Series(values, index=manifest.index, dtype=object), warnings


def group_values(manifest: pd.DataFrame, spec: str) -> tuple[pd.Series, list[str]]:
    """The ``group`` column ``--group-from spec`` gives: values of each root row, which derived rows
    (face crops, squares, copies) share; and warnings.

    >>> from curate.schema import conform, MANIFEST_COLUMNS
    >>> m = conform(pd.DataFrame({"sample_id": ["a", "b"], "status": "kept", "rel_path": ["obama/1.jpg", "biden/2.jpg"]}),
    ...             MANIFEST_COLUMNS)
    >>> group_values(m, "folder:-1")[0].tolist()
    ['obama', 'biden']
    """
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "folder":
        try:
            level = int(rest)
        except ValueError:
            raise _group_from_error(repr(spec)) from None
        if level == 0:
            raise _group_from_error(repr(spec), "folder levels start at 1 (from the source root) or -1 "
                                                "(the file's own folder)")
        values, warnings = folder_groups(manifest["rel_path"], level), list[str]()
    elif kind == "csv" and ":" in rest:
        file, _, column = rest.rpartition(":")
        values, warnings = csv_groups(manifest, file, column.strip())
    else:
        raise _group_from_error(repr(spec))
    root = root_positions(manifest)
    values = pd.Series(values.to_numpy()[root], index=manifest.index, dtype=object)
    kept = manifest["status"] == "kept"
    if not values[kept].notna().any():
        raise _group_from_error(f"{spec!r} gives no kept row a group",
                                "check the level against a path, e.g. " + str(manifest["rel_path"].iloc[0])
                                if len(manifest) else None)
    missing = int((kept & values.isna()).sum())
    if missing:
        example = manifest.loc[kept & values.isna(), "rel_path"].iloc[0]
        warnings.append(f"--group-from {spec}: {missing} kept rows get no group (e.g. {example}); "
                        "each stays a group of its own")
    return values, warnings


# -- assignment ----------------------------------------------------------------

def greedy_assign(
    unit_counts: list[dict[str, int]],
    ratios: dict[str, float],
    fixed_counts: dict[str, dict[str, int]] | None = None,
    order: np.ndarray | None = None,
) -> list[str]:
    """Place units into splits, largest first, each where its classes lack most.

    ``unit_counts[u]`` maps class -> kept rows of unit ``u``; ``fixed_counts``
    holds class -> split -> rows already placed (kept existing splits).
    ``order`` is the processing order (a permutation) for equal-sized units.

    >>> greedy_assign([{"a": 1}] * 10, {"train": 0.8, "val": 0.1, "test": 0.1}).count("train")
    8
    """
    splits = [s for s in SPLITS if ratios.get(s, 0.0) > 0]
    k = len(splits)
    fixed_counts = fixed_counts or {}
    classes = sorted({c for u in unit_counts for c in u} | set(fixed_counts))
    cidx = {c: i for i, c in enumerate(classes)}
    totals = [0.0] * len(classes)
    deficit = [[0.0] * k for _ in classes]
    for u in unit_counts:
        for c, n in u.items():
            totals[cidx[c]] += n
    for c, per_split in fixed_counts.items():
        totals[cidx[c]] += sum(per_split.values())
    for c, i in cidx.items():
        for j, s in enumerate(splits):
            deficit[i][j] = ratios[s] * totals[i] - fixed_counts.get(c, {}).get(s, 0)
    # Ties between equal class deficits go to the split with the larger deficit over all
    # classes (so small classes alternate between val and test instead of all filling val),
    # then to the larger ratio, then SPLITS order.
    pref = sorted(range(k), key=lambda j: (-ratios[splits[j]], j))
    overall = [sum(deficit[i][j] for i in range(len(classes))) for j in range(k)]
    sizes = np.array([sum(u.values()) for u in unit_counts], dtype=np.int64)
    if order is None:
        order = np.arange(len(unit_counts))
    # Largest first; among equal sizes, the given (seeded) order. lexsort: last key is primary.
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    seq = np.lexsort((rank, -sizes))
    out = [""] * len(unit_counts)
    for u in seq.tolist():
        counts = unit_counts[u]
        if not counts:
            continue
        if len(counts) == 1:
            (c, n), = counts.items()
            row = deficit[cidx[c]]
            best = max(pref, key=lambda j: (row[j], overall[j]))
            row[best] -= n
        else:
            best = max(pref, key=lambda j: (sum(n * deficit[cidx[c]][j] for c, n in counts.items()), overall[j]))
            for c, n in counts.items():
                deficit[cidx[c]][best] -= n
        overall[best] -= sum(counts.values())
        out[u] = splits[best]
    return _cover_every_split(unit_counts, out, splits, fixed_counts, sizes, rank)


def _cover_every_split(unit_counts: list[dict[str, int]], placed: list[str], splits: list[str],
                       fixed_counts: dict[str, dict[str, int]], sizes: np.ndarray, rank: np.ndarray) -> list[str]:
    """Move units so that every class with enough units has rows in every split.

    Deficits alone send all three units of a 3-image class to train under 8:1:1
    (train's deficit stays the largest). A class missing from a split shifts
    the class indexes of folder loaders there (issue 14), so for each split a
    class lacks, its smallest single-class unit moves there from the split
    holding most of its units, as long as that split keeps one. A class with
    fewer units than splits is left alone: it cannot reach every split, and its
    few images are worth more in train.
    """
    out = list(placed)
    units_of: dict[str, dict[str, list[int]]] = {}
    for u, counts in enumerate(unit_counts):
        if len(counts) == 1 and out[u]:
            (c,) = counts
            units_of.setdefault(c, {s: [] for s in splits})[out[u]].append(u)
    present: dict[str, set[str]] = {}
    for u, counts in enumerate(unit_counts):
        for c in counts:
            if out[u]:
                present.setdefault(c, set()).add(out[u])
    for c, per_split in fixed_counts.items():
        present.setdefault(c, set()).update(s for s, n in per_split.items() if n)
    for c in sorted(units_of):
        by_split = units_of[c]
        fixed = {s for s, n in fixed_counts.get(c, {}).items() if n}
        if sum(len(v) for v in by_split.values()) + len(fixed) < len(splits):
            continue  # cannot reach every split: its few units stay where deficits put them (train), with a warning
        for s in splits:
            if s in present.get(c, set()):
                continue
            donors = [d for d in splits if len(by_split[d]) >= 2]
            if not donors:
                break  # too few units: split() warns, naming the class
            d = max(donors, key=lambda d: (len(by_split[d]), -splits.index(d)))
            u = min(by_split[d], key=lambda u: (sizes[u], rank[u]))
            by_split[d].remove(u)
            by_split[s].append(u)
            out[u] = s
            present[c].add(s)
    return out


def _unit_order(unit_keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of units that does not depend on the manifest's row order."""
    rng = np.random.default_rng(seed)
    by_key = np.argsort(unit_keys, kind="stable")
    perm = rng.permutation(len(unit_keys))
    order = np.empty(len(unit_keys), dtype=np.int64)
    order[perm] = by_key  # order[i]: the unit processed i-th among equals
    return order


def assign_splits(manifest: pd.DataFrame, options: SplitOptions) -> pd.DataFrame:
    """The manifest with ``split`` filled for every unit that has kept rows."""
    out = manifest.copy()
    n = len(out)
    if n == 0:
        return out
    units = unit_ids(out, options.group, options.near_bits)
    root = root_positions(out)
    is_root = root == np.arange(n)
    # Augmented copies (balance) follow their parent but weigh nothing: ratios are about real images.
    kept = ((out["status"] == "kept") & (out["layout"] != AUGMENT_LAYOUT)).to_numpy()
    strata = strata_of(out, options.stratify).to_numpy()
    existing = out["split"].astype(object).to_numpy()
    has_split = pd.notna(existing)

    # Units that keep an existing split: any root row already carries one (with --resplit: a pinned one).
    pinned = out["split_pinned"].fillna(False).to_numpy(dtype=bool) if "split_pinned" in out else np.zeros(n, bool)
    fixed_split: dict[int, str] = {}
    keep = has_split if not options.resplit else has_split & pinned
    if keep.any():
        df = pd.DataFrame({"unit": units, "split": existing, "kept": kept | pinned})[is_root & keep]
        if len(df):
            # The unit's split: the most common among its kept roots (then all roots), ties in SPLITS order.
            df["w"] = np.where(df["kept"], 1_000_000, 1)
            df["order"] = df["split"].map({s: i for i, s in enumerate(SPLITS)})
            votes = df.groupby(["unit", "split", "order"], as_index=False)["w"].sum()
            votes = votes.sort_values(["unit", "w", "order"], ascending=[True, False, True], kind="mergesort")
            fixed_split = dict(zip(votes.drop_duplicates("unit")["unit"], votes.drop_duplicates("unit")["split"],
                                   strict=True))

    # Kept rows per unit and class, for the units still to place.
    counts = pd.DataFrame({"unit": units[kept], "cls": strata[kept]})
    free_units = sorted(set(counts["unit"]) - set(fixed_split))
    unit_counts: dict[int, dict[str, int]] = {u: {} for u in free_units}
    free_mask = counts["unit"].isin(set(free_units))
    for (u, c), v in counts[free_mask].groupby(["unit", "cls"]).size().items():
        unit_counts[int(u)][str(c)] = int(v)

    # Rows of fixed units: roots keep their own split, roots without one take the unit's.
    final = existing.copy()
    root_units = pd.Series(units)
    if fixed_split:
        fill = pd.Series(fixed_split)
        # With --resplit only pinned units are fixed, and every root of one follows the pin.
        take = is_root & (~has_split | options.resplit) & ~pinned & root_units.isin(fill.index).to_numpy()
        final[take] = root_units[take].map(fill).to_numpy()
    fixed_counts: dict[str, dict[str, int]] = {}
    fixed_rows = kept & root_units.isin(set(fixed_split)).to_numpy()
    if fixed_rows.any():
        fc = pd.DataFrame({"cls": strata[fixed_rows], "split": final[root[fixed_rows]]}).dropna()
        for (c, s), v in fc.groupby(["cls", "split"]).size().items():
            fixed_counts.setdefault(str(c), {})[str(s)] = int(v)

    # The free units, placed greedily. Unit keys (smallest sample_id) make the order row-order independent.
    keys = pd.Series(out["sample_id"].astype(str).to_numpy()).groupby(units).min()
    free_keys = keys.reindex(free_units).to_numpy().astype(str)
    order = _unit_order(free_keys, options.seed)
    placed = greedy_assign([unit_counts[u] for u in free_units], options.ratios, fixed_counts, order)
    if free_units:
        placed_s = pd.Series(placed, index=free_units)
        take = is_root & root_units.isin(placed_s.index).to_numpy()
        final[take] = root_units[take].map(placed_s).to_numpy()
    # Derived rows always follow their root origin.
    derived = ~is_root
    final[derived] = final[root[derived]]
    out["split"] = pd.Series(final, index=out.index, dtype=object)
    return out


# -- reporting -----------------------------------------------------------------

def small_class_problems(
    manifest: pd.DataFrame, options: SplitOptions, counts: dict[str, dict[str, int]]
) -> list[str]:
    """Classes with fewer units than splits with a non-zero ratio, with their counts."""
    splits = [s for s in SPLITS if options.ratios.get(s, 0) > 0]
    kept = ((manifest["status"] == "kept") & (manifest["layout"] != AUGMENT_LAYOUT)).to_numpy()
    if not kept.any():
        return []
    units = unit_ids(manifest, options.group, options.near_bits)
    strata = strata_of(manifest, options.stratify).to_numpy()
    per = pd.DataFrame({"cls": strata[kept], "unit": units[kept]}).groupby("cls")["unit"].agg(["nunique", "size"])
    out = []
    for c, row in per.iterrows():
        if row["nunique"] < len(splits):
            got = ", ".join(f"{s} {counts.get(str(c), {}).get(s, 0)}" for s in splits)
            groups = f"{row['nunique']} group" + ("s" if row["nunique"] != 1 else "")
            images = f"{row['size']} kept image" + ("s" if row["size"] != 1 else "")
            out.append(f"class {c!r} has {images} in {groups}, fewer than the "
                       f"{len(splits)} splits: cannot reach every split ({got})")
    return out


def _check_options(manifest: pd.DataFrame, options: SplitOptions) -> SplitOptions:
    if options.stratify is not None and options.stratify not in manifest.columns:
        raise OptionError("", field="--stratify", expected="a manifest column or 'none'",
                          found=repr(options.stratify))
    group = "source" if options.group == "source" else options.group
    if group != "dup" and group not in manifest.columns:
        cols = ", ".join(c for c in manifest.columns if manifest[c].dtype == object)
        raise OptionError("", field="--group", expected=f"dup, source or a manifest column ({cols})",
                          found=repr(options.group),
                          hint="fill a group column from the paths or a CSV with --group-from folder:N or "
                               "csv:FILE:COLUMN")
    if set(options.ratios) - set(SPLITS) or sum(options.ratios.values()) <= 0:
        raise OptionError("", field="ratios", expected=f"ratios for {list(SPLITS)}", found=options.ratios)
    stratify = options.stratify
    if stratify == "label" and not manifest.loc[manifest["status"] == "kept", "label"].notna().any():
        stratify = None  # no labels (e.g. a detection set): one stratum
    if options.near_bits is not None and not -1 <= options.near_bits <= 16:
        raise OptionError("", field="--near-bits", expected="-1 (off) to 16", found=options.near_bits)
    near_bits = None if options.near_bits is None or options.near_bits < 0 else options.near_bits
    return SplitOptions(dict(options.ratios), options.seed, stratify, group, near_bits, options.resplit,
                        options.strict, options.group_from)


def split(manifest: pd.DataFrame, options: SplitOptions, *, ws: Workspace | None = None,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: assign train/val/test to every unit with kept rows (see the module docstring)."""
    warnings: list[str] = []
    if options.group_from:
        values, warnings = group_values(manifest, options.group_from)
        manifest = manifest.copy()
        manifest[GROUP_COLUMN] = values
        if options.group == "dup":
            options = dataclasses.replace(options, group=GROUP_COLUMN)
    opts = _check_options(manifest, options)
    before = split_counts(manifest, opts.stratify)
    if opts.resplit:
        manifest, n_copies, n_restored = undo_balance(manifest)
        if n_copies or n_restored:
            warnings.append(f"--resplit undid the last balance ({n_copies} copies dropped, {n_restored} rows "
                            "restored); run `curate balance` again")
    out = assign_splits(manifest, opts)
    after = split_counts(out, opts.stratify)
    problems = small_class_problems(out, opts, after)
    if problems and opts.strict:
        raise OptionError("; ".join(problems), hint="add images, lower the number of splits, or drop --strict")
    warnings += problems
    if not opts.resplit:
        leaks = _straddling_units(out, opts.group, opts.near_bits)
        if leaks:
            warnings.append(f"{leaks} groups keep rows from the source in more than one split; "
                            "`curate check` reports them, `--resplit` reassigns them")
    changed = int((out["split"].astype(object).fillna("") != manifest["split"].astype(object).fillna("")).sum())
    kept_existing = int(((manifest["status"] == "kept") & manifest["split"].notna()).sum()) if not opts.resplit else 0
    if kept_existing:
        note = _ratios_not_applied(opts.ratios, ws, after, kept_existing, changed)
        if note:
            warnings.append(note)
    summary = {
        "ratios": {s: round(v, 4) for s, v in opts.ratios.items()},
        "seed": opts.seed,
        "stratify": opts.stratify,
        "group": opts.group,
        "group_from": opts.group_from,
        "groups": int(manifest[GROUP_COLUMN].nunique()) if GROUP_COLUMN in manifest.columns else None,
        "near_bits": opts.near_bits,
        "resplit": opts.resplit,
        "before": before,
        "after": after,
        "achieved": ratio_report(after, opts.ratios),
        "rows_changed": changed,
        "kept_existing": kept_existing,
        "warnings": warnings,
    }
    return StageResult(out, None, summary=summary)


def _ratios_not_applied(ratios: dict[str, float], ws: Workspace | None, after: dict[str, dict[str, int]],
                        kept_existing: int, changed: int) -> str | None:
    """A warning when the asked ratios differ from those the rows keep without ``--resplit``.

    Compared with the last ``curate split`` run's ratios, or, before any, with the ratios the
    existing splits (e.g. from the source's folders) have.
    """
    last = last_split_run(ws).get("ratios")
    if last:
        differs = any(abs(ratios.get(s, 0.0) - float(last.get(s, 0.0))) > 1e-6 for s in SPLITS)
        was = f"the last split's {format_ratios(last)}"
    else:
        overall = ratio_report(after, ratios)["overall"]
        differs = any(abs(ratios.get(s, 0.0) - overall.get(s, 0.0)) > 0.05 for s in SPLITS)
        was = f"the existing splits' {format_ratios(overall)}"
    if not differs:
        return None
    return (f"--ratios {format_ratios(ratios)} differ from {was}, but without --resplit the {kept_existing} kept "
            f"rows that have a split keep it ({changed} rows placed now); add --resplit to reassign every row")


def _straddling_units(manifest: pd.DataFrame, group: str, near_bits: int | None) -> int:
    kept = manifest["status"] == "kept"
    if not kept.any():
        return 0
    units = unit_ids(manifest, group, near_bits)
    df = pd.DataFrame({"unit": units, "split": manifest["split"].astype(object)})[kept.to_numpy()]
    n = df.dropna().groupby("unit")["split"].nunique()
    return int((n > 1).sum())
