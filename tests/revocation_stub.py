"""A revocation backend frozen in one state, for the states a real one reaches only in an outage."""

from __future__ import annotations

from siot_authz.revocation import BackendState, Revocation, RevocationMirror, RevocationStatus

__all__ = ["REVOCATION_STATES", "StubRevocations"]

#: (state, seconds unconfirmed, ready?): degraded still enforces the last mirror, so it serves.
REVOCATION_STATES: list[tuple[BackendState, float | None, bool]] = [
    ("ok", 0.5, True),
    ("degraded", 20.0, True),
    ("failed", 400.0, False),
    ("starting", None, False),
]


class StubRevocations:
    """Reports ``state`` with three entries and ``unconfirmed_seconds``; records nothing."""

    name = "stub"
    can_fail_closed = True

    def __init__(self, state: BackendState, unconfirmed_seconds: float | None) -> None:
        self.mirror = RevocationMirror()
        self._status = RevocationStatus(self.name, state, 3, unconfirmed_seconds, "connection refused")

    def is_failed_closed(self) -> bool:
        return self._status.state == "failed"

    def status(self) -> RevocationStatus:
        return self._status

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def add(self, entry: Revocation) -> None:
        raise NotImplementedError

    def add_sync(self, entry: Revocation) -> None:
        raise NotImplementedError

    async def entries(self) -> list[Revocation]:
        return []

    def entries_sync(self) -> list[Revocation]:
        return []
