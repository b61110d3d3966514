"""Class names: normalising them, finding near-identical spellings, and label maps.

A second Kaggle dump names its class ``Brown_Glass`` where the first said
``brown-glass`` (issue 16). :func:`label_key` folds the differences a person
would not call a different class (case, separators, spaces, a plural -s), and
:func:`similar_labels` groups the names that fold to one key, suggesting the
most common spelling as the one to keep.

A label map renames or merges classes: ``old=new`` pairs, given on the command
line (``--map old=new``, repeated) or in a small file (YAML ``old: new``, or a
CSV with two columns). The workspace keeps one *active* map
(``labelmap.json``): every row whose label still comes from its source shows
``map[original_label]``; a later ingest applies it to new rows, and removing an
entry (``--unmap``) gives the rows back their original label.

    >>> label_key("Brown_Glass"), label_key("brown-glass"), label_key("Batteries"), label_key("boxes")
    ('brown glass', 'brown glass', 'battery', 'box')
    >>> similar_labels({"s1": {"brown-glass": 30, "paper": 5}, "s2": {"Brown_Glass": 12, "papers": 2}})[0]["suggest"]
    {'Brown_Glass': 'brown-glass'}
    >>> compose({"Brown_Glass": "brown-glass"}, {"brown-glass": "glass"})
    {'Brown_Glass': 'glass', 'brown-glass': 'glass'}
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate.errors import OptionError
from curate.workspace import LABELMAP_FILE  # the workspace's active map, committed with the tables

__all__ = ["LABELMAP_FILE", "apply_box_map", "apply_map", "check_map", "compose", "label_key", "map_bytes", "map_from_bytes",
           "parse_pairs", "read_map_file", "refresh_conflicts", "similar_class_names", "similar_labels",
           "similar_warning"]

_SEPARATORS = re.compile(r"[\s_\-./\\]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _singular(word: str) -> str:
    """English plural -s of one word, the regular cases only (a class name, not prose)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def label_key(name: str) -> str:
    """The form two class names are compared in: lower case, one space between words, singular.

    ``BrownGlass`` (camel case) splits into words too.

        >>> label_key("  Plastic--BOTTLES "), label_key("BrownGlass"), label_key("glass")
        ('plastic bottle', 'brown glass', 'glass')
    """
    words = _SEPARATORS.split(_CAMEL.sub(" ", str(name).strip()).lower())
    return " ".join(_singular(w) for w in words if w)


def similar_labels(counts: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """Names that differ only in case, separators, spaces or a plural -s.

    ``counts`` is ``{source: {label: rows}}``. Each group found is
    ``{"key", "names": {label: {source: rows}}, "suggest": {other: keep}}``;
    the spelling kept is the one with the most rows (ties: the first source,
    then the name), so the map changes as few rows as possible.
    """
    by_key: dict[str, dict[str, dict[str, int]]] = {}
    source_rank: dict[str, int] = {}
    for i, (source, labels) in enumerate(counts.items()):
        source_rank.setdefault(source, i)
        for label, n in labels.items():
            if label is None:
                continue
            by_key.setdefault(label_key(label), {}).setdefault(str(label), {})[source] = int(n)
    out = []
    for key in sorted(by_key):
        names = by_key[key]
        if len(names) < 2:
            continue

        def order(name: str, names: dict[str, dict[str, int]] = names) -> tuple[int, int, str]:
            return (-sum(names[name].values()), min(source_rank[s] for s in names[name]), name)

        keep = min(names, key=order)
        out.append({"key": key, "names": {n: dict(names[n]) for n in sorted(names, key=order)},
                    "suggest": {n: keep for n in sorted(names, key=order) if n != keep}})
    return out


def parse_pairs(items: Iterable[str], *, option: str = "--map") -> dict[str, str]:
    """``["old=new", ...]`` as a map; one ``old`` given two targets is an error.

        >>> parse_pairs(["Brown_Glass=brown-glass", " Paper = paper "])
        {'Brown_Glass': 'brown-glass', 'Paper': 'paper'}
    """
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = str(item).partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise OptionError("", field=option, expected="OLD=NEW (e.g. Brown_Glass=brown-glass)", found=repr(item))
        _add(out, old, new, option)
    return out


def _add(out: dict[str, str], old: str, new: str, where: str) -> None:
    if old in out and out[old] != new:
        raise OptionError("", field=where, expected=f"one new name for {old!r}",
                          found=f"{out[old]!r} and {new!r}")
    out[old] = new


def read_map_file(path: str | Path) -> dict[str, str]:
    """A label map from a file: YAML/JSON (``old: new``) or CSV/TSV (two columns, an optional header).

    A CSV header is recognised by the names ``old,new`` / ``from,to`` /
    ``source,target`` (any case) in its first row.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError("", file=p, field="--label-map", expected="a readable UTF-8 YAML or CSV file",
                          found=f"{type(e).__name__}: {e}") from e
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _csv_map(text, p, "\t" if p.suffix.lower() == ".tsv" else ",")
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise OptionError("", file=p, field="--label-map", expected="YAML `old: new` lines",
                          found=str(e).splitlines()[0]) from e
    if isinstance(data, dict) and isinstance(data.get("map"), dict):  # {"map": {...}} as curate writes it
        data = data["map"]
    if not isinstance(data, dict):
        raise OptionError("", file=p, field="--label-map", expected="a mapping of old: new class names",
                          found=type(data).__name__)
    out: dict[str, str] = {}
    for old, new in data.items():
        if old is None or new is None or isinstance(new, (dict, list)) or not str(old).strip() or not str(new).strip():
            raise OptionError("", file=p, field="--label-map", expected="old: new with both names given",
                              found=f"{old!r}: {new!r}")
        _add(out, str(old).strip(), str(new).strip(), f"--label-map {p}")
    return out


_HEADERS = {("old", "new"), ("from", "to"), ("source", "target"), ("label", "new_label"), ("original", "label")}


def _csv_map(text: str, p: Path, delimiter: str) -> dict[str, str]:
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if rows and tuple(c.strip().lower() for c in rows[0][:2]) in _HEADERS:
        rows = rows[1:]
    out: dict[str, str] = {}
    for n, r in enumerate(rows, 1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise OptionError("", file=p, field=f"row {n}", expected="two columns: old,new", found=delimiter.join(r))
        _add(out, r[0].strip(), r[1].strip(), f"--label-map {p}")
    return out


def compose(active: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """The map that applies ``active`` and then ``new``, keyed by every name either renames.

    An entry that maps a name to itself is dropped: a map back undoes a rename
    (the rows first called ``a`` are ``a`` again; those first called ``b`` now join them).

        >>> compose({"a": "b"}, {"b": "a"})
        {'b': 'a'}
    """
    out = {old: new.get(target, target) for old, target in active.items()}
    for old, target in new.items():
        out.setdefault(old, target)
    return {k: v for k, v in out.items() if k != v}


def check_map(mapping: Mapping[str, str]) -> None:
    """Refuse a chain (``a=b`` and ``b=c`` in one map): which one was meant is not clear."""
    chained = sorted(k for k, v in mapping.items() if v in mapping and mapping[v] != v)
    if chained:
        k = chained[0]
        raise OptionError("", field="label map", expected="each new name not renamed again in the same map",
                          found=f"{k}={mapping[k]} and {mapping[k]}={mapping[mapping[k]]}",
                          hint="give the final name directly, or apply the maps one after the other")


def map_bytes(mapping: Mapping[str, str]) -> bytes:
    """``labelmap.json`` as written (committed with the tables)."""
    return (json.dumps({"map": dict(sorted(mapping.items()))}, indent=2, ensure_ascii=False) + "\n").encode()


def map_from_bytes(data: bytes | None) -> dict[str, str]:
    if not data:
        return {}
    doc = json.loads(data)
    return {str(k): str(v) for k, v in (doc.get("map") or {}).items()}


def apply_map(manifest: pd.DataFrame, active: Mapping[str, str], new: Mapping[str, str] | None = None,
              ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Show the active map on every row; return the new table and one record per changed label.

    A row whose label still comes from its source (``label_origin`` source or
    labelmap) shows ``active[original_label]`` (or its original label when the
    map has no entry: removing an entry undoes it). A row relabelled by a
    person or a stage keeps its label, renamed by ``new`` (the map given
    now) when it names it.

        >>> m = pd.DataFrame({"sample_id": ["a", "b"], "label": ["Brown_Glass", "paper"],
        ...                   "original_label": ["Brown_Glass", "paper"], "label_origin": ["source"] * 2})
        >>> out, changes = apply_map(m, {"Brown_Glass": "brown-glass"})
        >>> out["label"].tolist(), out["label_origin"].tolist(), len(changes)
        (['brown-glass', 'paper'], ['labelmap', 'source'], 1)
        >>> apply_map(out, {})[0]["label"].tolist()
        ['Brown_Glass', 'paper']
    """
    out = manifest.copy()
    for c in ("original_label", "label_detail"):
        if c not in out.columns:
            out[c] = None
    origin = out["label_origin"]
    # rows read before original_label existed: their source label is their label
    backfill = out["original_label"].isna() & (origin == "source") & out["label"].notna()
    out.loc[backfill, "original_label"] = out.loc[backfill, "label"]
    from_source = origin.isin(["source", "labelmap"]) & out["original_label"].notna()
    old = out["label"].copy()
    orig = out.loc[from_source, "original_label"].astype(str)
    target = orig.map(lambda v: active.get(v, v))
    renamed = target != orig
    out.loc[from_source, "label"] = target
    out.loc[from_source, "label_origin"] = np.where(renamed, "labelmap", "source")
    out.loc[from_source, "label_detail"] = [f"label map: {o} -> {t}" if r else None
                                            for o, t, r in zip(orig, target, renamed, strict=True)]
    if new:
        other = ~from_source & out["label"].isin(list(new))
        for i in out.index[other]:
            was = out.at[i, "label"]
            out.at[i, "label"] = new[was]
            prev = out.at[i, "label_detail"]
            out.at[i, "label_detail"] = (f"{prev}; " if isinstance(prev, str) and prev else "") + \
                f"label map: {was} -> {new[was]}"
    changed = old.fillna("\0") != out["label"].fillna("\0")
    changes = [{"sample_id": s, "old": o, "new": n, "by": "labelmap"} for s, o, n in
               zip(out.loc[changed, "sample_id"], old[changed], out.loc[changed, "label"], strict=True)]
    return out, changes


def refresh_conflicts(manifest: pd.DataFrame) -> pd.DataFrame:
    """``label_conflict`` again from the labels, for every duplicate group (after labels changed).

        >>> m = pd.DataFrame({"dup_group": ["a", "a", None], "label": ["x", "x", "y"], "status": ["kept", "dropped", "kept"],
        ...                   "reason": [None, "duplicate", None], "label_conflict": [True, True, False]})
        >>> refresh_conflicts(m)["label_conflict"].tolist()
        [False, False, False]
    """
    out = manifest.copy()
    member = out["dup_group"].notna() & ((out["status"] == "kept") | (out["reason"] == "duplicate"))
    sub = out.loc[member, ["dup_group", "label"]]
    n = sub["label"].groupby(sub["dup_group"]).transform("nunique")
    out.loc[member, "label_conflict"] = (n > 1).to_numpy()
    return out


def similar_class_names(manifest: pd.DataFrame, annotations: pd.DataFrame, source_order: Sequence[str]
                        ) -> list[dict[str, Any]]:
    """Class names (image labels and box classes) of different spellings of one class, across all sources."""
    live = manifest[(manifest["status"] == "kept") | (manifest["reason"] == "duplicate")]
    counts: dict[str, dict[str, int]] = {s: {} for s in source_order}
    for (source, label), n in live.groupby(["source", "label"]).size().items():
        counts.setdefault(str(source), {})[str(label)] = int(n)
    if len(annotations):
        src = annotations["sample_id"].map(manifest.set_index("sample_id")["source"])
        for (source, label), n in annotations.groupby([src, annotations["label"]]).size().items():
            c = counts.setdefault(str(source), {})
            c[str(label)] = c.get(str(label), 0) + int(n)
    return similar_labels(counts)


def similar_warning(group: dict[str, Any], root: str | Path) -> str:
    """One line naming the spellings, their sources, and the command that merges them."""
    names = ", ".join(f"{n!r} ({', '.join(f'{s}: {c}' for s, c in by.items())})" for n, by in group["names"].items())
    maps = " ".join(f"--map {shlex.quote(f'{old}={new}')}" for old, new in group["suggest"].items())
    return f"class names {names} look like one class: merge them with `curate labels {root} {maps}`"


def apply_box_map(annotations: pd.DataFrame, active: Mapping[str, str], new: Mapping[str, str] | None = None
                  ) -> tuple[pd.DataFrame, int]:
    """Box classes as :func:`apply_map` shows image labels: ``active[original_label]`` for boxes read from a
    source, ``new`` renaming the others (boxes curate made). Returns the boxes and how many changed.

        >>> b = pd.DataFrame({"label": ["Brown_Glass", "face"], "original_label": ["Brown_Glass", None]})
        >>> out, n = apply_box_map(b, {"Brown_Glass": "brown-glass"})
        >>> out["label"].tolist(), n, apply_box_map(out, {})[0]["label"].tolist()
        (['brown-glass', 'face'], 1, ['Brown_Glass', 'face'])
    """
    if not len(annotations):
        return annotations, 0
    out = annotations.copy()
    if "original_label" not in out.columns:
        out["original_label"] = None
    old = out["label"].copy()
    read = out["original_label"].notna()
    out.loc[read, "label"] = out.loc[read, "original_label"].astype(str).map(lambda v: active.get(v, v))
    if new:
        made = ~read & out["label"].isin(list(new))
        out.loc[made, "label"] = out.loc[made, "label"].map(lambda v: new[v])
    return out, int((old != out["label"]).sum())
