"""The live page of `aim-video watch --serve`: the standard library's HTTP server and
server-sent events, no framework.

`GET /` is the page (`report/live.html`); `GET /events` is an event stream that first sends the
state so far (the source, the last window, the recent segments) and then every record as
`watch` makes it. Each client has its own bounded queue: a client that stops reading loses
records (never the watch's time or memory).
"""

from __future__ import annotations

import collections
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aim_video.errors import UserError

PAGE = Path(__file__).parent / "report" / "live.html"
RECENT_SEGMENTS = 20  # segments a page that connects late is sent
CLIENT_QUEUE = 256  # records a slow client may fall behind by before it loses some
KEEPALIVE = 15.0  # seconds between comments on a quiet stream (proxies close idle ones)


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `PORT` (host 127.0.0.1: this machine only) -> (host, port).

    Raises:
        UserError: not an address.
    """
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
        if not 0 <= number < 65536:
            raise ValueError
    except ValueError:
        raise UserError(f"--serve {text}: expected HOST:PORT or PORT, e.g. 127.0.0.1:8000"
                        ) from None
    return host.strip("[]") or "127.0.0.1", number


class LiveServer:
    """Serves the live page in a background thread until `close`.

    Args:
        host: the address to listen on.
        port: the port (0: any free one; see `url`).
        source: what is watched (shown on the page).

    Raises:
        UserError: the address cannot be listened on.
    """

    def __init__(self, host: str, port: int, source: str) -> None:
        self.lock = threading.Lock()
        self.clients: set[queue.Queue[dict[str, Any] | None]] = set()
        self.state: dict[str, Any] = {"type": "state", "source": source, "window": None,
                                      "segments": [], "end": None}
        self.segments: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RECENT_SEGMENTS)
        page = PAGE.read_bytes()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # no line per request on stderr
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path in ("/", "/index.html"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                elif self.path == "/events":
                    server._stream(self)
                else:
                    self.send_error(404)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise UserError(f"--serve {host}:{port}: cannot listen there: "
                            f"{err.strerror or err}") from None
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="aim-video-serve",
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def publish(self, record: dict[str, Any]) -> None:
        """Sends `record` to every page and keeps what a page connecting later needs."""
        with self.lock:
            kind = record.get("type")
            if kind == "window":
                self.state["window"] = record
            elif kind == "segment":
                self.segments.append(record)
            elif kind == "end":
                self.state["end"] = record
            for client in self.clients:
                try:
                    client.put_nowait(record)
                except queue.Full:
                    pass

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        mine: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=CLIENT_QUEUE)
        with self.lock:
            first = {**self.state, "segments": list(self.segments)}
            self.clients.add(mine)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-cache")
            handler.end_headers()
            record: dict[str, Any] | None = first
            while record is not None:
                handler.wfile.write(f"data: {json.dumps(record)}\n\n".encode())
                handler.wfile.flush()
                while True:
                    try:
                        record = mine.get(timeout=KEEPALIVE)
                        break
                    except queue.Empty:
                        handler.wfile.write(b": still here\n\n")
                        handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page was closed
        finally:
            with self.lock:
                self.clients.discard(mine)

    def close(self) -> None:
        """Ends every event stream (after what is queued) and stops listening."""
        with self.lock:
            for client in self.clients:
                try:
                    client.put_nowait(None)
                except queue.Full:
                    pass
        self.httpd.shutdown()
        self.httpd.server_close()
