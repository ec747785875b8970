"""The verification pipeline: header value in, :class:`Principal` or :class:`AuthError` out.

The order is fixed and each step trusts only what the steps before it proved:

1. size cap, on the raw value, before anything is decoded;
2. strip an optional ``Bearer`` prefix;
3. the verified-token cache (a digest of the whole token; a hit must be
   unexpired and its key still held under its kid), then step 9 for a hit;
4. strict parsing, and the header: ``alg`` exactly RS256, a string ``kid``, no ``crit``;
5. route to a pool by the exact, unverified ``iss`` (an unknown one is refused here, before any fetch);
6. the key for that kid from that pool's key cache;
7. the RS256 signature, with the algorithm fixed by us;
8. that pool's claim rules, which build the principal, then the application's ``check``;
9. revocation, from this process's in-memory mirror;
10. remember the result in that pool's verified-token cache.

Claims are read before step 7 only as parsed JSON, and only ``iss`` to pick
a pool; no rule trusts them until the signature has verified.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

from ._errors import (
    AuthError,
    CheckFailed,
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
from ._settings import AuthSettings, as_pool_list
from ._token import ParsedToken, parse_token, strip_bearer
from ._verified_cache import VerifiedTokenCache
from .revocation import MemoryRevocations, Revocation, RevocationBackend

if TYPE_CHECKING:
    import httpx  # imported by the key cache once a fetch is due

__all__ = ["Check", "TokenVerifier"]

logger = logging.getLogger("siot_authz")

#: The application's own rule: given the verified principal, True accepts; False or an AuthError refuses.
Check = Callable[[Principal], bool | Awaitable[bool]]

_digest = VerifiedTokenCache.digest

# Room for "Bearer " and stray whitespace around a token of the maximum size.
_HEADER_SLACK = 64


def _safe(value: str) -> str:
    """A log-safe rendering of an attacker-chosen short string (kid, iss, alg)."""
    return repr(value[:64]) if len(value) <= 64 else repr(value[:64]) + "..."


class _Unverified(NamedTuple):
    """A token that missed the verified cache: parsed, routed, with the digest it will be cached under."""

    parsed: ParsedToken
    digest: bytes
    pool: Pool


def _timestamp(moment: float | datetime | None, clock: Callable[[], float]) -> float:
    if moment is None:
        return clock()
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a revocation time must be timezone-aware")
        return moment.timestamp()
    if isinstance(moment, bool) or not isinstance(moment, (int, float)) or not math.isfinite(moment):
        raise ValueError("a revocation time must be a finite Unix time or an aware datetime")
    return float(moment)


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
        jwks: Mapping[str, JwksDocument] | None = None,
        check: Check | None = None,
        revocations: RevocationBackend | None = None,
        observer: Observer | None = None,
        refusal_log_level: int = logging.INFO,
    ) -> None:
        """Build the pipeline.

        ``settings`` is one pool's settings or a sequence of them. ``jwks``
        maps a user pool id to a JWKS document to serve from the first
        request on, with no fetch. ``check`` is run once per token after
        every built-in rule (see :data:`Check`). ``revocations`` defaults to
        an in-process :class:`MemoryRevocations`. Refusals are logged on the
        ``siot_authz`` logger at ``refusal_log_level``; key and revocation
        outages at WARNING.
        """
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
                )
                for pool in pool_settings
            ]
        )
        self.pools: tuple[Pool, ...] = self._router.pools
        self._caches = tuple(
            (pool.verified.hot_entries, pool.verified.cold_entries, pool) for pool in self.pools
        )
        self.revocations: RevocationBackend = revocations if revocations is not None else MemoryRevocations()
        self._revoked = self.revocations.mirror
        # Only a shared store can go unconfirmed; the in-process default never fails closed.
        self._may_fail_closed = bool(getattr(self.revocations, "can_fail_closed", True))
        self._check = check
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
        return self._single_pool().keys

    @keys.setter
    def keys(self, cache: JwksCache) -> None:
        self._single_pool().keys = cache

    def _single_pool(self) -> Pool:
        if len(self.pools) != 1:
            raise AttributeError("this verifier has several pools; use verifier.pools[i].keys")
        return self.pools[0]

    # -- the two faces -------------------------------------------------------------

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` (raw or ``Bearer <token>``) and return who sent it.

        Raises an :class:`AuthError` subclass and nothing else.
        """
        pool_id = ""
        cache_hit = False
        try:
            found = self._look_up(token)
            if isinstance(found, Principal):
                pool_id = found.user_pool_id
                cache_hit = True
                self._refuse_if_revoked(found)
                if self._observer is not None:
                    self._observer.verification(pool_id, None, True)
                return found
            pool_id = found.pool.user_pool_id
            key = await found.pool.keys.get_key(found.parsed.kid)
            principal = self._check_signature_and_claims(found, key)
            if self._check is not None:
                result = self._run_check(principal)
                if inspect.isawaitable(result):
                    result = await _awaited_check(result)
                self._check_passed(result)
            return self._finish(found, principal, key)
        except AuthError as error:
            self._refused(error, pool_id, cache_hit)
            raise
        except Exception as exc:
            bug = type(exc).__name__
        # Raised outside the except block, so the refusal does not carry the
        # original exception (which might quote token bytes) as its context.
        raise self._internal_error(bug, pool_id)

    def verify_sync(self, token: str) -> Principal:
        """Blocking twin of :meth:`verify`, for Lambda handlers, scripts and WSGI apps.

        Fetches keys with a blocking HTTP client when it needs them. Do not
        call it from inside a running event loop; use :meth:`verify` there.
        An async ``check`` is run to completion on a private event loop.
        """
        pool_id = ""
        cache_hit = False
        try:
            found = self._look_up(token)
            if isinstance(found, Principal):
                pool_id = found.user_pool_id
                cache_hit = True
                self._refuse_if_revoked(found)
                if self._observer is not None:
                    self._observer.verification(pool_id, None, True)
                return found
            pool_id = found.pool.user_pool_id
            key = found.pool.keys.get_key_sync(found.parsed.kid)
            principal = self._check_signature_and_claims(found, key)
            if self._check is not None:
                result = self._run_check(principal)
                if inspect.isawaitable(result):
                    result = asyncio.run(_awaited_check(result))
                self._check_passed(result)
            return self._finish(found, principal, key)
        except AuthError as error:
            self._refused(error, pool_id, cache_hit)
            raise
        except Exception as exc:
            bug = type(exc).__name__
        raise self._internal_error(bug, pool_id)

    # -- pipeline steps -------------------------------------------------------

    def _look_up(self, token: str) -> Principal | _Unverified:
        """Steps 1 to 5, shared by both faces: a cached principal, or the parsed, routed token."""
        if not isinstance(token, str):
            raise MissingToken() if token is None else InvalidToken()
        if len(token) > self._max_header_length:
            raise TokenTooLarge()
        token = strip_bearer(token)
        digest = _digest(token)
        # Most tokens are repeats: look in the pool caches first. A membership
        # test per pool (a C-level dict lookup) finds the one to ask, so a
        # hit costs one full lookup however many pools there are.
        for hot, cold, pool in self._caches:
            if digest in hot or digest in cold:
                principal = pool.verified.get(digest, pool.is_key_trusted)
                if principal is not None:
                    return principal  # the caller checks revocation: it counts as a hit either way
                break
        parsed = parse_token(token, self._max_token_bytes)
        pool = self._router.route(parsed.claims)
        if len(token) > pool.settings.max_token_bytes:
            raise TokenTooLarge()
        return _Unverified(parsed, digest, pool)

    def _check_signature_and_claims(self, unverified: _Unverified, key: RS256PublicKey) -> Principal:
        """Steps 7 and 8: the signature, then the routed pool's claim rules."""
        parsed = unverified.parsed
        if not key.verify(parsed.signing_input, parsed.signature):
            raise SignatureInvalid(kid=parsed.kid)
        return unverified.pool.rules.check(parsed.claims, self._clock())

    def _run_check(self, principal: Principal) -> bool | Awaitable[bool]:
        assert self._check is not None
        bug = None
        try:
            return self._check(principal)
        except MissingToken:
            pass  # a token was sent: "no credentials" would let auto_error=False routes in anonymously
        except AuthError:
            raise
        except Exception as exc:
            bug = type(exc).__name__
        # Raised outside the except block, so the refusal carries no context from the check.
        raise CheckFailed() if bug is None else _check_crashed(bug)

    @staticmethod
    def _check_passed(result: object) -> None:
        # Anything but a true value refuses: a check that forgets to return
        # fails closed, loudly, instead of letting everyone in.
        if not result:
            raise CheckFailed()

    def _finish(self, unverified: _Unverified, principal: Principal, key: RS256PublicKey) -> Principal:
        """Steps 9 and 10: revocation, then remember the result."""
        self._refuse_if_revoked(principal)
        unverified.pool.remember(unverified.digest, principal, unverified.parsed.kid, key)
        self._accepted(principal, cache_hit=False)
        return principal

    def _refuse_if_revoked(self, principal: Principal) -> None:
        # A local lookup only: the mirror is kept current in the background.
        revoked = self._revoked
        if revoked.has_entries and revoked.covers(principal):
            raise TokenRevoked(pool=principal.user_pool_id)
        if self._may_fail_closed and self.revocations.is_failed_closed():
            raise RevocationUnavailable(pool=principal.user_pool_id)

    # -- reporting --------------------------------------------------------------

    def _accepted(self, principal: Principal, *, cache_hit: bool) -> None:
        observer = self._observer
        if observer is not None:
            observer.verification(principal.user_pool_id, None, cache_hit)

    def _refused(self, error: AuthError, pool_id: str, cache_hit: bool) -> None:
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

    def _internal_error(self, exception_type: str, pool_id: str) -> InvalidToken:
        # A bug must still end as a refusal, not a 500. Only the exception's
        # type is logged: its message could quote token bytes.
        logger.error("token_verification_bug type=%s", exception_type)
        error = InvalidToken()
        if self._observer is not None:
            self._observer.verification(pool_id, error.code, False)
        return error

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
        if not isinstance(subject, str) or not subject:
            raise ValueError("a revocation needs a non-empty subject (sub or origin_jti)")
        moment = _timestamp(before, self._clock)
        lifetime = pool.settings.max_token_lifetime_seconds + pool.settings.leeway_seconds
        return Revocation(kind, user_pool_id, subject, moment, moment + lifetime)

    async def revoke_user(
        self, user_pool_id: str, sub: str, *, before: float | datetime | None = None
    ) -> Revocation:
        """Refuse every token of user ``sub`` issued before ``before`` (default: now), in every process.

        What Cognito's GlobalSignOut, disabling a user, or removing them from
        a team should be followed by. Raises
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

    async def start(self) -> None:
        """Prefetch keys and load the revocation list; what an application's start-up should await."""
        await asyncio.gather(self.prefetch(), self.revocations.start())

    async def aclose(self) -> None:
        """Release network resources; the verifier must not be used afterwards."""
        await self.revocations.stop()
        for pool in self.pools:
            await pool.keys.aclose()

    def close(self) -> None:
        """Blocking twin of :meth:`aclose` for the key caches (an async revocation backend needs :meth:`aclose`)."""
        for pool in self.pools:
            pool.keys.close()


def _check_crashed(exception_type: str) -> CheckFailed:
    # A failing check is the application's bug or outage; the token is
    # refused, not answered with a 500, and the cause is logged by type.
    logger.error("custom_check_raised type=%s", exception_type)
    return CheckFailed()


async def _awaited_check(result: Awaitable[bool]) -> bool:
    """An async check's answer; what it raises is handled as a sync check's would be."""
    bug = None
    try:
        return await result
    except MissingToken:
        pass  # a token was sent: see TokenVerifier._run_check
    except AuthError:
        raise
    except Exception as exc:
        bug = type(exc).__name__
    raise CheckFailed() if bug is None else _check_crashed(bug)
