"""Shared fixtures: a local Cognito stand-in with its JWKS on a real loopback HTTP server."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from siot_authz import AuthSettings, CognitoAuth, Principal, TokenVerifier
from siot_authz.testing import JwksServer, LocalIssuer


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _only_loopback_traffic() -> Iterator[None]:
    """Fail any test that resolves or connects to anything but loopback.

    Tests, like the benchmark, may talk only to 127.0.0.1; a DNS lookup of a
    real Cognito host is already traffic. Covers this process (and its
    threads); subprocesses are given loopback URLs by the tests that start them.
    """
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise OSError(f"test tried to resolve non-loopback host {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"test tried to connect to non-loopback address {address[0]!r}")
        return real_connect(self, address)

    socket.getaddrinfo = guarded_getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo
        socket.socket.connect = real_connect  # type: ignore[method-assign]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def built_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel of this checkout, built once per run for every file that needs them.

    Under pytest-xdist each worker has its own session, so the build goes to
    the run's shared temporary folder (the parent of the workers' own), and a
    file lock makes the first worker build while any other waits and reuses it.
    """
    from lambda_package import build_distributions

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if base.name.startswith("popen-gw") else base
    out = shared / "built-dist"
    with open(shared / "built-dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (shared / "built-dist.complete").exists():
                build_distributions(out)
                (shared / "built-dist.complete").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


@pytest.fixture(scope="session")
def _session_issuer() -> Iterator[LocalIssuer]:
    # RSA key generation is slow; one issuer (and server) serves the session.
    with LocalIssuer() as issuer:
        issuer.serve()
        yield issuer


@pytest.fixture
def issuer(_session_issuer: LocalIssuer) -> Iterator[LocalIssuer]:
    """A local user pool whose JWKS is served on 127.0.0.1; reset after each test."""
    original_keys = list(_session_issuer.keys)
    server = _session_issuer.serve()
    server.reset()
    yield _session_issuer
    _session_issuer.keys = original_keys
    server.reset()


@pytest.fixture
def jwks_server(issuer: LocalIssuer) -> JwksServer:
    """The loopback server publishing ``issuer``'s JWKS; set ``.response`` to make it misbehave."""
    return issuer.serve()


@pytest.fixture
def settings(issuer: LocalIssuer) -> AuthSettings:
    """Settings trusting ``issuer``, with a short HTTP timeout so failure tests stay quick."""
    return issuer.settings(http_timeout_seconds=2.0)


@pytest.fixture
def verifier(settings: AuthSettings) -> Iterator[TokenVerifier]:
    verifier = TokenVerifier(settings)
    yield verifier
    verifier.close()


@pytest.fixture
def auth(settings: AuthSettings) -> CognitoAuth:
    return CognitoAuth(settings)


@pytest.fixture
def app(auth: CognitoAuth) -> FastAPI:
    """A minimal protected app: /me (any valid token), /admin (group admin), /scoped (scope)."""
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> Principal:
        return principal

    @app.get("/me-sync")
    def me_sync(principal: Principal = Depends(auth)) -> Principal:
        return principal

    @app.delete("/admin")
    async def admin(principal: Principal = Depends(auth.require_groups("admin"))) -> dict[str, str]:
        return {"deleted_by": principal.username}

    @app.get("/scoped")
    async def scoped(
        principal: Principal = Depends(auth.require_scopes("siot/read")),
    ) -> dict[str, str]:
        return {"user": principal.username}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
