"""Metrics across worker processes: prometheus_client's multiprocess mode, with real uvicorn workers.

``uvicorn --workers 2`` (and gunicorn with ``--preload``, whose workers are
forked from a master that imported the app) serves ``tests/served_app.py``
with a ``PROMETHEUS_MULTIPROC_DIR`` of the test's own. Requests go over new
connections, so the kernel hands each to either worker; every response
names its worker (``X-Worker-Pid``), so the tests can insist that both
workers counted and both answered scrapes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import loopback
from loopback import free_port
from metric_samples import Samples, parse, value
from siot_authz.testing import JwksResponse, LocalIssuer
from spare_keys import spare_key

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
#: How often each worker writes its gauges here; the default is 5 s.
PUBLISH_SECONDS = 0.2
UVICORN = [sys.executable, "-m", "uvicorn", "served_app:app", "--host", "127.0.0.1", "--port", "{port}"]
UVICORN += ["--workers", "2", "--log-level", "warning"]
#: gunicorn imports the app in its master with --preload, then forks the workers.
GUNICORN = [sys.executable, "-m", "gunicorn", "served_app:app", "-k", "uvicorn_worker.UvicornWorker"]
GUNICORN += ["-w", "2", "--preload", "-b", "127.0.0.1:{port}"]


def refused(samples: Samples, code: str, pool: str = "") -> float:
    found = value(
        samples, "siot_authz_verifications_total", pool=pool, result="refused", code=code, cache="miss"
    )
    return found or 0.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@dataclass
class Workers:
    """``uvicorn --workers 2`` on a free loopback port, sharing ``directory`` for metrics."""

    process: subprocess.Popen[bytes]
    base_url: str
    directory: Path
    issuer: LocalIssuer

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        # A new client per request: a new connection, to whichever worker accepts it.
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        with loopback.client(base_url=self.base_url, timeout=30) as client:
            return client.get(path, headers=headers)

    def scrape(self) -> tuple[int, Samples]:
        response = self.get("/metrics")
        assert response.status_code == 200
        return int(response.headers["X-Worker-Pid"]), parse(response.text)

    def gauge_files_of(self, pid: int) -> list[str]:
        return sorted(path.name for path in self.directory.glob(f"gauge_live*_{pid}.db"))


@contextmanager
def serving(server: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Run ``server`` (a command ending in the port to use, and two workers) with a directory of its own."""
    directory = tmp_path_factory.mktemp("prometheus")
    with LocalIssuer(user_pool_id="us-east-1_Workers01", key=spare_key(0)) as issuer:
        settings = issuer.settings(jwks_refetch_cooldown_seconds=0, http_timeout_seconds=2)
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
        env |= {
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "XDG_RUNTIME_DIR": str(directory.parent),  # gunicorn's control socket, rather than ~/.gunicorn
            "SIOT_AUTHZ_TEST_SETTINGS": settings.model_dump_json(
                include={
                    "region",
                    "user_pool_id",
                    "client_ids",
                    "jwks_url",
                    "jwks_refetch_cooldown_seconds",
                    "http_timeout_seconds",
                }
            ),
            "SIOT_AUTHZ_TEST_PUBLISH_SECONDS": str(PUBLISH_SECONDS),
        }
        log = (directory.parent / "server.log").open("wb")
        process = subprocess.Popen(
            [part.format(port=port) for part in server],
            cwd=TESTS,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        running = Workers(process, f"http://127.0.0.1:{port}", directory, issuer)
        try:
            wait_until(lambda: _answers(running), 60, "the server answers /metrics")
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            log.close()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """``uvicorn --workers 2``, as docs/deployment.md runs it."""
    with serving(UVICORN, tmp_path_factory) as running:
        yield running


def _answers(workers: Workers) -> bool:
    if workers.process.poll() is not None:
        raise AssertionError(f"uvicorn exited with status {workers.process.returncode}")
    try:
        return workers.get("/metrics").status_code == 200
    except httpx.TransportError:
        return False


def _both_ready(workers: Workers) -> bool:
    _, samples = workers.scrape()
    return value(samples, "siot_authz_ready", verifier="") == 1


def test_every_scrape_counts_every_workers_refusals_exactly(workers: Workers) -> None:
    every_scrape_counts_every_workers_refusals_exactly(workers)


def test_every_scrape_counts_exactly_under_gunicorn_with_workers_forked_from_a_preloaded_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with serving(GUNICORN, tmp_path_factory) as gunicorn_workers:
        every_scrape_counts_every_workers_refusals_exactly(gunicorn_workers)
        master = gunicorn_workers.process.pid
        assert gunicorn_workers.gauge_files_of(master) == []  # it serves nothing, so it publishes nothing


def every_scrape_counts_every_workers_refusals_exactly(workers: Workers) -> None:
    wait_until(lambda: _both_ready(workers), 30, "every worker ready")
    _, before = workers.scrape()
    counted_by: dict[int, int] = {}
    sent = 0
    # At least 20 refusals, and as many more as it takes for both workers to have counted some.
    while sent < 20 or len(counted_by) < 2:
        assert sent < 400, f"the kernel sent every connection to one worker: {counted_by}"
        response = workers.get("/me", token="not-a-jwt")
        assert response.status_code == 401
        pid = int(response.headers["X-Worker-Pid"])
        counted_by[pid] = counted_by.get(pid, 0) + 1
        sent += 1

    expected = refused(before, "token_malformed") + sent
    answered_by: set[int] = set()
    scrapes = 0
    while scrapes < 10 or len(answered_by) < 2:
        assert scrapes < 400, f"only worker {answered_by} answered scrapes"
        pid, samples = workers.scrape()
        answered_by.add(pid)
        scrapes += 1
        assert refused(samples, "token_malformed") == expected, f"scrape {scrapes}, answered by {pid}"
        # The gauges every worker writes, merged: both hold the pool's one key and are ready.
        pool = workers.issuer.user_pool_id
        assert value(samples, "siot_authz_jwks_keys", verifier="", pool=pool) == 1
        assert value(samples, "siot_authz_ready", verifier="") == 1
        assert value(samples, "siot_authz_revocation_state", verifier="", backend="memory", state="ok") == 1
    assert answered_by == set(counted_by)


def test_a_killed_workers_gauges_vanish_and_its_counts_stay(workers: Workers) -> None:
    issuer = workers.issuer
    pool = issuer.user_pool_id
    wait_until(lambda: _both_ready(workers), 30, "every worker ready")
    _, before = workers.scrape()
    assert value(before, "siot_authz_jwks_last_fetch_failed", verifier="", pool=pool) == 0
    failed_fetches = value(before, "siot_authz_jwks_fetches_total", pool=pool, outcome="error") or 0

    # One worker alone sees its key fetch fail: a token with a new kid, while the endpoint is down.
    issuer.serve().response = JwksResponse(status=503)
    try:
        response = workers.get("/me", token=issuer.mint(header={"kid": "rotated-in"}))
    finally:
        issuer.serve().reset()
    assert response.status_code in (401, 503)
    failing = int(response.headers["X-Worker-Pid"])

    def failure_shown() -> bool:
        _, samples = workers.scrape()
        return value(samples, "siot_authz_jwks_last_fetch_failed", verifier="", pool=pool) == 1

    wait_until(failure_shown, 10, "the failing worker's gauge is merged in")
    assert workers.gauge_files_of(failing)

    os.kill(failing, signal.SIGKILL)  # no clean-up of its own: the scrape must notice

    def failure_gone() -> bool:
        _, samples = workers.scrape()
        return value(samples, "siot_authz_jwks_last_fetch_failed", verifier="", pool=pool) == 0

    wait_until(failure_gone, 30, "the killed worker's gauge is dropped")
    assert workers.gauge_files_of(failing) == []
    # Counters keep what the dead worker counted: totals never go back.
    _, after = workers.scrape()
    assert (value(after, "siot_authz_jwks_fetches_total", pool=pool, outcome="error") or 0) > failed_fetches


# -- one process, no server -------------------------------------------------------------------


_SET_TOO_LATE = textwrap.dedent(
    """
    import os, sys
    import prometheus_client
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    from siot_authz.metrics import PrometheusMetrics
    try:
        PrometheusMetrics()
    except RuntimeError as error:
        print(error)
    """
)


def test_a_multiprocess_directory_set_after_prometheus_client_was_imported_is_refused(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SET_TOO_LATE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported" in result.stdout


_EXITS_NORMALLY = textwrap.dedent(
    """
    import json, os, sys
    from siot_authz import TokenVerifier
    from siot_authz.metrics import PrometheusMetrics
    from siot_authz.testing import LocalIssuer

    issuer = LocalIssuer()
    metrics = PrometheusMetrics()
    verifier = TokenVerifier(issuer.settings(for_transport=True), sync_transport=issuer.transport(), observer=metrics)
    metrics.watch(verifier)
    verifier.verify_sync(issuer.mint())
    list(metrics.registry.collect())  # a scrape: writes this process's gauges
    try:
        PrometheusMetrics()
        second = "accepted"
    except ValueError as error:
        second = str(error)
    print(json.dumps({"pid": os.getpid(), "files": sorted(os.listdir(sys.argv[1])), "second": second}))
    """
)


def test_a_worker_that_exits_normally_removes_its_gauges_and_keeps_its_counts_and_holds_one_instance(
    tmp_path: Path,
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", _EXITS_NORMALLY, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    pid = seen["pid"]
    assert f"gauge_livemin_{pid}.db" in seen["files"]
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted(name for name in seen["files"] if not name.startswith("gauge_live"))
    assert f"counter_{pid}.db" in left
    # Two instances in one process would overwrite each other's counts in the same file.
    assert "Duplicated PrometheusMetrics for namespace 'siot_authz'" in seen["second"]


# -- how gauges combine: the worst worker ---------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from revocation_stub import StubRevocations
    from siot_authz import TokenVerifier
    from siot_authz.metrics import PrometheusMetrics
    from siot_authz.testing import LocalIssuer

    state, unconfirmed = sys.argv[1], float(sys.argv[2])
    issuer = LocalIssuer()
    metrics = PrometheusMetrics(publish_interval_seconds=60)
    verifier = TokenVerifier(
        issuer.settings(for_transport=True),
        sync_transport=issuer.transport(),
        revocations=StubRevocations(state, unconfirmed),
        observer=metrics,
    )
    metrics.watch(verifier)
    verifier.pools[0].keys.refresh_sync()
    list(metrics.registry.collect())  # as if scraped: this worker writes its gauges
    print("published", flush=True)
    sys.stdin.read()  # until the test closes stdin, or kills it
    """
)


def _merged(directory: Path) -> Samples:
    from prometheus_client import CollectorRegistry, generate_latest

    from siot_authz._prometheus_files import SharedFilesCollector

    registry = CollectorRegistry()
    registry.register(SharedFilesCollector(str(directory), lambda: None))  # what a scrape serves
    return parse(generate_latest(registry).decode())


def test_gauges_show_the_worst_live_worker(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    workers = {
        state: subprocess.Popen(
            [sys.executable, "-c", _WORKER, state, unconfirmed],
            cwd=TESTS,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for state, unconfirmed in (("ok", "0.5"), ("failed", "400"))
    }
    try:
        for worker in workers.values():
            assert worker.stdout is not None
            assert worker.stdout.readline() == b"published\n"

        both = _merged(tmp_path)
        workers["failed"].kill()
        workers["failed"].wait(timeout=10)
        healthy = _merged(tmp_path)
    finally:
        for worker in workers.values():
            worker.kill()
            worker.wait(timeout=10)

    def revocation(samples: Samples, state: str) -> float | None:
        return value(samples, "siot_authz_revocation_state", verifier="", backend="stub", state=state)

    # With both: every state some worker is in, the least current mirror, and not ready.
    assert [revocation(both, state) for state in ("ok", "starting", "degraded", "failed")] == [1, 0, 0, 1]
    assert value(both, "siot_authz_revocation_unconfirmed_seconds", verifier="", backend="stub") == 400
    assert value(both, "siot_authz_ready", verifier="") == 0
    # Once the failed worker is gone, only the healthy one's values remain.
    assert [revocation(healthy, state) for state in ("ok", "starting", "degraded", "failed")] == [1, 0, 0, 0]
    assert value(healthy, "siot_authz_revocation_unconfirmed_seconds", verifier="", backend="stub") == 0.5
    assert value(healthy, "siot_authz_ready", verifier="") == 1
    assert value(healthy, "siot_authz_jwks_keys", verifier="", pool="us-east-1_LocalPool1") == 1


def _pid_of_an_ended_process() -> int:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=30)
    return ended.pid


def test_a_scrape_forgets_only_processes_that_have_ended_even_while_another_scrape_does_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from siot_authz import _prometheus_files

    ended, running = _pid_of_an_ended_process(), os.getpid()
    names = [f"gauge_{mode}_{pid}.db" for pid in (ended, running) for mode in ("livemin", "livemax")]
    names += [f"counter_{ended}.db", f"gauge_all_{ended}.db"]
    for name in names:
        (tmp_path / name).touch()

    assert _prometheus_files.forget_exited_processes(str(tmp_path)) == [ended]

    left = sorted(path.name for path in tmp_path.iterdir())
    gone = {f"gauge_livemin_{ended}.db", f"gauge_livemax_{ended}.db"}
    assert left == sorted(set(names) - gone)
    # A second scrape, in another worker, got there first: not an error.
    (tmp_path / f"gauge_livemin_{ended}.db").touch()

    def removed_meanwhile(pid: int, path: str) -> None:
        (tmp_path / f"gauge_livemin_{pid}.db").unlink()
        raise FileNotFoundError(path)

    monkeypatch.setattr(_prometheus_files, "mark_process_dead", removed_meanwhile)
    assert _prometheus_files.forget_exited_processes(str(tmp_path)) == [ended]


@contextmanager
def _published_worker(directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One worker process that has written its metrics files to ``directory``; killed afterwards."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, "ok", "0.5"],
        cwd=TESTS,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"published\n"
        _wait_until_settled(directory)
        yield worker
    finally:
        worker.kill()
        worker.wait(timeout=10)


def _wait_until_settled(directory: Path) -> None:
    """Until the worker's files stop changing: tests comparing two scrapes need the same values in both.

    Besides the scrape it makes itself, the worker's publisher thread writes every gauge once when
    it starts, then only after 60 s; on a loaded machine that first write can come after the
    worker said "published", and the keys' age it writes differs by a few milliseconds.
    """
    deadline = time.monotonic() + 10
    before = _merged(directory)
    while True:
        time.sleep(0.2)
        now = _merged(directory)
        if now == before:
            return
        assert time.monotonic() < deadline, "the worker's metrics files kept changing"
        before = now


def test_a_scrape_reads_past_a_file_another_worker_is_creating_or_removing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a scrape answered 500: it met a worker's brand-new, still empty file (struct.error in the merge)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    with _published_worker(tmp_path) as worker:
        expected = _merged(tmp_path)
        # A worker starting now: its file exists, empty, until prometheus_client sizes it.
        (tmp_path / f"counter_{worker.pid + 100_000}.db").touch()
        with_new_file = _merged(tmp_path)
        # Another scrape removes an exited worker's gauge file between this one's listing and reading.
        merge = MultiProcessCollector.merge
        calls: list[int] = []

        def file_gone_once(files: list[str], accumulate: bool = True) -> object:
            calls.append(len(files))
            if len(calls) == 1:
                raise FileNotFoundError(files[0])
            return merge(files, accumulate)

        monkeypatch.setattr(MultiProcessCollector, "merge", staticmethod(file_gone_once))
        after_a_vanished_file = _merged(tmp_path)

    assert value(expected, "siot_authz_ready", verifier="") == 1
    assert with_new_file == expected
    assert after_a_vanished_file == expected
    assert len(calls) == 2


def test_a_scrape_that_keeps_meeting_changes_leaves_out_only_the_file_that_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the last attempt each file is read alone; one removed after that is left out, not a 500."""
    import shutil

    from prometheus_client.multiprocess import MultiProcessCollector

    with _published_worker(tmp_path) as worker:
        expected = _merged(tmp_path)
        # An exited worker's counters, which another scrape is about to take away.
        published = next(tmp_path.glob("counter_*.db"))
        leaving = tmp_path / f"counter_{worker.pid + 200_000}.db"
        shutil.copyfile(published, leaving)
        merge = MultiProcessCollector.merge
        calls: list[list[str]] = []

        def changing_under_the_scrape(files: list[str], accumulate: bool = True) -> object:
            calls.append(list(files))
            if len(calls) <= 2:  # both whole-directory attempts meet a change
                raise FileNotFoundError(2, "No such file or directory", files[0])
            if len(files) > 1 and str(leaving) in files:  # gone after it was read alone
                leaving.unlink()
                raise FileNotFoundError(2, "No such file or directory", str(leaving))
            return merge(files, accumulate)

        monkeypatch.setattr(MultiProcessCollector, "merge", staticmethod(changing_under_the_scrape))
        scraped = _merged(tmp_path)

    assert scraped == expected
    assert str(leaving) in calls[-2]
    assert str(leaving) not in calls[-1]
