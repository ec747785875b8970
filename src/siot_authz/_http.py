"""Fetching the JWKS document with hard limits, in sync and async flavours.

The limits are what make a slow, hostile or broken key endpoint harmless:
redirects are never followed (a redirect could move key loading to a host we
do not trust), the body is capped while it streams in, and the whole fetch,
including one immediate retry of a transient failure, must end before a
single deadline.
"""

from __future__ import annotations

import ssl
import time

import anyio
import httpx

__all__ = ["JwksFetchError", "fetch_jwks", "fetch_jwks_sync"]


class JwksFetchError(Exception):
    """The JWKS could not be fetched; ``reason`` is a short code safe to log."""

    def __init__(self, reason: str, *, is_transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.is_transient = is_transient


# Identity encoding only: the size cap then counts the bytes we keep, and no
# small compressed body can inflate into a large one.
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "siot-authz"}


def _status_error(response: httpx.Response) -> JwksFetchError | None:
    if response.status_code == 200:
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            return JwksFetchError("content_encoding_refused", is_transient=False)
        return None
    if 300 <= response.status_code < 400:
        return JwksFetchError(f"http_{response.status_code}_redirect_refused", is_transient=False)
    return JwksFetchError(f"http_{response.status_code}", is_transient=response.status_code >= 500)


def _transport_error(exc: httpx.HTTPError) -> JwksFetchError:
    if isinstance(exc, httpx.TimeoutException):
        return JwksFetchError("timeout", is_transient=True)
    return JwksFetchError(f"transport_{type(exc).__name__}", is_transient=True)


def _too_large(max_bytes: int) -> JwksFetchError:
    return JwksFetchError(f"body_over_{max_bytes}_bytes", is_transient=False)


async def _fetch_once(client: httpx.AsyncClient, url: str, max_bytes: int) -> bytes:
    async with client.stream("GET", url, headers=_HEADERS, follow_redirects=False) as response:
        status_error = _status_error(response)
        if status_error is not None:
            raise status_error
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
        return bytes(body)


async def fetch_jwks(
    url: str,
    *,
    time_limit: float,
    max_bytes: int,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """Fetch ``url`` and return its body, or raise :class:`JwksFetchError`.

    A fresh client per fetch: fetches are rare (once per TTL), and a client
    bound to no event loop cannot break when the caller's loop changes.
    """
    deadline = time.monotonic() + time_limit
    async with httpx.AsyncClient(
        timeout=time_limit, follow_redirects=False, verify=verify, transport=transport
    ) as client:
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            try:
                with anyio.fail_after(max(remaining, 0.001)):
                    return await _fetch_once(client, url, max_bytes)
            except TimeoutError:
                error = JwksFetchError("timeout", is_transient=False)
            except httpx.HTTPError as exc:
                error = _transport_error(exc)
            except JwksFetchError as exc:
                error = exc
            if attempt == 2 or not error.is_transient or time.monotonic() >= deadline:
                raise error
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch_once_sync(client: httpx.Client, url: str, max_bytes: int, deadline: float) -> bytes:
    # Each connect or read may use only the time left before the deadline.
    remaining = httpx.Timeout(max(deadline - time.monotonic(), 0.001))
    with client.stream("GET", url, headers=_HEADERS, timeout=remaining, follow_redirects=False) as response:
        status_error = _status_error(response)
        if status_error is not None:
            raise status_error
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
            if time.monotonic() > deadline:
                raise JwksFetchError("timeout", is_transient=False)
        return bytes(body)


def fetch_jwks_sync(
    url: str,
    *,
    time_limit: float,
    max_bytes: int,
    client: httpx.Client,
) -> bytes:
    """Blocking twin of :func:`fetch_jwks`, for ``verify_sync``.

    Each network operation gets only the time left before the deadline, and
    the deadline is checked between chunks, so a server that trickles bytes
    cannot hold the caller much past ``timeout``.
    """
    deadline = time.monotonic() + time_limit
    for attempt in (1, 2):
        try:
            return _fetch_once_sync(client, url, max_bytes, deadline)
        except httpx.HTTPError as exc:
            error = _transport_error(exc)
        except JwksFetchError as exc:
            error = exc
        if attempt == 2 or not error.is_transient or time.monotonic() >= deadline:
            raise error
    raise AssertionError("unreachable")  # pragma: no cover
