"""Remembering tokens already verified, so a repeat costs a hash, not an RSA check.

Safety rests on four rules:

* The key is a SHA-256 digest of the whole token. A prefix or a header-only
  key would let a forged payload ride on a verified signature.
* An entry never outlives its token's ``exp``: the cache drops it then, and
  every hit compares ``exp`` with the clock again.
* An entry is tied to the kid that verified it; when that key leaves the
  JWKS the entry is ignored and purged.
* The cache is bounded (``verified_cache_size``) and least recently used
  entries go first, so memory stays flat under a flood of distinct tokens.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cachetools import TLRUCache

from ._principal import Principal

__all__ = ["VerifiedTokenCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    kid: str
    expires_at: float


def _entry_deadline(_key: bytes, entry: _Entry, _now: float) -> float:
    return entry.expires_at


class VerifiedTokenCache:
    """A bounded map from token digest to the principal it verified as."""

    def __init__(self, max_size: int, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._is_enabled = max_size > 0
        self._entries: TLRUCache[bytes, _Entry] = TLRUCache(
            maxsize=max(max_size, 1), ttu=_entry_deadline, timer=clock
        )
        # cachetools caches are not thread-safe, and verify_sync may run on many threads.
        self._lock = threading.Lock()

    @staticmethod
    def digest(token: str) -> bytes:
        """The cache key for ``token``: a digest of every byte of it."""
        return hashlib.sha256(token.encode()).digest()

    def get(self, digest: bytes, is_kid_trusted: Callable[[str], bool]) -> Principal | None:
        """The cached principal, if the token is still unexpired and its key still trusted."""
        if not self._is_enabled:
            return None
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at or not is_kid_trusted(entry.kid):
            return None
        return entry.principal

    def put(self, digest: bytes, principal: Principal, kid: str) -> None:
        """Remember a freshly verified token until its ``exp``."""
        if not self._is_enabled:
            return
        expires_at = principal.expires_at.timestamp()
        if self._clock() >= expires_at:
            return  # accepted only thanks to leeway: never cache it
        with self._lock:
            self._entries[digest] = _Entry(principal, kid, expires_at)

    def keep_only_kids(self, kids: Collection[str]) -> None:
        """Drop every entry verified by a key that is no longer in the JWKS."""
        with self._lock:
            stale = [digest for digest, entry in self._entries.items() if entry.kid not in kids]
            for digest in stale:
                self._entries.pop(digest, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
