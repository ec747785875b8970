"""Reading the token: the optional ``Bearer`` prefix, the JWS shape and the header, before any key is used."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import pytest

from siot_authz import (
    AuthError,
    HeaderInvalid,
    InvalidToken,
    KeyIdMissing,
    KeyIdUnknown,
    MissingToken,
    Principal,
    SignatureInvalid,
    TokenMalformed,
    TokenTooLarge,
    TokenVerifier,
    UnsupportedAlgorithm,
)
from siot_authz.testing import JwksServer, LocalIssuer, SigningKey, b64url
from spare_keys import spare_key_as

Verify = Callable[[str], Awaitable[Principal]]

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["verify", "verify_sync"])
def verify(request: pytest.FixtureRequest, verifier: TokenVerifier) -> Verify:
    """``await verify(token)`` through the async face, or through ``verify_sync`` on a worker thread."""
    if request.param == "verify":
        return verifier.verify
    return partial(anyio.to_thread.run_sync, verifier.verify_sync)


@pytest.fixture(scope="module")
def attacker_key() -> SigningKey:
    """A key the user pool never published."""
    return spare_key_as(0, "attacker-key")


def compact(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    """A JWS with exactly ``header`` (no defaults added), signed RS256 with ``key``."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


# -- the Authorization value ---------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{}",
        " {} ",
        "Bearer {}",
        "bearer {}",
        "BEARER {}",
        "BeArEr {}",
        "Bearer   {}",
        "  Bearer {}  ",
    ],
)
async def test_accepts_token_raw_or_with_bearer_prefix_in_any_casing(
    issuer: LocalIssuer, verify: Verify, template: str
) -> None:
    principal = await verify(template.format(issuer.mint(username="carol")))

    assert principal.username == "carol"


@pytest.mark.parametrize("value", ["", "   ", "Bearer", "Bearer ", "bearer   ", "BEARER"])
async def test_empty_value_or_bare_scheme_is_a_missing_token(verify: Verify, value: str) -> None:
    with pytest.raises(MissingToken) as caught:
        await verify(value)

    assert caught.value.code == "missing_token"
    assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


async def test_scheme_without_separating_space_is_not_a_prefix(issuer: LocalIssuer, verify: Verify) -> None:
    with pytest.raises(TokenMalformed):
        await verify("Bearer" + issuer.mint())


# -- the JWS shape ----------------------------------------------------------------------


JSON_STRING = b64url(b'"alice"')


def segments(issuer: LocalIssuer) -> list[str]:
    return issuer.mint().split(".")


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("one segment", lambda s: s[0]),
        ("two segments", lambda s: f"{s[0]}.{s[1]}"),
        ("four segments", lambda s: ".".join([*s, s[2]])),
        ("empty signature", lambda s: f"{s[0]}.{s[1]}."),
        ("empty payload", lambda s: f"{s[0]}..{s[2]}"),
        ("only dots", lambda s: ".."),
        ("padded header", lambda s: f"{s[0]}=.{s[1]}.{s[2]}"),
        ("standard base64 alphabet", lambda s: f"{s[0]}.{s[1]}.{s[2].replace('-', '+').replace('_', '/')}+"),
        ("space inside", lambda s: f"{s[0]}.{s[1][:5]} {s[1][5:]}.{s[2]}"),
        ("non-ascii", lambda s: f"{s[0]}.{s[1]}é.{s[2]}"),
        ("header not json", lambda s: f"{b64url(b'not json')}.{s[1]}.{s[2]}"),
        ("header a json array", lambda s: f"{b64url(b'[1, 2]')}.{s[1]}.{s[2]}"),
        ("payload not json", lambda s: f"{s[0]}.{b64url(b'{oops')}.{s[2]}"),
        ("payload a json string", lambda s: f"{s[0]}.{JSON_STRING}.{s[2]}"),
    ],
)
async def test_refuses_token_that_is_not_a_compact_jws(
    issuer: LocalIssuer, verify: Verify, name: str, build: Callable[[list[str]], str]
) -> None:
    with pytest.raises(TokenMalformed):
        await verify(build(segments(issuer)))


def test_max_token_bytes_is_an_inclusive_cap(issuer: LocalIssuer) -> None:
    token = issuer.mint(padding="x" * 600)
    at_cap = TokenVerifier(issuer.settings(max_token_bytes=len(token)))
    under_cap = TokenVerifier(issuer.settings(max_token_bytes=len(token) - 1))
    try:
        assert at_cap.verify_sync(f"Bearer {token}").username == "alice"
        assert anyio.run(at_cap.verify, token).username == "alice"
        for value in (token, f"Bearer {token}"):
            with pytest.raises(TokenTooLarge):
                under_cap.verify_sync(value)
            with pytest.raises(TokenTooLarge):
                anyio.run(under_cap.verify, value)
    finally:
        at_cap.close()
        under_cap.close()


# -- the header ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "RS512", "PS256", "ES256", "rs256", "RS256 ", 256])
async def test_refuses_any_alg_but_rs256(issuer: LocalIssuer, verify: Verify, alg: Any) -> None:
    token = issuer.sign(issuer.claims(), header={"alg": alg})

    with pytest.raises(UnsupportedAlgorithm):
        await verify(token)


async def test_refuses_header_without_alg(issuer: LocalIssuer, verify: Verify) -> None:
    token = compact({"kid": issuer.signing_key.kid}, issuer.claims(), issuer.signing_key)

    with pytest.raises(UnsupportedAlgorithm):
        await verify(token)


@pytest.mark.parametrize("kid", ["<absent>", None, "", 7, ["k"], {"kid": "k"}])
async def test_refuses_header_without_string_kid(issuer: LocalIssuer, verify: Verify, kid: Any) -> None:
    header: dict[str, Any] = {"alg": "RS256"}
    if kid != "<absent>":
        header["kid"] = kid

    with pytest.raises(KeyIdMissing):
        await verify(compact(header, issuer.claims(), issuer.signing_key))


@pytest.mark.parametrize("crit", [["exp"], [], "b64"])
async def test_refuses_crit_header(issuer: LocalIssuer, verify: Verify, crit: Any) -> None:
    with pytest.raises(HeaderInvalid):
        await verify(issuer.sign(issuer.claims(), header={"crit": crit}))


@pytest.mark.parametrize("parameter", ["jku", "x5u"])
async def test_never_fetches_a_key_url_named_in_the_header(
    issuer: LocalIssuer, jwks_server: JwksServer, verify: Verify, parameter: str
) -> None:
    token = issuer.sign(issuer.claims(), header={parameter: f"{jwks_server.base_url}/attacker/jwks.json"})

    # Refusing the token outright and ignoring the parameter both honour the rule.
    with contextlib.suppress(HeaderInvalid):
        await verify(token)

    assert "/attacker/jwks.json" not in jwks_server.requested_paths


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda key, pool_kid: {"jwk": key.public_jwk()}, id="own-kid-and-jwk"),
        pytest.param(lambda key, pool_kid: {"kid": pool_kid, "jwk": key.public_jwk()}, id="pool-kid-and-jwk"),
        pytest.param(lambda key, pool_kid: {"kid": pool_kid, "x5c": ["MIIBIjAN"]}, id="pool-kid-and-x5c"),
    ],
)
async def test_refuses_token_signed_with_a_key_it_carries_itself(
    issuer: LocalIssuer,
    verify: Verify,
    attacker_key: SigningKey,
    header: Callable[[SigningKey, str], dict[str, Any]],
) -> None:
    token = issuer.sign(
        issuer.claims(), key=attacker_key, header=header(attacker_key, issuer.signing_key.kid)
    )

    with pytest.raises(InvalidToken):
        await verify(token)


async def test_refuses_token_signed_with_an_unpublished_key(
    issuer: LocalIssuer, verify: Verify, attacker_key: SigningKey
) -> None:
    with pytest.raises(KeyIdUnknown):
        await verify(issuer.sign(issuer.claims(), key=attacker_key))


async def test_refuses_token_claiming_a_pool_kid_but_signed_by_another_key(
    issuer: LocalIssuer, verify: Verify, attacker_key: SigningKey
) -> None:
    token = issuer.sign(issuer.claims(), key=attacker_key, header={"kid": issuer.signing_key.kid})

    with pytest.raises(SignatureInvalid):
        await verify(token)


async def test_every_refusal_is_an_auth_error_without_token_text(issuer: LocalIssuer, verify: Verify) -> None:
    token = issuer.sign(issuer.claims(), header={"alg": "HS256"})

    with pytest.raises(AuthError) as caught:
        await verify(token)

    for part in token.split("."):
        assert part not in str(caught.value)
        assert part not in caught.value.detail


# -- text a claim cannot carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "is_refused"),
    [
        ('"x\\ud800y"', True),  # a lone high surrogate
        ('["\\uDFFF"]', True),  # a lone low surrogate, upper-case escape, inside a list
        ('"\\ud83d\\ude00"', False),  # a properly paired escape: one emoji
    ],
)
async def test_refuses_a_signed_claim_holding_a_lone_surrogate(
    verify: Verify, issuer: LocalIssuer, claim: str, is_refused: bool
) -> None:
    body = json.dumps(issuer.claims()).encode()
    payload = body[:-1] + b', "custom:note": ' + claim.encode() + b"}"
    token = issuer.sign(payload)
    if is_refused:
        with pytest.raises(TokenMalformed):
            await verify(token)
    else:
        principal = await verify(token)
        assert principal.claims["custom:note"] == "\U0001f600"


def test_a_route_returning_the_principal_never_fails_on_claim_text(client: Any, issuer: LocalIssuer) -> None:
    payload = json.dumps(issuer.claims()).encode()[:-1] + b', "email": "x\\ud800@example.com"}'
    response = client.get("/me", headers={"Authorization": issuer.sign(payload)})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "token_malformed"
