"""The key cache's fetch decision, as a table: every combination of the times involved, no clock or socket.

TTL 60 s, cooldown 30 s, a background refresh presumed lost 12 s after it
started. Times are seconds on the cache's monotonic clock; "now" is 1000.
"""

from __future__ import annotations

import itertools

import pytest

from siot_authz._refresh_policy import KeyAction, RefreshPolicy, RefreshState

POLICY = RefreshPolicy(ttl=60.0, cooldown=30.0, lost_after=12.0)
NOW = 1000.0

# How old the held keys are: none held, fresh, just at the TTL, long past it.
KEYS = {"none": None, "fresh": NOW - 10, "at-ttl": NOW - 60, "stale": NOW - 600}
# The last fetch attempt: none yet, within the cooldown, just at it, long ago.
ATTEMPTS = {"never": None, "recent": NOW - 5, "at-cooldown": NOW - 30, "long-ago": NOW - 600}
# A background refresh: none, running, just presumed lost, long lost.
REFRESHES = {"idle": None, "running": NOW - 3, "just-lost": NOW - 12, "lost": NOW - 300}


def expected(keys: str, attempt: str, failed: bool, refresh: str, is_kid_held: bool) -> KeyAction:
    """The rules, spelled out independently of the implementation."""
    has_keys = keys != "none"
    is_past_ttl = keys in ("at-ttl", "stale")
    is_cooled_down = attempt in ("never", "at-cooldown", "long-ago")
    is_running = refresh == "running"
    is_due = has_keys and is_past_ttl and not is_running and (not failed or is_cooled_down)
    if is_kid_held and has_keys:
        return KeyAction.USE_HELD_AND_REFRESH if is_due else KeyAction.USE_HELD
    if is_cooled_down or is_due:
        return KeyAction.WAIT_FOR_FETCH
    return KeyAction.REFUSE_WITHOUT_FETCH


CASES = [
    (keys, attempt, failed, refresh, held)
    for keys, attempt, failed, refresh, held in itertools.product(
        KEYS, ATTEMPTS, (False, True), REFRESHES, (True, False)
    )
    if not (held and keys == "none")  # a kid cannot be held with no keys
]


@pytest.mark.parametrize(
    ("keys", "attempt", "failed", "refresh", "is_kid_held"),
    CASES,
    ids=[
        f"keys-{k}-attempt-{a}-{'failed' if f else 'ok'}-refresh-{r}-kid-{'held' if h else 'unknown'}"
        for k, a, f, r, h in CASES
    ],
)
def test_decides_as_the_rules_say(
    keys: str, attempt: str, failed: bool, refresh: str, is_kid_held: bool
) -> None:
    state = RefreshState(
        fetched_at=KEYS[keys],
        last_attempt_at=ATTEMPTS[attempt],
        is_last_attempt_failed=failed,
        refresh_started_at=REFRESHES[refresh],
    )

    assert POLICY.decide(state, NOW, is_kid_held=is_kid_held) is expected(
        keys, attempt, failed, refresh, is_kid_held
    )


def test_an_unknown_kid_after_the_ttl_fetches_even_when_the_cooldown_is_longer() -> None:
    """Issue 17's regression 1: TTL 1 s, cooldown 30 s, a rotated key seen 2 s after the first fetch."""
    policy = RefreshPolicy(ttl=1.0, cooldown=30.0, lost_after=12.0)
    state = RefreshState(
        fetched_at=0.0, last_attempt_at=0.0, is_last_attempt_failed=False, refresh_started_at=None
    )

    assert policy.decide(state, 2.0, is_kid_held=False) is KeyAction.WAIT_FOR_FETCH
    assert policy.decide(state, 0.5, is_kid_held=False) is KeyAction.REFUSE_WITHOUT_FETCH


def test_a_refresh_is_presumed_lost_exactly_at_its_limit() -> None:
    state = RefreshState(
        fetched_at=0.0, last_attempt_at=0.0, is_last_attempt_failed=False, refresh_started_at=100.0
    )

    assert POLICY.is_refresh_running(state, 100.0 + 12.0 - 0.001)
    assert not POLICY.is_refresh_running(state, 100.0 + 12.0)
