"""An open WebSocket ends with its token: closed at ``exp`` (4401) and on a revocation (4403).

Real uvicorn on loopback, real clients: the ``websockets`` library, node's
built-in WebSocket and Chromium (through Playwright, driving the system's
browser). Each route keeps its own account of what it sent and how it learned
that the socket ended, so the tests can tell that nothing was sent after the
close and that the route heard of it the Starlette way: its ``receive`` gave
a disconnect, or its ``send`` raised ``WebSocketDisconnect``. After every
test the server holds no watcher, no mirror listener and no extra task.
tests/test_websocket_workers.py does the same across two worker processes
sharing Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chromium import closed_in_page, launched_chromium, open_in_page
from siot_authz import CognitoAuth, Principal, accept_websocket
from siot_authz._websocket import WS_4401_TOKEN_EXPIRED, WS_4403_TOKEN_REVOKED, open_socket_count
from siot_authz.testing import LocalIssuer
from uvicorn_thread import ThreadedUvicorn

NODE_CLIENT = Path(__file__).with_name("ws_client.mjs")
#: The verifier's leeway in these tests: a socket ends at exp + leeway, when HTTP would refuse the token.
LEEWAY = 1.0
#: The promise: a revocation closes a covered socket within a second.
REVOCATION_LIMIT = 1.0


@dataclass
class RouteLog:
    """What a route saw of one socket: the messages it sent without error, and how it learned of the end."""

    sent: int = 0
    #: ("receive" | "send", close code) once the route learned the socket had ended.
    ended: tuple[str, int] | None = None
    errors: list[str] = field(default_factory=list)


def lifetime_app(auth: CognitoAuth, kept: CognitoAuth, logs: dict[str, RouteLog]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        async with auth.lifespan(app), kept.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws/stream")
    async def stream(websocket: WebSocket, name: str, principal: Principal = Depends(auth)) -> None:
        """Sends a counter every 20 ms and never reads: learns of the end when a send raises."""
        log = logs[name] = RouteLog()
        await accept_websocket(websocket)
        try:
            while True:
                await websocket.send_text(str(log.sent))
                log.sent += 1
                await asyncio.sleep(0.02)
        except WebSocketDisconnect as end:
            log.ended = ("send", end.code)

    async def echo(websocket: WebSocket, name: str) -> None:
        log = logs[name] = RouteLog()
        await accept_websocket(websocket)
        while True:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnect as end:
                log.ended = ("receive", end.code)
                return
            try:
                await websocket.send_text(f"echo:{text}")
            except WebSocketDisconnect as end:
                log.ended = ("send", end.code)
                return
            log.sent += 1

    @app.websocket("/ws/echo")
    async def echo_route(websocket: WebSocket, name: str, principal: Principal = Depends(auth)) -> None:
        """Answers each message: learns of the end when its receive gives a disconnect."""
        await echo(websocket, name)

    @app.websocket("/ws/admin")
    async def admin_echo(
        websocket: WebSocket, name: str, principal: Principal = Depends(auth.require_groups("admin"))
    ) -> None:
        await echo(websocket, name)

    @app.websocket("/ws/kept")
    async def kept_echo(websocket: WebSocket, name: str, principal: Principal = Depends(kept)) -> None:
        """Behind a dependency that lets sockets outlive their token."""
        await echo(websocket, name)

    @app.websocket("/ws/once")
    async def once(websocket: WebSocket, name: str, principal: Principal = Depends(auth)) -> None:
        """Says hello and closes by itself."""
        logs[name] = RouteLog(sent=1)
        await accept_websocket(websocket)
        await websocket.send_text("hello")
        await websocket.close()

    return app


@dataclass
class Served:
    server: ThreadedUvicorn
    auth: CognitoAuth
    kept: CognitoAuth
    logs: dict[str, RouteLog]
    issuer: LocalIssuer
    baseline_tasks: int

    def url(self, path: str, name: str) -> str:
        return f"{self.server.url}{path}?name={name}"

    def route_log(self, name: str, *, ended: bool = True, timeout: float = 5) -> RouteLog:
        """The route's log for socket ``name``, once the route has learned the socket ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.logs.get(name)
            if log is not None and (log.ended is not None or not ended):
                return log
            time.sleep(0.01)
        raise AssertionError(f"route {name} never learned its socket ended: {self.logs.get(name)}")

    def revoke_user(self, username: str) -> float:
        """Revoke ``username`` from this (test) thread, as a sync admin route would; returns when."""
        self.auth.verifier.revoke_user_sync(
            self.issuer.user_pool_id, self.issuer.claims(username=username)["sub"]
        )
        return time.time()


@pytest.fixture(scope="module")
def served(_session_issuer: LocalIssuer) -> Iterator[Served]:
    settings = _session_issuer.settings(leeway_seconds=LEEWAY)
    auth, kept = CognitoAuth(settings), CognitoAuth(settings)
    kept.ends_websockets_with_token = False
    logs: dict[str, RouteLog] = {}
    with ThreadedUvicorn(lifetime_app(auth, kept, logs)) as server:
        yield Served(server, auth, kept, logs, _session_issuer, server.task_count())


@pytest.fixture
def app(served: Served, caplog: pytest.LogCaptureFixture) -> Iterator[Served]:
    """The shared server; afterwards, nothing of the test's sockets may be left in it, and nothing logged an ERROR."""
    with caplog.at_level(logging.INFO):
        yield served
        deadline = time.monotonic() + 10
        mirror = served.auth.verifier.revocations.mirror
        while time.monotonic() < deadline:
            leftovers = (open_socket_count(mirror), mirror.listener_count, served.server.task_count())
            if leftovers == (0, 0, served.baseline_tasks):
                break
            time.sleep(0.02)
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert leftovers == (0, 0, served.baseline_tasks), "sockets, listeners, tasks left behind"
    assert errors == []


def unique_user() -> str:
    # A user revocation covers every token of that user minted up to now: one user per test.
    return f"user-{uuid.uuid4().hex[:12]}"


def short_lived(issuer: LocalIssuer) -> tuple[str, float]:
    """A token of a fresh user that expires a second from now, and its ``exp``.

    The exp is fractional (a JWT NumericDate may be): a whole-second exp a whole second or two
    ahead left between one and two seconds before it, so each test waited a second and a half
    on average (plus the leeway) where one second, the shortest it ever had, serves.
    """
    exp = time.time() + 1
    return issuer.mint(username=unique_user(), exp=exp), exp


def read_until_closed(ws: ClientConnection, timeout: float = 10) -> tuple[list[str], int, str, float]:
    """Every message until the server closes: (messages, close code, reason, when the close arrived)."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as closed:
            received = closed.rcvd  # None when the server sent no close frame
            code, reason = (1006, "") if received is None else (received.code, received.reason)
            return messages, code, reason, time.time()
        messages.append(str(message))


# -- the websockets library ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/stream", "/ws/echo"])
def test_a_socket_closes_with_4401_when_its_token_expires(app: Served, path: str) -> None:
    name = f"exp-{uuid.uuid4().hex}"
    token, exp = short_lived(app.issuer)

    with connect(app.url(path, name), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        if path == "/ws/echo":
            ws.send("ping")
        messages, code, reason, closed_at = read_until_closed(ws)

    assert (code, reason) == (WS_4401_TOKEN_EXPIRED, "token_expired")
    # At exp plus the leeway, the moment an HTTP request with the token would be refused.
    assert exp + LEEWAY - 0.05 <= closed_at <= exp + LEEWAY + 3
    log = app.route_log(name)
    assert log.sent == len(messages), "every send the route made reached the client, and none after"
    # The stream learns from its next send; the echo route from its pending receive.
    assert log.ended == ("send" if path == "/ws/stream" else "receive", WS_4401_TOKEN_EXPIRED)


def test_a_revoked_users_sockets_close_with_4403_within_a_second_and_others_stay(app: Served) -> None:
    mallory, alice = unique_user(), unique_user()
    names = {key: f"{key}-{uuid.uuid4().hex}" for key in ("stream", "echo", "other")}
    header = {"Authorization": f"Bearer {app.issuer.mint(username=mallory)}"}
    with (
        connect(app.url("/ws/stream", names["stream"]), additional_headers=header) as stream,
        connect(app.url("/ws/echo", names["echo"]), additional_headers=header) as echo,
        connect(
            app.url("/ws/echo", names["other"]),
            additional_headers={"Authorization": f"Bearer {app.issuer.mint(username=alice)}"},
        ) as other,
    ):
        stream.recv(timeout=5)  # both open and served
        echo.send("a")
        assert echo.recv(timeout=5) == "echo:a"

        revoked_at = app.revoke_user(mallory)
        streamed, stream_code, _, stream_closed_at = read_until_closed(stream)
        _, echo_code, echo_reason, echo_closed_at = read_until_closed(echo)

        other.send("still there?")
        assert other.recv(timeout=5) == "echo:still there?"

    assert (stream_code, echo_code, echo_reason) == (
        WS_4403_TOKEN_REVOKED,
        WS_4403_TOKEN_REVOKED,
        "token_revoked",
    )
    assert max(stream_closed_at, echo_closed_at) - revoked_at < REVOCATION_LIMIT
    assert app.route_log(names["stream"]).ended == ("send", WS_4403_TOKEN_REVOKED)
    assert app.route_log(names["stream"]).sent == len(streamed) + 1  # the one read before the revocation
    assert app.route_log(names["echo"]).ended == ("receive", WS_4403_TOKEN_REVOKED)
    assert app.route_log(names["other"]).ended == ("receive", 1000)  # closed by its client, normally


def test_a_revoked_session_closes_only_the_sockets_of_that_session(app: Served) -> None:
    user, revoked_name, kept_name = unique_user(), f"s1-{uuid.uuid4().hex}", f"s2-{uuid.uuid4().hex}"
    revoked_jti, kept_jti = str(uuid.uuid4()), str(uuid.uuid4())
    with (
        connect(
            app.url("/ws/echo", revoked_name),
            additional_headers={"Authorization": app.issuer.mint(username=user, origin_jti=revoked_jti)},
        ) as revoked,
        connect(
            app.url("/ws/echo", kept_name),
            additional_headers={"Authorization": app.issuer.mint(username=user, origin_jti=kept_jti)},
        ) as kept,
    ):
        app.auth.verifier.revoke_session_sync(app.issuer.user_pool_id, revoked_jti)

        _, code, reason, _ = read_until_closed(revoked)
        kept.send("b")
        assert kept.recv(timeout=5) == "echo:b"

    assert (code, reason) == (WS_4403_TOKEN_REVOKED, "token_revoked")


def test_a_revocation_made_on_the_event_loop_closes_the_socket_too(app: Served) -> None:
    """``await revoke_user(...)`` in an async admin route: the listener runs on the loop itself."""
    user, name = unique_user(), f"loop-{uuid.uuid4().hex}"
    with connect(
        app.url("/ws/echo", name), additional_headers={"Authorization": app.issuer.mint(username=user)}
    ) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        app.server.run(
            app.auth.verifier.revoke_user(app.issuer.user_pool_id, app.issuer.claims(username=user)["sub"])
        )
        _, code, _, _ = read_until_closed(ws)
    assert code == WS_4403_TOKEN_REVOKED


def test_authorization_dependencies_end_sockets_with_their_token_as_well(app: Served) -> None:
    user, name = unique_user(), f"admin-{uuid.uuid4().hex}"
    token = app.issuer.mint(username=user, groups=["admin"])
    with connect(app.url("/ws/admin", name), additional_headers={"Authorization": token}) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "echo:x"
        app.revoke_user(user)
        _, code, _, _ = read_until_closed(ws)
    assert code == WS_4403_TOKEN_REVOKED


def test_a_dependency_that_opts_out_keeps_sockets_open_after_revocation(app: Served) -> None:
    user, name = unique_user(), f"kept-{uuid.uuid4().hex}"
    with connect(
        app.url("/ws/kept", name), additional_headers={"Authorization": app.issuer.mint(username=user)}
    ) as ws:
        app.kept.verifier.revoke_user_sync(app.issuer.user_pool_id, app.issuer.claims(username=user)["sub"])
        time.sleep(0.3)
        ws.send("still open")
        assert ws.recv(timeout=5) == "echo:still open"


def test_sockets_that_end_normally_leave_nothing_behind(app: Served) -> None:
    """Closed by the client, or by the route itself: the ``app`` fixture then finds no watcher, listener or task."""
    token = app.issuer.mint(username=unique_user())
    for index in range(5):
        with connect(
            app.url("/ws/echo", f"client-{index}"), additional_headers={"Authorization": token}
        ) as ws:
            ws.send("x")
            ws.recv(timeout=5)
        with connect(
            app.url("/ws/once", f"route-{index}"), additional_headers={"Authorization": token}
        ) as ws:
            assert ws.recv(timeout=5) == "hello"
    mirror = app.auth.verifier.revocations.mirror
    # While one is open, exactly one listener serves every socket of the mirror.
    with (
        connect(app.url("/ws/echo", "open-1"), additional_headers={"Authorization": token}) as first,
        connect(app.url("/ws/echo", "open-2"), additional_headers={"Authorization": token}) as second,
    ):
        for ws in (first, second):
            ws.send("x")
            ws.recv(timeout=5)
        assert (open_socket_count(mirror), mirror.listener_count) == (2, 1)


# -- node's WebSocket (a browser's API) ------------------------------------------------------


def node_command(url: str, offered: list[str], **options: Any) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    return [
        node,
        "--no-warnings",
        "--experimental-websocket",
        str(NODE_CLIENT),
        url,
        json.dumps(offered),
        json.dumps(options),
    ]


def test_node_sees_4401_at_exp_and_nothing_after_it(app: Served) -> None:
    name = f"node-exp-{uuid.uuid4().hex}"
    token, exp = short_lived(app.issuer)

    finished = subprocess.run(
        node_command(app.url("/ws/stream", name), ["bearer", token], timeoutMs=10_000),
        capture_output=True,
        text=True,
        timeout=30,
    )

    result = json.loads(finished.stdout)
    assert (result["protocol"], result["closeCode"], result["closeReason"]) == (
        "bearer",
        4401,
        "token_expired",
    )
    assert exp + LEEWAY - 0.05 <= result["closedAt"] / 1000 <= exp + LEEWAY + 3
    log = app.route_log(name)
    assert log.sent == len(result["messages"])
    assert log.ended == ("send", WS_4401_TOKEN_EXPIRED)


def test_node_sees_4403_within_a_second_of_a_revocation(app: Served) -> None:
    user, name = unique_user(), f"node-rev-{uuid.uuid4().hex}"
    with subprocess.Popen(
        node_command(
            app.url("/ws/echo", name), ["bearer", app.issuer.mint(username=user)], announceOpen=True
        ),
        stdout=subprocess.PIPE,
        text=True,
    ) as client:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "opened"
        app.route_log(name, ended=False)  # the route runs
        revoked_at = app.revoke_user(user)
        result = json.loads(client.stdout.readline())

    assert (result["closeCode"], result["closeReason"]) == (4403, "token_revoked")
    assert result["closedAt"] / 1000 - revoked_at < REVOCATION_LIMIT
    assert app.route_log(name).ended == ("receive", WS_4403_TOKEN_REVOKED)


# -- Chromium -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def test_chromium_sees_4401_at_exp_and_nothing_after_it(app: Served, page: Any) -> None:
    name = f"chromium-exp-{uuid.uuid4().hex}"
    token, exp = short_lived(app.issuer)

    assert open_in_page(page, name, app.url("/ws/stream", name), token) == "bearer"
    seen = closed_in_page(page, name)

    assert (seen["code"], seen["reason"]) == (4401, "token_expired")
    assert exp + LEEWAY - 0.05 <= seen["closedAt"] / 1000 <= exp + LEEWAY + 3
    log = app.route_log(name)
    assert log.sent == len(seen["messages"])
    assert log.ended == ("send", WS_4401_TOKEN_EXPIRED)


def test_chromium_sees_4403_within_a_second_of_a_revocation(app: Served, page: Any) -> None:
    user, name = unique_user(), f"chromium-rev-{uuid.uuid4().hex}"
    token = app.issuer.mint(username=user)
    assert open_in_page(page, name, app.url("/ws/echo", name), token) == "bearer"
    app.route_log(name, ended=False)

    revoked_at = app.revoke_user(user)
    seen = closed_in_page(page, name)

    assert (seen["code"], seen["reason"]) == (4403, "token_revoked")
    assert seen["closedAt"] / 1000 - revoked_at < REVOCATION_LIMIT
    assert app.route_log(name).ended == ("receive", WS_4403_TOKEN_REVOKED)


def test_a_pending_receive_ends_even_where_the_server_waits_for_the_client(issuer: LocalIssuer) -> None:
    """Starlette's TestClient, unlike uvicorn, queues no disconnect when the app closes: the route still learns at once."""
    auth = CognitoAuth(issuer.settings())
    logs: dict[str, RouteLog] = {}
    user = unique_user()
    with TestClient(lifetime_app(auth, CognitoAuth(issuer.settings()), logs)) as client:
        with client.websocket_connect(
            "/ws/echo?name=pending", subprotocols=["bearer", issuer.mint(username=user)]
        ) as ws:
            ws.send_text("x")
            assert ws.receive_text() == "echo:x"
            auth.verifier.revoke_user_sync(issuer.user_pool_id, issuer.claims(username=user)["sub"])
            assert ws.receive() == {"type": "websocket.close", "code": 4403, "reason": "token_revoked"}
            # Before the client leaves: the route's receive has already ended.
            deadline = time.monotonic() + 5
            while logs["pending"].ended is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert logs["pending"].ended == ("receive", WS_4403_TOKEN_REVOKED)
        assert open_socket_count(auth.verifier.revocations.mirror) == 0


# uvicorn's legacy "websockets" implementation warns that it is deprecated, as is what it uses.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::uvicorn.config.UvicornDeprecationWarning")
@pytest.mark.parametrize("implementation", ["websockets", "wsproto"])
def test_every_uvicorn_websocket_implementation_ends_sockets_the_same_way(
    issuer: LocalIssuer, implementation: str
) -> None:
    """The default (websockets-sansio) runs above; the legacy websockets one and wsproto behave alike."""
    if implementation == "wsproto":
        pytest.importorskip("wsproto")
    auth = CognitoAuth(issuer.settings())
    logs: dict[str, RouteLog] = {}
    user = unique_user()
    header = {"Authorization": issuer.mint(username=user)}
    with ThreadedUvicorn(
        lifetime_app(auth, CognitoAuth(issuer.settings()), logs), ws=implementation
    ) as server:
        with (
            connect(f"{server.url}/ws/stream?name=stream", additional_headers=header) as stream,
            connect(f"{server.url}/ws/echo?name=echo", additional_headers=header) as echo,
        ):
            stream.recv(timeout=5)
            echo.send("x")
            echo.recv(timeout=5)
            auth.verifier.revoke_user_sync(issuer.user_pool_id, issuer.claims(username=user)["sub"])
            streamed, stream_code, _, _ = read_until_closed(stream)
            _, echo_code, _, _ = read_until_closed(echo)
        deadline = time.monotonic() + 5
        while None in (logs["stream"].ended, logs["echo"].ended) and time.monotonic() < deadline:
            time.sleep(0.01)

    assert (stream_code, echo_code) == (WS_4403_TOKEN_REVOKED, WS_4403_TOKEN_REVOKED)
    assert logs["stream"].ended == ("send", WS_4403_TOKEN_REVOKED)
    assert logs["stream"].sent == len(streamed) + 1
    assert logs["echo"].ended == ("receive", WS_4403_TOKEN_REVOKED)
    assert open_socket_count(auth.verifier.revocations.mirror) == 0


def test_the_close_frame_goes_out_before_a_route_that_wakes_first_can_return(issuer: LocalIssuer) -> None:
    """A route that runs between the end and the watcher's close, and returns at once, must not have the
    server drop the connection without a close frame (which a browser reports as 1006, not 4403)."""
    auth = CognitoAuth(issuer.settings())
    mirror = auth.verifier.revocations.mirror
    woken: dict[str, Any] = {}
    app = FastAPI(lifespan=auth.lifespan)

    @app.websocket("/ws/wakes")
    async def wakes(websocket: WebSocket, principal: Principal = Depends(auth)) -> None:
        woken["event"] = asyncio.Event()
        await accept_websocket(websocket)
        await woken["event"].wait()
        try:
            await websocket.send_text("after the end")
        except WebSocketDisconnect as end:
            woken["ended"] = end.code

    user = unique_user()
    token = issuer.mint(username=user)
    with (
        ThreadedUvicorn(app) as server,
        connect(f"{server.url}/ws/wakes", additional_headers={"Authorization": token}) as ws,
    ):
        deadline = time.monotonic() + 5
        while "event" not in woken and time.monotonic() < deadline:
            time.sleep(0.01)
        # Subscribed after the socket's watch, and revoked on the loop: the watch ends the socket
        # first, then this wakes the route, which runs before the watch's close task.
        mirror.add_listener(lambda entries: woken["event"].set())
        server.run(auth.verifier.revoke_user(issuer.user_pool_id, issuer.claims(username=user)["sub"]))
        messages, code, reason, _ = read_until_closed(ws)

    assert (messages, code, reason) == ([], WS_4403_TOKEN_REVOKED, "token_revoked")
    assert woken["ended"] == WS_4403_TOKEN_REVOKED
