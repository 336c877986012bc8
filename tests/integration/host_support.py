"""Loopback servers for the host-URL tests (issue 9, findings 2 and 4): a recording HTTP server that
answers like OpenAlgo only on its own paths, and raw ports that are silent, hang up or speak another
protocol."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Recorder:
    """Every request the server received, as (method, raw path with any query), and the ``apikey`` of
    each JSON body ("" when there was none)."""

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.requests]


@contextmanager
def recording_server() -> Iterator[Recorder]:
    """Answers ``/api/v1/ping`` and ``/api/v1/funds`` like OpenAlgo (any key), ``/sim/reset`` and
    ``/sim/state`` like the paper exchange's control API would (``{"status": "ok"}``), anything else
    404; records every request. Yields the :class:`Recorder` (``url`` = its base URL)."""
    recorder = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            recorder.requests.append(("POST", self.path))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            recorder.keys.append(str(body.get("apikey", "")) if isinstance(body, dict) else "")
            if self.path == "/api/v1/ping":
                self._send(200, {"status": "success", "data": {"broker": "recorder", "message": "pong"}})
            elif self.path == "/api/v1/funds":
                self._send(200, {"status": "success", "data": {"availablecash": "10.00"}})
            elif urlsplit(self.path).path in ("/sim/reset", "/sim/state"):
                self._send(200, {"status": "ok", "reset": True})
            else:
                self._send(404, {"status": "error", "message": "no such route here"})

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def raw_port(behaviour: str) -> Iterator[int]:
    """A loopback port that is ``silent`` (accepts, never answers), ``hangup`` (accepts and closes) or
    ``banner`` (answers like an SSH server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if behaviour == "silent":
                held.append(conn)
            elif behaviour == "banner":
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                conn.close()
            else:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
