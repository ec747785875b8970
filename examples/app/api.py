"""The example API: projects, devices and data, shaped like SimpleIOT's.

Every ``/v1`` route needs a valid Cognito ID token. DELETE and the admin
routes also need the ``admin`` role, which comes from the app's own database
(``User`` and ``Role``, as in SimpleIOT), not from Cognito groups.
Responses follow SimpleIOT's ``{"status": "ok", ...}`` and
``{"status": "error", "message": ...}`` shapes, auth failures included.

Also shown: readiness at ``/readyz`` from ``auth.health()``, Prometheus
metrics at ``/metrics`` (with the ``prometheus`` extra), device data
streamed over a WebSocket at ``/v1/ws/data`` (browsers send their token as
the ``bearer`` subprotocol), and revoking a user's tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from siot_authz import (
    AuthHTTPException,
    CognitoAuth,
    PoolSettings,
    Principal,
    RolesCache,
    RolesPrincipal,
    accept_websocket,
)
from siot_authz.revocation import RevocationStoreUnavailable

from .database import Database

__all__ = ["create_app"]

METRICS_HINT = "metrics need prometheus_client: pip install 'siot-authz[prometheus]'"


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    desc: str = ""


class DeviceIn(BaseModel):
    serial: str = Field(min_length=1, max_length=64)
    project: str = Field(min_length=1, max_length=64)


class DataIn(BaseModel):
    serial: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    value: float | int | str | bool


class RevokeIn(BaseModel):
    sub: str = Field(min_length=1, max_length=128, description="The user's 'sub' (in the caller's own pool).")


class _DataFeed:
    """Hands each new data point to the WebSocket clients watching its device."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    @contextmanager
    def watching(self, serial: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._watchers.setdefault(serial, set()).add(queue)
        try:
            yield queue
        finally:
            self._watchers[serial].discard(queue)

    def publish(self, serial: str, record: dict[str, Any]) -> None:
        for queue in self._watchers.get(serial, ()):
            if not queue.full():  # a client that stopped reading misses points, never stalls the API
                queue.put_nowait(record)


def _prometheus_metrics() -> Any:
    """A PrometheusMetrics on its own registry, or None without the ``prometheus`` extra."""
    try:
        from prometheus_client import CollectorRegistry

        from siot_authz.metrics import PrometheusMetrics
    except ImportError:
        return None
    return PrometheusMetrics(CollectorRegistry())


def _error(status_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message, **extra}, status_code=status_code)


def _install_error_shapes(app: FastAPI) -> None:
    @app.exception_handler(AuthHTTPException)
    async def auth_failed(request: Request, exc: AuthHTTPException) -> JSONResponse:
        response = _error(exc.status_code, exc.error.detail, code=exc.error.code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(HTTPException)
    async def http_failed(request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(part) for part in error["loc"][1:]) for error in exc.errors()})
        return _error(422, f"invalid request: {', '.join(fields)}")


def create_app(auth: CognitoAuth | PoolSettings, *, database: Database | str | Path | None = None) -> FastAPI:
    """The example API.

    ``auth`` is the pools' settings, from which the app builds its
    ``CognitoAuth`` with everything wired (roles from ``database``, metrics
    when prometheus_client is installed), or a ready ``CognitoAuth``: one
    without a roles source gets the database's. ``database`` is a
    :class:`Database`, a SQLite file path, or None for a temporary one; a
    database the app opens it also closes at shutdown. The demo users
    (ada, an admin, and bob) are seeded either way.
    """
    db = database if isinstance(database, Database) else Database(database)
    db.seed_demo_users()
    metrics = _prometheus_metrics()

    def team_roles(principal: Principal) -> list[str]:
        # The database holds one team's users, as SimpleIOT's does: the first
        # configured pool's. A same-named user of another pool is not them.
        if principal.user_pool_id != cognito.verifier.pools[0].user_pool_id:
            return []
        return db.roles_of(principal)

    if not isinstance(auth, CognitoAuth):
        auth = CognitoAuth(auth, roles=team_roles, observer=metrics)
    elif auth.roles is None:
        auth.roles = RolesCache(team_roles)
    if metrics is not None:
        metrics.watch(auth)
    cognito = auth
    feed = _DataFeed()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with cognito.lifespan(app):
                yield
        finally:
            if db is not database:
                db.close()

    app = FastAPI(
        title="SimpleIOT example API",
        description="Routes protected by siot_authz. Use 'Authorize' with an ID token.",
        lifespan=lifespan,
    )
    _install_error_shapes(app)
    admin_only = cognito.require_roles("admin")
    with_roles = cognito.with_roles()

    # -- operations -------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once signing keys are held for every pool and revocations are enforceable, else 503."""
        health = cognito.health()
        if health.is_ready:
            return JSONResponse({"status": "ok", "health": health.to_dict()})
        return _error(
            503, "not ready: no signing keys yet, or revocations unconfirmed", health=health.to_dict()
        )

    if metrics is not None:
        app.add_route("/metrics", metrics.asgi_app(), include_in_schema=False)
    else:

        @app.get("/metrics", include_in_schema=False)
        async def metrics_missing() -> JSONResponse:
            return _error(501, METRICS_HINT)

    # -- who am I ---------------------------------------------------------------------

    @app.get("/v1/me")
    async def me(principal: Principal = Depends(cognito)) -> dict[str, Any]:
        return {"status": "ok", "principal": principal.model_dump(mode="json")}

    @app.get("/v1/me/roles")
    async def my_roles(principal: RolesPrincipal = Depends(with_roles)) -> dict[str, Any]:
        return {"status": "ok", "username": principal.username, "roles": list(principal.roles)}

    # -- projects, devices, data ------------------------------------------------------

    @app.get("/v1/project")
    def list_projects(principal: Principal = Depends(cognito)) -> dict[str, Any]:
        return {"status": "ok", "projects": db.projects()}

    @app.post("/v1/project", status_code=201)
    def create_project(project: ProjectIn, principal: Principal = Depends(cognito)) -> dict[str, Any]:
        record = db.add_project(project.name, project.desc, principal.username)
        if record is None:
            raise HTTPException(409, f"project {project.name!r} exists")
        return {"status": "ok", "project": record}

    @app.delete("/v1/project")
    def delete_project(name: str, principal: RolesPrincipal = Depends(admin_only)) -> dict[str, Any]:
        if not db.delete_project(name):
            raise HTTPException(404, f"project {name!r} not found")
        return {"status": "ok", "message": f"project {name!r} deleted"}

    @app.get("/v1/device")
    def list_devices(project: str | None = None, principal: Principal = Depends(cognito)) -> dict[str, Any]:
        return {"status": "ok", "devices": db.devices(project)}

    @app.post("/v1/device", status_code=201)
    def create_device(device: DeviceIn, principal: Principal = Depends(cognito)) -> dict[str, Any]:
        if not db.has_project(device.project):
            raise HTTPException(404, f"project {device.project!r} not found")
        record = db.add_device(device.serial, device.project, principal.username)
        if record is None:
            raise HTTPException(409, f"device {device.serial!r} exists")
        return {"status": "ok", "device": record}

    @app.delete("/v1/device")
    def delete_device(serial: str, principal: RolesPrincipal = Depends(admin_only)) -> dict[str, Any]:
        if not db.delete_device(serial):  # its data goes with it
            raise HTTPException(404, f"device {serial!r} not found")
        return {"status": "ok", "message": f"device {serial!r} deleted"}

    @app.get("/v1/data")
    def get_data(serial: str, principal: Principal = Depends(cognito)) -> dict[str, Any]:
        if not db.has_device(serial):
            raise HTTPException(404, f"device {serial!r} not found")
        return {"status": "ok", "serial": serial, "data": db.data(serial)}

    @app.post("/v1/data", status_code=201)
    async def post_data(data: DataIn, principal: Principal = Depends(cognito)) -> dict[str, Any]:
        if not await run_in_threadpool(db.has_device, data.serial):
            raise HTTPException(404, f"device {data.serial!r} not found")
        record = await run_in_threadpool(db.add_data, data.serial, data.name, data.value)
        feed.publish(data.serial, record)
        return {"status": "ok", "serial": data.serial, "data": record}

    @app.delete("/v1/data")
    def delete_data(serial: str, principal: RolesPrincipal = Depends(admin_only)) -> dict[str, Any]:
        if not db.has_device(serial):
            raise HTTPException(404, f"device {serial!r} not found")
        return {"status": "ok", "message": f"{db.delete_data(serial)} values deleted"}

    @app.websocket("/v1/ws/data")
    async def stream_data(websocket: WebSocket, serial: str, principal: Principal = Depends(cognito)) -> None:
        """A device's data so far, then each new point as it is posted: ``{"serial", "data"}`` per message.

        The token is checked at the handshake: from ``Authorization``, or,
        from a browser, ``new WebSocket(url, ["bearer", token])``. The socket
        is closed with 4401 when the token expires and 4403 when it is revoked.
        """
        if not await run_in_threadpool(db.has_device, serial):
            await websocket.close(code=1008, reason="device not found")  # before accept: declined
            return
        await accept_websocket(websocket)  # picks "bearer" when the token came that way
        with feed.watching(serial) as queue:
            for record in await run_in_threadpool(db.data, serial):
                await websocket.send_json({"serial": serial, "data": record})
            await _forward(websocket, queue, serial)

    # -- administration ---------------------------------------------------------------

    @app.post("/v1/admin/revoke")
    async def revoke_user(body: RevokeIn, principal: RolesPrincipal = Depends(admin_only)) -> dict[str, Any]:
        """Refuse every token the user holds now (say, after removing them from the team); new logins pass."""
        try:
            # An admin of one team revokes in that team only.
            entry = await cognito.verifier.revoke_user(principal.user_pool_id, body.sub)
        except RevocationStoreUnavailable:
            raise HTTPException(503, "the revocation store is unreachable; nothing was revoked") from None
        return {"status": "ok", "revocation": entry.to_json()}

    return app


async def _forward(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]], serial: str) -> None:
    """Send each queued point until the client goes away (its own messages are ignored)."""
    receiving = asyncio.ensure_future(websocket.receive())
    getting = asyncio.ensure_future(queue.get())
    try:
        while True:
            done, _ = await asyncio.wait({receiving, getting}, return_when=asyncio.FIRST_COMPLETED)
            if getting in done:
                try:
                    await websocket.send_json({"serial": serial, "data": getting.result()})
                except WebSocketDisconnect:
                    return  # closed in this same turn: its token ended, or the client left
                getting = asyncio.ensure_future(queue.get())
            if receiving in done:
                if receiving.result()["type"] == "websocket.disconnect":
                    return
                receiving = asyncio.ensure_future(websocket.receive())
    finally:
        receiving.cancel()
        getting.cancel()
