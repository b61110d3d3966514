"""Label Studio over HTTP: the labelling config, box conversions, a client, and a local server.

curate talks to Label Studio (``label-studio`` from the package index, tested
with 1.23.2) through its REST API with ``requests`` only; it never imports
the Label Studio SDK, whose pins (numpy, pyarrow, OpenCV) clash with curate's.
Label Studio lives in its own virtualenv (``.venv-labelstudio``, made by
``scripts/setup.sh``).

Boxes: Label Studio stores a rectangle as ``x, y, width, height`` in percent
of the image it showed, which is the displayed (EXIF-rotated) image; curate
stores ``x1, y1, x2, y2`` in pixels of the same displayed image. The two
conversions are exact inverses up to float rounding (no half-pixel shift):

    >>> v = xyxy_px_to_ls_value((10, 20, 60, 120), (200, 400))
    >>> v
    {'x': 5.0, 'y': 5.0, 'width': 25.0, 'height': 25.0}
    >>> ls_value_to_xyxy_px(v, (200, 400))
    (10.0, 20.0, 60.0, 120.0)

Authentication, as measured with 1.23.2: legacy API tokens (``Authorization:
Token ...``) are refused (401) unless the organisation enabled them, and a
user can hold one personal access token only (a second ``POST /api/token/``
is 409). A personal access token is a JWT refresh token: it is exchanged at
``/api/token/refresh/`` for a short-lived access token (``Authorization:
Bearer ...``). :class:`Client` accepts either kind; :class:`LocalServer`
creates its user with known credentials, logs in and keeps the token it got
in the workspace (or, when the user already has one that curate does not
know, uses the logged-in session).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.console import terminate_as_interrupt
from curate.errors import CurateError

# Names in the labelling config (and so in every annotation result).
IMAGE_NAME = "image"
CHOICES_NAME = "label"
BOXES_NAME = "box"
# Box colours, by class in order (saturated and far apart, so a box shows on any photo).
BOX_COLOURS = ("#FF00FF", "#00C8FF", "#FFD000", "#00E060", "#FF5000", "#8040FF", "#FF0080", "#00FFC0")
PREDICTION_VERSION = "curate"  # model_version of the predictions curate sends (a person corrects them)

TIMEOUT_S = 30.0  # every request; imports and exports of big projects get EXPORT_TIMEOUT_S
EXPORT_TIMEOUT_S = 600.0
START_TIMEOUT_S = 180.0  # measured: 25-45 s to start (first start, with the database made, included)
LOCAL_USER = "curate@localhost"
ENV_BINARY = "CURATE_LABEL_STUDIO"
ENV_TOKEN = "LABEL_STUDIO_API_KEY"


class LabelStudioError(CurateError):
    """Label Studio cannot be found, reached, or used as asked."""


# -- pure parts: config, boxes, results --------------------------------------

def label_config(classes: Sequence[str], box_classes: Sequence[str]) -> str:
    """The labelling config: one image, a single choice of class, and rectangles.

    Either part is left out when its class list is empty.

        >>> print(label_config(["cat", "dog"], []))
        <View>
          <Image name="image" value="$image" zoom="true" zoomControl="true"/>
          <Header value="Class"/>
          <Choices name="label" toName="image" choice="single-radio" showInline="true" required="true">
            <Choice value="cat"/>
            <Choice value="dog"/>
          </Choices>
        </View>
    """
    if not classes and not box_classes:
        raise LabelStudioError("", field="classes", expected="at least one image class or box class",
                               found="none", hint="pass --classes or --box-classes")
    q = lambda s: html.escape(str(s), quote=True)  # noqa: E731
    lines = ["<View>", f'  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true" zoomControl="true"/>']
    if classes:
        lines += ['  <Header value="Class"/>',
                  f'  <Choices name="{CHOICES_NAME}" toName="{IMAGE_NAME}" choice="single-radio" '
                  'showInline="true" required="true">']
        lines += [f'    <Choice value="{q(c)}"/>' for c in classes]
        lines.append("  </Choices>")
    if box_classes:
        lines += ['  <Header value="Boxes"/>', f'  <RectangleLabels name="{BOXES_NAME}" toName="{IMAGE_NAME}">']
        lines += [f'    <Label value="{q(c)}" background="{BOX_COLOURS[i % len(BOX_COLOURS)]}"/>'
                  for i, c in enumerate(box_classes)]
        lines.append("  </RectangleLabels>")
    lines.append("</View>")
    return "\n".join(lines)


def xyxy_px_to_ls_value(box: Sequence[float], wh: tuple[int, int]) -> dict[str, float]:
    """Pixel ``xyxy`` in a ``w x h`` displayed image -> Label Studio's percent ``x, y, width, height``."""
    w, h = float(wh[0]), float(wh[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"x": x1 / w * 100.0, "y": y1 / h * 100.0, "width": (x2 - x1) / w * 100.0,
            "height": (y2 - y1) / h * 100.0}


def ls_value_to_xyxy_px(value: Mapping[str, Any], wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """Label Studio's percent rectangle -> pixel ``xyxy`` of the ``w x h`` displayed image.

    The edges are computed from the percent values directly (``x + width`` first,
    then scaled), so a box sent and read back unchanged is the same box.

        >>> ls_value_to_xyxy_px({"x": 0, "y": 50, "width": 100, "height": 50}, (640, 480))
        (0.0, 240.0, 640.0, 480.0)
    """
    w, h = float(wh[0]), float(wh[1])
    x, y = float(value["x"]), float(value["y"])
    x2, y2 = x + float(value["width"]), y + float(value["height"])
    return x * w / 100.0, y * h / 100.0, x2 * w / 100.0, y2 * h / 100.0


def prediction_result(label: str | None, boxes: Sequence[tuple[str, Sequence[float]]], wh: tuple[int, int], *,
                      classes: bool, box_classes: bool) -> list[dict[str, Any]]:
    """A row's current label and boxes as one Label Studio prediction ``result`` list.

        >>> r = prediction_result("cat", [("cat", (0, 0, 50, 25))], (100, 100), classes=True, box_classes=True)
        >>> [x["type"] for x in r], r[1]["value"]["rectanglelabels"], r[1]["value"]["width"]
        (['choices', 'rectanglelabels'], ['cat'], 50.0)
    """
    w, h = int(wh[0]), int(wh[1])
    out: list[dict[str, Any]] = []
    if classes and label is not None:
        out.append({"id": "label", "from_name": CHOICES_NAME, "to_name": IMAGE_NAME, "type": "choices",
                    "value": {"choices": [str(label)]}})
    if box_classes:
        for i, (box_label, box) in enumerate(boxes):
            value = xyxy_px_to_ls_value(box, (w, h))
            out.append({"id": f"box{i}", "from_name": BOXES_NAME, "to_name": IMAGE_NAME, "type": "rectanglelabels",
                        "original_width": w, "original_height": h, "image_rotation": 0,
                        "value": {**value, "rotation": 0, "rectanglelabels": [str(box_label)]}})
    return out


def parse_result(result: Sequence[Mapping[str, Any]], wh: tuple[int, int]
                 ) -> tuple[str | None, list[tuple[str, tuple[float, float, float, float]]], list[str]]:
    """One annotation's ``result`` -> (class or None, boxes as (label, xyxy px), problems).

    Only curate's own control names are read (``label``, ``box``); a rotated
    rectangle cannot be an axis-aligned box and is reported, not guessed.

        >>> res = [{"from_name": "label", "type": "choices", "value": {"choices": ["dog"]}},
        ...        {"from_name": "box", "type": "rectanglelabels", "original_width": 200, "original_height": 100,
        ...         "value": {"x": 10, "y": 20, "width": 50, "height": 30, "rectanglelabels": ["dog"]}}]
        >>> parse_result(res, (200, 100))
        ('dog', [('dog', (20.0, 20.0, 120.0, 50.0))], [])
    """
    label: str | None = None
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    problems: list[str] = []
    for item in result:
        value = item.get("value") or {}
        if item.get("from_name") == CHOICES_NAME and item.get("type") == "choices":
            choices = value.get("choices") or []
            if len(choices) > 1:
                problems.append(f"several classes chosen ({', '.join(map(str, choices))}); the first is used")
            label = str(choices[0]) if choices else None
        elif item.get("from_name") == BOXES_NAME and item.get("type") == "rectanglelabels":
            names = value.get("rectanglelabels") or []
            if not names:
                problems.append("a box without a class; skipped")
                continue
            if abs(float(value.get("rotation") or 0.0)) > 1e-9:
                problems.append(f"a {names[0]} box rotated by {value['rotation']} degrees; skipped (curate keeps "
                                "axis-aligned boxes)")
                continue
            ow, oh = item.get("original_width"), item.get("original_height")
            if ow and oh and {int(ow), int(oh)} == {int(wh[0]), int(wh[1])} and (int(ow), int(oh)) != tuple(wh):
                problems.append(f"the image was shown {ow}x{oh}, the row's displayed frame is {wh[0]}x{wh[1]} "
                                "(turned by its EXIF orientation?); boxes read in the row's frame")
            boxes.append((str(names[0]), ls_value_to_xyxy_px(value, (int(wh[0]), int(wh[1])))))
    return label, boxes, problems


def local_file_url(path: str | Path, document_root: str | Path) -> str:
    """The ``/data/local-files/?d=...`` URL that serves ``path`` from a server's document root.

        >>> local_file_url("/data/photos/a b.jpg", "/")
        '/data/local-files/?d=data/photos/a%20b.jpg'
    """
    from urllib.parse import quote

    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(document_root))
    if rel.startswith(".."):
        raise LabelStudioError("", file=path, expected=f"a file under the document root {document_root}",
                               found="a file outside it", hint="pass --document-root with a folder above it")
    return "/data/local-files/?d=" + quote(rel)


# -- finding and starting the server ----------------------------------------

def find_binary(explicit: str | Path | None = None) -> Path:
    """The ``label-studio`` program: ``explicit`` (``--label-studio``), ``$CURATE_LABEL_STUDIO``,
    ``.venv-labelstudio/bin/label-studio`` next to the project, or one on ``PATH``."""
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("--label-studio", Path(explicit)))
    elif os.environ.get(ENV_BINARY):
        candidates.append((ENV_BINARY, Path(os.environ[ENV_BINARY])))
    else:
        project = Path(__file__).resolve().parents[1]
        for base in (project, Path.cwd()):
            candidates.append(("project", base / ".venv-labelstudio" / "bin" / "label-studio"))
        found = shutil.which("label-studio")
        if found:
            candidates.append(("PATH", Path(found)))
    for _, p in candidates:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    if explicit or os.environ.get(ENV_BINARY):
        where, p = candidates[0]
        raise LabelStudioError("", file=p, field=where, expected="the label-studio program", found="no such program",
                               hint="install it with scripts/setup.sh (it makes .venv-labelstudio)")
    raise LabelStudioError(
        "", field="label-studio", expected="the label-studio program (--label-studio PATH, "
        f"${ENV_BINARY}, .venv-labelstudio/bin/label-studio, or PATH)", found="none",
        hint="run scripts/setup.sh, or `python -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install "
             "label-studio`; or use a running server with --url and --token")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Client:
    """A Label Studio REST client: every request has a timeout, every failure is one line.

    ``token`` is a personal access token (a JWT, exchanged for access tokens as
    needed) or a legacy token. ``session`` is a logged-in ``requests.Session``
    (cookies and CSRF token), used when no token is given.
    """

    def __init__(self, url: str, token: str | None = None, *, session: Any = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        import requests

        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.http = session if session is not None else requests.Session()
        self._access: str | None = None
        self.is_jwt = bool(token) and token.count(".") == 2  # type: ignore[union-attr]

    # one line for every way a request can fail
    def _send(self, method: str, path: str, *, timeout_s: float | None = None, **kw: Any) -> Any:
        import requests

        url = path if path.startswith("http") else f"{self.url}{path}"
        try:
            return self.http.request(method, url, timeout=timeout_s or self.timeout_s, **kw)
        except requests.exceptions.Timeout:
            raise LabelStudioError("", file=self.url, expected="an answer from Label Studio",
                                   found=f"none within {timeout_s or self.timeout_s:g} s ({method} {path})",
                                   hint="is the server overloaded? try again") from None
        except requests.exceptions.RequestException as e:
            why = type(e).__name__ if not str(e) else str(e).split("(Caused by")[-1].strip(" )")[:120]
            raise LabelStudioError("", file=self.url, expected="a Label Studio server",
                                   found=f"none reachable ({why})",
                                   hint="start one, or leave out --url and curate starts its own") from None

    def _headers(self) -> dict[str, str]:
        if not self.token:
            csrf = self.http.cookies.get("csrftoken")
            return {"X-CSRFToken": csrf, "Referer": self.url + "/"} if csrf else {}
        if not self.is_jwt:
            return {"Authorization": f"Token {self.token}"}
        if self._access is None:
            r = self._send("POST", "/api/token/refresh/", json={"refresh": self.token})
            if r.status_code != 200:
                raise LabelStudioError(
                    "", file=self.url, field="--token", expected="a valid personal access token",
                    found=f"HTTP {r.status_code} from /api/token/refresh/",
                    hint="copy a fresh one from Account & Settings > Personal Access Token")
            self._access = str(r.json()["access"])
        return {"Authorization": f"Bearer {self._access}"}

    def request(self, method: str, path: str, *, ok: Sequence[int] = (200, 201, 204),
                timeout_s: float | None = None, **kw: Any) -> Any:
        """Send one request; return the decoded JSON (None for an empty body). Errors are one line."""
        for attempt in (0, 1):
            r = self._send(method, path, headers=self._headers(), timeout_s=timeout_s, **kw)
            if r.status_code == 401 and self.is_jwt and attempt == 0:
                self._access = None  # access tokens live minutes: refresh once
                continue
            break
        if r.status_code == 401:
            if self.token and not self.is_jwt:
                hint = ("legacy API tokens are off by default since Label Studio 1.20: pass a personal access "
                        "token (Account & Settings), or enable legacy tokens in Organization > API Tokens")
            else:
                hint = f"pass --token (or ${ENV_TOKEN}) with a personal access token from Account & Settings"
            raise LabelStudioError("", file=self.url, expected="an accepted API token",
                                   found=f"HTTP 401 on {method} {path}", hint=hint)
        if r.status_code not in ok:
            body = r.text.strip().replace("\n", " ")[:300]
            raise LabelStudioError("", file=self.url, field=f"{method} {path}", expected=f"HTTP {ok[0]}",
                                   found=f"HTTP {r.status_code}: {body}")
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise LabelStudioError("", file=self.url, field=f"{method} {path}", expected="JSON",
                                   found=r.text[:80]) from None

    # -- the calls curate makes ------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self.request("GET", "/api/current-user/whoami")  # type: ignore[no-any-return]

    def project(self, project_id: int) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/api/projects/{project_id}")  # type: ignore[no-any-return]
        except LabelStudioError as e:
            if "HTTP 404" in str(e):
                return None
            raise

    def create_project(self, title: str, config: str, description: str = "") -> dict[str, Any]:
        return self.request("POST", "/api/projects", json={  # type: ignore[no-any-return]
            "title": title, "label_config": config, "description": description,
            # predictions of this model_version pre-fill the labelling page (a person corrects them)
            "show_collab_predictions": True, "model_version": PREDICTION_VERSION, "maximum_annotations": 1})

    def update_config(self, project_id: int, config: str) -> None:
        self.request("PATCH", f"/api/projects/{project_id}", json={"label_config": config})

    def local_storages(self, project_id: int) -> list[dict[str, Any]]:
        return self.request("GET", "/api/storages/localfiles", params={"project": project_id})  # type: ignore[no-any-return]

    def add_local_storage(self, project_id: int, folder: str) -> None:
        """Let the project's tasks read files under ``folder`` (no sync: no task is made from the folder)."""
        self.request("POST", "/api/storages/localfiles", json={
            "project": project_id, "path": folder, "title": f"curate: {folder}", "use_blob_urls": False,
            "regex_filter": ""})

    def task_ids(self, project_id: int) -> dict[str, int]:
        """``sample_id -> task id`` of every task in the project (read page by page)."""
        out: dict[str, int] = {}
        page = 1
        while True:
            data = self.request("GET", "/api/tasks", params={
                "project": project_id, "page": page, "page_size": 500, "fields": "task_only"})
            tasks = data.get("tasks", []) if isinstance(data, dict) else data
            for t in tasks:
                sid = (t.get("data") or {}).get("sample_id")
                if sid is not None:
                    out[str(sid)] = int(t["id"])
            total = data.get("total", 0) if isinstance(data, dict) else len(tasks)
            if not tasks or page * 500 >= total:
                return out
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> None:
        self.request("POST", f"/api/projects/{project_id}/import", json=tasks, timeout_s=EXPORT_TIMEOUT_S,
                     params={"commit_to_project": "true"})

    def export_all(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project in Label Studio's own JSON, touched or not.

        The default export (``download_all_tasks=false``) leaves out tasks
        nobody annotated; curate asks for all and decides itself.
        """
        return self.request("GET", f"/api/projects/{project_id}/export", timeout_s=EXPORT_TIMEOUT_S,  # type: ignore[no-any-return]
                            params={"exportType": "JSON", "download_all_tasks": "true"})

    def users(self) -> dict[int, str]:
        """``user id -> email`` of the organisation's users."""
        data = self.request("GET", "/api/users")
        return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in data or []}


def login(url: str, email: str, password: str, *, timeout_s: float = TIMEOUT_S) -> Any:
    """A ``requests.Session`` logged in to Label Studio with ``email``/``password`` (as the browser does)."""
    import requests

    s = requests.Session()
    c = Client(url, session=s, timeout_s=timeout_s)
    c._send("GET", "/user/login/")
    r = c._send("POST", "/user/login/", allow_redirects=False,
                data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
                headers={"Referer": f"{c.url}/user/login/"})
    if r.status_code != 302 or "sessionid" not in s.cookies:
        raise LabelStudioError("", file=url, expected=f"a login for {email}", found=f"HTTP {r.status_code}",
                               hint="the workspace's labelstudio/ folder holds the credentials curate made")
    return s


def personal_token(url: str, session: Any) -> str | None:
    """A new personal access token for the logged-in user; None when the user already holds one (409)."""
    c = Client(url, session=session)
    r = c._send("POST", "/api/token/", headers=c._headers())
    if r.status_code == 409:  # one token a user (1.23.2): the one issued before is not shown again
        return None
    if r.status_code != 201:
        raise LabelStudioError("", file=url, field="POST /api/token/", expected="HTTP 201",
                               found=f"HTTP {r.status_code}: {r.text[:200]}")
    return str(r.json()["token"])


class LocalServer:
    """A Label Studio server curate starts on 127.0.0.1, its data in ``data_dir``; a context manager.

    The user (``curate@localhost``) and its password are made on the first
    start and kept in ``data_dir/../credentials.json`` (mode 0600), with the
    personal access token curate got for it. The server runs in its own
    process group and is stopped (SIGTERM, then SIGKILL) when the block ends,
    by an error, Ctrl-C or SIGTERM included.
    """

    def __init__(self, data_dir: Path, *, binary: Path | None = None, port: int | None = None,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.home = self.data_dir.parent
        self.binary = binary or find_binary()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s: float | None = None
        self.credentials: dict[str, Any] = {}
        self.client: Client | None = None

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials.json"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def running_path(self) -> Path:
        return self.home / "running.json"

    @staticmethod
    def running(home: Path) -> dict[str, Any] | None:
        """The server another curate process runs on ``home`` (``curate label WS serve``): its URL, credentials
        and pid; None when none answers. A second server on the same data would share its database."""
        try:
            info = json.loads((Path(home) / "running.json").read_text())
            creds = json.loads((Path(home) / "credentials.json").read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            if Client(str(info["url"]), timeout_s=5)._send("GET", "/health").status_code != 200:
                return None
        except LabelStudioError:
            return None
        return {**info, "credentials": creds}

    def _load_credentials(self) -> dict[str, Any]:
        from curate.workspace import atomic_write_bytes

        with contextlib.suppress(OSError, ValueError):
            creds = json.loads(self.credentials_path.read_text())
            if isinstance(creds, dict) and creds.get("email") and creds.get("password"):
                return creds
        if (self.data_dir / "label_studio.sqlite3").exists():  # a user made by a run whose credentials are lost
            raise LabelStudioError(
                "", file=self.credentials_path, expected="the credentials of the Label Studio user curate made",
                found="none", hint=f"remove {self.data_dir} to start a fresh server (its tasks are lost), or "
                "run your own server and pass --url and --token")
        # A fixed Django SECRET_KEY: without one the server makes a new key at every start, and the
        # personal access token (a JWT signed with it) would stop working at the next start.
        creds = {"email": LOCAL_USER, "password": secrets.token_urlsafe(18), "secret_key": secrets.token_urlsafe(40)}
        self.home.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.credentials_path, (json.dumps(creds, indent=2) + "\n").encode())
        os.chmod(self.credentials_path, 0o600)
        return creds

    def start(self) -> Client:
        """Start the server, wait until it answers, log in; the client to use."""
        from curate.workspace import atomic_write_bytes

        self.credentials = self._load_credentials()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ,
               "LABEL_STUDIO_USERNAME": self.credentials["email"],
               "LABEL_STUDIO_PASSWORD": self.credentials["password"],
               "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
               "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/",
               "LATEST_VERSION_CHECK": "false",  # no call to pypi.org on every start
               "COLLECT_ANALYTICS": "false",
               "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir)}
        if self.credentials.get("secret_key"):
            env["SECRET_KEY"] = self.credentials["secret_key"]
        cmd = [str(self.binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--log-level", "WARNING"]
        t0 = time.perf_counter()
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._log: Any = log
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        probe = Client(self.url, timeout_s=5)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self._log_tail()
                self.stop()
                raise LabelStudioError("", file=self.binary, expected="a running Label Studio server",
                                       found=f"it exited with code {code}: {tail}",
                                       hint=f"see {self.log_path}")
            with contextlib.suppress(LabelStudioError):
                r = probe._send("GET", "/health")
                if r.status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise LabelStudioError("", file=self.binary, expected="Label Studio answering on "
                                       f"{self.url}", found=f"no answer within {self.start_timeout_s:g} s",
                                       hint=f"see {self.log_path}")
            time.sleep(0.5)
        self.started_s = time.perf_counter() - t0
        session = login(self.url, self.credentials["email"], self.credentials["password"])
        token = self.credentials.get("token")
        if not token:
            token = personal_token(self.url, session)
            if token:
                self.credentials["token"] = token
                atomic_write_bytes(self.credentials_path, (json.dumps(self.credentials, indent=2) + "\n").encode())
                os.chmod(self.credentials_path, 0o600)
        atomic_write_bytes(self.running_path, (json.dumps({"url": self.url, "pid": self.proc.pid}) + "\n").encode())
        self.client = Client(self.url, token, session=None) if token else Client(self.url, session=session)
        if token:
            try:
                self.client.whoami()
            except LabelStudioError:  # a token the server no longer knows: use the logged-in session
                self.client = Client(self.url, session=session)
        return self.client

    def _log_tail(self, n: int = 300) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_bytes()[-4000:].decode(errors="replace").strip().splitlines()
            return (text[-1] if text else "")[:n]
        return ""

    def stop(self) -> None:
        """Stop the server and every process it started (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if json.loads(self.running_path.read_text())["pid"] == proc.pid:
                    self.running_path.unlink()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


sigterm_as_interrupt = terminate_as_interrupt  # the one in curate.console
