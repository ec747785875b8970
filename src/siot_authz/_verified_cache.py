"""Remembering tokens already verified, so a repeat costs a hash, not an RSA check.

Safety rests on four rules:

* The key is a SHA-256 digest of the whole token. A prefix or a header-only
  key would let a forged payload ride on a verified signature.
* An entry is never served at or after its token's ``exp``: every hit
  compares ``exp`` with the clock again, an expired entry is dropped when a
  lookup meets it, and a sweep drops the rest soon after they expire (at
  most :data:`SWEEP_INTERVAL_SECONDS` later).
* An entry is tied to the key that verified it, by kid and by key object: a
  hit is refused unless the (fresh) JWKS still holds that very key under
  that kid, and a new key set purges the entries whose key was dropped or
  replaced (a JWKS may reuse a kid for new key material).
* The cache is bounded (``verified_cache_size``) and least recently used
  entries go first, so memory stays flat under a flood of distinct tokens.

The hot path is a digest, one dict lookup and two comparisons, under a lock
held for a few C-level dict operations only.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ._principal import Principal

__all__ = ["SWEEP_INTERVAL_SECONDS", "KeyCheck", "VerifiedTokenCache"]

#: The longest an expired entry may stay in memory (it is never served).
SWEEP_INTERVAL_SECONDS = 1.0


class _Entry(NamedTuple):
    principal: Principal
    kid: str
    key: object  # the key object that verified the token
    expires_at: float


#: Answers "does the JWKS hold this key object under this kid now?".
KeyCheck = Callable[[str, object], bool]


class VerifiedTokenCache:
    """A bounded map from token digest to the principal it verified as; safe to share between threads."""

    def __init__(self, max_size: int, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._max_size = max_size
        self._is_enabled = max_size > 0
        # Insertion order is recency order: a hit moves its entry to the end,
        # eviction pops from the front.
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # No sweep is due until the earliest held exp has passed.
        self._next_sweep_at = float("inf")
        self._swept_at = float("-inf")
        self._lock = threading.Lock()

    @staticmethod
    def digest(token: str) -> bytes:
        """The cache key for ``token``: a digest of every byte of it.

        Any string can be hashed, even one holding a lone surrogate (which
        parsing refuses later): hashing comes before parsing on the hot path.
        """
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    @property
    def entries(self) -> Mapping[bytes, object]:
        """The entries by digest, for a quick ``digest in entries`` test; read it, never change it."""
        return self._entries

    @property
    def max_size(self) -> int:
        """How many entries the cache holds at most (0: the cache is off)."""
        return self._max_size

    def get(self, digest: bytes, is_key_trusted: KeyCheck) -> Principal | None:
        """The cached principal, if the token is still unexpired and its key still trusted."""
        if not self._is_enabled:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if now >= entry.expires_at:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
        if not is_key_trusted(entry.kid, entry.key):
            # Kept: a stale key set may be refreshed with the key still in it;
            # if the key is gone or replaced, the refresh purges the entry.
            return None
        return entry.principal

    def put(self, digest: bytes, principal: Principal, kid: str, key: object) -> None:
        """Remember a freshly verified token until its ``exp``."""
        if not self._is_enabled:
            return
        expires_at = principal.expires_at.timestamp()
        now = self._clock()
        if now >= expires_at:
            return  # accepted only thanks to leeway: never cache it
        entries = self._entries
        with self._lock:
            if now >= self._next_sweep_at:
                self._sweep_locked(now)
            entries[digest] = _Entry(principal, kid, key, expires_at)
            entries.move_to_end(digest)
            if len(entries) > self._max_size:
                entries.popitem(last=False)
            if expires_at < self._next_sweep_at:
                self._next_sweep_at = max(expires_at, self._swept_at + SWEEP_INTERVAL_SECONDS)

    def _sweep_locked(self, now: float) -> None:
        # O(n), but at most once per SWEEP_INTERVAL_SECONDS: about a millisecond
        # per 10k entries.
        entries = self._entries
        expired = [digest for digest, entry in entries.items() if entry.expires_at <= now]
        for digest in expired:
            del entries[digest]
        earliest = min((entry.expires_at for entry in entries.values()), default=float("inf"))
        self._swept_at = now
        self._next_sweep_at = max(earliest, now + SWEEP_INTERVAL_SECONDS)

    def keep_only_held_keys(self, held_key: Callable[[str], object | None]) -> None:
        """Drop every entry whose key is no longer held under its kid (``held_key(kid)``)."""
        with self._lock:
            entries = self._entries
            stale = [digest for digest, entry in entries.items() if held_key(entry.kid) is not entry.key]
            for digest in stale:
                del entries[digest]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
