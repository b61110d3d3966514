"""``curate label WS push|pull|serve``: label and draw boxes in Label Studio, and bring the work back.

``push`` makes (or reuses) one Label Studio project for the workspace, with a
labelling config built from the workspace's classes (a single choice of image
class, and rectangles for boxes), and imports the chosen rows as tasks. The
images are served from where they are (Label Studio's local-file serving,
through a local storage connection per source folder); nothing is copied. Each
row's current label and boxes go with its task as a *prediction*, so a person
corrects rather than starts from nothing. Pushing again imports only rows the
project does not have (tasks carry their ``sample_id``).

``pull`` reads every task of the project in Label Studio's own JSON (all of
them: the default export leaves out tasks nobody touched) and, for each task a
person submitted, replaces the row's label and boxes as a whole with the latest
submitted annotation. Every change (old and new values, who labelled, when) is
recorded in ``runs/``; pulling twice changes nothing.

Boxes travel in the frame of the row's displayed (EXIF-rotated) image, in
Label Studio's percent units (:mod:`curate.labelstudio`).

    >>> import pandas as pd
    >>> m = pd.DataFrame({"sample_id": ["a", "b"], "label": ["cat", None], "status": ["kept", "kept"],
    ...                   "reason": [None, None], "path": ["/x/a.jpg", "/x/b.jpg"], "format": ["JPEG", "PNG"],
    ...                   "width": [10, 10], "height": [10, 10]})
    >>> list(select_rows(m, pd.DataFrame({"sample_id": []}), "unlabelled")["sample_id"])
    ['b']
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import OptionError
from curate.labelstudio import (
    ENV_TOKEN,
    PREDICTION_VERSION,
    Client,
    LabelStudioError,
    LocalServer,
    find_binary,
    label_config,
    local_file_url,
    login,
    parse_result,
    prediction_result,
    sigterm_as_interrupt,
)
from curate.schema import ANNOTATION_COLUMNS, MANIFEST_COLUMNS, conform
from curate.workspace import StageResult, Workspace, atomic_write_bytes

HOME = "labelstudio"  # WS/labelstudio/: state.json, and the data of the server curate starts
STATE_FILE = "state.json"
LOCAL_KEY = "local"  # the state key of the server curate starts itself
ORIGIN = "labelstudio"  # label_origin of pulled labels, origin of pulled boxes
IMPORT_CHUNK = 500
BOX_RTOL = 1e-6  # boxes equal within this (relative to the image size) are the same box

# Formats a browser shows in an <img> as they are (Label Studio shows images in the browser).
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "ICO", "AVIF"})

VIEWS: dict[str, str] = {
    "all": "every kept row",
    "unlabelled": "kept rows without a label",
    "no_boxes": "kept rows without a box",
    "no_face": "rows dropped because no face was found (draw the face the detector missed)",
    "label_issues": "kept rows ranked by label_issue_score (`curate labels WS --find-issues`), most likely first",
    "label_conflicts": "duplicate-group members whose labels disagree",
}


# -- choosing rows, classes, folders ----------------------------------------

def select_rows(manifest: pd.DataFrame, annotations: pd.DataFrame, view: str, limit: int | None = None
                ) -> pd.DataFrame:
    """The rows of ``view`` (see :data:`VIEWS`), first ``limit`` of them; by sample_id unless ranked."""
    kept = manifest["status"] == "kept"
    if view == "all":
        rows = manifest[kept]
    elif view == "unlabelled":
        rows = manifest[kept & manifest["label"].isna()]
    elif view == "no_boxes":
        rows = manifest[kept & ~manifest["sample_id"].isin(set(annotations["sample_id"]))]
    elif view == "no_face":
        rows = manifest[manifest["reason"] == "no_face"]
    elif view == "label_conflicts":
        rows = manifest[manifest.get("label_conflict", pd.Series(False, index=manifest.index)).fillna(False)
                        .astype(bool)]
    elif view == "label_issues":
        if "label_issue_score" not in manifest.columns:
            raise OptionError("", field="--view label_issues", expected="a label_issue_score column",
                              found="none", hint="run `curate labels WS --find-issues` first")
        rows = manifest[kept & manifest["label_issue_score"].notna()]
        rows = rows.sort_values(["label_issue_score", "sample_id"], ascending=[False, True], kind="stable")
    else:
        raise OptionError("", field="--view", expected=f"one of {', '.join(VIEWS)}", found=view)
    if view != "label_issues":
        rows = rows.sort_values("sample_id", kind="stable")
    return rows.head(limit) if limit is not None else rows


def showable(row: Any) -> str | None:
    """Why a row cannot be shown in Label Studio, or None."""
    if pd.isna(row["width"]) or pd.isna(row["height"]):
        return "never decoded"
    if str(row["format"]) not in BROWSER_FORMATS:
        return f"{row['format']} cannot be shown in a browser"
    if not os.path.isfile(str(row["path"])):
        return "file missing"
    return None


def storage_folders(paths: list[str], document_root: str) -> list[str]:
    """Few folders that hold every path: one per common parent, never the document root itself.

        >>> storage_folders(["/d/s/a/1.jpg", "/d/s/b/2.jpg", "/e/3.jpg"], "/")
        ['/d/s', '/e']
    """
    root = os.path.abspath(document_root)
    by_top: dict[str, list[str]] = {}
    for p in paths:
        parent = os.path.dirname(os.path.abspath(p))
        rel = os.path.relpath(parent, root)
        top = rel.split(os.sep)[0]
        by_top.setdefault(top, []).append(parent)
    out = set()
    for parents in by_top.values():
        common = os.path.commonpath(parents)
        out.update([common] if common != root else parents)
    return sorted(out)


def _covered(folder: str, storages: list[str]) -> bool:
    return any(folder == s or folder.startswith(s.rstrip("/") + "/") for s in storages)


# -- the workspace's Label Studio state ---------------------------------------

def state_path(ws: Workspace) -> Path:
    return ws.root / HOME / STATE_FILE


def read_state(ws: Workspace) -> dict[str, Any]:
    """``{server key: {"project_id", "url", "classes", "box_classes", "tasks": {sample_id: task id}}}``."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(state_path(ws).read_text())
        if isinstance(data, dict):
            return data
    return {}


def write_state(ws: Workspace, state: dict[str, Any]) -> None:
    atomic_write_bytes(state_path(ws), (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


# -- push -------------------------------------------------------------------

@dataclass
class PushOptions:
    view: str = "all"
    limit: int | None = None
    classes: list[str] = field(default_factory=list)  # image classes to offer besides the workspace's
    box_classes: list[str] = field(default_factory=list)  # box classes to offer besides the workspace's
    title: str | None = None
    document_root: str = "/"
    client: Client | None = None  # set by :func:`connect`
    server_key: str = LOCAL_KEY


def class_lists(manifest: pd.DataFrame, annotations: pd.DataFrame, options: PushOptions,
                before: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(image classes, box classes): the workspace's, the ones asked for, and those pushed before.

    A classification workspace without any box gets its image classes as box
    classes, so boxes can be drawn for images that have none.
    """
    kept = manifest[manifest["status"] == "kept"]
    classes = set(kept["label"].dropna().astype(str)) | set(options.classes) | set(before.get("classes", []))
    box_ids = set(manifest["sample_id"])
    boxes = set(annotations.loc[annotations["sample_id"].isin(box_ids), "label"].dropna().astype(str))
    boxes |= set(options.box_classes) | set(before.get("box_classes", []))
    if not boxes:
        boxes = set(classes)
    return sorted(classes), sorted(boxes)


def _boxes_by_row(annotations: pd.DataFrame) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    out: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    for r in annotations.itertuples(index=False):
        out.setdefault(str(r.sample_id), []).append(
            (str(r.label), (float(r.x1), float(r.y1), float(r.x2), float(r.y2))))
    return out


def task_for(row: Any, boxes: list[tuple[str, tuple[float, float, float, float]]], document_root: str, *,
             classes: bool, box_classes: bool) -> dict[str, Any]:
    """One Label Studio task for a manifest row: the image by URL, the row's ids, its label and boxes as a prediction."""
    label = None if pd.isna(row["label"]) else str(row["label"])
    wh = (int(row["width"]), int(row["height"]))
    task: dict[str, Any] = {"data": {"image": local_file_url(str(row["path"]), document_root),
                                     "sample_id": str(row["sample_id"]), "source": str(row["source"]),
                                     "rel_path": str(row["rel_path"]), "curate_label": label,
                                     "width": wh[0], "height": wh[1]}}
    result = prediction_result(label, boxes, wh, classes=classes, box_classes=box_classes)
    if result:
        task["predictions"] = [{"model_version": PREDICTION_VERSION, "result": result}]
    return task


def push(manifest: pd.DataFrame, options: PushOptions, *, ws: Workspace,
         annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: make or reuse the project, import the rows it lacks; the tables are unchanged."""
    from curate.schema import empty_annotations

    client = options.client
    if client is None:
        raise LabelStudioError("", field="server", expected="a connected Label Studio client", found="none")
    ann = annotations if annotations is not None else empty_annotations()
    state = read_state(ws)
    before = state.get(options.server_key, {})
    rows = select_rows(manifest, ann, options.view, None)
    skipped: dict[str, int] = {}
    chosen = []
    for _, row in rows.iterrows():
        why = showable(row)
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        chosen.append(row)
        if options.limit is not None and len(chosen) >= options.limit:
            break
    classes, box_classes = class_lists(manifest, ann, options, before)
    config = label_config(classes, box_classes)

    project = client.project(int(before["project_id"])) if before.get("project_id") else None
    if project is None:
        title = options.title or f"curate {ws.name}"
        project = client.create_project(title, config, description=f"curate workspace {ws.root}")
        before = {"tasks": {}}
    elif project.get("label_config") != config:
        client.update_config(int(project["id"]), config)
    pid = int(project["id"])

    storages = [str(s.get("path", "")).rstrip("/") for s in client.local_storages(pid)]
    added_storages = []
    for folder in storage_folders([str(r["path"]) for r in chosen], options.document_root):
        if not _covered(folder, storages):
            client.add_local_storage(pid, folder)
            storages.append(folder)
            added_storages.append(folder)

    existing = client.task_ids(pid)
    boxes = _boxes_by_row(ann)
    new = [task_for(r, boxes.get(str(r["sample_id"]), []), options.document_root, classes=bool(classes),
                    box_classes=bool(box_classes))
           for r in chosen if str(r["sample_id"]) not in existing]
    for i in range(0, len(new), IMPORT_CHUNK):
        client.import_tasks(pid, new[i:i + IMPORT_CHUNK])
    tasks = client.task_ids(pid) if new else existing
    state[options.server_key] = {"project_id": pid, "url": client.url, "classes": classes,
                                 "box_classes": box_classes, "tasks": tasks}
    write_state(ws, state)

    summary: dict[str, Any] = {
        "project": pid, "url": f"{client.url}/projects/{pid}/data", "view": options.view,
        "selected": len(chosen), "imported": len(new), "already_in_project": len(chosen) - len(new),
        "tasks_in_project": len(tasks), "classes": len(classes), "box_classes": len(box_classes)}
    warnings = [f"{n} rows not pushed: {why}" for why, n in sorted(skipped.items())]
    if warnings:
        summary["warnings"] = warnings
    record = {"project": pid, "server": client.url, "view": options.view, "classes": classes,
              "box_classes": box_classes, "storages_added": added_storages,
              "imported": [t["data"]["sample_id"] for t in new], "skipped": skipped}
    return StageResult(manifest, None, summary=summary, record=record, write=False, log_run=True)


# -- pull -------------------------------------------------------------------

@dataclass
class PullOptions:
    client: Client | None = None
    server_key: str = LOCAL_KEY


def _same_boxes(a: Sequence[tuple[str, Sequence[float]]], b: Sequence[tuple[str, Sequence[float]]],
                wh: tuple[int, int]) -> bool:
    """Whether two box lists hold the same boxes (any order), within :data:`BOX_RTOL` of the image size."""
    if len(a) != len(b):
        return False
    tol = BOX_RTOL * max(wh)
    left = list(b)
    for label, box in a:
        for j, (label2, box2) in enumerate(left):
            if label == label2 and all(abs(p - q) <= tol for p, q in zip(box, box2, strict=True)):
                del left[j]
                break
        else:
            return False
    return True


def _annotator(completed_by: Any, users: dict[int, str]) -> Any:
    """Who submitted an annotation: the e-mail where known (exports give an id, or an object with the e-mail)."""
    if isinstance(completed_by, dict):
        return completed_by.get("email") or completed_by.get("id")
    with contextlib.suppress(TypeError, ValueError):
        return users.get(int(completed_by), completed_by)
    return completed_by


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's latest submitted (not skipped) annotation, or None when nobody submitted one."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id", 0))))


def apply_tasks(manifest: pd.DataFrame, annotations: pd.DataFrame, tasks: list[dict[str, Any]],
                users: dict[int, str], *, classes: bool, boxes: bool
                ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]], list[str], dict[str, int]]:
    """Apply every submitted task: (manifest, annotations, changes, problems, counts)."""
    out = manifest.copy()
    if "original_label" not in out.columns:
        out["original_label"] = None
    index = {str(s): i for i, s in zip(out.index, out["sample_id"], strict=True)}
    by_row = _boxes_by_row(annotations)
    changes: list[dict[str, Any]] = []
    problems: list[str] = []
    counts = {"tasks": len(tasks), "submitted": 0, "untouched": 0, "skipped_by_person": 0, "changed": 0,
              "relabelled": 0, "boxes_replaced": 0}
    replaced: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    touched_groups: set[str] = set()
    for task in sorted(tasks, key=lambda t: int(t.get("id", 0))):
        sid = str((task.get("data") or {}).get("sample_id"))
        ann = latest_annotation(task)
        if ann is None:
            if task.get("annotations"):
                counts["skipped_by_person"] += 1
            else:
                counts["untouched"] += 1
            continue
        counts["submitted"] += 1
        if sid not in index:
            problems.append(f"task {task.get('id')}: sample {sid} is no longer in the manifest; skipped")
            continue
        i = index[sid]
        if pd.isna(out.at[i, "width"]) or pd.isna(out.at[i, "height"]):
            problems.append(f"task {task.get('id')}: {out.at[i, 'path']} can no longer be decoded (its size is "
                            "unknown); skipped")
            continue
        wh = (int(out.at[i, "width"]), int(out.at[i, "height"]))
        new_label, new_boxes, probs = parse_result(ann.get("result") or [], wh)
        problems += [f"{sid} (task {task.get('id')}): {p}" for p in probs]
        old_label = None if pd.isna(out.at[i, "label"]) else str(out.at[i, "label"])
        old_boxes = by_row.get(sid, [])
        entry: dict[str, Any] = {"sample_id": sid, "path": out.at[i, "path"], "task": task.get("id"),
                                 "annotation": ann.get("id"),
                                 "labelled_by": _annotator(ann.get("completed_by"), users),
                                 "labelled_at": ann.get("updated_at") or ann.get("created_at"),
                                 "old": {}, "new": {}}
        if classes and new_label is None:
            problems.append(f"{sid} (task {task.get('id')}): no class chosen; the label is left as it was")
        if classes and new_label is not None and new_label != old_label:
            entry["old"]["label"], entry["new"]["label"] = old_label, new_label
            if pd.isna(out.at[i, "original_label"]):
                out.at[i, "original_label"] = old_label
            out.at[i, "label"] = new_label
            out.at[i, "label_origin"] = ORIGIN
            counts["relabelled"] += 1
            group = out.at[i, "dup_group"] if "dup_group" in out.columns else None
            if isinstance(group, str):
                touched_groups.add(group)
        if boxes and not _same_boxes(new_boxes, old_boxes, wh):
            entry["old"]["boxes"] = [[lab, *map(float, b)] for lab, b in old_boxes]
            entry["new"]["boxes"] = [[lab, *map(float, b)] for lab, b in new_boxes]
            replaced[sid] = new_boxes
            counts["boxes_replaced"] += 1
        if entry["new"]:
            changes.append(entry)
    counts["changed"] = len(changes)
    for group in sorted(touched_groups):  # a relabel can settle (or make) a label conflict
        members = out.index[out["dup_group"] == group]
        labels = {str(lab) for lab in out.loc[members, "label"] if not pd.isna(lab)}
        out.loc[members, "label_conflict"] = len(labels) > 1
    ann_out = annotations
    if replaced:
        keep = annotations[~annotations["sample_id"].astype(str).isin(set(replaced))]
        new_rows = [{"sample_id": sid, "label": lab, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "score": None,
                     "origin": ORIGIN, "iscrowd": False}
                    for sid, bs in sorted(replaced.items()) for lab, b in bs]
        parts = [df for df in (keep, pd.DataFrame(new_rows)) if len(df)]
        ann_out = conform(pd.concat(parts, ignore_index=True) if parts else keep, ANNOTATION_COLUMNS)
    return conform(out, MANIFEST_COLUMNS), ann_out, changes, problems, counts


def pull(manifest: pd.DataFrame, options: PullOptions, *, ws: Workspace,
         annotations: pd.DataFrame | None = None) -> StageResult:
    """Stage: read every task of the workspace's project and apply the submitted ones (:func:`apply_tasks`)."""
    from curate.schema import empty_annotations

    client = options.client
    if client is None:
        raise LabelStudioError("", field="server", expected="a connected Label Studio client", found="none")
    project = read_state(ws).get(options.server_key)
    if not project:
        raise OptionError("", file=ws.root, expected="a Label Studio project pushed from this workspace",
                          found="none" + ("" if options.server_key == LOCAL_KEY else f" on {options.server_key}"),
                          hint="run `curate label WS push` first")
    pid = int(project["project_id"])
    if client.project(pid) is None:
        raise LabelStudioError("", file=client.url, field="project", expected=f"project {pid}, pushed from "
                               f"{ws.root}", found="no such project", hint="push again with `curate label WS push`")
    t0 = time.perf_counter()
    tasks = client.export_all(pid)
    try:
        users = client.users()
    except LabelStudioError:  # a token without the right to list users: annotators are recorded by id
        users = {}
    read_s = time.perf_counter() - t0
    ann = annotations if annotations is not None else empty_annotations()
    m, a, changes, problems, counts = apply_tasks(manifest, ann, tasks, users,
                                                  classes=bool(project.get("classes")),
                                                  boxes=bool(project.get("box_classes")))
    summary: dict[str, Any] = {"project": pid, **counts, "read_s": round(read_s, 3)}
    if problems:
        summary["warnings"] = problems
    record = {"project": pid, "server": client.url, "changes": changes, "problems": problems}
    return StageResult(m, a if changes else None, summary=summary, record=record, write=bool(changes),
                       log_run=True)


# -- connecting, and the command ------------------------------------------------

@dataclass
class ServerOptions:
    url: str | None = None  # a running server; None: curate starts one on 127.0.0.1
    token: str | None = None  # for --url: a personal access token or a legacy token ($LABEL_STUDIO_API_KEY)
    binary: str | None = None  # --label-studio PATH
    start_timeout_s: float = 180.0


@contextlib.contextmanager
def connect(ws: Workspace, server: ServerOptions, echo: Callable[[str], None] = print
            ) -> Iterator[tuple[Client, str, LocalServer | None]]:
    """A client for the server asked for, its state key, and the server curate started (stopped at the end)."""
    if server.url:
        token = server.token or os.environ.get(ENV_TOKEN)
        if not token:
            raise OptionError("", field="--token", expected=f"an API token for {server.url}", found="none",
                              hint=f"pass --token or set {ENV_TOKEN} to a personal access token "
                                   "(Label Studio: Account & Settings > Personal Access Token)")
        client = Client(server.url, token)
        client.whoami()  # a wrong URL or token fails here, in one line
        yield client, server.url.rstrip("/"), None
        return
    running = LocalServer.running(ws.root / HOME)
    if running is not None:  # `curate label WS serve` runs it: one server on one database
        creds = running["credentials"]
        url = str(running["url"])
        echo(f"Using the Label Studio that runs for this workspace at {url}")
        client = Client(url, creds.get("token")) if creds.get("token") else Client(
            url, session=login(url, creds["email"], creds["password"]))
        yield client, LOCAL_KEY, None
        return
    local = LocalServer(ws.root / HOME / "data", binary=find_binary(server.binary),
                        start_timeout_s=server.start_timeout_s)
    echo(f"Starting Label Studio on {local.url} (data in {local.data_dir}) ...")
    with sigterm_as_interrupt():
        try:
            client = local.start()
            echo(f"Label Studio started in {local.started_s:.1f} s")
            yield client, LOCAL_KEY, local
        finally:
            local.stop()


def wait_for_person(local: LocalServer | None, project_url: str | None, echo: Callable[[str], None] = print) -> None:
    """Keep the server running for a person until Ctrl-C or SIGTERM; print where and how to log in."""
    if local is None:
        return
    echo(f"Label Studio at {project_url or local.url} ; log in as {local.credentials['email']} "
         f"with password {local.credentials['password']} (also in {local.credentials_path})")
    echo("Press Ctrl-C to stop it; then run `curate label WS pull`.")
    with contextlib.suppress(KeyboardInterrupt):
        while local.proc is not None and local.proc.poll() is None:
            time.sleep(0.5)


def label(ws: Workspace, action: str, server: ServerOptions, push_options: PushOptions | None = None, *,
          keep_running: bool = False, echo: Callable[[str], None] = print,
          report: Callable[[StageResult], None] | None = None) -> StageResult | None:
    """Run ``push``, ``pull`` or ``serve`` against the server asked for (started and stopped here if curate's)."""
    if action not in ("push", "pull", "serve"):
        raise OptionError("", field="ACTION", expected="push, pull or serve", found=action)
    if action == "push":  # a view that cannot be made fails now, not after a server start of minutes
        manifest, annotations = ws.read_tables()
        select_rows(manifest, annotations, (push_options or PushOptions()).view, 1)
    with connect(ws, server, echo) as (client, key, local):
        result = None
        project_url = None
        if action == "push":
            opts = push_options or PushOptions()
            opts.client, opts.server_key = client, key
            if local is not None:
                opts.document_root = "/"  # curate's own server serves from / (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)
            record = {k: v for k, v in vars(opts).items() if k != "client"}
            result = ws.run_stage("label-push", push, opts, record_options=record)
            project_url = result.summary["url"]
        elif action == "pull":
            result = ws.run_stage("label-pull", pull, PullOptions(client, key), record_options={"server": key})
        if result is not None and report is not None:
            report(result)  # before a --keep-running wait
        if action == "serve":
            pid = read_state(ws).get(key, {}).get("project_id")
            project_url = f"{client.url}/projects/{pid}/data" if pid else client.url
        if action == "serve" or keep_running:
            if local is None:
                echo(f"Label Studio at {project_url or client.url} (not started by curate; nothing to keep running)")
            else:
                wait_for_person(local, project_url, echo)
        return result
