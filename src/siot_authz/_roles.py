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
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from typing import Any

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
    - A lookup that raises (``CancelledError`` included), returns anything
      but a list, tuple, set or frozenset of strings, or takes longer than
      ``timeout_seconds`` fails with :class:`RolesUnavailable`, and that
      user's next lookup waits ``backoff_seconds``: in between, their
      requests fail at once.
    - Concurrent requests for a user who is not cached share one lookup.
    - A sync ``source`` runs in a thread of its own, apart from the route
      threadpool, so a slow database never blocks the event loop or starves
      sync routes. At most ``max_threads`` run at once, counted until each
      thread ends, not until its caller gives up: a hung database holds
      ``max_threads`` threads, and every further lookup is refused at once
      (503) instead of starting another.
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
        self.max_threads = max_threads
        # Taken before a thread starts and given back by the thread itself when
        # the source returns: a caller that timed out or hung up does not free
        # a slot its thread still holds. Shared by every event loop and thread.
        self._thread_slots = threading.BoundedSemaphore(max_threads)

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

    def roles_of_sync(self, principal: Principal) -> tuple[str, ...]:
        """Blocking twin of :meth:`roles_of`, for Lambda handlers, scripts and WSGI apps.

        The same cache, back-off, timeout and thread cap. An async source is
        run to completion on a private event loop, so do not call this from
        inside a running one; use :meth:`roles_of` there.
        """
        key = (principal.user_pool_id, principal.sub)
        with self._lock:
            roles = self._roles.get(key)
            if roles is None and self._failures.get(key):
                raise RolesUnavailable(pool=principal.user_pool_id)
            generation = self._generation
        if roles is not None:
            return roles
        found: tuple[str, ...] = ()
        cause = None
        try:
            if self._is_async:
                names = asyncio.run(_within(self.source(principal), self.timeout_seconds))  # type: ignore[arg-type]
            else:
                names = self._in_thread(principal).result(timeout=self.timeout_seconds)
                if inspect.isawaitable(names):  # a sync callable that returned a coroutine
                    names = asyncio.run(_within(names, self.timeout_seconds))
            found = _role_names(names)
        except _NoThreadFree:
            cause = "no_thread_free"
        except TimeoutError:
            cause = "timeout"
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit, CancelledError: a failed source
            cause = type(exc).__name__
        return self._outcome(key, generation, principal, found, cause)

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
        roles: tuple[str, ...] = ()
        cause = None
        try:
            async with asyncio.timeout(self.timeout_seconds):
                names = await self._call_source(principal)
            roles = _role_names(names)
        except _NoThreadFree:
            cause = "no_thread_free"
        except TimeoutError:
            cause = "timeout"
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this lookup itself is being cancelled (its loop is closing): let it end
            cause = "CancelledError"  # raised by the source: its failure, not ours
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit: a failed source, never a 500
            cause = type(exc).__name__
        return self._outcome(key, generation, principal, roles, cause)

    def _outcome(
        self, key: _Key, generation: int, principal: Principal, roles: tuple[str, ...], cause: str | None
    ) -> tuple[str, ...]:
        """Remember a lookup's answer, or its failure for the back-off, unless forget() came in between."""
        with self._lock:
            if generation == self._generation:
                if cause is None:
                    self._roles[key] = roles
                elif cause != "no_thread_free":  # not this user's failure: no back-off for them
                    self._failures[key] = True
        if cause is None:
            return roles
        # The pool and the cause (an exception's type only: its message may
        # quote anything the database said); no claim value, so no sub in logs.
        logger.warning(
            "roles_unavailable pool=%s cause=%s: the roles source failed; retried after the back-off",
            principal.user_pool_id,
            cause,
        )
        raise RolesUnavailable(pool=principal.user_pool_id)

    async def _call_source(self, principal: Principal) -> Any:
        if self._is_async:
            return await self.source(principal)  # type: ignore[misc]
        result = await asyncio.wrap_future(self._in_thread(principal))
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            return await result
        return result

    def _in_thread(self, principal: Principal) -> Future[Any]:
        """Start the sync source on a thread of its own, if one of ``max_threads`` is free."""
        if not self._thread_slots.acquire(blocking=False):
            raise _NoThreadFree()
        future: Future[Any] = Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = self.source(principal)
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            finally:
                self._thread_slots.release()

        # A daemon thread: a source that never returns must not hold up the
        # process's exit, as an executor's joined worker would.
        thread = threading.Thread(target=run, name="siot_authz-roles", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._thread_slots.release()
            raise
        return future


class _NoThreadFree(Exception):
    """Every one of ``max_threads`` is still running a lookup (a hung source)."""


async def _within(awaitable: Awaitable[Any], seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


def _role_names(names: Any) -> tuple[str, ...]:
    # Only plain collections: a bare string would become {"a", "d", ...}, and
    # a mapping's keys are not a statement of roles ({"admin": False} would
    # grant admin). Anything else is a source bug, answered as an outage.
    if not isinstance(names, list | tuple | set | frozenset):
        raise TypeError("a roles source must return a list, tuple, set or frozenset of role names")
    for name in names:
        if not isinstance(name, str):
            raise TypeError("role names must be strings")
    return tuple(sorted(set(names)))
