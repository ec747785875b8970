"""Redis as ElastiCache runs it: TLS with a verified certificate, AUTH and ACL users, and Redis Cluster.

Every setup is a real ``redis-server`` (or six of them) started by this
module on free loopback ports, shared by its tests; two real uvicorn
workers follow each. Each test uses its own user names, so entries left by
one never touch another.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

import loopback
from redis_server import (
    CertificateAuthority,
    RedisClusterNodes,
    RedisServer,
    is_cluster_tooling_installed,
    make_test_ca,
)
from revocation_app import Worker, worker_env, worker_pair
from siot_authz import TokenVerifier
from siot_authz.revocation import (
    RedisLookupRevocations,
    RedisRevocations,
    Revocation,
    RevocationStoreUnavailable,
)
from siot_authz.testing import LocalIssuer
from test_revocation_redis import PROPAGATION_BOUND, new_user, settings_json, status_of, wait_until
from warm_python import WarmPython

pytestmark = pytest.mark.skipif(
    not is_cluster_tooling_installed(), reason="needs redis-server, redis-cli and openssl on PATH"
)

#: The ACL user and the legacy AUTH password of the server that requires them.
ACL_USER, ACL_PASSWORD, AUTH_PASSWORD = "siot-app", "Acl/Pw:x@y", "AuthTok3n+/="
#: A revocation made after a failover is enforced everywhere within this (the failover itself included).
AFTER_FAILOVER_BOUND = 10.0


@dataclass
class Setup:
    """One way of running Redis: the URL a service is given, its CA file, and the servers behind it."""

    name: str
    url: str
    tls_ca_file: Path | None = None
    cluster: RedisClusterNodes | None = None

    def revocations(self, **options: object) -> RedisRevocations:
        return RedisRevocations(self.url, tls_ca_file=self.tls_ca_file, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_redis(test_ca: CertificateAuthority) -> Iterator[RedisServer]:
    server = RedisServer(tls=test_ca)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    """A server refusing anonymous clients: the default user needs AUTH_PASSWORD, and ACL_USER its own."""
    server = RedisServer(
        options=[
            ["requirepass", AUTH_PASSWORD],
            ["user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"],
        ]
    )
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[RedisClusterNodes]:
    """ElastiCache Serverless's shape: cluster mode, TLS only."""
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("tls-cluster"), tls=test_ca)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def _port_of(server: RedisServer) -> str:
    return f"127.0.0.1:{server.port}"


def _setup(name: str, request: pytest.FixtureRequest, test_ca: CertificateAuthority) -> Setup:
    if name == "tls":
        server: RedisServer = request.getfixturevalue("tls_redis")
        return Setup("tls", server.url, tls_ca_file=test_ca.ca_file)
    if name == "acl-user":
        server = request.getfixturevalue("acl_redis")
        return Setup("acl-user", f"redis://{ACL_USER}:{ACL_PASSWORD}@{_port_of(server)}/0")
    if name == "auth-token":
        server = request.getfixturevalue("acl_redis")
        return Setup("auth-token", f"redis://:{AUTH_PASSWORD}@{_port_of(server)}/0")
    if name == "tls-cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("tls_cluster")
        return Setup("tls-cluster", nodes.url, tls_ca_file=test_ca.ca_file, cluster=nodes)
    nodes = request.getfixturevalue("cluster")
    return Setup("cluster", nodes.url, cluster=nodes)


@pytest.fixture(scope="module", params=["tls", "acl-user", "cluster"])
def setup(request: pytest.FixtureRequest, test_ca: CertificateAuthority) -> Setup:
    """The three setups two real workers follow (the AUTH token's server is the ACL user's)."""
    return _setup(request.param, request, test_ca)


@pytest.fixture(params=["tls", "acl-user", "auth-token", "cluster", "tls-cluster"])
def any_setup(request: pytest.FixtureRequest, test_ca: CertificateAuthority) -> Setup:
    """Every setup, for what runs in this process only."""
    return _setup(request.param, request, test_ca)


@pytest.fixture(scope="module")
def workers(
    _session_issuer: LocalIssuer, setup: Setup, worker_python: WarmPython
) -> Iterator[tuple[Worker, Worker]]:
    """Two worker processes following ``setup``, as two hosts would."""
    env = worker_env(settings_json(_session_issuer), setup.url, tls_ca_file=setup.tls_ca_file)
    with worker_pair(env, Worker, python=worker_python) as pair:
        yield pair


def entry(subject: str, *, kind: str = "user") -> Revocation:
    now = time.time()
    return Revocation(kind, "eu-west-1_pool", subject, now, now + 600)  # type: ignore[arg-type]


# -- every setup --------------------------------------------------------------------------------


def test_a_revocation_through_one_worker_is_enforced_by_the_other_within_a_second(
    issuer: LocalIssuer, setup: Setup, workers: tuple[Worker, Worker]
) -> None:
    first, second = workers
    username, sub = new_user(issuer)
    token = issuer.mint(username=username)
    assert status_of(first, token) == status_of(second, token) == 200

    assert loopback.post(f"{first.base_url}/revoke/user/{sub}").status_code == 200

    wait_until(lambda: status_of(second, token) == 401, PROPAGATION_BOUND)
    assert status_of(first, token) == 401


def test_a_session_revoked_from_a_process_without_event_loop_reaches_both_workers(
    issuer: LocalIssuer, setup: Setup, workers: tuple[Worker, Worker]
) -> None:
    session = f"jti-{uuid.uuid4().hex}"
    token = issuer.mint(username=new_user(issuer)[0], origin_jti=session)
    revocations = setup.revocations()
    verifier = TokenVerifier(issuer.settings(), revocations=revocations)
    try:
        verifier.revoke_session_sync(issuer.user_pool_id, session)

        for worker in workers:
            wait_until(lambda worker=worker: status_of(worker, token) == 401, PROPAGATION_BOUND)  # type: ignore[misc]
        assert session in [item.subject for item in verifier.revocation_entries_sync()]
    finally:
        revocations.stop_sync()
        verifier.close()


def test_a_follower_in_this_process_sees_what_another_process_writes(any_setup: Setup) -> None:
    follower, writer = any_setup.revocations(), any_setup.revocations()
    subject = f"follower-{uuid.uuid4().hex[:8]}"
    try:
        follower.start_sync()
        assert follower.status().state == "ok"

        writer.add_sync(entry(subject))

        wait_until(lambda: subject in [item.subject for item in follower.mirror.entries()], PROPAGATION_BOUND)
    finally:
        follower.stop_sync()
        writer.stop_sync()


def test_the_lookup_mode_reads_what_the_followers_store(issuer: LocalIssuer, any_setup: Setup) -> None:
    username, sub = new_user(issuer)
    token = issuer.mint(username=username)
    lookup = RedisLookupRevocations(any_setup.url, tls_ca_file=any_setup.tls_ca_file, cache_seconds=0)
    verifier = TokenVerifier(issuer.settings(), revocations=lookup)
    writer = any_setup.revocations()
    try:
        assert verifier.verify_sync(token).sub == sub

        writer.add_sync(Revocation("user", issuer.user_pool_id, sub, time.time() + 1, time.time() + 600))

        with pytest.raises(Exception, match="revoked"):
            verifier.verify_sync(token)
    finally:
        writer.stop_sync()
        lookup.close()
        verifier.close()


# -- what a client without the right credentials or CA gets -------------------------------------------


def test_a_tls_server_is_refused_without_its_ca(tls_redis: RedisServer) -> None:
    # The test CA is in no system trust store, so verifying against it fails.
    with pytest.raises(RevocationStoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        RedisRevocations(tls_redis.url).add_sync(entry("tls-no-ca"))


def test_a_tls_server_is_refused_under_a_name_its_certificate_does_not_carry(
    tls_redis: RedisServer, test_ca: CertificateAuthority
) -> None:
    # The certificate names 127.0.0.1 and localhost; "127.0.0.2" reaches the same server under another name.
    url = tls_redis.url.replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(RevocationStoreUnavailable, match="unreachable"):
        RedisRevocations(url, tls_ca_file=test_ca.ca_file).entries_sync()


def test_a_plain_url_is_refused_with_a_ca_file(tls_redis: RedisServer, test_ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="rediss://"):
        RedisRevocations(tls_redis.url.replace("rediss://", "redis://"), tls_ca_file=test_ca.ca_file)


@pytest.mark.parametrize(
    "credentials",
    ["", f"{ACL_USER}:wrong-{ACL_PASSWORD}@", f":wrong-{AUTH_PASSWORD}@", f"nobody:{ACL_PASSWORD}@"],
)
def test_wrong_or_missing_credentials_are_refused_without_showing_them(
    acl_redis: RedisServer, credentials: str
) -> None:
    url = f"redis://{credentials}{_port_of(acl_redis)}/0"
    with pytest.raises(RevocationStoreUnavailable) as refused:
        RedisRevocations(url).add_sync(entry("no-auth"))

    message = str(refused.value)
    assert "unreachable" in message
    for secret in ("wrong", ACL_PASSWORD, AUTH_PASSWORD, "nobody"):
        assert secret not in message


# -- cluster ---------------------------------------------------------------------------------------


def test_entries_spread_over_every_primary_reach_a_subscriber_and_a_full_load_finds_them_all(
    cluster: RedisClusterNodes,
) -> None:
    prefix = f"spread{uuid.uuid4().hex[:6]}"
    subscriber, writer = (
        RedisRevocations(cluster.url, prefix=prefix),
        RedisRevocations(cluster.url, prefix=prefix),
    )
    loader = RedisRevocations(cluster.url, prefix=prefix)
    subjects = {f"user-{index}" for index in range(60)}
    try:
        subscriber.start_sync()  # subscribed on one node, with nothing to load yet
        for subject in subjects:
            writer.add_sync(entry(subject))

        held = {
            server.port: redis.Redis(port=server.port).dbsize()  # type: ignore[no-untyped-call]
            for server in cluster.primaries()
        }
        assert len(held) == 3
        assert all(count > 0 for count in held.values()), held
        # Published on whichever primary holds each key, every entry reaches the one subscription.
        wait_until(
            lambda: {item.subject for item in subscriber.mirror.entries()} == subjects, PROPAGATION_BOUND
        )
        loader.start_sync()
        assert {item.subject for item in loader.mirror.entries()} == subjects
        assert {item.subject for item in writer.entries_sync()} == subjects
    finally:
        for revocations in (subscriber, writer, loader):
            revocations.stop_sync()


def _subscribed_primary(cluster: RedisClusterNodes, channel: str) -> RedisServer:
    for server in cluster.primaries():
        client = redis.Redis(port=server.port)
        counts = dict(client.pubsub_numsub(channel))
        client.close()
        if counts.get(channel.encode(), 0) > 0:
            return server
    raise AssertionError("no primary holds the subscription")


@pytest.mark.parametrize("setup", ["cluster"], indirect=True)  # a failover needs the cluster
def test_killing_the_primary_holding_the_subscription_loses_no_entry_and_keeps_enforcing(
    issuer: LocalIssuer, setup: Setup, workers: tuple[Worker, Worker]
) -> None:
    cluster = setup.cluster
    assert cluster is not None
    first, second = workers
    before_name, before_sub = new_user(issuer)
    revoked_before = issuer.mint(username=before_name)
    after_name, after_sub = new_user(issuer)
    revoked_after = issuer.mint(username=after_name)
    valid = issuer.mint(username=new_user(issuer)[0])
    assert loopback.post(f"{first.base_url}/revoke/user/{before_sub}").status_code == 200
    wait_until(lambda: status_of(second, revoked_before) == 401, PROPAGATION_BOUND)
    victim = _subscribed_primary(cluster, "siot_authz:revocations")

    victim.kill()
    try:
        # Revocations made during the failover are refused (503) until the slot's new primary takes them.
        wait_until(
            lambda: loopback.post(f"{first.base_url}/revoke/user/{after_sub}").status_code == 200,
            15,
            step=0.2,
        )

        for worker in workers:
            wait_until(
                lambda worker=worker: status_of(worker, revoked_after) == 401,  # type: ignore[misc]
                AFTER_FAILOVER_BOUND,
                step=0.02,
            )
            assert status_of(worker, revoked_before) == 401
            assert status_of(worker, valid) == 200
            wait_until(lambda worker=worker: _state(worker) == "ok", AFTER_FAILOVER_BOUND, step=0.02)  # type: ignore[misc]
        # A fresh client needs a live node to start from (ElastiCache's configuration endpoint is one).
        survivor = next(server for server in cluster.primaries() if server is not victim)
        listed = {
            item.subject
            for item in RedisRevocations(f"redis+cluster://127.0.0.1:{survivor.port}").entries_sync()
        }
        assert {before_sub, after_sub} <= listed
    finally:
        victim.start()  # it rejoins as a replica of the primary that replaced it
        cluster.wait_until_healthy()


def _state(worker: Worker) -> str:
    state: str = loopback.get(f"{worker.base_url}/readyz").json()["revocation"]["state"]
    return state


def test_the_cli_revokes_through_a_tls_server_with_its_ca_file(
    tls_redis: RedisServer, test_ca: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    from siot_authz.cli import main

    sub = f"cli-tls-{uuid.uuid4().hex}"
    common = ["--redis-url", tls_redis.url, "--redis-prefix", "cli-tls"]

    refused = main(["revoke", "user", "--pool", "us-east-1_TlsPool", "--sub", sub, *common])
    refused_err = capsys.readouterr().err
    done = main(
        [
            "revoke",
            "user",
            "--pool",
            "us-east-1_TlsPool",
            "--sub",
            sub,
            *common,
            "--redis-ca-file",
            str(test_ca.ca_file),
        ]
    )
    capsys.readouterr()

    assert refused != 0  # the test CA is in no system trust store
    assert "nothing was revoked" in refused_err
    assert "certificate" in refused_err
    assert done == 0
    listed = RedisRevocations(tls_redis.url, prefix="cli-tls", tls_ca_file=test_ca.ca_file).entries_sync()
    assert sub in {item.subject for item in listed}


def test_the_cli_refuses_a_ca_file_for_a_plain_url_or_a_missing_file(
    tls_redis: RedisServer, test_ca: CertificateAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siot_authz.cli import main

    base = ["revocations", "--redis-prefix", "cli-tls"]
    plain = main(
        [
            *base,
            "--redis-url",
            tls_redis.url.replace("rediss://", "redis://"),
            "--redis-ca-file",
            str(test_ca.ca_file),
        ]
    )
    plain_err = capsys.readouterr().err
    missing = main([*base, "--redis-url", tls_redis.url, "--redis-ca-file", str(tmp_path / "absent.pem")])
    missing_err = capsys.readouterr().err

    assert plain != 0
    assert "--redis-ca-file needs a TLS URL" in plain_err
    assert missing != 0
    assert "--redis-ca-file: no such file" in missing_err
    assert "absent.pem" not in missing_err  # usage errors never repeat a value: it may be a secret
