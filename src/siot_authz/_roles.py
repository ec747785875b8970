"""Roles from the application: the source adapter, its TTL cache, its back-off and the principal that carries them.

Cognito groups arrive in the token; roles do not. SimpleIOT keeps them in
its own database (``User`` with a set of ``Role``), so they are looked up
here, only for routes that ask for them, and cached per (user pool, sub)
for a short time. They are never put in the verified-token cache: roles
change while tokens live, and a token's principal is shared by every request
that presents it.

A source that fails costs one lookup per user per back-off, not one per
request, and never a 500: the caller gets a 503 ``roles_unavailable`` and a
``Retry-After``, and the database gets room to recover.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread
from cachetools import TTLCache
from pydantic import Field

from ._errors import RolesUnavailable
from ._principal import Principal

__all__ = ["RolesCache", "RolesPrincipal", "RolesSource"]

logger = logging.getLogger("siot_authz")

#: The application's lookup: given the verified principal, the names of its roles (sync or async).
RolesSource = Callable[[Principal], Iterable[str] | Awaitable[Iterable[str]]]

_Key = tuple[str, str]


class RolesPrincipal(Principal):
    """A :class:`Principal` with the application roles the route asked for; as immutable as its base.

    Made per request from the cached principal and the cached roles, so
    neither cache ever holds the other's data.
    """

    roles: tuple[str, ...] = Field(
        default=(), description="Application roles of the user, from the app's roles source, sorted."
    )

    def has_any_role(self, roles: Iterable[str]) -> bool:
        """True when the user has at least one of ``roles``."""
        return not set(roles).isdisjoint(self.roles)

    @classmethod
    def of(cls, principal: Principal, roles: tuple[str, ...]) -> RolesPrincipal:
        """``principal`` with ``roles``, without validating the verified fields a second time."""
        fields = {name: getattr(principal, name) for name in Principal.model_fields}
        return cls.model_construct(**fields, roles=roles)


class RolesCache:
    """Looks roles up through ``source`` and remembers them per (user pool, sub) for ``ttl_seconds``.

    - At most ``max_entries`` users are held; the least recently stored go first.
    - A lookup that raises, returns something that is not a collection of
      names, or takes longer than ``timeout_seconds`` fails with
      :class:`RolesUnavailable`, and that user's next lookup waits
      ``backoff_seconds``: in between, their requests fail at once.
    - Concurrent requests for a user who is not cached share one lookup.
    - A sync ``source`` runs in a worker thread (at most ``max_threads`` at
      once, apart from the route threadpool), so a slow database never
      blocks the event loop or starves sync routes.
    """

    def __init__(
        self,
        source: RolesSource,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 10_000,
        timeout_seconds: float = 2.0,
        backoff_seconds: float = 5.0,
        max_threads: int = 8,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``source``; see the class docstring for what each bound does."""
        if not callable(source):
            raise TypeError("roles source must be callable: source(principal) -> role names")
        for name, value in (
            ("ttl_seconds", ttl_seconds),
            ("timeout_seconds", timeout_seconds),
            ("backoff_seconds", backoff_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        if max_entries < 1 or max_threads < 1:
            raise ValueError("max_entries and max_threads must be at least 1")
        self.source = source
        self.timeout_seconds = timeout_seconds
        self._is_async = inspect.iscoroutinefunction(source) or inspect.iscoroutinefunction(
            getattr(source, "__call__", None)  # noqa: B004  # an object with an async __call__
        )
        self._roles: TTLCache[_Key, tuple[str, ...]] = TTLCache(max_entries, ttl_seconds, timer=timer)
        self._failures: TTLCache[_Key, bool] = TTLCache(max_entries, backoff_seconds, timer=timer)
        # cachetools caches are not thread-safe; an app may run several event loops (test clients).
        self._lock = threading.Lock()
        self._pending: dict[_Key, tuple[asyncio.AbstractEventLoop, asyncio.Task[tuple[str, ...]]]] = {}
        # Bumped by forget() and clear(): a lookup that started before stores nothing.
        self._generation = 0
        self._max_threads = max_threads
        # One per event loop: a limiter belongs to the loop it was first used on.
        self._limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
            weakref.WeakKeyDictionary()
        )

    async def roles_of(self, principal: Principal) -> tuple[str, ...]:
        """The sorted role names of ``principal``'s user; raises :class:`RolesUnavailable` on failure."""
        key = (principal.user_pool_id, principal.sub)
        with self._lock:
            roles = self._roles.get(key)
            if roles is None and self._failures.get(key):
                raise RolesUnavailable(pool=principal.user_pool_id)
        if roles is not None:
            return roles
        loop = asyncio.get_running_loop()
        pending = self._pending.get(key)
        if pending is None or pending[0] is not loop:
            task = loop.create_task(self._look_up(key, principal))
            self._pending[key] = (loop, task)
            task.add_done_callback(lambda _: self._forget_pending(key, task))
        else:
            task = pending[1]
        # Shielded: one waiter giving up (a client hanging up) must not
        # cancel the lookup the others are waiting for.
        return await asyncio.shield(task)

    def forget(self, user_pool_id: str, sub: str) -> None:
        """Drop one user's cached roles and back-off, after the application changed their roles.

        A lookup already under way for them is not reused, and its answer
        (read before the change) is not kept.
        """
        with self._lock:
            self._generation += 1
            self._roles.pop((user_pool_id, sub), None)
            self._failures.pop((user_pool_id, sub), None)
            self._pending.pop((user_pool_id, sub), None)

    def clear(self) -> None:
        """Drop every cached role and back-off, and every lookup's answer still to come."""
        with self._lock:
            self._generation += 1
            self._roles.clear()
            self._failures.clear()
            self._pending.clear()

    def _forget_pending(self, key: _Key, task: asyncio.Task[tuple[str, ...]]) -> None:
        pending = self._pending.get(key)
        if pending is not None and pending[1] is task:
            del self._pending[key]

    async def _look_up(self, key: _Key, principal: Principal) -> tuple[str, ...]:
        generation = self._generation
        failure: str
        try:
            async with asyncio.timeout(self.timeout_seconds):
                names = await self._call_source(principal)
            roles = _role_names(names)
        except TimeoutError:
            failure = "timeout"
        except Exception as exc:
            # Only the type: the message may quote anything the database said.
            failure = type(exc).__name__
        else:
            with self._lock:
                if generation == self._generation:
                    self._roles[key] = roles
            return roles
        with self._lock:
            if generation == self._generation:
                self._failures[key] = True
        # The pool and the cause, no claim value: a sub stays out of logs.
        logger.warning(
            "roles_unavailable pool=%s cause=%s: the roles source failed; retried after the back-off",
            principal.user_pool_id,
            failure,
        )
        raise RolesUnavailable(pool=principal.user_pool_id)

    async def _call_source(self, principal: Principal) -> Any:
        if self._is_async:
            return await self.source(principal)  # type: ignore[misc]
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(self._max_threads)
        # abandon_on_cancel: on timeout the request is answered now; the
        # thread finishes (or hangs) on its own, holding one of max_threads.
        result = await anyio.to_thread.run_sync(
            self.source, principal, abandon_on_cancel=True, limiter=limiter
        )
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            return await result
        return result


def _role_names(names: Any) -> tuple[str, ...]:
    # A bare string is iterable too, and "admin" would become {"a", "d", ...}:
    # refuse it rather than grant roles nobody meant.
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise TypeError("a roles source must return a collection of role names")
    roles = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError("role names must be strings")
        roles.add(name)
    return tuple(sorted(roles))
