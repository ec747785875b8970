"""When a pool's key cache fetches: a pure decision, from the times involved to what to do.

Kept apart from the cache, which does the I/O and keeps the state, so every
combination of inputs can be tested as a table with no clock, socket or
thread. The rules:

* A known kid is answered from the held keys, fresh or stale. Past the TTL
  it also starts one background refresh (stale-while-revalidate), unless one
  is already running, or the last fetch failed and the cooldown has not
  passed since (stale-if-error without hammering a broken endpoint).
* An unknown kid, or no keys at all, waits on a fetch when the penalty box
  allows one (a cooldown since the last attempt) or when a refresh is due
  anyway: past the TTL, the fetch a rotated key needs costs no more than the
  one any request would start. Otherwise it is refused at once.
* A background refresh running past its deadline plus a grace is presumed
  lost (its event loop closed under it, say) and no longer blocks another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["KeyAction", "RefreshPolicy", "RefreshState"]


class KeyAction(enum.Enum):
    """What the cache does for one request."""

    #: Answer from the held keys; start nothing.
    USE_HELD = "use_held"
    #: Answer from the held keys and start one background refresh.
    USE_HELD_AND_REFRESH = "use_held_and_refresh"
    #: Wait on a fetch (joining one under way), then answer from what it brought.
    WAIT_FOR_FETCH = "wait_for_fetch"
    #: Answer from the held keys without fetching: the kid is refused, or 503 with nothing held.
    REFUSE_WITHOUT_FETCH = "refuse_without_fetch"


@dataclass(frozen=True)
class RefreshState:
    """The cache's bookkeeping the decision reads; times are on the cache's monotonic clock."""

    #: When the held keys were fetched or handed in; None when none are held.
    fetched_at: float | None
    #: When the last fetch (of any kind) ended; None before the first.
    last_attempt_at: float | None
    is_last_attempt_failed: bool
    #: When the background refresh now running started; None when none is.
    refresh_started_at: float | None


@dataclass(frozen=True)
class RefreshPolicy:
    """The fetch rules of one pool, from its settings."""

    ttl: float
    cooldown: float
    #: How long a background refresh may run before it is presumed lost: its deadline plus a grace.
    lost_after: float

    def is_refresh_running(self, state: RefreshState, now: float) -> bool:
        """True while a background refresh has started and is not yet presumed lost."""
        started = state.refresh_started_at
        return started is not None and now - started < self.lost_after

    def is_cooled_down(self, state: RefreshState, now: float) -> bool:
        """True when the penalty box allows a fetch: none yet, or the cooldown has passed since the last."""
        last = state.last_attempt_at
        return last is None or now - last >= self.cooldown

    def is_refresh_due(self, state: RefreshState, now: float) -> bool:
        """True when held keys are past their TTL and a background refresh should start now."""
        if state.fetched_at is None or now - state.fetched_at < self.ttl:
            return False
        if self.is_refresh_running(state, now):
            return False
        # After a failure, wait out the cooldown; after a good fetch, a TTL
        # refresh is due at once, even when the TTL is shorter than the cooldown.
        return not state.is_last_attempt_failed or self.is_cooled_down(state, now)

    def decide(self, state: RefreshState, now: float, *, is_kid_held: bool) -> KeyAction:
        """What to do for a request whose kid is (or is not) among the held keys."""
        if is_kid_held:
            if self.is_refresh_due(state, now):
                return KeyAction.USE_HELD_AND_REFRESH
            return KeyAction.USE_HELD
        if self.is_cooled_down(state, now) or self.is_refresh_due(state, now):
            return KeyAction.WAIT_FOR_FETCH
        return KeyAction.REFUSE_WITHOUT_FETCH
