"""The Redis revocation backend against a real ``redis-server`` and real uvicorn worker processes.

Each test uses its own user names, so entries left by one never touch
another: there is no "unrevoke", by design.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

import loopback
from redis_server import RedisServer, is_redis_installed, running_redis
from revocation_app import Worker, worker_env, worker_pair
from siot_authz import RevocationUnavailable, TokenVerifier
from siot_authz.revocation import RedisRevocations, Revocation, RevocationStoreUnavailable
from siot_authz.testing import LocalIssuer
from tcp_proxy import TcpProxy
from warm_python import WarmPython

pytestmark = pytest.mark.skipif(not is_redis_installed(), reason="needs redis-server on PATH")

#: The issue's bound: a revocation made anywhere is enforced everywhere within a second.
PROPAGATION_BOUND = 1.0


def wait_until(condition: Callable[[], bool], timeout: float, *, step: float = 0.005) -> float:
    """Seconds until ``condition()`` held; AssertionError if it did not within ``timeout``.

    The 5 ms step keeps a measured propagation time precise; a wait whose bound is seconds long
    polls more slowly (each poll of a worker is an HTTP request, CPU on both sides).
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def status_of(worker: Worker, token: str) -> int:
    return loopback.get(f"{worker.base_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code


def revocation_state(worker: Worker) -> str:
    state: str = loopback.get(f"{worker.base_url}/readyz").json()["revocation"]["state"]
    return state


def new_user(issuer: LocalIssuer) -> tuple[str, str]:
    """A user name no other test uses, and its sub."""
    username = f"user-{uuid.uuid4().hex[:8]}"
    return username, issuer.claims(username=username)["sub"]


def signed_in_user(issuer: LocalIssuer) -> tuple[str, str]:
    """The sub of a user no other test uses, and a token of theirs."""
    username, sub = new_user(issuer)
    return sub, issuer.mint(username=username)


def settings_json(issuer: LocalIssuer) -> dict[str, object]:
    return json.loads(
        issuer.settings().model_dump_json(include={"region", "user_pool_id", "client_ids", "jwks_url"})
    )


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def workers(
    _session_issuer: LocalIssuer, shared_redis: RedisServer, worker_python: WarmPython
) -> Iterator[tuple[Worker, Worker]]:
    """Two worker processes sharing ``shared_redis``, as two hosts would."""
    env = worker_env(settings_json(_session_issuer), shared_redis.url)
    with worker_pair(env, Worker, python=worker_python) as pair:
        yield pair


@pytest.fixture
def cli_verifier(issuer: LocalIssuer, shared_redis: RedisServer) -> Iterator[TokenVerifier]:
    """What ``siot-authz revoke`` builds: a verifier on the shared store, no event loop, never started."""
    revocations = RedisRevocations(shared_redis.url)
    verifier = TokenVerifier(issuer.settings(), revocations=revocations)
    yield verifier
    revocations.stop_sync()
    verifier.close()


# -- across workers ---------------------------------------------------------------------------


def test_a_revocation_through_one_worker_is_enforced_by_the_other_within_a_second(
    issuer: LocalIssuer, workers: tuple[Worker, Worker]
) -> None:
    first, second = workers
    sub, token = signed_in_user(issuer)
    assert status_of(first, token) == status_of(second, token) == 200  # both now hold it verified

    answer = loopback.post(f"{first.base_url}/revoke/user/{sub}")
    assert answer.status_code == 200

    assert wait_until(lambda: status_of(second, token) == 401, PROPAGATION_BOUND) < PROPAGATION_BOUND
    body = loopback.get(f"{second.base_url}/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert body["detail"]["code"] == "token_revoked"
    assert status_of(first, token) == 401


@pytest.mark.parametrize("kind", ["user", "session"])
def test_a_revocation_from_a_process_without_event_loop_reaches_every_worker_within_a_second(
    issuer: LocalIssuer, workers: tuple[Worker, Worker], cli_verifier: TokenVerifier, kind: str
) -> None:
    username, sub = new_user(issuer)
    session = f"jti-{uuid.uuid4().hex}"
    token = issuer.mint(username=username, origin_jti=session)
    untouched = issuer.mint(username=username, origin_jti=f"jti-{uuid.uuid4().hex}")
    assert all(status_of(worker, token) == 200 for worker in workers)

    if kind == "user":
        cli_verifier.revoke_user_sync(issuer.user_pool_id, sub)
    else:
        cli_verifier.revoke_session_sync(issuer.user_pool_id, session)

    for worker in workers:
        wait_until(lambda worker=worker: status_of(worker, token) == 401, PROPAGATION_BOUND)  # type: ignore[misc]
        assert status_of(worker, untouched) == (401 if kind == "user" else 200)
    listed = [(entry.kind, entry.subject) for entry in cli_verifier.revocation_entries_sync()]
    assert (kind, sub if kind == "user" else session) in listed


def test_a_token_issued_after_the_revocation_passes_everywhere(
    issuer: LocalIssuer, workers: tuple[Worker, Worker]
) -> None:
    first, second = workers
    username, sub = new_user(issuer)
    before = loopback.post(f"{first.base_url}/revoke/user/{sub}").json()["before"]
    # The entry's before is the sign-out plus the pool's leeway (5 s): a login after that, by the
    # issuer's clock, passes. iat has whole seconds, and the same second is refused.
    issued_at = int(before) + 1
    signed_in_again = issuer.mint(username=username, iat=issued_at, auth_time=issued_at)
    wait_until(lambda: time.time() + 5 >= issued_at, 3)  # an iat up to the leeway ahead is accepted

    assert status_of(first, signed_in_again) == status_of(second, signed_in_again) == 200


def test_a_restarted_worker_still_enforces_revocations_made_before_it_started(
    issuer: LocalIssuer, workers: tuple[Worker, Worker]
) -> None:
    first, second = workers
    sub, token = signed_in_user(issuer)
    assert loopback.post(f"{first.base_url}/revoke/user/{sub}").status_code == 200

    second.restart()

    assert status_of(second, token) == 401


# -- Redis goes away ------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def test_killing_redis_keeps_workers_serving_and_enforcing_and_loses_nothing_when_it_returns(
    issuer: LocalIssuer, own_redis: RedisServer, worker_python: WarmPython
) -> None:
    env = worker_env(settings_json(issuer), own_redis.url)
    first, second = Worker(env, python=worker_python), Worker(env, python=worker_python)
    revoked_name, revoked_sub = new_user(issuer)
    revoked, valid = issuer.mint(username=revoked_name), issuer.mint(username=new_user(issuer)[0])
    try:
        first.launch()
        second.launch()
        first.wait_until_ready()
        second.wait_until_ready()
        assert loopback.post(f"{first.base_url}/revoke/user/{revoked_sub}").status_code == 200
        wait_until(lambda: status_of(second, revoked) == 401, PROPAGATION_BOUND)

        own_redis.kill()

        for worker in (first, second):
            wait_until(lambda worker=worker: revocation_state(worker) == "degraded", 5, step=0.02)  # type: ignore[misc]
            assert status_of(worker, valid) == 200
            assert status_of(worker, revoked) == 401
        refused = loopback.post(f"{first.base_url}/revoke/user/{new_user(issuer)[1]}")
        assert refused.status_code == 503
        assert "unreachable" in refused.json()["error"]
        assert "retry" in refused.json()["error"]

        # Redis comes back empty (nothing persisted): the workers write back what they hold...
        own_redis.start()
        for worker in (first, second):
            wait_until(lambda worker=worker: revocation_state(worker) == "ok", 5, step=0.02)  # type: ignore[misc]
        listed = RedisRevocations(own_redis.url).entries_sync()
        assert [entry.subject for entry in listed] == [revoked_sub]

        # ...so a worker restarted afterwards still enforces the revocation.
        second.restart()
        assert status_of(second, revoked) == 401
        assert status_of(second, valid) == 200
    finally:
        first.stop()
        second.stop()


def test_a_worker_fails_closed_once_unconfirmed_too_long_and_recovers_with_redis(
    issuer: LocalIssuer, own_redis: RedisServer, worker_python: WarmPython
) -> None:
    env = worker_env(settings_json(issuer), own_redis.url, max_unconfirmed_seconds=1.5)
    worker = Worker(env, python=worker_python)
    token = issuer.mint()
    try:
        worker.start()
        assert status_of(worker, token) == 200

        own_redis.kill()
        wait_until(lambda: status_of(worker, token) == 503, 5, step=0.02)

        response = loopback.get(f"{worker.base_url}/me", headers={"Authorization": f"Bearer {token}"})
        assert response.json()["detail"]["code"] == "revocation_unavailable"
        readiness = loopback.get(f"{worker.base_url}/readyz")
        assert readiness.status_code == 503
        assert readiness.json()["revocation"]["state"] == "failed"

        own_redis.start()
        wait_until(lambda: status_of(worker, token) == 200, 5, step=0.02)
    finally:
        worker.stop()


# -- the backend in this process ----------------------------------------------------------------


def entry(
    subject: str, *, before: float | None = None, kind: str = "user", lifetime: float = 3600
) -> Revocation:
    moment = time.time() if before is None else before
    return Revocation(kind, "eu-west-1_pool", subject, moment, moment + lifetime)  # type: ignore[arg-type]


def test_add_refuses_with_a_clear_error_when_redis_is_unreachable(own_redis: RedisServer) -> None:
    revocations = RedisRevocations(own_redis.url)
    own_redis.kill()

    with pytest.raises(RevocationStoreUnavailable, match=r"unreachable.*retry it"):
        revocations.add_sync(entry("alice"))
    assert len(revocations.mirror) == 0  # never applied locally what Redis did not accept
    assert revocations.status().last_error is not None


def test_an_unstarted_backend_fails_closed_until_loaded(issuer: LocalIssuer, own_redis: RedisServer) -> None:
    revocations = RedisRevocations(own_redis.url)
    verifier = TokenVerifier(issuer.settings(), revocations=revocations)
    try:
        assert revocations.status().state == "starting"
        with pytest.raises(RevocationUnavailable):
            verifier.verify_sync(issuer.mint())

        revocations.start_sync()

        assert revocations.status().state == "ok"
        assert verifier.verify_sync(issuer.mint()).username == "alice"
    finally:
        revocations.stop_sync()
        verifier.close()


def test_the_thread_follower_of_a_sync_only_process_sees_changes(own_redis: RedisServer) -> None:
    follower, writer = RedisRevocations(own_redis.url), RedisRevocations(own_redis.url)
    follower.start_sync()
    try:
        writer.add_sync(entry("bob"))

        wait_until(lambda: [e.subject for e in follower.mirror.entries()] == ["bob"], PROPAGATION_BOUND)
    finally:
        follower.stop_sync()
        writer.stop_sync()


def test_redis_keeps_the_later_user_revocation_and_expires_entries_by_itself(own_redis: RedisServer) -> None:
    revocations = RedisRevocations(own_redis.url)
    now = time.time()
    revocations.add_sync(entry("carol", before=now))
    revocations.add_sync(entry("carol", before=now - 600))
    revocations.add_sync(entry("dave", before=now, kind="session", lifetime=60))

    listed = {item.subject: item for item in revocations.entries_sync()}

    assert listed["carol"].before == now
    client = redis.Redis.from_url(own_redis.url)
    ttl_ms = client.pttl("siot_authz:rev:session:eu-west-1_pool:dave")
    assert 55_000 < ttl_ms <= 60_001
    client.close()
    revocations.stop_sync()


def test_prefixes_keep_separate_applications_apart(own_redis: RedisServer) -> None:
    one, other = (
        RedisRevocations(own_redis.url, prefix="app1"),
        RedisRevocations(own_redis.url, prefix="app2"),
    )
    one.add_sync(entry("erin"))

    assert [item.subject for item in one.entries_sync()] == ["erin"]
    assert other.entries_sync() == []


def test_a_malformed_entry_in_redis_is_ignored(own_redis: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis.url)
    client.set("siot_authz:rev:user:eu-west-1_pool:junk", b"{not json")
    client.close()
    revocations = RedisRevocations(own_redis.url)
    revocations.add_sync(entry("frank"))

    assert [item.subject for item in revocations.entries_sync()] == ["frank"]


@pytest.mark.parametrize("limit", [0, -1])
def test_refuses_a_limit_that_would_fail_closed_at_once(limit: float) -> None:
    with pytest.raises(ValueError, match="max_unconfirmed_seconds"):
        RedisRevocations(max_unconfirmed_seconds=limit)


# -- what confirms the mirror, and what unsettles it (issue 14's mutant rows) -------------------------


def test_pongs_keep_a_healthy_mirror_confirmed_past_its_limit(own_redis: RedisServer) -> None:
    # Only PONGs confirm the mirror after the first load: without them it would fail closed after 1 s.
    revocations = RedisRevocations(own_redis.url, max_unconfirmed_seconds=1)
    revocations.start_sync()
    try:
        time.sleep(2.5)

        assert revocations.status().state == "ok"
        assert not revocations.is_failed_closed()
    finally:
        revocations.stop_sync()


def test_a_dropped_connection_shows_as_degraded_within_a_second(own_redis: RedisServer) -> None:
    revocations = RedisRevocations(own_redis.url)
    revocations.start_sync()
    try:
        assert revocations.status().state == "ok"

        own_redis.kill()

        wait_until(lambda: revocations.status().state == "degraded", 1.0)
        assert revocations.status().last_error is not None
    finally:
        revocations.stop_sync()


def test_a_write_made_before_the_subscription_is_confirmed_is_not_lost(own_redis: RedisServer) -> None:
    proxy = TcpProxy(own_redis.port, hold_subscribe=0.8)
    follower = RedisRevocations(f"redis://127.0.0.1:{proxy.port}/0")
    writer = RedisRevocations(own_redis.url)
    starting = threading.Thread(target=follower.start_sync)
    try:
        starting.start()
        assert proxy.holding.wait(5)
        time.sleep(0.3)  # a follower that did not wait would have loaded (an empty set) by now

        writer.add_sync(entry("written-in-the-gap"))
        starting.join(10)

        wait_until(lambda: "written-in-the-gap" in [e.subject for e in follower.mirror.entries()], 2)
    finally:
        follower.stop_sync()
        writer.stop_sync()
        proxy.close()


def test_a_write_after_a_failover_reaches_the_new_primary_behind_the_same_endpoint(
    own_redis: RedisServer,
) -> None:
    # The endpoint (a proxy here, a DNS name on ElastiCache) moves to the promoted replica; the
    # connection already open still reaches the old primary, now a replica that answers READONLY.
    with running_redis() as promoted:
        endpoint = TcpProxy(own_redis.port)
        revocations = RedisRevocations(f"redis://127.0.0.1:{endpoint.port}/0")
        try:
            revocations.add_sync(entry("before-the-failover"))
            demoted = redis.Redis(port=own_redis.port)
            demoted.replicaof("127.0.0.1", str(promoted.port))
            demoted.close()
            endpoint.upstream_port = promoted.port

            revocations.add_sync(entry("after-the-failover"))

            listed = RedisRevocations(promoted.url).entries_sync()
            assert "after-the-failover" in [item.subject for item in listed]
        finally:
            revocations.stop_sync()
            endpoint.close()
