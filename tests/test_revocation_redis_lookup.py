"""The lookup mode for processes frozen between calls (AWS Lambda), against a real ``redis-server``."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from fake_clock import FakeClock
from redis_server import RedisServer, is_redis_installed, running_redis
from siot_authz import RevocationUnavailable, TokenRevoked, TokenVerifier
from siot_authz.revocation import RedisLookupRevocations, RedisRevocations
from siot_authz.testing import LocalIssuer

pytestmark = pytest.mark.skipif(not is_redis_installed(), reason="needs redis-server on PATH")

CACHE_SECONDS = 5.0
MAX_UNCONFIRMED = 60.0


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def lookup(shared_redis: RedisServer, clock: FakeClock) -> Iterator[RedisLookupRevocations]:
    backend = RedisLookupRevocations(
        shared_redis.url, cache_seconds=CACHE_SECONDS, max_unconfirmed_seconds=MAX_UNCONFIRMED, clock=clock
    )
    yield backend
    backend.close()


@pytest.fixture
def verifier(issuer: LocalIssuer, lookup: RedisLookupRevocations) -> Iterator[TokenVerifier]:
    verifier = TokenVerifier(issuer.settings(), revocations=lookup)
    yield verifier
    verifier.close()


@pytest.fixture
def cli_verifier(issuer: LocalIssuer, shared_redis: RedisServer) -> Iterator[TokenVerifier]:
    """What ``siot-authz revoke`` builds: it writes the keys the lookup reads."""
    revocations = RedisRevocations(shared_redis.url)
    verifier = TokenVerifier(issuer.settings(), revocations=revocations)
    yield verifier
    revocations.stop_sync()
    verifier.close()


def user_token(issuer: LocalIssuer, **claims: object) -> tuple[str, str]:
    username = f"user-{uuid.uuid4().hex[:8]}"
    return issuer.claims(username=username)["sub"], issuer.mint(username=username, **claims)


@pytest.mark.parametrize("kind", ["user", "session"])
def test_refuses_a_token_revoked_through_the_cli_once_its_answer_is_older_than_cache_seconds(
    issuer: LocalIssuer, verifier: TokenVerifier, cli_verifier: TokenVerifier, clock: FakeClock, kind: str
) -> None:
    session = f"jti-{uuid.uuid4().hex}"
    sub, token = user_token(issuer, origin_jti=session)
    _, other_session = user_token(issuer, origin_jti=f"jti-{uuid.uuid4().hex}")
    assert verifier.verify_sync(token).sub == sub

    if kind == "user":
        cli_verifier.revoke_user_sync(issuer.user_pool_id, sub)
    else:
        cli_verifier.revoke_session_sync(issuer.user_pool_id, session)
    clock.now += CACHE_SECONDS - 1
    assert verifier.verify_sync(token).sub == sub  # the answer kept: documented, at most cache_seconds

    clock.now += 1
    with pytest.raises(TokenRevoked):
        verifier.verify_sync(token)
    assert verifier.verify_sync(other_session)


def test_asks_only_for_the_users_and_the_sessions_keys_in_one_round_trip(
    issuer: LocalIssuer, verifier: TokenVerifier, shared_redis: RedisServer
) -> None:
    client = redis.Redis.from_url(shared_redis.url)
    client.config_resetstat()

    verifier.verify_sync(user_token(issuer, origin_jti="jti-one")[1])
    verifier.verify_sync(user_token(issuer)[1])

    stats = client.info("commandstats")
    client.close()
    assert stats["cmdstat_mget"]["calls"] == 2
    assert not any(name in stats for name in ("cmdstat_scan", "cmdstat_keys", "cmdstat_subscribe"))
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("siot_authz")]


def test_a_revocation_recorded_through_it_bites_at_once(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    sub, token = user_token(issuer)
    assert verifier.verify_sync(token)

    verifier.revoke_user_sync(issuer.user_pool_id, sub)

    with pytest.raises(TokenRevoked):
        verifier.verify_sync(token)


def test_fails_closed_by_the_followers_rule_while_redis_is_unreachable(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    with running_redis() as own:
        lookup = RedisLookupRevocations(
            own.url, cache_seconds=CACHE_SECONDS, max_unconfirmed_seconds=MAX_UNCONFIRMED, clock=clock
        )
        verifier = TokenVerifier(issuer.settings(), revocations=lookup)
        writer = RedisRevocations(own.url)
        revoked_sub, revoked = user_token(issuer)
        _, known = user_token(issuer)
        _, never_asked = user_token(issuer)
        try:
            TokenVerifier(issuer.settings(), revocations=writer).revoke_user_sync(
                issuer.user_pool_id, revoked_sub
            )
            assert verifier.verify_sync(known)
            with pytest.raises(TokenRevoked):
                verifier.verify_sync(revoked)

            own.kill()
            clock.now += CACHE_SECONDS + 1

            # Answers Redis gave within max_unconfirmed_seconds are enforced; a token with none gets 503.
            assert verifier.verify_sync(known)
            with pytest.raises(TokenRevoked):
                verifier.verify_sync(revoked)
            with pytest.raises(RevocationUnavailable):
                verifier.verify_sync(never_asked)
            assert lookup.status().state == "degraded"
            assert verifier.health().is_ready

            clock.now += MAX_UNCONFIRMED
            with pytest.raises(RevocationUnavailable):
                verifier.verify_sync(known)
            assert lookup.status().state == "failed"
            assert not verifier.health().is_ready

            own.start()  # back, and empty: the answers come from Redis again
            assert verifier.verify_sync(never_asked)
            assert lookup.status().state == "ok"
        finally:
            writer.stop_sync()
            lookup.close()
            verifier.close()


@pytest.mark.parametrize(("cache_seconds", "max_unconfirmed"), [(-1, 60), (10, 5), (float("nan"), 60)])
def test_refuses_limits_that_make_no_sense(cache_seconds: float, max_unconfirmed: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        RedisLookupRevocations(cache_seconds=cache_seconds, max_unconfirmed_seconds=max_unconfirmed)
