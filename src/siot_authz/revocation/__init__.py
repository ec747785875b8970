"""Revoking tokens before they expire: per user (GlobalSignOut) or per session (RevokeToken).

``MemoryRevocations`` (the default) holds them in one process. ``RedisRevocations``
(the ``redis`` extra) shares them between every worker and host through
Redis, each process enforcing a local mirror so no request waits on Redis.
"""

from ._base import (
    BackendState,
    Revocation,
    RevocationBackend,
    RevocationMirror,
    RevocationStatus,
    RevocationStoreUnavailable,
)
from ._memory import MemoryRevocations

__all__ = [
    "BackendState",
    "MemoryRevocations",
    "Revocation",
    "RevocationBackend",
    "RevocationMirror",
    "RevocationStatus",
    "RevocationStoreUnavailable",
]
