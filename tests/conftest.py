"""Shared fixtures: a local Cognito stand-in with its JWKS on a real loopback HTTP server."""

from __future__ import annotations

import fcntl
import functools
import gc
import inspect
import ipaddress
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from siot_authz import AuthSettings, CognitoAuth, Principal, TokenVerifier
from siot_authz.testing import JwksServer, LocalIssuer
from warm_python import WarmPython

# -- how the suite spreads over pytest-xdist workers --------------------------------------------
#
# pyproject runs ``-n 3 --dist loadfile --no-loadscope-reorder``: each file runs whole on one
# worker, so its module-scoped servers (Redis, uvicorn worker pairs, moto) start once. Two changes
# here: a file in _SPLIT is dealt round-robin into that many parts, each run whole by one worker,
# since alone it would outlast the rest of the run (its expensive fixtures are session-scoped, or
# cheap); and files are collected in the order below, which xdist keeps (``--dist loadgroup``
# would say this with marks, but pytest-xdist 3.8 cannot see its group marks under pytest 9.2's
# node ids).
#
# The order: longest first, so that no long file starts last and runs alone at the end; and the
# files that mostly wait (on servers, timeouts, expiring tokens) dealt one to every two that keep a
# core busy. Three waiting files at once left both cores half idle (the first 20 s of a run, when
# the order was by length alone); one beside two busy ones keeps them working.
_SPLIT = {
    # Not test_docs.py (11 s alone): each test process that runs a part of it starts the samples'
    # two warm interpreters, 1.5 s of CPU.
    "test_token_parser_equivalence.py": 3,
    "test_attacks.py": 2,
    "test_check.py": 2,
    "test_key_cache.py": 2,
    "test_key_refresh.py": 2,
    "test_packaging.py": 2,
}
# Rough (wall, CPU) seconds per file, each run alone on this 2-core machine, every process it
# starts counted, less the run's start-up. They only order the files: a stale figure costs some
# wall time, never a test. Files not named count (1, 1).
_COST = {
    "test_revocation_redis_setups.py": (15, 5), "test_websocket_lifetime.py": (14, 4),
    "test_key_refresh.py": (13, 1), "test_revocation_redis.py": (12, 4), "test_docs.py": (11, 8),
    "test_lambda_emulator.py": (10, 8), "test_key_cache.py": (10, 2), "test_http.py": (9, 2),
    "test_token_parser_equivalence.py": (9, 9), "test_properties.py": (8, 8), "test_check.py": (7, 2),
    "test_revocation_redis_urls.py": (2, 1), "test_cli.py": (6, 4), "test_contract.py": (6, 5),
    "test_metrics_multiprocess.py": (6, 6), "test_attacks.py": (6, 6), "test_packaging.py": (5, 4),
    "test_lambda_package.py": (4, 4), "test_roles.py": (4, 1), "test_websocket.py": (4, 3),
    "test_warm_python.py": (4, 4), "test_testing_kit.py": (3, 3), "test_metrics.py": (3, 3),
    "test_logging.py": (3, 2), "test_websocket_workers.py": (3, 3), "test_moto.py": (2, 2),
    "test_verifier.py": (2, 2), "test_fastapi.py": (2, 2), "test_pools.py": (2, 2),
    "test_example_app.py": (2, 2), "test_offline_keys.py": (2, 1), "test_cli_hardening.py": (2, 2),
    "test_health.py": (2, 0), "test_user_project.py": (2, 2), "test_revocation_redis_lookup.py": (2, 1),
    "test_claims.py": (2, 2), "test_example_db.py": (2, 1),
}  # fmt: skip
#: A file waits more than it computes below this share of CPU in its wall time.
_BUSY_SHARE = 0.6
#: Busy parts dealt after each waiting one.
_BUSY_PER_WAITING = 2
#: Waiting parts a run keeps going at once while others are left: more leaves the cores idle.
_WAITING_AT_ONCE = 1


def _waits(name: str) -> bool:
    """Whether file ``name`` spends most of its time waiting (on servers, timeouts, expiring tokens)."""
    wall, cpu = _COST.get(name, (1, 1))
    return cpu < _BUSY_SHARE * wall


def _file_order(names: set[str]) -> dict[str, int]:
    """Each file's rank in the run: waiting and busy parts dealt 1 to 2, each kind longest first."""

    def length(name: str) -> float:
        return _COST.get(name, (1, 1))[0] / _SPLIT.get(name, 1)

    def parts(kind: list[str]) -> list[str]:
        return [
            name
            for name in sorted(kind, key=lambda name: (-length(name), name))
            for _ in range(_SPLIT.get(name, 1))
        ]

    waiting = parts([name for name in names if _waits(name)])
    busy = parts([name for name in names if not _waits(name)])
    dealt: list[str] = []
    while waiting or busy:
        dealt += waiting[:1] + busy[:_BUSY_PER_WAITING]
        del waiting[:1], busy[:_BUSY_PER_WAITING]
    ranks: dict[str, int] = {}
    for name in dealt:
        ranks.setdefault(name, len(ranks))
    return ranks


def _file_of(scope: str) -> str:
    """The file name of an xdist scope: ``tests/test_x.py`` or one of its parts, ``tests/test_x.py#1``."""
    return scope.split("#", 1)[0].rsplit("/", 1)[-1]


def _parts_of(nodeids: list[str]) -> dict[str, str]:
    """Which part of its file each test of a split file runs in: dealt round-robin, in collection order."""
    dealt: dict[str, int] = {}
    parts: dict[str, str] = {}
    for nodeid in nodeids:
        path = nodeid.split("::", 1)[0]
        count = _SPLIT.get(path.rsplit("/", 1)[-1], 1)
        if count > 1:
            index = dealt[path] = dealt.get(path, -1) + 1
            parts[nodeid] = f"{path}#{index % count}"
    return parts


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first: dict[Path, int] = {}
    for position, item in enumerate(items):
        first.setdefault(item.path, position)
    ranks = _file_order({item.path.name for item in items})

    def order(item: pytest.Item) -> tuple[int, int]:
        return (ranks[item.path.name], first[item.path])

    items.sort(key=order)  # stable: each file keeps its own order


# -- the garbage collector in a test process ------------------------------------------------------
#
# A worker holds every collected item, module and fixture definition of the run: a few hundred
# thousand objects that live until it ends, which every full collection walked again (a tenth of a
# second each, under pytest's teardown's own collections too), while the young-generation ones ran
# every 700 allocations. After collecting, the long-lived objects are frozen (gc.freeze: the
# collector leaves them alone) and the young generation runs less often. Nothing that becomes
# garbage later escapes: every collection still runs, only at other moments.
#: The collector's thresholds in a test process once the run's objects are frozen (Python's: 700, 10, 10).
GC_THRESHOLDS = (7000, 20, 20)


def _freeze_what_the_run_holds() -> None:
    gc.collect()  # garbage goes first: what is frozen is never collected
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    _freeze_what_the_run_holds()
    gc.set_threshold(*GC_THRESHOLDS)


# A test that unfreezes the heap (test_verified_cache's collector tests do) would have it walked
# again by every full collection after it: the next test freezes it again. Noted as it happens, not
# asked of gc.get_freeze_count(), which walks every frozen object (20 ms or so a call).
_unfrozen: list[bool] = []
_real_unfreeze = gc.unfreeze


def _unfreeze_noted() -> None:
    _unfrozen.append(True)
    _real_unfreeze()


gc.unfreeze = _unfreeze_noted


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _unfrozen:
        _unfrozen.clear()
        _freeze_what_the_run_holds()


# -- property tests run on a frame stack of their own -------------------------------------------------
#
# CPython 3.11 keeps a thread's Python frames in 16 KiB chunks and unmaps a chunk as soon as the
# frame that opened it returns. Hypothesis draws recurse up and down below pytest's hundred-odd
# frames, so a chunk boundary falls inside their recursion: one 300-example property mapped and
# unmapped a chunk some 60,000 times, a third more CPU than the same property run near the bottom
# of the stack. A property therefore runs in a thread of its own, whose stack starts empty; pytest
# still calls it, with its fixtures, and gets back whatever it raised.


def _in_a_thread_of_its_own(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    def run(**arguments: Any) -> Any:
        outcome: list[tuple[bool, Any]] = []

        def target() -> None:
            try:
                outcome.append((True, test(**arguments)))
            except BaseException as error:  # handed back to pytest, whatever it is
                outcome.append((False, error))

        thread = threading.Thread(target=target, name=f"property:{test.__name__}", daemon=True)
        thread.start()
        thread.join()
        passed, result = outcome[0]
        if not passed:
            raise result
        return result

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, None, None]:
    test = pyfuncitem.obj
    if not getattr(test, "is_hypothesis_test", False) or inspect.iscoroutinefunction(test):
        yield
        return
    pyfuncitem.obj = _in_a_thread_of_its_own(test)
    try:
        yield
    finally:
        pyfuncitem.obj = test


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None  # whatever else was asked for on the command line
    try:
        from xdist.scheduler import LoadFileScheduling
    except ImportError:  # another pytest-xdist layout: plain loadfile, every test still runs
        return None

    class SplitLoadFile(LoadFileScheduling):  # type: ignore[misc]
        """``--dist loadfile``, with each file in _SPLIT run as several parts.

        A worker asking for work gets the first waiting part left if fewer than
        _WAITING_AT_ONCE are under way, else the first busy one: the fixed order alone
        still let a worker that finished a short busy file start a second or third waiting
        one beside the first, and the cores idled.
        """

        _parts: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._parts is None:  # every worker has collected by the time scopes are asked for
                collections = getattr(self, "registered_collections", None) or {None: []}
                self._parts = _parts_of(list(next(iter(collections.values()))))
            return self._parts.get(nodeid) or str(super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            queue, assigned = getattr(self, "workqueue", None), getattr(self, "assigned_work", None)
            if isinstance(queue, OrderedDict) and isinstance(assigned, dict) and len(queue) > 1:
                under_way = [
                    scope
                    for work in assigned.values()
                    for scope, done in work.items()
                    if not all(done.values())
                ]
                wanted = sum(_waits(_file_of(scope)) for scope in under_way) < _WAITING_AT_ONCE
                chosen = next((scope for scope in queue if _waits(_file_of(scope)) == wanted), None)
                if chosen is not None:
                    queue.move_to_end(chosen, last=False)  # the next unit the parent class hands out
            super()._assign_work_unit(node)

    return SplitLoadFile(config, log)


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _only_loopback_traffic() -> Iterator[None]:
    """Fail any test that resolves or connects to anything but loopback.

    Tests, like the benchmark, may talk only to 127.0.0.1; a DNS lookup of a
    real Cognito host is already traffic. Covers this process (and its
    threads); subprocesses are given loopback URLs by the tests that start them.
    """
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise OSError(f"test tried to resolve non-loopback host {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"test tried to connect to non-loopback address {address[0]!r}")
        return real_connect(self, address)

    socket.getaddrinfo = guarded_getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo
        socket.socket.connect = real_connect  # type: ignore[method-assign]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def built_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel of this checkout, built once per run for every file that needs them.

    Under pytest-xdist each worker has its own session, so the build goes to
    the run's shared temporary folder (the parent of the workers' own), and a
    file lock makes the first worker build while any other waits and reuses it.
    """
    from lambda_package import build_distributions

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if base.name.startswith("popen-gw") else base
    out = shared / "built-dist"
    with open(shared / "built-dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (shared / "built-dist.complete").exists():
                build_distributions(out)
                (shared / "built-dist.complete").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


#: What the worker apps (tests/revocation_app.py, tests/ws_worker_app.py) import before they serve.
_WORKER_PRELOAD = [
    "fastapi",
    "fastapi.responses",
    "starlette.websockets",
    "uvicorn",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "httpx",
    "redis",
    "redis.asyncio",
    "siot_authz",
    "siot_authz.revocation",
]


@pytest.fixture(scope="session")
def worker_python() -> Iterator[WarmPython]:
    """A warm interpreter the worker apps' processes are forked from (tests/warm_python.py).

    Each worker is still a process of its own, killed and restarted as one; it skips most of
    a second of imports. The apps read their ``SIOT_AUTHZ_TEST_*`` variables once started, so
    those may differ per worker (and ``PYTEST_*``, which pytest changes per test).
    """
    python = WarmPython(dict(os.environ), _WORKER_PRELOAD, free_prefixes=("SIOT_AUTHZ_TEST_", "PYTEST_"))
    yield python
    python.close()


@pytest.fixture(scope="session")
def _session_issuer() -> Iterator[LocalIssuer]:
    # RSA key generation is slow; one issuer (and server) serves the session.
    with LocalIssuer() as issuer:
        issuer.serve()
        yield issuer


@pytest.fixture
def issuer(_session_issuer: LocalIssuer) -> Iterator[LocalIssuer]:
    """A local user pool whose JWKS is served on 127.0.0.1; reset after each test."""
    original_keys = list(_session_issuer.keys)
    server = _session_issuer.serve()
    server.reset()
    yield _session_issuer
    _session_issuer.keys = original_keys
    server.reset()


@pytest.fixture
def jwks_server(issuer: LocalIssuer) -> JwksServer:
    """The loopback server publishing ``issuer``'s JWKS; set ``.response`` to make it misbehave."""
    return issuer.serve()


@pytest.fixture(scope="session")
def _session_settings(_session_issuer: LocalIssuer) -> AuthSettings:
    # Validated once: AuthSettings is frozen, and the kit's settings never read the environment.
    return _session_issuer.settings(http_timeout_seconds=2.0)


@pytest.fixture
def settings(issuer: LocalIssuer, _session_settings: AuthSettings) -> AuthSettings:
    """Settings trusting ``issuer``, with a short HTTP timeout so failure tests stay quick."""
    return _session_settings


@pytest.fixture
def verifier(settings: AuthSettings) -> Iterator[TokenVerifier]:
    verifier = TokenVerifier(settings)
    yield verifier
    verifier.close()


@pytest.fixture
def auth(settings: AuthSettings) -> CognitoAuth:
    return CognitoAuth(settings)


@pytest.fixture
def app(auth: CognitoAuth) -> FastAPI:
    """A minimal protected app: /me (any valid token), /admin (group admin), /scoped (scope)."""
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> Principal:
        return principal

    @app.get("/me-sync")
    def me_sync(principal: Principal = Depends(auth)) -> Principal:
        return principal

    @app.delete("/admin")
    async def admin(principal: Principal = Depends(auth.require_groups("admin"))) -> dict[str, str]:
        return {"deleted_by": principal.username}

    @app.get("/scoped")
    async def scoped(
        principal: Principal = Depends(auth.require_scopes("siot/read")),
    ) -> dict[str, str]:
        return {"user": principal.username}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
