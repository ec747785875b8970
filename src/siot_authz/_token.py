"""Strict parsing of a compact JWS, before any cryptography runs.

Everything here treats the token as hostile. A lenient parser lets several
different strings share one signature, or lets two JSON parsers disagree on
what a claim says; both have been the root of real bypasses. So we accept
exactly one spelling of each token: three non-empty segments of canonical,
unpadded base64url, holding UTF-8 JSON objects without duplicate names or
non-finite numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import msgspec

from ._errors import (
    HeaderInvalid,
    KeyIdMissing,
    MissingToken,
    TokenMalformed,
    TokenTooLarge,
    UnsupportedAlgorithm,
)

__all__ = [
    "ParsedToken",
    "parse_token",
    "strip_bearer",
]

_BEARER_PREFIX = "bearer "
# base64url -> standard alphabet, for msgspec's C decoder. "+", "/" and "="
# are not base64url, and '"' and "\\" would end or escape the JSON string the
# decoder reads: all become "*", which the decoder refuses.
_URLSAFE_TO_STANDARD = bytes.maketrans(b'-_+/="\\', b"+/*****")
# The unused low bits of each byte as a last base64url character: (when 2
# characters remain: 4 bits, when 3 remain: 2 bits). Index by byte value;
# bytes outside the alphabet never get this far (strict decoding refuses them).
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SPARE_BITS = [0] * 256
for _value, _char in enumerate(_ALPHABET):
    _SPARE_BITS[_char] = _value
#: How many distinct valid headers are remembered (a pool has two kids).
_HEADER_CACHE_SIZE = 32
# The only signature algorithm Cognito user pools use. Compared exactly:
# "none", "None", "rs256" and every other spelling are refused.
_ALLOWED_ALG = "RS256"
# Header parameters that name or carry a verification key (RFC 7515 4.1.2-4.1.6).
# Keys come only from the configured JWKS, so a token offering its own is
# refused outright rather than silently ignored: Cognito never sends these,
# and a library that one day honoured them would trust the attacker's key.
_KEY_CARRYING_PARAMETERS = ("jku", "jwk", "x5u", "x5c")


class ParsedToken(NamedTuple):
    """A token split and decoded, but not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    kid: str
    signing_input: bytes
    signature: bytes
    #: The signature as sent (base64url): with the digest of ``signing_input``, the verified cache's key.
    signature_segment: bytes
    #: At least how many arrays and objects the claims hold, at any depth (the
    #: opening brackets of the text, those inside strings too), or -1 when not
    #: counted. At 0, or at 1 with a groups array, the claim rules know
    #: without looking that no other claim needs freezing.
    containers: int = -1


def strip_bearer(authorization: str) -> str:
    """Return the token from a header value sent raw or as ``Bearer <token>``.

    SimpleIOT's Python clients send the ID token raw; its JavaScript clients
    prefix ``Bearer``. The scheme is matched case-insensitively (RFC 7235).
    """
    value = authorization.strip()
    if value.startswith("eyJ"):
        return value  # a raw JWS (its header's '{"' in base64url), as SimpleIOT's Python clients send it
    if value[:7].lower() == _BEARER_PREFIX:
        value = value[7:].lstrip(" ")
    # "Bearer" alone (its trailing space stripped above) names a scheme but sends no credentials.
    if not value or (len(value) == 6 and value.lower() == "bearer"):
        raise MissingToken()
    return value


# Refusals below are raised outside ``except`` blocks on purpose: an exception
# raised inside one keeps the original as ``__context__``, and a
# UnicodeDecodeError or JSONDecodeError holds the token bytes it choked on.


# The closing quote, after the padding that makes a standard base64 length.
_CLOSE = (b'"', b"", b'=="', b'="')
# msgspec decodes standard, padded base64 held in a JSON string, in C, three
# times faster than binascii; the string is nothing but the translated segment.
_decode_base64_string = msgspec.json.Decoder(bytes).decode


def _decode_base64url(segment: bytes) -> bytes:
    # Only the 64 url-safe characters: no "=", "+", "/" or whitespace. The
    # decoder refuses anything outside the alphabet, including the "*" that
    # the translation puts in place of "+", "/", "=", '"' and "\\".
    raw: bytes | None = None
    remainder = len(segment) % 4
    if remainder != 1:
        try:
            raw = _decode_base64_string(b'"' + segment.translate(_URLSAFE_TO_STANDARD) + _CLOSE[remainder])
        except (msgspec.DecodeError, ValueError):
            raw = None
    # Non-zero unused bits in the last character give a second spelling of
    # the same bytes (4 spare bits when 2 characters remain, 2 when 3 do).
    if raw is None or (remainder and _SPARE_BITS[segment[-1]] & (0b1111 if remainder == 2 else 0b11)):
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


# Built once: json.loads with hooks would build a new decoder on every call.
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicate_names,
    parse_constant=_refuse_constant,
    parse_float=_parse_finite_float,
)


def _is_utf8_encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strict_json_object(raw: bytes) -> dict[str, Any]:
    """The reference parser: the standard library's, with hooks that refuse what JSON leaves open."""
    is_json = True
    try:
        text = raw.decode("utf-8")
        # raw_decode skips the decoder's Python-level whitespace handling;
        # whitespace around the object is refused (end must be the last index).
        value, end = _STRICT_JSON.raw_decode(text)
        is_json = end == len(text)
    except TokenMalformed:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and over-long integer literals.
        is_json = False
    if is_json and "\\u" in text and ("\\ud" in text or "\\uD" in text):
        # A "\ud800" escape left unpaired decodes to a lone surrogate: text no
        # UTF-8 can carry, which would crash whoever serialises the claim later.
        is_json = _is_utf8_encodable(value)
    if not is_json:
        raise TokenMalformed("A token segment is not UTF-8 JSON.")
    if not isinstance(value, dict):
        raise TokenMalformed("A token segment is not a JSON object.")
    return value


# The fast parser takes only segments where it provably agrees with the
# reference: short enough that no integer can pass the standard library's
# 4,300-digit limit, and with few enough brackets that no nesting can reach
# either parser's recursion limit.
_FAST_MAX_BYTES = 4096
_FAST_MAX_BRACKETS = 64
# Non-finite floats ("1e400") raise in the hook, so the reference refuses them.
_fast_decode = msgspec.json.Decoder(float_hook=_parse_finite_float).decode
_fast_encode = msgspec.json.Encoder().encode
_ALL_BUT_COLONS_AND_BACKSLASHES = bytes(byte for byte in range(256) if byte not in b":\\")


def _fast_json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in ``raw`` by msgspec, or None to leave the segment to the reference parser.

    msgspec is three times faster than the standard library, and it refuses
    what the reference refuses (invalid or overlong UTF-8, surrogates,
    ``NaN``, trailing data, leading zeros) but for three things, each checked
    here: whitespace around the object, non-finite numbers (the float hook),
    and duplicate member names, where it keeps the last.

    Two proofs, the cheaper first. Compact JSON, as Cognito and every JOSE
    library write it, comes back byte for byte when the decoded object is
    encoded again: then no member was dropped (the text would be shorter)
    and there was no whitespace to refuse. Other text is counted instead:
    with no backslash in it, every string decodes to the very characters it
    was written with, so the colons in the text are one per member plus
    those inside strings, and re-encoding the decoded object, in which a
    duplicate survives only once, gives the same count exactly when no
    member was dropped. Anything neither proves goes to the reference
    parser, which decides; ``tests/test_token_parser_equivalence.py`` checks
    both agree on generated and mutated tokens.
    """
    counted = _fast_json_object_counted(raw)
    return None if counted is None else counted[0]


def _fast_json_object_counted(raw: bytes) -> tuple[dict[str, Any], int] | None:
    """:func:`_fast_json_object`, with its opening brackets but the object's own.

    That count is never below how many arrays and objects the object holds
    at any depth: it is exactly those, plus any "[" or "{" inside strings.
    """
    brackets = raw.count(b"{") + raw.count(b"[")
    if len(raw) > _FAST_MAX_BYTES or brackets > _FAST_MAX_BRACKETS or raw[:1] != b"{":
        return None
    try:
        value = _fast_decode(raw)
        if type(value) is not dict:
            return None
        encoded = _fast_encode(value)
    except Exception:  # DecodeError, the hook's refusal, RecursionError: the reference decides
        return None
    if encoded == raw:
        return value, brackets - 1
    # Not compact: count. One pass keeps only colons and backslashes.
    structure = raw.translate(None, _ALL_BUT_COLONS_AND_BACKSLASHES)
    if raw[-1:] != b"}" or b"\\" in structure or encoded.count(b":") != len(structure):
        return None
    return value, brackets - 1


def _decode_json_object(segment: bytes) -> dict[str, Any]:
    raw = _decode_base64url(segment)
    value = _fast_json_object(raw)
    return value if value is not None else _strict_json_object(raw)


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


_valid_headers: dict[bytes, tuple[dict[str, Any], str]] = {}


def _parse_header(segment: bytes) -> tuple[dict[str, Any], str]:
    """The header and its kid, remembering headers that passed every check.

    Every token of a pool shares one of a few header segments, so this skips
    a base64 and a JSON decode per token. Only headers that passed are kept,
    keyed by their exact text, and the map is small and bounded.
    """
    known = _valid_headers.get(segment)
    if known is not None:
        return known
    header = _decode_json_object(segment)
    parsed = (header, _check_header(header))
    if len(_valid_headers) >= _HEADER_CACHE_SIZE:
        # Anyone can make valid-looking headers (any kid will do), so the map
        # is simply emptied when full: no ordering to race on between threads.
        _valid_headers.clear()
    _valid_headers[segment] = parsed
    return parsed


# A NamedTuple's own constructor is a Python function; this is what it calls.
_new_parsed_token = tuple.__new__


def parse_token(
    token: str, max_token_bytes: int, signed_and_signature: tuple[bytes, bytes] | None = None
) -> ParsedToken:
    """Split and decode ``token``; raise a :class:`TokenMalformed` family error if it is not a JWS.

    The size cap is checked first, on the raw string, so an attacker cannot
    make us decode megabytes. ``signed_and_signature`` is ``token``'s UTF-8
    bytes already split at the last dot (the verifier has them from its
    cache key), to skip encoding and splitting again; an ASCII token has the
    same bytes in both.
    """
    if len(token) > max_token_bytes:
        raise TokenTooLarge()
    if not token.isascii():
        raise TokenMalformed("The token has non-ASCII characters.")
    if signed_and_signature is None:
        signed, _, signature_segment = token.encode("ascii").rpartition(b".")
    else:
        signed, signature_segment = signed_and_signature
    # Bytes from here on; the signing input is the signed part itself, as it came.
    segments = signed.split(b".")
    if len(segments) != 2 or not (segments[0] and segments[1] and signature_segment):
        raise TokenMalformed("The token does not have three non-empty segments.")
    header_segment, claims_segment = segments
    known = _valid_headers.get(header_segment)
    header, kid = known if known is not None else _parse_header(header_segment)
    # _decode_json_object, inline: this runs for every new token.
    raw = _decode_base64url(claims_segment)
    counted = _fast_json_object_counted(raw)
    claims, containers = counted if counted is not None else (_strict_json_object(raw), -1)
    return _new_parsed_token(
        ParsedToken,
        (
            header,
            claims,
            kid,
            signed,
            _decode_base64url(signature_segment),
            signature_segment,
            containers,
        ),
    )
