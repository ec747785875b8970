"""Building a revocation entry from a pool's settings: the one place its boundary and lifetime are computed.

The verifier's ``revoke_user``/``revoke_session`` (through
:func:`revocation_for`) and the CLI's ``siot-authz revoke`` both call
:func:`build_revocation`, so an entry means the same whoever wrote it.

Two numbers are derived from the pool's settings:

* **The boundary.** A user entry refuses tokens whose ``iat`` is earlier than
  ``before``. The verifier accepts an ``iat`` up to ``leeway_seconds`` ahead of
  its own clock (the issuer's clock may run fast), so a token minted just
  before a sign-out can carry an ``iat`` up to the leeway after it. The
  boundary is therefore the time asked for plus the leeway: a sign-out covers
  every token issued before it, as far as the accepted skew allows. A token
  issued within the leeway after the sign-out is refused too; that errs the
  safe way, as a sign-in a few seconds later is rare and can simply be retried.
* **The lifetime.** Past ``expires_at`` no token the entry could match still
  passes the ``exp`` check, so the entry can be dropped: the boundary, plus
  the longest lifetime a token may have, plus the leeway the ``exp`` check allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from ._settings import AuthSettings
from .revocation import Revocation

__all__ = ["build_revocation", "revocation_for", "revocation_time"]


def revocation_time(moment: float | datetime | None, clock: Callable[[], float]) -> float:
    """``moment`` as a Unix time: now (by ``clock``) when None; an aware datetime or a finite number otherwise."""
    if moment is None:
        return clock()
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a revocation time must be timezone-aware")
        return moment.timestamp()
    if isinstance(moment, bool) or not isinstance(moment, (int, float)) or not math.isfinite(moment):
        raise ValueError("a revocation time must be a finite Unix time or an aware datetime")
    return float(moment)


def build_revocation(
    kind: Literal["user", "session"],
    user_pool_id: str,
    subject: str,
    *,
    before: float | datetime | None = None,
    clock: Callable[[], float],
    leeway_seconds: float,
    max_token_lifetime_seconds: float,
) -> Revocation:
    """The entry that revokes ``subject`` (a ``sub`` or an ``origin_jti``) in pool ``user_pool_id``.

    ``before`` is when the sign-out happened (default: now, by ``clock``, a
    wall clock in Unix seconds). ``leeway_seconds`` and
    ``max_token_lifetime_seconds`` are the pool's settings of those names.
    The entry's ``before`` is that time plus the leeway, and its
    ``expires_at`` that plus the lifetime plus the leeway again (see the
    module's docstring). Raises ValueError for an empty subject or an
    unusable time.
    """
    if kind not in ("user", "session"):
        raise ValueError("a revocation is of kind 'user' or 'session'")
    if not isinstance(subject, str) or not subject:
        raise ValueError("a revocation needs a non-empty subject (sub or origin_jti)")
    boundary = revocation_time(before, clock) + leeway_seconds
    return Revocation(
        kind, user_pool_id, subject, boundary, boundary + max_token_lifetime_seconds + leeway_seconds
    )


def revocation_for(
    settings: AuthSettings,
    kind: Literal["user", "session"],
    subject: str,
    *,
    before: float | datetime | None = None,
    clock: Callable[[], float],
) -> Revocation:
    """:func:`build_revocation` with the leeway and lifetime of a pool's settings."""
    return build_revocation(
        kind,
        settings.user_pool_id,
        subject,
        before=before,
        clock=clock,
        leeway_seconds=settings.leeway_seconds,
        max_token_lifetime_seconds=settings.max_token_lifetime_seconds,
    )
