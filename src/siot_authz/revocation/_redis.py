"""Revocations shared by every worker and host through Redis, enforced from a local mirror.

``RedisRevocations`` puts together the three parts, each in its own module:

* where Redis is and how to reach it (``_redis_client``: URL schemes, TLS,
  AUTH and ACL users, cluster mode);
* the entries in Redis (``_redis_store``: key layout, writing, listing);
* following them (``_redis_follower``: subscription, full load, heartbeat).

For processes frozen between calls (AWS Lambda), ``_redis_lookup`` asks
Redis for the entries of each token instead of following.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from ._base import RevocationMirror, RevocationStatus, RevocationStoreUnavailable
from ._redis_client import RedisTarget
from ._redis_follower import RedisFollower, describe_error
from ._redis_store import RedisStore
from ._redis_writing import StoreWriting

__all__ = ["RedisRevocations"]


class RedisRevocations(StoreWriting):
    """Revocations in Redis, enforced in every process from a mirror kept current in the background.

    ``url`` says where Redis is and how to reach it: ``redis://`` or
    ``rediss://`` (TLS) for one server, ``redis+cluster://`` or
    ``rediss+cluster://`` for Redis Cluster, with ``user:password@`` (an ACL
    user) or ``:password@`` (AUTH) before the host. Server certificates are
    verified against the system's trust store, or ``tls_ca_file`` (PEM).
    Messages never show the credentials; a URL that cannot be parsed is
    refused with a ValueError that quotes none of it.

    ``max_unconfirmed_seconds`` is how long a mirror may go without
    confirmation from Redis before requests are refused with 503
    ``revocation_unavailable``; until then an unreachable Redis leaves the
    last mirror enforced (``degraded``). The default, 300 s, rides out a
    Redis restart or failover without refusing traffic, while bounding how
    long a revocation made elsewhere can go unenforced here to five minutes,
    a small part of a token's lifetime. ``None`` never fails closed once
    loaded. A process fails closed until its first full load: with nothing
    loaded, there is nothing to enforce.

    Recording (``add``/``add_sync``) and listing (``entries``/``entries_sync``)
    talk to Redis directly and need no :meth:`start`; enforcing needs
    :meth:`start` (async apps; ``CognitoAuth``'s lifespan calls it) or
    :meth:`start_sync` (processes without an event loop).
    """

    name = "redis"
    can_fail_closed = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "siot_authz",
        max_unconfirmed_seconds: float | None = 300.0,
        start_timeout_seconds: float = 5.0,
        tls_ca_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Follow the revocations at ``url`` under ``prefix`` (share a prefix to share revocations)."""
        if max_unconfirmed_seconds is not None and not max_unconfirmed_seconds > 0:
            raise ValueError("max_unconfirmed_seconds must be positive, or None to never fail closed")
        self.store = RedisStore(RedisTarget.from_url(url, tls_ca_file=tls_ca_file), prefix)
        self.mirror = RevocationMirror(clock=clock)
        self.follower = RedisFollower(
            self.store,
            self.mirror,
            max_unconfirmed_seconds=max_unconfirmed_seconds,
            start_timeout_seconds=start_timeout_seconds,
            clock=clock,
        )
        self._clock = clock

    @property
    def where(self) -> str:
        """Where Redis is, credentials withheld: what messages and logs show."""
        return self.store.target.where

    @property
    def prefix(self) -> str:
        """The key prefix shared by the services that share revocations."""
        return self.store.prefix

    @property
    def channel(self) -> str:
        """The pub/sub channel every write is published on."""
        return self.store.channel

    @property
    def max_unconfirmed_seconds(self) -> float | None:
        """How long the mirror may go unconfirmed before requests are refused (None: never)."""
        return self.follower.max_unconfirmed_seconds

    @property
    def start_timeout_seconds(self) -> float:
        """How long :meth:`start` waits for the first full load."""
        return self.follower.start_timeout_seconds

    # -- the request path and health ------------------------------------------------------

    def is_failed_closed(self) -> bool:
        """True when the mirror has not been loaded, or has gone unconfirmed longer than allowed."""
        return self.follower.is_failed_closed()

    def status(self) -> RevocationStatus:
        """``starting`` until loaded, then ``ok``, ``degraded`` (Redis unreachable) or ``failed`` (closed)."""
        return self.follower.status(self.name)

    # -- recording and listing ------------------------------------------------------------

    def _unreachable(self, error: BaseException, consequence: str) -> RevocationStoreUnavailable:
        self.follower.last_error = describe_error(error)
        return RevocationStoreUnavailable(
            f"the revocation store at {self.where} is unreachable ({self.follower.last_error}); {consequence}"
        )

    # -- following ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin following Redis in a background task; waits up to ``start_timeout_seconds`` for the first load.

        If Redis is unreachable, start-up goes on: the task keeps retrying
        and requests are refused with 503 until the set is loaded.
        """
        await self.follower.start()

    def start_sync(self) -> None:
        """Begin following Redis in a daemon thread; for processes that only use ``verify_sync``.

        The thread runs the same follower on a private event loop. Waits up
        to ``start_timeout_seconds`` for the first load; until then requests
        are refused with 503.
        """
        self.follower.start_sync()

    async def stop(self) -> None:
        """Stop following (task or thread) and close connections; the mirror stays as it was."""
        await self.follower.stop()
        await asyncio.to_thread(self.store.close)

    def stop_sync(self) -> None:
        """Stop the thread :meth:`start_sync` began and close connections."""
        self.follower.stop_sync()
        self.store.close()
