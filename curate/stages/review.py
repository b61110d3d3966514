"""``curate review``: see every decision in the FiftyOne App, and pull a person's decisions back.

``curate review WS`` builds (or refreshes in place) a persistent FiftyOne
dataset named after the workspace, one sample per manifest row, kept *and*
dropped, and opens the App. ``curate review WS --pull`` reads the tags a
person set in the App and applies them to the manifest:

- ``reject``        -> dropped, reason ``rejected_in_review``
- ``keep``          -> kept, overriding an automatic drop (reason and duplicate_of cleared)
- ``label:<class>`` -> relabelled (``label_origin = "review"``)

Every pulled row gets ``decided_by = "review"``, which automatic stages do not
override, and every change (old and new values) is recorded in ``runs/``.
Pulling twice changes nothing: a decision already in the manifest is not a change.

What the App shows for each row (the ``media`` field):

- ``original``: the file itself, when a browser can show it as curate sees it
  (through a link with the right extension when FiftyOne cannot tell its type by name);
- ``preview``: a JPEG made with :func:`curate.imageio.load_display` when the
  browser cannot (HEIF, TIFF, ...) or would not apply the EXIF rotation curate
  applies (so boxes, stored in the displayed frame, land where they belong);
- ``placeholder``: a card stating the reason, for files that cannot be decoded
  (unreadable, not_an_image, empty_file, missing files, too_large, worker_crashed), so a person
  still sees them. The real file is always in the ``path`` field.

Previews, placeholders and links live in ``WS/review/media/``; sources are never written.
The records and media choice are in :mod:`curate.review.records`, everything that
talks to FiftyOne in :mod:`curate.review.app`; this module decides what a person's
tags mean, without FiftyOne.

    >>> from pathlib import Path
    >>> dataset_name(Path("/data/ws/shoes")).startswith("curate-shoes-")
    True
    >>> decision_from_tags(["reject", "label:cat", "todo"])
    (Decision(action='reject', label='cat'), None, ['todo'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from curate.review.app import read_tags, sync_dataset
from curate.review.records import dataset_name, py_value
from curate.schema import MANIFEST_COLUMNS, conform
from curate.workspace import StageResult, Workspace

TAG_REJECT = "reject"
TAG_KEEP = "keep"
TAG_LABEL_PREFIX = "label:"

# -- tags: what a person asked for (pure: no FiftyOne) -------------------------

@dataclass(frozen=True)
class Decision:
    """What a person's tags on one sample ask for."""

    action: str | None  # "reject", "keep" or None
    label: str | None


def decision_from_tags(tags: Iterable[str]) -> tuple[Decision | None, str | None, list[str]]:
    """Read the review vocabulary from one sample's tags: (decision, problem, ignored tags).

    ``reject`` and ``keep`` are matched case-insensitively; ``label:<class>``
    keeps the class as written. Contradicting tags give a problem and no decision.

        >>> decision_from_tags(["keep", "reject"])[1]
        'tags contradict each other: keep and reject'
    """
    actions: set[str] = set()
    labels: set[str] = set()
    ignored: list[str] = []
    for raw in tags:
        tag = str(raw).strip()
        low = tag.lower()
        if low in (TAG_REJECT, TAG_KEEP):
            actions.add(low)
        elif low.startswith(TAG_LABEL_PREFIX):
            cls = tag[len(TAG_LABEL_PREFIX):].strip()
            if not cls:
                return None, f"tag {raw!r} names no class (write label:<class>)", ignored
            labels.add(cls)
        else:
            ignored.append(tag)
    if len(actions) > 1:
        return None, "tags contradict each other: keep and reject", ignored
    if len(labels) > 1:
        return None, "tags contradict each other: " + " and ".join(f"label:{c}" for c in sorted(labels)), ignored
    if not actions and not labels:
        return None, None, ignored
    return Decision(next(iter(actions), None), next(iter(labels), None)), None, ignored


def _same(a: Any, b: Any) -> bool:
    return py_value(a) == py_value(b)


def kept_ancestors(manifest: pd.DataFrame) -> set[str]:
    """sample_ids of every ancestor (parent, grandparent, ...) of a kept derived row."""
    parent = dict(zip(manifest["sample_id"].astype(str), manifest["parent_id"], strict=True))
    out: set[str] = set()
    for sid in manifest.loc[manifest["parent_id"].notna() & (manifest["status"] == "kept"), "sample_id"]:
        p = parent.get(str(sid))
        while isinstance(p, str) and p not in out:
            out.add(p)
            p = parent.get(p)
    return out


def apply_decisions(
    manifest: pd.DataFrame, tags_by_id: Mapping[str, Iterable[str]]
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str], dict[str, Any]]:
    """Apply review tags to the manifest: (new manifest, changes, problems, counts).

    Each change is ``{"sample_id", "path", "tags", "old": {...}, "new": {...}}``
    with only the fields that changed, so applying the same tags again gives
    no changes.
    """
    out = manifest.copy()
    index = {sid: i for i, sid in zip(out.index, out["sample_id"], strict=True)}
    changes: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    counts = {"tagged": 0, "rejected": 0, "kept": 0, "relabelled": 0}
    ignored_tags: dict[str, int] = {}
    relabelled_groups: set[str] = set()
    replaced = kept_ancestors(out)  # rows a transform replaced by kept derived rows

    def change(i: int, sid: str, tags: list[str], new: dict[str, Any]) -> bool:
        diff_old = {k: py_value(out.at[i, k]) for k, v in new.items() if not _same(out.at[i, k], v)}
        if not diff_old:
            return False
        entry = changes.setdefault(sid, {"sample_id": sid, "path": out.at[i, "path"], "tags": tags,
                                         "old": {}, "new": {}})
        for k in diff_old:
            entry["old"].setdefault(k, diff_old[k])
            entry["new"][k] = py_value(new[k])
            out.at[i, k] = new[k]
        return True

    for sid in sorted(tags_by_id):
        tags = [str(t) for t in tags_by_id[sid]]
        decision, problem, ignored = decision_from_tags(tags)
        for t in ignored:
            ignored_tags[t] = ignored_tags.get(t, 0) + 1
        if problem:
            problems.append(f"{sid}: {problem}; row left as it was")
        if decision is None:
            continue
        if sid not in index:
            problems.append(f"{sid}: tagged in the App but no longer in the manifest; skipped")
            continue
        counts["tagged"] += 1
        i = index[sid]
        row = out.loc[i]
        new: dict[str, Any] = {}
        if decision.action == TAG_KEEP and row["reason"] == "superseded" and sid in replaced:
            # A transform (faces, square, crop) read this kept row and replaced it: the keep lives on in
            # the derived rows, which carry its label. Keeping the original again would export both.
            if decision.label is None or _same(decision.label, row["label"]):
                continue
            decision = Decision(None, decision.label)
        if decision.action == TAG_KEEP and row["status"] != "kept":
            if py_value(row["width"]) is None:
                problems.append(f"{sid}: cannot keep {row['path']}: it was never decoded ({row['reason']}); "
                                "fix the file and ingest again")
                continue
            new.update(status="kept", reason=None, duplicate_of=None,
                       detail=f"kept in review (was {row['reason']})")
        elif decision.action == TAG_REJECT and not (row["status"] == "dropped" and row["reason"] == "rejected_in_review"):
            was = "kept" if row["status"] == "kept" else row["reason"]
            new.update(status="dropped", reason="rejected_in_review", detail=f"rejected in review (was {was})")
            if row["status"] == "kept" and py_value(row["dup_group"]) == sid:
                problems.append(f"{sid}: rejected the kept representative of a duplicate group; "
                                "its duplicates stay dropped (tag one `keep` to keep it instead)")
        if decision.label is not None:
            new.update(label=decision.label, label_origin="review")
        new["decided_by"] = "review"
        old_label = row["label"]
        if change(i, sid, tags, new):
            counts["rejected"] += int(new.get("reason") == "rejected_in_review")
            counts["kept"] += int(new.get("status") == "kept")
            if not _same(old_label, out.at[i, "label"]):
                counts["relabelled"] += 1
                if py_value(row["dup_group"]) is not None:
                    relabelled_groups.add(str(row["dup_group"]))

    # A relabel can settle a label conflict: recompute the flag for the groups it touched.
    for group in sorted(relabelled_groups):
        members = out.index[out["dup_group"] == group]
        labels = {lab for lab in out.loc[members, "label"] if py_value(lab) is not None}
        for i in members:
            change(int(i), str(out.at[i, "sample_id"]), [], {"label_conflict": len(labels) > 1})
    return conform(out, MANIFEST_COLUMNS), list(changes.values()), problems, {**counts, "ignored_tags": ignored_tags}


# -- stages -----------------------------------------------------------------

@dataclass
class ReviewOptions:
    dataset: str | None = None  # default: dataset_name(ws.root)


@dataclass
class PullOptions:
    dataset: str
    tags: dict[str, list[str]] = field(default_factory=dict)  # sample_id -> tags, read from the App


def build(manifest: pd.DataFrame, options: ReviewOptions, *, ws: Workspace,
          annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: create or refresh the review dataset; the manifest is unchanged."""
    from curate.schema import empty_annotations

    name = options.dataset or dataset_name(ws.root)
    ann = annotations if annotations is not None else empty_annotations()
    summary = sync_dataset(ws, manifest, ann, name)
    return StageResult(manifest, None, summary=summary, record={"dataset": name})


def pull(manifest: pd.DataFrame, options: PullOptions, *, ws: Workspace,
         annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: apply the tags in ``options.tags`` to the manifest (see :func:`apply_decisions`)."""
    out, changes, problems, counts = apply_decisions(manifest, options.tags)
    summary = {"dataset": options.dataset, "changed": len(changes), **counts}
    if problems:
        summary["warnings"] = problems
    record = {"dataset": options.dataset, "changes": changes, "problems": problems}
    return StageResult(out, None, summary=summary, record=record)


def review(ws: Workspace, options: ReviewOptions | None = None) -> StageResult:
    """Create or refresh the workspace's FiftyOne dataset (recorded in runs/ as ``review``).

        >>> # res = review(Workspace.open("ws")); res.summary["dataset"]  # needs a running mongod
    """
    options = options or ReviewOptions()
    return ws.run_stage("review", build, options)


def pull_review(ws: Workspace, options: ReviewOptions | None = None) -> StageResult:
    """Read the App's tags, apply them (recorded in runs/ as ``review-pull``), then refresh the dataset.

        >>> # res = pull_review(Workspace.open("ws")); res.summary["changed"]  # needs a running mongod
    """
    options = options or ReviewOptions()
    name = options.dataset or dataset_name(ws.root)
    tags = read_tags(ws, name)
    result = ws.run_stage("review-pull", pull, PullOptions(name, tags), record_options={"dataset": name})
    # Refreshed even when this pull changed nothing: a pull killed after its commit left the App showing
    # the old decisions, and only the re-run can bring them up (issue 13). The refresh rewrites only the
    # samples whose record changed.
    with ws.lock():
        sync_dataset(ws, *ws.read_tables(), name)
    return result


