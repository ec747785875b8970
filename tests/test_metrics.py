"""The Prometheus metrics, read the way Prometheus reads them: ``/metrics`` text from a FastAPI app.

Each test builds an app protected by ``CognitoAuth`` with a
:class:`PrometheusMetrics` observer on a fresh registry, sends requests, and
parses the exposition text with prometheus_client's own parser.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from metric_samples import Samples, parse, value
from revocation_stub import REVOCATION_STATES, StubRevocations
from siot_authz import AuthSettings, CognitoAuth, InvalidToken, Principal, TokenVerifier
from siot_authz.metrics import PrometheusMetrics
from siot_authz.revocation import MemoryRevocations
from siot_authz.testing import JwksResponse, LocalIssuer
from spare_keys import spare_key

REPO_ROOT = Path(__file__).resolve().parents[1]
OTHER_POOL = "us-east-1_OtherTeam"


def verifications(samples: Samples, pool: str, code: str = "", cache: str = "miss") -> float | None:
    result = "accepted" if code == "" else "refused"
    return value(samples, "siot_authz_verifications_total", pool=pool, result=result, code=code, cache=cache)


def protected_app(auth: CognitoAuth, metrics: PrometheusMetrics) -> FastAPI:
    """An app with one protected route and the metrics mounted at /metrics."""
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"sub": principal.sub}

    app.add_route("/metrics", metrics.asgi_app())
    app.state.auth = auth
    return app


@pytest.fixture
def metrics() -> PrometheusMetrics:
    return PrometheusMetrics(CollectorRegistry())


@pytest.fixture
def make_client(metrics: PrometheusMetrics) -> Iterator[Callable[..., TestClient]]:
    """Start an app for some pools' settings (with lifespan), watched by ``metrics``."""
    clients: list[TestClient] = []

    def start(settings: AuthSettings | Sequence[AuthSettings], **options: Any) -> TestClient:
        auth = CognitoAuth(settings, observer=metrics, **options)
        metrics.watch(auth)
        client = TestClient(protected_app(auth, metrics))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def scrape(client: TestClient, path: str = "/metrics") -> Samples:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def get_me(client: TestClient, token: str) -> int:
    return client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code


# -- verifications ------------------------------------------------------------------------


def test_counts_accepted_verifications_by_cache_hit_and_miss(
    issuer: LocalIssuer, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(issuer.settings())
    token = issuer.mint()

    assert [get_me(client, token) for _ in range(3)] == [200, 200, 200]
    assert get_me(client, issuer.mint(username="bob")) == 200

    samples = scrape(client)
    assert verifications(samples, issuer.user_pool_id, cache="miss") == 2
    assert verifications(samples, issuer.user_pool_id, cache="hit") == 2


def test_accepted_series_start_at_zero_for_every_watched_pool(
    issuer: LocalIssuer, make_client: Callable[..., TestClient]
) -> None:
    samples = scrape(make_client(issuer.settings()))

    assert verifications(samples, issuer.user_pool_id, cache="hit") == 0
    assert verifications(samples, issuer.user_pool_id, cache="miss") == 0


def _signature_of_another_token(issuer: LocalIssuer) -> str:
    header_and_payload = issuer.mint().rsplit(".", 1)[0]
    return header_and_payload + "." + issuer.mint(username="mallory").rsplit(".", 1)[1]


REFUSALS: list[tuple[str, Callable[[LocalIssuer], str], bool]] = [
    # (code, token maker, routed to the pool? A token refused before routing is counted under pool "")
    ("token_expired", lambda issuer: issuer.mint(expires_in=-3600), True),
    ("signature_invalid", _signature_of_another_token, True),
    ("kid_unknown", lambda issuer: issuer.mint(header={"kid": "withdrawn-kid"}), True),
    (
        "issuer_invalid",
        lambda issuer: issuer.mint(iss=f"https://cognito-idp.us-east-1.amazonaws.com/{OTHER_POOL}"),
        False,
    ),
    ("token_malformed", lambda issuer: "not-a-jwt", False),
]


@pytest.mark.parametrize(("code", "make_token", "routed"), REFUSALS, ids=[row[0] for row in REFUSALS])
def test_counts_refusals_by_code_and_pool(
    issuer: LocalIssuer,
    make_client: Callable[..., TestClient],
    code: str,
    make_token: Callable[[LocalIssuer], str],
    routed: bool,
) -> None:
    client = make_client(issuer.settings())
    pool_label = issuer.user_pool_id if routed else ""

    assert get_me(client, make_token(issuer)) == 401
    assert get_me(client, make_token(issuer)) == 401

    samples = scrape(client)
    assert verifications(samples, pool_label, code=code) == 2
    refused = [
        labels
        for (name, labels), _ in samples.items()
        if name == "siot_authz_verifications_total" and ("result", "refused") in labels
    ]
    assert len(refused) == 1, "one refusal code, one series"


def test_counts_a_missing_token_before_routing(
    issuer: LocalIssuer, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(issuer.settings())

    assert client.get("/me").status_code == 401

    assert verifications(scrape(client), "", code="missing_token") == 1


def test_an_application_error_code_keeps_its_label_and_a_stray_code_becomes_unknown(
    metrics: PrometheusMetrics,
) -> None:
    class Banned(InvalidToken):
        code = "banned_by_app"

    metrics.verification("pool", Banned.code, False)
    metrics.verification("pool", "not a code at all", False)
    metrics.verification("pool", "another stray", False)

    samples = parse(_text(metrics))
    assert verifications(samples, "pool", code="banned_by_app") == 1
    assert verifications(samples, "pool", code="unknown") == 2
    assert verifications(samples, "pool", code="not a code at all") is None


def test_counts_are_exact_when_many_threads_verify_at_once(
    issuer: LocalIssuer, metrics: PrometheusMetrics
) -> None:
    verifier = TokenVerifier(issuer.settings(), observer=metrics)
    tokens = [issuer.mint(username=f"user{i}") for i in range(4)]
    for token in tokens:
        verifier.verify_sync(token)
    threads, calls = 8, 2000
    barrier = threading.Barrier(threads)

    def hammer(index: int) -> None:
        barrier.wait()
        for _ in range(calls):
            verifier.verify_sync(tokens[index % len(tokens)])
            metrics.verification("direct", None, True)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    verifier.close()

    samples = parse(_text(metrics))
    assert verifications(samples, issuer.user_pool_id, cache="hit") == threads * calls
    assert verifications(samples, "direct", cache="hit") == threads * calls


def test_scraping_leaves_every_count_as_it_was(
    issuer: LocalIssuer, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(issuer.settings())
    token = issuer.mint()
    assert [get_me(client, token) for _ in range(3)] == [200, 200, 200]
    assert get_me(client, "not-a-jwt") == 401

    scrapes = [scrape(client) for _ in range(3)]

    for samples in scrapes:
        assert verifications(samples, issuer.user_pool_id, cache="miss") == 1
        assert verifications(samples, issuer.user_pool_id, cache="hit") == 2
        assert verifications(samples, "", code="token_malformed") == 1


def _text(metrics: PrometheusMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode("utf-8")


# -- JWKS fetches -----------------------------------------------------------------------------


FETCH_FAILURES = [
    ("error", JwksResponse(status=500)),
    ("error", JwksResponse(close_without_response=True)),
    ("invalid", JwksResponse(body=b'{"keys": "not a list"}')),
]


@pytest.mark.parametrize(("outcome", "response"), FETCH_FAILURES, ids=["500", "dropped", "invalid"])
def test_counts_jwks_fetches_by_outcome_with_their_durations(
    issuer: LocalIssuer, make_client: Callable[..., TestClient], outcome: str, response: JwksResponse
) -> None:
    client = make_client(issuer.settings(jwks_refetch_cooldown_seconds=0, http_timeout_seconds=2.0))
    pool = issuer.user_pool_id
    assert get_me(client, issuer.mint()) == 200  # keys prefetched at start-up

    issuer.serve().response = response
    # A new kid forces a fetch, which fails: the held keys do not know the kid.
    assert get_me(client, issuer.mint(header={"kid": "rotated-in"})) == 401

    samples = scrape(client)
    assert value(samples, "siot_authz_jwks_fetches_total", pool=pool, outcome="ok") == 1
    assert value(samples, "siot_authz_jwks_fetches_total", pool=pool, outcome=outcome) == 1
    assert value(samples, "siot_authz_jwks_fetch_duration_seconds_count", pool=pool) == 2
    total_seconds = value(samples, "siot_authz_jwks_fetch_duration_seconds_sum", pool=pool)
    assert total_seconds is not None
    assert 0 < total_seconds < 5
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == "siot_authz_jwks_fetch_duration_seconds_bucket" and ("pool", pool) in labels
    )
    assert buckets[-1] == (float("inf"), 2)
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)


# -- gauges read from health() ------------------------------------------------------------------


@pytest.fixture(scope="module")
def _other_pool() -> Iterator[LocalIssuer]:
    # The second pool lives for the module and is reset per test; it publishes two keys of its own.
    with LocalIssuer(
        user_pool_id=OTHER_POOL, client_id="otherclient00000000000000", key=spare_key(0)
    ) as other:
        other.keys.append(spare_key(1))
        other.serve()
        yield other


@pytest.fixture
def two_pools(issuer: LocalIssuer, _other_pool: LocalIssuer) -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    """``issuer`` (one key) and a second pool publishing two keys on its own loopback server."""
    _other_pool.serve().reset()
    yield issuer, _other_pool
    _other_pool.serve().reset()


def test_reports_key_count_and_age_for_each_pool(
    two_pools: tuple[LocalIssuer, LocalIssuer], make_client: Callable[..., TestClient]
) -> None:
    first, second = two_pools
    client = make_client([first.settings(), second.settings()])

    before = scrape(client)
    time.sleep(0.05)
    after = scrape(client)

    for pool, key_count in ((first.user_pool_id, 1), (second.user_pool_id, 2)):
        assert value(after, "siot_authz_jwks_keys", verifier="", pool=pool) == key_count
        assert value(after, "siot_authz_jwks_keys_held", verifier="", pool=pool) == 1
        assert value(after, "siot_authz_jwks_keys_stale", verifier="", pool=pool) == 0
        assert value(after, "siot_authz_jwks_last_fetch_failed", verifier="", pool=pool) == 0
        age_before = value(before, "siot_authz_jwks_keys_age_seconds", verifier="", pool=pool)
        age_after = value(after, "siot_authz_jwks_keys_age_seconds", verifier="", pool=pool)
        assert age_before is not None
        assert age_after is not None
        assert 0 <= age_before < age_after < 60
    assert value(after, "siot_authz_ready", verifier="") == 1


def test_reports_a_pool_without_keys_and_not_ready(
    two_pools: tuple[LocalIssuer, LocalIssuer], make_client: Callable[..., TestClient]
) -> None:
    first, second = two_pools
    second.serve().response = JwksResponse(status=503)
    client = make_client([first.settings(), second.settings(http_timeout_seconds=2.0)])

    samples = scrape(client)

    down = second.user_pool_id
    assert value(samples, "siot_authz_jwks_keys_held", verifier="", pool=down) == 0
    assert value(samples, "siot_authz_jwks_keys", verifier="", pool=down) == 0
    assert value(samples, "siot_authz_jwks_keys_age_seconds", verifier="", pool=down) is None
    assert value(samples, "siot_authz_jwks_last_fetch_failed", verifier="", pool=down) == 1
    assert value(samples, "siot_authz_jwks_fetches_total", pool=down, outcome="error") == 1
    assert value(samples, "siot_authz_ready", verifier="") == 0


def test_reports_memory_revocation_entries_and_counts_revoked_tokens(
    issuer: LocalIssuer, make_client: Callable[..., TestClient]
) -> None:
    revocations = MemoryRevocations()
    client = make_client(issuer.settings(), revocations=revocations)
    token = issuer.mint(username="leaver")
    assert get_me(client, token) == 200
    verifier = client.app.state.auth.verifier
    verifier.revoke_user_sync(issuer.user_pool_id, verifier.verify_sync(token).sub)
    verifier.revoke_session_sync(issuer.user_pool_id, "some-origin-jti")

    assert get_me(client, token) == 401

    samples = scrape(client)
    assert value(samples, "siot_authz_revocation_entries", verifier="", backend="memory") == 2
    assert value(samples, "siot_authz_revocation_state", verifier="", backend="memory", state="ok") == 1
    for state in ("starting", "degraded", "failed"):
        assert value(samples, "siot_authz_revocation_state", verifier="", backend="memory", state=state) == 0
    assert value(samples, "siot_authz_revocation_unconfirmed_seconds", verifier="", backend="memory") is None
    # A revoked token is refused on a verified-cache hit, and counted as the hit it was.
    assert verifications(samples, issuer.user_pool_id, code="token_revoked", cache="hit") == 1


@pytest.mark.parametrize(
    ("state", "unconfirmed", "is_ready"), REVOCATION_STATES, ids=[row[0] for row in REVOCATION_STATES]
)
def test_reports_the_revocation_backend_state_as_one_gauge_per_state(
    issuer: LocalIssuer,
    make_client: Callable[..., TestClient],
    state: str,
    unconfirmed: float | None,
    is_ready: bool,
) -> None:
    client = make_client(issuer.settings(), revocations=StubRevocations(state, unconfirmed))

    samples = scrape(client)

    states = {
        dict(labels)["state"]: gauge
        for (name, labels), gauge in samples.items()
        if name == "siot_authz_revocation_state"
    }
    assert states == {"ok": 0, "starting": 0, "degraded": 0, "failed": 0} | {state: 1}
    assert value(samples, "siot_authz_revocation_entries", verifier="", backend="stub") == 3
    assert (
        value(samples, "siot_authz_revocation_unconfirmed_seconds", verifier="", backend="stub")
        == unconfirmed
    )
    assert value(samples, "siot_authz_ready", verifier="") == int(is_ready)


# -- watching ---------------------------------------------------------------------------------


def test_two_watched_verifiers_need_their_own_names(
    two_pools: tuple[LocalIssuer, LocalIssuer], metrics: PrometheusMetrics
) -> None:
    first, second = two_pools
    api = TokenVerifier(first.settings())
    admin = TokenVerifier([first.settings(), second.settings()])
    metrics.watch(api)

    with pytest.raises(ValueError, match="already watched"):
        metrics.watch(admin)
    metrics.watch(admin, name="admin")
    admin.pools[1].keys.refresh_sync()

    samples = parse(_text(metrics))
    assert value(samples, "siot_authz_jwks_keys_held", verifier="", pool=first.user_pool_id) == 0
    assert value(samples, "siot_authz_jwks_keys_held", verifier="admin", pool=first.user_pool_id) == 0
    assert value(samples, "siot_authz_jwks_keys_held", verifier="admin", pool=second.user_pool_id) == 1
    assert value(samples, "siot_authz_jwks_keys_held", verifier="", pool=second.user_pool_id) is None
    api.close()
    admin.close()


def test_reads_a_lazily_built_verifier_when_scraped_not_when_watched(
    issuer: LocalIssuer, metrics: PrometheusMetrics
) -> None:
    resolved: list[AuthSettings] = []

    def settings() -> AuthSettings:
        resolved.append(issuer.settings())
        return resolved[-1]

    auth = CognitoAuth(settings, observer=metrics)
    metrics.watch(auth)
    assert resolved == []

    with TestClient(protected_app(auth, metrics)) as client:
        samples = scrape(client)

    assert len(resolved) == 1
    assert value(samples, "siot_authz_jwks_keys_held", verifier="", pool=issuer.user_pool_id) == 1
    assert value(samples, "siot_authz_ready", verifier="") == 1


def test_a_verifier_that_cannot_be_built_is_reported_not_ready_without_failing_the_scrape(
    metrics: PrometheusMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    def missing_settings() -> AuthSettings:
        raise FileNotFoundError("no config.json here")

    metrics.watch(CognitoAuth(missing_settings, observer=metrics), name="broken")

    samples = parse(_text(metrics))

    assert value(samples, "siot_authz_ready", verifier="broken") == 0
    assert "metrics_health_failed" in caplog.text
    assert "no config.json" not in caplog.text


NAMESPACES = [("siot_authz", "siot_authz_ready"), ("myservice_auth", "myservice_auth_ready"), ("", "ready")]


@pytest.mark.parametrize(("namespace", "ready_name"), NAMESPACES)
def test_every_metric_name_starts_with_the_namespace(
    issuer: LocalIssuer, namespace: str, ready_name: str
) -> None:
    metrics = PrometheusMetrics(CollectorRegistry(), namespace=namespace)
    verifier = TokenVerifier(issuer.settings(), observer=metrics)
    metrics.watch(verifier)
    verifier.verify_sync(issuer.mint())

    samples = parse(_text(metrics))

    assert value(samples, ready_name, verifier="") == 1
    prefix = f"{namespace}_" if namespace else ""
    names = {name for name, _ in samples}
    assert names
    assert all(name.startswith(prefix) for name in names)
    verifier.close()


def test_the_metrics_app_can_be_mounted_too(issuer: LocalIssuer, metrics: PrometheusMetrics) -> None:
    app = FastAPI()
    app.mount("/metrics", metrics.asgi_app())
    metrics.watch(TokenVerifier(issuer.settings()))

    with TestClient(app) as client:
        redirect = client.get("/metrics", follow_redirects=False)
        samples = scrape(client, "/metrics/")

    assert redirect.status_code == 307
    assert value(samples, "siot_authz_ready", verifier="") == 0


def test_a_second_instance_on_the_same_registry_is_refused(metrics: PrometheusMetrics) -> None:
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMetrics(metrics.registry)


def test_labels_never_carry_kids_or_usernames(
    issuer: LocalIssuer, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(issuer.settings(jwks_refetch_cooldown_seconds=0))
    get_me(client, issuer.mint(username="carol-the-user"))
    get_me(client, issuer.mint(username="dave", header={"kid": "kid-from-an-attacker"}))

    text = client.get("/metrics").text

    for secret in ("carol-the-user", "dave", "kid-from-an-attacker", issuer.signing_key.kid):
        assert secret not in text


# -- the documented test, on a machine with no SimpleIOT config -----------------------------------


def _metrics_doc_block(marker: str) -> str:
    """The fenced block right after ``<!-- docs-test: MARKER -->`` in docs/metrics.md."""
    page = (REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    after = page.split(f"<!-- docs-test: {marker} -->\n", 1)[1]
    return after.split("\n", 1)[1].split("\n```\n", 1)[0] + "\n"


def test_the_documented_metrics_test_passes_without_any_config_or_pool_settings(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "myservice").mkdir(parents=True)
    (project / "myservice" / "__init__.py").touch()
    (project / "myservice" / "observed.py").write_text(_metrics_doc_block("file myservice/observed.py"))
    (project / "tests").mkdir()
    (project / "tests" / "test_observed.py").write_text(_metrics_doc_block("pytest"))
    home = tmp_path / "home"  # no ~/.simpleiot here
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIOT_AUTHZ_", "PYTEST_"))}
    env |= {"HOME": str(home), "PYTHONPATH": str(project)}

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_observed.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout


# -- without prometheus_client ----------------------------------------------------------------------


_WITHOUT_PROMETHEUS = textwrap.dedent(
    """
    import importlib.abc
    import sys

    attempts = []

    class RefusePrometheus(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "prometheus_client":
                attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, RefusePrometheus())

    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    import siot_authz
    from siot_authz import CognitoAuth, Principal, TokenVerifier
    from siot_authz.testing import LocalIssuer

    issuer = LocalIssuer()
    settings = issuer.settings(for_transport=True)
    verifier = TokenVerifier(settings, sync_transport=issuer.transport())
    token = issuer.mint()
    verifier.verify_sync(token)
    verifier.verify_sync(token)
    assert verifier.health().is_ready

    auth = CognitoAuth(settings, async_transport=issuer.transport())
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)):
        return {"sub": principal.sub}

    with TestClient(app) as client:
        assert client.get("/me", headers={"Authorization": "Bearer " + token}).status_code == 200
        assert auth.health().is_ready
    assert attempts == [], attempts
    assert not any(name.startswith("prometheus_client") for name in sys.modules)

    try:
        import siot_authz.metrics
    except ImportError as error:
        assert "siot-authz[prometheus]" in str(error), error
    else:
        raise AssertionError("siot_authz.metrics imported without prometheus_client")
    print("ok")
    """
)


def test_nothing_imports_prometheus_client_unless_the_metrics_module_is_used() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PROMETHEUS],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
