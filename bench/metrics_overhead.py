"""What Prometheus metrics cost on the hot path: a verified-cache hit through ``verify_sync``, metrics off and on.

Run ``python bench/metrics_overhead.py`` (about ten seconds) or with
``--quick`` for a smoke check. ``--multiprocess`` measures prometheus_client's
multiprocess mode instead (``PROMETHEUS_MULTIPROC_DIR`` set to a temporary
directory before prometheus_client is imported), where each hit writes to a
memory-mapped file. Both verifiers hold the same already-verified
tokens. Each round is short and times both sides in the order off, on, on,
off (or its mirror image), and the ratio reported is the median of the
per-round ratios, so a machine that is busy for a moment skews both sides
of a round alike. Nothing here
touches the network: keys are served by the issuer's in-process transport.

``bench/run.py`` can take the rounds from :func:`metrics_overhead_rounds`
(verifications per second, keyed ``hot`` and ``hot-metrics``, the shape its
``print_rows`` reads).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from siot_authz import TokenVerifier
from siot_authz.testing import LocalIssuer

#: The budget from DESIGN.md for a verified-cache hit with every feature on.
BUDGET_MICROSECONDS = 3.0


def metrics_overhead_rounds(
    issuer: LocalIssuer, *, rounds: int = 61, passes: int = 20, token_count: int = 100
) -> list[dict[str, float]]:
    """Per round, verified-cache hits per second without metrics (``hot``) and with them (``hot-metrics``)."""
    # Imported here: --multiprocess must set its variable before prometheus_client is imported.
    from prometheus_client import CollectorRegistry

    from siot_authz.metrics import PrometheusMetrics

    tokens = [issuer.mint(username=f"user{index}") for index in range(token_count)]
    settings = issuer.settings(for_transport=True)
    transport = issuer.transport()
    off = TokenVerifier(settings, sync_transport=transport)
    metrics = PrometheusMetrics(CollectorRegistry())
    on = TokenVerifier(settings, sync_transport=transport, observer=metrics)
    metrics.watch(on)  # scrape-time gauges; they must cost the request path nothing

    def hits(verifier: TokenVerifier) -> Callable[[], int]:
        verify = verifier.verify_sync

        def run() -> int:
            for _ in range(passes):
                for token in tokens:
                    verify(token)
            return passes * len(tokens)

        return run

    variants = {"hot": hits(off), "hot-metrics": hits(on)}
    for token in tokens:  # into both verified caches
        off.verify_sync(token)
        on.verify_sync(token)
    for run in variants.values():  # warm-up
        run()
    results = []
    for index in range(rounds):
        # Off, on, on, off (then the mirror image): a machine that slows down
        # or speeds up during the round weighs on both sides alike.
        first, second = ("hot", "hot-metrics") if index % 2 == 0 else ("hot-metrics", "hot")
        seconds = dict.fromkeys(variants, 0.0)
        counts = dict.fromkeys(variants, 0)
        for name in (first, second, second, first):
            gc.collect()
            start = time.perf_counter()
            counts[name] += variants[name]()
            seconds[name] += time.perf_counter() - start
        results.append({name: counts[name] / seconds[name] for name in variants})
    off.close()
    on.close()
    return results


def report(results: list[dict[str, float]], *, mode: str = "single process") -> float:
    """Print the per-hit cost of each side and the median per-round ratio; return that ratio (on / off time)."""
    off_us = statistics.median(1e6 / r["hot"] for r in results)
    on_us = statistics.median(1e6 / r["hot-metrics"] for r in results)
    ratio = statistics.median(r["hot"] / r["hot-metrics"] for r in results)
    added_ns = statistics.median(1e9 / r["hot-metrics"] - 1e9 / r["hot"] for r in results)
    verdict = "met" if on_us < BUDGET_MICROSECONDS else "MISSED"
    print(f"verified-cache hit, verify_sync, {mode}, median of {len(results)} alternating rounds")
    print(f"  metrics off   {off_us:6.3f} us")
    print(f"  metrics on    {on_us:6.3f} us   (budget < {BUDGET_MICROSECONDS} us: {verdict})")
    print(f"  on / off      {ratio:6.3f}x the time, {added_ns:+.0f} ns per hit")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="a few short rounds: a smoke check, not a figure"
    )
    parser.add_argument(
        "--multiprocess",
        action="store_true",
        help="measure prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a temporary directory)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory, LocalIssuer() as issuer:
        if args.multiprocess:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        if args.quick:
            results = metrics_overhead_rounds(issuer, rounds=15, passes=5)
        else:
            results = metrics_overhead_rounds(issuer)
    report(results, mode="multiprocess mode" if args.multiprocess else "single process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
