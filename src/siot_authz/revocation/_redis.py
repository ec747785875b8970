"""Revocations shared by every worker and host through Redis, enforced from a local mirror.

Layout in Redis, under a ``prefix`` (default ``siot_authz``):

* one key per entry, ``<prefix>:rev:<kind>:<pool>:<subject>``, holding the
  entry's JSON and expiring by itself (PEXPIREAT) when the entry can no
  longer match a valid token;
* a pub/sub channel, ``<prefix>:revocations``, on which every write is
  published in the same atomic script that stores it.

Each process follows the channel in the background (an asyncio task from
:meth:`RedisRevocations.start`, or the same follower on a daemon thread's
own event loop from :meth:`RedisRevocations.start_sync`): it subscribes first, then loads the
full set, so nothing written in between is missed; then it applies each
message. A PING on the subscription every second confirms the mirror: its
PONG comes back only after every message published before it, so a PONG
proves the mirror was current when the PING was sent.

Pub/sub drops messages while a subscriber is disconnected, so after any
error the follower starts over (subscribe, full load) instead of letting
redis-py resubscribe silently. On reload it also writes back live entries
that its mirror holds and Redis lacks: there is no "unrevoke", so a missing
entry means Redis lost it (a restart without persistence), and one
surviving worker puts it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ._base import BackendState, Revocation, RevocationMirror, RevocationStatus, RevocationStoreUnavailable

__all__ = ["RedisRevocations"]

logger = logging.getLogger("siot_authz")

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
#: Socket timeouts: a write or listing never hangs on a Redis that accepts but does not answer.
_SOCKET_TIMEOUT = 2.0
#: Entries fetched per SCAN step and MGET.
_BATCH = 500
#: How often the mirror forgets entries that can no longer match a valid token.
_PRUNE_INTERVAL = 30.0

# Stores an entry unless Redis holds a later ``before`` for the same key,
# sets its expiry, and publishes what it stored, all in one atomic step, so a
# subscriber that loads after subscribing can miss nothing. Returns the entry
# Redis now holds, for the writer's own mirror.
_STORE_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held then
  local ok, entry = pcall(cjson.decode, held)
  if ok and type(entry) == 'table' and tonumber(entry['before'])
     and tonumber(entry['before']) > tonumber(ARGV[2]) then
    return held
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return ARGV[1]
"""


def _redacted(url: str) -> str:
    """Where Redis is, for messages: host, port and database, never credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _glob_escaped(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _parse(raw: bytes | str | None) -> Revocation | None:
    """An entry as stored or published, or None (logged) for anything malformed."""
    if raw is None:
        return None  # expired between SCAN and MGET
    try:
        return Revocation.from_json(json.loads(raw))
    except ValueError:
        logger.warning("revocation_entry_malformed: ignored an entry that is not a revocation")
        return None


def _as_listed(entries: Iterable[Revocation], clock: Callable[[], float]) -> list[Revocation]:
    """Live entries, one per user or session, in the order :meth:`RevocationMirror.entries` lists them."""
    listing = RevocationMirror(clock=clock)
    listing.replace_all(list(entries))
    return listing.entries()


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


class RedisRevocations:
    """Revocations in Redis, enforced in every process from a mirror kept current in the background.

    ``max_unconfirmed_seconds`` is how long a mirror may go without
    confirmation from Redis before requests are refused with 503
    ``revocation_unavailable``; until then an unreachable Redis leaves the
    last mirror enforced (``degraded``). The default, 300 s, rides out a
    Redis restart or failover without refusing traffic, while bounding how
    long a revocation made elsewhere can go unenforced here to five minutes,
    a small part of a token's lifetime. ``None`` never fails closed once
    loaded. A process fails closed until its first full load: with nothing
    loaded, there is nothing to enforce.

    Recording (``add``/``add_sync``) and listing (``entries``/``entries_sync``)
    talk to Redis directly and need no :meth:`start`; enforcing needs
    :meth:`start` (async apps; ``CognitoAuth``'s lifespan calls it) or
    :meth:`start_sync` (processes without an event loop).
    """

    name = "redis"
    can_fail_closed = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "siot_authz",
        max_unconfirmed_seconds: float | None = 300.0,
        start_timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Follow the revocations at ``url`` under ``prefix`` (share a prefix to share revocations)."""
        if max_unconfirmed_seconds is not None and not max_unconfirmed_seconds > 0:
            raise ValueError("max_unconfirmed_seconds must be positive, or None to never fail closed")
        if not prefix or ":" in prefix:
            raise ValueError("prefix must be non-empty and contain no ':'")
        self.url = url
        self.prefix = prefix
        self.channel = f"{prefix}:revocations"
        self.max_unconfirmed_seconds = max_unconfirmed_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self.mirror = RevocationMirror(clock=clock)
        self._clock = clock
        self._where = _redacted(url)
        self._script_sha: str | None = None
        # Follower state. ``_fail_after`` is all the request path reads:
        # -inf until the first load, so an unloaded process fails closed.
        self._fail_after = -math.inf
        self._confirmed_at: float | None = None
        self._is_connected = False
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loaded = threading.Event()
        # Clients for recording and listing: one blocking, one per event loop.
        self._sync_client: redis.Redis | None = None
        self._async_client: aioredis.Redis | None = None
        self._async_client_loop: asyncio.AbstractEventLoop | None = None

    # -- the request path ---------------------------------------------------------

    def is_failed_closed(self) -> bool:
        """True when the mirror has not been loaded, or has gone unconfirmed longer than allowed."""
        return self._clock() > self._fail_after

    # -- status ---------------------------------------------------------------------

    def status(self) -> RevocationStatus:
        """``starting`` until loaded, then ``ok``, ``degraded`` (Redis unreachable) or ``failed`` (closed)."""
        self.mirror.drop_expired()
        now = self._clock()
        confirmed_at = self._confirmed_at
        unconfirmed = None if confirmed_at is None else max(0.0, now - confirmed_at)
        state: BackendState
        if confirmed_at is None:
            state = "starting"
        elif now > self._fail_after:
            state = "failed"
        elif not self._is_connected or (unconfirmed or 0.0) > _DEGRADED_AFTER:
            state = "degraded"
        else:
            state = "ok"
        return RevocationStatus(
            backend=self.name,
            state=state,
            entries=len(self.mirror),
            unconfirmed_seconds=unconfirmed,
            last_error=self._last_error,
        )

    # -- recording ------------------------------------------------------------------

    def _key(self, entry: Revocation) -> str:
        return f"{self.prefix}:rev:{entry.kind}:{entry.user_pool_id}:{entry.subject}"

    def _store_args(self, entry: Revocation) -> tuple[str, list[str]]:
        # PEXPIREAT rounds up so Redis never drops an entry before the mirror would.
        expires_ms = math.ceil(entry.expires_at * 1000)
        payload = json.dumps(entry.to_json(), separators=(",", ":"))
        return self._key(entry), [payload, repr(entry.before), str(expires_ms), self.channel]

    def _unreachable(self, error: BaseException, consequence: str) -> RevocationStoreUnavailable:
        self._last_error = _describe(error)
        return RevocationStoreUnavailable(
            f"the revocation store at {self._where} is unreachable ({self._last_error}); {consequence}"
        )

    def _refused(self, error: BaseException) -> RevocationStoreUnavailable:
        return self._unreachable(
            error, "the revocation may not be recorded and is not enforced yet: retry it (retrying is safe)"
        )

    def _accepted(self, stored: bytes | str) -> None:
        # Only what Redis accepted reaches this mirror; the follower would
        # apply it too, this just spares the writer the round trip.
        entry = _parse(stored)
        if entry is not None:
            self.mirror.add(entry)

    async def add(self, entry: Revocation) -> None:
        """Record ``entry`` in Redis for every process; :class:`RevocationStoreUnavailable` if Redis will not."""
        key, args = self._store_args(entry)
        try:
            stored = await self._async_writer().register_script(_STORE_SCRIPT)(keys=[key], args=args)
        except (RedisError, OSError) as error:
            raise self._refused(error) from None
        self._accepted(stored)

    def add_sync(self, entry: Revocation) -> None:
        """Blocking twin of :meth:`add`; needs no event loop (the CLI's path)."""
        key, args = self._store_args(entry)
        try:
            stored = self._sync_writer().register_script(_STORE_SCRIPT)(keys=[key], args=args)
        except (RedisError, OSError) as error:
            raise self._refused(error) from None
        self._accepted(stored)

    # -- listing --------------------------------------------------------------------

    @property
    def _pattern(self) -> str:
        return f"{_glob_escaped(self.prefix)}:rev:*"

    async def _load_async(self, client: aioredis.Redis) -> list[Revocation]:
        keys = [key async for key in client.scan_iter(match=self._pattern, count=_BATCH)]
        values: list[Any] = []
        for start in range(0, len(keys), _BATCH):
            values += await client.mget(keys[start : start + _BATCH])
        return [entry for entry in map(_parse, values) if entry is not None]

    def _load_sync(self, client: redis.Redis) -> list[Revocation]:
        keys = list(client.scan_iter(match=self._pattern, count=_BATCH))
        values: list[Any] = []
        for start in range(0, len(keys), _BATCH):
            values += client.mget(keys[start : start + _BATCH])
        return [entry for entry in map(_parse, values) if entry is not None]

    async def entries(self) -> list[Revocation]:
        """Every live entry as Redis holds it; :class:`RevocationStoreUnavailable` if unreachable."""
        try:
            stored = await self._load_async(self._async_writer())
        except (RedisError, OSError) as error:
            raise self._unreachable(error, "cannot list the revocations") from None
        return _as_listed(stored, self._clock)

    def entries_sync(self) -> list[Revocation]:
        """Blocking twin of :meth:`entries`."""
        try:
            stored = self._load_sync(self._sync_writer())
        except (RedisError, OSError) as error:
            raise self._unreachable(error, "cannot list the revocations") from None
        return _as_listed(stored, self._clock)

    # -- clients ----------------------------------------------------------------------

    def _client_options(self, *, retries: int, is_async: bool) -> dict[str, Any]:
        # Writes are idempotent, so a couple of quick retries ride out a blip
        # (a connection the server closed); the follower retries nothing, so
        # every disconnect reaches it and it reloads (see the module doc).
        backoff = ExponentialBackoff(cap=0.5, base=0.05) if retries else NoBackoff()
        retry_class = AsyncRetry if is_async else Retry
        return {
            "socket_connect_timeout": _SOCKET_TIMEOUT,
            "socket_timeout": _SOCKET_TIMEOUT,
            "retry": retry_class(backoff, retries),
        }

    def _sync_writer(self) -> redis.Redis:
        if self._sync_client is None:
            self._sync_client = redis.Redis.from_url(
                self.url, **self._client_options(retries=2, is_async=False)
            )
        return self._sync_client

    def _async_writer(self) -> aioredis.Redis:
        # An asyncio client belongs to the loop it first ran on.
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_client_loop is not loop:
            self._async_client = aioredis.Redis.from_url(
                self.url, **self._client_options(retries=2, is_async=True)
            )
            self._async_client_loop = loop
        return self._async_client

    # -- following: shared steps ------------------------------------------------------

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
        if self._last_error is not None:
            logger.info(
                "revocation_store_recovered store=%s entries=%d written_back=%d",
                self._where,
                len(self.mirror),
                len(missing),
            )
        self._is_connected = True
        self._last_error = None
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
            entry = _parse(message["data"])
            if entry is not None:
                self.mirror.add(entry)
        elif message["type"] == "pong":
            sent_at = heartbeat.answered()
            if sent_at is not None:
                self._confirm(sent_at)

    def _lost(self, error: BaseException) -> None:
        was_connected, self._is_connected = self._is_connected, False
        self._last_error = _describe(error)
        if was_connected or self._confirmed_at is None:
            logger.warning(
                "revocation_store_unreachable store=%s error=%s: enforcing the last %d entries; "
                "new revocations are refused until it is back",
                self._where,
                self._last_error,
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

    # -- following ------------------------------------------------------------------

    async def start(self) -> None:
        """Begin following Redis in a background task; waits up to ``start_timeout_seconds`` for the first load.

        If Redis is unreachable, start-up goes on: the task keeps retrying
        and requests are refused with 503 until the set is loaded.
        """
        if self._task is not None and not self._task.done():
            return
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="siot_authz-revocations")
        await asyncio.to_thread(self._loaded.wait, self.start_timeout_seconds)
        self._warn_if_not_loaded()

    def start_sync(self) -> None:
        """Begin following Redis in a daemon thread; for processes that only use ``verify_sync``.

        The thread runs the same follower on a private event loop. Waits up
        to ``start_timeout_seconds`` for the first load; until then requests
        are refused with 503.
        """
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
                "revocation_store_not_loaded store=%s: requests are refused (503) until it is", self._where
            )

    async def _follow(self) -> None:
        """Subscribe, load the full set, then apply messages and PING; on any error, start over."""
        delay = _BACKOFF_FIRST
        while not self._stopping.is_set():
            client = aioredis.Redis.from_url(self.url, **self._client_options(retries=0, is_async=True))
            pubsub = client.pubsub()
            try:
                await self._subscribe(pubsub)
                subscribed_at = self._clock()
                missing = self._reconcile(await self._load_async(client), subscribed_at)
                script = client.register_script(_STORE_SCRIPT)
                for entry in missing:
                    key, args = self._store_args(entry)
                    await script(keys=[key], args=args)
                delay = _BACKOFF_FIRST
                heartbeat, pruned = _Heartbeat(), time.monotonic()
                while not self._stopping.is_set():
                    if heartbeat.is_due():
                        heartbeat.sent(self._clock())
                        await pubsub.ping()
                    self._handle(await pubsub.get_message(timeout=_POLL), heartbeat)
                    pruned = self._prune_due(pruned)
            except (RedisError, OSError) as error:
                self._lost(error)
            except Exception as error:
                # A bug must not end following for good: log it and start over.
                logger.exception("revocation_follower_bug")
                self._lost(error)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
            wait, delay = self._backoff(delay)
            await asyncio.sleep(wait)

    async def _subscribe(self, pubsub: aioredis.client.PubSub) -> None:
        """Subscribe and wait until Redis confirms it: only then can the full load miss nothing."""
        await pubsub.subscribe(self.channel)
        deadline = time.monotonic() + _SOCKET_TIMEOUT
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=_POLL)
            if message is not None and message["type"] == "subscribe":
                return
        raise TimeoutError(f"Redis did not confirm the subscription within {_SOCKET_TIMEOUT:g} s")

    async def stop(self) -> None:
        """Stop following (task or thread) and close connections; the mirror stays as it was."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._thread is not None:
            await asyncio.to_thread(self.stop_sync)
        client, self._async_client = self._async_client, None
        if client is not None and self._async_client_loop is asyncio.get_running_loop():
            await client.aclose()
        self._close_sync_writer()

    def stop_sync(self) -> None:
        """Stop the thread :meth:`start_sync` began and close the blocking client."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_SOCKET_TIMEOUT + _BACKOFF_CAP + 1)
        self._close_sync_writer()

    def _close_sync_writer(self) -> None:
        client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()
