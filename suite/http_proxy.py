"""A small HTTP proxy in front of one server (MLflow, Triton), to watch or break what passes.

The gate hands a deployer the proxy's URL instead of the server's: it sees every request the
deployer makes (a Triton load request is an observable point of a deploy) and can cut a model
download halfway, whatever client the deployer uses (requests, tritonclient, curl, mlflow).
"""

from __future__ import annotations

import http.server
import threading
from typing import Callable, Optional

import requests

# Load requests of slow models take seconds; a deployer's own timeouts are what should bound them.
FORWARD_TIMEOUT_S = 300.0
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive")


class ForwardingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream`; bound to 127.0.0.1 on a free port, served in a thread.

    `on_request(method, path)` runs before a request is forwarded; `cut(method, path)` says
    whether to send only the first half of the response body and close the connection.
    """

    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        on_request: Optional[Callable[[str, str], None]] = None,
        cut: Optional[Callable[[str, str], bool]] = None,
    ):
        self.upstream = upstream.rstrip("/")
        self.on_request = on_request or (lambda method, path: None)
        self.cut = cut or (lambda method, path: False)
        self.cuts = 0
        self.requests_seen = 0
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="gate-http-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "ForwardingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ForwardingProxy

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.server.requests_seen += 1
        self.server.on_request(self.command, self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
        try:
            upstream = requests.request(
                self.command,
                self.server.upstream + self.path,
                headers=headers,
                data=body,
                timeout=FORWARD_TIMEOUT_S,
                allow_redirects=False,
            )
        except requests.RequestException as exc:  # the server is down: say so as a gateway would
            self.send_error(502, f"upstream {self.server.upstream} unreachable: {type(exc).__name__}")
            return
        payload = upstream.content
        cut = self.server.cut(self.command, self.path)
        self.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        if cut:
            self.send_header("Connection", "close")
        self.end_headers()
        if cut:
            self.server.cuts += 1
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _forward

    def log_message(self, *args) -> None:
        pass
