"""Shared fixtures: a local Cognito stand-in with its JWKS on a real loopback HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from siot_authz import AuthSettings, CognitoAuth, Principal, TokenVerifier
from siot_authz.testing import JwksServer, LocalIssuer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
