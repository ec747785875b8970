"""Revocations held in this process only: the default, right for a single worker."""

from __future__ import annotations

import time
from collections.abc import Callable

from ._base import Revocation, RevocationMirror, RevocationStatus

__all__ = ["MemoryRevocations"]


class MemoryRevocations:
    """Keeps revocations in this process's memory; other processes never see them.

    Right for one worker, tests and scripts. With several workers or hosts,
    use :class:`~siot_authz.revocation.RedisRevocations`, or a revocation
    made in one worker is not enforced by the others. Recording and
    :meth:`status` cost the same however many entries it holds.
    """

    name = "memory"
    can_fail_closed = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.mirror = RevocationMirror(clock=clock)

    def is_failed_closed(self) -> bool:
        """Never: this process is the only source of truth."""
        return False

    def status(self) -> RevocationStatus:
        """Always ``ok``; the entry count is the live set."""
        self.mirror.drop_expired()
        return RevocationStatus(
            backend=self.name, state="ok", entries=len(self.mirror), unconfirmed_seconds=None
        )

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def add(self, entry: Revocation) -> None:
        """Record ``entry`` in this process."""
        self.add_sync(entry)

    def add_sync(self, entry: Revocation) -> None:
        """Record ``entry`` in this process."""
        self.mirror.drop_expired()
        self.mirror.add(entry)

    async def entries(self) -> list[Revocation]:
        """Every live entry."""
        return self.mirror.entries()

    def entries_sync(self) -> list[Revocation]:
        """Every live entry."""
        return self.mirror.entries()
