"""Ports for the servers the tests start, and plain HTTP calls to them that cost no TLS set-up.

``httpx.get()`` and every new ``httpx.Client()`` build a fresh TLS context and
load the CA bundle into it, about 30 ms of CPU each, even for an ``http://``
URL. A test polling a loopback server every few milliseconds spent most of
its CPU time on that. :func:`get`, :func:`post`, :func:`delete`, :func:`request` and
:func:`client` behave as httpx's own (a new connection per call, the same
options) with one TLS context built once per process.
"""

from __future__ import annotations

import random
import socket
import ssl
from functools import cache
from pathlib import Path
from typing import Any

import httpx

__all__ = ["client", "delete", "free_port", "get", "post", "request"]

_random = random.SystemRandom()


@cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default context (certifi's CAs, verified), made once."""
    return httpx.create_ssl_context()


def client(**options: Any) -> httpx.Client:
    """``httpx.Client(**options)``, with the shared TLS context unless ``verify`` is given."""
    options.setdefault("verify", _tls_context())
    return httpx.Client(**options)


def request(method: str, url: str, *, timeout: float = 5.0, **options: Any) -> httpx.Response:
    """``httpx.request``: one request on a new connection (``timeout`` as httpx's default, 5 s)."""
    with client(timeout=timeout) as one_off:
        return one_off.request(method, url, **options)


def get(url: str, **options: Any) -> httpx.Response:
    """``httpx.get``, without building a TLS context."""
    return request("GET", url, **options)


def post(url: str, **options: Any) -> httpx.Response:
    """``httpx.post``, without building a TLS context."""
    return request("POST", url, **options)


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


def delete(url: str, **options: Any) -> httpx.Response:
    """``httpx.delete``, without building a TLS context."""
    return request("DELETE", url, **options)
