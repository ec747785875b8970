"""A real HTTP server on loopback that serves a JWKS, and can misbehave on request.

Tests of the key cache need an endpoint that is slow, down, wrong or hostile
in controlled ways; a mock cannot show what httpx does with a real socket.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["JwksResponse", "JwksServer"]


@dataclass
class JwksResponse:
    """How the server answers the next requests; change it to simulate failures.

    ``framing`` says how the body's end is marked: by ``Content-Length`` (which
    ``headers`` may override with a lie), by chunked transfer encoding, or
    only by closing the connection.
    """

    status: int = 200
    body: bytes | None = None  # None serves the issuer's current JWKS
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0  # before the status line
    trickle_seconds: float = 0.0  # between body chunks of 64 bytes
    close_without_response: bool = False
    framing: Literal["content-length", "chunked", "close"] = "content-length"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops the connection (a cap or deadline hit) is part
        # of the tests; anything else is still reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class JwksServer:
    """Serves ``jwks()`` at ``path`` on 127.0.0.1 until closed; counts the requests it gets."""

    def __init__(self, jwks: Callable[[], dict[str, Any]], path: str) -> None:
        self._jwks = jwks
        self.path = path
        self.response = JwksResponse()
        self.request_count = 0
        self.requested_paths: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            # A short poll keeps close() quick; the default makes it take up to 0.5 s.
            target=lambda: self._httpd.serve_forever(poll_interval=0.05),
            name="jwks-server",
            daemon=True,
        )
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
            self.request_headers.clear()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JwksServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(self, path: str, headers: dict[str, str]) -> JwksResponse:
        with self._lock:
            self.request_count += 1
            self.requested_paths.append(path)
            self.request_headers.append(headers)
            return self.response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                response = server._record(self.path, {k.lower(): v for k, v in self.headers.items()})
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
                headers = {"Content-Type": "application/json"}
                if response.framing == "content-length":
                    headers["Content-Length"] = str(len(body))
                elif response.framing == "chunked":
                    headers["Transfer-Encoding"] = "chunked"
                else:
                    headers["Connection"] = "close"
                    self.close_connection = True
                headers.update(response.headers)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self._write_body(body, response)
                except OSError:
                    # The client gave up (a cap or a deadline): expected, not an error.
                    self.close_connection = True

            def _write_body(self, body: bytes, response: JwksResponse) -> None:
                step = 64 if response.trickle_seconds else max(len(body), 1)
                for start in range(0, len(body), step):
                    piece = body[start : start + step]
                    if response.framing == "chunked":
                        piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                    self.wfile.write(piece)
                    self.wfile.flush()
                    if response.trickle_seconds:
                        time.sleep(response.trickle_seconds)
                if response.framing == "chunked":
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler
