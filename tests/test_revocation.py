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

from fake_clock import FakeClock
from siot_authz import CognitoAuth, Principal, RevocationUnavailable, TokenRevoked, TokenVerifier
from siot_authz.revocation import MemoryRevocations, Revocation
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key

LIFETIME = 3600.0
LEEWAY = 5.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


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

    assert entry.before == now - 300 + LEEWAY  # the sign-out plus the skew the verifier accepts
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

    assert entry.before == now + LEEWAY


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


# -- one pool's entries never touch another's -------------------------------------------


@pytest.fixture(scope="module")
def other_pool() -> Iterator[LocalIssuer]:
    """A second user pool, whose users may carry the very same sub and origin_jti as the first's."""
    with LocalIssuer(user_pool_id="us-east-1_OtherPool2", key=spare_key(0)) as other:
        other.serve()
        yield other


@pytest.mark.parametrize("kind", ["user", "session"])
def test_revoking_in_one_pool_leaves_the_same_subject_valid_in_another(
    issuer: LocalIssuer, other_pool: LocalIssuer, clock: FakeClock, kind: str
) -> None:
    """A sub (or origin_jti) is unique only within its pool: another pool may hand out the same one."""
    verifier = TokenVerifier(
        [issuer.settings(), other_pool.settings()], clock=clock, revocations=MemoryRevocations(clock=clock)
    )
    shared_sub, shared_jti = "5b1b2a1c-2f4e-4a55-9d3a-0b7f4c1e2d3f", "7d2e9c4a-1b3f-4e5d-8a6c-2f1e0d9b8a7c"
    issued = int(clock.now) - 60
    claims = {"sub": shared_sub, "origin_jti": shared_jti, "iat": issued, "auth_time": issued}
    revoked, elsewhere = issuer.mint(**claims), other_pool.mint(**claims)

    if kind == "user":
        verifier.revoke_user_sync(issuer.user_pool_id, shared_sub)
    else:
        verifier.revoke_session_sync(issuer.user_pool_id, shared_jti)

    with pytest.raises(TokenRevoked):
        verifier.verify_sync(revoked)
    assert verifier.verify_sync(elsewhere).user_pool_id == other_pool.user_pool_id
    verifier.close()


# -- a `before` on a whole second ---------------------------------------------------------


@pytest.mark.parametrize(
    ("issued_after_before", "is_refused"),
    [
        (-1, True),
        # iat == before: issued in the second the revocation names (the CLI's --before ...Z gives a
        # whole second), so refused, as for any same-second token: never let a signed-out one through.
        (0, True),
        (1, False),
    ],
)
def test_a_whole_second_before_refuses_tokens_issued_in_that_second(
    issuer: LocalIssuer,
    revoking_verifier: TokenVerifier,
    clock: FakeClock,
    issued_after_before: int,
    is_refused: bool,
) -> None:
    sub = issuer.claims()["sub"]
    entry = revoking_verifier.revoke_user_sync(
        issuer.user_pool_id, sub, before=datetime.fromtimestamp(int(clock.now) - 600, tz=UTC)
    )
    before = int(entry.before)  # a whole second: the one asked for plus the leeway
    assert before == entry.before
    issued_at = before + issued_after_before
    token = issuer.mint(iat=issued_at, auth_time=issued_at, exp=issued_at + 3600)

    if is_refused:
        with pytest.raises(TokenRevoked):
            revoking_verifier.verify_sync(token)
    else:
        assert revoking_verifier.verify_sync(token).sub == sub


# -- bounded entries ---------------------------------------------------------------------

ENTRY = {"kind": "user", "user_pool_id": "eu-west-1_pool", "subject": "bob", "before": 1.0, "expires_at": 2.0}


@pytest.mark.parametrize(
    ("subject", "is_accepted"),
    [
        ("s" * 256, True),
        ("s" * 257, False),
        ("é" * 128, True),  # 256 bytes in UTF-8
        ("é" * 129, False),  # 129 characters, 258 bytes
        ("s" * 5_000_000, False),
    ],
    ids=["256 bytes", "257 bytes", "128 two-byte characters", "129 two-byte characters", "5 MB"],
)
def test_a_subject_is_bounded_at_256_bytes_on_every_path(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier, subject: str, is_accepted: bool
) -> None:
    """The API, the CLI (which builds a Revocation) and a Redis follower (which parses one) share the bound."""
    paths: list[Callable[[], object]] = [
        lambda: revoking_verifier.revoke_user_sync(issuer.user_pool_id, subject),
        lambda: revoking_verifier.revoke_session_sync(issuer.user_pool_id, subject),
        lambda: Revocation.from_json({**ENTRY, "subject": subject}),
        lambda: Revocation("session", issuer.user_pool_id, subject, 1.0, 2.0),
    ]
    for path in paths:
        if is_accepted:
            path()
        else:
            with pytest.raises(ValueError, match="at most 256 bytes"):
                path()
    assert len(revoking_verifier.revocation_entries_sync()) == (2 if is_accepted else 0)


def test_a_pool_id_longer_than_any_cognito_pool_id_is_not_a_revocation() -> None:
    with pytest.raises(ValueError, match="at most 128 bytes"):
        Revocation.from_json({**ENTRY, "user_pool_id": "eu-west-1_" + "p" * 119})
    assert Revocation.from_json({**ENTRY, "user_pool_id": "eu-west-1_" + "p" * 118}).subject == "bob"


# -- costs that do not grow with the number of entries -------------------------------------


def test_revoking_and_reading_health_cost_the_same_with_100k_entries(
    issuer: LocalIssuer, revoking_verifier: TokenVerifier, clock: FakeClock
) -> None:
    """A flood of revocations must not make each later one, or each health probe, scan them all.

    Scanning 100k entries costs milliseconds, so 5,000 revokes and 5,000
    health reads would take tens of seconds; at a constant cost they take a
    fraction of one. The bound is loose on purpose: it separates the two,
    it does not time the machine.
    """
    pool = issuer.user_pool_id
    flood = [
        Revocation("session", pool, f"flood-{index:06d}", clock.now + index / 1000, clock.now + LIFETIME)
        for index in range(100_000)
    ]
    revoking_verifier.revocations.mirror.replace_all(flood)

    started = time.perf_counter()
    for index in range(5_000):
        revoking_verifier.revoke_user_sync(pool, f"user-{index:06d}")
        revoking_verifier.health()
    elapsed = time.perf_counter() - started

    assert revoking_verifier.health().revocation.entries == 105_000
    assert elapsed < 5.0, f"{elapsed:.2f} s"


def test_expired_entries_go_in_expiry_order_even_when_replaced(clock: FakeClock) -> None:
    mirror = MemoryRevocations(clock=clock).mirror
    now = clock.now
    mirror.add(Revocation("user", "p", "a", now, now + 10))
    mirror.add(Revocation("user", "p", "a", now + 5, now + 30))  # replaces the first: lives to +30
    mirror.add(Revocation("session", "p", "s", now, now + 20))

    clock.now = now + 10
    assert mirror.drop_expired() == 0  # the replaced entry's time passed, its replacement's has not
    clock.now = now + 20
    assert mirror.drop_expired() == 1
    assert [entry.subject for entry in mirror.entries()] == ["a"]
    clock.now = now + 30
    assert (mirror.drop_expired(), len(mirror), mirror.has_entries) == (1, 0, False)


def test_writing_the_same_user_many_times_keeps_the_expiry_index_small(clock: FakeClock) -> None:
    mirror = MemoryRevocations(clock=clock).mirror
    for index in range(10_000):
        mirror.add(Revocation("user", "p", "same", clock.now + index, clock.now + index + 60))
    assert len(mirror) == 1
    assert len(mirror._expiry) < 200  # rebuilt once stale items dominate, not one per write


# -- listeners ---------------------------------------------------------------------------


def test_listeners_hear_each_applied_entry_after_it_is_enforced(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    mirror = MemoryRevocations(clock=clock).mirror
    principal = TokenVerifier(issuer.settings()).verify_sync(issuer.mint(iat=int(clock.now) - 60))
    heard: list[tuple[list[str], bool]] = []
    mirror.add_listener(
        lambda entries: heard.append(([e.subject for e in entries], mirror.covers(principal)))
    )

    mirror.add(Revocation("user", issuer.user_pool_id, principal.sub, clock.now, clock.now + 60))
    mirror.add(
        Revocation("user", issuer.user_pool_id, principal.sub, clock.now - 5, clock.now + 60)
    )  # ignored
    mirror.replace_all([Revocation("session", issuer.user_pool_id, "s-1", clock.now, clock.now + 60)])

    assert heard == [([principal.sub], True), (["s-1"], False)]


def test_a_listener_that_raises_breaks_neither_the_mirror_nor_other_listeners(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mirror = MemoryRevocations(clock=clock).mirror
    heard: list[str] = []

    def broken(entries: object) -> None:
        raise RuntimeError("secret detail")

    mirror.add_listener(broken)
    mirror.add_listener(lambda entries: heard.append("second"))
    mirror.add(Revocation("session", "p", "s-1", clock.now, clock.now + 60))

    assert len(mirror) == 1
    assert heard == ["second"]
    assert "revocation_listener_failed type=RuntimeError" in caplog.text
    assert "secret detail" not in caplog.text

    mirror.remove_listener(broken)
    mirror.remove_listener(broken)  # twice: harmless
    mirror.add(Revocation("session", "p", "s-2", clock.now, clock.now + 60))
    assert (heard, mirror.listener_count) == (["second", "second"], 1)
