"""Several user pools behind one verifier: each keeps its own keys, rules and verified tokens.

SimpleIOT installs one Cognito user pool per team, so a service next to it
may trust several. A token is routed to a pool by its exact, still
unverified ``iss`` before any key is fetched. That ``iss`` is only a pointer:
it picks which pool's keys and rules to try, and the pool's rules check it
again after the signature. An ``iss`` that names no configured pool is
refused there and then, and causes no fetch anywhere. Kids are looked up
only in the routed pool's keys, so a kid string that two pools share cannot
carry a token from one pool into the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._claims import ClaimRules
from ._errors import IssuerInvalid
from ._jose import RS256PublicKey
from ._jwks import read_jwks_file
from ._key_cache import JwksCache, JwksDocument
from ._observe import Observer
from ._principal import Principal
from ._settings import AuthSettings
from ._verified_cache import VerifiedTokenCache

if TYPE_CHECKING:
    import httpx  # imported by the key cache once a fetch is due

__all__ = ["Pool", "PoolRouter"]


class Pool:
    """One configured user pool: its settings, key cache, claim rules and verified-token cache."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        jwks: JwksDocument | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        key_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``jwks`` is a document handed in for this pool; without one, ``settings.jwks_file`` is read.

        ``clock`` is the wall clock of the claim rules and the verified cache;
        ``key_clock`` the monotonic one of the key cache's TTL and cooldown.
        """
        self.settings = settings
        self.user_pool_id = settings.user_pool_id
        source = None
        if jwks is None and settings.jwks_file is not None:
            jwks = read_jwks_file(settings.jwks_file, settings.max_jwks_bytes)
            source = f"jwks_file {settings.jwks_file} (pool {self.user_pool_id})"
        self.keys = JwksCache(
            settings,
            async_transport=async_transport,
            sync_transport=sync_transport,
            clock=key_clock,
            jwks=jwks,
            jwks_source=source,
            observer=observer,
        )
        self.rules = ClaimRules(settings)
        self.verified = VerifiedTokenCache(settings.verified_cache_size, clock=clock)
        self._seen_key_generation = self.keys.generation

    def is_key_trusted(self, kid: str, serial: object) -> bool:
        """True while the held keys still have this very key (by its serial) under ``kid``.

        The key itself, not just the kid: a JWKS may put new key material
        under an old kid, and tokens verified with the old key must not pass.
        Stale keys still count (a background refresh is started), so a cached
        token keeps working while the pool's key endpoint is slow.
        """
        key = self.keys.held_key_or_refresh(kid)
        return key is not None and key.serial == serial

    def _held_serial(self, kid: str) -> int | None:
        key = self.keys.held_key(kid)
        return key.serial if key is not None else None

    def remember(
        self,
        digest: bytes,
        principal: Principal,
        kid: str,
        key: RS256PublicKey,
        expires_at: float | None = None,
        *,
        signature: bytes,
    ) -> None:
        """Cache a verified token, first dropping entries whose key a new key set withdrew.

        ``expires_at`` is the token's ``exp`` (seconds), when the caller has it
        as a number; ``digest`` and ``signature`` are its cache key
        (:meth:`VerifiedTokenCache.key_of`).
        """
        keys = self.keys
        if keys.generation != self._seen_key_generation:
            self._seen_key_generation = keys.generation
            self.verified.keep_only_held_keys(self._held_serial)
        self.verified.put(digest, principal, kid, key.serial, expires_at, signature=signature)


class PoolRouter:
    """Maps every accepted ``iss`` to its pool.

    Two pools never share an issuer: every issuer URL ends in its pool's id,
    and a pool configured twice is refused before this (``as_pool_list``).
    """

    def __init__(self, pools: Sequence[Pool]) -> None:
        self.pools = tuple(pools)
        self._by_issuer: Mapping[str, Pool] = {
            issuer: pool for pool in self.pools for issuer in pool.settings.issuers
        }
        self.by_id: Mapping[str, Pool] = {pool.user_pool_id: pool for pool in self.pools}

    def route(self, claims: dict[str, Any]) -> Pool:
        """The pool whose issuer the (unverified) ``iss`` names exactly; IssuerInvalid otherwise."""
        issuer = claims.get("iss")
        pool = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if pool is None:
            raise IssuerInvalid(iss=issuer[:200] if isinstance(issuer, str) else "-")
        return pool
