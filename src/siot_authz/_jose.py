"""The only module that touches python-jose.

python-jose has sharp edges: ``jwt.decode`` without ``algorithms`` accepts an
HS256 token keyed with the RSA public key, a JWKS dict makes it ignore
``kid``, missing ``exp``/``aud`` pass silently, and ``JWKError`` is not a
``JWTError``. We use none of that. We build one RSA public key object per
kid, from ``n`` and ``e`` only, and ask it a single question: does this
RS256 signature verify over these bytes? The algorithm is fixed here, never
taken from the token, so no HMAC or ECDSA code path (CVE-2024-33663, the
DER-key HS256 confusion, ecdsa's Minerva) and no JWE code
(CVE-2024-33664) is ever reached.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from jose.backends.cryptography_backend import CryptographyRSAKey
from jose.exceptions import JOSEError

__all__ = ["MIN_RSA_BITS", "RS256PublicKey", "UnusableKey", "build_rs256_key"]

#: Keys shorter than this are refused when the JWKS is loaded.
MIN_RSA_BITS = 2048


class UnusableKey(ValueError):
    """A JWK that cannot serve as an RS256 verification key."""


class RS256PublicKey(Protocol):
    """What the verifier needs from a key: one yes/no signature check."""

    @property
    def size_bits(self) -> int: ...

    @property
    def serial(self) -> int:
        """A number no other key built in this process has: identity that a plain int can carry."""
        ...

    def verify(self, signing_input: bytes, signature: bytes) -> bool: ...


# Stateless, so one of each serves every verification (python-jose builds
# both anew on every call, which costs about a microsecond on the cold path).
_PKCS1V15 = PKCS1v15()
_SHA256 = SHA256()


def _no_backend() -> None:
    """What python-jose hands cryptography as its backend: nothing.

    cryptography has ignored the backend argument since 3.1; python-jose's
    default still imports cryptography's OpenSSL backend module to make one,
    about 2 ms on the first key a process builds (its first verification),
    for an object nobody reads.
    """
    return None


# Serials for built keys. The verified-token cache ties an entry to the key
# that verified it by this number instead of by the object, so its compact
# entries hold only plain values the garbage collector never has to visit.
_serials = itertools.count(1)


class _JoseRS256Key:
    __slots__ = ("_verify", "serial", "size_bits")

    def __init__(self, key: Any, size_bits: int) -> None:
        # The cryptography key python-jose built: the same RS256 check
        # python-jose's own verify makes, minus its per-call objects.
        self._verify = key.prepared_key.verify
        self.size_bits = size_bits
        self.serial = next(_serials)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            self._verify(signature, signing_input, _PKCS1V15, _SHA256)
        except Exception:  # InvalidSignature, and a hostile signature must never become a 500
            return False
        return True


def build_rs256_key(jwk: dict[str, Any]) -> RS256PublicKey:
    """Build a verification key from the public members of an RSA JWK.

    Raises :class:`UnusableKey` when ``n``/``e`` are missing, malformed or too
    short. Private members (``d``, ``p``, ...) are never passed on, so a JWKS
    that leaks a private key still only yields a public one.
    """
    modulus, exponent = jwk.get("n"), jwk.get("e")
    if not isinstance(modulus, str) or not isinstance(exponent, str):
        raise UnusableKey("RSA key lacks string 'n' and 'e'")
    try:
        key = CryptographyRSAKey({"kty": "RSA", "n": modulus, "e": exponent}, "RS256", _no_backend)
        size_bits = int(key.prepared_key.key_size)
    except (JOSEError, ValueError, TypeError) as exc:
        raise UnusableKey(f"RSA key cannot be built: {type(exc).__name__}") from None
    if size_bits < MIN_RSA_BITS:
        raise UnusableKey(f"RSA key is {size_bits} bits; at least {MIN_RSA_BITS} are required")
    return _JoseRS256Key(key, size_bits)
