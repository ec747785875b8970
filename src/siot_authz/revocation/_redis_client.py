"""Where Redis is and how to reach it: one parser of Redis URLs, and the one place clients are built.

The follower, the store, the lookup and the CLI all connect through
:class:`RedisTarget`, so TLS, AUTH and cluster mode mean the same thing
everywhere. The URL is parsed here, not by redis-py, for two reasons:

* credentials must never reach a message or a log, whatever the URL's
  shape. Passwords are often pasted unencoded (``/``, ``:``, ``@`` and ``?``
  included), which makes a standard parser take part of the password for the
  host or port and then quote it in its errors. Here the credentials are
  whatever sits before the *last* ``@`` of the authority;
* a URL that cannot be parsed is refused with a message that quotes none of
  it, since any part of it might be a password.

Schemes, and their ElastiCache counterparts (see docs/deployment.md):

========================  ===========================================================
``redis://``              one server, plain TCP (a node-based cluster without
                          in-transit encryption, cluster mode disabled)
``rediss://``             the same over TLS, the server's certificate verified
``redis+cluster://``      Redis Cluster: any node's address; the others are found
``rediss+cluster://``     Redis Cluster over TLS (ElastiCache Serverless, or a
                          cluster-mode-enabled cluster with in-transit encryption)
========================  ===========================================================

``user:password@`` gives an ACL user (ElastiCache RBAC); ``:password@`` (or a
password with no ``:``) gives the legacy AUTH password (an ElastiCache AUTH
token). Both may be percent-encoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

__all__ = ["SOCKET_TIMEOUT", "RedisTarget", "redacted_url"]

#: Socket timeouts: nothing ever hangs on a Redis that accepts but does not answer.
SOCKET_TIMEOUT = 2.0

_SCHEMES = {
    # scheme: (is_tls, is_cluster)
    "redis": (False, False),
    "rediss": (True, False),
    "redis+cluster": (False, True),
    "rediss+cluster": (True, True),
}

_SHAPE = "expected redis[s][+cluster]://[[user]:password@]host[:port][/db]"


def _split(url: object) -> tuple[str, str | None, str]:
    """The scheme, the credentials (or None) and the rest; ValueError (quoting nothing) otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"the Redis URL cannot be parsed ({_SHAPE})")
    scheme, rest = url.split("://", 1)
    # Everything before the last "@" is credentials, whatever it holds: a
    # password pasted unencoded may contain "/", ":", "?", "#" or "@".
    credentials, at, location = rest.rpartition("@")
    return scheme.lower(), credentials if at else None, location


def redacted_url(url: object) -> str:
    """Where Redis is, for messages: scheme, host, port and database, never credentials nor options.

    Anything that does not look like a Redis URL is shown as a placeholder,
    since any part of it might be a password.
    """
    try:
        scheme, credentials, location = _split(url)
    except ValueError:
        return "<unparsable Redis URL>"
    if scheme not in _SCHEMES:
        return "<unparsable Redis URL>"
    # Options after "?" may hold credentials too (redis-py reads ?password=).
    location = location.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{'***@' if credentials is not None else ''}{location}"


def _refused(reason: str) -> ValueError:
    return ValueError(f"the Redis URL cannot be parsed: {reason} ({_SHAPE}; the URL is not shown)")


def _host_and_port(location: str) -> tuple[str, int]:
    if location.startswith("["):  # an IPv6 literal
        host, bracket, after = location[1:].partition("]")
        if not bracket or not host:
            raise _refused("an IPv6 host needs its closing bracket")
        if after and not after.startswith(":"):
            raise _refused("the host is followed by something other than a port")
        port_text = after[1:] if after else ""
    else:
        host, _, port_text = location.partition(":")
    if not host or any(char.isspace() or char in "@/?#[]" for char in host):
        raise _refused("the host is missing or malformed")
    if not port_text:
        return host, 6379
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _refused("the port is not a number from 1 to 65535")
    return host, int(port_text)


def _credentials(text: str | None) -> tuple[str | None, str | None]:
    if text is None:
        return None, None
    user, colon, password = text.partition(":")
    if not colon:
        return None, unquote(user) or None  # "password@host": the legacy AUTH form
    return unquote(user) or None, unquote(password) or None


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL plus TLS options: builds every client the revocation backends use."""

    host: str
    port: int
    db: int
    is_tls: bool
    is_cluster: bool
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    #: The URL with its credentials and options withheld, for messages and logs.
    where: str = ""

    @classmethod
    def from_url(cls, url: str, *, tls_ca_file: str | os.PathLike[str] | None = None) -> RedisTarget:
        """Parse ``url``; ValueError (quoting none of the URL) if it is not a Redis URL this package reads.

        ``tls_ca_file`` is a PEM file of the CA that signed the server's
        certificate; without it, the system's trust store is used.
        """
        scheme, credentials, location = _split(url)
        if scheme not in _SCHEMES:
            raise _refused("the scheme is not redis, rediss, redis+cluster or rediss+cluster")
        is_tls, is_cluster = _SCHEMES[scheme]
        if "?" in location or "#" in location:
            raise _refused("options after '?' are not read; pass them to the constructor")
        authority, slash, path = location.partition("/")
        host, port = _host_and_port(authority)
        db_text = path.rstrip("/") if slash else ""
        if db_text and (not db_text.isascii() or not db_text.isdigit()):
            raise _refused("the database is not a number")
        db = int(db_text or 0)
        if is_cluster and db != 0:
            raise _refused("Redis Cluster has database 0 only")
        if tls_ca_file is not None and not is_tls:
            raise ValueError("tls_ca_file needs a TLS URL: rediss:// or rediss+cluster://")
        username, password = _credentials(credentials)
        return cls(
            host=host,
            port=port,
            db=db,
            is_tls=is_tls,
            is_cluster=is_cluster,
            username=username,
            password=password,
            tls_ca_file=None if tls_ca_file is None else os.fspath(tls_ca_file),
            where=redacted_url(url),
        )

    def _connection_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "username": self.username,
            "password": self.password,
            "socket_connect_timeout": SOCKET_TIMEOUT,
            "socket_timeout": SOCKET_TIMEOUT,
        }
        if self.is_tls:
            # Verified against the system store, or the CA file given; the
            # host name is checked too, asked for explicitly: redis-py 5 (allowed by
            # redis>=5) does not check it by default. There is no switch to turn either off.
            options.update(
                ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True, ssl_ca_certs=self.tls_ca_file
            )
        return options

    @staticmethod
    def _backoff(retries: int) -> ExponentialBackoff | NoBackoff:
        return ExponentialBackoff(cap=0.5, base=0.05) if retries else NoBackoff()

    def sync_client(self, *, retries: int = 2) -> redis.Redis | redis.RedisCluster:
        """A blocking client; thread-safe. ``retries`` quick retries ride out a dropped connection."""
        retry = Retry(self._backoff(retries), retries)
        if self.is_cluster:
            return redis.RedisCluster(
                host=self.host, port=self.port, retry=retry, **self._connection_options()
            )
        return redis.Redis(
            host=self.host, port=self.port, db=self.db, retry=retry, **self._connection_options()
        )

    def async_node_client(self, host: str | None = None, port: int | None = None) -> aioredis.Redis:
        """An asyncio client on one server (or one cluster node) that never retries by itself.

        Pub/sub needs one connection to one node: in a cluster, a message
        published on any node reaches subscribers on every node. No retry,
        so every dropped connection reaches the caller, which must reload.
        """
        return aioredis.Redis(
            host=self.host if host is None else host,
            port=self.port if port is None else port,
            db=self.db,
            retry=AsyncRetry(NoBackoff(), 0),
            **self._connection_options(),
        )
