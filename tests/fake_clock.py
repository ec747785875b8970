"""A clock the tests move by hand, for anything that takes a ``clock=`` or ``key_timer=``."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Wall or monotonic time that stands still at ``now`` until the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
