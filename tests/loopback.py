"""Ports for the servers the tests start: chosen where no outgoing connection can take them."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_random = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; macOS starts higher still
    return low, high


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, below the kernel's ephemeral range.

    A port from ``bind(("127.0.0.1", 0))`` lies in the ephemeral range, where
    the kernel also picks the local port of every outgoing connection. Between
    choosing it and redis-server, uvicorn or node binding it, a client socket
    in another test process can take it, and the server exits "address in
    use". Below that range only a listener can hold a port, and the bind here
    rules that out at the time of choosing; two test processes drawing the
    same one of ~10,000 ports is the one chance left.
    """
    low, _ = _ephemeral_range()
    first = max(1024, low - 10_000)
    for _ in range(100):
        port = _random.randrange(first, low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {first} and {low}")
