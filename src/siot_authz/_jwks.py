"""Turning a JWKS document into the keys we are willing to verify with.

The key endpoint is treated as untrusted input too. A key is usable only if
it is RSA, meant for signatures (``use`` absent or ``sig``), meant for RS256
(``alg`` absent or ``RS256``), allowed to verify (``key_ops`` absent or
listing ``verify``) and between 2048 and 16384 bits. Anything else is skipped
and logged; one bad key never spoils the good ones next to it.

A document holding private key material (an RSA or EC private member, or a
symmetric ``k``) is refused as a whole: whoever published or saved it has
leaked a signing secret, and that should be seen, not quietly ignored.

A document with no usable key at all is refused as a whole, like one that is
not a JWKS: the keys already held then keep serving, instead of an empty or
garbled response locking every caller out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._jose import RS256PublicKey, UnusableKey, build_rs256_key

__all__ = ["InvalidJwks", "KeySet", "parse_jwks", "read_jwks_file", "safe_kid"]

logger = logging.getLogger("siot_authz.jwks")

# 16384 bits in base64url. A bigger modulus is no Cognito key, and verifying
# with one costs time on every request.
_MAX_MODULUS_CHARS = 2732

# JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class InvalidJwks(ValueError):
    """The document is not a JWKS, or holds no usable key; the message is a short code safe to log."""


@dataclass(frozen=True)
class KeySet:
    """The usable keys of one JWKS fetch, by kid, plus the JWK members each was built from."""

    keys: Mapping[str, RS256PublicKey]
    # (n, e) per kid, so the next fetch can reuse a built key when it is unchanged.
    sources: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def get(self, kid: str) -> RS256PublicKey | None:
        """The key for ``kid``, or None when this set has no usable key by that id."""
        return self.keys.get(kid)


def _refuse_constant(name: str) -> Any:
    raise InvalidJwks("jwks_non_finite_number")


def _load_document(body: bytes) -> list[Any]:
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except InvalidJwks:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidJwks("jwks_not_utf8_json") from None
    if not isinstance(document, dict):
        raise InvalidJwks("jwks_not_an_object")
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise InvalidJwks("jwks_keys_not_an_array")
    if any(isinstance(jwk, dict) and not _PRIVATE_MEMBERS.isdisjoint(jwk) for jwk in keys):
        raise InvalidJwks("jwks_holds_private_key_material")
    return keys


def read_jwks_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a JWKS file, held to the same size cap as a fetched document.

    Raises ValueError with a message naming the file, never its content.
    """
    try:
        with path.open("rb") as file:
            body = file.read(max_bytes + 1)
    except OSError as exc:
        raise ValueError(f"cannot read jwks_file {path}: {exc.strerror}") from None
    if len(body) > max_bytes:
        raise ValueError(f"jwks_file {path} is larger than max_jwks_bytes ({max_bytes} bytes)")
    return body


def _usable_source(jwk: Any) -> tuple[str, tuple[str, str]]:
    """Return (kid, (n, e)) for a JWK we could verify RS256 with, or raise UnusableKey."""
    if not isinstance(jwk, dict):
        raise UnusableKey("entry is not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnusableKey("key has no string 'kid'")
    if jwk.get("kty") != "RSA":
        raise UnusableKey("key type is not RSA")
    if jwk.get("use", "sig") != "sig":
        raise UnusableKey("key use is not 'sig'")
    if jwk.get("alg", "RS256") != "RS256":
        raise UnusableKey("key alg is not RS256")
    key_ops = jwk.get("key_ops", ["verify"])
    if not isinstance(key_ops, list) or "verify" not in key_ops:
        raise UnusableKey("key_ops does not allow 'verify'")
    modulus, exponent = jwk.get("n"), jwk.get("e")
    if not isinstance(modulus, str) or not isinstance(exponent, str):
        raise UnusableKey("key lacks string 'n' and 'e'")
    if len(modulus) > _MAX_MODULUS_CHARS:
        raise UnusableKey("RSA key is over 16384 bits")
    return kid, (modulus, exponent)


def safe_kid(kid: str) -> str:
    """A log-safe rendering of a kid, which comes from a token or the key endpoint."""
    return repr(kid[:64]) + ("..." if len(kid) > 64 else "")


def parse_jwks(body: bytes, previous: KeySet | None = None) -> KeySet:
    """Build a :class:`KeySet` from a JWKS response body.

    Keys whose ``n``/``e`` are the same as in ``previous`` are reused rather
    than rebuilt, so each key is built once per kid. A kid that appears twice
    is dropped entirely: we cannot tell which of the two the issuer meant.
    Raises :class:`InvalidJwks` when the body is not a JWKS or holds no usable key.
    """
    entries = _load_document(body)
    sources: dict[str, tuple[str, str]] = {}
    duplicated: set[str] = set()
    for index, jwk in enumerate(entries):
        try:
            kid, source = _usable_source(jwk)
        except UnusableKey as exc:
            logger.warning("jwks_key_skipped index=%d reason=%s", index, exc)
            continue
        if kid in sources:
            duplicated.add(kid)
        sources[kid] = source
    for kid in duplicated:
        logger.warning("jwks_key_skipped kid=%s reason=kid appears more than once", safe_kid(kid))
        del sources[kid]

    keys: dict[str, RS256PublicKey] = {}
    for kid, source in list(sources.items()):
        if previous is not None and previous.sources.get(kid) == source:
            keys[kid] = previous.keys[kid]
            continue
        try:
            keys[kid] = build_rs256_key({"n": source[0], "e": source[1]})
        except UnusableKey as exc:
            logger.warning("jwks_key_skipped kid=%s reason=%s", safe_kid(kid), exc)
            del sources[kid]
    if not keys:
        raise InvalidJwks("jwks_no_usable_key")
    return KeySet(keys=keys, sources=sources)
