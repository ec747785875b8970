"""The verification pipeline: header value in, :class:`Principal` or :class:`AuthError` out.

The order is fixed and each step trusts only what the steps before it proved:

1. size cap, on the raw value, before anything is decoded;
2. strip an optional ``Bearer`` prefix;
3. the verified-token cache (a digest of the whole token; a hit must be
   unexpired and its key still held under its kid);
4. strict parsing, and the header: ``alg`` exactly RS256, a string ``kid``, no ``crit``;
5. the key for that kid from the JWKS cache;
6. the RS256 signature, with the algorithm fixed by us;
7. the claim rules, which build the principal.

Claims are read before step 6 only as parsed JSON; no rule looks at them
until the signature has verified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import httpx

from ._claims import ClaimRules
from ._errors import AuthError, InvalidToken, MissingToken, SignatureInvalid, TokenTooLarge
from ._jose import RS256PublicKey
from ._key_cache import JwksCache
from ._principal import Principal
from ._settings import AuthSettings
from ._token import ParsedToken, parse_token, strip_bearer
from ._verified_cache import VerifiedTokenCache

__all__ = ["TokenVerifier"]

logger = logging.getLogger("siot_authz")

# Room for "Bearer " and stray whitespace around a token of the maximum size.
_HEADER_SLACK = 64


def _safe(value: str) -> str:
    """A log-safe rendering of an attacker-chosen short string (kid, iss, alg)."""
    return repr(value[:64]) if len(value) <= 64 else repr(value[:64]) + "..."


class _Unverified(NamedTuple):
    """A token that missed the verified cache: parsed, with the digest it will be cached under."""

    parsed: ParsedToken
    digest: bytes


class TokenVerifier:
    """Verifies Cognito JWTs for one user pool; the same object serves async and sync callers.

    Create one per process and share it: it holds the JWKS cache and the
    verified-token cache.
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = JwksCache(settings, async_transport=async_transport, sync_transport=sync_transport)
        self._rules = ClaimRules(settings)
        self._verified = VerifiedTokenCache(settings.verified_cache_size, clock=clock)
        self._clock = clock
        self._max_header_length = settings.max_token_bytes + _HEADER_SLACK
        self._seen_key_generation = 0

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` (raw or ``Bearer <token>``) and return who sent it.

        Raises an :class:`AuthError` subclass and nothing else.
        """
        try:
            found = self._look_up(token)
            if isinstance(found, Principal):
                return found
            key = await self.keys.get_key(found.parsed.kid)
            return self._finish(found, key)
        except AuthError as error:
            self._log_refusal(error)
            raise
        except Exception as exc:
            bug = type(exc).__name__
        # Raised outside the except block, so the refusal does not carry the
        # original exception (which might quote token bytes) as its context.
        raise self._internal_error(bug)

    def verify_sync(self, token: str) -> Principal:
        """Blocking twin of :meth:`verify`, for Lambda handlers, scripts and WSGI apps.

        Fetches keys with a blocking HTTP client when it needs them. Do not
        call it from inside a running event loop; use :meth:`verify` there.
        """
        try:
            found = self._look_up(token)
            if isinstance(found, Principal):
                return found
            key = self.keys.get_key_sync(found.parsed.kid)
            return self._finish(found, key)
        except AuthError as error:
            self._log_refusal(error)
            raise
        except Exception as exc:
            bug = type(exc).__name__
        # Raised outside the except block, so the refusal does not carry the
        # original exception (which might quote token bytes) as its context.
        raise self._internal_error(bug)

    async def prefetch(self) -> None:
        """Fetch the JWKS now, so the first request does not wait for it."""
        await self.keys.refresh()

    async def aclose(self) -> None:
        """Release network resources; the verifier must not be used afterwards."""
        await self.keys.aclose()

    def close(self) -> None:
        """Blocking twin of :meth:`aclose`."""
        self.keys.close()

    # -- pipeline steps -------------------------------------------------------

    def _look_up(self, token: str) -> Principal | _Unverified:
        """Steps 1 to 4, shared by both faces: the cached principal, or the parsed token still to verify."""
        if not isinstance(token, str):
            raise MissingToken() if token is None else InvalidToken()
        if len(token) > self._max_header_length:
            raise TokenTooLarge()
        token = strip_bearer(token)
        digest = self._verified.digest(token)
        principal = self._verified.get(digest, self._is_key_trusted)
        if principal is not None:
            return principal
        return _Unverified(parse_token(token, self.settings.max_token_bytes), digest)

    def _is_key_trusted(self, kid: str, key: object) -> bool:
        # A stale key set sends the token down the slow path, which refreshes it.
        # Identity, not just the kid: a JWKS may put new key material under an
        # old kid, and then tokens verified with the old key must not pass.
        keys = self.keys
        return keys.is_fresh() and keys.held_key(kid) is key

    def _finish(self, unverified: _Unverified, key: RS256PublicKey) -> Principal:
        """Steps 6 and 7, then remember the result."""
        parsed = unverified.parsed
        if not key.verify(parsed.signing_input, parsed.signature):
            raise SignatureInvalid(kid=parsed.kid)
        principal = self._rules.check(parsed.claims, self._clock())
        if self.keys.generation != self._seen_key_generation:
            self._seen_key_generation = self.keys.generation
            self._verified.keep_only_held_keys(self.keys.held_key)
        self._verified.put(unverified.digest, principal, parsed.kid, key)
        return principal

    def _log_refusal(self, error: AuthError) -> None:
        context = " ".join(f"{name}={_safe(value)}" for name, value in error.log_context.items())
        logger.info("token_refused code=%s %s", error.code, context)

    def _internal_error(self, exception_type: str) -> InvalidToken:
        # A bug must still end as a refusal, not a 500. Only the exception's
        # type is logged: its message could quote token bytes.
        logger.error("token_verification_bug type=%s", exception_type)
        return InvalidToken()
