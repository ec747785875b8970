"""Keeping a process's mirror current from Redis: subscribe, load everything, apply messages, confirm.

The follower runs as an asyncio task (:meth:`RedisFollower.start`) or on a
daemon thread's own event loop (:meth:`RedisFollower.start_sync`). Each
round:

1. subscribes to the channel on one node and waits until Redis confirms the
   subscription, so that everything written from then on arrives as a
   message;
2. loads the full set (SCAN on every primary, then fetch) and merges it
   into the mirror, writing back live entries the mirror holds and Redis
   lacks: there is no "unrevoke", so a missing entry means Redis lost it
   (a restart without persistence, a failover that lost a write);
3. applies each message, and PINGs the subscription every second. The PONG
   comes back after every message published on that node before the PING,
   so it confirms the mirror was current when the PING was sent.

Pub/sub drops messages while a subscriber is away, so after any error the
follower starts over from step 1 instead of letting redis-py resubscribe
silently. In a cluster, a message published on any node reaches every node,
so one subscription anywhere is enough; when its node fails, the next round
subscribes on another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from ._base import BackendState, Revocation, RevocationMirror, RevocationStatus
from ._redis_client import SOCKET_TIMEOUT
from ._redis_store import RedisStore, parse_entry

__all__ = ["REDIS_ERRORS", "RedisFollower", "describe_error"]

logger = logging.getLogger("siot_authz")

#: What talking to Redis can raise when Redis (or the way to it) fails.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)

#: How often the subscription is PINGed; a PONG confirms the mirror.
_PING_INTERVAL = 1.0
#: A PING unanswered this long means the connection is dead: start over.
_PONG_TIMEOUT = 2.0
#: Unconfirmed longer than this (a PONG missed) is reported as ``degraded``.
_DEGRADED_AFTER = _PING_INTERVAL + _PONG_TIMEOUT
#: How long a follower blocks waiting for a message, so it notices stop() and PING deadlines.
_POLL = 0.2
#: Reconnect back-off: from the first to the cap, doubling, with jitter.
_BACKOFF_FIRST, _BACKOFF_CAP = 0.1, 2.0
#: How often the mirror forgets entries that can no longer match a valid token.
_PRUNE_INTERVAL = 30.0


def describe_error(error: BaseException) -> str:
    """An error's type and text, for ``last_error`` and logs (never holds credentials: see _redis_client)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Heartbeat:
    """When to PING the subscription, and whether the last PING has gone unanswered too long."""

    def __init__(self) -> None:
        self.sent_at: float | None = None  # the backend clock, when the PING in flight was sent
        self._sent_mono = 0.0
        self._next_mono = 0.0

    def is_due(self) -> bool:
        now = time.monotonic()
        if self.sent_at is not None:
            if now - self._sent_mono > _PONG_TIMEOUT:
                raise TimeoutError(f"no PONG from Redis within {_PONG_TIMEOUT:g} s")
            return False
        return now >= self._next_mono

    def sent(self, at: float) -> None:
        self.sent_at, self._sent_mono = at, time.monotonic()

    def answered(self) -> float | None:
        sent_at, self.sent_at = self.sent_at, None
        self._next_mono = time.monotonic() + _PING_INTERVAL
        return sent_at


class RedisFollower:
    """Keeps ``mirror`` current from ``store``'s channel, and says how current it is."""

    def __init__(
        self,
        store: RedisStore,
        mirror: RevocationMirror,
        *,
        max_unconfirmed_seconds: float | None,
        start_timeout_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.max_unconfirmed_seconds = max_unconfirmed_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self._clock = clock
        # ``_fail_after`` is all the request path reads: -inf until the first
        # load, so an unloaded process fails closed.
        self._fail_after = -math.inf
        self._confirmed_at: float | None = None
        self._is_connected = False
        self.last_error: str | None = None
        #: The node the subscription is on, as (host, port), while subscribed.
        self.subscribed_to: tuple[str, int] | None = None
        self._attempt = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loaded = threading.Event()

    # -- what the request path and health read ------------------------------------------

    def is_failed_closed(self) -> bool:
        """True when the mirror has not been loaded, or has gone unconfirmed longer than allowed."""
        return self._clock() > self._fail_after

    def state(self) -> tuple[BackendState, float | None]:
        """The state now, and seconds since the mirror was last confirmed (None before the first load)."""
        now = self._clock()
        confirmed_at = self._confirmed_at
        unconfirmed = None if confirmed_at is None else max(0.0, now - confirmed_at)
        state: BackendState
        if confirmed_at is None:
            state = "starting"
        elif now > self._fail_after:
            state = "failed"
        elif not self._is_connected or (unconfirmed or 0.0) > _DEGRADED_AFTER:
            # A dropped connection shows at once, not only once a PONG is late.
            state = "degraded"
        else:
            state = "ok"
        return state, unconfirmed

    def status(self, name: str) -> RevocationStatus:
        """The follower's state as a :class:`RevocationStatus` for ``name``."""
        self.mirror.drop_expired()
        state, unconfirmed = self.state()
        return RevocationStatus(
            backend=name,
            state=state,
            entries=len(self.mirror),
            unconfirmed_seconds=unconfirmed,
            last_error=self.last_error,
        )

    # -- one round's steps --------------------------------------------------------------

    def _reconcile(self, stored: list[Revocation], confirmed_at: float) -> list[Revocation]:
        """Merge a full load into the mirror and trust it; returns the entries Redis lacks, to write back."""
        held = self.mirror.entries()
        self.mirror.replace_all([*stored, *held])
        in_store = {(entry.kind, entry.user_pool_id, entry.subject): entry.before for entry in stored}
        missing = [
            entry
            for entry in held
            if in_store.get((entry.kind, entry.user_pool_id, entry.subject), -math.inf) < entry.before
        ]
        if self.last_error is not None:
            logger.info(
                "revocation_store_recovered store=%s entries=%d written_back=%d",
                self.store.target.where,
                len(self.mirror),
                len(missing),
            )
        self._is_connected = True
        self.last_error = None
        self._confirm(confirmed_at)
        self._loaded.set()
        return missing

    def _confirm(self, at: float) -> None:
        self._confirmed_at = at
        limit = self.max_unconfirmed_seconds
        self._fail_after = math.inf if limit is None else at + limit

    def _handle(self, message: dict[str, Any] | None, heartbeat: _Heartbeat) -> None:
        """Apply one message from the subscription: an entry, or the PONG that confirms the mirror."""
        if message is None:
            return
        if message["type"] == "message":
            entry = parse_entry(message["data"])
            if entry is not None:
                self.mirror.add(entry)
        elif message["type"] == "pong":
            sent_at = heartbeat.answered()
            if sent_at is not None:
                self._confirm(sent_at)

    def _lost(self, error: BaseException) -> None:
        was_connected, self._is_connected = self._is_connected, False
        self.subscribed_to = None
        self.last_error = describe_error(error)
        self._attempt += 1  # the next round tries the next node (a cluster's survivors)
        if was_connected or self._confirmed_at is None:
            logger.warning(
                "revocation_store_unreachable store=%s error=%s: enforcing the last %d entries; "
                "new revocations are refused until it is back",
                self.store.target.where,
                self.last_error,
                len(self.mirror),
            )

    @staticmethod
    def _backoff(delay: float) -> tuple[float, float]:
        """How long to wait before reconnecting, and the delay after that."""
        return delay * (0.5 + random.random() / 2), min(delay * 2, _BACKOFF_CAP)  # noqa: S311

    def _prune_due(self, last: float) -> float:
        now = time.monotonic()
        if now - last < _PRUNE_INTERVAL:
            return last
        self.mirror.drop_expired()
        return now

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin following in a background task; waits up to ``start_timeout_seconds`` for the first load."""
        if self._task is not None and not self._task.done():
            return
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="siot_authz-revocations")
        await asyncio.to_thread(self._loaded.wait, self.start_timeout_seconds)
        self._warn_if_not_loaded()

    def start_sync(self) -> None:
        """Begin following on a daemon thread's own event loop; waits as :meth:`start` does."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._follow(),), name="siot_authz-revocations", daemon=True
        )
        self._thread.start()
        self._loaded.wait(self.start_timeout_seconds)
        self._warn_if_not_loaded()

    def _warn_if_not_loaded(self) -> None:
        if not self._loaded.is_set():
            logger.warning(
                "revocation_store_not_loaded store=%s: requests are refused (503) until it is",
                self.store.target.where,
            )

    async def stop(self) -> None:
        """Stop following (task or thread); the mirror stays as it was."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._thread is not None:
            await asyncio.to_thread(self.stop_sync)

    def stop_sync(self) -> None:
        """Stop the thread :meth:`start_sync` began."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=SOCKET_TIMEOUT + _BACKOFF_CAP + 1)

    # -- the loop -----------------------------------------------------------------------

    async def _follow(self) -> None:
        """Rounds of subscribe, load, follow; on any error, back off and start over."""
        delay = _BACKOFF_FIRST
        while not self._stopping.is_set():
            client: aioredis.Redis | None = None
            pubsub: aioredis.client.PubSub | None = None
            try:
                nodes = await asyncio.to_thread(self.store.nodes)
                node = nodes[self._attempt % len(nodes)]
                client = self.store.target.async_node_client(*node)
                pubsub = client.pubsub()
                await self._subscribe(pubsub)
                subscribed_at = self._clock()
                self.subscribed_to = node
                missing = self._reconcile(await asyncio.to_thread(self.store.load), subscribed_at)
                await asyncio.to_thread(self.store.write_all, missing)
                delay = _BACKOFF_FIRST
                await self._apply_messages(pubsub)
            except REDIS_ERRORS as error:
                self._lost(error)
            except Exception as error:
                # A bug must not end following for good: log it and start over.
                logger.exception("revocation_follower_bug")
                self._lost(error)
            finally:
                if pubsub is not None:
                    await pubsub.aclose()
                if client is not None:
                    await client.aclose()
            wait, delay = self._backoff(delay)
            await asyncio.sleep(wait)

    async def _subscribe(self, pubsub: aioredis.client.PubSub) -> None:
        """Subscribe and wait until Redis confirms it: only then can the full load miss nothing."""
        await pubsub.subscribe(self.store.channel)
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=_POLL)
            if message is not None and message["type"] == "subscribe":
                return
        raise TimeoutError(f"Redis did not confirm the subscription within {SOCKET_TIMEOUT:g} s")

    async def _apply_messages(self, pubsub: aioredis.client.PubSub) -> None:
        heartbeat, pruned = _Heartbeat(), time.monotonic()
        while not self._stopping.is_set():
            if heartbeat.is_due():
                heartbeat.sent(self._clock())
                await pubsub.ping()
            self._handle(await pubsub.get_message(timeout=_POLL), heartbeat)
            pruned = self._prune_due(pruned)
