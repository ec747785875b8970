"""The verification pipeline: header value in, :class:`Principal` or :class:`AuthError` out.

The order is fixed and each step trusts only what the steps before it proved:

1. size cap, on the raw value, before anything is decoded;
2. strip an optional ``Bearer`` prefix;
3. the verified-token cache (a digest of the signed part and the exact
   signature segment; a hit must be unexpired and its key still held under
   its kid), then step 9 for a hit;
4. strict parsing, and the header: ``alg`` exactly RS256, a string ``kid``, no ``crit``;
5. route to a pool by the exact, unverified ``iss`` (an unknown one is refused here, before any fetch);
6. the key for that kid from that pool's key cache;
7. the RS256 signature, with the algorithm fixed by us;
8. that pool's claim rules, which build the principal, then the application's ``check``;
9. revocation, from this process's in-memory mirror;
10. remember the result in that pool's verified-token cache.

Claims are read before step 7 only as parsed JSON, and only ``iss`` to pick
a pool; no rule trusts them until the signature has verified.

There is one pipeline for every face. Steps 1 to 5 (and 9 for a cache hit)
never wait. Steps 6 to 10 wait only for a key that is not held yet (step 6)
and for the application check's answer (step 8). When the key is held and
there is no check, which is every new token of a running service, they run
at once, in the same functions (:meth:`TokenVerifier._signed` and
:meth:`TokenVerifier._accepted`), with no await and no generator. Otherwise
they are a generator that yields what it must wait for and is handed back
how the wait ended. ``verify`` awaits each wait and ``verify_sync`` blocks on
it; nothing else differs, so a further face (the Lambda one calls
``verify_sync``) reuses the pipeline instead of copying it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._errors import (
    AuthError,
    CheckFailed,
    CheckUnavailable,
    InvalidToken,
    JwksUnavailable,
    MissingToken,
    RevocationUnavailable,
    SignatureInvalid,
    TokenRevoked,
    TokenTooLarge,
)
from ._health import AuthHealth, PoolHealth
from ._jose import RS256PublicKey
from ._key_cache import JwksCache, JwksDocument
from ._observe import Observer
from ._pools import Pool, PoolRouter
from ._principal import Principal
from ._revoking import revocation_for
from ._settings import AuthSettings, as_pool_list
from ._token import ParsedToken, parse_token, strip_bearer
from ._verified_cache import VerifiedTokenCache
from .revocation import MemoryRevocations, Revocation, RevocationBackend

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import httpx  # imported by the key cache once a fetch is due

__all__ = ["Check", "TokenVerifier"]

logger = logging.getLogger("siot_authz")

#: The application's own rule: given the verified principal, True accepts; False or an AuthError refuses.
Check = Callable[[Principal], bool | Awaitable[bool]]

_cache_key_hash = VerifiedTokenCache.key_hash

# Room for "Bearer " and stray whitespace around a token of the maximum size.
_HEADER_SLACK = 64

#: How long a check may take before the request gets 503 check_unavailable.
DEFAULT_CHECK_TIMEOUT_SECONDS = 5.0
# Threads for sync checks on the async face: enough for a slow database, and
# a hard bound when it hangs (queued checks then time out with a 503).
_CHECK_THREADS = 8


def _safe(value: str) -> str:
    """A log-safe rendering of an attacker-chosen short string (kid, iss, alg)."""
    return repr(value[:64]) if len(value) <= 64 else repr(value[:64]) + "..."


# What the pipeline waits for; each face waits in its own way (await or block).


class _KeyWanted(NamedTuple):
    """The key for ``kid`` from a pool's key cache."""

    keys: JwksCache
    kid: str


class _CheckWanted(NamedTuple):
    """The application check's answer for a verified principal."""

    principal: Principal


_Wanted = _KeyWanted | _CheckWanted
#: How a wait ended: its answer, or what it raised (then the answer is None).
_Outcome = tuple[Any, BaseException | None]


class _Steps:
    """The rest of the pipeline for one new token: what it waits for now, until it ends with a principal.

    Each face waits in its own way and hands the outcome to :meth:`resume`;
    a refusal raises out of it.
    """

    __slots__ = ("_pipeline", "principal", "wanted")

    def __init__(self, pipeline: Generator[_Wanted, Any, Principal]) -> None:
        self._pipeline = pipeline
        self.principal: Principal
        self.wanted: _Wanted | None = next(pipeline)

    def resume(self, answer: Any, failure: BaseException | None) -> None:
        """Hand in how the wait ended: an answer, or what it raised."""
        pipeline = self._pipeline
        try:
            self.wanted = pipeline.send(answer) if failure is None else pipeline.throw(failure)
        except StopIteration as done:
            self.wanted = None
            self.principal = done.value


class _CheckAborted(Exception):
    """The check ended in a BaseException that is not the request's own (a cancellation, GeneratorExit, SystemExit).

    Carried as an ordinary exception, so it crosses threads and event loops
    as data, and refused as a check that raised.
    """

    def __init__(self, exception_type: str) -> None:
        super().__init__(exception_type)
        self.exception_type = exception_type


def _call_in_thread(check: Check, principal: Principal) -> object:
    """Run a sync check in a worker thread; nothing but an ordinary exception goes back to the loop."""
    try:
        return check(principal)
    except Exception:
        raise
    except BaseException as exc:
        raise _CheckAborted(type(exc).__name__) from None


class TokenVerifier:
    """Verifies Cognito JWTs for one or several user pools; the same object serves async and sync callers.

    Create one per process and share it: it holds each pool's JWKS cache and
    verified-token cache, and the revocation mirror.
    """

    def __init__(
        self,
        settings: AuthSettings | Sequence[AuthSettings],
        *,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        key_timer: Callable[[], float] = time.monotonic,
        jwks: Mapping[str, JwksDocument] | None = None,
        check: Check | None = None,
        check_timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
        revocations: RevocationBackend | None = None,
        observer: Observer | None = None,
        refusal_log_level: int = logging.INFO,
    ) -> None:
        """Build the pipeline.

        ``settings`` is one pool's settings or a sequence of them. ``jwks``
        maps a user pool id to a JWKS document to serve from the first
        request on, with no fetch. ``check`` is run once per token after
        every built-in rule (see :data:`Check`); if it has not answered
        within ``check_timeout_seconds`` the request gets 503
        ``check_unavailable``. ``revocations`` defaults to an in-process
        :class:`MemoryRevocations`. Refusals are logged on the ``siot_authz``
        logger at ``refusal_log_level``; key and revocation outages at WARNING.

        ``clock`` (wall time) drives the claim rules and revocations;
        ``key_timer`` (monotonic) the key caches' TTL and cooldown. Tests
        pass fakes to move time without sleeping.
        """
        if not check_timeout_seconds > 0:
            raise ValueError("check_timeout_seconds must be positive")
        pool_settings = as_pool_list(settings)
        documents = dict(jwks or {})
        unknown = set(documents) - {pool.user_pool_id for pool in pool_settings}
        if unknown:
            raise ValueError(f"jwks names pools that are not configured: {', '.join(sorted(unknown))}")
        self._router = PoolRouter(
            [
                Pool(
                    pool,
                    async_transport=async_transport,
                    sync_transport=sync_transport,
                    jwks=documents.get(pool.user_pool_id),
                    observer=observer,
                    clock=clock,
                    key_clock=key_timer,
                )
                for pool in pool_settings
            ]
        )
        self.pools: tuple[Pool, ...] = self._router.pools
        # Per pool, what a cache lookup touches, bound once rather than on every request.
        self._caches = tuple(
            (pool.verified.hot_entries, pool.verified.cold_entries, pool.verified.get, pool.is_key_trusted)
            for pool in self.pools
        )
        self.revocations: RevocationBackend = revocations if revocations is not None else MemoryRevocations()
        self._revoked = self.revocations.mirror
        # ``can_fail_closed`` is part of the backend protocol. A backend written
        # before it was (a third-party one, or a test stub) lacks it: such a
        # backend is asked on every request, which is the safe side.
        self._may_fail_closed = getattr(self.revocations, "can_fail_closed", True) is not False
        self._check = check
        self._is_async_check = _is_coroutine_callable(check)
        self._check_timeout = check_timeout_seconds
        self._check_threads: ThreadPoolExecutor | None = None
        self._observer = observer
        self._clock = clock
        self._refusal_log_level = refusal_log_level
        self._max_header_length = max(pool.max_token_bytes for pool in pool_settings) + _HEADER_SLACK
        self._max_token_bytes = self._max_header_length - _HEADER_SLACK

    # -- one-pool conveniences --------------------------------------------------

    @property
    def settings(self) -> AuthSettings:
        """The settings of the first (often only) configured pool."""
        return self.pools[0].settings

    @property
    def keys(self) -> JwksCache:
        """The key cache of the only configured pool; with several, use ``pools[i].keys``."""
        if len(self.pools) != 1:
            raise AttributeError("this verifier has several pools; use verifier.pools[i].keys")
        return self.pools[0].keys

    # -- the faces: they differ only in how they wait ----------------------------------

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` (raw or ``Bearer <token>``) and return who sent it.

        Raises an :class:`AuthError` subclass and nothing else; a cancellation
        of the calling task (a client that went away) still propagates.
        """
        found = self._cached_or_routed(token)
        if type(found) is not _Steps:
            return found  # type: ignore[return-value]  # a cache hit, or a new token with nothing to wait for
        while found.wanted is not None:
            found.resume(*await self._wait(found.wanted))
        return found.principal

    def verify_sync(self, token: str) -> Principal:
        """Blocking face of :meth:`verify`, for Lambda handlers, scripts and WSGI apps.

        Fetches keys with a blocking HTTP client when it needs them (never
        when they were handed in). Do not call it from inside a running event
        loop; use :meth:`verify` there. An async ``check`` is run to
        completion on a private event loop.
        """
        found = self._cached_or_routed(token)
        if type(found) is not _Steps:
            return found  # type: ignore[return-value]  # a cache hit, or a new token with nothing to wait for
        while found.wanted is not None:
            found.resume(*self._wait_sync(found.wanted))
        return found.principal

    async def _wait(self, wanted: _Wanted) -> _Outcome:
        """Await what the pipeline wants; what it raised is handed back too, for the pipeline to judge."""
        try:
            if isinstance(wanted, _KeyWanted):
                return await wanted.keys.get_key(wanted.kid), None
            return await self._within_check_timeout(self._start_check_async(wanted.principal)), None
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if isinstance(wanted, _CheckWanted) and not (task is not None and task.cancelling()):
                return None, _CheckAborted("CancelledError")  # the check's own, not the request's
            return None, exc  # the request itself is being cancelled (a client went away)
        except BaseException as exc:
            return None, exc

    def _wait_sync(self, wanted: _Wanted) -> _Outcome:
        """Block on what the pipeline wants; what it raised is handed back too, for the pipeline to judge."""
        try:
            if isinstance(wanted, _KeyWanted):
                return wanted.keys.get_key_sync(wanted.kid), None
            result: object = self._check_or_fail()(wanted.principal)
            if inspect.isawaitable(result):
                result = asyncio.run(self._within_check_timeout(_awaited(result)))
            return result, None
        except asyncio.CancelledError:
            return None, _CheckAborted("CancelledError")  # no request task here: only the check's own
        except BaseException as exc:
            return None, exc

    # -- pipeline steps -------------------------------------------------------

    def _cached_or_routed(self, token: str) -> Principal | _Steps:
        """Steps 1 to 5, then 6 to 10 when they need no wait: a principal, or the rest of the pipeline to run.

        ``isinstance(..., Principal)`` is slow (pydantic's metaclass is an
        ABCMeta), so the faces tell the two answers apart by ``type() is _Steps``.
        """
        cache_hit = False
        pool_id = ""
        try:
            if not isinstance(token, str):
                raise MissingToken() if token is None else InvalidToken()
            if len(token) > self._max_header_length:
                raise TokenTooLarge()
            token = strip_bearer(token)
            # Encoded and split once: for the cache key (any string has one,
            # even one holding a lone surrogate, which parsing refuses later),
            # for parsing, where an ASCII token's bytes are the same, and for
            # the RSA check, which needs the very digest the key is made of.
            signed, _, signature = token.encode("utf-8", "surrogatepass").rpartition(b".")
            digest = _cache_key_hash(signed).digest()  # VerifiedTokenCache.key_of, inline
            # Most tokens are repeats: look in the pool caches first. A membership
            # test per pool (a C-level dict lookup) finds the one to ask, so a
            # hit costs one full lookup however many pools there are.
            for hot, cold, cached, is_key_trusted in self._caches:
                if digest in hot or digest in cold:
                    principal = cached(digest, is_key_trusted, signature)
                    if principal is not None:
                        # A hit counts as a hit whether it is then accepted or refused as revoked.
                        cache_hit = True
                        pool_id = principal.user_pool_id
                        self._refuse_if_revoked(principal)
                        observer = self._observer
                        if observer is not None:  # inline: this is the hot path
                            observer.verification(pool_id, None, True)
                        return principal
                    break
            parsed = parse_token(token, self._max_token_bytes, (signed, signature))
            pool = self._router.route(parsed.claims)
            # Each pool's own cap, once the token is routed to it: the cap above is the largest of them.
            if len(token) > pool.settings.max_token_bytes:
                raise TokenTooLarge()
            # From here on a refusal is reported under the pool the token was routed to.
            pool_id = pool.user_pool_id
            # Step 6 as the key cache's own first step on either face, without
            # the coroutine or the blocking call around it: a held key (fresh
            # or stale; a due refresh starts in the background) is used as it is.
            key = pool.keys.held_key_or_refresh(parsed.kid)
            if key is not None and self._check is None:
                # Nothing to wait for: steps 7 to 10 at once.
                return self._accepted(parsed, digest, pool, key, self._signed(parsed, digest, pool, key))
        except Exception as exc:
            refusal = self._refusal(exc, pool_id, cache_hit)
        else:
            # A token that missed the verified cache travels on as four values: parsed,
            # the digest it will be cached under, the pool it was routed to, and its key if held.
            return _Steps(self._verify_new(parsed, digest, pool, key))
        # Raised outside the except block, so the refusal does not carry the
        # original exception (which might quote token bytes) as its context.
        raise refusal

    def _verify_new(
        self, parsed: ParsedToken, digest: bytes, pool: Pool, key: RS256PublicKey | None
    ) -> Generator[_Wanted, Any, Principal]:
        """Steps 6 to 10 that must wait: for a key not held yet, or for the check; yields what it waits for."""
        try:
            if key is None:
                key = yield _KeyWanted(pool.keys, parsed.kid)
            principal = self._signed(parsed, digest, pool, key)
            if self._check is not None:
                yield from self._checked(principal)
            return self._accepted(parsed, digest, pool, key, principal)
        except Exception as exc:
            refusal = self._refusal(exc, pool.user_pool_id, False)
        raise refusal

    def _signed(self, parsed: ParsedToken, digest: bytes, pool: Pool, key: RS256PublicKey) -> Principal:
        """Steps 7 and 8: the signature under the pool's key, then the pool's claim rules.

        ``digest`` is the SHA-256 of ``parsed.signing_input``: the cache key, made of the same bytes.
        """
        if not key.verify_digest(digest, parsed.signature):
            raise SignatureInvalid(kid=parsed.kid)
        return pool.rules.check(parsed.claims, self._clock(), parsed.containers)

    def _accepted(
        self, parsed: ParsedToken, digest: bytes, pool: Pool, key: RS256PublicKey, principal: Principal
    ) -> Principal:
        """Steps 9 and 10, after the check (if any) passed: revocation, then remember and report."""
        self._refuse_if_revoked(principal)
        # exp as the rules proved it: a number, in range.
        pool.remember(
            digest, principal, parsed.kid, key, parsed.claims["exp"], signature=parsed.signature_segment
        )
        observer = self._observer
        if observer is not None:
            observer.verification(pool.user_pool_id, None, False)
        return principal

    def _checked(self, principal: Principal) -> Generator[_Wanted, Any, None]:
        """Step 8's application check: passes, or raises the refusal its answer means."""
        crash = None
        try:
            result = yield _CheckWanted(principal)
            # Anything but a true value refuses: a check that forgets to return
            # fails closed, loudly, instead of letting everyone in.
            if result:
                return
        except MissingToken:
            pass  # a token was sent: "no credentials" would let auto_error=False routes in anonymously
        except AuthError:
            raise
        except _CheckAborted as exc:
            crash = exc.exception_type
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise  # the request's own cancellation, or the operator's Ctrl-C
        except BaseException as exc:
            # SystemExit, GeneratorExit from a sync check under verify_sync: a
            # check must end neither the process nor the request.
            crash = type(exc).__name__
        # Raised outside the except block, so the refusal carries no context from the check.
        raise CheckFailed() if crash is None else _check_crashed(crash)

    def _check_or_fail(self) -> Check:
        check = self._check
        assert check is not None
        return check

    async def _start_check_async(self, principal: Principal) -> object:
        """Start the check without blocking the event loop: a sync check runs in a worker thread."""
        check = self._check_or_fail()
        if self._is_async_check:
            result: object = check(principal)
        else:
            run = functools.partial(contextvars.copy_context().run, _call_in_thread, check, principal)
            result = await asyncio.get_running_loop().run_in_executor(self._check_executor(), run)
        return await result if inspect.isawaitable(result) else result

    async def _within_check_timeout(self, answer: Awaitable[object]) -> object:
        try:
            async with asyncio.timeout(self._check_timeout) as deadline:
                return await answer
        except TimeoutError:
            if not deadline.expired():
                raise  # the check's own TimeoutError: a crash, not our deadline
        logger.warning("custom_check_timed_out after=%ss", self._check_timeout)
        raise CheckUnavailable()

    def _check_executor(self) -> ThreadPoolExecutor:
        if self._check_threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self._check_threads = ThreadPoolExecutor(_CHECK_THREADS, thread_name_prefix="siot-authz-check")
        return self._check_threads

    def _refuse_if_revoked(self, principal: Principal) -> None:
        # A local lookup only: the mirror is kept current in the background.
        revoked = self._revoked
        if revoked.has_entries and revoked.covers(principal):
            raise TokenRevoked(pool=principal.user_pool_id)
        if self._may_fail_closed and self.revocations.is_failed_closed():
            raise RevocationUnavailable(pool=principal.user_pool_id)

    # -- reporting --------------------------------------------------------------

    def _refusal(self, exc: Exception, pool_id: str, cache_hit: bool) -> AuthError:
        """Report how a verification ended in ``exc`` and return the AuthError to raise for it."""
        if isinstance(exc, AuthError):
            self._report_refusal(exc, pool_id, cache_hit)
            return exc
        # A bug must still end as a refusal, not a 500. Only the exception's
        # type is logged: its message could quote token bytes.
        logger.error("token_verification_bug type=%s", type(exc).__name__)
        error = InvalidToken()
        if self._observer is not None:
            self._observer.verification(pool_id, error.code, False)
        return error

    def _report_refusal(self, error: AuthError, pool_id: str, cache_hit: bool) -> None:
        pool_id = pool_id or error.log_context.get("pool", "")
        context = "".join(
            f" {name}={_safe(value)}" for name, value in error.log_context.items() if name != "pool"
        )
        pool = f" pool={pool_id}" if pool_id else ""
        if isinstance(error, JwksUnavailable):
            # An outage on our side, not a bad token: say so, loudly.
            logger.warning(
                "keys_unavailable code=%s%s: no signing keys held and the fetch failed", error.code, pool
            )
        elif isinstance(error, RevocationUnavailable):
            logger.warning(
                "revocation_unavailable code=%s%s: the revocation list is unconfirmed", error.code, pool
            )
        else:
            logger.log(self._refusal_log_level, "token_refused code=%s%s%s", error.code, pool, context)
        if self._observer is not None:
            self._observer.verification(pool_id, error.code, cache_hit)

    # -- health -------------------------------------------------------------------

    def health(self) -> AuthHealth:
        """Whether every pool holds keys (and how old), the last fetch errors, and the revocation state."""
        pools = tuple(PoolHealth(pool.user_pool_id, pool.keys.status()) for pool in self.pools)
        revocation = self.revocations.status()
        is_ready = all(pool.keys.has_keys for pool in pools) and revocation.state in ("ok", "degraded")
        return AuthHealth(is_ready=is_ready, pools=pools, revocation=revocation)

    # -- revocation -----------------------------------------------------------------

    def _revocation(
        self,
        kind: Literal["user", "session"],
        user_pool_id: str,
        subject: str,
        before: float | datetime | None,
    ) -> Revocation:
        pool = self._router.by_id.get(user_pool_id)
        if pool is None:
            raise ValueError(f"user pool {user_pool_id!r} is not configured")
        return revocation_for(pool.settings, kind, subject, before=before, clock=self._clock)

    async def revoke_user(
        self, user_pool_id: str, sub: str, *, before: float | datetime | None = None
    ) -> Revocation:
        """Refuse every token of user ``sub`` issued before ``before`` (default: now), in every process.

        What Cognito's GlobalSignOut, disabling a user, or removing them from
        a team should be followed by. The pool's leeway is added to
        ``before``, since an ``iat`` that far ahead of this host's clock is
        accepted: the entry's ``before`` is the boundary enforced. Raises
        :class:`~siot_authz.revocation.RevocationStoreUnavailable` when the
        shared store cannot record it.
        """
        entry = self._revocation("user", user_pool_id, sub, before)
        await self.revocations.add(entry)
        return entry

    def revoke_user_sync(
        self, user_pool_id: str, sub: str, *, before: float | datetime | None = None
    ) -> Revocation:
        """Blocking twin of :meth:`revoke_user`."""
        entry = self._revocation("user", user_pool_id, sub, before)
        self.revocations.add_sync(entry)
        return entry

    async def revoke_session(self, user_pool_id: str, origin_jti: str) -> Revocation:
        """Refuse every token issued from one refresh token (its ``origin_jti``), as RevokeToken does for new ones."""
        entry = self._revocation("session", user_pool_id, origin_jti, None)
        await self.revocations.add(entry)
        return entry

    def revoke_session_sync(self, user_pool_id: str, origin_jti: str) -> Revocation:
        """Blocking twin of :meth:`revoke_session`."""
        entry = self._revocation("session", user_pool_id, origin_jti, None)
        self.revocations.add_sync(entry)
        return entry

    async def revocation_entries(self) -> list[Revocation]:
        """Every live revocation, as the backend holds them."""
        return await self.revocations.entries()

    def revocation_entries_sync(self) -> list[Revocation]:
        """Blocking twin of :meth:`revocation_entries`."""
        return self.revocations.entries_sync()

    # -- lifecycle ------------------------------------------------------------------

    async def prefetch(self) -> None:
        """Fetch every pool's JWKS now, side by side, so the first request does not wait for it.

        Pools already holding fresh keys (a JWKS handed in) are skipped: a
        cold start with a document opens no socket, and on a host whose
        network drops packets it does not wait out the HTTP timeout.
        """
        await asyncio.gather(*(pool.keys.refresh() for pool in self.pools if not pool.keys.is_fresh()))
        # A pool still without keys keeps trying in the background, so readiness
        # recovers when its endpoint does, even with no request to trigger a fetch.
        for pool in self.pools:
            pool.keys.keep_trying()

    async def start(self) -> None:
        """Prefetch keys and load the revocation list; what an application's start-up should await."""
        await asyncio.gather(self.prefetch(), self.revocations.start())

    async def aclose(self) -> None:
        """Release network resources; the verifier must not be used afterwards."""
        await self.revocations.stop()
        for pool in self.pools:
            await pool.keys.aclose()
        self._stop_check_threads()

    def close(self) -> None:
        """Blocking twin of :meth:`aclose` for the key caches (an async revocation backend needs :meth:`aclose`)."""
        for pool in self.pools:
            pool.keys.close()
        self._stop_check_threads()

    def _stop_check_threads(self) -> None:
        # A later request makes new ones; a hung check's thread is left to end by itself.
        threads, self._check_threads = self._check_threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)


def _check_crashed(exception_type: str) -> CheckFailed:
    # A failing check is the application's bug or outage; the token is
    # refused, not answered with a 500, and the cause is logged by type.
    logger.error("custom_check_raised type=%s", exception_type)
    return CheckFailed()


async def _awaited(awaitable: Awaitable[object]) -> object:
    return await awaitable


def _is_coroutine_callable(check: object) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one."""
    if check is None or inspect.iscoroutinefunction(check):
        return check is not None
    return not inspect.isroutine(check) and inspect.iscoroutinefunction(type(check).__call__)
