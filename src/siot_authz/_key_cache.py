"""When to fetch the JWKS, and which key answers a kid.

The policy, shared by the sync and async faces:

* One fetch serves every request until ``jwks_ttl_seconds`` pass; concurrent
  cold requests wait on one in-flight fetch (per event loop for ``verify``,
  per process for ``verify_sync``).
* A kid we do not hold may trigger a refetch (keys rotate), but at most one
  per ``jwks_refetch_cooldown_seconds``: a client spraying random kids must
  not turn into a stream of fetches (the "penalty box").
* A failed refresh keeps the keys already held (stale-if-error) and is not
  retried before the cooldown passes. With nothing held, requests fail fast
  with :class:`JwksUnavailable` (503) instead of each waiting on the network.
  Any failure of a fetch, expected or not, ends this way and never as a 500.
* A refresh that drops a key drops it at once: tokens signed with it stop
  verifying.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from ._errors import JwksUnavailable, KeyIdUnknown
from ._http import JwksFetchError, fetch_jwks, fetch_jwks_sync
from ._jose import RS256PublicKey
from ._jwks import InvalidJwks, KeySet, parse_jwks, safe_kid
from ._settings import AuthSettings

__all__ = ["JwksCache"]

logger = logging.getLogger("siot_authz.jwks")


class JwksCache:
    """Holds the current :class:`KeySet` and decides when to fetch a new one."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = settings.resolved_jwks_url
        self._ttl = settings.jwks_ttl_seconds
        self._cooldown = settings.jwks_refetch_cooldown_seconds
        self._timeout = settings.http_timeout_seconds
        self._max_bytes = settings.max_jwks_bytes
        self._async_transport = async_transport
        self._sync_transport = sync_transport
        self._clock = clock

        self._key_set: KeySet | None = None
        self._fetched_at = 0.0
        self._last_attempt_at: float | None = None
        self._is_last_attempt_failed = False
        self._inflight: asyncio.Task[None] | None = None
        self._sync_lock = threading.Lock()
        self._sync_client: httpx.Client | None = None
        self._ssl_context: ssl.SSLContext | None = None
        #: Incremented on every successful fetch; lets callers notice a new key set.
        self.generation = 0

    # -- state queries (cheap; used on the verified-token fast path) ----------

    def is_fresh(self) -> bool:
        """True while the held key set is within its TTL."""
        return self._key_set is not None and self._clock() - self._fetched_at < self._ttl

    def holds_kid(self, kid: str) -> bool:
        """True when the held key set still has a usable key with this kid."""
        key_set = self._key_set
        return key_set is not None and kid in key_set.keys

    def held_key(self, kid: str) -> RS256PublicKey | None:
        """The key now held for ``kid``, fresh or stale; the same object while the JWK is unchanged."""
        key_set = self._key_set
        return key_set.get(kid) if key_set is not None else None

    @property
    def kids(self) -> frozenset[str]:
        """The kids of the held key set (empty before the first fetch)."""
        key_set = self._key_set
        return frozenset(key_set.keys) if key_set is not None else frozenset()

    # -- policy ---------------------------------------------------------------

    def _is_cooled_down(self) -> bool:
        last = self._last_attempt_at
        return last is None or self._clock() - last >= self._cooldown

    def _needs_fetch(self, kid: str) -> bool:
        if self._key_set is None:
            return self._is_cooled_down()
        if not self.is_fresh():
            # A TTL refresh after a good fetch is due now, even when the TTL is
            # shorter than the cooldown; after a failure it waits the cooldown.
            return not self._is_last_attempt_failed or self._is_cooled_down()
        return not self.holds_kid(kid) and self._is_cooled_down()

    def _fresh_key(self, kid: str) -> RS256PublicKey | None:
        """The key for ``kid`` if the held set has it and is within its TTL: the no-fetch path."""
        key_set = self._key_set
        if key_set is not None and self._clock() - self._fetched_at < self._ttl:
            return key_set.get(kid)
        return None

    def _key_after_fetch(self, kid: str) -> RS256PublicKey:
        key_set = self._key_set
        if key_set is None:
            raise JwksUnavailable()
        key = key_set.get(kid)
        if key is None:
            raise KeyIdUnknown(kid=kid)
        return key

    def _store(self, body: bytes) -> None:
        previous = self._key_set
        key_set = parse_jwks(body, previous)
        if previous is not None:
            dropped = set(previous.keys) - set(key_set.keys)
            if dropped:
                logger.info("jwks_keys_dropped kids=%s", ",".join(safe_kid(kid) for kid in sorted(dropped)))
        self._key_set = key_set
        self._fetched_at = self._clock()
        self._is_last_attempt_failed = False
        self.generation += 1
        logger.info("jwks_fetched kids=%s", ",".join(safe_kid(kid) for kid in sorted(key_set.keys)))

    def _record_failure(self, exc: Exception) -> None:
        if isinstance(exc, (JwksFetchError, InvalidJwks)):
            reason = str(exc)  # short texts written in this package
        else:
            # Not expected (an invalid URL, a TLS setup error, a bug). Its
            # message is not ours, so only its type is logged.
            reason = f"unexpected_{type(exc).__name__}"
        self._is_last_attempt_failed = True
        state = "serving stale keys" if self._key_set is not None else "no keys held"
        logger.warning("jwks_fetch_failed reason=%s url=%s state=%s", reason, self._url, state)

    @contextmanager
    def _fetch_attempt(self) -> Iterator[None]:
        """Bookkeeping shared by both faces: any failure ends in stale keys or a 503, never raises."""
        try:
            yield
        except Exception as exc:
            self._record_failure(exc)
        finally:
            self._last_attempt_at = self._clock()

    def _get_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Built once: loading the CA bundle costs milliseconds per fetch otherwise.
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    # -- async face -----------------------------------------------------------

    async def _fetch_and_store(self) -> None:
        with self._fetch_attempt():
            body = await fetch_jwks(
                self._url,
                time_limit=self._timeout,
                max_bytes=self._max_bytes,
                verify=self._get_ssl_context(),
                transport=self._async_transport,
            )
            self._store(body)

    async def refresh(self) -> None:
        """Fetch now, joining a fetch already under way on this event loop."""
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._fetch_and_store())
            self._inflight = task
        # Shielded: a caller that disconnects must not cancel the fetch others await.
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and current.cancelling() == 0:
                # aclose() stopped the shared fetch, not this caller: it gets
                # the usual answer (stale keys or a 503), not a cancellation.
                return
            raise

    async def get_key(self, kid: str) -> RS256PublicKey:
        """The key for ``kid``, fetching first if the policy allows and calls for it."""
        key = self._fresh_key(kid)
        if key is not None:
            return key
        if self._needs_fetch(kid):
            await self.refresh()
        return self._key_after_fetch(kid)

    # -- sync face ------------------------------------------------------------

    def _get_sync_client(self) -> httpx.Client:
        if self._sync_client is None:
            self._sync_client = httpx.Client(
                follow_redirects=False,
                verify=self._get_ssl_context(),
                transport=self._sync_transport,
            )
        return self._sync_client

    def refresh_sync(self) -> None:
        """Blocking twin of :meth:`refresh`; one thread fetches while the others wait."""
        with self._sync_lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        with self._fetch_attempt():
            body = fetch_jwks_sync(
                self._url,
                time_limit=self._timeout,
                max_bytes=self._max_bytes,
                client=self._get_sync_client(),
            )
            self._store(body)

    def get_key_sync(self, kid: str) -> RS256PublicKey:
        """Blocking twin of :meth:`get_key`."""
        key = self._fresh_key(kid)
        if key is not None:
            return key
        if self._needs_fetch(kid):
            with self._sync_lock:
                # Another thread may have fetched while we waited for the lock.
                if self._needs_fetch(kid):
                    self._refresh_locked()
        return self._key_after_fetch(kid)

    # -- lifecycle ------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait out a fetch under way and release HTTP resources."""
        task = self._inflight
        if task is not None and not task.done():
            try:
                task.cancel()
                await task
            except asyncio.CancelledError:
                pass
        self.close()

    def close(self) -> None:
        """Release the sync HTTP client, if one was made."""
        client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()
