"""Every HTTPS call the package makes checks the server's certificate, with the CAs the process trusts.

The key caches, logins, contract probes sent to a URL and ``siot-authz jwks`` share one TLS
context per process and CA setting (``_http.shared_ssl_context``). A shared context is one place
to lose verification for all of them at once, so each caller is sent to a loopback HTTPS server
whose certificate a test CA signed: refused before any request while the CA is not trusted, reached once
``SSL_CERT_FILE`` names it (the setting httpx reads, which the shared contexts are keyed by).
"""

from __future__ import annotations

import contextlib
import io
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from redis_server import CertificateAuthority, make_test_ca
from siot_authz import JwksUnavailable
from siot_authz._cognito_client import CognitoClient, CognitoUnreachable, Tokens
from siot_authz._key_cache import JwksCache
from siot_authz.cli._commands import fetch_key_set
from siot_authz.cli._exit import CommandFailed
from siot_authz.cli._terminal import Terminal
from siot_authz.testing import LocalIssuer, check_contract_probe


class _Answering(BaseHTTPRequestHandler):
    """Counts every request that got past the TLS handshake, and answers an empty JSON object."""

    def do_GET(self) -> None:  # the names http.server calls
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HttpsServer(ThreadingHTTPServer):
    requests = 0

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the refused handshakes: expected here


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_test_ca(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def https_server(test_ca: CertificateAuthority) -> Iterator[_HttpsServer]:
    server = _HttpsServer(("127.0.0.1", 0), _Answering)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(test_ca.cert_file, test_ca.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    # A short poll, so that shutdown() at the end of the module returns at once.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _log_in(url: str, issuer: LocalIssuer) -> None:
    CognitoClient(url, "client", timeout=5.0).initiate_auth("alice", "password")


def _probe(url: str, issuer: LocalIssuer) -> None:
    tokens = Tokens(issuer.mint(), issuer.mint(token_use="access"), None, 3600, "Bearer")
    check_contract_probe(tokens, url, "valid-raw", timeout=5.0)


def _refresh_key_cache(url: str, issuer: LocalIssuer) -> None:
    cache = JwksCache(issuer.settings(jwks_url=url + "/jwks.json", http_timeout_seconds=5.0))
    try:
        cache.get_key_sync(issuer.signing_key.kid)
    finally:
        cache.close()


def _fetch_keys(url: str, issuer: LocalIssuer) -> None:
    terminal = Terminal(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    fetch_key_set(url + "/jwks.json", terminal, time_limit=5.0, max_bytes=65536)


@pytest.mark.parametrize(
    ("call", "refusal", "wording"),
    [
        pytest.param(_log_in, CognitoUnreachable, "CERTIFICATE_VERIFY_FAILED", id="cognito-login"),
        pytest.param(_probe, AssertionError, r"got no response \(ConnectError\)", id="contract-probe"),
        pytest.param(_refresh_key_cache, JwksUnavailable, None, id="key-cache"),
        pytest.param(_fetch_keys, CommandFailed, "cannot fetch signing keys", id="cli-jwks"),
    ],
)
def test_refuses_a_server_whose_certificate_no_trusted_ca_signed(
    call: Callable[[str, LocalIssuer], None],
    refusal: type[Exception],
    wording: str | None,  # the key cache says only that the keys are unavailable
    issuer: LocalIssuer,
    https_server: _HttpsServer,
    test_ca: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"https://127.0.0.1:{https_server.server_address[1]}"
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    before = https_server.requests
    with pytest.raises(refusal, match=wording):
        call(url, issuer)
    assert https_server.requests == before  # refused in the handshake: nothing was sent

    # The same call, once the process trusts the test CA, gets through: what refused it was the check.
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))
    with contextlib.suppress(Exception):  # the stand-in answers {} to everything
        call(url, issuer)
    assert https_server.requests > before
