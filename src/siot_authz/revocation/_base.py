"""What the verifier needs from a revocation backend, and the in-process mirror every backend keeps.

A revocation is one of two rules:

* a user's tokens issued before a time (``iat`` earlier than ``before``):
  what Cognito's GlobalSignOut means, and what removing someone from a team
  needs;
* one session, by ``origin_jti``: what RevokeToken of a refresh token means,
  since Cognito puts the refresh token's ``origin_jti`` in every ID and
  access token issued from it.

The verifier asks :meth:`RevocationMirror.covers` on every request,
verified-cache hits included, so the answer must come from memory: two dict
lookups, never the network. A backend that shares revocations between
processes (Redis) keeps this mirror up to date in the background.

An entry expires by itself once no token it could match can still be valid:
``max_token_lifetime_seconds`` after the time it names.

Every write and every lookup costs the same whatever the number of entries
(a flood of revocations must not slow the request path or stall the event
loop): entries sit in two dicts, and their expiry order in a heap, so
forgetting the expired ones touches only those. Listeners (open WebSockets)
hear of each entry after it is applied.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from .._principal import Principal

__all__ = [
    "BackendState",
    "Revocation",
    "RevocationBackend",
    "RevocationListener",
    "RevocationMirror",
    "RevocationStatus",
    "RevocationStoreUnavailable",
]

#: ``ok``: the mirror is confirmed current; ``degraded``: the shared store is
#: unreachable and the last mirror is enforced; ``failed``: unconfirmed for
#: longer than allowed, so requests are refused (503) until it recovers;
#: ``starting``: the full set has not been loaded yet.
BackendState = Literal["ok", "starting", "degraded", "failed"]

#: Called with the entries a mirror has just applied: one for a new revocation, the whole set after a
#: (re)load. Runs on the writer's thread, outside the mirror's lock: it must be quick and must not block.
RevocationListener = Callable[[Sequence["Revocation"]], object]

#: The longest subject an entry may name, in UTF-8 bytes. A Cognito ``sub`` and an ``origin_jti`` are
#: UUIDs (36 bytes); 256 leaves room for other issuers' formats while an entry stays well under 1 KB in
#: every mirror and in Redis, so a flood of entries costs memory in proportion to their number only.
MAX_SUBJECT_BYTES = 256
#: The longest user pool id: Cognito's are at most 55 characters (``region_id``).
MAX_POOL_ID_BYTES = 128

logger = logging.getLogger("siot_authz")


class RevocationStoreUnavailable(RuntimeError):
    """A revocation could not be recorded because the shared store is unreachable; nothing was recorded."""


def _is_number(value: object) -> bool:
    # Finite only: a NaN compares false with everything, so a NaN entry would
    # match no token and hide every later revocation of the same user.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fits(text: str, limit: int) -> bool:
    return len(text) <= limit and len(text.encode("utf-8", "surrogatepass")) <= limit


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation entry, as stored and as listed."""

    kind: Literal["user", "session"]
    user_pool_id: str
    #: The user's ``sub`` (kind ``user``) or the session's ``origin_jti`` (kind ``session``).
    subject: str
    #: Unix time: tokens of the user issued before it are refused (for a session, when it was revoked).
    before: float
    #: Unix time after which no token the entry could match is still valid; the entry is then dropped.
    expires_at: float

    def __post_init__(self) -> None:
        if not _is_number(self.before) or not _is_number(self.expires_at):
            raise ValueError("a revocation needs finite numeric before and expires_at")
        # Bounded here, so that every path (the API, the CLI, what a Redis follower reads) refuses
        # an oversize entry before it reaches a mirror. len() first: a huge string is refused
        # without being encoded.
        if not _fits(self.subject, MAX_SUBJECT_BYTES):
            raise ValueError(
                f"a revocation subject (sub or origin_jti) must be at most {MAX_SUBJECT_BYTES} bytes"
            )
        if not _fits(self.user_pool_id, MAX_POOL_ID_BYTES):
            raise ValueError(f"a user pool id must be at most {MAX_POOL_ID_BYTES} bytes")

    def to_json(self) -> dict[str, object]:
        """The entry as a JSON object (its shape on the wire and in ``siot-authz revocations``)."""
        return {
            "kind": self.kind,
            "user_pool_id": self.user_pool_id,
            "subject": self.subject,
            "before": self.before,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: object) -> Revocation:
        """Parse what :meth:`to_json` wrote; ValueError for anything else."""
        if not isinstance(data, dict):
            raise ValueError("a revocation entry must be a JSON object")
        kind, pool, subject = data.get("kind"), data.get("user_pool_id"), data.get("subject")
        before, expires_at = data.get("before"), data.get("expires_at")
        if kind not in ("user", "session") or not isinstance(pool, str) or not isinstance(subject, str):
            raise ValueError("a revocation entry needs kind, user_pool_id and subject")
        if not _is_number(before) or not _is_number(expires_at):
            raise ValueError("a revocation entry needs finite numeric before and expires_at")
        return cls(kind, pool, subject, float(before), float(expires_at))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RevocationStatus:
    """The revocation backend's state, for health checks and metrics."""

    backend: str
    state: BackendState
    entries: int
    #: Seconds since the mirror was last confirmed current; None for a backend that is its own source.
    unconfirmed_seconds: float | None
    last_error: str | None = None


_USER, _SESSION = 0, 1


class RevocationMirror:
    """The in-process set of live revocations; lookups are lock-free dict reads.

    Writers (the backend's own thread or task) replace entries under a lock;
    readers on the request path only read, which is safe under the GIL.
    Writes cost O(log n) (a heap push beside the dict), expiry O(log n) per
    entry that goes, and the count O(1).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._users: dict[tuple[str, str], Revocation] = {}
        self._sessions: dict[tuple[str, str], Revocation] = {}
        # (expires_at, table, key) for every entry written; an item whose entry has since been
        # replaced is skipped when it comes up, and the heap is rebuilt once such items dominate.
        self._expiry: list[tuple[float, int, tuple[str, str]]] = []
        self._lock = threading.Lock()
        # Copied on write, so notifying never holds a lock and a listener may (un)subscribe.
        self._listeners: tuple[RevocationListener, ...] = ()
        #: False while empty, so the request path skips the lookups entirely.
        self.has_entries = False

    def covers(self, principal: Principal) -> bool:
        """True when an entry covers this verified principal's token.

        Its ``iat`` and ``origin_jti`` are read only when an entry could match.
        ``iat`` has whole seconds, so a token issued in the same second as a
        user's revocation, even just after it, is refused too: erring that
        way never lets a signed-out token through. Hence ``<=``: with a
        ``before`` on a whole second (the CLI's ``--before ...Z``), a token
        whose ``iat`` equals it was issued in that second.
        """
        pool_id = principal.user_pool_id
        users = self._users
        if users:
            user = users.get((pool_id, principal.sub))
            if user is not None and principal.issued_at.timestamp() <= user.before:
                return True
        sessions = self._sessions
        if sessions:
            origin_jti = principal.claims.get("origin_jti")
            return isinstance(origin_jti, str) and (pool_id, origin_jti) in sessions
        return False

    # -- listeners ------------------------------------------------------------------

    def add_listener(self, listener: RevocationListener) -> None:
        """Call ``listener`` with the entries applied by every later :meth:`add` and :meth:`replace_all`.

        It runs on the writer's thread (a Redis follower's, or whoever
        revoked), after the entries are visible to :meth:`covers`. An
        exception it raises is logged and swallowed: it never undoes or
        stops a write.
        """
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: RevocationListener) -> None:
        """Stop calling ``listener``; a listener never added is ignored."""
        with self._lock:
            listeners = list(self._listeners)
            if listener in listeners:
                listeners.remove(listener)
            self._listeners = tuple(listeners)

    @property
    def listener_count(self) -> int:
        """How many listeners are subscribed (one per verifier with open WebSockets, else none)."""
        return len(self._listeners)

    def _notify(self, entries: Sequence[Revocation]) -> None:
        for listener in self._listeners:
            try:
                listener(entries)
            except Exception as exc:
                # Only the type: the message could quote anything the listener held.
                logger.error("revocation_listener_failed type=%s", type(exc).__name__)

    # -- writing --------------------------------------------------------------------

    def add(self, entry: Revocation) -> None:
        """Record ``entry``; a later ``before`` for the same user wins, an earlier one is ignored."""
        index = _USER if entry.kind == "user" else _SESSION
        table = self._users if index == _USER else self._sessions
        key = (entry.user_pool_id, entry.subject)
        with self._lock:
            held = table.get(key)
            is_applied = held is None or entry.before >= held.before
            if is_applied:
                table[key] = entry
                heapq.heappush(self._expiry, (entry.expires_at, index, key))
                if len(self._expiry) > 2 * (len(self._users) + len(self._sessions)) + 64:
                    self._expiry = _expiry_heap(self._users, self._sessions)
            self.has_entries = True
        if is_applied and self._listeners:
            self._notify((entry,))

    def replace_all(self, entries: list[Revocation]) -> None:
        """Swap in a full set, as loaded from a shared store."""
        users: dict[tuple[str, str], Revocation] = {}
        sessions: dict[tuple[str, str], Revocation] = {}
        for entry in entries:
            table = users if entry.kind == "user" else sessions
            key = (entry.user_pool_id, entry.subject)
            held = table.get(key)
            if held is None or entry.before >= held.before:
                table[key] = entry
        expiry = _expiry_heap(users, sessions)
        with self._lock:
            self._users, self._sessions, self._expiry = users, sessions, expiry
            self.has_entries = bool(users or sessions)
        if self._listeners:
            self._notify(entries)

    def drop_expired(self) -> int:
        """Forget entries that can no longer match a valid token; returns how many went.

        Touches only what is due: O(1) when nothing is.
        """
        now = self._clock()
        dropped = 0
        with self._lock:
            expiry, tables = self._expiry, (self._users, self._sessions)
            while expiry and expiry[0][0] <= now:
                _, index, key = heapq.heappop(expiry)
                entry = tables[index].get(key)
                # A replaced entry left its item behind; drop the entry only if it is itself due.
                if entry is not None and entry.expires_at <= now:
                    del tables[index][key]
                    dropped += 1
            self.has_entries = bool(self._users or self._sessions)
        return dropped

    def entries(self) -> list[Revocation]:
        """Every live entry, users first, each group in time order."""
        now = self._clock()
        with self._lock:
            held = [*self._users.values(), *self._sessions.values()]
        live = [entry for entry in held if entry.expires_at > now]
        return sorted(live, key=lambda entry: (entry.kind != "user", entry.before, entry.subject))

    def __len__(self) -> int:
        return len(self._users) + len(self._sessions)


def _expiry_heap(
    users: dict[tuple[str, str], Revocation], sessions: dict[tuple[str, str], Revocation]
) -> list[tuple[float, int, tuple[str, str]]]:
    heap = [(entry.expires_at, _USER, key) for key, entry in users.items()]
    heap += [(entry.expires_at, _SESSION, key) for key, entry in sessions.items()]
    heapq.heapify(heap)
    return heap


class RevocationBackend(Protocol):
    """Where revocations are recorded and how they reach this process's :class:`RevocationMirror`.

    The verifier reads only ``mirror`` (and ``is_failed_closed``) on the
    request path; the rest is for the revocation API, health and lifespan.
    Open WebSockets listen to ``mirror`` (:meth:`RevocationMirror.add_listener`),
    so a backend need only apply entries to it.
    """

    #: Enforced on every request.
    mirror: RevocationMirror
    #: False for a backend that is its own source of truth and can never go unconfirmed
    #: (:class:`MemoryRevocations`); the verifier then skips :meth:`is_failed_closed` on the
    #: request path. True for a shared store whose mirror can go stale.
    can_fail_closed: bool

    @property
    def name(self) -> str:
        """A short label for health and metrics: ``memory`` or ``redis``."""

    def is_failed_closed(self) -> bool:
        """True when the mirror has gone unconfirmed too long and requests must be refused (503)."""

    def status(self) -> RevocationStatus:
        """The backend's state now."""

    async def start(self) -> None:
        """Load the full set and begin following changes; called at application start-up."""

    async def stop(self) -> None:
        """Stop following changes and release connections."""

    async def add(self, entry: Revocation) -> None:
        """Record ``entry`` for every process; raises :class:`RevocationStoreUnavailable` if it cannot."""

    def add_sync(self, entry: Revocation) -> None:
        """Blocking twin of :meth:`add`."""

    async def entries(self) -> list[Revocation]:
        """Every live entry, as the shared store has them."""

    def entries_sync(self) -> list[Revocation]:
        """Blocking twin of :meth:`entries`."""
