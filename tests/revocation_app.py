"""A small app using ``RedisRevocations``, run as real uvicorn worker processes by the tests and the bench.

``python tests/revocation_app.py --port N`` reads its pool and Redis from the
environment (see :func:`worker_env`). Routes: ``/me`` (any valid token),
``POST /revoke/user/{sub}`` and ``POST /revoke/session/{origin_jti}`` (what a
back end calls after Cognito's AdminUserGlobalSignOut or RevokeToken), and
``/readyz`` from ``auth.health()``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

import loopback
from loopback import free_port

if TYPE_CHECKING:
    from warm_python import WarmProcess, WarmPython

_SETTINGS = "SIOT_AUTHZ_TEST_SETTINGS"
_REDIS_URL = "SIOT_AUTHZ_TEST_REDIS_URL"
_MAX_UNCONFIRMED = "SIOT_AUTHZ_TEST_MAX_UNCONFIRMED"
_TLS_CA_FILE = "SIOT_AUTHZ_TEST_REDIS_CA_FILE"


W = TypeVar("W", bound="Worker")


def worker_env(
    settings: dict[str, Any],
    redis_url: str,
    *,
    max_unconfirmed_seconds: float = 300,
    tls_ca_file: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The environment a worker needs: one pool's settings (JSON), the Redis URL and CA, the fail-closed limit."""
    return {
        **os.environ,
        _SETTINGS: json.dumps(settings),
        _REDIS_URL: redis_url,
        _MAX_UNCONFIRMED: str(max_unconfirmed_seconds),
        _TLS_CA_FILE: "" if tls_ca_file is None else os.fspath(tls_ca_file),
    }


def build_app() -> Any:
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse

    from siot_authz import AuthSettings, CognitoAuth, Principal
    from siot_authz.revocation import RedisRevocations, RevocationStoreUnavailable

    revocations = RedisRevocations(
        os.environ[_REDIS_URL],
        max_unconfirmed_seconds=float(os.environ[_MAX_UNCONFIRMED]),
        tls_ca_file=os.environ.get(_TLS_CA_FILE) or None,
    )
    auth = CognitoAuth(AuthSettings(**json.loads(os.environ[_SETTINGS])), revocations=revocations)
    app = FastAPI(lifespan=auth.lifespan)
    pool_id = auth.verifier.settings.user_pool_id

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"sub": principal.sub}

    @app.post("/revoke/{kind}/{subject}")
    async def revoke(kind: str, subject: str) -> Any:
        try:
            if kind == "user":
                entry = await auth.verifier.revoke_user(pool_id, subject)
            else:
                entry = await auth.verifier.revoke_session(pool_id, subject)
        except RevocationStoreUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        return entry.to_json()

    add_readiness_route(app, auth)
    return app


def add_readiness_route(app: Any, auth: Any) -> None:
    """``/readyz`` on a FastAPI ``app``: ``auth.health()``, 503 until the worker is ready (revocation state included)."""
    from fastapi.responses import JSONResponse

    @app.get("/readyz")
    async def readyz() -> Any:
        health = auth.health()
        return JSONResponse(health.to_dict(), status_code=200 if health.is_ready else 503)


class Worker:
    """One uvicorn worker process serving this app on a free loopback port; restartable on the same port.

    A subclass serving another app module sets ``script`` to that module's file. Given a
    ``python`` (tests/warm_python.py), the process is forked from that warm interpreter instead of
    started afresh: still a process of its own, running ``python SCRIPT --port N``, without
    spending most of a second of CPU on importing FastAPI, uvicorn, redis and siot_authz.
    """

    script: Path = Path(__file__).resolve()

    def __init__(self, env: dict[str, str], *, python: WarmPython | None = None) -> None:
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._python = python
        self._process: subprocess.Popen[bytes] | WarmProcess | None = None

    def start(self, *, timeout: float = 30) -> None:
        """Start and wait until ``/readyz`` answers 200 (keys held, revocations loaded)."""
        self.launch()
        self.wait_until_ready(timeout=timeout)

    def launch(self) -> None:
        """Start the process without waiting; several workers start faster side by side."""
        arguments = [str(self.script), "--port", str(self.port)]
        if self._python is not None:
            self._process = self._python.spawn(arguments, cwd=Path.cwd(), env=self.env)
            return
        self._process = subprocess.Popen(
            [sys.executable, *arguments], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_until_ready(self, *, timeout: float = 30) -> None:
        """Wait until ``/readyz`` answers 200; stops the worker if it does not in time."""
        assert self._process is not None, "not launched"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"worker exited with status {self._process.returncode}")
            try:
                if loopback.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"worker on port {self.port} was not ready within {timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def worker_pair(
    env: dict[str, str], kind: type[W], *, python: WarmPython | None = None
) -> Iterator[tuple[W, W]]:
    """Two workers of ``kind`` on ``env``, started side by side, as two hosts would be; stopped after."""
    first, second = kind(env, python=python), kind(env, python=python)
    try:
        first.launch()
        second.launch()
        first.wait_until_ready()
        second.wait_until_ready()
        yield first, second
    finally:
        first.stop()
        second.stop()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
