"""The example API: projects, devices and data, shaped like SimpleIOT's.

Every ``/v1`` route needs a valid Cognito ID token; DELETE also needs the
``admin`` group. Responses follow SimpleIOT's ``{"status": "ok", ...}`` and
``{"status": "error", "message": ...}`` shapes, auth failures included.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from siot_authz import AuthHTTPException, CognitoAuth, Principal


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


class _Store:
    """In-memory records keyed by name; a stand-in for SimpleIOT's database."""

    def __init__(self) -> None:
        self.projects: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.data: dict[str, list[dict[str, Any]]] = {}


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


def create_app(auth: CognitoAuth) -> FastAPI:
    """The example API, protected by ``auth``."""
    app = FastAPI(
        title="SimpleIOT example API",
        description="Routes protected by siot_authz. Use 'Authorize' with an ID token.",
        lifespan=auth.lifespan,
    )
    _install_error_shapes(app)
    store = _Store()
    admin_only = auth.require_groups("admin")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, Any]:
        return {"status": "ok", "principal": principal.model_dump(mode="json")}

    @app.get("/v1/project")
    async def list_projects(principal: Principal = Depends(auth)) -> dict[str, Any]:
        return {"status": "ok", "projects": list(store.projects.values())}

    @app.post("/v1/project", status_code=201)
    async def create_project(project: ProjectIn, principal: Principal = Depends(auth)) -> dict[str, Any]:
        if project.name in store.projects:
            raise HTTPException(409, f"project {project.name!r} exists")
        record = {**project.model_dump(), "owner": principal.username}
        store.projects[project.name] = record
        return {"status": "ok", "project": record}

    @app.delete("/v1/project")
    async def delete_project(name: str, principal: Principal = Depends(admin_only)) -> dict[str, Any]:
        if store.projects.pop(name, None) is None:
            raise HTTPException(404, f"project {name!r} not found")
        return {"status": "ok", "message": f"project {name!r} deleted"}

    @app.get("/v1/device")
    async def list_devices(
        project: str | None = None, principal: Principal = Depends(auth)
    ) -> dict[str, Any]:
        devices = [d for d in store.devices.values() if project is None or d["project"] == project]
        return {"status": "ok", "devices": devices}

    @app.post("/v1/device", status_code=201)
    async def create_device(device: DeviceIn, principal: Principal = Depends(auth)) -> dict[str, Any]:
        if device.project not in store.projects:
            raise HTTPException(404, f"project {device.project!r} not found")
        if device.serial in store.devices:
            raise HTTPException(409, f"device {device.serial!r} exists")
        record = {**device.model_dump(), "owner": principal.username}
        store.devices[device.serial] = record
        return {"status": "ok", "device": record}

    @app.delete("/v1/device")
    async def delete_device(serial: str, principal: Principal = Depends(admin_only)) -> dict[str, Any]:
        if store.devices.pop(serial, None) is None:
            raise HTTPException(404, f"device {serial!r} not found")
        store.data.pop(serial, None)
        return {"status": "ok", "message": f"device {serial!r} deleted"}

    @app.get("/v1/data")
    async def get_data(serial: str, principal: Principal = Depends(auth)) -> dict[str, Any]:
        if serial not in store.devices:
            raise HTTPException(404, f"device {serial!r} not found")
        return {"status": "ok", "serial": serial, "data": store.data.get(serial, [])}

    @app.post("/v1/data", status_code=201)
    async def post_data(data: DataIn, principal: Principal = Depends(auth)) -> dict[str, Any]:
        if data.serial not in store.devices:
            raise HTTPException(404, f"device {data.serial!r} not found")
        record = {"name": data.name, "value": data.value}
        store.data.setdefault(data.serial, []).append(record)
        return {"status": "ok", "serial": data.serial, "data": record}

    @app.delete("/v1/data")
    async def delete_data(serial: str, principal: Principal = Depends(admin_only)) -> dict[str, Any]:
        if serial not in store.devices:
            raise HTTPException(404, f"device {serial!r} not found")
        removed = len(store.data.pop(serial, []))
        return {"status": "ok", "message": f"{removed} values deleted"}

    return app
