"""Presentation helpers: the progress spinner, plain-text tables and human-readable times."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType

from ._terminal import Terminal

__all__ = ["Spinner", "format_table", "json_time", "relative_time", "utc_iso"]

_FRAMES = "|/-\\"


class Spinner:
    """``with Spinner(terminal, "Fetching keys"):`` animates a line on stderr while the block runs.

    It draws only when stderr is a terminal, so piped output and CI logs stay
    clean, and it erases its line when done so messages that follow start at
    column 0.
    """

    def __init__(self, terminal: Terminal, message: str, *, interval: float = 0.1) -> None:
        self._terminal = terminal
        self._message = message
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        if self._terminal.shows_progress:
            self._thread = threading.Thread(target=self._spin, name="siot-authz-spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        stream = self._terminal.stderr
        stream.write("\r" + " " * (len(self._message) + 2) + "\r")
        stream.flush()

    def _spin(self) -> None:
        stream = self._terminal.stderr
        for frame in itertools.cycle(_FRAMES):
            stream.write(f"\r{frame} {self._message}")
            stream.flush()
            if self._stop.wait(self._interval):
                return


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    widths = [len(name) for name in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def utc_iso(timestamp: float) -> str:
    """``2024-05-01T12:00:00Z`` for a Unix time."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def json_time(timestamp: float) -> str:
    """The one form every ``--json`` output gives a time in: ISO 8601 in UTC, ``2024-05-01T12:00:00Z``.

    Fractions of a second are kept when there are any (``...T12:00:00.250000Z``),
    as the principal's ``issued_at`` and ``expires_at`` print them, so a
    revocation's ``before`` read back means the same instant.
    """
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def relative_time(name: str, timestamp: float, now: float) -> str:
    """A phrase for one time claim relative to ``now``: "expires in 54 min", "expired 3 h ago"."""
    delta = timestamp - now
    is_future = delta > 0
    span = _span(delta)
    if name == "exp":
        return f"expires in {span}" if is_future else f"expired {span} ago"
    if name == "nbf":
        return f"valid in {span}" if is_future else f"valid since {span} ago"
    verb = "authenticated" if name == "auth_time" else "issued"
    return f"{verb} in {span} (in the future)" if is_future else f"{verb} {span} ago"
