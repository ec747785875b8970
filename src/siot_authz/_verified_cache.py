"""Remembering tokens already verified, so a repeat costs a hash, not an RSA check.

Safety rests on four rules:

* A hit is the very token that verified, byte for byte: the key is a SHA-256
  digest of its signed part (header and payload, everything before the last
  dot), and the entry keeps the signature segment after that dot, which a
  hit must present unchanged. A prefix or a header-only key would let a
  forged payload ride on a verified signature. The digest is of the signed
  part, not the whole token, because the RSA check needs exactly that one:
  a new token is hashed once, not twice.
* An entry is never served at or after its token's ``exp``: every hit
  compares ``exp`` with the clock again, an expired entry is dropped when a
  lookup meets it, and a sweep drops the rest soon after they expire (at
  most :data:`SWEEP_INTERVAL_SECONDS` later).
* An entry is tied to the key that verified it, by kid and by key (its serial): a
  hit is refused unless the JWKS still holds that very key under that kid,
  and a new key set purges the entries whose key was dropped or replaced (a
  JWKS may reuse a kid for new key material).
* The cache is bounded (``verified_cache_size``) and least recently used
  entries go first, so memory stays flat under a flood of distinct tokens.

Two tiers keep garbage-collection pauses short. A principal is a handful
of objects the cyclic collector must visit, and ten thousand of them made
every full collection (which stops every request) tens of milliseconds
longer. So only the :data:`HOT_ENTRIES` most recently used tokens keep
their principal object. Older entries shrink to one tuple of plain values
(the token's ``exp``, kid, key serial and signature, the principal's
fields, and its claims with arrays as tuples), which the collector stops visiting, in
about a third of the memory. A hit on one builds the principal object again
from those values, without parsing or validating anything (about a
microsecond), and moves it back to the hot tier. Revocation and the key
check apply to both tiers alike.

The hot path is a digest, one dict lookup and three comparisons, under a lock
held for a few C-level dict operations only.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._principal import Principal, PrincipalParts, principal_from_parts, principal_parts

__all__ = ["HOT_ENTRIES", "SWEEP_INTERVAL_SECONDS", "KeyCheck", "VerifiedTokenCache"]

#: The longest an expired entry may stay in memory (it is never served).
SWEEP_INTERVAL_SECONDS = 1.0

#: How many of the most recently used tokens keep their principal object.
#: Each is four objects a full collection visits (about 27 references); at
#: 2,048 a full default cache adds about a millisecond or two to a full
#: collection, where 4,096 added twice that (bench/run.py's GC row).
HOT_ENTRIES = 2048


#: A hot entry: ``(expires_at, kid, key, signature, principal, parts)``.
#: ``key`` is what identifies the key that verified the token (the verifier
#: passes its serial); ``signature`` the token's signature segment, as sent.
#: ``parts`` is the principal as plain values once taken apart, or None: a
#: revived entry keeps them, so going cold again costs nothing. A plain
#: tuple, not a NamedTuple: one is built for every new token, and a
#: NamedTuple's constructor is a Python-level call.
_Entry = tuple[float, str, object, bytes, Principal, PrincipalParts | None]

#: A cold entry: ``(expires_at, kid, key, signature, parts)`` with the
#: principal as plain values (:func:`principal_parts`). A plain tuple, which
#: the collector stops tracking once it holds only plain values.
_Compact = tuple[float, str, object, bytes, PrincipalParts]

# Where both entry shapes keep exp, the kid, the key and the signature; and a hot entry its principal and parts.
_EXPIRES_AT: Final = 0
_KID: Final = 1
_KEY: Final = 2
_SIGNATURE: Final = 3
_PRINCIPAL: Final = 4
_PARTS: Final = 5


#: Answers "does the JWKS hold this key under this kid now?" (given what ``put`` was given as ``key``).
KeyCheck = Callable[[str, object], bool]


class VerifiedTokenCache:
    """A bounded map from token digest to the principal it verified as; safe to share between threads."""

    def __init__(
        self, max_size: int, *, clock: Callable[[], float] = time.time, hot_entries: int = HOT_ENTRIES
    ) -> None:
        self._clock = clock
        self._max_size = max_size
        self._is_enabled = max_size > 0
        self._hot_size = min(hot_entries, max_size)
        # Insertion order is recency order: a hit moves its entry to the end,
        # eviction pops from the front. Entries leave the hot tier for the cold one.
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._compact: OrderedDict[bytes, _Compact] = OrderedDict()
        # No sweep is due until the earliest held exp has passed.
        self._next_sweep_at = float("inf")
        self._swept_at = float("-inf")
        self._lock = threading.Lock()

    @staticmethod
    def key_of(token: str) -> tuple[bytes, bytes]:
        """What ``token`` is cached under: the digest of its signed part, and its signature segment.

        The signed part is everything before the last dot, the signature
        segment everything after it (a token without a dot is all
        signature). Any string has a key, even one holding a lone surrogate
        (which parsing refuses later): the lookup comes before parsing.
        """
        signed, _, signature = token.encode("utf-8", "surrogatepass").rpartition(b".")
        return VerifiedTokenCache.key_hash(signed).digest(), signature

    @staticmethod
    def digest(token: str) -> bytes:
        """The dict key of ``token``'s entry: :meth:`key_of`'s digest of its signed part."""
        return VerifiedTokenCache.key_of(token)[0]

    #: The hash whose ``digest()`` of a token's signed part is its key: for a
    #: caller that has those bytes already (the verifier, which hands the
    #: same digest to the RSA check) and calls it inline.
    key_hash = staticmethod(hashlib.sha256)

    @property
    def hot_entries(self) -> Mapping[bytes, object]:
        """The hot tier by digest, for a quick ``digest in ...`` test; read it, never change it."""
        return self._entries

    @property
    def cold_entries(self) -> Mapping[bytes, object]:
        """The cold tier by digest, for a quick ``digest in ...`` test; read it, never change it."""
        return self._compact

    @property
    def max_size(self) -> int:
        """How many entries the cache holds at most (0: the cache is off)."""
        return self._max_size

    def get(self, digest: bytes, is_key_trusted: KeyCheck, signature: bytes) -> Principal | None:
        """The cached principal, if the token is still unexpired and its key still trusted.

        ``signature`` must be the very one the entry was put with: another
        signature under the same signed part is another token (a miss).
        """
        if not self._is_enabled:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                compact = self._compact.get(digest)
                if compact is None or compact[_SIGNATURE] != signature:
                    return None
                del self._compact[digest]
            elif entry[_SIGNATURE] != signature:
                return None  # kept: the token that verified may still come
            elif now >= entry[_EXPIRES_AT]:
                del self._entries[digest]
                return None
            else:
                self._entries.move_to_end(digest)
        if entry is None:
            return None if compact is None else self._revive(digest, compact, now, is_key_trusted)
        if not is_key_trusted(entry[_KID], entry[_KEY]):
            # Kept: a stale key set may be refreshed with the key still in it;
            # if the key is gone or replaced, the refresh purges the entry.
            return None
        return entry[_PRINCIPAL]

    def _revive(
        self, digest: bytes, compact: _Compact, now: float, is_key_trusted: KeyCheck
    ) -> Principal | None:
        """A cold hit: build the principal object again and bring the entry back to the hot tier."""
        expires_at, kid, key, signature, parts = compact
        if now >= expires_at or not is_key_trusted(kid, key):
            return None  # already popped: a key that returns is checked afresh on the slow path
        principal = principal_from_parts(parts)
        self._insert(digest, (expires_at, kid, key, signature, principal, parts), now)
        return principal

    def put(
        self,
        digest: bytes,
        principal: Principal,
        kid: str,
        key: object,
        expires_at: float | None = None,
        *,
        signature: bytes,
    ) -> None:
        """Remember a freshly verified token until its ``exp``.

        ``expires_at`` is the token's ``exp`` in seconds, when the caller
        has it as a number already; by default it is read from the principal.
        ``signature`` is what a hit must present with ``digest``
        (:meth:`key_of`). It has no default: a cache that took an empty one
        for a caller who forgot it would serve any signature over a verified
        signed part.
        """
        if not self._is_enabled:
            return
        # A float, so that every comparison with the clock (here, on each hit,
        # in the sweep) is float to float: an int exp made each one convert it.
        expires_at = principal.expires_at.timestamp() if expires_at is None else float(expires_at)
        now = self._clock()
        if now >= expires_at:
            return  # accepted only thanks to leeway: never cache it
        self._insert(digest, (expires_at, kid, key, signature, principal, None), now)

    def _insert(self, digest: bytes, entry: _Entry, now: float) -> None:
        # Every new token comes through here, so each step is the cheapest C-level
        # call for it: membership tests before deleting (OrderedDict.pop parses its
        # arguments the slow way), a new key is appended at the end already (no
        # move_to_end), and popitem's argument is positional.
        entries, compact = self._entries, self._compact
        with self._lock:
            if now >= self._next_sweep_at:
                self._sweep_locked(now)
            if digest in compact:
                del compact[digest]
            if digest in entries:
                del entries[digest]  # a revived or re-verified token: to the end again
            entries[digest] = entry
            if len(entries) > self._hot_size:
                old_digest, old = entries.popitem(False)
                if compact or len(entries) < self._max_size:
                    # The oldest hot entry goes cold, taken apart under the
                    # lock: a fraction of a microsecond of C-level calls, and
                    # in a login storm every new token demotes one, so one
                    # lock round instead of two. (In a cache no larger than
                    # the hot tier there is no cold tier: it simply goes.)
                    parts = old[_PARTS]
                    if parts is None:
                        parts = principal_parts(old[_PRINCIPAL])
                    compact[old_digest] = (old[_EXPIRES_AT], old[_KID], old[_KEY], old[_SIGNATURE], parts)
                    while compact and len(entries) + len(compact) > self._max_size:
                        compact.popitem(False)
            elif len(entries) + len(compact) > self._max_size:
                # Not reached while the cold tier stays within max_size - hot size (the
                # loop above keeps it there); kept so the bound holds even if it did not.
                compact.popitem(False)
            expires_at = entry[_EXPIRES_AT]
            if expires_at < self._next_sweep_at:
                self._next_sweep_at = max(expires_at, self._swept_at + SWEEP_INTERVAL_SECONDS)

    def _sweep_locked(self, now: float) -> None:
        # O(n), but at most once per SWEEP_INTERVAL_SECONDS: about a millisecond
        # per 10k entries.
        earliest = float("inf")
        tiers: tuple[OrderedDict[bytes, Any], ...] = (self._entries, self._compact)
        for tier in tiers:
            # Both entry shapes start with exp.
            expired = [digest for digest, entry in tier.items() if entry[_EXPIRES_AT] <= now]
            for digest in expired:
                del tier[digest]
            earliest = min(earliest, min((entry[_EXPIRES_AT] for entry in tier.values()), default=earliest))
        self._swept_at = now
        self._next_sweep_at = max(earliest, now + SWEEP_INTERVAL_SECONDS)

    def keep_only_held_keys(self, held_key: Callable[[str], object | None]) -> None:
        """Drop every entry whose key is no longer held under its kid.

        ``held_key(kid)`` answers with what :meth:`put` was given as ``key``.
        """
        tiers: tuple[OrderedDict[bytes, Any], ...] = (self._entries, self._compact)
        with self._lock:
            for tier in tiers:
                # ``!=``: a key serial is compared by value, any other key object by identity.
                stale = [digest for digest, entry in tier.items() if held_key(entry[_KID]) != entry[_KEY]]
                for digest in stale:
                    del tier[digest]

    def clear(self) -> None:
        """Forget every entry: each token is verified in full again when next seen.

        Not a barrier: a put or a cold hit that another thread has under way
        may still add its entry just after. Nothing relies on more (the bench
        empties caches between runs); a security purge would need a
        generation the verifier takes before it verifies.
        """
        with self._lock:
            self._entries.clear()
            self._compact.clear()
            self._next_sweep_at = float("inf")

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries) + len(self._compact)
