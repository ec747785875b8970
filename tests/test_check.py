"""The application's own check (``check=``): when it runs, what its answers mean, and that it is cached.

Each case runs through a FastAPI route, ``await verify`` and ``verify_sync``,
with sync and async checks alike, against the local pool's loopback JWKS.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from siot_authz import (
    AuthError,
    AuthSettings,
    CheckFailed,
    CognitoAuth,
    InvalidToken,
    MissingRole,
    MissingToken,
    Principal,
    TokenVerifier,
)
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key_as

FACES = ("fastapi", "async", "sync")
KINDS = ("sync", "async")


class AccountSuspended(InvalidToken):
    """An application's own refusal, with its own code."""

    code = "account_suspended"
    reason = "This account is suspended."


class Check:
    """A check that records every principal it sees and answers with ``answer(principal)``.

    ``kind`` makes it a plain function or a coroutine function: the verifier
    must treat both alike.
    """

    def __init__(self, kind: str, answer: Callable[[Principal], Any]) -> None:
        self.seen: list[Principal] = []
        self._answer = answer
        self.function: Callable[[Principal], Any]
        if kind == "sync":
            self.function = self._sync
        else:
            self.function = self._async

    def _sync(self, principal: Principal) -> Any:
        self.seen.append(principal)
        return self._answer(principal)

    async def _async(self, principal: Principal) -> Any:
        await asyncio.sleep(0)  # a real await, as a database lookup would have
        self.seen.append(principal)
        return self._answer(principal)


class Service:
    """A verifier with a check, behind a FastAPI route; reports ``"ok"`` or ``"<status> <code>"``."""

    def __init__(
        self, face: str, settings: AuthSettings, recorder: Check | None, **verifier_options: Any
    ) -> None:
        self.face = face
        if recorder is not None:
            verifier_options["check"] = recorder.function
        self.verifier = TokenVerifier(settings, **verifier_options)
        self.auth = CognitoAuth(verifier=self.verifier)
        app = FastAPI()

        @app.get("/me")
        async def me(principal: Principal = Depends(self.auth)) -> dict[str, str]:
            return {"username": principal.username}

        self.client = TestClient(app, raise_server_exceptions=False)
        self._loop = asyncio.new_event_loop()

    def outcome(self, token: str) -> str:
        if self.face == "fastapi":
            response = self.client.get("/me", headers={"Authorization": token})
            if response.status_code == 200:
                return "ok"
            return f"{response.status_code} {response.json()['detail']['code']}"
        try:
            if self.face == "async":
                self._loop.run_until_complete(self.verifier.verify(token))
            else:
                self.verifier.verify_sync(token)
        except AuthError as error:
            return f"{error.status_code} {error.code}"
        return "ok"

    def close(self) -> None:
        self._loop.run_until_complete(self.verifier.aclose())
        self._loop.close()


@pytest.fixture
def make_service(issuer: LocalIssuer) -> Iterator[Callable[[str, Check], Service]]:
    made: list[Service] = []

    def make(face: str, check: Check) -> Service:
        service = Service(face, issuer.settings(http_timeout_seconds=2.0), check)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


class _TruthRaises:
    """An answer whose truth value cannot be read (a numpy array, a lazy query...)."""

    def __bool__(self) -> bool:
        raise ValueError("the truth value is ambiguous")


def _raise(error: BaseException) -> Callable[[Principal], Any]:
    def answer(principal: Principal) -> Any:
        raise error

    return answer


ANSWERS: list[tuple[str, Callable[[Principal], Any], str]] = [
    ("true", lambda p: True, "ok"),
    ("truthy", lambda p: "yes", "ok"),
    ("false", lambda p: False, "401 check_failed"),
    ("none-forgot-to-return", lambda p: None, "401 check_failed"),
    ("zero", lambda p: 0, "401 check_failed"),
    ("raises-check-failed", _raise(CheckFailed()), "401 check_failed"),
    ("raises-own-auth-error", _raise(AccountSuspended()), "401 account_suspended"),
    ("raises-forbidden", _raise(MissingRole()), "403 missing_role"),
    ("raises-value-error", _raise(ValueError("no such user")), "401 check_failed"),
    ("raises-key-error", _raise(KeyError("sub")), "401 check_failed"),
    ("raises-connection-error", _raise(ConnectionError("database down")), "401 check_failed"),
    ("raises-zero-division", lambda p: 1 / 0, "401 check_failed"),
    # Not Exception subclasses, yet still the check's failure, never a 500 or an escape from verify_sync.
    ("raises-cancelled-error", _raise(asyncio.CancelledError()), "401 check_failed"),
    ("raises-generator-exit", _raise(GeneratorExit()), "401 check_failed"),
    ("raises-system-exit", _raise(SystemExit(3)), "401 check_failed"),
    ("answer-whose-truth-raises", lambda p: _TruthRaises(), "401 check_failed"),
]


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("answer", "expected"), [(a, e) for _n, a, e in ANSWERS], ids=[name for name, _a, _e in ANSWERS]
)
def test_check_answer_decides_the_outcome(
    make_service: Callable[[str, Check], Service],
    issuer: LocalIssuer,
    face: str,
    kind: str,
    answer: Callable[[Principal], Any],
    expected: str,
) -> None:
    check = Check(kind, answer)
    service = make_service(face, check)

    assert service.outcome(issuer.mint(username="carol")) == expected
    assert [principal.username for principal in check.seen] == ["carol"]


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_crashing_check_is_logged_by_type_only(
    make_service: Callable[[str, Check], Service],
    issuer: LocalIssuer,
    face: str,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service(face, Check(kind, _raise(LookupError("secret-detail-from-the-app"))))

    with caplog.at_level(logging.DEBUG, logger="siot_authz"):
        assert service.outcome(issuer.mint()) == "401 check_failed"

    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == ["custom_check_raised type=LookupError"]
    assert "secret-detail-from-the-app" not in caplog.text
    assert "token_verification_bug" not in caplog.text


def _signed_by_stranger(issuer: LocalIssuer) -> str:
    return issuer.sign(issuer.claims(), key=spare_key_as(0, issuer.signing_key.kid))


BUILT_IN_REFUSALS: list[tuple[str, Callable[[LocalIssuer], str], str]] = [
    ("expired", lambda i: i.mint(expires_in=-600), "401 token_expired"),
    ("not-yet-valid", lambda i: i.mint(nbf=i.claims()["iat"] + 600), "401 token_not_yet_valid"),
    ("bad-signature", _signed_by_stranger, "401 signature_invalid"),
    ("other-client", lambda i: i.mint(aud="otherclient0000000000000"), "401 client_not_allowed"),
    ("access-token", lambda i: i.mint(token_use="access"), "401 token_use_mismatch"),
    ("other-issuer", lambda i: i.mint(iss=i.issuer + "x"), "401 issuer_invalid"),
    ("missing-sub", lambda i: i.mint(omit=["sub"]), "401 claim_invalid"),
    ("garbage", lambda i: "not-a-token", "401 token_malformed"),
]


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(
    ("forge", "expected"),
    [(f, e) for _n, f, e in BUILT_IN_REFUSALS],
    ids=[n for n, _f, _e in BUILT_IN_REFUSALS],
)
def test_check_runs_only_after_the_signature_and_every_claim_rule(
    make_service: Callable[[str, Check], Service],
    issuer: LocalIssuer,
    face: str,
    forge: Callable[[LocalIssuer], str],
    expected: str,
) -> None:
    check = Check("sync", lambda p: True)
    service = make_service(face, check)

    assert service.outcome(forge(issuer)) == expected
    assert check.seen == []


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_passed_check_is_cached_with_the_token(
    make_service: Callable[[str, Check], Service], issuer: LocalIssuer, face: str, kind: str
) -> None:
    check = Check(kind, lambda p: True)
    service = make_service(face, check)
    token, other = issuer.mint(), issuer.mint(username="dave")

    outcomes = [service.outcome(t) for t in (token, token, f"Bearer {token}", other, other)]

    assert outcomes == ["ok"] * 5
    assert [principal.username for principal in check.seen] == ["alice", "dave"]


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_refusal_by_the_check_is_not_cached(
    make_service: Callable[[str, Check], Service], issuer: LocalIssuer, face: str, kind: str
) -> None:
    """A check that refused (or was down) is asked again next time: it may say yes then."""
    answers = iter([False, True])
    check = Check(kind, lambda p: next(answers))
    service = make_service(face, check)
    token = issuer.mint()

    assert [service.outcome(token) for _ in range(3)] == ["401 check_failed", "ok", "ok"]
    assert len(check.seen) == 2


def test_check_sees_the_verified_principal(
    make_service: Callable[[str, Check], Service], issuer: LocalIssuer
) -> None:
    check = Check("async", lambda p: True)
    service = make_service("fastapi", check)

    assert service.outcome(issuer.mint(username="erin", groups=["ops"], tenant="t-1")) == "ok"

    (principal,) = check.seen
    assert (principal.username, principal.groups, principal.user_pool_id) == (
        "erin",
        ("ops",),
        issuer.user_pool_id,
    )
    assert principal.claims["tenant"] == "t-1"


def test_async_check_under_verify_sync_from_several_threads(issuer: LocalIssuer) -> None:
    """verify_sync runs an async check to completion on a private loop, thread by thread."""
    from concurrent.futures import ThreadPoolExecutor

    check = Check("async", lambda p: p.username != "mallory")
    verifier = TokenVerifier(issuer.settings(), check=check.function)
    tokens = [issuer.mint(username=f"user{n}") for n in range(8)] + [issuer.mint(username="mallory")]

    def outcome(token: str) -> str:
        try:
            return verifier.verify_sync(token).username
        except AuthError as error:
            return error.code

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(outcome, tokens))

    assert results == [f"user{n}" for n in range(8)] + ["check_failed"]
    verifier.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync check", "async check"])
def test_a_check_raising_missing_token_is_check_failed_even_where_login_is_optional(
    issuer: LocalIssuer, is_async: bool
) -> None:
    def refuse(principal: Principal) -> bool:
        raise MissingToken()

    async def refuse_async(principal: Principal) -> bool:
        raise MissingToken()

    auth = CognitoAuth(issuer.settings(), auto_error=False, check=refuse_async if is_async else refuse)
    app = FastAPI()

    @app.get("/maybe")
    async def maybe(principal: Principal | None = Depends(auth)) -> dict[str, bool]:
        return {"anonymous": principal is None}

    with TestClient(app) as client:
        response = client.get("/maybe", headers={"Authorization": issuer.mint()})

    # A token was sent and refused: never treated as "no credentials", so never anonymous.
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "check_failed"


def _timed_out_service(
    issuer: LocalIssuer, check: Callable[[Principal], Any], face: str = "fastapi"
) -> Service:
    return Service(
        face, issuer.settings(http_timeout_seconds=2.0), None, check=check, check_timeout_seconds=0.2
    )


async def _never_answers(principal: Principal) -> bool:
    await asyncio.sleep(3600)
    return True


def _answers_too_late(principal: Principal) -> bool:
    time.sleep(1.0)
    return True


@pytest.mark.parametrize(
    ("face", "check"),
    [
        ("fastapi", _never_answers),
        ("async", _never_answers),
        ("sync", _never_answers),
        ("fastapi", _answers_too_late),
        ("async", _answers_too_late),
    ],
    ids=["fastapi-async", "async-async", "sync-async", "fastapi-sync", "async-sync"],
)
def test_a_check_that_does_not_answer_in_time_gets_503_check_unavailable(
    issuer: LocalIssuer, face: str, check: Callable[[Principal], Any], caplog: pytest.LogCaptureFixture
) -> None:
    service = _timed_out_service(issuer, check, face)
    try:
        with caplog.at_level(logging.WARNING, logger="siot_authz"):
            assert service.outcome(issuer.mint()) == "503 check_unavailable"
        assert "custom_check_timed_out" in caplog.text
        assert service.outcome(issuer.mint()) == "503 check_unavailable"  # not cached: asked again
    finally:
        service.close()


def test_check_unavailable_is_a_503_with_retry_after(issuer: LocalIssuer) -> None:
    service = _timed_out_service(issuer, _never_answers)
    try:
        response = service.client.get("/me", headers={"Authorization": issuer.mint()})
    finally:
        service.close()

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "check_unavailable"
    assert response.headers["Retry-After"]
    assert "WWW-Authenticate" not in response.headers


def test_a_check_timeout_must_be_positive(issuer: LocalIssuer) -> None:
    with pytest.raises(ValueError, match="check_timeout_seconds"):
        TokenVerifier(issuer.settings(), check=lambda p: True, check_timeout_seconds=0)


@pytest.mark.anyio
async def test_a_sync_check_does_not_block_the_event_loop(issuer: LocalIssuer) -> None:
    """A slow sync check runs in a worker thread: other requests on the loop go on meanwhile."""
    started = threading.Event()

    def slow(principal: Principal) -> bool:
        started.set()
        time.sleep(0.5)
        return True

    verifier = TokenVerifier(issuer.settings(), jwks={issuer.user_pool_id: issuer.jwks()}, check=slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            if started.is_set():
                ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        principal = await verifier.verify(issuer.mint())
    finally:
        ticking.cancel()
        await verifier.aclose()

    assert principal.username == "alice"
    # Blocked, the loop would tick once after the check; free, about 50 times (a slow machine: many fewer).
    assert ticks >= 5


@pytest.mark.anyio
async def test_the_requests_own_cancellation_propagates_out_of_an_async_check(issuer: LocalIssuer) -> None:
    """A client that went away cancels its request: that is not the check failing, and must propagate."""
    entered = asyncio.Event()

    async def waits(principal: Principal) -> bool:
        entered.set()
        await asyncio.sleep(3600)
        return True

    verifier = TokenVerifier(issuer.settings(), jwks={issuer.user_pool_id: issuer.jwks()}, check=waits)
    request = asyncio.create_task(verifier.verify(issuer.mint()))
    await entered.wait()
    request.cancel()

    with pytest.raises(asyncio.CancelledError):
        await request
    await verifier.aclose()


def test_a_check_cancelled_under_uvicorn_like_serving_is_a_401_not_a_500(issuer: LocalIssuer) -> None:
    async def cancelled(principal: Principal) -> bool:
        raise asyncio.CancelledError()

    auth = CognitoAuth(issuer.settings(), check=cancelled)
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"username": principal.username}

    with TestClient(app, raise_server_exceptions=True) as client:
        response = client.get("/me", headers={"Authorization": issuer.mint()})

    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "check_failed"


# -- under a real uvicorn ------------------------------------------------------------------------

BEHAVIOURS: dict[str, Callable[[Principal], Any]] = {
    "pass": lambda p: True,
    "cancelled": _raise(asyncio.CancelledError()),
    "generator-exit": _raise(GeneratorExit()),
    "system-exit": _raise(SystemExit(3)),
}


def _behave(principal: Principal) -> Any:
    behaviour = principal.claims["behaviour"]
    if behaviour == "slow":
        time.sleep(2.0)
        return True
    return BEHAVIOURS[behaviour](principal)


async def _behave_async(principal: Principal) -> Any:
    if principal.claims["behaviour"] == "hang":
        await asyncio.sleep(3600)
    return _behave(principal)


@pytest.fixture(scope="module")
def served(_session_issuer: LocalIssuer) -> Iterator[str]:
    """One uvicorn on loopback for the module: /async-check and /sync-check routes, and an open /ping."""
    import uvicorn

    from example_server import free_port

    issuer = _session_issuer
    settings = issuer.settings()
    jwks = {issuer.user_pool_id: issuer.jwks()}
    with_async = CognitoAuth(
        verifier=TokenVerifier(settings, jwks=jwks, check=_behave_async, check_timeout_seconds=0.5)
    )
    with_sync = CognitoAuth(verifier=TokenVerifier(settings, jwks=jwks, check=_behave))
    app = FastAPI()

    @app.get("/async-check")
    async def async_route(principal: Principal = Depends(with_async)) -> dict[str, str]:
        return {"username": principal.username}

    @app.get("/sync-check")
    async def sync_route(principal: Principal = Depends(with_sync)) -> dict[str, str]:
        return {"username": principal.username}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _served_outcome(base_url: str, route: str, token: str) -> str:
    import loopback

    response = loopback.get(f"{base_url}{route}", headers={"Authorization": token}, timeout=20)
    if response.status_code == 200:
        return "ok"
    if response.status_code >= 500 and response.status_code != 503:
        return f"{response.status_code} server error"
    return f"{response.status_code} {response.json()['detail']['code']}"


@pytest.mark.parametrize("route", ["/async-check", "/sync-check"])
@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("pass", "ok"),
        ("cancelled", "401 check_failed"),
        ("generator-exit", "401 check_failed"),
        ("system-exit", "401 check_failed"),
    ],
)
def test_under_uvicorn_a_check_ending_in_a_base_exception_is_a_401_never_a_500(
    served: str, issuer: LocalIssuer, route: str, behaviour: str, expected: str
) -> None:
    assert _served_outcome(served, route, issuer.mint(behaviour=behaviour)) == expected
    assert _served_outcome(served, "/ping", "") == "ok"  # the server is still serving


def test_under_uvicorn_a_hung_async_check_is_answered_503_check_unavailable(
    served: str, issuer: LocalIssuer
) -> None:
    assert _served_outcome(served, "/async-check", issuer.mint(behaviour="hang")) == "503 check_unavailable"


def test_under_uvicorn_a_slow_sync_check_does_not_delay_other_requests(
    served: str, issuer: LocalIssuer
) -> None:
    """A 2 s sync check once delayed an unauthenticated /ping by 1.8 s: it ran on the event loop."""
    import loopback

    outcome: list[str] = []
    slow = threading.Thread(
        target=lambda: outcome.append(_served_outcome(served, "/sync-check", issuer.mint(behaviour="slow")))
    )
    slow.start()
    time.sleep(0.3)  # the slow check is running now
    started = time.monotonic()
    assert loopback.get(f"{served}/ping", timeout=20).status_code == 200
    ping_seconds = time.monotonic() - started
    slow.join(timeout=20)

    assert outcome == ["ok"]
    assert ping_seconds < 1.5  # on the loop, the ping would wait out the remaining 1.7 s of the check
