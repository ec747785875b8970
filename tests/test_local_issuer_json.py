"""LocalIssuer writes a token's JSON as Cognito does, and still signs any claims a test hands it.

Compact UTF-8 JSON is what Cognito sends, so tests exercise the parser's
round-trip proof. A claim holding a lone surrogate has no UTF-8 spelling:
the issuer must still sign it (as its ``\\u`` escape, as it always did), so
that a project can test that its service refuses such a token.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from siot_authz import TokenMalformed, TokenVerifier
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(key=spare_key(0)) as issuer:
        yield issuer


def _payload(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_claims_are_written_compact_and_in_utf8(issuer: LocalIssuer) -> None:
    payload = _payload(issuer.sign({"name": "Zoë", "n": 1}))
    assert payload == '{"name":"Zoë","n":1}'.encode()


@pytest.mark.parametrize(
    "text", ["\ud800", "a\udfffb", "Zoë \udc00"], ids=["high", "low-inside", "with-utf8"]
)
def test_a_lone_surrogate_claim_is_signed_as_its_escape_and_refused(issuer: LocalIssuer, text: str) -> None:
    token = issuer.mint(name=text)
    assert b"\\ud" in _payload(token)
    verifier = TokenVerifier(issuer.settings(for_transport=True), jwks={issuer.user_pool_id: issuer.jwks()})
    try:
        with pytest.raises(TokenMalformed):
            verifier.verify_sync(token)
        assert verifier.verify_sync(issuer.mint(name="Zoë")).claims["name"] == "Zoë"
    finally:
        verifier.close()
