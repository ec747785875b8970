"""A real ``redis-server`` on a free loopback port, for the tests and the propagation benchmark.

Nothing is persisted (``--save ''``, no append-only file) and everything
lives in a temporary directory, so a restart starts from an empty store:
exactly the Redis restart the revocation backend has to survive.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RedisServer", "is_redis_installed", "running_redis"]


def is_redis_installed() -> bool:
    """Whether a ``redis-server`` binary is on PATH."""
    return shutil.which("redis-server") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process bound to 127.0.0.1; ``kill`` and ``start`` again on the same port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="siot-authz-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10) -> None:
        """Start the server (empty) and wait until it accepts connections."""
        assert not self.is_running, "already running"
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": "", "appendonly": "no"}
        command = [
            "redis-server",
            *(part for name, value in options.items() for part in (f"--{name}", value)),
        ]
        self._process = subprocess.Popen(
            [*command, "--dir", self._dir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers_ping():
                return
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._process.returncode}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, nothing saved, like a crash."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Kill and start again on the same port; the store comes back empty."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, killed and cleaned up afterwards."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
