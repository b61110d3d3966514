"""``curate label``: the round trip through a real Label Studio server.

One server for the module (its start is slow: about 30 s on a quiet machine,
minutes on a loaded one): ``curate label WS serve`` run in a subprocess, which
starts Label Studio on a free loopback port with its data in the workspace,
and is stopped by SIGTERM at the end (the server must go with it). The tests
reach it as a user's running server would be reached (``--url`` and the
personal access token curate obtained) and post annotations through its API
as the browser does when a person submits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.labelstudio import (
    Client,
    LabelStudioError,
    LocalServer,
    find_binary,
    free_port,
    ls_value_to_xyxy_px,
)
from curate.stages.label import PushOptions, ServerOptions, label, read_state
from curate.workspace import Workspace

try:
    BINARY: Path | None = find_binary()
except LabelStudioError:
    BINARY = None
needs_ls = pytest.mark.skipif(BINARY is None, reason="needs Label Studio (scripts/setup.sh installs it in "
                                                      ".venv-labelstudio; or set CURATE_LABEL_STUDIO)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory, skimage_dir):
    """`curate label WS serve`, run as a user runs it (a subprocess), stopped by SIGTERM at the end."""
    if BINARY is None:
        pytest.skip("needs Label Studio (scripts/setup.sh installs it in .venv-labelstudio)")
    home = tmp_path_factory.mktemp("ls")
    ws = _ws(home, skimage_dir)
    err = home / "serve.err"
    t0 = time.perf_counter()
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", "from curate.cli import main; main()", "label", str(ws.root),
                                 "serve", "--start-timeout", "900"], stdout=subprocess.DEVNULL, stderr=f,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    url = None
    while url is None and proc.poll() is None and time.perf_counter() - t0 < 950:
        found = re.search(r"Label Studio at (http://127\.0\.0\.1:\d+)", err.read_text())
        url = found.group(1) if found else None
        time.sleep(0.5)
    assert url, err.read_text()
    print(f"\nLabel Studio started in {time.perf_counter() - t0:.1f} s ({err.read_text().splitlines()[1]})")
    creds = json.loads((ws.root / "labelstudio" / "credentials.json").read_text())
    assert oct((ws.root / "labelstudio" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    assert creds["token"].count(".") == 2  # a personal access token (a JWT) was obtained
    assert f"log in as curate@localhost with password {creds['password']}" in err.read_text()
    yield SimpleNamespace(url=url, credentials=creds, client=Client(url, creds["token"]), ws=ws)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, err.read_text()
    assert not (ws.root / "labelstudio" / "running.json").exists()
    with pytest.raises(OSError):  # the server is gone with it
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()
    data_dir = str(ws.root / "labelstudio" / "data")
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if data_dir.encode() in _read(p)]
    assert left == []


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def _ws(tmp_path: Path, skimage_dir: Path) -> Workspace:
    """A workspace of real photos in two classes, one of them stored turned (EXIF orientation 6), two boxes."""
    src = tmp_path / "src"
    (src / "cat").mkdir(parents=True)
    (src / "coffee").mkdir()
    shutil.copy2(skimage_dir / "chelsea.png", src / "cat" / "chelsea.png")
    shutil.copy2(skimage_dir / "coffee.png", src / "coffee" / "coffee.png")
    img = Image.open(skimage_dir / "astronaut.png").convert("RGB").resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: displayed 200 x 300
    img.save(src / "cat" / "turned.jpg", exif=exif, quality=90)
    res = CliRunner().invoke(cli, ["ingest", str(src), "--into", str(tmp_path / "ws")])
    assert res.exit_code == 0, res.output
    ws = Workspace.open(tmp_path / "ws")
    m = ws.read_manifest()
    by_name = dict(zip(m["rel_path"], m["sample_id"], strict=True))
    boxes = pd.DataFrame({"sample_id": [by_name["cat/chelsea.png"], by_name["cat/turned.jpg"]],
                          "label": ["cat", "cat"], "x1": [100.25, 20.0], "y1": [50.5, 40.0],
                          "x2": [300.75, 150.0], "y2": [250.125, 280.0], "origin": ["test", "test"]})
    with ws.lock():
        ws.commit(m, boxes)
    return ws


def _server_opts(server: LocalServer) -> ServerOptions:
    return ServerOptions(url=server.url, token=server.credentials["token"])


def _task(server: LocalServer, task_id: int) -> dict:
    """One task as the labelling page reads it, predictions included (the JSON export lists their ids only)."""
    return server.client.request("GET", f"/api/tasks/{task_id}")  # type: ignore[no-any-return]


def _push(ws: Workspace, server: LocalServer, **kw):
    return label(ws, "push", _server_opts(server), PushOptions(**kw), echo=lambda m: None)


@needs_ls
def test_push_makes_a_project_with_predictions_and_is_idempotent(server, tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    res = _push(ws, server)
    assert res.summary["imported"] == 3 and res.summary["tasks_in_project"] == 3
    state = read_state(ws)[server.url]
    m = ws.read_manifest()
    assert set(state["tasks"]) == set(m["sample_id"])
    assert state["classes"] == ["cat", "coffee"] and state["box_classes"] == ["cat"]
    client = server.client
    project = client.project(state["project_id"])
    assert '<Choice value="coffee"/>' in project["label_config"] and "<RectangleLabels" in project["label_config"]
    tasks = {t["data"]["sample_id"]: t for t in client.export_all(state["project_id"])}
    turned = m[m["rel_path"] == "cat/turned.jpg"].iloc[0]
    assert (int(turned["width"]), int(turned["height"])) == (200, 300)  # the displayed frame
    result = _task(server, tasks[turned["sample_id"]]["id"])["predictions"][0]["result"]
    assert result[0]["value"]["choices"] == ["cat"]
    box = result[1]
    assert (box["original_width"], box["original_height"]) == (200, 300)
    assert box["value"]["x"] == pytest.approx(10.0) and box["value"]["height"] == pytest.approx(80.0)
    # the image is served from where it is, without a copy
    image = tasks[turned["sample_id"]]["data"]["image"]
    assert image.startswith("/data/local-files/?d=") and image.endswith("src/cat/turned.jpg")
    got = client._send("GET", image, headers=client._headers())
    assert got.status_code == 200 and got.content == Path(turned["path"]).read_bytes()
    assert not any(p.suffix == ".jpg" for p in (ws.root / "labelstudio").rglob("*"))
    # pushed again: nothing new, one project
    again = _push(ws, server)
    assert again.summary["imported"] == 0 and again.summary["already_in_project"] == 3
    assert again.summary["project"] == res.summary["project"]
    assert len(client.task_ids(state["project_id"])) == 3
    runs = [r for r in ws.runs() if r["command"] == "label-push"]
    assert len(runs) == 2 and len(runs[0]["imported"]) == 3 and runs[1]["imported"] == []


@needs_ls
def test_pull_applies_a_persons_correction_and_is_idempotent(server, tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    _push(ws, server, title="pull test")
    state = read_state(ws)[server.url]
    m = ws.read_manifest()
    sid = dict(zip(m["rel_path"], m["sample_id"], strict=True))
    client = server.client
    tasks = {t["data"]["sample_id"]: t for t in client.export_all(state["project_id"])}

    # A person: on chelsea (451 x 300) changes the class to coffee, moves the box and adds one;
    # on turned.jpg submits the prediction as it came; coffee.png is left untouched.
    chelsea = _task(server, tasks[sid["cat/chelsea.png"]]["id"])
    boxes = [r for r in chelsea["predictions"][0]["result"] if r["type"] == "rectanglelabels"]
    moved = {**boxes[0], "value": {**boxes[0]["value"], "x": 30.0, "y": 20.0}}
    added = {**boxes[0], "id": "new1", "value": {"x": 0.0, "y": 50.0, "width": 25.0, "height": 50.0,
                                                 "rotation": 0, "rectanglelabels": ["cat"]}}
    choice = {"id": "c", "from_name": "label", "to_name": "image", "type": "choices",
              "value": {"choices": ["coffee"]}}
    client.request("POST", f"/api/tasks/{chelsea['id']}/annotations",
                   json={"result": [choice, moved, added], "was_cancelled": False, "lead_time": 12.5})
    turned = _task(server, tasks[sid["cat/turned.jpg"]]["id"])
    client.request("POST", f"/api/tasks/{turned['id']}/annotations",
                   json={"result": turned["predictions"][0]["result"], "was_cancelled": False})

    res = label(ws, "pull", _server_opts(server), echo=lambda m: None)
    s = res.summary
    assert (s["tasks"], s["submitted"], s["untouched"], s["changed"], s["relabelled"], s["boxes_replaced"]) == \
        (3, 2, 1, 1, 1, 1)
    m2 = ws.read_manifest().set_index("sample_id")
    row = m2.loc[sid["cat/chelsea.png"]]
    assert (row["label"], row["label_origin"], row["original_label"]) == ("coffee", "labelstudio", "cat")
    assert m2.loc[sid["cat/turned.jpg"], "label"] == "cat"  # submitted unchanged
    ann = ws.read_annotations()
    mine = ann[ann["sample_id"] == sid["cat/chelsea.png"]].sort_values("x1")
    w, h = 451, 300
    assert (int(row["width"]), int(row["height"])) == (w, h)
    expected = sorted([ls_value_to_xyxy_px(moved["value"], (w, h)), (0.0, 150.0, 112.75, 300.0)])
    assert mine[["x1", "y1", "x2", "y2"]].to_numpy() == pytest.approx(np.array(expected), rel=1e-9)
    assert set(mine["origin"]) == {"labelstudio"} and mine["score"].isna().all()
    moved_box = mine.iloc[1]
    assert moved_box["x2"] - moved_box["x1"] == pytest.approx(200.5, rel=1e-9)  # moved, not resized
    # the turned photo's box came back identical, in its displayed frame
    t = ann[ann["sample_id"] == sid["cat/turned.jpg"]]
    assert t[["x1", "y1", "x2", "y2"]].to_numpy().tolist() == [[20.0, 40.0, 150.0, 280.0]]
    assert t["origin"].tolist() == ["test"]  # not a change: kept as it was
    rec = [r for r in ws.runs() if r["command"] == "label-pull"][-1]
    (change,) = rec["changes"]
    assert change["sample_id"] == sid["cat/chelsea.png"] and change["labelled_by"] == "curate@localhost"
    assert change["old"]["label"] == "cat" and change["new"]["label"] == "coffee"
    assert change["old"]["boxes"] == [["cat", 100.25, 50.5, 300.75, 250.125]] and len(change["new"]["boxes"]) == 2
    assert change["labelled_at"].startswith(time.strftime("%Y-"))

    version = ws.read_meta()["tables"]
    again = label(ws, "pull", _server_opts(server), echo=lambda m: None)
    assert again.summary["changed"] == 0
    assert ws.read_meta()["tables"] == version  # nothing written
    assert ws.read_annotations().equals(ann)


@needs_ls
def test_round_trip_without_edits_gives_the_same_boxes(server, tmp_path, skimage_dir):
    """push -> a person submits every prediction as it is -> pull: identical labels and boxes (1e-6 relative)."""
    ws = _ws(tmp_path, skimage_dir)
    _push(ws, server, title="round trip")
    before = ws.read_annotations()
    state = read_state(ws)[server.url]
    client = server.client
    for t in client.export_all(state["project_id"]):
        full = _task(server, t["id"])
        result = full["predictions"][0]["result"] if full.get("predictions") else []
        client.request("POST", f"/api/tasks/{t['id']}/annotations", json={"result": result})
    res = label(ws, "pull", _server_opts(server), echo=lambda m: None)
    assert res.summary["submitted"] == 3 and res.summary["changed"] == 0
    after = ws.read_annotations()
    assert after[["x1", "y1", "x2", "y2"]].to_numpy() == pytest.approx(before[["x1", "y1", "x2", "y2"]].to_numpy(),
                                                                       rel=1e-6)


@needs_ls
def test_push_a_view_with_a_limit(server, tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    res = _push(ws, server, view="no_boxes", title="no boxes")
    m = ws.read_manifest()
    assert res.summary["imported"] == 1
    assert list(read_state(ws)[server.url]["tasks"]) == m.loc[m["rel_path"] == "coffee/coffee.png", "sample_id"].tolist()
    first_two = set(sorted(m.loc[m["status"] == "kept", "sample_id"])[:2])
    res = _push(ws, server, view="all", limit=2)  # the same project grows, in sample_id order
    assert res.summary["selected"] == 2 and res.summary["project"] == read_state(ws)[server.url]["project_id"]
    assert set(read_state(ws)[server.url]["tasks"]) == first_two | set(read_state(ws)[server.url]["tasks"])
    assert res.summary["tasks_in_project"] == len(first_two | {m.loc[m["rel_path"] == "coffee/coffee.png",
                                                                     "sample_id"].iloc[0]})


@needs_ls
def test_push_and_pull_use_the_server_that_serve_runs(server):
    """While `curate label WS serve` runs, push and pull of that workspace use it: one server on one database."""
    said: list[str] = []
    t0 = time.perf_counter()
    res = label(server.ws, "push", ServerOptions(), PushOptions(title="served"), echo=said.append)
    assert said == [f"Using the Label Studio that runs for this workspace at {server.url}"]
    assert res.summary["imported"] == 3 and read_state(server.ws)["local"]["url"] == server.url
    res = label(server.ws, "pull", ServerOptions(), echo=said.append)
    assert res.summary["untouched"] == 3 and res.summary["changed"] == 0
    assert time.perf_counter() - t0 < 60  # no second server was started
    data_dir = str(server.ws.root / "labelstudio" / "data").encode()
    assert len([p for p in Path("/proc").glob("[0-9]*/cmdline") if b"label-studio" in _read(p)
                and data_dir in _read(p)]) == 1


def test_apply_tasks_rules(tmp_path, skimage_dir):
    """The pull rules on Label Studio's export JSON (its shape as 1.23.2 writes it), without a server."""
    from curate.stages.label import apply_tasks

    ws = _ws(tmp_path, skimage_dir)
    m, ann = ws.read_tables()
    sid = dict(zip(m["rel_path"], m["sample_id"], strict=True))
    m.loc[m["rel_path"] != "coffee/coffee.png", "dup_group"] = sid["cat/chelsea.png"]  # one duplicate group
    choice = lambda c: {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [c]}}  # noqa: E731
    tasks = [
        # two submissions: the later one counts; the person is named by e-mail
        {"id": 1, "data": {"sample_id": sid["cat/chelsea.png"]}, "annotations": [
            {"id": 10, "completed_by": 1, "updated_at": "2026-01-02T00:00:00Z", "result": [choice("coffee")]},
            {"id": 11, "completed_by": 2, "updated_at": "2026-01-01T00:00:00Z", "result": [choice("cat")]}]},
        # skipped by the person: not a submission
        {"id": 2, "data": {"sample_id": sid["cat/turned.jpg"]},
         "annotations": [{"id": 12, "completed_by": 1, "was_cancelled": True, "result": [choice("coffee")]}]},
        # submitted without a class: label kept, warned; its boxes (none) replace the row's one box
        {"id": 3, "data": {"sample_id": sid["coffee/coffee.png"]}, "annotations": [{"id": 13, "result": []}]},
        # a row that is gone
        {"id": 4, "data": {"sample_id": "gone"}, "annotations": [{"id": 14, "result": [choice("cat")]}]},
        {"id": 5, "data": {"sample_id": "untouched"}, "annotations": []},
    ]
    out, a, changes, problems, counts = apply_tasks(m, ann, tasks, {1: "ann@example.org"}, classes=True, boxes=True)
    assert counts == {"tasks": 5, "submitted": 3, "untouched": 1, "skipped_by_person": 1, "changed": 1,
                      "relabelled": 1, "boxes_replaced": 1}
    row = out.set_index("sample_id").loc[sid["cat/chelsea.png"]]
    assert (row["label"], row["original_label"], row["label_origin"]) == ("coffee", "cat", "labelstudio")
    assert changes[0]["labelled_by"] == "ann@example.org" and changes[0]["annotation"] == 10
    assert out["label_conflict"].sum() == 2  # the group now disagrees: cat (turned) vs coffee (chelsea)
    assert out.set_index("sample_id").loc[sid["coffee/coffee.png"], "label"] == "coffee"
    assert problems == [f"{sid['coffee/coffee.png']} (task 3): no class chosen; the label is left as it was",
                        "task 4: sample gone is no longer in the manifest; skipped"]
    assert sid["cat/chelsea.png"] not in set(a["sample_id"])  # its box was deleted by the person
    assert set(a["sample_id"]) == {sid["cat/turned.jpg"]}


def test_a_view_that_cannot_be_made_fails_before_any_server(tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    res = CliRunner().invoke(cli, ["label", str(ws.root), "push", "--view", "label_issues",
                                   "--url", "http://127.0.0.1:9", "--token", "x"])
    assert res.exit_code == 1
    assert res.output == ("Error: --view label_issues: expected a label_issue_score column, found none "
                          "(run `curate labels WS --find-issues` first)\n")


def test_rows_a_browser_cannot_show_are_left_out(tmp_path, skimage_dir):
    from curate.stages.label import showable

    src = tmp_path / "src" / "cat"
    src.mkdir(parents=True)
    Image.open(skimage_dir / "chelsea.png").save(src / "chelsea.tif")
    shutil.copy2(skimage_dir / "coffee.png", src / "coffee.png")
    shutil.copy2(skimage_dir / "rocket.jpg", src / "rocket.jpg")
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "src"), "--into", str(tmp_path / "ws")])
    assert res.exit_code == 0, res.output
    (src / "rocket.jpg").unlink()  # gone since ingest
    m = Workspace.open(tmp_path / "ws").read_manifest().set_index("rel_path")
    assert showable(m.loc["cat/chelsea.tif"]) == "TIFF cannot be shown in a browser"
    assert showable(m.loc["cat/rocket.jpg"]) == "file missing"
    assert showable(m.loc["cat/coffee.png"]) is None


def test_unreachable_server_is_one_line(tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    port = free_port()
    res = CliRunner().invoke(cli, ["label", str(ws.root), "pull", "--url", f"http://127.0.0.1:{port}",
                                   "--token", "abc"])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: http://127.0.0.1:{port}: expected a Label Studio server, found none "
                                 "reachable (")
    assert res.output.count("\n") == 1 and "Traceback" not in res.output


def test_url_without_token_names_what_to_pass(tmp_path, skimage_dir, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    ws = _ws(tmp_path, skimage_dir)
    res = CliRunner().invoke(cli, ["label", str(ws.root), "push", "--url", "http://127.0.0.1:9"])
    assert res.exit_code == 1
    assert res.output == ("Error: --token: expected an API token for http://127.0.0.1:9, found none (pass --token "
                          "or set LABEL_STUDIO_API_KEY to a personal access token (Label Studio: Account & Settings "
                          "> Personal Access Token))\n")


def test_missing_label_studio_program_is_one_line(tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    res = CliRunner().invoke(cli, ["label", str(ws.root), "serve", "--label-studio", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'nope'}: --label-studio: expected the label-studio program, found no "
                          "such program (install it with scripts/setup.sh (it makes .venv-labelstudio))\n")


@needs_ls
def test_legacy_token_refused_is_explained(server, tmp_path, skimage_dir):
    ws = _ws(tmp_path, skimage_dir)
    res = CliRunner().invoke(cli, ["label", str(ws.root), "push", "--url", server.url, "--token", "0123456789abcdef"])
    assert res.exit_code == 1
    assert "HTTP 401" in res.output and "legacy API tokens are off by default" in res.output
    assert res.output.count("\n") == 1


@needs_ls
def test_second_personal_token_is_refused_and_handled(server):
    """A user holds one personal access token (409 on a second); curate then works with the logged-in session."""
    from curate.labelstudio import Client, login, personal_token

    session = login(server.url, server.credentials["email"], server.credentials["password"])
    assert personal_token(server.url, session) is None  # 409: the fixture's start already took the one token
    assert Client(server.url, session=session).whoami()["email"] == "curate@localhost"


def _cdp_screenshot(url: str, cookies: dict[str, str], profile: Path, js_ready: str, timeout_s: float = 120
                    ) -> tuple[bytes, dict]:
    """Open ``url`` in headless Chromium (DevTools protocol over a pipe), wait until ``js_ready`` returns an
    object, and return a PNG screenshot with that object."""
    import base64
    import subprocess

    r_cmd, w_cmd = os.pipe()  # we write commands -> chromium reads fd 3
    r_evt, w_evt = os.pipe()  # chromium writes fd 4 -> we read events

    def to_fds_3_and_4() -> None:  # in the child, before exec: the pipe ends where Chromium expects them
        import fcntl

        a, b = fcntl.fcntl(r_cmd, fcntl.F_DUPFD, 10), fcntl.fcntl(w_evt, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe", f"--user-data-dir={profile}",
         "--window-size=1400,1000", "about:blank"],
        pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)}, preexec_fn=to_fds_3_and_4)
    os.close(r_cmd)
    os.close(w_evt)
    out, buf, ids = os.fdopen(w_cmd, "wb", buffering=0), b"", iter(range(1, 10**6))

    def send(method: str, params: dict | None = None, session: str | None = None) -> dict:
        nonlocal buf
        i = next(ids)
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        out.write(json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in buf:
                chunk = os.read(r_evt, 1 << 20)
                assert chunk, "chromium closed the DevTools pipe"
                buf += chunk
            raw, buf = buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == i:
                assert "error" not in reply, reply
                return reply.get("result", {})

    try:
        target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1,
                                                    "mobile": False}, session)
        for name, value in cookies.items():
            send("Network.setCookie", {"name": name, "value": value, "url": url}, session)
        send("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + timeout_s
        info = None
        while time.monotonic() < deadline:
            r = send("Runtime.evaluate", {"expression": js_ready, "returnByValue": True}, session)
            info = r.get("result", {}).get("value")
            if info:
                break
            time.sleep(1)
        assert info, f"the labelling page did not show the image within {timeout_s} s"
        time.sleep(2)  # let the regions draw
        png = base64.b64decode(send("Page.captureScreenshot", {"format": "png"}, session)["data"])
        return png, info
    finally:
        proc.kill()
        proc.wait()


@needs_ls
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium; "
                                             "scripts/setup.sh installs it)")
@pytest.mark.parametrize("rel_path, wh, box", [
    ("cat/chelsea.png", (451, 300), (100.25, 50.5, 300.75, 250.125)),
    ("cat/turned.jpg", (200, 300), (20.0, 40.0, 150.0, 280.0)),  # stored 300 x 200, EXIF-turned: shown 200 x 300
])
def test_labelling_page_draws_the_prefilled_box(server, tmp_path, skimage_dir, rel_path, wh, box):
    import io

    from curate.labelstudio import BOX_COLOURS, login

    ws = _ws(tmp_path, skimage_dir)
    _push(ws, server, title="screenshot")
    state = read_state(ws)[server.url]
    m = ws.read_manifest()
    sid = m.loc[m["rel_path"] == rel_path, "sample_id"].iloc[0]
    task = state["tasks"][sid]
    session = login(server.url, server.credentials["email"], server.credentials["password"])
    # The labelling page shows the image (loaded as a blob) scaled to fit, and draws the regions over it.
    # It also preloads the next task's image: the row's is the one of its displayed size.
    ready = (f"(() => {{ const i = [...document.images].filter(i => i.naturalWidth === {wh[0]}"
             f" && i.naturalHeight === {wh[1]} && i.getBoundingClientRect().width > 100)[0]; if (!i) return null;"
             " const r = i.getBoundingClientRect();"
             " const now = JSON.stringify([r.left, r.top, r.width, r.height]), last = window.__curate_last;"
             " window.__curate_last = now; if (now !== last) return null;"  # laid out: the same for a second
             " return {x: r.left, y: r.top, w: r.width, h: r.height}; })()")
    png, img = _cdp_screenshot(f"{server.url}/projects/{state['project_id']}/data?task={task}",
                               {k: v for k, v in session.cookies.items()}, tmp_path / "profile", ready)
    (tmp_path / "page.png").write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert BOX_COLOURS[0] == "#FF00FF"  # the first box class (cat) is drawn magenta: its stroke is far from any fur
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    near = (r - g > 120) & (b - g > 120)
    # the box's edges in page pixels, from its pixels in the displayed image
    sx, sy = img["w"] / wh[0], img["h"] / wh[1]
    left, top, right, bottom = (img["x"] + box[0] * sx, img["y"] + box[1] * sy, img["x"] + box[2] * sx,
                                img["y"] + box[3] * sy)
    ys = slice(int(top + 5), int(bottom - 5))
    xs = slice(int(left + 5), int(right - 5))
    edges = {"left": near[ys, int(left) - 3:int(left) + 4].any(axis=1).mean(),
             "right": near[ys, int(right) - 3:int(right) + 4].any(axis=1).mean(),
             "top": near[int(top) - 3:int(top) + 4, xs].any(axis=0).mean(),
             "bottom": near[int(bottom) - 3:int(bottom) + 4, xs].any(axis=0).mean()}
    assert min(edges.values()) > 0.8, (edges, img, tmp_path / "page.png")
    middle = near[int(top + 10):int(bottom - 10), int(left + 10):int(right - 10)].mean()
    assert middle < 0.05  # a box outline, not a magenta photo
