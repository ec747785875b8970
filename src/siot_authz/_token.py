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
    """
    value = authorization.strip()
    if value[:7].lower() == _BEARER_PREFIX:
        value = value[7:].lstrip(" ")
    if not value:
        raise MissingToken()
    return value


def decode_base64url(segment: str) -> bytes:
    """Decode one segment, accepting only canonical unpadded base64url."""
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenMalformed("A token segment is not canonical base64url.")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformed("A token segment is not canonical base64url.") from None
    # Non-zero unused trailing bits give a second spelling of the same bytes;
    # re-encoding shows them.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
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
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_refuse_duplicate_names,
            parse_constant=_refuse_constant,
            parse_float=_parse_finite_float,
        )
    except TokenMalformed:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and over-long integer literals.
        raise TokenMalformed("A token segment is not UTF-8 JSON.") from None
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
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyIdMissing()
    # jku, x5u, jwk and x5c are never read: keys come only from the configured JWKS.
    return kid


def parse_token(token: str, max_token_bytes: int) -> ParsedToken:
    """Split and decode ``token``; raise a :class:`TokenMalformed` family error if it is not a JWS.

    The size cap is checked first, on the raw string, so an attacker cannot
    make us decode megabytes.
    """
    if len(token) > max_token_bytes:
        raise TokenTooLarge()
    if not token.isascii():
        raise TokenMalformed("The token has non-ASCII characters.")
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
