"""Readiness: can this process verify tokens right now, and if not, why not."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ._key_cache import KeyStatus
from .revocation import RevocationStatus

__all__ = ["AuthHealth", "PoolHealth"]


@dataclass(frozen=True)
class PoolHealth:
    """One pool's signing keys."""

    user_pool_id: str
    keys: KeyStatus


@dataclass(frozen=True)
class AuthHealth:
    """What :meth:`TokenVerifier.health` reports; ``is_ready`` is what a readiness probe wants.

    Ready means every pool holds signing keys (stale ones count: they still
    verify while a refresh is retried) and the revocation list is enforceable:
    loaded, and not failed closed.
    """

    is_ready: bool
    pools: tuple[PoolHealth, ...]
    revocation: RevocationStatus

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for a ``/readyz`` body."""
        return asdict(self)
