"""Fetching the JWKS document with hard limits, in sync and async flavours.

The limits are what make a slow, hostile or broken key endpoint harmless:

* redirects are never followed (a redirect could move key loading to a host
  we do not trust);
* only the identity encoding is accepted, so the size cap counts the bytes we
  keep and no small compressed body can inflate into a large one;
* the body is capped while it streams in, and a declared ``Content-Length``
  over the cap is refused before any of the body is read;
* at most one immediate retry, and only of a transient failure (a 5xx, a
  dropped connection); the whole fetch, retry included, runs against one
  deadline.

The async fetch is cut off exactly at the deadline. httpx's timeouts apply to
each read, not to a whole request, so a server trickling its headers one byte
at a time would hold a blocking fetch for ever; the sync fetch therefore runs
in a daemon thread and the caller waits for it only until the deadline (the
abandoned thread ends at its own next timeout).
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

# httpx (and anyio under it) are imported by the functions that fetch, not
# here: about 0.1 s of start-up that a process holding its keys from a JWKS
# file, or one that has not fetched yet, should not pay.

__all__ = ["JwksFetchError", "fetch_jwks", "fetch_jwks_sync", "shared_ssl_context"]

_ssl_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_ssl_contexts_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context for every HTTPS call the package makes: one per process for each CA setting.

    Loading the CA bundle costs 20 to 30 ms of CPU, which every pool's key cache
    paid at its first fetch, and the Cognito client and the contract probes on
    every call (a contract run logs in and sends eight probes for each pool).
    Nothing changes a context once built, so they share it; it is keyed by
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, which httpx reads to build one, so
    a process that sets them later still gets what it asked for. Every caller
    speaks HTTP/1.1: httpcore sets the context's ALPN protocols on each new
    connection, so a caller asking for HTTP/2 would need a context of its own.
    """
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _ssl_contexts_lock:
        context = _ssl_contexts.get(key)
        if context is None:
            import httpx

            context = _ssl_contexts[key] = httpx.create_ssl_context()
        return context


class JwksFetchError(Exception):
    """The JWKS could not be fetched; ``reason`` is a short code safe to log."""

    def __init__(self, reason: str, *, is_transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.is_transient = is_transient


_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "siot-authz"}


def _too_large(max_bytes: int) -> JwksFetchError:
    return JwksFetchError(f"body_over_{max_bytes}_bytes", is_transient=False)


def _response_error(response: httpx.Response, max_bytes: int) -> JwksFetchError | None:
    """Why the response must be refused from its status line and headers alone, or None."""
    status = response.status_code
    if 300 <= status < 400:
        return JwksFetchError(f"http_{status}_redirect_refused", is_transient=False)
    if status != 200:
        return JwksFetchError(f"http_{status}", is_transient=status >= 500)
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return JwksFetchError("content_encoding_refused", is_transient=False)
    declared = response.headers.get("Content-Length", "")
    # A declared length is only a hint (it may lie either way); the streaming
    # cap below is what holds. Refusing early just saves reading the body.
    if declared.isdigit() and int(declared) > max_bytes:
        return _too_large(max_bytes)
    return None


# The libraries under httpx. httpx turns their errors into its own, but not on every path (it
# does not wrap closing a response stream, for one), and under load the suite once saw an
# httpcore RemoteProtocolError from a server that hung up reach us as it was. It is the
# network's failure all the same, not a bug of ours, so it is retried and reported as one.
_HTTP_STACK = frozenset(["httpcore", "h11"])


def _is_from_http_stack(exc: Exception) -> bool:
    return type(exc).__module__.partition(".")[0] in _HTTP_STACK


class _Attempts:
    """The retry policy both faces share: one immediate retry, of a transient failure only, while time is left."""

    def __init__(self, time_limit: float) -> None:
        self.deadline = time.monotonic() + time_limit
        self._count = 0

    def time_left(self) -> float:
        """Seconds to the deadline: each attempt may use all of them (never zero, which httpx reads as none)."""
        return max(self.deadline - time.monotonic(), 0.001)

    def give_up_or_retry(self, exc: Exception) -> JwksFetchError | None:
        """The error to raise after ``exc`` ended an attempt, or None to try again.

        Anything but a timeout, an HTTP error or a refusal of ours is a bug
        or a setup error, and is raised as it is.
        """
        import httpcore
        import httpx

        self._count += 1
        if isinstance(exc, JwksFetchError):
            error = exc
        elif isinstance(exc, (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException)):
            # Every operation is given all the time left, so none is left to retry in.
            error = JwksFetchError("timeout", is_transient=False)
        elif isinstance(exc, httpx.HTTPError) or _is_from_http_stack(exc):
            error = JwksFetchError(f"transport_{type(exc).__name__}", is_transient=True)
        else:
            raise exc
        is_retried = self._count == 1 and error.is_transient and time.monotonic() < self.deadline
        return None if is_retried else error


async def _fetch_once(client: httpx.AsyncClient, url: str, max_bytes: int) -> bytes:
    async with client.stream("GET", url, headers=_HEADERS, follow_redirects=False) as response:
        error = _response_error(response, max_bytes)
        if error is not None:
            raise error
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
    import anyio
    import httpx

    attempts = _Attempts(time_limit)
    async with httpx.AsyncClient(
        timeout=time_limit, follow_redirects=False, verify=verify, transport=transport
    ) as client:
        while True:
            try:
                with anyio.fail_after(attempts.time_left()):
                    return await _fetch_once(client, url, max_bytes)
            except Exception as exc:
                error = attempts.give_up_or_retry(exc)
            if error is not None:
                raise error


def _fetch_once_sync(client: httpx.Client, url: str, max_bytes: int, attempts: _Attempts) -> bytes:
    import httpx

    # Each connect or read may use only the time left before the deadline.
    remaining = httpx.Timeout(attempts.time_left())
    with client.stream("GET", url, headers=_HEADERS, timeout=remaining, follow_redirects=False) as response:
        error = _response_error(response, max_bytes)
        if error is not None:
            raise error
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
            if time.monotonic() > attempts.deadline:
                raise JwksFetchError("timeout", is_transient=False)
        return bytes(body)


def fetch_jwks_sync(
    url: str,
    *,
    time_limit: float,
    max_bytes: int,
    client: httpx.Client,
) -> bytes:
    """Blocking twin of :func:`fetch_jwks`, for ``verify_sync``; ``client`` must not follow redirects.

    Returns or raises :class:`JwksFetchError` within ``time_limit``, whatever
    the server does.
    """
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def fetch() -> None:
        try:
            outcome["body"] = _fetch_with_retry_sync(client, url, max_bytes, _Attempts(time_limit))
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=fetch, name="siot-authz-jwks-fetch", daemon=True).start()
    if not finished.wait(time_limit):
        raise JwksFetchError("timeout", is_transient=False)
    if "error" in outcome:
        raise outcome["error"]
    body: bytes = outcome["body"]
    return body


def _fetch_with_retry_sync(client: httpx.Client, url: str, max_bytes: int, attempts: _Attempts) -> bytes:
    while True:
        try:
            return _fetch_once_sync(client, url, max_bytes, attempts)
        except Exception as exc:
            error = attempts.give_up_or_retry(exc)
        if error is not None:
            raise error
