"""Prometheus metrics for the verifier: an :class:`Observer` plus gauges read at scrape time.

Optional: it needs the ``prometheus`` extra (``pip install 'siot-authz[prometheus]'``),
and nothing else in the package imports it, so without the extra nothing
changes. Use it in two steps::

    metrics = PrometheusMetrics()
    auth = CognitoAuth(settings, observer=metrics)  # counts as requests are verified
    metrics.watch(auth)                               # key and revocation gauges, read when scraped
    app.add_route("/metrics", metrics.asgi_app())

What it costs on the request path. A verified-cache hit makes one observer
call, and prometheus_client's ``Counter.labels(...).inc()`` costs more than
the rest of the hit (about 1.4 µs against 2.5 µs, measured on a shared two-core
machine); even a pre-bound child's ``inc()`` takes a lock and costs about
0.6 µs. So verifications are counted in :func:`itertools.count` objects,
one per label combination, and read by a custom collector when scraped.
``next()`` on a count is a single C call that holds the GIL throughout, so
it is atomic between the threads that call ``verify_sync`` without any lock
of ours; a lock is taken only to add a new label combination. The observer
call costs about 0.09 µs for a cache hit (0.05 µs for a method that does
nothing; 0.13 µs for other outcomes, whose key is a tuple), where a plain
dict without a lock costs about 0.17 µs and can lose counts between
threads, and one under a lock about 0.34 µs. This relies on the GIL:
CPython's free-threaded build is not supported.

Everything slower (key ages, key counts, revocation state, readiness) is
read from :meth:`TokenVerifier.health` when scraped, so it costs requests
nothing. JWKS fetches are rare and use ordinary prometheus_client metrics.

Several worker processes (``uvicorn --workers``, gunicorn) share their
metrics through prometheus_client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set: a count kept in one worker's memory
cannot be read by the worker a scrape reaches, so verifications are then
counted in prometheus_client's files (about 1 µs a call), and each worker
writes its gauges there from a thread. :mod:`siot_authz._prometheus_files`
holds that mode; without the variable, none of it runs.

Label sets are bounded. A pool id comes from configuration (``""`` for a
token refused before it was routed to a pool), a code is one of the
:class:`AuthError` codes (``"unknown"`` for anything else), and a watched
verifier's ``name`` is chosen in code. Kids, issuers and usernames never
become labels.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, get_args

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_asgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "siot_authz.metrics needs prometheus_client: pip install 'siot-authz[prometheus]'"
    ) from exc

from ._errors import AuthError
from ._health import AuthHealth
from ._prometheus_files import (
    GaugePublisher,
    GaugeSample,
    GaugeSpec,
    SharedFilesCollector,
    SharedVerificationCounter,
    multiprocess_directory,
)
from ._verifier import TokenVerifier
from .revocation import BackendState

__all__ = ["FETCH_DURATION_BUCKETS", "MetricsApp", "PrometheusMetrics"]

logger = logging.getLogger("siot_authz.metrics")

#: Histogram buckets for a JWKS fetch, in seconds; the default fetch deadline is 5 s.
FETCH_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_REVOCATION_STATES: tuple[str, ...] = get_args(BackendState)
_UNKNOWN_CODE = "unknown"


class _HasVerifier(Protocol):
    """A CognitoAuth, or anything else whose verifier may be built on first use."""

    @property
    def verifier(self) -> TokenVerifier: ...


Watchable = TokenVerifier | _HasVerifier


def _auth_error_codes() -> frozenset[str]:
    """Every ``code`` an AuthError subclass defines now, the application's own subclasses included."""
    codes: set[str] = set()
    pending: list[type[AuthError]] = [AuthError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


@dataclass(frozen=True)
class _Watched:
    name: str
    target: Watchable

    def health(self) -> AuthHealth:
        # Resolved now, not at watch time: a CognitoAuth whose settings come
        # from a function builds its verifier at start-up or first use.
        target = self.target
        verifier = target if isinstance(target, TokenVerifier) else target.verifier
        return verifier.health()


#: Every gauge read from health(), and how several workers' values combine in multiprocess mode.
#: The ``live*`` modes drop an exited worker's value. "Worst worker" wins throughout: the fewest
#: keys, the oldest keys, any stale or failed pool, any worker in a revocation state, and ready
#: only when every worker is.
_GAUGES: dict[str, GaugeSpec] = {
    "keys_held": GaugeSpec(
        "jwks_keys_held", "1 when the pool holds signing keys, fresh or stale.", ("pool",), "livemin"
    ),
    "keys": GaugeSpec("jwks_keys", "Number of signing keys the pool holds.", ("pool",), "livemin"),
    "key_age": GaugeSpec(
        "jwks_keys_age_seconds",
        "Seconds since the held keys were fetched (absent when none).",
        ("pool",),
        "livemax",
    ),
    "stale": GaugeSpec("jwks_keys_stale", "1 when the held keys are past their TTL.", ("pool",), "livemax"),
    "fetch_failed": GaugeSpec(
        "jwks_last_fetch_failed", "1 when the pool's last JWKS fetch failed.", ("pool",), "livemax"
    ),
    "revocation_entries": GaugeSpec(
        "revocation_entries", "Live revocation entries held.", ("backend",), "livemin"
    ),
    "revocation_state": GaugeSpec(
        "revocation_state",
        "1 for the revocation backend's current state (ok, starting, degraded, failed), 0 for the others.",
        ("backend", "state"),
        "livemax",
    ),
    "revocation_unconfirmed": GaugeSpec(
        "revocation_unconfirmed_seconds",
        "Seconds since the revocation mirror was confirmed current (absent for a backend that is its own source).",
        ("backend",),
        "livemax",
    ),
    "ready": GaugeSpec(
        "ready",
        "1 when the verifier can verify tokens: keys for every pool, revocations enforceable.",
        (),
        "livemin",
    ),
}

_VERIFICATIONS_HELP = (
    "Token verifications, by pool, result, refusal code and whether the verified-token cache answered."
)


class PrometheusMetrics:
    """Counts verifications and JWKS fetches, and reports watched verifiers' health, to Prometheus.

    Pass it as ``observer=`` to :class:`TokenVerifier` or ``CognitoAuth`` for
    the counters, and to :meth:`watch` for the gauges. ``registry`` defaults
    to prometheus_client's global registry (what ``make_asgi_app()`` and
    ``start_http_server()`` serve), so create one per process. Every metric
    name starts with ``namespace``.

    With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` in the
    environment the server starts with: the metrics then live in
    prometheus_client's per-process files, :attr:`registry` (a registry of
    its own unless one is given) serves every worker's values merged, and
    each worker writes its gauges every ``publish_interval_seconds``
    (ignored in single-process mode). See docs/metrics.md.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "siot_authz",
        publish_interval_seconds: float = 5.0,
    ) -> None:
        if publish_interval_seconds <= 0:
            raise ValueError("publish_interval_seconds must be positive")
        directory = multiprocess_directory()
        #: True when values are shared between processes through ``PROMETHEUS_MULTIPROC_DIR``.
        self.is_multiprocess = directory is not None
        if registry is None:
            # In multiprocess mode the global registry would serve this
            # process's own values beside the merged ones: serve only the merge.
            registry = CollectorRegistry() if self.is_multiprocess else REGISTRY
        self.registry = registry
        self.namespace = namespace
        #: Accepted verified-cache hits by pool id; every other verification by (pool id, code, cache hit).
        self._cache_hits: dict[str, itertools.count[int]] = {}
        self._verifications: dict[tuple[str, str | None, bool], itertools.count[int]] = {}
        #: How many numbers each count above gave to readers rather than to verifications.
        self._reads: dict[tuple[str, str | None, bool], int] = {}
        self._known_codes = _auth_error_codes()
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        # In multiprocess mode the values live in files: these objects only write them.
        metric_registry = None if self.is_multiprocess else self.registry
        self._jwks_fetches = Counter(
            "jwks_fetches",
            "JWKS fetches, by pool and outcome (ok, error, invalid).",
            ("pool", "outcome"),
            namespace=namespace,
            registry=metric_registry,
        )
        self._jwks_fetch_seconds = Histogram(
            "jwks_fetch_duration_seconds",
            "How long JWKS fetches took, by pool, whatever their outcome.",
            ("pool",),
            namespace=namespace,
            buckets=FETCH_DURATION_BUCKETS,
            registry=metric_registry,
        )
        self._publisher: GaugePublisher | None = None
        self._shared: SharedVerificationCounter | None = None
        if directory is None:
            self.registry.register(_ScrapeTimeCollector(self))
            return
        self._publisher = GaugePublisher(
            directory, namespace, _GAUGES, self._gauge_samples, publish_interval_seconds
        )
        self._shared = SharedVerificationCounter(
            directory, namespace, _VERIFICATIONS_HELP, self._bounded_code, self._publisher.ensure_running
        )
        # The observer call goes straight to the shared counter: the
        # single-process method below stays as it is, and costs what it did.
        self.verification = self._shared.verification  # type: ignore[method-assign]
        self.registry.register(SharedFilesCollector(directory, self._publish_now))

    # -- the Observer protocol (request path: keep it cheap) ----------------------

    def verification(self, pool_id: str, code: str | None, cache_hit: bool) -> None:
        """Count one verification: accepted when ``code`` is None, else refused with that code."""
        if cache_hit and code is None:
            # By far the most frequent call, so it has a table keyed by the
            # pool id alone: a str caches its hash, while a tuple key is
            # hashed anew on every call (30 ns of the 70 the other path costs).
            try:
                next(self._cache_hits[pool_id])
            except KeyError:
                next(self._new_verification_counter(pool_id, code, cache_hit))
            return
        try:
            next(self._verifications[pool_id, code, cache_hit])
        except KeyError:
            next(self._new_verification_counter(pool_id, code, cache_hit))

    def _bounded_code(self, code: str | None) -> str | None:
        if code is not None and code not in self._known_codes:
            # An AuthError subclass defined after we started, or a code that is
            # not one: the set of codes must stay bounded either way. A code
            # that is not one comes back here every time; only a refusal pays.
            self._known_codes = _auth_error_codes()
            if code not in self._known_codes:
                return _UNKNOWN_CODE
        return code

    def _new_verification_counter(
        self, pool_id: str, code: str | None, cache_hit: bool
    ) -> itertools.count[int]:
        code = self._bounded_code(code)
        with self._lock:
            if cache_hit and code is None:
                return self._cache_hits.setdefault(pool_id, itertools.count())
            return self._verifications.setdefault((pool_id, code, cache_hit), itertools.count())

    def jwks_fetch(self, pool_id: str, outcome: str, seconds: float) -> None:
        """Count one JWKS fetch and record how long it took."""
        if self._publisher is not None:
            self._publisher.ensure_running()  # a worker's first fetch is its start-up prefetch
        self._jwks_fetches.labels(pool_id, outcome).inc()
        self._jwks_fetch_seconds.labels(pool_id).observe(seconds)

    # -- gauges ---------------------------------------------------------------------

    def watch(self, target: Watchable, *, name: str = "") -> None:
        """Report ``target``'s key, revocation and readiness gauges, read from its ``health()`` when scraped.

        ``target`` is a :class:`TokenVerifier` or a ``CognitoAuth`` (its
        verifier is looked up at each scrape, so one built at start-up is
        seen). Each watched verifier needs its own ``name``, the value of the
        ``verifier`` label on its gauges; the default ``""`` is the one a
        single verifier needs. In multiprocess mode each worker also writes
        them every ``publish_interval_seconds``, for the scrapes other
        workers answer.
        """
        with self._lock:
            if name in self._watched:
                raise ValueError(f"a verifier named {name!r} is already watched; give each its own name=")
            self._watched[name] = _Watched(name, target)

    def asgi_app(self) -> MetricsApp:
        """An ASGI app serving this registry in the Prometheus text format.

        ``app.add_route("/metrics", metrics.asgi_app())`` serves it at exactly
        ``/metrics``; ``app.mount("/metrics", ...)`` works too, but answers
        ``/metrics`` with a redirect to ``/metrics/``.
        """
        return MetricsApp(make_asgi_app(registry=self.registry))

    # -- read by the collectors ----------------------------------------------------

    def _verification_counts(self) -> list[tuple[tuple[str, str | None, bool], int]]:
        counts = []
        with self._lock:
            held: list[tuple[tuple[str, str | None, bool], itertools.count[int]]] = [
                ((pool_id, None, True), counter) for pool_id, counter in self._cache_hits.items()
            ]
            held += self._verifications.items()
            for labels, counter in held:
                # A count tells its position only by giving out the next
                # number. The numbers given to readers (all here, under the
                # lock) are remembered and left out, so the value is exact
                # while other threads keep counting.
                taken = self._reads.get(labels, 0)
                counts.append((labels, next(counter) - taken))
                self._reads[labels] = taken + 1
        return counts

    def _watched_now(self) -> list[_Watched]:
        with self._lock:
            return list(self._watched.values())

    def _gauge_samples(self) -> Iterator[GaugeSample]:
        """Every gauge sample of every watched verifier; in multiprocess mode, also the zero counts."""
        for watched in self._watched_now():
            health = _read_health(watched)
            if health is None:
                yield "ready", [watched.name], 0
                continue
            if self._shared is not None:
                for pool in health.pools:  # accepted series exist from the start
                    self._shared.child(pool.user_pool_id, None, True)
                    self._shared.child(pool.user_pool_id, None, False)
            yield from _health_samples(watched.name, health)

    def _publish_now(self) -> None:
        # Called by the scrape in multiprocess mode: this worker's own gauges are never behind.
        if self._publisher is not None:
            self._publisher.ensure_running()
            self._publisher.publish()


class MetricsApp:
    """prometheus_client's ASGI app wrapped in an object.

    Starlette's ``add_route`` treats a plain function as a request handler
    and any other callable as an ASGI app, so the object form is what lets
    ``add_route`` serve it at an exact path.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def _read_health(watched: _Watched) -> AuthHealth | None:
    try:
        return watched.health()
    except Exception as exc:
        # A scrape must not fail because one verifier cannot be built yet
        # (its settings function raised): it is reported as not ready.
        logger.warning("metrics_health_failed verifier=%r type=%s", watched.name, type(exc).__name__)
        return None


class _ScrapeTimeCollector(Collector):
    """Single-process mode: builds the verification counter and the health gauges at each scrape."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics
        self._prefix = f"{metrics.namespace}_" if metrics.namespace else ""

    def describe(self) -> Iterable[Metric]:
        # Names only: lets the registry refuse a clash without reading any health at registration.
        return [self._verifications_family(), *self._gauge_families().values()]

    def collect(self) -> Iterable[Metric]:
        verifications = self._verifications_family()
        families = self._gauge_families()
        seen: set[tuple[str, str | None, bool]] = set()
        for (pool_id, code, cache_hit), count in self._metrics._verification_counts():
            seen.add((pool_id, code, cache_hit))
            verifications.add_metric(_verification_labels(pool_id, code, cache_hit), count)
        for watched in self._metrics._watched_now():
            health = _read_health(watched)
            if health is None:
                families["ready"].add_metric([watched.name], 0)
                continue
            for pool in health.pools:
                # Accepted series exist from the start, so rate() has a zero to start from.
                for cache_hit in (True, False):
                    if (pool.user_pool_id, None, cache_hit) not in seen:
                        seen.add((pool.user_pool_id, None, cache_hit))
                        verifications.add_metric(_verification_labels(pool.user_pool_id, None, cache_hit), 0)
            for key, labels, value in _health_samples(watched.name, health):
                families[key].add_metric(labels, value)
        return [verifications, *families.values()]

    def _verifications_family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            self._prefix + "verifications", _VERIFICATIONS_HELP, labels=["pool", "result", "code", "cache"]
        )

    def _gauge_families(self) -> dict[str, GaugeMetricFamily]:
        return {
            key: GaugeMetricFamily(
                self._prefix + spec.name, spec.documentation, labels=["verifier", *spec.labels]
            )
            for key, spec in _GAUGES.items()
        }


def _verification_labels(pool_id: str, code: str | None, cache_hit: bool) -> list[str]:
    return [pool_id, "accepted" if code is None else "refused", code or "", "hit" if cache_hit else "miss"]


def _health_samples(name: str, health: AuthHealth) -> Iterator[GaugeSample]:
    """The gauge samples one verifier's health gives: (gauge key, labels, value)."""
    for pool in health.pools:
        labels = [name, pool.user_pool_id]
        keys = pool.keys
        yield "keys_held", labels, int(keys.has_keys)
        yield "keys", labels, keys.key_count
        if keys.age_seconds is not None:
            yield "key_age", labels, keys.age_seconds
        yield "stale", labels, int(keys.is_stale)
        yield "fetch_failed", labels, int(keys.last_error is not None)
    revocation = health.revocation
    backend = [name, revocation.backend]
    yield "revocation_entries", backend, revocation.entries
    for state in _REVOCATION_STATES:
        yield "revocation_state", [*backend, state], int(state == revocation.state)
    if revocation.unconfirmed_seconds is not None:
        yield "revocation_unconfirmed", backend, revocation.unconfirmed_seconds
    yield "ready", [name], int(health.is_ready)
