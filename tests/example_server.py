"""``python -m examples.app`` as a real process on a free loopback port, for tests that need one."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from loopback import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
_READY = "Uvicorn running"

__all__ = ["REPO_ROOT", "ExampleApp", "free_port", "run_example_app"]


class ExampleApp:
    """A running example app: its base URL and everything it has printed so far."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._lines: list[str] = []
        self._ready = threading.Event()

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def _read(self, stream: Iterator[str]) -> None:
        # Drained for the process's whole life, so a full pipe never blocks it.
        for line in stream:
            self._lines.append(line)
            if _READY in line:
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting either way


@contextmanager
def run_example_app(env: Mapping[str, str], *, start_timeout: float = 30) -> Iterator[ExampleApp]:
    """Start the example app with ``env``, wait until uvicorn says it is running, stop it afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.app", "--port", str(port)],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    app = ExampleApp(f"http://127.0.0.1:{port}")
    assert process.stdout is not None
    threading.Thread(target=app._read, args=(process.stdout,), daemon=True).start()
    try:
        app._ready.wait(start_timeout)
        if _READY not in app.output:
            raise AssertionError(f"example app did not start:\n{app.output[-2000:]}")
        yield app
    finally:
        process.terminate()
        process.wait(timeout=10)
