"""Screenshot the FiftyOne App with headless Chromium (Debian's `chromium` package), for docs/review.md.

Talks to Chromium over ``--remote-debugging-pipe`` (the DevTools protocol on
file descriptors 3 and 4), so it needs nothing beyond the standard library.
The pipe lets it do what ``chromium --screenshot`` cannot: mark FiftyOne's
"Explore Enterprise" pop-up as seen (a localStorage flag) and wait until the
grid has drawn its tiles before taking the picture.

    curate review WS --remote --port 5199 --address 127.0.0.1 &
    python scripts/review_screenshot.py "http://127.0.0.1:5199/datasets/NAME" docs/img/review.png

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import tempfile
import time
from typing import Any

# Flags the lead asked for: no network chatter, no first-run UI, a throwaway profile.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
POPUP_SEEN_KEY = "fiftyone-enterprise-tooltip-seen"  # from FiftyOne 1.22's App bundle


class Chromium:
    """One headless Chromium driven over the DevTools pipe."""

    def __init__(self, profile: str, width: int, height: int) -> None:
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def fds_3_and_4() -> None:  # Chromium reads commands on fd 3 and writes replies on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds_3_and_4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._from_chrome_r, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def screenshot(url: str, out: str, *, width: int = 1400, height: int = 900, timeout_s: float = 120,
               settle_s: float = 4, min_tiles: int = 12) -> int:
    """Load ``url``, wait for at least ``min_tiles`` drawn grid tiles, save a PNG; return the tile count."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        chrome = Chromium(profile, width, height)
        try:
            target = chrome.call("Target.createTarget", url="about:blank")["targetId"]
            s = chrome.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            chrome.call("Emulation.setDeviceMetricsOverride", s, width=width, height=height,
                        deviceScaleFactor=1, mobile=False)
            chrome.call("Page.navigate", s, url=url)
            time.sleep(2)
            chrome.call("Runtime.evaluate", s, expression=f"localStorage.setItem('{POPUP_SEEN_KEY}', 'true')")
            chrome.call("Page.navigate", s, url=url)
            tiles = 0
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                time.sleep(1)
                r = chrome.call("Runtime.evaluate", s, returnByValue=True,
                                expression="document.querySelectorAll('canvas, img').length")
                tiles = int(r.get("result", {}).get("value") or 0)
                if tiles >= min_tiles:
                    break
            time.sleep(settle_s)  # let images finish decoding and labels draw
            png = chrome.call("Page.captureScreenshot", s, format="png")["data"]
            with open(out, "wb") as f:
                f.write(base64.b64decode(png))
            return tiles
        finally:
            chrome.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--min-tiles", type=int, default=12)
    args = ap.parse_args()
    n = screenshot(args.url, args.out, width=args.width, height=args.height, min_tiles=args.min_tiles)
    print(f"{args.out}: {n} tiles drawn")


if __name__ == "__main__":
    main()
