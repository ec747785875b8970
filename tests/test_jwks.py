"""Which keys of a JWKS we are willing to verify with, and how they are built.

A key endpoint may publish keys we must not use. Each bad key is skipped on
its own (with a logged reason) and never spoils the good key beside it; keys
are built once per kid and reused while their JWK is unchanged.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from siot_authz._jwks import InvalidJwks, KeySet, parse_jwks
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer, SigningKey, b64url
from spare_keys import spare_key_as
from test_key_cache import FACES, Caller
from test_key_cache import make_caller as make_caller  # a fixture, re-exported for this module


def document(*keys: Any) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


@pytest.fixture(scope="module")
def short_key() -> SigningKey:
    return SigningKey("short", bits=1024)


@pytest.fixture(scope="module")
def rsa_jwks() -> list[dict[str, Any]]:
    """Public JWKs of three distinct 2048-bit keys (spares: key generation is slow)."""
    return [spare_key_as(index, f"key-{index}").public_jwk() for index in range(3)]


def with_changes(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = {**jwk, **changes}
    return {name: value for name, value in changed.items() if value is not None}


# Each entry turns a good JWK (and a 1024-bit key) into a bad entry of the same kid.
BAD_KEYS: dict[str, Callable[[dict[str, Any], SigningKey], Any]] = {
    "kty_ec": lambda jwk, _: with_changes(jwk, kty="EC", crv="P-256", x="AA", y="AA"),
    "kty_oct": lambda jwk, _: {"kty": "oct", "kid": jwk["kid"], "alg": "HS256"},
    "kty_missing": lambda jwk, _: with_changes(jwk, kty=None),
    "use_enc": lambda jwk, _: with_changes(jwk, use="enc"),
    "alg_rs512": lambda jwk, _: with_changes(jwk, alg="RS512"),
    "alg_hs256": lambda jwk, _: with_changes(jwk, alg="HS256"),
    "alg_none": lambda jwk, _: with_changes(jwk, alg="none"),
    "key_ops_sign_only": lambda jwk, _: with_changes(jwk, key_ops=["sign"]),
    "key_ops_empty": lambda jwk, _: with_changes(jwk, key_ops=[]),
    "key_ops_not_a_list": lambda jwk, _: with_changes(jwk, key_ops="verify"),
    "short_1024_bit": lambda jwk, short: with_changes(short.public_jwk(), kid=jwk["kid"]),
    "n_not_base64url": lambda jwk, _: with_changes(jwk, n="!!not base64!!"),
    "n_empty": lambda jwk, _: with_changes(jwk, n=""),
    "n_number": lambda jwk, _: with_changes(jwk, n=12345),
    "n_over_16384_bits": lambda jwk, _: with_changes(jwk, n=b64url(b"\xff" * 2050)),
    "e_missing": lambda jwk, _: with_changes(jwk, e=None),
    "kid_number": lambda jwk, _: with_changes(jwk, kid=7),
    "kid_empty": lambda jwk, _: with_changes(jwk, kid=""),
    "kid_missing": lambda jwk, _: with_changes(jwk, kid=None),
    "not_an_object": lambda jwk, _: [jwk],
}


@pytest.mark.parametrize("name", BAD_KEYS)
def test_bad_key_is_skipped_and_good_key_still_serves(
    name: str, rsa_jwks: list[dict[str, Any]], short_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    good = with_changes(rsa_jwks[0], kid="good")
    bad = BAD_KEYS[name](with_changes(rsa_jwks[1], kid="bad"), short_key)

    with caplog.at_level(logging.WARNING, logger="siot_authz"):
        key_set = parse_jwks(document(bad, good))

    assert set(key_set.keys) == {"good"}
    assert "jwks_key_skipped" in caplog.text


def test_duplicate_kid_drops_both_entries_and_keeps_the_rest(
    rsa_jwks: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    first, good, second = (
        with_changes(rsa_jwks[0], kid="twin"),
        rsa_jwks[1],
        with_changes(rsa_jwks[2], kid="twin"),
    )

    with caplog.at_level(logging.WARNING, logger="siot_authz"):
        key_set = parse_jwks(document(first, with_changes(good, kid="good"), second))

    assert set(key_set.keys) == {"good"}
    assert "kid='twin' reason=kid appears more than once" in caplog.text


def test_unusable_entry_does_not_count_as_a_duplicate(rsa_jwks: list[dict[str, Any]]) -> None:
    usable = with_changes(rsa_jwks[0], kid="shared")

    key_set = parse_jwks(document(with_changes(usable, use="enc"), usable))

    assert set(key_set.keys) == {"shared"}


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_a_document_holding_private_key_material_is_refused_as_a_whole(
    member: str, issuer: LocalIssuer, rsa_jwks: list[dict[str, Any]]
) -> None:
    """Whoever published it leaked a signing secret: that must be seen, not quietly ignored."""
    numbers = issuer.signing_key.private_key.private_numbers()
    leaked = {**issuer.signing_key.public_jwk(), member: b64url(numbers.d.to_bytes(256, "big"))}

    with pytest.raises(InvalidJwks, match=r"^jwks_holds_private_key_material$"):
        parse_jwks(document(rsa_jwks[0], leaked))


def test_key_ops_listing_verify_among_others_is_usable(issuer: LocalIssuer) -> None:
    jwk = {**issuer.signing_key.public_jwk(), "key_ops": ["verify", "encrypt"]}

    assert set(parse_jwks(document(jwk)).keys) == {issuer.signing_key.kid}


def test_only_n_and_e_are_read_so_a_verification_key_cannot_sign(issuer: LocalIssuer) -> None:
    token = issuer.mint()
    header, payload, signature = token.split(".")

    key = parse_jwks(document(issuer.signing_key.public_jwk())).keys[issuer.signing_key.kid]

    assert key.size_bits == 2048
    assert key.verify(f"{header}.{payload}".encode(), _b64decode(signature))
    assert not hasattr(key, "sign")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "jwks_not_utf8_json"),
        (b"\xff\xfe", "jwks_not_utf8_json"),
        (b'{"keys": [}', "jwks_not_utf8_json"),
        (b"[" * 100_000, "jwks_not_utf8_json"),
        (b'"keys"', "jwks_not_an_object"),
        (b"null", "jwks_not_an_object"),
        (b"{}", "jwks_keys_not_an_array"),
        (b'{"keys": null}', "jwks_keys_not_an_array"),
        (b'{"keys": "AQAB"}', "jwks_keys_not_an_array"),
        (b'{"keys": [], "n": Infinity}', "jwks_non_finite_number"),
        (b'{"keys": []}', "jwks_no_usable_key"),
        (b'{"keys": [1, "two", null]}', "jwks_no_usable_key"),
    ],
)
def test_refuses_documents_that_are_not_a_usable_key_set(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidJwks, match=f"^{reason}$"):
        parse_jwks(body)


def test_keys_are_built_once_per_kid_and_reused_while_unchanged(rsa_jwks: list[dict[str, Any]]) -> None:
    kept, replaced, other = rsa_jwks
    first = parse_jwks(document(with_changes(kept, kid="kept"), with_changes(replaced, kid="replaced")))
    new_material = with_changes(other, kid="replaced")
    added = with_changes(replaced, kid="added")

    second = parse_jwks(document(with_changes(kept, kid="kept"), new_material, added), first)

    assert second.keys["kept"] is first.keys["kept"]
    assert second.keys["replaced"] is not first.keys["replaced"]
    assert set(second.keys) == {"kept", "replaced", "added"}
    assert isinstance(second, KeySet)


@pytest.mark.parametrize("face", FACES)
def test_good_key_in_a_set_full_of_bad_ones_verifies_end_to_end(
    face: str,
    make_caller: Callable[..., Caller],
    issuer: LocalIssuer,
    jwks_server: JwksServer,
    short_key: SigningKey,
    rsa_jwks: list[dict[str, Any]],
) -> None:
    good_jwk = issuer.signing_key.public_jwk()
    bad_entries = [
        make_bad(with_changes(rsa_jwks[0], kid=name), short_key) for name, make_bad in BAD_KEYS.items()
    ]
    jwks_server.response = JwksResponse(body=document(*bad_entries, good_jwk))
    caller = make_caller(face)

    assert caller.outcome(issuer.mint()) == "ok"
    assert caller.outcome(issuer.sign(issuer.claims(), key=short_key)) == "401 kid_unknown"
    assert caller.keys.kids == {issuer.signing_key.kid}
