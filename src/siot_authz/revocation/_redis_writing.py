"""Recording and listing entries through a :class:`RedisStore`: the part both Redis backends share.

``RedisRevocations`` (a mirror kept current by pub/sub) and
``RedisLookupRevocations`` (a lookup per token) differ in how they learn of
entries, not in how they write or list them, so those faces live here once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._base import Revocation, RevocationMirror, RevocationStoreUnavailable
from ._redis_follower import REDIS_ERRORS
from ._redis_store import RedisStore

__all__ = ["StoreWriting"]


class StoreWriting:
    """``add``/``add_sync`` and ``entries``/``entries_sync`` over ``self.store``, for a Redis backend."""

    store: RedisStore
    mirror: RevocationMirror
    _clock: Callable[[], float]

    def _unreachable(self, error: BaseException, consequence: str) -> RevocationStoreUnavailable:
        raise NotImplementedError  # each backend says where the store is, with credentials hidden

    def add_sync(self, entry: Revocation) -> None:
        """Record ``entry`` in Redis for every process; :class:`RevocationStoreUnavailable` if Redis will not.

        Blocks; needs no event loop (the CLI's path).
        """
        try:
            stored = self.store.write(entry)
        except REDIS_ERRORS as error:
            raise self._unreachable(
                error,
                "the revocation may not be recorded and is not enforced yet: retry it (retrying is safe)",
            ) from None
        # Only what Redis accepted reaches this process's mirror; a follower
        # would apply it too, this just spares the writer the round trip.
        if stored is not None:
            self.mirror.add(stored)

    async def add(self, entry: Revocation) -> None:
        """:meth:`add_sync` in a worker thread, so the event loop never waits on Redis."""
        await asyncio.to_thread(self.add_sync, entry)

    def entries_sync(self) -> list[Revocation]:
        """Every live entry as Redis holds it; :class:`RevocationStoreUnavailable` if unreachable."""
        try:
            stored = self.store.load()
        except REDIS_ERRORS as error:
            raise self._unreachable(error, "cannot list the revocations") from None
        # Listed as a mirror lists them: live entries, one per user or session.
        listing = RevocationMirror(clock=self._clock)
        listing.replace_all(stored)
        return listing.entries()

    async def entries(self) -> list[Revocation]:
        """:meth:`entries_sync` in a worker thread."""
        return await asyncio.to_thread(self.entries_sync)
