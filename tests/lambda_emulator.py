"""API Gateway's emulator for the Lambda tests: serverless-offline running ``examples/lambda`` on 127.0.0.1.

``emulator(env)`` starts ``serverless offline start`` on free loopback ports
with ``env`` added to its environment, waits until it answers, yields its
base URLs, and stops it (its whole process group, the Python handler
processes included). It spawns ``python3`` for each function; the venv
running the tests is put first on ``PATH`` (and in ``VIRTUAL_ENV``, which
serverless-offline reads for the same purpose), so the handlers import this
checkout's siot_authz.

Needs node and ``npm ci --legacy-peer-deps`` in ``examples/lambda`` (``.ci/run`` does it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import loopback
from loopback import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "lambda"
SERVERLESS = EXAMPLE / "node_modules" / ".bin" / "serverless"

__all__ = ["EXAMPLE", "Emulator", "emulator", "emulator_missing"]


def emulator_missing() -> str | None:
    """Why the emulator cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not SERVERLESS.exists():
        return "serverless is not installed: run `npm ci --legacy-peer-deps` in examples/lambda"
    return None


@dataclass(frozen=True)
class Emulator:
    """Where the running emulator answers."""

    http_port: int
    lambda_port: int

    @property
    def rest_url(self) -> str:
        """The REST API (``http`` events), under its stage."""
        return f"http://127.0.0.1:{self.http_port}/v1"

    @property
    def http_api_url(self) -> str:
        """The HTTP API (``httpApi`` events)."""
        return f"http://127.0.0.1:{self.http_port}"

    def invoke(self, function: str, event: object) -> object:
        """A direct invocation (``lambda:InvokeFunction``), as another Lambda would make it."""
        url = f"http://127.0.0.1:{self.lambda_port}/2015-03-31/functions/siot-authz-example-v1-{function}/invocations"
        return loopback.post(url, json=event, timeout=60).json()


@contextmanager
def emulator(env: Mapping[str, str], log_path: Path, *, startup_timeout: float = 120.0) -> Iterator[Emulator]:
    """Run the example behind serverless-offline with ``env``, its output in ``log_path``; see the module docstring."""
    ports = {name: free_port() for name in ("httpPort", "lambdaPort", "websocketPort", "albPort")}
    venv_bin = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        **env,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
        # No telemetry, notifications or update checks: nothing leaves loopback.
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_TRACKING_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
        "SLS_DEPRECATION_DISABLE": "*",
        "SLS_INTERACTIVE_SETUP_DISABLE": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [str(SERVERLESS), "offline", "start", "--host", "127.0.0.1", "--noSponsor"]
    for name, port in ports.items():
        command += [f"--{name}", str(port)]
    log = log_path.open("w", encoding="utf-8")  # a file, not a pipe: nobody must keep draining it
    process = subprocess.Popen(
        command,
        cwd=EXAMPLE,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopping it stops the Python handlers too
    )
    running = Emulator(ports["httpPort"], ports["lambdaPort"])
    try:
        _wait_until_serving(process, running, log_path, startup_timeout)
        yield running
    finally:
        _stop(process)
        log.close()


def _wait_until_serving(
    process: subprocess.Popen[str], running: Emulator, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"serverless offline exited with {process.returncode}:\n{output[-3000:]}")
        try:
            # Any answer (a 401 from the authorizer's header check) means it is serving.
            loopback.get(f"{running.rest_url}/project", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    raise RuntimeError(f"serverless offline did not start in time:\n{output[-3000:]}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
