"""A WebSocket app using ``RedisRevocations``, run as real uvicorn worker processes by the tests.

``python tests/ws_worker_app.py --port N`` reads its pool and Redis from the
environment (see ``revocation_app.worker_env``). Routes:

- ``/ws/echo?name=...`` (any valid token) answers each message, and keeps
  its own account of what it sent and how it learned the socket ended;
- ``GET /routes/{name}`` shows that account;
- ``POST /revoke/user/{sub}``: what a back end calls after AdminUserGlobalSignOut;
- ``/readyz`` from ``auth.health()``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

import loopback
from revocation_app import Worker, add_readiness_route, worker_env
from siot_authz import AuthSettings, CognitoAuth, Principal, accept_websocket
from siot_authz.revocation import RedisRevocations

if TYPE_CHECKING:
    from warm_python import WarmPython

__all__ = ["WebSocketWorker", "worker_env"]


def build_app() -> Any:
    revocations = RedisRevocations(
        os.environ["SIOT_AUTHZ_TEST_REDIS_URL"],
        max_unconfirmed_seconds=float(os.environ["SIOT_AUTHZ_TEST_MAX_UNCONFIRMED"]),
    )
    settings = AuthSettings(**json.loads(os.environ["SIOT_AUTHZ_TEST_SETTINGS"]))
    auth = CognitoAuth(settings, revocations=revocations)
    app = FastAPI(lifespan=auth.lifespan)
    routes: dict[str, dict[str, Any]] = {}

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket, name: str, principal: Principal = Depends(auth)) -> None:
        log = routes[name] = {"sent": 0, "ended": None}
        await accept_websocket(websocket)
        while True:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnect as end:
                log["ended"] = ["receive", end.code]
                return
            try:
                await websocket.send_text(f"echo:{text}")
            except WebSocketDisconnect as end:
                log["ended"] = ["send", end.code]
                return
            log["sent"] += 1

    @app.get("/routes/{name}")
    async def route_log(name: str) -> Any:
        return routes.get(name)

    @app.post("/revoke/user/{sub}")
    async def revoke(sub: str) -> Any:
        entry = await auth.verifier.revoke_user(settings.user_pool_id, sub)
        return entry.to_json()

    add_readiness_route(app, auth)
    return app


class WebSocketWorker(Worker):
    """One uvicorn worker process serving this app on a free loopback port."""

    script = Path(__file__).resolve()

    def __init__(self, env: dict[str, str], *, python: WarmPython | None = None) -> None:
        super().__init__(env, python=python)
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def route_log(self, name: str, *, timeout: float = 5) -> dict[str, Any]:
        """The route's account of socket ``name``, once it has learned the socket ended."""
        deadline = time.monotonic() + timeout
        while True:
            log: dict[str, Any] | None = loopback.get(f"{self.base_url}/routes/{name}", timeout=5).json()
            if (log is not None and log["ended"] is not None) or time.monotonic() > deadline:
                assert log is not None, f"no route ran for {name}"
                return log
            time.sleep(0.02)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(
        build_app(),
        host="127.0.0.1",
        port=port,
        log_level=os.environ.get("SIOT_AUTHZ_TEST_LOG_LEVEL", "warning"),
    )


if __name__ == "__main__":
    main()
