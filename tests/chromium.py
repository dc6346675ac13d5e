"""A small headless-Chromium driver for the report tests and benchmark, standard library only.

It speaks the DevTools protocol over ``--remote-debugging-pipe``: JSON messages separated by NUL
bytes on the child's file descriptors 3 (to the browser) and 4 (from it), so there is no port to
discover and no websocket client to install.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = "headless Chromium not found: apt-get install chromium (or set CHROMIUM=path)"
TIMEOUT = 60.0  # seconds for any one protocol reply or condition: generous for busy CI


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else `chromium` / `chromium-browser` on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _wire(to_child: int, from_child: int) -> None:
    """In the child: the pipe ends onto fds 3 and 4 (via fresh copies, so that neither dup2
    overwrites the other end)."""
    read_end, write_end = os.dup(to_child), os.dup(from_child)
    os.dup2(read_end, 3)
    os.dup2(write_end, 4)


class Chromium:
    """One headless browser with one page; collects console errors and exceptions.

    Use as a context manager: ``with Chromium() as page: page.open(url)``.
    """

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900):
        executable = executable or find_chromium()
        if executable is None:
            raise RuntimeError(INSTALL_HINT)
        self.profile = tempfile.TemporaryDirectory(prefix="aim-video-chromium-")
        to_child, self._out = os.pipe()  # we write self._out, the browser reads fd 3
        self._in, from_child = os.pipe()  # the browser writes fd 4, we read self._in
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=lambda: _wire(to_child, from_child),
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []  # console errors, uncaught exceptions, failed loads
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True)

    # --------------------------------------------------------------------- protocol
    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            with selectors.DefaultSelector() as sel:
                sel.register(self._in, selectors.EVENT_READ)
                if left <= 0 or not sel.select(left):
                    raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description")
                               or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description")))
                                        for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"] + " " + params["entry"].get("url", ""))

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: bool = False) -> dict[str, Any]:
        """Sends one command (to the page when `session`) and returns its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._record(reply)

    # --------------------------------------------------------------------- page
    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """Polls `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.02)  # between polls, not as synchronisation
        return value

    def open(self, url: str, ready: str = "document.body && document.body.dataset.ready") -> Any:
        """Navigates to `url` and waits until `ready` is truthy in the new document; returns
        its value."""
        self.evaluate("document.body && delete document.body.dataset.ready")  # not the old one's
        self.send("Page.navigate", {"url": url}, session=True)
        return self.wait_for(ready)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first match."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            "if (!e) return null; e.scrollIntoView({block: 'center'});"
            "const r = e.getBoundingClientRect();"
            "return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")
        if box is None:
            raise LookupError(f"nothing matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"],
                                                   "button": "left", "clickCount": 1},
                      session=True)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page when `full_page`)."""
        import base64

        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth,"
                                 "document.documentElement.scrollHeight]")
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}}
        data = self.send("Page.captureScreenshot", params, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            self.proc.kill()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)
        self.profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
