"""How long a revocation takes to reach another worker, through a real Redis.

Starts a ``redis-server`` and two uvicorn workers of ``tests/revocation_app.py``
on free loopback ports, then, ``--count`` times, has worker B verify (and
cache) a new user's token, revokes that user, and polls worker B until it
answers 401. Two routes for the revocation:

* **through worker A**: ``POST /revoke/user/{sub}`` on the other worker
  (``await verifier.revoke_user``);
* **from a script**: ``verifier.revoke_user_sync`` in this process, with no
  event loop, as ``siot-authz revoke`` does.

Each sample runs from the moment the revocation is sent to the first 401 from
worker B, so it includes one poll round trip (about a millisecond on
loopback). Prints median, 90th percentile and worst case per route;
``--json`` prints them as one JSON object instead.

``--cluster`` runs the same against a Redis Cluster of three primaries (each
with a replica): the entry is published on the primary that holds its key and
crosses the cluster bus to the node the workers subscribe on.

    python bench/revocation_propagation.py [--count 50] [--cluster] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from siot_authz import TokenVerifier
from siot_authz.revocation import RedisRevocations
from siot_authz.testing import LocalIssuer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_server import RedisClusterNodes, running_redis
from revocation_app import Worker, worker_env

#: Give up on one sample after this long: a lost revocation, not a slow one.
_SAMPLE_TIMEOUT = 10.0


async def _until_refused(client: httpx.AsyncClient, worker: Worker, token: str) -> float:
    """Poll ``worker`` with ``token`` until it answers 401; returns the perf_counter time of that answer."""
    deadline = time.perf_counter() + _SAMPLE_TIMEOUT
    while time.perf_counter() < deadline:
        response = await client.get(f"{worker.base_url}/me", headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:
            return time.perf_counter()
    raise RuntimeError(f"worker B still accepted a revoked token after {_SAMPLE_TIMEOUT} s")


async def _measure(
    issuer: LocalIssuer,
    observer: Worker,
    revoke: Callable[[httpx.AsyncClient, str], Awaitable[None]],
    count: int,
) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient() as client:
        for _ in range(count):
            username = f"bench-{uuid.uuid4().hex[:10]}"
            sub = issuer.claims(username=username)["sub"]
            token = issuer.mint(username=username)
            answer = await client.get(f"{observer.base_url}/me", headers={"Authorization": f"Bearer {token}"})
            answer.raise_for_status()  # verified and cached in worker B
            sent = time.perf_counter()
            refused_at, _ = await asyncio.gather(_until_refused(client, observer, token), revoke(client, sub))
            samples.append(refused_at - sent)
    return samples


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "worst_ms": ordered[-1] * 1000,
    }


@contextlib.contextmanager
def _redis_url(is_cluster: bool) -> Iterator[str]:
    """A started Redis (one server, or a cluster) on loopback, stopped afterwards; yields its URL."""
    if not is_cluster:
        with running_redis() as server:
            yield server.url
        return
    with tempfile.TemporaryDirectory(prefix="siot-authz-bench-cluster-") as directory:
        nodes = RedisClusterNodes(Path(directory))
        try:
            nodes.start()
            yield nodes.url
        finally:
            nodes.close()


async def _run(count: int, *, is_cluster: bool) -> dict[str, dict[str, float]]:
    with LocalIssuer() as issuer, _redis_url(is_cluster) as redis_url:
        settings = issuer.settings()
        fields = json.loads(
            settings.model_dump_json(include={"region", "user_pool_id", "client_ids", "jwks_url"})
        )
        env = worker_env(fields, redis_url)
        first, second = Worker(env), Worker(env)
        script_revocations = RedisRevocations(redis_url)
        script = TokenVerifier(settings, revocations=script_revocations)
        try:
            first.start()
            second.start()

            async def through_worker_a(client: httpx.AsyncClient, sub: str) -> None:
                (await client.post(f"{first.base_url}/revoke/user/{sub}")).raise_for_status()

            async def from_a_script(client: httpx.AsyncClient, sub: str) -> None:
                await asyncio.to_thread(script.revoke_user_sync, settings.user_pool_id, sub)

            return {
                "through worker A": _summary(await _measure(issuer, second, through_worker_a, count)),
                "from a script (revoke_user_sync)": _summary(
                    await _measure(issuer, second, from_a_script, count)
                ),
            }
        finally:
            first.stop()
            second.stop()
            script_revocations.stop_sync()
            script.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="revocations per route (default 50)")
    parser.add_argument("--cluster", action="store_true", help="through a three-primary Redis Cluster")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    arguments = parser.parse_args()
    results = asyncio.run(_run(arguments.count, is_cluster=arguments.cluster))
    if arguments.json:
        print(json.dumps(results, indent=2))
        return
    through = "a Redis Cluster" if arguments.cluster else "Redis"
    print(f"Revocation propagation to another worker through {through} (ms, from sending to the first 401)")
    print(f"{'route':<36}{'n':>5}{'median':>10}{'p90':>10}{'worst':>10}")
    for route, figures in results.items():
        print(
            f"{route:<36}{figures['count']:>5.0f}{figures['median_ms']:>10.1f}"
            f"{figures['p90_ms']:>10.1f}{figures['worst_ms']:>10.1f}"
        )


if __name__ == "__main__":
    main()
