"""``curate labels``: one class vocabulary, label conflicts settled, likely mislabels found and fixed.

One command, several steps, run in this order when given together
(docs/labels.md):

1. **the label map** (``--map old=new``, ``--label-map FILE``, ``--unmap OLD``,
   ``--reset``): the workspace keeps one active map (``labelmap.json``). Every
   row whose label comes from its source shows ``map[original_label]``; a later
   ingest applies the map to new rows. ``--unmap OLD`` removes an entry (its rows
   get their original label back); ``--reset`` removes the map and gives every
   row its original label back, undoing every relabel.
2. **conflicts** (``--resolve majority|source:NAME|keep``): inside each
   duplicate group whose members carry different labels (``label_conflict``),
   every member gets one label: the strict majority's, the label of the member
   from source NAME, or the label of the kept copy. A group the policy cannot
   settle (a tie, no member from NAME) is listed and left as it is. Labels a
   person set (review, Label Studio) are never overwritten: a group where one
   disagrees with the policy stays unsettled.
3. **likely mislabels** (``--find-issues``): image features (curate's own, or a
   torchvision backbone), a random forest trained in k folds so that every
   image is scored by a model that never saw it, and confident learning
   (cleanlab's ``find_label_issues``) over those out-of-fold probabilities.
   Every scored row gets ``label_issue_score`` (1 - cleanlab's self-confidence
   label quality); flagged rows get ``suggested_label``.
4. **the fix** (``--apply relabel|drop``): the flagged rows (or the ``--top N``,
   or those scored at least ``--threshold``) get their suggested label, or are
   dropped as ``mislabelled``.

Every changed label is written on its row (``label_origin = labels``,
``label_detail`` says why) and listed in the run record in ``runs/`` (old,
new, why). Without options it changes nothing and prints the class list with
counts per source and per split.

    >>> import pandas as pd
    >>> from curate.schema import conform, MANIFEST_COLUMNS
    >>> m = conform(pd.DataFrame({"sample_id": list("abc"), "source": ["s1", "s2", "s3"], "label": ["cat", "dog", "cat"],
    ...     "original_label": ["cat", "dog", "cat"], "label_origin": ["source"] * 3, "status": ["kept", "dropped", "dropped"],
    ...     "reason": [None, "duplicate", "duplicate"], "duplicate_of": [None, "a", "a"], "dup_group": ["a"] * 3,
    ...     "label_conflict": [True] * 3}), MANIFEST_COLUMNS)
    >>> out, settled, unsettled, changes = resolve_conflicts(m, "majority")
    >>> out["label"].tolist(), settled, changes[0]["old"], changes[0]["new"]
    (['cat', 'cat', 'cat'], 1, 'dog', 'cat')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from curate.errors import CurateError, OptionError
from curate.summary import summarize
from curate.workspace import StageResult, Workspace

# Labels set by a person: no automatic policy overwrites them.
PERSON_ORIGINS = ("review", "labelstudio", "label-studio")
APPLY_CHOICES = ("relabel", "drop")


@dataclass
class LabelsOptions:
    """Options of ``curate labels`` (see ``curate labels --help`` and docs/labels.md)."""

    map: dict[str, str] = field(default_factory=dict)  # old -> new, merged into the active map
    unmap: tuple[str, ...] = ()  # entries (old names) removed from the active map
    reset: bool = False  # remove the map and every relabel: original labels back
    resolve: str | None = None  # majority | source:NAME | keep
    find_issues: bool = False
    features: str = "pixels"  # pixels | resnet18 | resnet50 | efficientnet_b0
    folds: int = 5
    seed: int = 0
    apply: str | None = None  # relabel | drop
    threshold: float | None = None  # --apply: rows scored at least this (instead of cleanlab's flags)
    top: int | None = None  # --apply: the N highest-scored flagged rows
    dry_run: bool = False
    workers: int = 0
    progress: bool = False

    def check(self) -> None:
        if self.resolve is not None and self.resolve not in ("majority", "keep") and not (
                self.resolve.startswith("source:") and self.resolve[7:].strip()):
            raise OptionError("", field="--resolve", expected="majority, source:NAME or keep", found=self.resolve)
        if self.apply is not None and self.apply not in APPLY_CHOICES:
            raise OptionError("", field="--apply", expected=" or ".join(APPLY_CHOICES), found=self.apply)
        if (self.threshold is not None or self.top is not None) and self.apply is None:
            raise OptionError("", field="--threshold/--top", expected="--apply relabel|drop with them",
                              found="no --apply")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise OptionError("", field="--threshold", expected="a score between 0 and 1", found=self.threshold)
        if self.folds < 2:
            raise OptionError("", field="--folds", expected="at least 2", found=self.folds)
        from curate.features import FEATURES

        if self.features not in FEATURES:
            raise OptionError("", field="--features", expected=f"one of {', '.join(FEATURES)}", found=self.features)


# -- the class list ------------------------------------------------------------

def class_table(manifest: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Kept rows per class: in all, per source and per split (``(none)`` for rows without a split).

        >>> m = pd.DataFrame({"label": ["a", "a", "b"], "source": ["s1", "s2", "s1"], "split": ["train", None, "val"],
        ...                   "status": ["kept"] * 3})
        >>> class_table(m)["a"]
        {'kept': 2, 'source': {'s1': 1, 's2': 1}, 'split': {'(none)': 1, 'train': 1}}
    """
    kept = manifest[manifest["status"] == "kept"]
    out: dict[str, dict[str, Any]] = {}
    labels = kept["label"].fillna("(none)").astype(str)
    for label, g in kept.groupby(labels, sort=True):
        out[str(label)] = {
            "kept": int(len(g)),
            "source": {str(k): int(v) for k, v in g["source"].value_counts().sort_index().items()},
            "split": {str(k): int(v) for k, v in g["split"].fillna("(none)").value_counts().sort_index().items()},
        }
    return out


def format_classes(summary: dict[str, Any], title: str) -> str:
    """The class list as a table: one line per class, columns per source and per split."""
    table = summary.get("classes", {})
    sources = sorted({s for c in table.values() for s in c["source"]})
    splits = sorted({s for c in table.values() for s in c["split"]})
    head = ["class", "kept", *sources, *(f"[{s}]" for s in splits)]
    rows = [[name, str(c["kept"]), *(str(c["source"].get(s, 0)) for s in sources),
             *(str(c["split"].get(s, 0)) for s in splits)] for name, c in table.items()]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"{title}: {len(table)} classes, {sum(c['kept'] for c in table.values())} kept rows "
             f"(columns: sources, then [splits])"]
    for r in [head, *rows]:
        lines.append("  " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    for key in ("map", "resolve", "find_issues", "apply"):
        if key in summary:
            lines.append(f"  {key}: {_short(summary[key])}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    import json

    if isinstance(v, dict):
        v = {k: x for k, x in v.items() if k not in ("flagged", "unsettled_groups")}
    return json.dumps(v, default=str)


# -- conflicts -----------------------------------------------------------------

def resolve_conflicts(manifest: pd.DataFrame, policy: str
                      ) -> tuple[pd.DataFrame, int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Settle the label conflicts of duplicate groups by ``policy``; see the module docstring.

    Returns the new table, the number of groups settled, the groups left
    unsettled (with why), and one record per changed label.
    """
    out = manifest.copy()
    member = out["dup_group"].notna() & ((out["status"] == "kept") | (out["reason"] == "duplicate"))
    conflicted = set(out.loc[member & out["label_conflict"].astype(bool), "dup_group"])
    source = policy[7:].strip() if policy.startswith("source:") else None
    settled, unsettled, changes = 0, [], []
    for group in sorted(conflicted):
        rows = out.index[member & (out["dup_group"] == group)]
        g = out.loc[rows]
        labels = g["label"].dropna().astype(str)
        target, why = _target(g, labels, policy, source, group)
        person = g[g["label_origin"].isin(PERSON_ORIGINS) & g["label"].notna()]
        if target is not None and (person["label"] != target).any():
            target, why = None, f"a person labelled {sorted(set(person['label']))} in review; not overwritten"
        if target is None:
            unsettled.append({"group": group, "labels": labels.value_counts().to_dict(), "why": why})
            continue
        settled += 1
        for i in rows:
            old = out.at[i, "label"]
            if old != target:
                detail = f"conflict in duplicate group {group} settled by {policy}: {old} -> {target}"
                out.at[i, "label"] = target
                out.at[i, "label_origin"] = "labels"
                out.at[i, "label_detail"] = detail
                changes.append({"sample_id": out.at[i, "sample_id"], "source": out.at[i, "source"], "old": old,
                                "new": target, "by": f"resolve {policy}", "group": group})
        out.loc[rows, "label_conflict"] = False
    return out, settled, unsettled, changes


def _target(g: pd.DataFrame, labels: pd.Series, policy: str, source: str | None, group: str
            ) -> tuple[str | None, str]:
    if policy == "majority":
        counts = labels.value_counts()
        if len(counts) > 1 and counts.iloc[0] == counts.iloc[1]:
            return None, f"no majority: {counts.to_dict()}"
        return str(counts.index[0]), "majority"
    if policy == "keep":
        kept = g[g["status"] == "kept"]
        if len(kept) != 1 or pd.isna(kept["label"].iloc[0]):
            return None, "no single kept copy with a label"
        return str(kept["label"].iloc[0]), "the kept copy's label"
    own = g.loc[g["source"] == source, "label"].dropna().astype(str).unique()
    if len(own) == 0:
        return None, f"no member from source {source}"
    if len(own) > 1:
        return None, f"members from source {source} disagree: {sorted(own)}"
    return str(own[0]), f"source {source}"


# -- likely mislabels ------------------------------------------------------------

def _features_of(path: str) -> tuple[str, np.ndarray | None, str | None]:
    from curate.features import pixel_features

    try:
        return path, pixel_features(path), None
    except CurateError as e:
        return path, None, str(e)


def _crashed(path: str, crash: Any) -> tuple[str, np.ndarray | None, str | None]:
    return path, None, f"worker crashed: {crash}"


def image_features(paths: list[str], options: LabelsOptions) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features of each path (rows), a mask of the paths that could be decoded, and how they were made."""
    if options.features != "pixels":
        from curate.features import backbone_features

        ok = np.ones(len(paths), bool)
        try:
            emb, info = backbone_features(paths, options.features, seed=options.seed)
        except CurateError:  # one undecodable file: fall back to one at a time
            rows, info = [], {}
            for i, p in enumerate(paths):
                try:
                    e1, info = backbone_features([p], options.features, seed=options.seed)
                    rows.append(e1[0])
                except CurateError:
                    ok[i] = False
            emb = np.stack(rows) if rows else np.zeros((0, 1), np.float32)
        return emb, ok, info
    from curate.features import PIXEL_DIM
    from curate.parallel import stream_map

    got = {p: (v, err) for p, v, err in stream_map(_features_of, paths, workers=options.workers,
                                                  progress=options.progress, desc="features", on_crash=_crashed)}
    vectors: list[np.ndarray] = [v for p in paths if (v := got[p][0]) is not None]
    ok = np.array([got[p][0] is not None for p in paths], bool)
    feats = np.stack(vectors) if vectors else np.zeros((0, PIXEL_DIM), np.float32)
    problems = [str(got[p][1]) for p in paths if got[p][1]]
    return feats.astype(np.float32), ok, {"features": "pixels", "weights": "none (hand-made descriptor)",
                                          **({"problems": problems[:20]} if problems else {})}


def out_of_fold_probs(features: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Class probabilities of each row from a model that did not see it (k-fold).

        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(0, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
        >>> y = np.repeat([0, 1], 20)
        >>> p = out_of_fold_probs(x, y, 4, 0)
        >>> p.shape, float((p.argmax(1) == y).mean()) > 0.9
        ((40, 2), True)
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    # A random forest, chosen on measurement (docs/labels.md): on the corpus's 3 classes it classified 0.77
    # of the images out of fold from curate's own features, a logistic regression 0.71-0.72, 7-NN 0.53.
    model = RandomForestClassifier(n_estimators=300, min_samples_leaf=1, random_state=seed, n_jobs=1)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return np.asarray(cross_val_predict(model, features, y, cv=cv, method="predict_proba"))


def find_issues(manifest: pd.DataFrame, options: LabelsOptions) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every kept, labelled image; flag the likely mislabels (cleanlab); see the module docstring."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    t0 = time.perf_counter()
    out = manifest.copy()
    cand = out[(out["status"] == "kept") & out["label"].notna() & out["width"].notna()]
    counts = cand["label"].value_counts()
    small = sorted(counts[counts < 2].index.astype(str))
    cand = cand[cand["label"].isin(counts[counts >= 2].index)]
    info: dict[str, Any] = {"scored": 0, "flagged": [], "skipped_classes": small}
    if cand["label"].nunique() < 2:
        raise OptionError("", field="--find-issues", expected="kept images of at least 2 classes with 2 or more each",
                          found=f"{cand['label'].nunique()} such classes ({len(cand)} images)")
    feats, ok, how = image_features(cand["path"].astype(str).tolist(), options)
    unreadable = cand[~ok]
    cand = cand[ok]
    classes = sorted(cand["label"].astype(str).unique())
    y = cand["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = int(min(options.folds, np.bincount(y).min()))
    if folds < 2:
        raise OptionError("", field="--find-issues", expected="every class with 2 or more readable images",
                          found=f"a class with {np.bincount(y).min()}")
    probs = out_of_fold_probs(feats, y, folds, options.seed)
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    flagged = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    masked = probs.copy()
    masked[np.arange(len(y)), y] = -1  # the best class other than the given one
    suggested = np.array(classes, dtype=object)[masked.argmax(1)]
    out.loc[cand.index, "label_issue_score"] = np.round(1.0 - quality, 6)
    out.loc[cand.index, "suggested_label"] = np.where(flagged, suggested, None)
    order = np.argsort(-(1.0 - quality), kind="stable")
    ranked = [{"sample_id": cand["sample_id"].iloc[i], "path": cand["path"].iloc[i], "label": str(cand["label"].iloc[i]),
               "suggested": str(suggested[i]), "score": round(float(1.0 - quality[i]), 4)}
              for i in order if flagged[i]]
    info.update({"scored": int(len(cand)), "classes": len(classes), "folds": folds, **how,
                 "model": "random forest (300 trees), out-of-fold",
                 "accuracy_out_of_fold": round(float((probs.argmax(1) == y).mean()), 4),
                 "flagged": ranked, "n_flagged": len(ranked), "unreadable": int(len(unreadable)),
                 "seconds": round(time.perf_counter() - t0, 3)})
    return out, info


def apply_fixes(manifest: pd.DataFrame, options: LabelsOptions
                ) -> tuple[pd.DataFrame, dict[str, Any], list[dict[str, Any]]]:
    """Relabel or drop the flagged rows (``suggested_label`` set), the ``--top`` N or those over ``--threshold``."""
    out = manifest.copy()
    score = pd.to_numeric(out["label_issue_score"], errors="coerce")
    pick = (out["status"] == "kept") & out["suggested_label"].notna() & score.notna()
    if options.threshold is not None:
        pick &= score >= options.threshold
    idx = score[pick].sort_values(ascending=False, kind="stable").index
    if options.top is not None:
        idx = idx[:options.top]
    if not len(idx) and not score.notna().any():
        raise OptionError("", field="--apply", expected="rows scored by --find-issues", found="none",
                          hint="run `curate labels WS --find-issues` first, or give both together")
    changes = []
    for i in idx:
        old, new, s = out.at[i, "label"], out.at[i, "suggested_label"], float(score[i])
        if options.apply == "relabel":
            out.at[i, "label"] = new
            out.at[i, "label_origin"] = "labels"
            out.at[i, "label_detail"] = f"likely mislabel (score {s:.3f}) relabelled: {old} -> {new}"
            out.at[i, "suggested_label"] = None
        else:
            out.at[i, "status"] = "dropped"
            out.at[i, "reason"] = "mislabelled"
            out.at[i, "detail"] = f"likely mislabel (score {s:.3f}): labelled {old}, looks like {new}"
            out.at[i, "decided_by"] = "labels"
        changes.append({"sample_id": out.at[i, "sample_id"], "source": out.at[i, "source"], "old": old,
                        "new": new if options.apply == "relabel" else None, "score": round(s, 4),
                        "by": f"apply {options.apply}"})
    return out, {"mode": options.apply, "rows": len(changes)}, changes


# -- the stage -------------------------------------------------------------------

def labels(manifest: pd.DataFrame, options: LabelsOptions, *, ws: Workspace,
           annotations: pd.DataFrame | None = None) -> StageResult:
    """Map, settle, score and fix labels; print the class list. See the module docstring.

        >>> ws.run_stage("labels", labels, LabelsOptions(map={"Brown_Glass": "brown-glass"}))  # doctest: +SKIP
    """
    from curate.labelmap import (
        LABELMAP_FILE,
        apply_box_map,
        apply_map,
        check_map,
        compose,
        map_bytes,
        map_from_bytes,
        refresh_conflicts,
    )

    options.check()
    out = manifest.copy()
    summary: dict[str, Any] = {}
    new_ann: pd.DataFrame | None = None
    record: dict[str, Any] = {}
    changes: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    stored = map_from_bytes(ws.read_file(LABELMAP_FILE))
    if options.map or options.unmap or options.reset:
        if options.map:
            check_map(options.map)
        unknown = [k for k in options.unmap if k not in stored]
        if unknown:
            raise OptionError("", field="--unmap", expected=f"a name the active map renames ({', '.join(stored) or 'none'})",
                              found=", ".join(unknown))
        active = {} if options.reset else {k: v for k, v in stored.items() if k not in options.unmap}
        active = compose(active, options.map)
        if options.reset:
            out, undone = _reset(out)
            changes += undone
        out, mapped = apply_map(out, active, options.map)
        changes += mapped
        if annotations is not None and len(annotations):
            ann, boxes_renamed = apply_box_map(annotations, active, options.map)
            if boxes_renamed:
                new_ann = ann
                summary["boxes_renamed"] = boxes_renamed
        files[LABELMAP_FILE] = map_bytes(active)
        summary["map"] = {"active": active, "relabelled": len(mapped) + (len(undone) if options.reset else 0)}
        record["label_map"] = {"before": stored, "after": active}
    if options.resolve:
        out, settled, unsettled, resolved = resolve_conflicts(out, options.resolve)
        changes += resolved
        summary["resolve"] = {"policy": options.resolve, "groups_settled": settled, "relabelled": len(resolved),
                              "unsettled": len(unsettled), "unsettled_groups": unsettled}
        if unsettled:
            summary.setdefault("warnings", []).extend(
                f"duplicate group {u['group']} not settled ({u['why']}): labels {u['labels']}" for u in unsettled)
    if options.find_issues:
        out, info = find_issues(out, options)
        summary["find_issues"] = info
        record["flagged"] = info["flagged"]
    if options.apply:
        out, info, fixed = apply_fixes(out, options)
        changes += fixed
        summary["apply"] = info
    if changes:
        out = refresh_conflicts(out)
    summary["classes"] = class_table(out)
    summary["conflicts_left"] = int(out.loc[out["label_conflict"].astype(bool), "dup_group"].nunique())
    if options.find_issues or options.map or options.resolve:
        from curate.labelmap import similar_class_names
        from curate.schema import empty_annotations

        similar = similar_class_names(out, annotations if annotations is not None else empty_annotations(), [])
        if similar:
            summary["similar_labels"] = [{"names": g["names"], "suggest": g["suggest"]} for g in similar]
    record["label_changes"] = changes
    summary["relabelled"] = sum(1 for c in changes if c.get("new") is not None)
    summary["status_counts"] = summarize(out)["status"]
    changed = bool(changes) or bool(files) or options.find_issues or new_ann is not None
    return StageResult(out, new_ann, summary=summary, record=record, files=files,
                       write=changed and not options.dry_run, log_run=not options.dry_run and changed)


def _reset(manifest: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every row's original label back (each change returned as a record)."""
    out = manifest.copy()
    back = out["original_label"].notna() & (out["label"].fillna("\0") != out["original_label"])
    changes = [{"sample_id": s, "source": src, "old": o, "new": n, "by": "reset"} for s, src, o, n in
               zip(out.loc[back, "sample_id"], out.loc[back, "source"], out.loc[back, "label"],
                   out.loc[back, "original_label"], strict=True)]
    has = out["original_label"].notna()
    out.loc[back, "label"] = out.loc[back, "original_label"]
    out.loc[has, "label_origin"] = "source"
    out.loc[has, "label_detail"] = None
    return out, changes
