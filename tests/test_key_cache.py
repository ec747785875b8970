"""When the JWKS is fetched and which keys answer: one fetch, TTL, cooldown, stale-if-error, rotation.

Every test talks to the real loopback JWKS server, and most run through each
of the three faces a caller can use: a FastAPI route, ``await verify`` and
``verify_sync``. A fake clock drives the key cache, so TTLs and cooldowns
pass without sleeping.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fake_clock import FakeClock
from siot_authz import AuthError, AuthSettings, CognitoAuth, JwksUnavailable, Principal, TokenVerifier
from siot_authz._key_cache import JwksCache
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer
from spare_keys import spare_key, spare_key_as

FACES = ("fastapi", "async", "sync")
TTL = 300.0
COOLDOWN = 30.0


class Caller:
    """Verifies tokens through one face and reports ``"ok"`` or ``"<status> <code>"``.

    The FastAPI app has no lifespan, so keys are fetched by the first request,
    as in an app that does not prefetch. Each face keeps one event loop
    alive between calls, as a server does, so a background refresh started
    by one request can finish; :meth:`settle` waits for it.
    """

    def __init__(self, face: str, settings: AuthSettings, clock: Callable[[], float] | None = None) -> None:
        self.face = face
        self.verifier = TokenVerifier(settings) if clock is None else TokenVerifier(settings, key_timer=clock)
        auth = CognitoAuth(verifier=self.verifier)
        app = FastAPI()

        @app.get("/me")
        async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
            return {"username": principal.username}

        self._client = TestClient(app)
        self._client.__enter__()  # one event loop for the client's life, as in a server
        self._runner = asyncio.Runner()

    @property
    def keys(self) -> JwksCache:
        return self.verifier.keys

    def outcome(self, token: str) -> str:
        if self.face == "fastapi":
            response = self._client.get("/me", headers={"Authorization": token})
            if response.status_code == 200:
                return "ok"
            if response.status_code == 503:
                assert response.headers["Retry-After"]
            return f"{response.status_code} {response.json()['detail']['code']}"
        try:
            if self.face == "async":
                self._runner.run(self.verifier.verify(token))
            else:
                self.verifier.verify_sync(token)
        except AuthError as error:
            return f"{error.status_code} {error.code}"
        return "ok"

    def settle(self) -> None:
        """Wait until no key fetch is under way (a background refresh may have been started)."""
        deadline = time.monotonic() + 10
        while self.keys.status().is_refreshing:
            assert time.monotonic() < deadline, "a background refresh did not end"
            if self.face == "async":
                self._runner.run(asyncio.sleep(0.01))
            else:
                time.sleep(0.01)

    def close(self) -> None:
        self._client.__exit__(None, None, None)
        self._runner.close()
        self.verifier.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def make_caller(issuer: LocalIssuer) -> Iterator[Callable[..., Caller]]:
    """Build a :class:`Caller` for a face, trusting ``issuer``; settings may be overridden."""
    callers: list[Caller] = []

    def make(face: str, clock: Callable[[], float] | None = None, **overrides: object) -> Caller:
        fields: dict[str, object] = {
            "http_timeout_seconds": 2.0,
            "jwks_ttl_seconds": TTL,
            "jwks_refetch_cooldown_seconds": COOLDOWN,
        }
        fields.update(overrides)
        caller = Caller(face, issuer.settings(**fields), clock)
        callers.append(caller)
        return caller

    yield make
    for caller in callers:
        caller.close()


@pytest.fixture(params=FACES)
def caller(request: pytest.FixtureRequest, make_caller: Callable[..., Caller], clock: FakeClock) -> Caller:
    """A :class:`Caller` for each face, with its key cache on the fake clock and default settings."""
    return make_caller(request.param, clock)


def random_kid_token(issuer: LocalIssuer) -> str:
    """A well-signed token whose header names a kid the JWKS does not have."""
    return issuer.sign(issuer.claims(), header={"kid": secrets.token_urlsafe(12)})


# -- one fetch serves many ------------------------------------------------------


def test_one_fetch_serves_many_requests(caller: Caller, issuer: LocalIssuer, jwks_server: JwksServer) -> None:
    outcomes = {caller.outcome(issuer.mint()) for _ in range(25)}

    assert outcomes == {"ok"}
    assert jwks_server.request_count == 1


def test_prefetch_in_lifespan_serves_every_request(
    client: TestClient, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    statuses = {client.get("/me", headers={"Authorization": issuer.mint()}).status_code for _ in range(10)}

    assert statuses == {200}
    assert jwks_server.request_count == 1


@pytest.mark.anyio
async def test_concurrent_cold_async_requests_share_one_fetch(
    verifier: TokenVerifier, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(delay_seconds=0.3)  # every caller arrives while it is in flight
    tokens = [issuer.mint() for _ in range(20)]

    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))

    assert {principal.username for principal in principals} == {"alice"}
    assert jwks_server.request_count == 1


def test_concurrent_cold_sync_requests_share_one_fetch(
    verifier: TokenVerifier, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(delay_seconds=0.3)
    tokens = [issuer.mint() for _ in range(20)]
    start = threading.Barrier(len(tokens))
    outcomes: list[str] = []

    def verify(token: str) -> None:
        start.wait()
        outcomes.append(verifier.verify_sync(token).username)

    threads = [threading.Thread(target=verify, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcomes == ["alice"] * len(tokens)
    assert jwks_server.request_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "status", "fetch_requests"),
    [(JwksResponse(delay_seconds=0.3), 200, 1), (JwksResponse(status=503, delay_seconds=0.3), 503, 2)],
    ids=["healthy", "failing"],
)
async def test_concurrent_cold_fastapi_requests_share_one_fetch(
    auth: CognitoAuth,
    app: FastAPI,
    issuer: LocalIssuer,
    jwks_server: JwksServer,
    response: JwksResponse,
    status: int,
    fetch_requests: int,
) -> None:
    jwks_server.response = response
    # ASGITransport runs no lifespan: the first requests find the cache cold.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        responses = await asyncio.gather(
            *(client.get("/me", headers={"Authorization": issuer.mint()}) for _ in range(20))
        )
    await auth.verifier.aclose()

    assert {response.status_code for response in responses} == {status}
    # A failing endpoint sees one fetch too: the first try and its one retry.
    assert jwks_server.request_count == fetch_requests


# -- TTL ----------------------------------------------------------------------------


def test_refreshes_in_the_background_after_ttl(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    assert caller.outcome(issuer.mint()) == "ok"

    clock.advance(TTL - 1)
    assert caller.outcome(issuer.mint()) == "ok"
    assert jwks_server.request_count == 1

    clock.advance(2)
    assert caller.outcome(issuer.mint()) == "ok"  # answered with the held keys
    caller.settle()
    assert jwks_server.request_count == 2
    assert caller.keys.is_fresh()


def test_ttl_refresh_is_not_held_back_by_a_longer_cooldown(
    make_caller: Callable[..., Caller], clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    caller = make_caller("sync", clock, jwks_ttl_seconds=5, jwks_refetch_cooldown_seconds=60)
    assert caller.outcome(issuer.mint()) == "ok"

    clock.advance(6)

    assert caller.outcome(issuer.mint()) == "ok"
    caller.settle()
    assert jwks_server.request_count == 2


def test_cached_token_is_served_during_refresh_after_ttl_and_starts_it(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    token = issuer.mint()
    assert caller.outcome(token) == "ok"

    clock.advance(TTL + 1)

    assert caller.outcome(token) == "ok"
    caller.settle()
    assert jwks_server.request_count == 2
    assert caller.outcome(token) == "ok"  # still held under its kid after the refresh


def test_only_one_background_refresh_runs_at_a_time(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    token = issuer.mint()
    assert caller.outcome(token) == "ok"
    jwks_server.response = JwksResponse(delay_seconds=0.3)
    clock.advance(TTL + 1)

    assert {caller.outcome(token) for _ in range(20)} == {"ok"}
    caller.settle()

    assert jwks_server.request_count == 2


# -- unknown kids and the cooldown ------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
def test_a_rotated_key_is_picked_up_after_the_ttl_even_when_the_cooldown_is_longer(
    make_caller: Callable[..., Caller],
    clock: FakeClock,
    face: str,
    issuer: LocalIssuer,
    jwks_server: JwksServer,
) -> None:
    """Issue 17's regression: TTL 1 s, cooldown 30 s, then the endpoint swaps to a new key."""
    caller = make_caller(face, clock, jwks_ttl_seconds=1, jwks_refetch_cooldown_seconds=30)
    assert caller.outcome(issuer.mint()) == "ok"
    issuer.rotate_key(keep_old=False, key=spare_key(0))  # the endpoint now serves only the new key

    clock.advance(0.5)
    assert caller.outcome(issuer.mint()) == "401 kid_unknown"  # within the TTL and the cooldown: no fetch
    assert jwks_server.request_count == 1

    clock.advance(1.5)  # past the TTL, still deep in the cooldown
    assert caller.outcome(issuer.mint()) == "ok"
    assert jwks_server.request_count == 2
    assert {caller.outcome(issuer.mint()) for _ in range(5)} == {"ok"}
    assert jwks_server.request_count == 2


@pytest.mark.parametrize(("wait", "fetches"), [(0, 1), (COOLDOWN, 2)], ids=["in-cooldown", "after-cooldown"])
def test_spraying_random_kids_triggers_at_most_one_refetch(
    caller: Caller, clock: FakeClock, wait: float, fetches: int, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    assert caller.outcome(issuer.mint()) == "ok"
    clock.advance(wait)

    outcomes = {caller.outcome(random_kid_token(issuer)) for _ in range(50)}

    assert outcomes == {"401 kid_unknown"}
    assert jwks_server.request_count == fetches
    assert caller.outcome(issuer.mint()) == "ok"  # the real key still serves


def test_picks_up_rotated_in_key_by_refetch_after_cooldown(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    old_token = issuer.mint()
    assert caller.outcome(old_token) == "ok"
    issuer.rotate_key(key=spare_key(0))
    new_token = issuer.mint()

    # Right after a fetch the cooldown holds: the new kid is not yet known.
    assert caller.outcome(new_token) == "401 kid_unknown"
    assert jwks_server.request_count == 1
    clock.advance(COOLDOWN)

    assert caller.outcome(new_token) == "ok"
    assert caller.outcome(old_token) == "ok"  # kept: the old key is still published
    assert jwks_server.request_count == 2


# -- stale-if-error ------------------------------------------------------------------------

# failure: (the endpoint's answer, requests per fetch, the logged reason, the fetch deadline).
# Only the timeout needs a short deadline, and it is a third of the delay; the others keep the
# usual 2 s: under load, the healthy first fetch overran a 0.5 s deadline given to every case
# ("dropped-sync" failed that way with the suite spread over three workers).
REFRESH_FAILURES = {
    "http_500": (JwksResponse(status=500), 2, "http_500", 2.0),
    "timeout": (JwksResponse(delay_seconds=3.0), 1, "timeout", 1.0),
    "garbage": (JwksResponse(body=b"<html>maintenance</html>"), 1, "jwks_not_utf8_json", 2.0),
    "dropped": (JwksResponse(close_without_response=True), 2, "transport_RemoteProtocolError", 2.0),
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("failure", REFRESH_FAILURES)
def test_serves_stale_keys_when_refresh_fails(
    face: str,
    failure: str,
    make_caller: Callable[..., Caller],
    clock: FakeClock,
    issuer: LocalIssuer,
    jwks_server: JwksServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response, requests_per_fetch, reason, deadline = REFRESH_FAILURES[failure]
    caller = make_caller(face, clock, http_timeout_seconds=deadline)
    assert caller.outcome(issuer.mint()) == "ok"
    jwks_server.response = response
    clock.advance(TTL + 1)
    token = issuer.mint()

    with caplog.at_level(logging.INFO, logger="siot_authz"):
        assert caller.outcome(token) == "ok"  # at once, with the held keys
        caller.settle()
    assert jwks_server.request_count == 1 + requests_per_fetch
    assert f"jwks_fetch_failed reason={reason}" in caplog.text
    assert "serving stale keys" in caplog.text
    assert token.split(".")[2] not in caplog.text

    # No new attempt before the cooldown, however many requests come.
    assert {caller.outcome(issuer.mint()) for _ in range(5)} == {"ok"}
    caller.settle()
    assert jwks_server.request_count == 1 + requests_per_fetch

    clock.advance(COOLDOWN)
    jwks_server.response = JwksResponse()
    assert caller.outcome(issuer.mint()) == "ok"
    caller.settle()
    assert jwks_server.request_count == 2 + requests_per_fetch
    assert caller.keys.is_fresh()


def test_cold_failure_is_not_retried_before_cooldown(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(status=500)

    assert caller.outcome(issuer.mint()) == "503 jwks_unavailable"
    assert jwks_server.request_count == 2  # one fetch: a try and its retry

    jwks_server.response = JwksResponse()
    assert caller.outcome(issuer.mint()) == "503 jwks_unavailable"
    assert jwks_server.request_count == 2

    clock.advance(COOLDOWN)
    assert caller.outcome(issuer.mint()) == "ok"
    assert jwks_server.request_count == 3


def test_prefetch_failure_is_logged_and_first_request_within_cooldown_gets_503(
    app: FastAPI, issuer: LocalIssuer, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_server.response = JwksResponse(status=404)

    with caplog.at_level(logging.WARNING, logger="siot_authz"), TestClient(app) as client:
        response = client.get("/me", headers={"Authorization": issuer.mint()})

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "jwks_unavailable"
    assert jwks_server.request_count == 1
    assert "jwks_fetch_failed reason=http_404" in caplog.text


# -- keys leaving the set -------------------------------------------------------------------


def test_refresh_that_drops_a_key_refuses_its_tokens_even_if_verified_before(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    old_token = issuer.mint()
    assert caller.outcome(old_token) == "ok"
    assert caller.outcome(old_token) == "ok"  # now in the verified-token cache

    issuer.rotate_key(keep_old=False, key=spare_key(0))
    clock.advance(TTL + 1)

    assert caller.outcome(issuer.mint()) == "ok"
    assert caller.outcome(old_token) == "401 kid_unknown"
    assert jwks_server.request_count == 2


def test_refetch_for_new_kid_that_drops_old_key_refuses_cached_old_tokens(
    caller: Caller, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    old_token = issuer.mint()
    assert caller.outcome(old_token) == "ok"
    issuer.rotate_key(keep_old=False, key=spare_key(0))
    clock.advance(COOLDOWN)  # still well within the TTL

    assert caller.outcome(issuer.mint()) == "ok"  # unknown kid: one refetch
    assert caller.outcome(old_token) == "401 kid_unknown"
    assert caller.outcome(old_token) == "401 kid_unknown"
    assert jwks_server.request_count == 2


def test_token_signed_by_replaced_key_under_same_kid_is_refused(
    make_caller: Callable[..., Caller], clock: FakeClock, issuer: LocalIssuer
) -> None:
    caller = make_caller("sync", clock)
    old_token = issuer.mint()
    assert caller.outcome(old_token) == "ok"
    issuer.keys = [spare_key_as(0, issuer.signing_key.kid)]  # new material under the same kid
    clock.advance(TTL + 1)
    assert caller.outcome(old_token) == "ok"  # cached, and its key is still held: starts the refresh
    caller.settle()

    assert caller.outcome(issuer.mint()) == "ok"
    assert caller.outcome(old_token) == "401 signature_invalid"


# -- the cache object itself ----------------------------------------------------------------


def test_a_refetch_of_unchanged_keys_keeps_the_generation(
    settings: AuthSettings, clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    cache = JwksCache(settings, clock=clock)
    cache.get_key_sync(issuer.signing_key.kid)
    cache.refresh_sync()

    assert jwks_server.request_count == 2
    assert cache.generation == 1  # nothing changed: no purge of the verified cache is due
    cache.close()


def test_unchanged_keys_are_the_same_objects_after_refetch(
    settings: AuthSettings, clock: FakeClock, issuer: LocalIssuer
) -> None:
    cache = JwksCache(settings, clock=clock)
    old_kid = issuer.signing_key.kid
    old_key = cache.get_key_sync(old_kid)
    new_kid = issuer.rotate_key(key=spare_key(0)).kid
    clock.advance(TTL * 10)

    new_key = cache.get_key_sync(new_kid)

    assert cache.generation == 2
    assert cache.get_key_sync(old_kid) is old_key
    assert cache.held_key(old_kid) is old_key
    assert new_key is not old_key
    cache.close()


def test_nothing_held_and_cooldown_running_fails_without_network(
    settings: AuthSettings, clock: FakeClock, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(status=500)
    cache = JwksCache(settings, clock=clock)

    for _ in range(10):
        with pytest.raises(JwksUnavailable):
            cache.get_key_sync("any-kid")

    assert jwks_server.request_count == 2
    assert cache.kids == frozenset()
    assert not cache.is_fresh()
    cache.close()


@pytest.mark.anyio
async def test_aclose_cancels_a_fetch_under_way(settings: AuthSettings, jwks_server: JwksServer) -> None:
    jwks_server.response = JwksResponse(delay_seconds=1.0)
    cache = JwksCache(settings)
    waiter = asyncio.ensure_future(cache.refresh())
    await asyncio.sleep(0.1)

    await cache.aclose()

    await waiter  # the caller was not cancelled itself, so it is not handed a cancellation
    assert not waiter.cancelled()
    assert cache.kids == frozenset()


@pytest.mark.anyio
async def test_request_waiting_on_a_fetch_stopped_by_shutdown_gets_an_auth_error(
    settings: AuthSettings, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(delay_seconds=1.0)
    verifier = TokenVerifier(settings)
    request = asyncio.ensure_future(verifier.verify(issuer.mint()))
    await asyncio.sleep(0.1)

    await verifier.aclose()

    with pytest.raises(JwksUnavailable):
        await request


@pytest.mark.anyio
async def test_a_cancelled_request_is_still_cancelled(
    settings: AuthSettings, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(delay_seconds=1.0)
    cache = JwksCache(settings)
    waiter = asyncio.ensure_future(cache.refresh())
    await asyncio.sleep(0.1)

    waiter.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiter
    await cache.aclose()


@pytest.mark.anyio
async def test_a_cold_waiter_that_goes_away_does_not_cancel_the_fetch_for_the_others(
    verifier: TokenVerifier, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(delay_seconds=0.5)  # both arrive while the one fetch is in flight
    leaving = asyncio.ensure_future(verifier.verify(issuer.mint()))
    staying = asyncio.ensure_future(verifier.verify(issuer.mint(username="bob")))
    await asyncio.sleep(0.2)

    leaving.cancel()  # a client disconnect

    assert (await staying).username == "bob"
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert jwks_server.request_count == 1


def test_a_refresh_lost_with_a_loop_closed_undrained_is_presumed_lost_and_another_starts(
    clock: FakeClock, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    settings = issuer.settings(http_timeout_seconds=2.0, jwks_ttl_seconds=TTL)
    verifier = TokenVerifier(settings, key_timer=clock)
    token = issuer.mint()
    assert verifier.verify_sync(token).username == "alice"
    clock.advance(TTL + 1)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(verifier.verify(token))  # starts a background refresh task on this loop...
    loop.close()  # ...which never runs: the loop is closed without draining it
    assert verifier.keys.status().is_refreshing
    issuer.rotate_key(keep_old=False, key=spare_key(0))

    clock.advance(1.0)  # not yet past the refresh's deadline: it may still be running
    assert verifier.verify_sync(token).username == "alice"
    clock.advance(settings.http_timeout_seconds + 1.0)  # past it: presumed lost
    assert verifier.verify_sync(token).username == "alice"  # the held key answers; a refresh starts

    deadline = time.monotonic() + 10
    while jwks_server.request_count < 2 or verifier.keys.status().is_refreshing:
        assert time.monotonic() < deadline, "no new refresh started after the lost one"
        time.sleep(0.02)
    with pytest.raises(AuthError, match="kid_unknown"):
        verifier.verify_sync(token)
    verifier.close()

    # The fetch task the closed loop never ran holds a coroutine never started; asyncio
    # rightly warns when it is collected. It sits in a reference cycle with that loop, so
    # without this the collector would free it, and warn, in whichever test runs next.
    del verifier, loop
    with pytest.warns(RuntimeWarning, match="coroutine 'JwksCache._fetch_and_store' was never awaited"):
        gc.collect()


def test_caches_share_one_tls_context_per_ca_setting(
    settings: AuthSettings, jwks_server: JwksServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading the CA bundle costs about 30 ms: every pool's first fetch paid it, once per cache.
    first, second = JwksCache(settings), JwksCache(settings)
    first.refresh_sync()
    second.refresh_sync()
    assert first._get_ssl_context() is second._get_ssl_context()
    first.close()
    second.close()

    # httpx reads SSL_CERT_DIR when it builds a context: a process that sets it later still gets it.
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    third = JwksCache(settings)
    third.refresh_sync()
    assert third._get_ssl_context() is not first._get_ssl_context()
    third.close()
