"""Revocations looked up in Redis per token, for processes frozen between calls (AWS Lambda).

A Lambda execution environment is frozen between invocations, so it cannot
follow Redis pub/sub in the background the way a uvicorn worker does, and a
thread started at cold start would not run between calls anyway. Instead,
when the verifier asks whether a token is revoked, this backend fetches the
only two keys that could match it, the user's and the session's (one MGET;
one round trip per node in a cluster), and keeps each answer for
``cache_seconds``. It reads the keys ``RedisRevocations`` and
``siot-authz revoke`` write, so the three share one store.

It blocks while it asks: it is for Lambda and scripts (``verify_sync``),
not for an event loop.

When Redis cannot be asked, the rule is the follower's: the last answer
for a key is enforced for up to ``max_unconfirmed_seconds`` after Redis
gave it; a token with no such answer is refused with 503
``revocation_unavailable``, since there is nothing to enforce for it.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import RevocationUnavailable
from ._base import BackendState, RevocationMirror, RevocationStatus, RevocationStoreUnavailable
from ._redis_client import RedisTarget
from ._redis_follower import REDIS_ERRORS, describe_error
from ._redis_store import RedisStore
from ._redis_writing import StoreWriting

if TYPE_CHECKING:
    from .._principal import Principal

__all__ = ["RedisLookupRevocations"]

#: Keys whose answers are remembered; beyond it the oldest are forgotten (and asked again).
_MAX_REMEMBERED = 10_000


class _AskingMirror(RevocationMirror):
    """A mirror that asks Redis for a principal's entries before answering, instead of being followed."""

    def __init__(self, refresh: Callable[[Principal], None], *, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self._refresh = refresh

    @property
    def has_entries(self) -> bool:
        """Always True: whether an entry exists is known only by asking."""
        return True

    @has_entries.setter
    def has_entries(self, value: bool) -> None:
        pass  # the base class tracks emptiness; here every token is asked about

    def covers(self, principal: Principal) -> bool:
        """Fetch this principal's entries when the remembered answers are too old, then match as a mirror does.

        Raises :class:`~siot_authz.RevocationUnavailable` (503) when Redis
        cannot be asked and no answer recent enough is remembered.
        """
        self._refresh(principal)
        return super().covers(principal)


class RedisLookupRevocations(StoreWriting):
    """Asks Redis for the entries that could match each token, with no background thread: for AWS Lambda.

    ``url`` and ``tls_ca_file`` are read as by
    :class:`~siot_authz.revocation.RedisRevocations`, and ``prefix`` must be
    the one the writers use. Each answer (entry or no entry) is kept for
    ``cache_seconds`` (default 5): a revocation made elsewhere is enforced
    here at most that long after Redis has it. ``cache_seconds=0`` asks on
    every verification. When Redis cannot be asked, an answer is enforced for
    up to ``max_unconfirmed_seconds`` after Redis gave it, and a token with
    none is refused with 503 ``revocation_unavailable``.

    Every lookup blocks the calling thread (about one round trip): use it
    with ``verify_sync`` in Lambda handlers and scripts.
    """

    name = "redis-lookup"
    can_fail_closed = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "siot_authz",
        cache_seconds: float = 5.0,
        max_unconfirmed_seconds: float = 300.0,
        tls_ca_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Look revocations up at ``url`` under ``prefix``; nothing connects until the first lookup."""
        if not (math.isfinite(cache_seconds) and cache_seconds >= 0):
            raise ValueError("cache_seconds must be zero or more")
        if not (math.isfinite(max_unconfirmed_seconds) and max_unconfirmed_seconds >= cache_seconds):
            raise ValueError("max_unconfirmed_seconds must be finite and at least cache_seconds")
        self.store = RedisStore(RedisTarget.from_url(url, tls_ca_file=tls_ca_file), prefix)
        self.cache_seconds = cache_seconds
        self.max_unconfirmed_seconds = max_unconfirmed_seconds
        self.mirror: RevocationMirror = _AskingMirror(self._refresh, clock=clock)
        self._clock = clock
        self._lock = threading.Lock()
        #: Redis key -> when Redis last answered for it (whether or not it held an entry).
        self._answered_at: dict[str, float] = {}
        self._last_answer: float | None = None
        self._is_failing = False
        self._last_error: str | None = None

    @property
    def where(self) -> str:
        """Where Redis is, credentials withheld: what messages and logs show."""
        return self.store.target.where

    # -- the request path -------------------------------------------------------------------

    def _keys_for(self, principal: Principal) -> list[str]:
        pool = principal.user_pool_id
        keys = [self.store.key("user", pool, principal.sub)]
        origin_jti = principal.claims.get("origin_jti")
        if isinstance(origin_jti, str) and origin_jti:
            keys.append(self.store.key("session", pool, origin_jti))
        return keys

    def _refresh(self, principal: Principal) -> None:
        """Ask Redis for the keys whose answers are older than ``cache_seconds``."""
        keys = self._keys_for(principal)
        now = self._clock()
        answered = self._answered_at
        stale = [key for key in keys if not now - answered.get(key, -math.inf) < self.cache_seconds]
        if not stale:
            return
        try:
            found = self.store.fetch(stale)
        except REDIS_ERRORS as error:
            self._failed(error)
            if any(now - answered.get(key, -math.inf) > self.max_unconfirmed_seconds for key in stale):
                raise RevocationUnavailable(pool=principal.user_pool_id) from None
            return  # the last answers are recent enough: enforce them, as a follower enforces its mirror
        for entry in found:
            if entry is not None:
                self.mirror.add(entry)
        self._remember(stale, now)

    def _remember(self, keys: list[str], at: float) -> None:
        with self._lock:
            answered = self._answered_at
            for key in keys:
                answered.pop(key, None)  # re-inserted last: the dict's order is the answers' age
                answered[key] = at
            while len(answered) > _MAX_REMEMBERED:
                del answered[next(iter(answered))]
            self._last_answer, self._is_failing, self._last_error = at, False, None

    def _failed(self, error: BaseException) -> None:
        self._is_failing = True
        self._last_error = describe_error(error)

    def is_failed_closed(self) -> bool:
        """True when the last lookup failed and Redis has answered nothing for ``max_unconfirmed_seconds``."""
        return self._state() == "failed"

    # -- health ----------------------------------------------------------------------------------

    def _state(self) -> BackendState:
        if not self._is_failing:
            return "ok"
        last = self._last_answer
        if last is None or self._clock() - last > self.max_unconfirmed_seconds:
            return "failed"
        return "degraded"

    def status(self) -> RevocationStatus:
        """``ok`` while lookups succeed; ``degraded`` or ``failed`` after one failed, by the same limit."""
        self.mirror.drop_expired()
        last = self._last_answer
        return RevocationStatus(
            backend=self.name,
            state=self._state(),
            entries=len(self.mirror),
            unconfirmed_seconds=None if last is None else max(0.0, self._clock() - last),
            last_error=self._last_error,
        )

    # -- recording and listing ----------------------------------------------------------------

    def _unreachable(self, error: BaseException, consequence: str) -> RevocationStoreUnavailable:
        self._failed(error)
        return RevocationStoreUnavailable(
            f"the revocation store at {self.where} is unreachable ({self._last_error}); {consequence}"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to start: each lookup asks Redis."""

    async def stop(self) -> None:
        """Close the connections."""
        await asyncio.to_thread(self.store.close)

    def close(self) -> None:
        """Close the connections (blocking)."""
        self.store.close()
