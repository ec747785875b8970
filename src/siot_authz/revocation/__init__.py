"""Revoking tokens before they expire: per user (GlobalSignOut) or per session (RevokeToken).

``MemoryRevocations`` (the default) holds them in one process. ``RedisRevocations``
(the ``redis`` extra) shares them between every worker and host through
Redis, each process enforcing a local mirror so no request waits on Redis.
"""

from typing import TYPE_CHECKING

from ._base import (
    BackendState,
    Revocation,
    RevocationBackend,
    RevocationMirror,
    RevocationStatus,
    RevocationStoreUnavailable,
)
from ._memory import MemoryRevocations

if TYPE_CHECKING:
    from ._redis import RedisRevocations

__all__ = [
    "BackendState",
    "MemoryRevocations",
    "RedisRevocations",
    "Revocation",
    "RevocationBackend",
    "RevocationMirror",
    "RevocationStatus",
    "RevocationStoreUnavailable",
]


def __getattr__(name: str) -> object:
    # RedisRevocations is imported on first use, so that without the
    # ``redis`` extra installed nothing changes and ``redis`` is never imported.
    if name == "RedisRevocations":
        from ._redis import RedisRevocations

        return RedisRevocations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
