"""When the JWKS is fetched, and which key answers a kid.

The policy, shared by the sync and async faces:

* Nobody waits for a refresh while keys are held. When ``jwks_ttl_seconds``
  have passed, the next request starts one refresh in the background (a task
  on its event loop, or a thread for ``verify_sync``) and is verified with the
  held keys meanwhile: stale-while-revalidate.
* A request waits on a fetch only when it must: nothing is held yet, or its
  kid is unknown (keys rotate). Concurrent waiters share one fetch (per event
  loop for ``verify``, per process for ``verify_sync``), and every fetch ends
  within ``http_timeout_seconds``.
* An unknown kid triggers at most one fetch per
  ``jwks_refetch_cooldown_seconds``: a client spraying random kids must not
  turn into a stream of fetches (the "penalty box").
* A failed refresh keeps the keys already held (stale-if-error) and is not
  retried before the cooldown passes. With nothing held, requests fail fast
  with :class:`JwksUnavailable` (503) instead of each waiting on the network.
  Any failure of a fetch, expected or not, ends this way and never as a 500.
* A refresh that drops a key drops it at once: tokens signed with it stop
  verifying, cached ones included.
* A background refresh that has not ended well after its deadline is
  presumed lost (its event loop closed under it, say), and the next request
  starts another: a lost refresh cannot leave keys unrefreshed for ever.
* While nothing is held, :meth:`JwksCache.keep_trying` (started by the
  verifier's ``start()``/``prefetch()``) fetches again in the background with
  back-off, so readiness recovers without traffic: a ``/readyz`` gate that
  keeps requests away would otherwise keep a pool unready for good.
* Keys handed in as a JWKS document (``jwks_file`` or in code) are held from
  the start, as if just fetched, so the first request needs no network.

Which of these applies to a request is decided by :class:`RefreshPolicy`, a
pure function of the times involved; this class does the I/O and keeps the state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import JwksUnavailable, KeyIdUnknown
from ._http import JwksFetchError, fetch_jwks, fetch_jwks_sync, shared_ssl_context
from ._jose import RS256PublicKey
from ._jwks import InvalidJwks, KeySet, parse_jwks, safe_kid
from ._observe import Observer
from ._refresh_policy import KeyAction, RefreshPolicy, RefreshState
from ._settings import AuthSettings

if TYPE_CHECKING:
    import httpx  # imported once a fetch is due: it costs about 0.1 s of start-up

__all__ = ["JwksCache", "JwksDocument", "KeyStatus"]

logger = logging.getLogger("siot_authz.jwks")

#: A JWKS handed in rather than fetched: the parsed JSON object, or its text.
JwksDocument = Mapping[str, Any] | str | bytes

# How long past its own deadline a background refresh may run before it is
# presumed lost and another may start.
_LOST_REFRESH_GRACE_SECONDS = 1.0
# Back-off of the background retries while no keys are held: first delay, then doubled up to the cap.
_RETRY_FIRST_DELAY_SECONDS = 0.5
_RETRY_MAX_DELAY_SECONDS = 30.0


# What to do about a refused document, where the reason's code alone does not say.
_HINTS = {
    "jwks_holds_private_key_material": (
        " (it contains private key members such as 'd' or a symmetric 'k': that key is leaked and"
        " must be rotated; a JWKS for verification holds public members only)"
    ),
}


@dataclass(frozen=True)
class KeyStatus:
    """What a pool's key cache holds now, for health checks and metrics."""

    has_keys: bool
    key_count: int
    #: Seconds since the held keys were fetched (or handed in); None when none are held.
    age_seconds: float | None
    is_stale: bool
    is_refreshing: bool
    #: Why the last fetch failed (a short code), or None if it succeeded or none was tried.
    last_error: str | None
    #: Seconds since that failure; None without one.
    last_error_age_seconds: float | None


def _document_bytes(document: JwksDocument) -> bytes:
    if isinstance(document, bytes):
        return document
    if isinstance(document, str):
        return document.encode("utf-8")
    return json.dumps(dict(document)).encode("utf-8")


class JwksCache:
    """Holds the current :class:`KeySet` and decides when to fetch a new one."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        jwks: JwksDocument | None = None,
        jwks_source: str | None = None,
        observer: Observer | None = None,
    ) -> None:
        """``jwks`` is a document to hold from the start; ``jwks_source`` names it in errors.

        ``clock`` is monotonic and drives the TTL, the cooldown and the
        refresh deadlines; tests pass a fake one.
        """
        self._pool_id = settings.user_pool_id
        self._url = settings.resolved_jwks_url
        self._ttl = settings.jwks_ttl_seconds
        self._timeout = settings.http_timeout_seconds
        self._max_bytes = settings.max_jwks_bytes
        self._policy = RefreshPolicy(
            ttl=settings.jwks_ttl_seconds,
            cooldown=settings.jwks_refetch_cooldown_seconds,
            lost_after=settings.http_timeout_seconds + _LOST_REFRESH_GRACE_SECONDS,
        )
        self._async_transport = async_transport
        self._sync_transport = sync_transport
        self._clock = clock
        self._observer = observer

        self._key_set: KeySet | None = None
        self._fetched_at = 0.0
        self._last_attempt_at: float | None = None
        self._last_error: str | None = None
        self._is_last_attempt_failed = False
        self._inflight: asyncio.Task[None] | None = None
        self._background_started_at: float | None = None
        self._retrying: asyncio.Task[None] | None = None
        # Strong references to background tasks: the loop keeps only weak ones.
        self._background_tasks: set[asyncio.Task[None]] = set()
        self._sync_lock = threading.Lock()
        self._sync_client: httpx.Client | None = None
        self._ssl_context: ssl.SSLContext | None = None
        #: Incremented when a fetch brings a different key set; lets callers notice it.
        self.generation = 0

        if jwks is not None:
            try:
                self._store(_document_bytes(jwks))
            except InvalidJwks as exc:
                source = jwks_source or f"the JWKS handed in for {self._pool_id}"
                hint = _HINTS.get(str(exc), "")
                raise ValueError(f"{source} is unusable: {exc}{hint}") from None

    # -- state queries (cheap; used on the verified-token fast path) ----------

    def is_fresh(self) -> bool:
        """True while the held key set is within its TTL."""
        return self._key_set is not None and self._clock() - self._fetched_at < self._ttl

    def status(self) -> KeyStatus:
        """A snapshot of what is held and how the last fetch went."""
        now = self._clock()
        key_set = self._key_set
        last_attempt = self._last_attempt_at
        failed = self._is_last_attempt_failed and last_attempt is not None
        return KeyStatus(
            has_keys=key_set is not None,
            key_count=len(key_set.keys) if key_set is not None else 0,
            age_seconds=now - self._fetched_at if key_set is not None else None,
            is_stale=key_set is not None and now - self._fetched_at >= self._ttl,
            is_refreshing=self._policy.is_refresh_running(self._refresh_state(), now)
            or self._is_fetch_in_flight(),
            last_error=self._last_error if failed else None,
            last_error_age_seconds=now - last_attempt if failed and last_attempt is not None else None,
        )

    def _is_fetch_in_flight(self) -> bool:
        # A fetch task on a loop closed under it will never end: it is not in flight.
        task = self._inflight
        return task is not None and not task.done() and not task.get_loop().is_closed()

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

    def _refresh_state(self) -> RefreshState:
        return RefreshState(
            fetched_at=self._fetched_at if self._key_set is not None else None,
            last_attempt_at=self._last_attempt_at,
            is_last_attempt_failed=self._is_last_attempt_failed,
            refresh_started_at=self._background_started_at,
        )

    def _action(self, kid: str) -> KeyAction:
        key_set = self._key_set
        is_kid_held = key_set is not None and kid in key_set.keys
        return self._policy.decide(self._refresh_state(), self._clock(), is_kid_held=is_kid_held)

    def held_key_or_refresh(self, kid: str) -> RS256PublicKey | None:
        """The held key for ``kid`` (fresh or stale), starting a background refresh if one is due.

        Never waits on the network; None when no key with this kid is held.
        """
        key_set = self._key_set
        if key_set is None:
            return None
        key = key_set.get(kid)
        # The policy's first row, inline: a held kid within the TTL is simply
        # used. This runs on every verified-cache hit, so it must stay cheap.
        if (
            key is not None
            and self._clock() - self._fetched_at >= self._ttl
            and self._action(kid) is KeyAction.USE_HELD_AND_REFRESH
        ):
            self._start_background_refresh()
        return key

    def _start_background_refresh(self) -> None:
        self._background_started_at = self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # verify_sync, with no event loop in this thread: a daemon thread
            # fetches, and the caller goes on with the held keys.
            threading.Thread(
                target=self._refresh_in_thread, name="siot-authz-jwks-refresh", daemon=True
            ).start()
            return
        task = loop.create_task(self._refresh_in_task())
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    async def _refresh_in_task(self) -> None:
        try:
            await self.refresh()
        finally:
            self._background_started_at = None

    def _refresh_in_thread(self) -> None:
        # Not blocking: a thread already fetching is doing this work. The
        # mark stays set until that fetch's deadline lets it lapse, so cache
        # hits meanwhile do not start a thread each.
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._refresh_locked()
        finally:
            self._sync_lock.release()
            self._background_started_at = None

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
        # Unchanged JWKs give back the same key objects, so an unchanged set
        # keeps its generation and the verified cache is not purged for nothing.
        is_changed = previous is None or dict(previous.keys) != dict(key_set.keys)
        self._key_set = key_set
        self._fetched_at = self._clock()
        self._is_last_attempt_failed = False
        self._last_error = None
        if is_changed:
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
        self._last_error = reason
        state = "serving stale keys" if self._key_set is not None else "no keys held"
        logger.warning("jwks_fetch_failed reason=%s url=%s state=%s", reason, self._url, state)

    @contextmanager
    def _fetch_attempt(self) -> Iterator[None]:
        """Bookkeeping shared by both faces: any failure ends in stale keys or a 503, never raises."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except Exception as exc:
            outcome = "invalid" if isinstance(exc, InvalidJwks) else "error"
            self._record_failure(exc)
        finally:
            self._last_attempt_at = self._clock()
            if self._observer is not None:
                self._observer.jwks_fetch(self._pool_id, outcome, time.perf_counter() - started)

    def _get_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = shared_ssl_context()
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
        """The key for ``kid``; waits on a fetch only when nothing is held or the kid is unknown."""
        key = self.held_key_or_refresh(kid)
        if key is not None:
            return key
        if self._action(kid) is KeyAction.WAIT_FOR_FETCH:
            await self.refresh()
        return self._key_after_fetch(kid)

    def keep_trying(self) -> None:
        """While no keys are held, fetch again in the background with back-off, on the running loop.

        Readiness then recovers once the endpoint does, with no request
        needed. Does nothing when keys are held or a retry loop already runs
        on this loop; :meth:`aclose` stops it.
        """
        loop = asyncio.get_running_loop()
        running = self._retrying
        if self._key_set is not None or (
            running is not None and not running.done() and running.get_loop() is loop
        ):
            return
        task = loop.create_task(self._retry_until_held())
        self._retrying = task
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    async def _retry_until_held(self) -> None:
        delay = _RETRY_FIRST_DELAY_SECONDS
        while self._key_set is None:
            await asyncio.sleep(delay)
            if self._key_set is None:
                await self.refresh()
            delay = min(delay * 2, _RETRY_MAX_DELAY_SECONDS)

    # -- sync face ------------------------------------------------------------

    def _get_sync_client(self) -> httpx.Client:
        if self._sync_client is None:
            import httpx

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
        key = self.held_key_or_refresh(kid)
        if key is not None:
            return key
        if self._action(kid) is KeyAction.WAIT_FOR_FETCH:
            with self._sync_lock:
                # Another thread may have fetched while we waited for the lock.
                if self._action(kid) is KeyAction.WAIT_FOR_FETCH:
                    self._refresh_locked()
        return self._key_after_fetch(kid)

    # -- lifecycle ------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop fetches under way and release HTTP resources.

        The cache stays usable: a later request fetches again, and an
        application whose lifespan runs twice keeps refreshing its keys.
        """
        loop = asyncio.get_running_loop()
        tasks = [
            task for task in (self._inflight, self._retrying, *self._background_tasks) if task is not None
        ]
        for task in tasks:
            if not task.done() and task.get_loop() is loop:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self.close()

    def close(self) -> None:
        """Release the sync HTTP client, if one was made (a later fetch makes another)."""
        client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()
