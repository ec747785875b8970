"""The msgspec parser agrees with the standard-library parser it replaced, on every input.

The token parser decodes base64url and JSON with msgspec, and takes a JSON
segment only when it can prove msgspec read it as the standard library
would; everything else goes to the standard-library parser. These
properties hold the whole parser to the one it replaced, kept below
unchanged as the oracle: on generated JSON, on mutations of it (duplicate
names, odd whitespace, escapes, non-finite and huge numbers, deep nesting,
raw bytes) and on whole signed tokens, both accept with the very same value,
down to key order, types and the sign of zero, or both refuse.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from siot_authz import TokenMalformed
from siot_authz._token import (
    _decode_base64url,
    _decode_json_object,
    _fast_json_object,
    _fast_json_object_counted,
    parse_token,
)
from siot_authz.testing import b64url

settings.register_profile(
    "siot-authz-parser-equivalence",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EQUIVALENCE = settings.get_profile("siot-authz-parser-equivalence")

# -- the oracle: the parser as it was before msgspec, unchanged ------------------------------------

_ORACLE_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")
_ORACLE_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ORACLE_SPARE_BITS = [0] * 256
for _value, _char in enumerate(_ORACLE_ALPHABET):
    _ORACLE_SPARE_BITS[_char] = _value
_ORACLE_PADDING = (b"", b"", b"==", b"=")


def oracle_base64url(segment: bytes) -> bytes:
    raw: bytes | None = None
    remainder = len(segment) % 4
    if remainder != 1:
        try:
            raw = binascii.a2b_base64(
                segment.translate(_ORACLE_URLSAFE_TO_STANDARD) + _ORACLE_PADDING[remainder], strict_mode=True
            )
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or (remainder and _ORACLE_SPARE_BITS[segment[-1]] & (0b1111 if remainder == 2 else 0b11)):
        raise TokenMalformed("A token segment is not canonical base64url.")
    return raw


def _oracle_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise TokenMalformed("A token segment has duplicate JSON member names.")
    return result


def _oracle_constant(name: str) -> Any:
    raise TokenMalformed("A token segment has a non-finite number.")


def _oracle_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise TokenMalformed("A token segment has a non-finite number.")
    return value


_ORACLE_JSON = json.JSONDecoder(
    object_pairs_hook=_oracle_pairs, parse_constant=_oracle_constant, parse_float=_oracle_float
)


def oracle_json_object(raw: bytes) -> dict[str, Any]:
    is_json = True
    try:
        text = raw.decode("utf-8")
        value, end = _ORACLE_JSON.raw_decode(text)
        is_json = end == len(text)
    except TokenMalformed:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        is_json = False
    if is_json and "\\u" in text and ("\\ud" in text or "\\uD" in text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            is_json = False
    if not is_json:
        raise TokenMalformed("A token segment is not UTF-8 JSON.")
    if not isinstance(value, dict):
        raise TokenMalformed("A token segment is not a JSON object.")
    return value


# -- comparing outcomes -------------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """A form where equal means identical: types, key order and the sign of zero all count."""
    if isinstance(value, dict):
        return ("object", [(name, _exact(item)) for name, item in value.items()])
    if isinstance(value, list):
        return ("array", [_exact(item) for item in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def outcome(parse: Any, data: bytes) -> Any:
    try:
        return ("accepted", _exact(parse(data)))
    except TokenMalformed as refusal:
        return ("refused", str(refusal))


def containers_in(value: Any) -> int:
    """How many arrays and objects ``value`` holds, at any depth, itself not counted."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return sum(1 + containers_in(item) for item in items if isinstance(item, (dict, list)))


def brackets_in_strings(value: Any) -> int:
    """How many "[" and "{" the strings of ``value`` hold, member names included."""
    if isinstance(value, str):
        return value.count("[") + value.count("{")
    if isinstance(value, dict):
        return sum(brackets_in_strings(name) + brackets_in_strings(item) for name, item in value.items())
    if isinstance(value, list):
        return sum(map(brackets_in_strings, value))
    return 0


def assert_same_json(raw: bytes) -> None:
    segment = b64url(raw).encode()
    expected = outcome(oracle_json_object, raw)
    assert outcome(_decode_json_object, segment) == expected
    fast = _fast_json_object(raw)
    if fast is not None:  # the fast path only ever accepts, and only what the oracle accepts, identically
        assert expected == ("accepted", _exact(fast))
        # ... and its count of opening brackets is the arrays and objects it accepted plus the
        # brackets inside strings: never fewer than the containers (the claim rules rely on that).
        counted = _fast_json_object_counted(raw)
        assert counted is not None
        assert counted[1] == containers_in(fast) + brackets_in_strings(fast)


# -- strategies -------------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["sub", "iss", "cognito:groups", "https://cognito-idp.eu-west-1.amazonaws.com/x", "a:b:c", ""]
)
_numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -0.0, 1e308, 5e-324, 2**64, -(2**63) - 1])
)
_json_values = st.recursive(
    st.none() | st.booleans() | _numbers | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=5),
    max_leaves=20,
)
_objects = st.dictionaries(_text, _json_values, max_size=8)


# Made once: a strategy built inside a composite is built and validated again for every example.
_SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")])
_BOOLEANS = st.booleans()


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    """A JSON object written by the standard library, in one of its spellings."""
    value = draw(_objects)
    separators = draw(_SEPARATORS)
    ensure_ascii = draw(_BOOLEANS)
    return json.dumps(value, separators=separators, ensure_ascii=ensure_ascii).encode("utf-8")


_INSERTS = [
    b" ", b"\t", b"\n", b"\r", b"\x0c", b"\x0b", b"\x00", b"\xa0", b"\xef\xbb\xbf", b":", b",", b'"', b"\\",
    b"\\u0000", b"\\ud800", b"\\udc00", b"\\u003a", b"{", b"}", b"[", b"]", b"NaN", b"Infinity", b"-Infinity",
    b"1e400", b"-1e400", b"1e-400", b"9" * 30, b"-0", b"01", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80",
    b'"a":1,', b'"a":1', b"true", b"null",
]  # fmt: skip


_JSON_TEXTS = json_texts()
_EDIT_COUNTS = st.integers(1, 3)
_EDITS = st.sampled_from(["insert", "delete", "replace", "duplicate"])
_INSERTED = st.sampled_from(_INSERTS) | st.binary(min_size=1, max_size=3)
_BYTE_VALUES = st.integers(0, 255)


@st.composite
def mutated_json_texts(draw: st.DrawFn) -> bytes:
    """A JSON object text with a few bytes inserted, deleted or replaced, or a member repeated."""
    data = bytearray(draw(_JSON_TEXTS))
    for _ in range(draw(_EDIT_COUNTS)):
        kind = draw(_EDITS)
        position = draw(st.integers(0, len(data)))
        if kind == "insert":
            data[position:position] = draw(_INSERTED)
        elif kind == "delete" and data:
            del data[min(position, len(data) - 1)]
        elif kind == "replace" and data:
            data[min(position, len(data) - 1)] = draw(_BYTE_VALUES)
        elif kind == "duplicate":
            name = json.dumps(draw(_text)).encode()
            member = name + b":" + json.dumps(draw(_json_values)).encode()
            data = bytearray(b"{" + member + b"," + member + b"," + bytes(data[1:]))
            if data.endswith(b",}"):
                data[-2:] = b"}"
    return bytes(data)


# -- the properties ---------------------------------------------------------------------------------


@EQUIVALENCE
@given(json_texts())
def test_generated_json_objects_parse_as_the_standard_library_parses_them(raw: bytes) -> None:
    assert_same_json(raw)


@EQUIVALENCE
@given(mutated_json_texts())
@example(b'{"sub":"a","sub":"b"}')
@example(b'{"sub":"a:b","sub":"c"}')
@example(b'{"a":{"b":1,"b":2}}')
@example(b'{"iss\\u003a":"x","iss:":"y"}')
@example(b'{"a":1,"\\u0061":2}')
@example(b'{"exp":1e400}')
@example(b'{"exp":-1e400}')
@example(b'{"exp":NaN}')
@example(b'{"exp":Infinity}')
@example(b' {"a":1}')
@example(b'{"a":1} ')
@example(b'\xef\xbb\xbf{"a":1}')
@example(b'{"a":"\\ud800"}')
@example(b'{"a":"\xed\xa0\x80"}')
@example(b'{"a":"\xc0\xaf"}')
@example(b'{"a":' + b"[" * 60 + b"]" * 60 + b"}")
@example(b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}")
@example(b'{"a":' + b"9" * 4299 + b"}")
@example(b'{"a":' + b"9" * 4301 + b"}")
@example(b'{"a":18446744073709551616,"b":-9223372036854775809,"c":-0.0,"d":-0}')
@example(b"[]")
@example(b"{}")
@example(b'{"g":[],"h":[[1],{"i":{}}],"j":"[{","[":"{"}')
@example(b'{"a":"\\"","a":"\\""}')
@example(b'{"a\\"":1,"a\\"":1}')
@example(b'{"a":"\\n\\u0000/","b":[1,{"c":"]"}]}')
@example(b'{"a":1.5,"b":10.0,"c":1e3}')
def test_mutated_json_objects_parse_as_the_standard_library_parses_them(raw: bytes) -> None:
    assert_same_json(raw)


_SEGMENT_ALPHABET = st.sampled_from(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") + list('+/= \t\n\\"*%.\x7f\x00')
)


@EQUIVALENCE
@given(st.text(_SEGMENT_ALPHABET, max_size=40) | st.binary(max_size=40).map(lambda b: b64url(b) + "A"))
@example("QQ")  # canonical
@example("QR")  # non-canonical trailing bits
@example("QUI")
@example("QUJ")
@example("QUI=")
@example("QU\\u0041")
@example('QU"D')
@example("QUJD\\")
def test_base64url_segments_decode_as_binascii_decoded_them(text: str) -> None:
    segment = text.encode("ascii")
    assert outcome(_decode_base64url, segment) == outcome(oracle_base64url, segment)


@EQUIVALENCE
@given(st.binary(max_size=64))
def test_base64url_of_any_bytes_round_trips(raw: bytes) -> None:
    assert _decode_base64url(base64.urlsafe_b64encode(raw).rstrip(b"=")) == raw


def _oracle_parse(token: str) -> tuple[Any, Any, bytes, bytes]:
    header, claims, signature = (segment.encode() for segment in token.split("."))
    return (
        _exact(oracle_json_object(oracle_base64url(header))),
        _exact(oracle_json_object(oracle_base64url(claims))),
        token.rpartition(".")[0].encode(),
        oracle_base64url(signature),
    )


@EQUIVALENCE
@given(_objects, st.binary(min_size=1, max_size=300))
def test_whole_tokens_parse_as_before(claims: dict[str, Any], signature: bytes) -> None:
    header = {"alg": "RS256", "kid": "key-1", "typ": "JWT"}
    token = ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)]
    )
    parsed = parse_token(token, 1 << 20)
    assert (_exact(parsed.header), _exact(parsed.claims), parsed.signing_input, parsed.signature) == (
        _oracle_parse(token)
    )
    # The bound the claim rules rely on, when the fast path took the claims; else "not counted".
    is_fast = _fast_json_object(json.dumps(claims).encode()) is not None
    assert parsed.containers == (containers_in(claims) + brackets_in_strings(claims) if is_fast else -1)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sub":"a","sub":"b"}',
        b'{"sub":"a","groups":["x"],"sub":"a"}',
        b'{"profile":{"plan":"pro","plan":"free"}}',
        b'{"exp":1e400}',
        b'{"a":1} ',
        b'{"a":"\\ud800"}',
    ],
)
def test_fast_path_hands_what_it_cannot_prove_to_the_standard_library(raw: bytes) -> None:
    assert _fast_json_object(raw) is None
    with pytest.raises(TokenMalformed):
        _decode_json_object(b64url(raw).encode())


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_fast_path_takes_a_cognito_payload(separators: tuple[str, str]) -> None:
    claims = {
        "sub": "u-1",
        "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Pool",
        "exp": 1,
        "cognito:groups": ["admin", "a:b"],
        "email_verified": True,
    }
    raw = json.dumps(claims, separators=separators).encode()
    assert _fast_json_object(raw) == json.loads(raw)
