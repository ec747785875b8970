"""Our RS256 check agrees with cryptography's ``verify()``, signature for signature.

The key checks a signature by recovering the signed block and comparing it,
byte for byte, with the SHA-256 DigestInfo and digest of the signing input
(``_jose.py`` says why). That must accept exactly what cryptography's own
PKCS#1 v1.5 ``verify()`` accepts: these properties run both on the genuine
signature and on every kind of variation of it, and on blocks signed raw
with the pool's private key that hold the right digest in a wrong encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pkcs1_blocks
from siot_authz._jose import RS256PublicKey, build_rs256_key
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key

# Settings for this file's property alone: nothing global is registered.
AGREEMENT = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_SIGNED = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9"
#: The genuine block first, then each way of being almost right.
_BLOCK_COUNT = 1 + len(pkcs1_blocks.blocks_almost_right(bytes(32)))


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(key=spare_key(0)) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def ours(issuer: LocalIssuer) -> RS256PublicKey:
    return build_rs256_key(issuer.signing_key.public_jwk())


def _cryptography_accepts(issuer: LocalIssuer, data: bytes, signature: bytes) -> bool:
    public_key = issuer.signing_key.private_key.public_key()
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


_variations = st.one_of(
    st.just(("genuine", 0, b"")),
    st.tuples(st.just("byte-changed"), st.integers(0, 255), st.binary(min_size=1, max_size=1)),
    st.tuples(st.just("bit-flipped"), st.integers(0, 256 * 8 - 1), st.just(b"")),
    st.tuples(st.just("truncated"), st.integers(0, 255), st.just(b"")),
    st.tuples(st.just("extended"), st.integers(0, 1), st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("random"), st.just(0), st.binary(max_size=300) | st.binary(min_size=256, max_size=256)),
    st.tuples(st.just("raw-block"), st.integers(0, _BLOCK_COUNT - 1), st.just(b"")),
)


def _vary(issuer: LocalIssuer, data: bytes, variation: tuple[str, int, bytes]) -> bytes:
    name, number, extra = variation
    private_key = issuer.signing_key.private_key
    genuine = private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    digest = hashlib.sha256(data).digest()
    if name == "byte-changed":
        return genuine[:number] + extra + genuine[number + 1 :]
    if name == "bit-flipped":
        flipped = bytearray(genuine)
        flipped[number // 8] ^= 1 << (number % 8)
        return bytes(flipped)
    if name == "truncated":
        return genuine[:number]
    if name == "extended":
        return extra + genuine if number == 0 else genuine + extra
    if name == "random":
        return extra
    if name == "raw-block":
        blocks = [pkcs1_blocks.right_block(digest), *pkcs1_blocks.blocks_almost_right(digest).values()]
        return pkcs1_blocks.raw_signature(private_key, blocks[number])
    return genuine


@AGREEMENT
@given(variation=_variations, data=st.binary(max_size=64))
@example(variation=("genuine", 0, b""), data=b"")
@example(variation=("raw-block", 0, b""), data=b"x")
@example(variation=("random", 0, bytes(256)), data=b"")
@example(variation=("random", 0, b"\xff" * 256), data=b"")
def test_our_check_accepts_exactly_what_cryptography_accepts(
    issuer: LocalIssuer, ours: RS256PublicKey, variation: tuple[str, int, bytes], data: bytes
) -> None:
    signing_input = _SIGNED + data
    signature = _vary(issuer, signing_input, variation)
    expected = _cryptography_accepts(issuer, signing_input, signature)
    assert ours.verify(signing_input, signature) is expected
    assert ours.verify_digest(hashlib.sha256(signing_input).digest(), signature) is expected


def test_a_genuine_signature_and_its_right_raw_block_are_accepted_by_both(
    issuer: LocalIssuer, ours: RS256PublicKey
) -> None:
    """The property above, and test_attacks' raw blocks, cannot pass by refusing everything."""
    signing_input = _SIGNED
    digest = hashlib.sha256(signing_input).digest()
    right = b"\x00\x01" + b"\xff" * (256 - 3 - 51) + b"\x00" + pkcs1_blocks.SHA256_DIGEST_INFO + digest
    assert pkcs1_blocks.right_block(digest) == right
    genuine = issuer.signing_key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    raw = pkcs1_blocks.raw_signature(issuer.signing_key.private_key, right)
    assert genuine == raw  # PKCS#1 v1.5 is deterministic: the raw signer makes the very same signature
    assert _cryptography_accepts(issuer, signing_input, genuine)
    assert ours.verify(signing_input, genuine)


def test_a_digest_of_other_bytes_is_refused(issuer: LocalIssuer, ours: RS256PublicKey) -> None:
    genuine = issuer.signing_key.private_key.sign(_SIGNED, padding.PKCS1v15(), hashes.SHA256())
    assert not ours.verify_digest(hashlib.sha256(_SIGNED + b"x").digest(), genuine)
    assert not ours.verify_digest(hashlib.sha256(_SIGNED).digest()[:-1], genuine)
    assert not ours.verify_digest(b"", genuine)


def test_a_signature_shorn_of_its_leading_zero_byte_is_refused_like_cryptography_refuses_it(
    issuer: LocalIssuer, ours: RS256PublicKey
) -> None:
    """RSA recovery alone takes the shorter number; the length check must not."""
    private_key = issuer.signing_key.private_key
    for nonce in range(5000):  # one signature in 256 starts with a zero byte
        signing_input = _SIGNED + str(nonce).encode()
        genuine = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        if genuine[0] == 0:
            break
    else:
        raise AssertionError("no signature with a leading zero byte in five thousand tries")
    assert ours.verify(signing_input, genuine)
    shorn = genuine[1:]
    assert not _cryptography_accepts(issuer, signing_input, shorn)
    assert not ours.verify(signing_input, shorn)
    assert not ours.verify_digest(hashlib.sha256(signing_input).digest(), shorn)
