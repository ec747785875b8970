"""A revocation closes a user's WebSockets in every worker: two real uvicorn processes sharing a real Redis.

Each worker follows Redis into its revocation mirror; the mirror tells that
worker's open sockets. A revocation made through one worker must close the
user's sockets in both within a second, with 4403, and leave other users'
sockets open. Clients: the ``websockets`` library and Chromium.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import loopback
from chromium import closed_in_page, launched_chromium, open_in_page
from redis_server import RedisServer, is_redis_installed, running_redis
from revocation_app import worker_pair
from siot_authz.testing import LocalIssuer
from warm_python import WarmPython
from ws_worker_app import WebSocketWorker, worker_env

pytestmark = pytest.mark.skipif(not is_redis_installed(), reason="needs redis-server on PATH")

#: The promise: a revocation made anywhere closes a covered socket everywhere within a second.
REVOCATION_LIMIT = 1.0


@pytest.fixture(scope="module")
def workers(
    _session_issuer: LocalIssuer, worker_python: WarmPython
) -> Iterator[tuple[WebSocketWorker, WebSocketWorker]]:
    settings = json.loads(
        _session_issuer.settings().model_dump_json(
            include={"region", "user_pool_id", "client_ids", "jwks_url"}
        )
    )
    with running_redis() as redis_server:
        yield from _started(settings, redis_server, worker_python)


def _started(
    settings: dict[str, Any], redis_server: RedisServer, python: WarmPython
) -> Iterator[tuple[WebSocketWorker, WebSocketWorker]]:
    env = worker_env(settings, redis_server.url)
    with worker_pair(env, WebSocketWorker, python=python) as pair:
        yield pair


def new_user(issuer: LocalIssuer) -> tuple[str, str]:
    """A user no other test uses (there is no unrevoke), and their sub."""
    username = f"user-{uuid.uuid4().hex[:12]}"
    return username, issuer.claims(username=username)["sub"]


def revoke(worker: WebSocketWorker, sub: str) -> float:
    """Revoke ``sub`` through ``worker``'s admin route; returns when it answered."""
    assert loopback.post(f"{worker.base_url}/revoke/user/{sub}", timeout=10).status_code == 200
    return time.time()


def closed(ws: ClientConnection, timeout: float = 10) -> tuple[int, float]:
    """The close code the server sent, and when it arrived; messages before it are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as ended:
            return (1006 if ended.rcvd is None else ended.rcvd.code), time.time()


@contextmanager
def opened(worker: WebSocketWorker, name: str, token: str) -> Iterator[ClientConnection]:
    """A socket to ``worker``'s echo route, served once."""
    url = f"{worker.ws_url}/ws/echo?name={name}"
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo:hello"
        yield ws


def test_a_revoked_users_sockets_close_in_both_workers_within_a_second(
    workers: tuple[WebSocketWorker, WebSocketWorker], issuer: LocalIssuer
) -> None:
    first, second = workers
    mallory, mallory_sub = new_user(issuer)
    alice, _ = new_user(issuer)
    names = [f"{key}-{uuid.uuid4().hex}" for key in ("first", "second", "other")]
    token = issuer.mint(username=mallory)
    with (
        opened(first, names[0], token) as on_first,
        opened(second, names[1], token) as on_second,
        opened(second, names[2], issuer.mint(username=alice)) as other,
    ):
        revoked_at = revoke(first, mallory_sub)
        (first_code, first_at), (second_code, second_at) = closed(on_first), closed(on_second)

        other.send("still there?")
        assert other.recv(timeout=5) == "echo:still there?"

    assert (first_code, second_code) == (4403, 4403)
    assert max(first_at, second_at) - revoked_at < REVOCATION_LIMIT
    for worker, name in ((first, names[0]), (second, names[1])):
        log = worker.route_log(name)
        assert log["ended"] == ["receive", 4403]
        assert log["sent"] == 1  # the greeting's echo, nothing after the close


def test_chromium_sockets_to_both_workers_close_on_a_revocation(
    workers: tuple[WebSocketWorker, WebSocketWorker], issuer: LocalIssuer
) -> None:
    with launched_chromium() as browser:
        page = browser.new_page()
        username, sub = new_user(issuer)
        token = issuer.mint(username=username)
        keys = {f"w{index}-{uuid.uuid4().hex}": worker for index, worker in enumerate(workers)}
        for key, worker in keys.items():
            assert open_in_page(page, key, f"{worker.ws_url}/ws/echo?name={key}", token) == "bearer"
            worker.route_log(key, timeout=0)  # its route runs

        revoked_at = revoke(workers[1], sub)
        seen = {key: closed_in_page(page, key) for key in keys}

    for key, worker in keys.items():
        assert (seen[key]["code"], seen[key]["reason"]) == (4403, "token_revoked")
        assert seen[key]["closedAt"] / 1000 - revoked_at < REVOCATION_LIMIT
        assert worker.route_log(key)["ended"] == ["receive", 4403]
