"""The key endpoint is untrusted: every way it can fail or misbehave ends in a quick, logged 503.

Each failure mode is served by the real loopback server and checked through
a FastAPI route, ``await verify`` and ``verify_sync`` with nothing cached:
the caller gets ``503 jwks_unavailable`` within a bound of the timeout, the
endpoint sees the expected number of requests (one retry, for transient
failures only), and the log names the reason without any token text.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import httpcore
import httpx
import pytest

import loopback
from siot_authz._http import JwksFetchError, fetch_jwks, fetch_jwks_sync
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer
from test_key_cache import FACES, Caller
from test_key_cache import make_caller as make_caller  # a fixture, re-exported for this module

MiB = 1024 * 1024
# Valid JSON, so only the size can be what refuses it.
HUGE_BODY = b'{"keys": [], "padding": "' + b"x" * MiB + b'"}'


@dataclass(frozen=True)
class Misbehaviour:
    """One way the endpoint fails: how it answers, and what we expect to see."""

    response: Callable[[str], JwksResponse]  # given the URL a redirect points to
    reason: str  # the reason code logged
    requests: int = 1  # requests the endpoint sees for one fetch
    settings: dict[str, Any] = field(default_factory=dict)


def answer(**fields: Any) -> Callable[[str], JwksResponse]:
    return lambda _target: JwksResponse(**fields)


def redirect(status: int) -> Callable[[str], JwksResponse]:
    return lambda target: JwksResponse(status=status, body=b"", headers={"Location": target})


MISBEHAVIOURS = {
    "http_500": Misbehaviour(answer(status=500, body=b'{"message": "boom"}'), "http_500", requests=2),
    "http_502": Misbehaviour(answer(status=502, body=b"bad gateway"), "http_502", requests=2),
    "http_503": Misbehaviour(answer(status=503, body=b""), "http_503", requests=2),
    "http_404": Misbehaviour(answer(status=404), "http_404"),
    "http_403": Misbehaviour(answer(status=403, body=b"{}"), "http_403"),
    "http_204": Misbehaviour(answer(status=204, body=b""), "http_204"),
    "redirect_301": Misbehaviour(redirect(301), "http_301_redirect_refused"),
    "redirect_302": Misbehaviour(redirect(302), "http_302_redirect_refused"),
    "redirect_307": Misbehaviour(redirect(307), "http_307_redirect_refused"),
    "redirect_308": Misbehaviour(redirect(308), "http_308_redirect_refused"),
    "html": Misbehaviour(answer(body=b"<html>maintenance</html>"), "jwks_not_utf8_json"),
    "not_utf8": Misbehaviour(answer(body=b'{"keys": ["\xff"]}'), "jwks_not_utf8_json"),
    "empty_body": Misbehaviour(answer(body=b""), "jwks_not_utf8_json"),
    "json_array": Misbehaviour(answer(body=b"[]"), "jwks_not_an_object"),
    "keys_not_array": Misbehaviour(answer(body=b'{"keys": {"kid": "a"}}'), "jwks_keys_not_an_array"),
    "single_jwk": Misbehaviour(answer(body=b'{"kty": "RSA", "kid": "a"}'), "jwks_keys_not_an_array"),
    "nan": Misbehaviour(answer(body=b'{"keys": [], "x": NaN}'), "jwks_non_finite_number"),
    "no_keys": Misbehaviour(answer(body=b'{"keys": []}'), "jwks_no_usable_key"),
    "only_unusable_keys": Misbehaviour(
        answer(body=b'{"keys": [{"kty": "EC", "kid": "a"}, {"kty": "oct", "kid": "b", "alg": "HS256"}]}'),
        "jwks_no_usable_key",
    ),
    "private_key_material": Misbehaviour(
        answer(body=b'{"keys": [{"kty": "oct", "kid": "b", "k": "c2VjcmV0"}]}'),
        "jwks_holds_private_key_material",
    ),
    "oversize_content_length": Misbehaviour(answer(body=HUGE_BODY), "body_over_262144_bytes"),
    "oversize_chunked": Misbehaviour(answer(body=HUGE_BODY, framing="chunked"), "body_over_262144_bytes"),
    "oversize_until_close": Misbehaviour(answer(body=HUGE_BODY, framing="close"), "body_over_262144_bytes"),
    # Trickled at 64 bytes per millisecond, the whole body would take over 16 s:
    # being refused for its size shows it was cut off while being read.
    "oversize_trickled": Misbehaviour(
        answer(body=HUGE_BODY, framing="close", trickle_seconds=0.001),
        "body_over_4096_bytes",
        settings={"max_jwks_bytes": 4096},
    ),
    "content_length_understated": Misbehaviour(
        answer(body=HUGE_BODY, headers={"Content-Length": "100"}), "jwks_not_utf8_json"
    ),
    "content_length_overstated": Misbehaviour(
        answer(headers={"Content-Length": str(10 * MiB)}), "body_over_262144_bytes"
    ),
    "gzip": Misbehaviour(
        answer(body=gzip.compress(b'{"keys": []}'), headers={"Content-Encoding": "gzip"}),
        "content_encoding_refused",
    ),
    "dropped_connection": Misbehaviour(
        answer(close_without_response=True), "transport_RemoteProtocolError", requests=2
    ),
    "slow_to_answer": Misbehaviour(
        answer(delay_seconds=1.5), "timeout", settings={"http_timeout_seconds": 0.5}
    ),
    "trickled_body": Misbehaviour(
        answer(trickle_seconds=0.25), "timeout", settings={"http_timeout_seconds": 0.5}
    ),
}


@pytest.fixture(scope="module")
def _redirect_target() -> Iterator[JwksServer]:
    with JwksServer(lambda: {"keys": []}, "/") as server:
        yield server


@pytest.fixture
def redirect_target(_redirect_target: JwksServer, issuer: LocalIssuer) -> JwksServer:
    """A second loopback server, publishing the issuer's JWKS, for redirects to point at."""
    _redirect_target.reset()
    _redirect_target.response = JwksResponse(body=json.dumps(issuer.jwks()).encode())
    return _redirect_target


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("name", MISBEHAVIOURS)
def test_misbehaving_endpoint_gives_quick_logged_503(
    name: str,
    face: str,
    make_caller: Callable[..., Caller],
    issuer: LocalIssuer,
    jwks_server: JwksServer,
    redirect_target: JwksServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    misbehaviour = MISBEHAVIOURS[name]
    caller = make_caller(face, **misbehaviour.settings)
    jwks_server.response = misbehaviour.response(redirect_target.url)
    token = issuer.mint()

    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="siot_authz"):
        outcome = caller.outcome(token)
    elapsed = time.monotonic() - started

    assert outcome == "503 jwks_unavailable"
    assert jwks_server.request_count == misbehaviour.requests
    assert redirect_target.request_count == 0
    assert f"jwks_fetch_failed reason={misbehaviour.reason} " in caplog.text
    assert "state=no keys held" in caplog.text
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text
    # Generous: a hang would take the server's whole delay or trickle (seconds more).
    assert elapsed < 3 * caller.verifier.settings.http_timeout_seconds + 1


# -- the fetch functions ------------------------------------------------------------------


def fetch(flavour: str, url: str, *, time_limit: float = 2.0, max_bytes: int = 256 * 1024) -> bytes:
    if flavour == "async":
        return asyncio.run(fetch_jwks(url, time_limit=time_limit, max_bytes=max_bytes))
    with loopback.client(follow_redirects=False) as client:
        return fetch_jwks_sync(url, time_limit=time_limit, max_bytes=max_bytes, client=client)


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_fetch_returns_the_body_and_asks_for_identity_encoding(
    flavour: str, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    body = fetch(flavour, jwks_server.url)

    assert json.loads(body) == issuer.jwks()
    assert jwks_server.request_headers[0]["accept-encoding"] == "identity"


@pytest.mark.parametrize("flavour", ["async", "sync"])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
@pytest.mark.parametrize(("extra", "is_refused"), [(0, False), (1, True)], ids=["at-cap", "one-over"])
def test_size_cap_is_exact_whatever_the_framing(
    flavour: str, framing: str, extra: int, is_refused: bool, jwks_server: JwksServer
) -> None:
    cap = 2048
    jwks_server.response = JwksResponse(body=b"x" * (cap + extra), framing=framing)  # type: ignore[arg-type]

    if is_refused:
        with pytest.raises(JwksFetchError) as caught:
            fetch(flavour, jwks_server.url, max_bytes=cap)
        assert caught.value.reason == f"body_over_{cap}_bytes"
    else:
        assert fetch(flavour, jwks_server.url, max_bytes=cap) == b"x" * cap


def wait_for_request_count(server: JwksServer, count: int) -> None:
    """The server thread records a request when it reads it, which may be after the client gave up."""
    deadline = time.monotonic() + 10
    while server.request_count < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room for a request too many to show up


@pytest.mark.parametrize("flavour", ["async", "sync"])
@pytest.mark.parametrize(
    ("response", "time_limit", "requests", "reason", "is_transient"),
    [
        (JwksResponse(status=503), 10.0, 2, "http_503", True),
        (JwksResponse(close_without_response=True), 10.0, 2, "transport_RemoteProtocolError", True),
        (JwksResponse(status=429), 10.0, 1, "http_429", False),
        (
            JwksResponse(status=302, headers={"Location": "/elsewhere"}),
            10.0,
            1,
            "http_302_redirect_refused",
            False,
        ),
        (JwksResponse(delay_seconds=3.0), 0.4, 1, "timeout", False),
    ],
    ids=["503", "dropped", "429", "302", "slow"],
)
def test_retries_once_and_only_transient_failures(
    flavour: str,
    response: JwksResponse,
    time_limit: float,
    requests: int,
    reason: str,
    is_transient: bool,
    jwks_server: JwksServer,
) -> None:
    # Only the slow case is about the deadline; the others get one long enough
    # that a loaded machine cannot turn them into a timeout.
    jwks_server.response = response

    with pytest.raises(JwksFetchError) as caught:
        fetch(flavour, jwks_server.url, time_limit=time_limit)

    assert caught.value.reason == reason
    assert caught.value.is_transient is is_transient
    wait_for_request_count(jwks_server, requests)
    assert jwks_server.request_count == requests
    assert jwks_server.requested_paths == [jwks_server.path] * requests


def fetch_failing_with(flavour: str, error: Exception, requests: list[httpx.Request]) -> bytes:
    """One fetch by either face through a transport whose every request raises ``error``.

    The URL is never dialled; each attempt is recorded in ``requests``.
    """

    def fail(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        raise error

    transport = httpx.MockTransport(fail)
    url = "http://127.0.0.1:9/pool/.well-known/jwks.json"
    if flavour == "async":
        return asyncio.run(fetch_jwks(url, time_limit=5.0, max_bytes=1024, transport=transport))
    with httpx.Client(transport=transport, follow_redirects=False) as client:
        return fetch_jwks_sync(url, time_limit=5.0, max_bytes=1024, client=client)


@pytest.mark.parametrize("flavour", ["async", "sync"])
@pytest.mark.parametrize(
    ("error", "reason", "attempts", "is_transient"),
    [
        (httpcore.RemoteProtocolError("Server disconnected"), "transport_RemoteProtocolError", 2, True),
        (httpcore.ReadError("connection reset"), "transport_ReadError", 2, True),
        (h11.RemoteProtocolError("bad status line"), "transport_RemoteProtocolError", 2, True),
        (httpcore.ReadTimeout("timed out"), "timeout", 1, False),
    ],
    ids=["httpcore-protocol", "httpcore-read", "h11-protocol", "httpcore-timeout"],
)
def test_an_error_of_the_libraries_under_httpx_counts_as_the_network_failing(
    flavour: str, error: Exception, reason: str, attempts: int, is_transient: bool
) -> None:
    # httpx translates these into its own errors on most paths, not all; one that slips
    # through is retried like any transport failure, never logged as a bug of ours.
    requests: list[httpx.Request] = []

    with pytest.raises(JwksFetchError) as caught:
        fetch_failing_with(flavour, error, requests)

    assert caught.value.reason == reason
    assert caught.value.is_transient is is_transient
    assert len(requests) == attempts


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_an_error_that_is_not_the_networks_is_raised_as_it_is(flavour: str) -> None:
    requests: list[httpx.Request] = []

    with pytest.raises(RuntimeError, match="a bug"):
        fetch_failing_with(flavour, RuntimeError("a bug"), requests)
    assert len(requests) == 1


@pytest.fixture
def header_trickling_url() -> Iterator[str]:
    """A raw loopback server that sends its status line and headers one byte every 0.2 s.

    Every single read succeeds well inside any per-read timeout, so only a
    deadline on the whole fetch can stop it.
    """
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            connection.recv(4096)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 20:
                if stop.wait(0.2):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    host, port = listener.getsockname()
    yield f"http://{host}:{port}/pool/.well-known/jwks.json"
    stop.set()
    listener.close()


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_fetch_ends_at_the_deadline_even_when_headers_trickle_in(
    header_trickling_url: str, flavour: str
) -> None:
    def fetch() -> bytes:
        if flavour == "async":
            return asyncio.run(fetch_jwks(header_trickling_url, time_limit=1.0, max_bytes=65536))
        with loopback.client(follow_redirects=False) as client:
            return fetch_jwks_sync(header_trickling_url, time_limit=1.0, max_bytes=65536, client=client)

    started = time.monotonic()
    with pytest.raises(JwksFetchError) as refused:
        fetch()
    assert refused.value.reason == "timeout"
    assert time.monotonic() - started < 3.0  # a generous bound; without the deadline it runs for ~20 s
