"""Readiness: ``verifier.health()`` and ``auth.health()`` tell whether tokens can be verified now, and why not.

Keys come from a real loopback JWKS server that is made to fail; the
revocation part uses the in-process backend and a stub frozen in each state
a shared store can be in.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from example_server import free_port
from revocation_stub import REVOCATION_STATES, StubRevocations
from siot_authz import AuthHealth, AuthSettings, CognitoAuth, KeyStatus, Principal, TokenVerifier, _key_cache
from siot_authz.revocation import BackendState
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer
from spare_keys import spare_key

NO_KEYS = KeyStatus(
    has_keys=False,
    key_count=0,
    age_seconds=None,
    is_stale=False,
    is_refreshing=False,
    last_error=None,
    last_error_age_seconds=None,
)


@pytest.fixture
def make_verifier() -> Iterator[Callable[..., TokenVerifier]]:
    made: list[TokenVerifier] = []

    def make(settings: AuthSettings | list[AuthSettings], **options: object) -> TokenVerifier:
        verifier = TokenVerifier(settings, **options)  # type: ignore[arg-type]
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


def readiness_app(auth: CognitoAuth) -> FastAPI:
    """What docs/metrics.md shows: /readyz answers 503 with the reasons until the verifier is ready."""
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"sub": principal.sub}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        health = auth.health()
        return JSONResponse(health.to_dict(), status_code=200 if health.is_ready else 503)

    return app


# -- keys ------------------------------------------------------------------------------------------


def test_is_not_ready_before_any_key_is_held(
    issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier]
) -> None:
    verifier = make_verifier(issuer.settings())

    health = verifier.health()

    assert not health.is_ready
    assert [(pool.user_pool_id, pool.keys) for pool in health.pools] == [(issuer.user_pool_id, NO_KEYS)]
    assert (health.revocation.backend, health.revocation.state) == ("memory", "ok")
    assert issuer.serve().request_count == 0, "health() never fetches"


def test_is_ready_after_prefetch_and_reports_how_old_the_keys_are(
    issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier]
) -> None:
    issuer.rotate_key(key=spare_key(0))
    verifier = make_verifier(issuer.settings())
    asyncio.run(verifier.start())

    first = verifier.health()
    time.sleep(0.05)
    later = verifier.health().pools[0].keys

    assert first.is_ready
    keys = first.pools[0].keys
    assert (keys.has_keys, keys.key_count, keys.is_stale, keys.last_error) == (True, 2, False, None)
    assert keys.age_seconds is not None
    assert later.age_seconds is not None
    assert 0 <= keys.age_seconds < later.age_seconds < 30


FAILED_FETCHES = [
    (JwksResponse(status=500), "http_500"),
    (JwksResponse(close_without_response=True), "transport_"),
    (JwksResponse(body=b'{"keys": {}}'), "jwks_keys_not_an_array"),
]


@pytest.mark.parametrize(("response", "error"), FAILED_FETCHES, ids=["500", "dropped", "invalid"])
def test_a_failed_refresh_is_reported_while_the_stale_keys_keep_it_ready(
    issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier], response: JwksResponse, error: str
) -> None:
    # The key caches' own clock: "stale" and "fresh again" must not depend on how fast a loaded machine runs.
    key_time = [1000.0]
    verifier = make_verifier(
        issuer.settings(jwks_ttl_seconds=60, jwks_refetch_cooldown_seconds=0), key_timer=lambda: key_time[0]
    )
    verifier.pools[0].keys.refresh_sync()
    key_time[0] += 61
    issuer.serve().response = response

    verifier.pools[0].keys.refresh_sync()
    failing = verifier.health()
    issuer.serve().reset()
    verifier.pools[0].keys.refresh_sync()
    recovered = verifier.health().pools[0].keys

    assert failing.is_ready
    keys = failing.pools[0].keys
    assert (keys.has_keys, keys.key_count, keys.is_stale) == (True, 1, True)
    assert keys.last_error is not None
    assert keys.last_error.startswith(error)
    assert keys.last_error_age_seconds is not None
    assert 0 <= keys.last_error_age_seconds < 5
    assert keys.age_seconds is not None
    assert keys.age_seconds >= 61
    assert (recovered.last_error, recovered.last_error_age_seconds, recovered.is_stale) == (None, None, False)


def test_reports_a_background_refresh_under_way(
    issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier]
) -> None:
    verifier = make_verifier(issuer.settings(jwks_ttl_seconds=0.05))
    token = issuer.mint()
    verifier.verify_sync(token)
    time.sleep(0.1)
    issuer.serve().response = JwksResponse(delay_seconds=0.5)

    verifier.verify_sync(token)  # answered from the held keys; starts the refresh
    during = verifier.health()
    deadline = time.monotonic() + 5
    while verifier.health().pools[0].keys.is_refreshing and time.monotonic() < deadline:
        time.sleep(0.02)
    after = verifier.health().pools[0].keys

    assert during.is_ready
    assert during.pools[0].keys.is_refreshing
    assert during.pools[0].keys.is_stale
    assert (after.is_refreshing, after.is_stale) == (False, False)


def test_with_two_pools_is_not_ready_while_one_has_no_keys(
    issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier]
) -> None:
    other = "us-east-1_Unreachable"
    unreachable = issuer.settings(
        user_pool_id=other, jwks_url=f"http://127.0.0.1:{free_port()}/{other}/.well-known/jwks.json"
    )
    verifier = make_verifier([issuer.settings(), unreachable])
    asyncio.run(verifier.start())

    health = verifier.health()

    assert not health.is_ready
    held, missing = health.pools
    assert (held.user_pool_id, held.keys.has_keys, held.keys.last_error) == (issuer.user_pool_id, True, None)
    assert (missing.user_pool_id, missing.keys.has_keys, missing.keys.age_seconds) == (other, False, None)
    assert missing.keys.last_error is not None
    assert missing.keys.last_error.startswith("transport_")


# -- revocation ---------------------------------------------------------------------------------------


def test_reports_the_memory_backend_and_its_live_entries(
    issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier]
) -> None:
    verifier = make_verifier(issuer.settings())
    verifier.pools[0].keys.refresh_sync()
    verifier.revoke_user_sync(issuer.user_pool_id, "user-1")
    verifier.revoke_session_sync(issuer.user_pool_id, "session-1")

    revocation = verifier.health().revocation

    assert verifier.health().is_ready
    assert (revocation.backend, revocation.state, revocation.entries) == ("memory", "ok", 2)
    assert (revocation.unconfirmed_seconds, revocation.last_error) == (None, None)


@pytest.mark.parametrize(
    ("state", "unconfirmed", "is_ready"), REVOCATION_STATES, ids=[row[0] for row in REVOCATION_STATES]
)
def test_readiness_follows_the_revocation_backend_state(
    issuer: LocalIssuer,
    make_verifier: Callable[..., TokenVerifier],
    state: BackendState,
    unconfirmed: float | None,
    is_ready: bool,
) -> None:
    verifier = make_verifier(issuer.settings(), revocations=StubRevocations(state, unconfirmed))
    verifier.pools[0].keys.refresh_sync()

    health = verifier.health()

    assert health.is_ready is is_ready
    assert health.revocation.state == state
    assert health.revocation.unconfirmed_seconds == unconfirmed
    assert health.revocation.last_error == "connection refused"


# -- through CognitoAuth and /readyz ------------------------------------------------------------------


def test_auth_health_is_not_ready_before_startup_and_ready_after(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings())

    before = auth.health()
    with TestClient(readiness_app(auth)):
        after = auth.health()

    assert not before.is_ready
    assert after.is_ready
    assert after.pools[0].keys.key_count == 1


def test_readyz_answers_503_with_the_reasons_until_every_pool_holds_keys(issuer: LocalIssuer) -> None:
    other = "us-east-1_LateTeam"
    late = LocalIssuer(user_pool_id=other, client_id="lateclient000000000000000", key=issuer.signing_key)
    late.keys = issuer.keys  # no new RSA key needed: only reachability matters here
    late.serve().response = JwksResponse(status=503)
    auth = CognitoAuth([issuer.settings(), late.settings(jwks_refetch_cooldown_seconds=0)])

    with TestClient(readiness_app(auth)) as client:
        not_ready = client.get("/readyz")
        late.serve().reset()
        client.get("/me", headers={"Authorization": late.mint()})  # a request for that pool fetches again
        ready = client.get("/readyz")
    late.close()

    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["is_ready"] is False
    assert [(pool["user_pool_id"], pool["keys"]["has_keys"]) for pool in body["pools"]] == [
        (issuer.user_pool_id, True),
        (other, False),
    ]
    assert body["pools"][1]["keys"]["last_error"] == "http_503"
    assert body["revocation"]["state"] == "ok"
    assert ready.status_code == 200
    assert ready.json()["is_ready"] is True


def test_readiness_recovers_without_traffic_once_the_key_endpoint_does(issuer: LocalIssuer) -> None:
    """Behind a /readyz gate no request reaches the pool: the background retry must fetch by itself."""
    server = issuer.serve()
    server.response = JwksResponse(status=503)
    auth = CognitoAuth(issuer.settings(http_timeout_seconds=2.0, jwks_refetch_cooldown_seconds=60))

    with TestClient(readiness_app(auth)) as client:
        assert client.get("/readyz").status_code == 503
        server.response = JwksResponse()  # the endpoint comes back
        deadline = time.monotonic() + 15
        while (status := client.get("/readyz").status_code) != 200:
            assert time.monotonic() < deadline, "readiness never recovered without traffic"
            time.sleep(0.05)

    assert status == 200
    assert auth.health().pools[0].keys.key_count == 1
    assert server.requested_paths == [server.path] * server.request_count  # only key fetches, no /me


class _RecordedBackOff:
    """``asyncio`` as the key cache sees it, but each sleep is recorded and lasts only a moment.

    Records the delay asked for and how many requests the endpoint had had by then, so the
    back-off schedule is checked exactly instead of counting fetches in seconds of real waiting.
    """

    def __init__(self, server: JwksServer) -> None:
        self.pauses: list[tuple[float, int]] = []
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.pauses.append((delay, self._server.request_count))
        await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_the_background_retry_backs_off_and_stops_at_aclose(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = issuer.serve()
    server.response = JwksResponse(status=503)
    back_off = _RecordedBackOff(server)
    monkeypatch.setattr(_key_cache, "asyncio", back_off)
    verifier = TokenVerifier(issuer.settings(http_timeout_seconds=2.0))

    await verifier.start()
    deadline = time.monotonic() + 30
    while len(back_off.pauses) < 8:
        assert time.monotonic() < deadline, f"the retry stalled: {back_off.pauses}"
        await asyncio.sleep(0.01)
    await verifier.aclose()
    stopped = (len(back_off.pauses), server.request_count)
    await asyncio.sleep(0.3)  # unstopped, the loop would go round many times in this

    # The prefetch, then one fetch after each pause of 0.5 s, 1 s, 2 s... up to 30 s; each fetch
    # of a 503 makes two requests (one immediate retry of a transient failure).
    assert back_off.pauses[:8] == [
        (0.5, 2), (1.0, 4), (2.0, 6), (4.0, 8), (8.0, 10), (16.0, 12), (30.0, 14), (30.0, 16),
    ]  # fmt: skip
    assert (len(back_off.pauses), server.request_count) == stopped
    assert not verifier.health().is_ready


def test_health_is_plain_json_data(issuer: LocalIssuer, make_verifier: Callable[..., TokenVerifier]) -> None:
    verifier = make_verifier(issuer.settings())
    verifier.pools[0].keys.refresh_sync()
    health = verifier.health()

    data = json.loads(json.dumps(health.to_dict()))

    assert set(data) == {"is_ready", "pools", "revocation"}
    assert set(data["pools"][0]["keys"]) == set(KeyStatus.__dataclass_fields__)
    assert isinstance(health, AuthHealth)
