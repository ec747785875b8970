"""Strict parsing of a compact JWS, before any cryptography runs.

Everything here treats the token as hostile. A lenient parser lets several
different strings share one signature, or lets two JSON parsers disagree on
what a claim says; both have been the root of real bypasses. So we accept
exactly one spelling of each token: three non-empty segments of canonical,
unpadded base64url, holding UTF-8 JSON objects without duplicate names or
non-finite numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ._errors import (
    HeaderInvalid,
    KeyIdMissing,
    MissingToken,
    TokenMalformed,
    TokenTooLarge,
    UnsupportedAlgorithm,
)

__all__ = ["ParsedToken", "decode_segment_json", "parse_token", "strip_bearer"]

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_BEARER_PREFIX = "bearer "
# The only signature algorithm Cognito user pools use. Compared exactly:
# "none", "None", "rs256" and every other spelling are refused.
_ALLOWED_ALG = "RS256"
# Header parameters that name or carry a verification key (RFC 7515 4.1.2-4.1.6).
# Keys come only from the configured JWKS, so a token offering its own is
# refused outright rather than silently ignored: Cognito never sends these,
# and a library that one day honoured them would trust the attacker's key.
_KEY_CARRYING_PARAMETERS = ("jku", "jwk", "x5u", "x5c")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token split and decoded, but not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    kid: str
    signing_input: bytes
    signature: bytes


def strip_bearer(authorization: str) -> str:
    """Return the token from a header value sent raw or as ``Bearer <token>``.

    SimpleIOT's Python clients send the ID token raw; its JavaScript clients
    prefix ``Bearer``. The scheme is matched case-insensitively (RFC 7235).
    A JWS is ASCII; anything else is refused here, before the value is hashed
    or encoded anywhere (a lone surrogate cannot even be encoded as UTF-8).
    """
    value = authorization.strip()
    if value[:7].lower() == _BEARER_PREFIX:
        value = value[7:].lstrip(" ")
    # "Bearer" alone (its trailing space stripped above) names a scheme but sends no credentials.
    if not value or value.lower() == _BEARER_PREFIX.rstrip():
        raise MissingToken()
    if not value.isascii():
        raise _non_ascii()
    return value


def _non_ascii() -> TokenMalformed:
    return TokenMalformed("The token has non-ASCII characters.")


# Refusals below are raised outside ``except`` blocks on purpose: an exception
# raised inside one keeps the original as ``__context__``, and a
# UnicodeDecodeError or JSONDecodeError holds the token bytes it choked on.


def decode_base64url(segment: str) -> bytes:
    """Decode one segment, accepting only canonical unpadded base64url."""
    raw: bytes | None = None
    if _BASE64URL.fullmatch(segment) and len(segment) % 4 != 1:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            raw = None
    # Non-zero unused trailing bits give a second spelling of the same bytes;
    # re-encoding shows them.
    if raw is None or base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise TokenMalformed("A token segment is not canonical base64url.")
    return raw


def _refuse_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise TokenMalformed("A token segment has duplicate JSON member names.")
    return result


def _refuse_constant(name: str) -> Any:
    raise TokenMalformed("A token segment has a non-finite number.")


def _parse_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e400" parses to inf
        raise TokenMalformed("A token segment has a non-finite number.")
    return value


def decode_segment_json(segment: str) -> dict[str, Any]:
    """Decode one segment to a JSON object, refusing anything ambiguous."""
    raw = decode_base64url(segment)
    is_json = True
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_refuse_duplicate_names,
            parse_constant=_refuse_constant,
            parse_float=_parse_finite_float,
        )
    except TokenMalformed:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and over-long integer literals.
        is_json = False
    if not is_json:
        raise TokenMalformed("A token segment is not UTF-8 JSON.")
    if not isinstance(value, dict):
        raise TokenMalformed("A token segment is not a JSON object.")
    return value


def _check_header(header: dict[str, Any]) -> str:
    alg = header.get("alg")
    if alg != _ALLOWED_ALG:
        raise UnsupportedAlgorithm(alg=alg if isinstance(alg, str) else type(alg).__name__)
    if "crit" in header:
        # RFC 7515 4.1.11: extensions we do not understand must be refused.
        raise HeaderInvalid("The token header has a 'crit' parameter.")
    if any(name in header for name in _KEY_CARRYING_PARAMETERS):
        raise HeaderInvalid("The token header offers its own key, which is never accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyIdMissing()
    return kid


def parse_token(token: str, max_token_bytes: int) -> ParsedToken:
    """Split and decode ``token``; raise a :class:`TokenMalformed` family error if it is not a JWS.

    The size cap is checked first, on the raw string, so an attacker cannot
    make us decode megabytes.
    """
    if len(token) > max_token_bytes:
        raise TokenTooLarge()
    if not token.isascii():
        raise _non_ascii()
    segments = token.split(".")
    if len(segments) != 3 or not all(segments):
        raise TokenMalformed("The token does not have three non-empty segments.")
    header_segment, claims_segment, signature_segment = segments
    header = decode_segment_json(header_segment)
    kid = _check_header(header)
    claims = decode_segment_json(claims_segment)
    signature = decode_base64url(signature_segment)
    return ParsedToken(
        header=header,
        claims=claims,
        kid=kid,
        signing_input=f"{header_segment}.{claims_segment}".encode("ascii"),
        signature=signature,
    )
