"""Metrics shared by several worker processes, through prometheus_client's multiprocess files.

With ``uvicorn --workers N`` or gunicorn, a scrape reaches one worker at a
time. prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)
has every process write its values to its own memory-mapped files in that
directory, and the scraped process merges them: counters and histograms are
summed, and each gauge is merged by its own rule (its multiprocess mode).

Only :mod:`siot_authz.metrics` imports this module, and only in that mode.
It holds the three things the mode needs that the single-process metrics do
not:

- the verification counter as a prometheus_client ``Counter`` (one pre-bound
  child per label set), since a count kept in this process's memory cannot
  be read by whichever worker is scraped;
- a publisher that writes this process's health gauges to its files: at
  once, every ``interval`` seconds from a daemon thread, and whenever this
  process is scraped. Key ages and revocation states change with time and
  in background threads, so another worker's scrape can only see what was
  last written;
- the scrape side: first forget the gauges of processes that have exited,
  then merge the directory.

A gauge's files belong to one process id. Each scrape removes the gauge
files of every process id that no longer exists, however it ended: uvicorn
and gunicorn end a stopped worker by re-raising the signal, so no exit
handler runs there. A process ending through Python's normal exit removes
its own at once. Counters and histograms of exited processes stay, so totals
never go back.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = [
    "GaugePublisher",
    "GaugeSpec",
    "SharedVerificationCounter",
    "forget_exited_processes",
    "multiprocess_directory",
]

logger = logging.getLogger("siot_authz.metrics")

#: (gauge key, label values, value): one gauge sample as the metrics module reads it from health().
GaugeSample = tuple[str, list[str], float]

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEGACY_ENV = "prometheus_multiproc_dir"

#: (directory, namespace) pairs with a counter in this process: two would overwrite each other's files.
_IN_USE: set[tuple[str, str]] = set()
_IN_USE_LOCK = threading.Lock()


@dataclass(frozen=True)
class GaugeSpec:
    """One gauge: its name after the namespace, help, labels after ``verifier``, and how workers combine."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    #: prometheus_client's multiprocess mode; always a ``live*`` one, so an exited worker's value goes away.
    across_workers: str


def multiprocess_directory() -> str | None:
    """The directory prometheus_client's multiprocess mode writes to, or None when it is off.

    prometheus_client chooses its mode once, when it is first imported, from
    ``PROMETHEUS_MULTIPROC_DIR``. Setting the variable later would leave
    values in memory while the scrape read files, so that is refused here
    with a message instead of showing counts that never move.
    """
    directory = os.environ.get(_ENV) or os.environ.get(_LEGACY_ENV)
    is_multiprocess = values.ValueClass is not values.MutexValue
    if not is_multiprocess:
        if directory:
            raise RuntimeError(
                f"{_ENV} was set after prometheus_client was imported, so its multiprocess mode is off; "
                "set it in the environment the server starts with"
            )
        return None
    if not directory or not os.path.isdir(directory):
        raise RuntimeError(f"{_ENV} must name an existing directory in multiprocess mode, not {directory!r}")
    return directory


class SharedVerificationCounter:
    """Counts verifications into this process's counter file, one pre-bound child per label set.

    ``normalize_code`` bounds the ``code`` label (see the metrics module);
    ``on_new_label_set`` runs the first time this process sees a label set,
    which is where the gauge publisher is started without costing each call.
    """

    def __init__(
        self,
        directory: str,
        namespace: str,
        documentation: str,
        normalize_code: Callable[[str | None], str | None],
        on_new_label_set: Callable[[], None],
    ) -> None:
        with _IN_USE_LOCK:
            if (directory, namespace) in _IN_USE:
                raise ValueError(
                    f"Duplicated PrometheusMetrics for namespace {namespace!r} in this process: "
                    "in multiprocess mode two would overwrite each other's counts; create one per process"
                )
            _IN_USE.add((directory, namespace))
        self._counter = Counter(
            "verifications",
            documentation,
            ("pool", "result", "code", "cache"),
            namespace=namespace,
            registry=None,  # read back from the files, never from this object
        )
        self._normalize_code = normalize_code
        self._on_new_label_set = on_new_label_set
        self._children: dict[tuple[str, str | None, bool], Any] = {}
        self._lock = threading.Lock()
        # A forked child starts with no children of its own, so its first
        # verification of each label set goes through on_new_label_set too.
        os.register_at_fork(after_in_child=self._children.clear)

    def verification(self, pool_id: str, code: str | None, cache_hit: bool) -> None:
        """Count one verification (the Observer call in multiprocess mode)."""
        try:
            child = self._children[pool_id, code, cache_hit]
        except KeyError:
            child = self.child(pool_id, code, cache_hit)
        child.inc()

    def child(self, pool_id: str, code: str | None, cache_hit: bool) -> Any:
        """The counter child for a label set, created (at zero, in the file) the first time."""
        self._on_new_label_set()
        labels = [
            pool_id,
            "accepted" if code is None else "refused",
            self._normalize_code(code) or "",
            "hit" if cache_hit else "miss",
        ]
        with self._lock:
            child = self._children.get((pool_id, code, cache_hit))
            if child is None:
                child = self._counter.labels(*labels)
                self._children[pool_id, code, cache_hit] = child
        return child


class GaugePublisher:
    """Writes this process's health gauges to its multiprocess files, so any worker's scrape sees them.

    ``read`` gives the current samples (computed from ``health()``).
    :meth:`ensure_running` starts the background writer once per process id:
    it is called on the first use in a process (a key fetch, a new label
    set, a scrape), never at construction, so a gunicorn master that
    imported the app (``--preload``) and serves nothing publishes nothing.
    """

    def __init__(
        self,
        directory: str,
        namespace: str,
        specs: Mapping[str, GaugeSpec],
        read: Callable[[], Iterable[GaugeSample]],
        interval_seconds: float,
    ) -> None:
        self._directory = directory
        self._read = read
        self._interval = interval_seconds
        self._gauges = {
            key: Gauge(
                spec.name,
                spec.documentation,
                ("verifier", *spec.labels),
                namespace=namespace,
                registry=None,
                multiprocess_mode=spec.across_workers,  # type: ignore[arg-type]
            )
            for key, spec in specs.items()
        }
        self._running_in: int | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start publishing from this process, unless it already does."""
        pid = os.getpid()
        if self._running_in == pid:
            return
        with self._lock:
            if self._running_in == pid:
                return
            self._running_in = pid
        atexit.register(_forget_process, pid, self._directory)
        threading.Thread(
            target=_publish_every,
            args=(weakref.ref(self), self._interval, pid),
            name="siot-authz-metrics",
            daemon=True,
        ).start()

    def is_running_in(self, pid: int) -> bool:
        return self._running_in == pid

    def publish(self) -> None:
        """Write every current sample to this process's gauge files."""
        for key, labels, value in self._read():
            self._gauges[key].labels(*labels).set(value)


def _publish_every(ref: weakref.ref[GaugePublisher], interval: float, pid: int) -> None:
    # Holds the publisher only while writing, so dropping it ends the thread.
    while True:
        publisher = ref()
        if publisher is None or not publisher.is_running_in(pid):
            return
        try:
            publisher.publish()
        except Exception as exc:  # a failing health read must not end the thread
            logger.warning("metrics_publish_failed type=%s", type(exc).__name__)
        del publisher
        time.sleep(interval)


def _forget_process(pid: int, directory: str) -> None:
    # At a normal exit: this process's gauges describe nothing any more.
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return True


def forget_exited_processes(directory: str) -> list[int]:
    """Remove the gauge files of every process id in ``directory`` that no longer runs; return those ids.

    Process ids are this host's (this container's), so the directory must
    belong to one server and its workers, not be shared between hosts.
    """
    forgotten = []
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid_text = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid not in forgotten and not _is_running(pid):
            # Another worker's scrape may be removing the same files right now.
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            forgotten.append(pid)
    return forgotten


class SharedFilesCollector:
    """What a scrape in multiprocess mode serves: every process's files in the directory, merged.

    That includes the application's own prometheus_client metrics, which
    write to the same directory in this mode. Before merging it writes this
    process's gauges (so the worker answering is never behind) and forgets
    processes that have exited.
    """

    def __init__(self, directory: str, before_scrape: Callable[[], None]) -> None:
        self._directory = directory
        self._before_scrape = before_scrape

    def collect(self) -> Iterable[Metric]:
        try:
            self._before_scrape()
        except Exception as exc:  # the files of the other workers are still worth serving
            logger.warning("metrics_publish_failed type=%s", type(exc).__name__)
        forget_exited_processes(self._directory)
        # Other workers change the directory while it is read: a file being
        # created is empty for a moment (prometheus_client's merge then fails
        # to unpack it), and another scrape may remove an exited process's
        # gauge file between the listing and the read. Either lasts a moment:
        # list again, and at the last attempt leave out any file that cannot
        # be read whole, rather than answer the scrape with a 500.
        for _ in range(_MERGE_ATTEMPTS - 1):
            try:
                return _merge(_readable_files(self._directory))
            except (FileNotFoundError, struct.error):
                continue
        readable = [path for path in _readable_files(self._directory) if _reads_whole(path)]
        while True:  # a file removed since it was read alone is left out; at most one pass per file
            try:
                return _merge(readable)
            except FileNotFoundError as exc:
                if exc.filename not in readable:
                    raise
                readable.remove(exc.filename)


_MERGE_ATTEMPTS = 3
# A metrics file starts with an 8-byte header: anything shorter is still being created.
_HEADER_BYTES = 8


def _readable_files(directory: str) -> list[str]:
    """The directory's metrics files, less those too new to hold their header yet."""
    readable = []
    for path in glob.glob(os.path.join(directory, "*.db")):
        with contextlib.suppress(OSError):  # gone since the listing
            if os.path.getsize(path) >= _HEADER_BYTES:
                readable.append(path)
    return readable


def _reads_whole(path: str) -> bool:
    try:
        _merge([path])
    except (OSError, struct.error):
        return False
    return True


def _merge(files: list[str]) -> list[Metric]:
    return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]
