"""Revoking tokens before they expire: per user (GlobalSignOut) or per session (RevokeToken).

``MemoryRevocations`` (the default) holds them in one process. ``RedisRevocations``
(the ``redis`` extra) shares them between every worker and host through
Redis, each process enforcing a local mirror so no request waits on Redis.
``RedisLookupRevocations`` reads the same store per token, with no
background thread, for processes frozen between calls (AWS Lambda).
"""

from typing import TYPE_CHECKING

from ._base import (
    MAX_SUBJECT_BYTES,
    BackendState,
    Revocation,
    RevocationBackend,
    RevocationListener,
    RevocationMirror,
    RevocationStatus,
    RevocationStoreUnavailable,
)
from ._memory import MemoryRevocations

if TYPE_CHECKING:
    from ._redis import RedisRevocations
    from ._redis_lookup import RedisLookupRevocations

__all__ = [
    "MAX_SUBJECT_BYTES",
    "BackendState",
    "MemoryRevocations",
    "RedisLookupRevocations",
    "RedisRevocations",
    "Revocation",
    "RevocationBackend",
    "RevocationListener",
    "RevocationMirror",
    "RevocationStatus",
    "RevocationStoreUnavailable",
]


def __getattr__(name: str) -> object:
    # The Redis backends are imported on first use, so that without the
    # ``redis`` extra installed nothing changes and ``redis`` is never imported.
    if name == "RedisRevocations":
        from ._redis import RedisRevocations

        return RedisRevocations
    if name == "RedisLookupRevocations":
        from ._redis_lookup import RedisLookupRevocations

        return RedisLookupRevocations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
