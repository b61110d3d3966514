"""Benchmark: the `curate label` round trip against a real Label Studio.

Ingests a folder of photos into a temporary workspace, then times, against one
server: its start (when curate starts it), `push` of every kept row (project,
storage connections, import, task map), a "person" submitting every task's
prediction through the API, `pull` of all of them, and a second `pull` (no
change). The import alone is also timed as Label Studio's own floor: the same
task JSON posted to `/api/projects/ID/import` in one request, into a second
project, without curate around it.

    python benchmarks/label_bench.py ../shared/data/photos               # curate starts the server
    python benchmarks/label_bench.py ../shared/data/photos --url URL --token PAT

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from curate.cli import cli
from curate.labelstudio import Client, LocalServer, label_config
from curate.stages.label import PushOptions, ServerOptions, label, read_state, select_rows, task_for
from curate.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("--url")
    ap.add_argument("--token")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="label-bench-"))
    res = CliRunner().invoke(cli, ["ingest", str(args.source), "--into", str(tmp / "ws")])
    assert res.exit_code == 0, res.output
    ws = Workspace.open(tmp / "ws")
    figures: dict[str, object] = {}
    local = None
    if args.url:
        url, token = args.url, args.token
    else:
        local = LocalServer(tmp / "ls" / "data", start_timeout_s=900)
        local.start()
        figures["server_start_s"] = round(local.started_s or 0, 1)
        url, token = local.url, local.credentials["token"]
    try:
        server = ServerOptions(url=url, token=token)
        quiet = lambda m: None  # noqa: E731
        t0 = time.perf_counter()
        r = label(ws, "push", server, PushOptions(), echo=quiet)
        figures["push_s"] = round(time.perf_counter() - t0, 2)
        figures["pushed"] = r.summary["imported"] if r else 0
        t0 = time.perf_counter()
        r = label(ws, "push", server, PushOptions(), echo=quiet)
        figures["repush_s"] = round(time.perf_counter() - t0, 2)
        client = Client(url, token)
        state = read_state(ws)[url]
        t0 = time.perf_counter()
        for tid in state["tasks"].values():
            task = client.request("GET", f"/api/tasks/{tid}")
            result = task["predictions"][0]["result"] if task.get("predictions") else []
            client.request("POST", f"/api/tasks/{tid}/annotations", json={"result": result})
        figures["annotate_all_via_api_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        r = label(ws, "pull", server, echo=quiet)
        figures["pull_s"] = round(time.perf_counter() - t0, 2)
        figures["pull_submitted"] = r.summary["submitted"] if r else 0
        figures["pull_changed"] = r.summary["changed"] if r else 0
        t0 = time.perf_counter()
        label(ws, "pull", server, echo=quiet)
        figures["second_pull_s"] = round(time.perf_counter() - t0, 2)
        # Label Studio's own import of the same tasks, one request, no curate around it
        m, a = ws.read_tables()
        rows = select_rows(m, a, "all")
        tasks = [task_for(row, [], "/", classes=True, box_classes=False) for _, row in rows.iterrows()]
        classes = sorted(set(m["label"].dropna()))
        p = client.create_project("bench floor", label_config(classes or ["x"], []))
        t0 = time.perf_counter()
        client.import_tasks(int(p["id"]), tasks)
        figures["ls_import_only_s"] = round(time.perf_counter() - t0, 2)
        figures["rows"] = len(rows)
    finally:
        if local is not None:
            local.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
