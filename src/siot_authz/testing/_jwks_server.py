"""A real HTTP server on loopback that serves a JWKS, and can misbehave on request.

Tests of the key cache need an endpoint that is slow, down, wrong or hostile
in controlled ways; a mock cannot show what httpx does with a real socket.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["JwksResponse", "JwksServer"]


@dataclass
class JwksResponse:
    """How the server answers the next requests; change it to simulate failures."""

    status: int = 200
    body: bytes | None = None  # None serves the issuer's current JWKS
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0  # before the status line
    trickle_seconds: float = 0.0  # between body chunks of 64 bytes
    close_without_response: bool = False


class JwksServer:
    """Serves ``jwks()`` at ``path`` on 127.0.0.1 until closed; counts the requests it gets."""

    def __init__(self, jwks: Callable[[], dict[str, Any]], path: str) -> None:
        self._jwks = jwks
        self.path = path
        self.response = JwksResponse()
        self.request_count = 0
        self.requested_paths: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="jwks-server", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """The JWKS URL."""
        return self.base_url + self.path

    def reset(self) -> None:
        """Serve the JWKS normally again and zero the counters."""
        with self._lock:
            self.response = JwksResponse()
            self.request_count = 0
            self.requested_paths.clear()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JwksServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(self, path: str) -> JwksResponse:
        with self._lock:
            self.request_count += 1
            self.requested_paths.append(path)
            return self.response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                response = server._record(self.path)
                if response.close_without_response:
                    self.close_connection = True
                    return
                if response.delay_seconds:
                    time.sleep(response.delay_seconds)
                if self.path != server.path and response.body is None:
                    status, body = 404, b'{"message":"not found"}'
                else:
                    status = response.status
                    body = response.body if response.body is not None else json.dumps(server._jwks()).encode()
                self.send_response(status)
                headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
                headers.update(response.headers)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if response.trickle_seconds:
                        for start in range(0, len(body), 64):
                            self.wfile.write(body[start : start + 64])
                            self.wfile.flush()
                            time.sleep(response.trickle_seconds)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler
