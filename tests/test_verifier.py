"""TokenVerifier as a library user calls it: ``await verify`` and ``verify_sync`` agree, and only AuthError escapes."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import anyio
import pytest

from siot_authz import (
    AuthError,
    InvalidToken,
    KeyIdUnknown,
    MissingToken,
    SignatureInvalid,
    TokenExpired,
    TokenVerifier,
)
from siot_authz.testing import JwksServer, LocalIssuer, b64url
from spare_keys import spare_key_as


def tamper_payload(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with ``changes`` applied."""
    header, payload_segment, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_segment + "=" * (-len(payload_segment) % 4)))
    payload.update(changes)
    return f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"


@pytest.mark.anyio
async def test_async_and_sync_faces_give_the_same_principal(issuer: LocalIssuer) -> None:
    token = issuer.mint(groups=["admin"], email="alice@example.com")
    async_verifier = TokenVerifier(issuer.settings())
    sync_verifier = TokenVerifier(issuer.settings())
    try:
        from_async = await async_verifier.verify(token)
        from_sync = sync_verifier.verify_sync(token)
    finally:
        await async_verifier.aclose()
        sync_verifier.close()

    assert from_async == from_sync
    assert from_sync.groups == ("admin",)


def test_verify_sync_fetches_keys_with_a_blocking_client(
    issuer: LocalIssuer, jwks_server: JwksServer, verifier: TokenVerifier
) -> None:
    # No event loop runs here: verify_sync must fetch the JWKS on its own.
    principal = verifier.verify_sync(f"Bearer {issuer.mint(username='erin')}")

    assert principal.username == "erin"
    assert jwks_server.request_count == 1
    assert jwks_server.requested_paths == [issuer.jwks_path]


def test_one_fetch_serves_many_tokens_on_both_faces(
    issuer: LocalIssuer, jwks_server: JwksServer, verifier: TokenVerifier
) -> None:
    async def verify_async_tokens() -> None:
        for number in range(5):
            await verifier.verify(issuer.mint(username=f"async{number}"))

    for number in range(5):
        verifier.verify_sync(issuer.mint(username=f"sync{number}"))
    anyio.run(verify_async_tokens)

    assert jwks_server.request_count == 1


@pytest.mark.anyio
async def test_prefetch_loads_keys_before_the_first_token(
    issuer: LocalIssuer, jwks_server: JwksServer, verifier: TokenVerifier
) -> None:
    await verifier.prefetch()
    assert jwks_server.request_count == 1

    await verifier.verify(issuer.mint())

    assert jwks_server.request_count == 1


@pytest.mark.anyio
async def test_a_repeated_token_verifies_to_an_equal_principal(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.mint()

    first = await verifier.verify(token)

    assert await verifier.verify(f"Bearer {token}") == first
    assert verifier.verify_sync(token) == first


def test_refuses_a_cached_token_once_it_expires(issuer: LocalIssuer) -> None:
    now = [1_750_000_000.0]
    verifier = TokenVerifier(issuer.settings(leeway_seconds=0), clock=lambda: now[0])
    token = issuer.sign(issuer.claims(iat=int(now[0]), exp=int(now[0]) + 60))
    try:
        assert verifier.verify_sync(token).username == "alice"
        now[0] += 60

        with pytest.raises(TokenExpired):
            verifier.verify_sync(token)
    finally:
        verifier.close()


# -- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("username changed", lambda token: tamper_payload(token, **{"cognito:username": "mallory"})),
        ("group added", lambda token: tamper_payload(token, **{"cognito:groups": ["admin"]})),
        ("exp extended", lambda token: tamper_payload(token, exp=4_000_000_000)),
        ("signature truncated", lambda token: token[:-8]),
        (
            "signature of another token",
            lambda token: token.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1][::-1],
        ),
    ],
)
def test_refuses_token_whose_signature_does_not_match(
    issuer: LocalIssuer, verifier: TokenVerifier, name: str, tamper: Any
) -> None:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_sync(tamper(issuer.mint()))

    assert caught.value.code in {"signature_invalid", "token_malformed"}


@pytest.mark.anyio
async def test_refuses_valid_looking_token_from_another_pool_with_same_kid(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    other = spare_key_as(0, issuer.signing_key.kid)

    with pytest.raises(SignatureInvalid):
        await verifier.verify(issuer.sign(issuer.claims(), key=other))


@pytest.mark.anyio
async def test_refuses_token_signed_with_unknown_kid(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    with pytest.raises(KeyIdUnknown) as caught:
        await verifier.verify(issuer.sign(issuer.claims(), header={"kid": "not-in-the-jwks"}))

    assert caught.value.status_code == 401


# -- nothing but AuthError escapes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, MissingToken),
        (b"eyJ.eyJ.sig", InvalidToken),
        (42, InvalidToken),
        (["token"], InvalidToken),
        ("not a token", InvalidToken),
        ("a.b.c", InvalidToken),
        ("\ud800.\udfff.x", InvalidToken),
        ("\x00" * 100, InvalidToken),
        ("Bearer " + "A" * 100_000, InvalidToken),
    ],
    ids=repr,
)
@pytest.mark.anyio
async def test_only_auth_errors_escape_either_face(
    verifier: TokenVerifier, value: Any, error: type[AuthError]
) -> None:
    with pytest.raises(error):
        await verifier.verify(value)
    with pytest.raises(error):
        verifier.verify_sync(value)


@pytest.mark.anyio
async def test_refusal_and_its_log_never_carry_the_token(
    issuer: LocalIssuer, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    token = tamper_payload(issuer.mint(), email="mallory@example.com")
    caplog.set_level(logging.DEBUG, logger="siot_authz")

    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)

    for part in token.split("."):
        assert part not in str(caught.value)
        assert part not in caplog.text
    assert caught.value.code == "signature_invalid"


_NO_HTTPX_SCRIPT = """
import asyncio, json, sys
from siot_authz import AuthError, AuthSettings, TokenVerifier

case = json.loads(sys.argv[1])
settings = AuthSettings(
    region="us-east-1",
    user_pool_id=case["pool"],
    client_ids=[case["client_id"]],
    jwks_url="http://127.0.0.1:9/jwks.json",
    jwks_file=case["jwks_file"] if case["source"] == "jwks_file" else None,
)
documents = {case["pool"]: json.loads(open(case["jwks_path"]).read())} if case["source"] == "jwks" else None


def sync_check(principal):
    return True


async def async_check(principal):
    await asyncio.sleep(0)
    return True


check = {"none": None, "sync": sync_check, "async": async_check}[case["check"]]
verifier = TokenVerifier(settings, jwks=documents, check=check)
print(verifier.verify_sync(case["token"]).username)
try:
    verifier.verify_sync(case["expired"])
except AuthError as error:
    print(error.code)
print("httpx" in sys.modules, "anyio" in sys.modules)
"""


@pytest.mark.parametrize("source", ["jwks", "jwks_file"])
@pytest.mark.parametrize("check", ["none", "sync", "async"])
def test_verify_sync_with_keys_handed_in_never_imports_httpx(
    issuer: LocalIssuer, tmp_path: Any, source: str, check: str
) -> None:
    """A Lambda with its keys in the package pays no HTTP client import (about 0.1 s of cold start)."""
    import subprocess
    import sys

    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(issuer.jwks()))
    case = {
        "pool": issuer.user_pool_id,
        "client_id": issuer.client_id,
        "source": source,
        "jwks_file": str(jwks_path),
        "jwks_path": str(jwks_path),
        "check": check,
        "token": issuer.mint(username="ada"),
        "expired": issuer.mint(expires_in=-600),
    }

    done = subprocess.run(
        [sys.executable, "-c", _NO_HTTPX_SCRIPT, json.dumps(case)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["ada", "token_expired", "False False"]
