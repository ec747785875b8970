"""Revocation as an application uses it: revoke a user or a session, and every later request is refused.

These run on the in-process backend; tests/test_revocation_redis.py runs the
shared one across real worker processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from siot_authz import CognitoAuth, Principal, RevocationUnavailable, TokenRevoked, TokenVerifier
from siot_authz.revocation import MemoryRevocations, Revocation
from siot_authz.testing import LocalIssuer

LIFETIME = 3600.0
LEEWAY = 5.0


class FakeClock:
    """Unix time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def revoking_verifier(issuer: LocalIssuer, clock: FakeClock) -> Iterator[TokenVerifier]:
    verifier = TokenVerifier(
        issuer.settings(max_token_lifetime_seconds=LIFETIME, leeway_seconds=LEEWAY),
        clock=clock,
        revocations=MemoryRevocations(clock=clock),
    )
    yield verifier
    verifier.close()


def test_revoked_user_is_refused_even_for_an_already_verified_token(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier
) -> None:
    token = issuer.mint(username="mallory")
    principal = revoking_verifier.verify_sync(token)  # now in the verified-token cache

    revoking_verifier.revoke_user_sync(issuer.user_pool_id, principal.sub)

    with pytest.raises(TokenRevoked) as refused:
        revoking_verifier.verify_sync(token)
    assert refused.value.code == "token_revoked"
    assert refused.value.status_code == 401


@pytest.mark.anyio
async def test_revoked_user_is_refused_on_the_async_face_before_ever_being_verified(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier
) -> None:
    token = issuer.mint(username="mallory")
    sub = issuer.claims(username="mallory")["sub"]

    await revoking_verifier.revoke_user(issuer.user_pool_id, sub)

    with pytest.raises(TokenRevoked):
        await revoking_verifier.verify(token)


def test_revoking_one_user_leaves_others_in(issuer: LocalIssuer, revoking_verifier: TokenVerifier) -> None:
    revoking_verifier.revoke_user_sync(issuer.user_pool_id, issuer.claims(username="mallory")["sub"])

    assert revoking_verifier.verify_sync(issuer.mint(username="alice")).username == "alice"


@pytest.mark.parametrize(
    ("issued_after_revocation", "is_refused"),
    [
        (-60, True),  # signed in a minute before: signed out
        (0, True),  # same second: iat has whole seconds, so refused rather than guessed
        (1, False),  # signed in again after the revocation
        (600, False),
    ],
)
def test_user_revocation_covers_tokens_issued_before_it(
    issuer: LocalIssuer,
    revoking_verifier: TokenVerifier,
    clock: FakeClock,
    issued_after_revocation: int,
    is_refused: bool,
) -> None:
    entry = revoking_verifier.revoke_user_sync(issuer.user_pool_id, issuer.claims()["sub"])
    issued_at = int(entry.before) + issued_after_revocation
    clock.now = max(clock.now, issued_at + 1.0)
    token = issuer.mint(iat=issued_at, auth_time=issued_at, exp=issued_at + 3600)

    if is_refused:
        with pytest.raises(TokenRevoked):
            revoking_verifier.verify_sync(token)
    else:
        assert revoking_verifier.verify_sync(token).sub == entry.subject


def test_user_revocation_at_a_given_time(issuer: LocalIssuer, revoking_verifier: TokenVerifier) -> None:
    """``before`` may name a past moment: tokens from after it stay valid (a sign-out that happened earlier)."""
    now = int(time.time())
    sub = issuer.claims()["sub"]
    old, recent = issuer.mint(iat=now - 600), issuer.mint(iat=now - 60)

    entry = revoking_verifier.revoke_user_sync(
        issuer.user_pool_id, sub, before=datetime.fromtimestamp(now - 300, tz=UTC)
    )

    assert entry.before == now - 300
    with pytest.raises(TokenRevoked):
        revoking_verifier.verify_sync(old)
    assert revoking_verifier.verify_sync(recent).sub == sub


def test_revoked_session_refuses_only_tokens_from_that_refresh_token(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier
) -> None:
    revoked = issuer.mint(origin_jti="session-1")
    other_session = issuer.mint(origin_jti="session-2", username="alice")
    revoking_verifier.verify_sync(revoked)

    revoking_verifier.revoke_session_sync(issuer.user_pool_id, "session-1")

    with pytest.raises(TokenRevoked):
        revoking_verifier.verify_sync(revoked)
    assert revoking_verifier.verify_sync(other_session).username == "alice"


def test_a_later_user_revocation_wins_and_an_earlier_one_is_ignored(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier
) -> None:
    sub, pool = issuer.claims()["sub"], issuer.user_pool_id
    now = time.time()
    revoking_verifier.revoke_user_sync(pool, sub, before=now)
    revoking_verifier.revoke_user_sync(pool, sub, before=now - 3600)

    (entry,) = revoking_verifier.revocation_entries_sync()

    assert entry.before == now


@pytest.mark.anyio
async def test_entries_are_listed_users_first_on_both_faces(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier
) -> None:
    pool = issuer.user_pool_id
    await revoking_verifier.revoke_session(pool, "session-1")
    user = await revoking_verifier.revoke_user(pool, "user-1")

    listed = await revoking_verifier.revocation_entries()

    assert [(entry.kind, entry.subject) for entry in listed] == [("user", "user-1"), ("session", "session-1")]
    assert listed == revoking_verifier.revocation_entries_sync()
    assert listed[0] == user
    assert Revocation.from_json(user.to_json()) == user


def test_entries_expire_once_no_token_they_cover_can_still_be_valid(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier, clock: FakeClock
) -> None:
    entry = revoking_verifier.revoke_user_sync(issuer.user_pool_id, "user-1")
    assert entry.expires_at == entry.before + LIFETIME + LEEWAY

    clock.now = entry.expires_at - 1
    assert revoking_verifier.health().revocation.entries == 1

    clock.now = entry.expires_at
    assert revoking_verifier.revocation_entries_sync() == []
    assert revoking_verifier.health().revocation.entries == 0


@pytest.mark.parametrize(
    ("revoke", "message"),
    [
        (lambda v, pool: v.revoke_user_sync("eu-west-1_unknown", "sub"), "not configured"),
        (lambda v, pool: v.revoke_user_sync(pool, ""), "non-empty subject"),
        (lambda v, pool: v.revoke_session_sync(pool, ""), "non-empty subject"),
        (lambda v, pool: v.revoke_user_sync(pool, "sub", before=datetime(2030, 1, 1)), "timezone-aware"),
    ],
)
def test_refuses_revocations_that_could_not_mean_anything(
    issuer: LocalIssuer,
    revoking_verifier: TokenVerifier,
    revoke: Callable[[TokenVerifier, str], object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        revoke(revoking_verifier, issuer.user_pool_id)
    assert revoking_verifier.revocation_entries_sync() == []


def test_memory_backend_reports_ok_and_its_entry_count(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier
) -> None:
    revoking_verifier.revoke_session_sync(issuer.user_pool_id, "session-1")

    status = revoking_verifier.health().revocation

    assert (status.backend, status.state, status.entries, status.unconfirmed_seconds) == (
        "memory",
        "ok",
        1,
        None,
    )


# -- over HTTP ------------------------------------------------------------------------


def revocation_app(auth: CognitoAuth) -> FastAPI:
    """/me, and /signed-out/{sub}: what a back end calls after Cognito's AdminUserGlobalSignOut."""
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"sub": principal.sub}

    @app.post("/signed-out/{sub}")
    async def signed_out(sub: str) -> dict[str, float]:
        entry = await auth.verifier.revoke_user(auth.verifier.settings.user_pool_id, sub)
        return {"before": entry.before}

    return app


def test_a_revoked_user_gets_401_token_revoked_on_the_next_request(issuer: LocalIssuer) -> None:
    token = issuer.mint(username="mallory")
    sub = issuer.claims(username="mallory")["sub"]
    with TestClient(revocation_app(CognitoAuth(issuer.settings()))) as client:
        assert (
            client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        )  # now cached

        assert client.post(f"/signed-out/{sub}").status_code == 200
        response = client.get("/me", headers={"Authorization": f"Bearer {token}"})

        assert response.status_code == 401
        assert response.json()["detail"]["code"] == "token_revoked"
        others = client.get("/me", headers={"Authorization": f"Bearer {issuer.mint(username='alice')}"})
        assert others.status_code == 200


class FailedClosed(MemoryRevocations):
    """A backend whose mirror has gone unconfirmed too long."""

    can_fail_closed = True  # what a shared store declares, so the verifier asks it

    def is_failed_closed(self) -> bool:
        return True


def test_a_failed_closed_backend_answers_503_revocation_unavailable(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings(), revocations=FailedClosed())
    with TestClient(revocation_app(auth)) as client:
        response = client.get("/me", headers={"Authorization": f"Bearer {issuer.mint()}"})

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "revocation_unavailable"
    with pytest.raises(RevocationUnavailable):
        auth.verifier.verify_sync(issuer.mint())


@pytest.mark.parametrize("before", [float("nan"), float("inf"), float("-inf"), True, "now"])
def test_a_revocation_time_must_be_a_finite_time(issuer: LocalIssuer, before: object) -> None:
    verifier = TokenVerifier(issuer.settings())
    with pytest.raises(ValueError, match="finite"):
        verifier.revoke_user_sync(issuer.user_pool_id, "sub-1", before=before)  # type: ignore[arg-type]
    assert verifier.revocation_entries_sync() == []


@pytest.mark.parametrize("field", ["before", "expires_at"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_entry_with_a_non_finite_time_is_not_a_revocation(field: str, value: float) -> None:
    data = {
        "kind": "user",
        "user_pool_id": "eu-west-1_pool",
        "subject": "bob",
        "before": 1.0,
        "expires_at": 2.0,
    }
    with pytest.raises(ValueError, match="finite"):
        Revocation.from_json({**data, field: value})


def test_a_revoked_token_refused_from_the_cache_is_reported_as_a_cache_hit(issuer: LocalIssuer) -> None:
    seen: list[tuple[str, str | None, bool]] = []

    class Recorder:
        def verification(self, pool_id: str, code: str | None, cache_hit: bool) -> None:
            seen.append((pool_id, code, cache_hit))

        def jwks_fetch(self, pool_id: str, outcome: str, seconds: float) -> None:
            pass

    verifier = TokenVerifier(issuer.settings(), observer=Recorder())
    token = issuer.mint(iat=int(time.time()) - 60)
    principal = verifier.verify_sync(token)
    verifier.verify_sync(token)
    verifier.revoke_user_sync(principal.user_pool_id, principal.sub)
    with pytest.raises(TokenRevoked):
        verifier.verify_sync(token)

    pool = issuer.user_pool_id
    assert seen == [(pool, None, False), (pool, None, True), (pool, "token_revoked", True)]
