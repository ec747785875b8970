"""The revocation entries in Redis: their key layout, writing one, fetching some, loading all.

Layout, under a ``prefix`` (default ``siot_authz``):

* one key per entry, ``<prefix>:rev:<kind>:<pool>:<subject>``, holding the
  entry's JSON and expiring by itself (PEXPIREAT) when the entry can no
  longer match a valid token. In a cluster the keys spread over every slot:
  there is no hash tag, so no node holds more than its share;
* a pub/sub channel, ``<prefix>:revocations``, on which every write is
  published by the same atomic script that stores it.

Every operation here blocks, on one thread-safe client. The async faces
run them in a worker thread: writes and listings are rare administrative
calls, and a single implementation keeps the plain and the cluster paths
from drifting apart. The follower (``_redis_follower``), the lookup
(``_redis_lookup``) and ``RedisRevocations`` all read and write through it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.exceptions import ReadOnlyError

from ._base import MAX_SUBJECT_BYTES, Revocation
from ._redis_client import RedisTarget

__all__ = ["RedisStore", "parse_entry"]

logger = logging.getLogger("siot_authz")

#: Keys per SCAN step, and per MGET.
_BATCH = 500

#: The largest stored entry parsed: a subject of MAX_SUBJECT_BYTES, escaped
#: at worst six bytes a character, plus the pool id and the JSON around them.
MAX_ENTRY_BYTES = 6 * MAX_SUBJECT_BYTES + 1024

# Stores an entry unless Redis holds a later ``before`` for the same key,
# sets its expiry, and publishes what it stored, all in one atomic step, so a
# subscriber that loads after subscribing can miss nothing. Returns the entry
# Redis now holds, for the writer's own mirror. It touches one key, so in a
# cluster it runs on that key's node; PUBLISH there reaches every node.
_STORE_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held then
  local ok, entry = pcall(cjson.decode, held)
  if ok and type(entry) == 'table' and tonumber(entry['before'])
     and tonumber(entry['before']) > tonumber(ARGV[2]) then
    return held
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return ARGV[1]
"""


def parse_entry(raw: bytes | str | None) -> Revocation | None:
    """An entry as stored or published, or None (logged) for anything malformed."""
    if raw is None:
        return None  # expired between SCAN and fetch
    if len(raw) > MAX_ENTRY_BYTES:
        # Refused before parsing: a huge value written to the store by anyone
        # with access must not cost every follower a parse of its size.
        logger.warning("revocation_entry_malformed: ignored an entry of %d bytes", len(raw))
        return None
    try:
        return Revocation.from_json(json.loads(raw))
    except ValueError:
        logger.warning("revocation_entry_malformed: ignored an entry that is not a revocation")
        return None


def _glob_escaped(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class RedisStore:
    """Reads and writes revocation entries at one Redis (server or cluster) under one prefix; blocking."""

    def __init__(self, target: RedisTarget, prefix: str) -> None:
        if not prefix or ":" in prefix:
            raise ValueError("prefix must be non-empty and contain no ':'")
        self.target = target
        self.prefix = prefix
        self.channel = f"{prefix}:revocations"
        self._pattern = f"{_glob_escaped(prefix)}:rev:*"
        self._client: redis.Redis | redis.RedisCluster | None = None
        self._lock = threading.Lock()

    def key(self, kind: str, user_pool_id: str, subject: str) -> str:
        """Where the entry for this user or session lives."""
        return f"{self.prefix}:rev:{kind}:{user_pool_id}:{subject}"

    def _connected(self) -> redis.Redis | redis.RedisCluster:
        # Built on first use (a cluster client asks for the topology as it is built).
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self.target.sync_client(retries=2)
                client = self._client
        return client

    def write(self, entry: Revocation) -> Revocation | None:
        """Store and publish ``entry``; returns what Redis now holds for its key (a later ``before`` wins)."""
        # PEXPIREAT rounds up so Redis never drops an entry before a mirror would.
        expires_ms = math.ceil(entry.expires_at * 1000)
        payload = json.dumps(entry.to_json(), separators=(",", ":"))
        key = self.key(entry.kind, entry.user_pool_id, entry.subject)
        args = (payload, repr(entry.before), str(expires_ms), self.channel)
        try:
            held = self._connected().eval(_STORE_SCRIPT, 1, key, *args)
        except ReadOnlyError:
            # The server this connection reaches was demoted to a replica by a
            # failover, and the endpoint's name now points at the new primary
            # (ElastiCache's primary endpoint): drop the pooled connections,
            # which would keep reaching the old one, and write once more.
            self.close()
            held = self._connected().eval(_STORE_SCRIPT, 1, key, *args)
        return parse_entry(held)

    def fetch(self, keys: Sequence[str]) -> list[Revocation | None]:
        """The entries at ``keys``, None where there is none; one round trip per node involved."""
        client = self._connected()
        values: list[Any] = []
        for start in range(0, len(keys), _BATCH):
            batch = keys[start : start + _BATCH]
            if isinstance(client, redis.RedisCluster):
                values += client.mget_nonatomic(batch)  # keys of different slots: one MGET per slot
            else:
                values += client.mget(batch)
        return [parse_entry(value) for value in values]

    def load(self) -> list[Revocation]:
        """Every entry: SCAN on every primary (a cluster client scans each in turn), then fetch."""
        keys = list(self._connected().scan_iter(match=self._pattern, count=_BATCH))
        return [entry for entry in self.fetch(keys) if entry is not None]

    def write_all(self, entries: Iterable[Revocation]) -> None:
        """Write each entry back (after Redis lost them)."""
        for entry in entries:
            self.write(entry)

    def nodes(self) -> list[tuple[str, int]]:
        """Every node to subscribe on: the server itself, or each cluster node, primaries first."""
        client = self._connected()
        if isinstance(client, redis.RedisCluster):
            nodes = [*client.get_primaries(), *client.get_replicas()]  # type: ignore[no-untyped-call]
            return [(node.host, int(node.port)) for node in nodes]
        return [(self.target.host, self.target.port)]

    def close(self) -> None:
        """Close the client's connections; the next call opens new ones."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
