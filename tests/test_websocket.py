"""CognitoAuth on WebSocket routes, with real clients against a real uvicorn on loopback.

The ``websockets`` library sends the token in ``Authorization``, as a
service would; node's built-in WebSocket offers it as the ``bearer``
subprotocol, as a browser must. A refused handshake never opens, runs no
route code and never becomes a server error, declined either way
(``websocket_denial="close"``, the default, or ``"response"``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from siot_authz import CognitoAuth, Principal, RolesPrincipal, accept_websocket
from siot_authz.testing import LocalIssuer
from uvicorn_thread import ThreadedUvicorn

NODE_CLIENT = Path(__file__).with_name("ws_client.mjs")
# uvicorn's websockets-sansio implementation (its default) logs this after every denial
# response, though the client got the response whole: uvicorn PR #3138, open. It is why
# websocket_denial="response" is not the default; with "close" nothing is logged at all.
UVICORN_SPURIOUS_ERROR = "ASGI callable returned without completing handshake."


class WithoutDenialResponses:
    """Hides the server's WebSocket Denial Response extension from handshakes sending ``x-no-denial``.

    Stands in for an ASGI server that cannot answer a handshake with an
    HTTP response, so the close-before-accept path runs against real uvicorn.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and (b"x-no-denial", b"1") in scope["headers"]:
            extensions = dict(scope.get("extensions") or {})
            extensions.pop("websocket.http.response", None)
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


def ws_app(auth: CognitoAuth, query_auth: CognitoAuth, route_calls: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with auth.lifespan(app), query_auth.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)

    async def serve(websocket: WebSocket, principal: Principal, route: str) -> None:
        route_calls.append(route)
        await accept_websocket(websocket)
        roles = list(principal.roles) if isinstance(principal, RolesPrincipal) else None
        await websocket.send_json({"user": principal.username, "route": route, "roles": roles})
        await websocket.send_text("echo:" + await websocket.receive_text())
        await websocket.close()

    dependencies: dict[str, tuple[str, Callable[..., Any]]] = {
        "/ws/echo": ("echo", auth),
        "/ws/admin": ("admin", auth.require_groups("admin")),
        "/ws/roles": ("roles", auth.require_roles("operator")),
        "/ws/scoped": ("scoped", auth.require_scopes("siot/read")),
        "/q/ws/echo": ("query", query_auth),
    }

    def endpoint(route: str, dependency: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        async def serve_route(websocket: WebSocket, principal: Principal = Depends(dependency)) -> None:
            await serve(websocket, principal, route)

        return serve_route

    for path, (route, dependency) in dependencies.items():
        app.add_api_websocket_route(path, endpoint(route, dependency))

    return app


class Server(ThreadedUvicorn):
    """A uvicorn serving the test app in a thread on a free loopback port; ``route_calls`` logs route code."""

    def __init__(self, issuer: LocalIssuer, denial: Literal["close", "response"]) -> None:
        self.route_calls: list[str] = []
        self.denial = denial
        auth = CognitoAuth(
            issuer.settings(),
            roles=lambda principal: ["operator"] if principal.username == "ada" else [],
            websocket_denial=denial,
        )
        query_auth = CognitoAuth(issuer.settings(), websocket_query_param="token", websocket_denial=denial)
        super().__init__(WithoutDenialResponses(ws_app(auth, query_auth, self.route_calls)))


@pytest.fixture(scope="module", params=["close", "response"], ids=lambda denial: f"denial={denial}")
def server(request: pytest.FixtureRequest, _session_issuer: LocalIssuer) -> Iterator[Server]:
    with Server(_session_issuer, request.param) as server:
        yield server


@pytest.fixture
def route_calls(server: Server) -> list[str]:
    server.route_calls.clear()
    return server.route_calls


@pytest.fixture
def no_server_errors(server: Server, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if the server logged any ERROR while it ran ("Exception in ASGI application" and the like)."""
    idle_tasks = server.task_count()
    with caplog.at_level(logging.INFO):
        yield
        # The server finishes a refused connection after the client has its answer.
        server.wait_until_idle(idle_tasks)
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    if server.denial == "response":
        errors = [message for message in errors if message != UVICORN_SPURIOUS_ERROR]
    assert errors == []


def talk(connection: ClientConnection) -> list[Any]:
    """The greeting, then the echo of a ping."""
    greeting = json.loads(connection.recv(timeout=5))
    connection.send("ping")
    return [greeting, connection.recv(timeout=5)]


def test_websockets_client_with_authorization_header_gets_in(
    server: Server, issuer: LocalIssuer, route_calls: list[str]
) -> None:
    token = issuer.mint(username="ada")
    with connect(f"{server.url}/ws/echo", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert ws.subprotocol is None
        greeting, echo = talk(ws)
    assert greeting == {"user": "ada", "route": "echo", "roles": None}
    assert echo == "echo:ping"
    assert route_calls == ["echo"]


@pytest.mark.parametrize("marker", ["bearer", "Bearer"])
def test_bearer_subprotocol_is_accepted_as_offered_and_the_token_never_echoed(
    server: Server, issuer: LocalIssuer, marker: str
) -> None:
    token = issuer.mint(username="ada")
    with connect(f"{server.url}/ws/echo", subprotocols=[marker, token]) as ws:  # type: ignore[list-item]
        # The client's own spelling: a client refuses an answer that is none of its offers.
        assert ws.subprotocol == marker
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == marker
        assert token not in str(ws.response.headers)
        greeting, _ = talk(ws)
    assert greeting["user"] == "ada"


def run_node(url: str, offered: list[str]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    finished = subprocess.run(
        [node, "--no-warnings", "--experimental-websocket", str(NODE_CLIENT), url, json.dumps(offered)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


@pytest.mark.parametrize(
    ("path", "username", "roles"),
    [("/ws/echo", "bob", None), ("/ws/admin", "ada", None), ("/ws/roles", "ada", ["operator"])],
)
def test_browser_like_node_client_gets_in_with_the_bearer_subprotocol(
    server: Server, issuer: LocalIssuer, path: str, username: str, roles: list[str] | None
) -> None:
    token = issuer.mint(username=username, groups=["admin"] if username == "ada" else [])
    result = run_node(f"{server.url}{path}", ["bearer", token])
    assert result["opened"] is True, result
    assert result["protocol"] == "bearer"
    assert json.loads(result["messages"][0])["user"] == username
    assert json.loads(result["messages"][0])["roles"] == roles
    assert result["messages"][1] == "echo:ping"
    assert result["closeCode"] == 1000


def refused_cases(issuer: LocalIssuer) -> dict[str, tuple[str, dict[str, str], list[str] | None, int, str]]:
    """name -> (path, headers, subprotocols, HTTP status, code)."""
    bob = issuer.mint(username="bob")
    ada = issuer.mint(username="ada", groups=["admin"])
    expired = issuer.mint(username="ada", iat=int(time.time()) - 7200, expires_in=-3600)
    return {
        "no token": ("/ws/echo", {}, None, 401, "missing_token"),
        "bearer offer without token": ("/ws/echo", {}, ["bearer"], 401, "missing_token"),
        "garbage token": ("/ws/echo", {"Authorization": "Bearer not.a.jwt"}, None, 401, "token_malformed"),
        "garbage in the offer": ("/ws/echo", {}, ["bearer", "not.a.jwt"], 401, "token_malformed"),
        "expired token": ("/ws/echo", {"Authorization": expired}, None, 401, "token_expired"),
        "wrong group": ("/ws/admin", {"Authorization": bob}, None, 403, "missing_group"),
        "wrong group in the offer": ("/ws/admin", {}, ["bearer", bob], 403, "missing_group"),
        "missing role": ("/ws/roles", {"Authorization": bob}, None, 403, "missing_role"),
        "missing scope": ("/ws/scoped", {"Authorization": ada}, None, 403, "missing_scope"),
        "token in query, not opted in": (f"/ws/echo?token={ada}", {}, None, 401, "missing_token"),
    }


REFUSED = [
    "no token",
    "bearer offer without token",
    "garbage token",
    "garbage in the offer",
    "expired token",
    "wrong group",
    "wrong group in the offer",
    "missing role",
    "missing scope",
    "token in query, not opted in",
]


@pytest.mark.parametrize("has_denial_extension", [True, False], ids=["server with denials", "without"])
@pytest.mark.parametrize("case", REFUSED)
def test_refused_handshake_is_declined_and_runs_no_route_code(
    server: Server,
    issuer: LocalIssuer,
    route_calls: list[str],
    no_server_errors: None,
    case: str,
    has_denial_extension: bool,
) -> None:
    path, headers, subprotocols, status, code = refused_cases(issuer)[case]
    if not has_denial_extension:
        headers = {**headers, "x-no-denial": "1"}
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url}{path}", additional_headers=headers, subprotocols=subprotocols)  # type: ignore[arg-type]
    response = refused.value.response
    if server.denial == "close" or not has_denial_extension:
        assert response.status_code == 403  # what a server answers a close before accept
        assert "WWW-Authenticate" not in response.headers
    else:
        assert response.status_code == status
        assert json.loads(response.body or b"{}")["detail"]["code"] == code
        challenge = "Bearer" if code == "missing_token" else 'Bearer error="invalid_token"'
        if status == 403:
            challenge = 'Bearer error="insufficient_scope"'
        assert response.headers["WWW-Authenticate"] == challenge
    assert route_calls == []


@pytest.mark.parametrize("case", ["no token", "garbage in the offer", "wrong group in the offer"])
def test_refused_handshake_never_opens_in_a_browser_like_client(
    server: Server, issuer: LocalIssuer, route_calls: list[str], case: str
) -> None:
    path, _, subprotocols, _, _ = refused_cases(issuer)[case]
    result = run_node(f"{server.url}{path}", subprotocols or [])
    assert result["opened"] is False
    assert result["error"] == "error"  # all a browser learns of a declined handshake
    assert result["messages"] == []
    assert route_calls == []


def test_query_parameter_works_only_where_opted_in(server: Server, issuer: LocalIssuer) -> None:
    token = issuer.mint(username="bob")
    with connect(f"{server.url}/q/ws/echo?token={token}") as ws:
        greeting, _ = talk(ws)
    assert greeting == {"user": "bob", "route": "query", "roles": None}


def test_the_header_wins_over_the_offer(server: Server, issuer: LocalIssuer) -> None:
    ada, bob = issuer.mint(username="ada"), issuer.mint(username="bob")
    with connect(
        f"{server.url}/ws/echo",
        additional_headers={"Authorization": ada},
        subprotocols=["bearer", bob],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "bearer"
        greeting, _ = talk(ws)
    assert greeting["user"] == "ada"
