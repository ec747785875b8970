"""The attack catalogue: every hostile token of the threat model, refused with the right code.

Each case runs three ways: through the FastAPI dependency (a 401 carrying the
case's code, never a 500), through ``TokenVerifier.verify`` and through
``verify_sync``. Tokens are forged by hand with ``cryptography`` and ``hmac``,
never with the code under test. Most forgeries carry claims that would be
accepted, so each one fails only for the reason the case names.

The second half pins down how python-jose is used, so that a change that
reintroduces one of its known weaknesses (CVE-2024-33663, CVE-2024-33664, the
DER-key HS256 confusion, ecdsa's Minerva) fails here.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jose.backends.cryptography_backend as jose_crypto_backend
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import loopback
import pkcs1_blocks
import siot_authz
from siot_authz import AuthError, AuthSettings, CognitoAuth, Principal, TokenUse, TokenVerifier
from siot_authz._jose import UnusableKey, _no_backend, build_rs256_key
from siot_authz.testing import JwksServer, LocalIssuer, SigningKey, b64url
from spare_keys import spare_key_as

# -- forging ------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _assemble(header: Mapping[str, Any] | bytes, payload: Mapping[str, Any] | bytes, signature: bytes) -> str:
    header_bytes = header if isinstance(header, bytes) else _json(header)
    payload_bytes = payload if isinstance(payload, bytes) else _json(payload)
    return f"{b64url(header_bytes)}.{b64url(payload_bytes)}.{b64url(signature)}"


def _signing_input(header: Mapping[str, Any], payload: Mapping[str, Any] | bytes) -> bytes:
    payload_bytes = payload if isinstance(payload, bytes) else _json(payload)
    return f"{b64url(_json(header))}.{b64url(payload_bytes)}".encode("ascii")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _segments(token: str) -> list[str]:
    return token.split(".")


def _with_segment(token: str, index: int, segment: str) -> str:
    parts = _segments(token)
    parts[index] = segment
    return ".".join(parts)


def _flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    mutated = bytearray(data)
    mutated[index] ^= 1 << bit
    return bytes(mutated)


def _raw_claims(claims: Mapping[str, Any], **raw_values: str) -> bytes:
    """JSON for ``claims`` with some values spelled verbatim (``Infinity``, ``1e400``...)."""
    text = json.dumps({**claims, **{name: f"@@{name}@@" for name in raw_values}})
    for name, raw in raw_values.items():
        text = text.replace(f'"@@{name}@@"', raw)
    return text.encode()


def _noncanonical(segment: str) -> str:
    """The same bytes spelled with non-zero unused trailing bits (a second spelling)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3), "segment has no unused trailing bits"
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last + 1]


@dataclass
class Forge:
    """What an attacker works with: the pool's public key, their own keys, their own server."""

    issuer: LocalIssuer
    attacker: SigningKey  # an RSA key the pool never published
    ec_key: ec.EllipticCurvePrivateKey
    attacker_url: str  # a loopback server that must never be asked for anything

    @property
    def kid(self) -> str:
        return self.issuer.signing_key.kid

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return self.issuer.claims(**overrides)

    def token(self, **overrides: Any) -> str:
        """An honest ID token, signed by the pool."""
        return self.issuer.mint(**overrides)

    def signed(self, payload: Mapping[str, Any] | bytes | None = None, **header: Any) -> str:
        """Signed with the pool's real key: only the named flaw can make it fail."""
        return self.issuer.sign(self.claims() if payload is None else payload, header=header)

    def signed_without(self, *names: str, payload: Mapping[str, Any] | None = None) -> str:
        """Signed with the real key, with ``names`` removed from the header."""
        header = {
            name: value for name, value in {"alg": "RS256", "kid": self.kid}.items() if name not in names
        }
        body = payload if payload is not None else self.claims()
        return _assemble(header, body, self.issuer.signing_key.sign(_signing_input(header, body)))

    def with_signature(self, header: Mapping[str, Any], sign: Callable[[bytes], bytes]) -> str:
        claims = self.claims()
        return _assemble(header, claims, sign(_signing_input(header, claims)))

    def hmac_token(self, secret: bytes, alg: str) -> str:
        return self.with_signature(
            {"alg": alg, "kid": self.kid}, lambda data: hmac.new(secret, data, hashlib.sha256).digest()
        )

    def es256_signature(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def real_key_signature(self, pad: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> str:
        private_key = self.issuer.signing_key.private_key
        return self.with_signature(
            {"alg": "RS256", "kid": self.kid}, lambda data: private_key.sign(data, pad, algorithm)
        )

    def with_signature_bytes(self, change: Callable[[bytes], bytes]) -> str:
        token = self.token()
        return _with_segment(token, 2, b64url(change(_b64decode(_segments(token)[2]))))

    def with_payload_bytes(self, change: Callable[[bytes], bytes]) -> str:
        token = self.token(username="alice")
        return _with_segment(token, 1, b64url(change(_b64decode(_segments(token)[1]))))

    def leading_zero_signature(self) -> str:
        """A genuine token whose signature's first byte is zero (one in 256), re-signed with a nonce until one is."""
        for nonce in range(5000):
            token = self.token(nonce=nonce)
            if _b64decode(_segments(token)[2])[0] == 0:
                return token
        raise AssertionError("no signature with a leading zero byte in five thousand tries")

    def standard_alphabet(self) -> str:
        # Re-sign with a nonce until the signature's base64url has '-' or '_'.
        for nonce in range(1000):
            token = self.token(nonce=nonce)
            signature = _b64decode(_segments(token)[2])
            standard = base64.b64encode(signature).decode().rstrip("=")
            if standard != _segments(token)[2]:
                return _with_segment(token, 2, standard)
        raise AssertionError("no signature with '-' or '_' in a thousand tries")


def _public_key_forms(issuer: LocalIssuer) -> dict[str, bytes]:
    """The pool's public key in every spelling an HS256 key-confusion attack might use."""
    public_key = issuer.signing_key.private_key.public_key()
    encoding, public_format = serialization.Encoding, serialization.PublicFormat
    jwk = issuer.signing_key.public_jwk()
    return {
        "pem": public_key.public_bytes(encoding.PEM, public_format.SubjectPublicKeyInfo),
        "pem-pkcs1": public_key.public_bytes(encoding.PEM, public_format.PKCS1),
        "der": public_key.public_bytes(encoding.DER, public_format.SubjectPublicKeyInfo),
        "der-pkcs1": public_key.public_bytes(encoding.DER, public_format.PKCS1),
        "openssh": public_key.public_bytes(encoding.OpenSSH, public_format.OpenSSH),
        "jwk-json": json.dumps(jwk).encode(),
        "jwks-json": json.dumps(issuer.jwks()).encode(),
        "raw-modulus": _b64decode(jwk["n"]),
        "modulus-b64url": jwk["n"].encode(),
    }


_KEY_FORMS = (
    "pem",
    "pem-pkcs1",
    "der",
    "der-pkcs1",
    "openssh",
    "jwk-json",
    "jwks-json",
    "raw-modulus",
    "modulus-b64url",
)


# -- the catalogue ------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    forge: Callable[[Forge], str]
    token_use: TokenUse = "id"  # what the target API accepts


def _cases() -> list[Attack]:
    cases: list[Attack] = []

    def add(name: str, code: str, forge: Callable[[Forge], str], token_use: TokenUse = "id") -> None:
        cases.append(Attack(name, code, forge, token_use))

    # alg "none" in every casing: once with a real signature kept, once with a dummy one,
    # once with the signature stripped as the classic attack does.
    for alg in ("none", "None", "NONE", "nOnE", "NoNe"):
        add(f"alg-{alg}-real-signature", "unsupported_algorithm", lambda f, a=alg: f.signed(alg=a))
        add(
            f"alg-{alg}-dummy-signature",
            "unsupported_algorithm",
            lambda f, a=alg: _assemble({"alg": a, "kid": f.kid}, f.claims(), b"\x00"),
        )
        add(
            f"alg-{alg}-no-signature",
            "token_malformed",
            lambda f, a=alg: _assemble({"alg": a, "kid": f.kid}, f.claims(), b""),
        )
    # Every other alg is refused even over a signature the real key made.
    for alg in ("HS256", "HS384", "HS512", "PS256", "ES256", "ES384", "RS384", "RS512", "EdDSA", "dir"):
        add(f"alg-{alg}-label", "unsupported_algorithm", lambda f, a=alg: f.signed(alg=a))
    for name, alg in {
        "lowercase": "rs256",
        "trailing-space": "RS256 ",
        "leading-space": " RS256",
        "nul": "RS256\x00",
        "empty": "",
        "null": None,
        "number": 256,
        "list": ["RS256"],
        "object": {"RS256": True},
    }.items():
        add(f"alg-{name}", "unsupported_algorithm", lambda f, a=alg: f.signed(alg=a))
    add("alg-missing", "unsupported_algorithm", lambda f: f.signed_without("alg"))

    # HS256 keyed with the public key, in every spelling; and the same HMAC under an RS256 label.
    for form in _KEY_FORMS:
        add(
            f"hs256-keyed-with-{form}",
            "unsupported_algorithm",
            lambda f, k=form: f.hmac_token(_public_key_forms(f.issuer)[k], "HS256"),
        )
        add(
            f"hmac-{form}-labelled-rs256",
            "signature_invalid",
            lambda f, k=form: f.hmac_token(_public_key_forms(f.issuer)[k], "RS256"),
        )

    # ECDSA: a fresh key, and the all-zero "psychic signature" (CVE-2022-21449).
    add(
        "es256-fresh-key",
        "unsupported_algorithm",
        lambda f: f.with_signature({"alg": "ES256", "kid": f.kid}, f.es256_signature),
    )
    add(
        "es256-psychic-signature",
        "unsupported_algorithm",
        lambda f: f.with_signature({"alg": "ES256", "kid": f.kid}, lambda _: bytes(64)),
    )
    add(
        "es256-signature-labelled-rs256",
        "signature_invalid",
        lambda f: f.with_signature({"alg": "RS256", "kid": f.kid}, f.es256_signature),
    )
    for size in (64, 256):
        add(
            f"psychic-{size}-zero-bytes-labelled-rs256",
            "signature_invalid",
            lambda f, n=size: f.with_signature({"alg": "RS256", "kid": f.kid}, lambda _: bytes(n)),
        )
    # The real key, but not PKCS#1 v1.5 with SHA-256: the algorithm is ours to fix, not the token's.
    add("pss-signature-labelled-rs256", "signature_invalid", _pss_signature)
    add(
        "rs512-signature-labelled-rs256",
        "signature_invalid",
        lambda f: f.real_key_signature(padding.PKCS1v15(), hashes.SHA512()),
    )

    # An attacker's RSA key.
    add(
        "attacker-key-under-trusted-kid",
        "signature_invalid",
        lambda f: f.issuer.sign(f.claims(), header={"kid": f.kid}, key=f.attacker),
    )
    add("attacker-key-under-own-kid", "kid_unknown", lambda f: f.issuer.sign(f.claims(), key=f.attacker))

    # An attacker's key offered by the token itself: refused before any key is looked up.
    embedded: dict[str, Callable[[Forge], dict[str, Any]]] = {
        "jwk": lambda f: {"jwk": f.attacker.public_jwk()},
        "jwk-under-trusted-kid": lambda f: {"jwk": {**f.attacker.public_jwk(), "kid": f.kid}, "kid": f.kid},
        "jku": lambda f: {"jku": f.attacker_url},
        "jku-under-trusted-kid": lambda f: {"jku": f.attacker_url, "kid": f.kid},
        "x5u": lambda f: {"x5u": f.attacker_url},
        "x5c": lambda f: {"x5c": [b64url(b"attacker certificate")]},
    }
    for name, make_header in embedded.items():
        add(
            f"embedded-{name}",
            "header_invalid",
            lambda f, h=make_header: f.issuer.sign(f.claims(), header=h(f), key=f.attacker),
        )
    add("embedded-jku-on-genuine-token", "header_invalid", lambda f: f.signed(jku=f.attacker_url))

    # kid: traversal and injection (signed by the real key, so only the kid is wrong).
    hostile_kids = {
        "path-traversal": "../../etc/passwd",
        "absolute-path": "/dev/null",
        "sql-injection": "' OR '1'='1",
        "sql-drop": "x'; DROP TABLE keys; --",
        "shell-injection": "$(touch pwned)",
        "template-injection": "{{7*7}}",
        "format-string": "%s%s%s%n",
        "log-injection": "x\ntoken_refused code=none forged=1",
        "nul": "\x00",
        "trusted-plus-nul": "@trusted\x00",
        "trusted-plus-space": "@trusted ",
        "url": "https://attacker.invalid/key.pem",
        "huge": "k" * 4000,
    }
    for name, kid in hostile_kids.items():
        add(
            f"kid-{name}",
            "kid_unknown",
            lambda f, k=kid: f.signed(kid=k.replace("@trusted", f.kid)),
        )
    add("kid-missing", "kid_missing", lambda f: f.signed_without("kid"))
    for name, kid in {
        "empty": "",
        "null": None,
        "number": 1,
        "bool": True,
        "list": ["@trusted"],
        "object": {"kid": "@trusted"},
    }.items():
        add(f"kid-{name}", "kid_missing", lambda f, k=kid: f.signed(kid=_with_trusted(k, f.kid)))

    # crit: extensions we do not understand must make the token invalid (RFC 7515 4.1.11).
    add("crit-exp", "header_invalid", lambda f: f.signed(crit=["exp"], exp=1))
    add("crit-b64", "header_invalid", lambda f: f.signed(crit=["b64"], b64=False))
    add("crit-empty", "header_invalid", lambda f: f.signed(crit=[]))

    # Tampering with a genuine token.
    add("swapped-payload", "signature_invalid", _swapped_payload)
    add("swapped-header", "signature_invalid", _swapped_header)
    add("signature-stripped", "token_malformed", lambda f: f.token().rsplit(".", 1)[0] + ".")
    add(
        "signature-truncated-by-one-byte",
        "signature_invalid",
        lambda f: f.with_signature_bytes(lambda s: s[:-1]),
    )
    add(
        "signature-truncated-to-half",
        "signature_invalid",
        lambda f: f.with_signature_bytes(lambda s: s[:128]),
    )
    add("signature-one-byte", "signature_invalid", lambda f: f.with_signature_bytes(lambda s: s[:1]))
    add("signature-extended", "signature_invalid", lambda f: f.with_signature_bytes(lambda s: s + b"\x00"))
    add(
        "signature-zero-prefixed",
        "signature_invalid",
        lambda f: f.with_signature_bytes(lambda s: b"\x00" + s),
    )
    # RSA would recover the same block from the number without its leading zero byte; the
    # signature must still be exactly as long as the modulus (RFC 7518 3.3), so there is one spelling.
    add("signature-leading-zero-byte-dropped", "signature_invalid", _leading_zero_dropped)
    add("signature-first-bit-flipped", "signature_invalid", lambda f: f.with_signature_bytes(_first_bit))
    add("signature-last-bit-flipped", "signature_invalid", lambda f: f.with_signature_bytes(_last_bit))
    add("payload-bit-flipped", "signature_invalid", lambda f: f.with_payload_bytes(_rename_alice))

    # Segment counts.
    add("one-segment", "token_malformed", lambda f: _segments(f.token())[0])
    add("two-segments", "token_malformed", lambda f: f.token().rsplit(".", 1)[0])
    add("four-segments", "token_malformed", lambda f: f.token() + "." + _segments(f.token())[2])
    add("five-segments-jwe-shaped", "token_malformed", _jwe_shaped)
    add("five-segments-padded-with-valid-parts", "token_malformed", lambda f: f.token() + ".AAAA.AAAA")
    add("trailing-dot", "token_malformed", lambda f: f.token() + ".")
    add("leading-dot", "token_malformed", lambda f: "." + f.token())
    add("empty-payload-segment", "token_malformed", lambda f: _with_segment(f.token(), 1, ""))
    add("only-dots", "token_malformed", lambda f: "..")

    # Encoding: one spelling per token.
    for index, part in enumerate(("header", "payload", "signature")):
        add(
            f"padded-{part}",
            "token_malformed",
            lambda f, i=index: _with_segment(f.token(), i, _segments(f.token())[i] + "="),
        )
        add(
            f"whitespace-in-{part}",
            "token_malformed",
            lambda f, i=index: _with_segment(f.token(), i, " ".join(_split_half(_segments(f.token())[i]))),
        )
    add("double-padded-signature", "token_malformed", lambda f: f.token() + "==")
    add("standard-alphabet-signature", "token_malformed", lambda f: f.standard_alphabet())
    add(
        "non-canonical-trailing-bits-signature",
        "token_malformed",
        lambda f: _with_segment(f.token(), 2, _noncanonical(_segments(f.token())[2])),
    )
    add("non-canonical-trailing-bits-header", "token_malformed", _noncanonical_header)
    add("impossible-length-segment", "token_malformed", lambda f: _with_segment(f.token(), 2, "A" * 5))
    add("tab-inside", "token_malformed", lambda f: f.token().replace(".", ".\t", 1))
    add("newline-inside", "token_malformed", lambda f: f.token().replace(".", ".\n", 1))
    add("percent-encoded-dot", "token_malformed", lambda f: f.token().replace(".", "%2E", 1))
    add("non-ascii-lookalike", "token_malformed", lambda f: f.token().replace("e", "\u0435", 1))

    # Size.
    add("oversize-genuine-signature", "token_too_large", lambda f: f.token(padding="x" * 9000))
    add("oversize-megabyte", "token_too_large", lambda f: "A" * 1_000_000)

    # Payload (and header) not a UTF-8 JSON object. All signed by the real key.
    for name, payload in {
        "not-utf8": b"\xff\xfe" + _json({"sub": "x"}),
        "latin1-json": '{"sub": "\xe9"}'.encode("latin-1"),
        "overlong-utf8": b'{"sub": "\xc0\xaf"}',
        "utf8-bom": b"\xef\xbb\xbf" + _json({"sub": "x"}),
        "utf16": json.dumps({"sub": "x"}).encode("utf-16"),
        "json-array": _json([{"sub": "x"}]),
        "json-string": _json("claims"),
        "json-number": b"1",
        "json-null": b"null",
        "json-true": b"true",
        "not-json": b"sub=x",
        "trailing-garbage": _json({"sub": "x"}) + b"x",
        "deeply-nested": b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        "huge-integer": b'{"exp": ' + b"9" * 5000 + b"}",
    }.items():
        add(f"payload-{name}", "token_malformed", lambda f, p=payload: f.signed(p))
    add(
        "header-json-array",
        "token_malformed",
        lambda f: _assemble(_json([{"alg": "RS256"}]), f.claims(), b"s"),
    )
    add("header-not-utf8", "token_malformed", lambda f: _assemble(b'{"alg": "RS\xff"}', f.claims(), b"s"))

    # Duplicate member names: parsers disagree on which one wins.
    add(
        "duplicate-iss", "token_malformed", lambda f: f.signed(_duplicated(f.claims(), "iss", "https://evil"))
    )
    add("duplicate-sub", "token_malformed", lambda f: f.signed(_duplicated(f.claims(), "sub", "admin")))
    add(
        "duplicate-token-use",
        "token_malformed",
        lambda f: f.signed(_duplicated(f.claims(), "token_use", "id")),
    )
    add(
        "duplicate-by-escape",
        "token_malformed",
        lambda f: f.signed(_json(f.claims())[:-1] + b', "\\u0069ss": "https://evil"}'),
    )
    add(
        "duplicate-nested",
        "token_malformed",
        lambda f: f.signed(_raw_claims(f.claims(), address='{"city": "a", "city": "b"}')),
    )
    add("duplicate-header-alg", "token_malformed", _duplicate_header_alg)
    add("duplicate-header-kid", "token_malformed", _duplicate_header_kid)

    # exp and the other times: typed, finite, in range.
    for name, value in {
        "string": "9999999999",
        "true": True,
        "false": False,
        "null": None,
        "list": [9999999999],
        "object": {"$date": 9999999999},
        "negative": -1,
        "beyond-year-9999": 10**20,
    }.items():
        add(f"exp-{name}", "claim_invalid", lambda f, v=value: f.signed(f.claims(exp=v)))
    for name, raw in {
        "infinity": "Infinity",
        "minus-infinity": "-Infinity",
        "nan": "NaN",
        "1e400": "1e400",
        "minus-1e400": "-1e400",
    }.items():
        add(f"exp-{name}", "token_malformed", lambda f, r=raw: f.signed(_raw_claims(f.claims(), exp=r)))
    add("exp-missing", "claim_invalid", lambda f: f.token(omit=["exp"]))
    add("exp-past", "token_expired", lambda f: f.token(expires_in=-60))
    add("iat-string", "claim_invalid", lambda f: f.token(iat="0"))
    add("iat-infinity", "token_malformed", lambda f: f.signed(_raw_claims(f.claims(), iat="Infinity")))
    add("iat-future", "token_not_yet_valid", lambda f: f.token(iat=f.claims()["iat"] + 3600))
    add("nbf-future", "token_not_yet_valid", lambda f: f.token(nbf=f.claims()["iat"] + 3600))
    add("nbf-nan", "token_malformed", lambda f: f.signed(_raw_claims(f.claims(), nbf="NaN")))

    # iss look-alikes: compared exactly.
    lookalikes: dict[str, Callable[[str, LocalIssuer], Any]] = {
        "trailing-slash": lambda iss, _: iss + "/",
        "suffix": lambda iss, _: iss + "x",
        "path-suffix": lambda iss, _: iss + "/../us-east-1_Other",
        "http-scheme": lambda iss, _: iss.replace("https://", "http://"),
        "other-pool": lambda iss, i: iss.replace(i.user_pool_id, f"{i.region}_OtherPool1"),
        "other-region": lambda iss, i: iss.replace(f"cognito-idp.{i.region}", "cognito-idp.eu-west-1"),
        "uppercase-host": lambda iss, _: iss.replace("cognito-idp", "COGNITO-IDP"),
        "explicit-port": lambda iss, _: iss.replace(".com/", ".com:443/"),
        "userinfo": lambda iss, i: (
            f"https://cognito-idp.{i.region}.amazonaws.com@evil.example/{i.user_pool_id}"
        ),
        "attacker-host-prefix": lambda iss, _: "https://evil.example/" + iss,
        "trailing-whitespace": lambda iss, _: iss + " ",
        "list": lambda iss, _: [iss],
        "null": lambda iss, _: None,
    }
    for name, make_iss in lookalikes.items():
        add(f"iss-{name}", "issuer_invalid", lambda f, m=make_iss: f.token(iss=m(f.issuer.issuer, f.issuer)))
    add("iss-missing", "issuer_invalid", lambda f: f.token(omit=["iss"]))

    # ID token where an access token is expected, and the reverse; token_use itself.
    add("access-token-to-id-api", "token_use_mismatch", lambda f: f.token(token_use="access"))
    add("id-token-to-access-api", "token_use_mismatch", lambda f: f.token(token_use="id"), "access")
    for name, value in {"refresh": "refresh", "uppercase": "ID", "list": ["id"], "null": None}.items():
        add(
            f"token-use-{name}",
            "token_use_mismatch",
            lambda f, v=value: f.signed({**f.claims(), "token_use": v}),
        )
    add("token-use-missing", "token_use_mismatch", lambda f: f.token(omit=["token_use"]))

    # The app client: aud (ID tokens) and client_id (access tokens).
    for name, aud in {
        "other-client": "otherclient0000000000000",
        "list-of-ours": ["@ours"],
        "list-with-ours": ["@ours", "otherclient0000000000000"],
        "empty": "",
        "with-trailing-space": "@ours ",
        "null": None,
    }.items():
        add(
            f"aud-{name}",
            "client_not_allowed",
            lambda f, a=aud: f.token(aud=_with_ours(a, f.issuer.client_id)),
        )
    add("aud-missing", "client_not_allowed", lambda f: f.token(omit=["aud"]))
    add(
        "id-token-with-our-client-id-but-other-aud",
        "client_not_allowed",
        lambda f: f.token(aud="otherclient0000000000000", client_id=f.issuer.client_id),
    )
    for name, client_id in {
        "other-client": "otherclient0000000000000",
        "list-of-ours": ["@ours"],
        "null": None,
    }.items():
        add(
            f"access-client-id-{name}",
            "client_not_allowed",
            lambda f, c=client_id: f.token(token_use="access", client_id=_with_ours(c, f.issuer.client_id)),
            "access",
        )
    add(
        "access-client-id-missing",
        "client_not_allowed",
        lambda f: f.token(token_use="access", omit=["client_id"]),
        "access",
    )
    add(
        "access-token-with-our-aud-but-other-client-id",
        "client_not_allowed",
        lambda f: f.token(token_use="access", client_id="otherclient0000000000000", aud=f.issuer.client_id),
        "access",
    )
    return cases


def _with_trusted(value: Any, kid: str) -> Any:
    if value == "@trusted":
        return kid
    if isinstance(value, list):
        return [_with_trusted(item, kid) for item in value]
    if isinstance(value, dict):
        return {name: _with_trusted(item, kid) for name, item in value.items()}
    return value


def _with_ours(value: Any, client_id: str) -> Any:
    if isinstance(value, str):
        return value.replace("@ours", client_id)
    if isinstance(value, list):
        return [_with_ours(item, client_id) for item in value]
    return value


def _split_half(segment: str) -> tuple[str, str]:
    middle = len(segment) // 2
    return segment[:middle], segment[middle:]


def _first_bit(signature: bytes) -> bytes:
    return _flip_bit(signature, 0)


def _last_bit(signature: bytes) -> bytes:
    return _flip_bit(signature, len(signature) - 1)


def _rename_alice(payload: bytes) -> bytes:
    # "alice" -> "alicd": one bit, still valid JSON, so only the signature can object.
    return _flip_bit(payload, payload.index(b'"alice"') + 5)


def _pss_signature(f: Forge) -> str:
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    return f.real_key_signature(pss, hashes.SHA256())


def _leading_zero_dropped(f: Forge) -> str:
    token = f.leading_zero_signature()
    return _with_segment(token, 2, b64url(_b64decode(_segments(token)[2])[1:]))


def _swapped_payload(f: Forge) -> str:
    victim, privileged = f.token(), f.token(groups=["admin"])
    return _with_segment(victim, 1, _segments(privileged)[1])


def _swapped_header(f: Forge) -> str:
    token = f.token()
    return _with_segment(token, 0, b64url(_json({"alg": "RS256", "kid": f.kid, "typ": "JWT"})))


def _jwe_shaped(f: Forge) -> str:
    # CVE-2024-33664 rides on a compressed JWE ("zip": "DEF"); it must never reach a decoder.
    header = {"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF", "kid": f.kid}
    return ".".join([b64url(_json(header)), "AAAA", "AAAA", b64url(b"x" * 64), "AAAA"])


def _noncanonical_header(f: Forge) -> str:
    # Pad the header until its segment has unused trailing bits, then set them.
    for spaces in range(3):
        header = b'{"alg": "RS256", "kid": "%s"}' % f.kid.encode() + b" " * spaces
        segment = b64url(header)
        if len(segment) % 4 in (2, 3):
            return _with_segment(f.token(), 0, _noncanonical(segment))
    raise AssertionError("unreachable: some padding gives a partial quantum")


def _duplicated(claims: dict[str, Any], name: str, second: Any) -> bytes:
    return _json(claims)[:-1] + b", " + _json(name) + b": " + _json(second) + b"}"


def _duplicate_header_alg(f: Forge) -> str:
    header = b'{"alg": "none", "kid": "%s", "alg": "RS256"}' % f.kid.encode()
    claims = f.claims()
    signing_input = f"{b64url(header)}.{b64url(_json(claims))}".encode()
    return f"{signing_input.decode()}.{b64url(f.issuer.signing_key.sign(signing_input))}"


def _duplicate_header_kid(f: Forge) -> str:
    header = b'{"alg": "RS256", "kid": "other", "kid": "%s"}' % f.kid.encode()
    claims = f.claims()
    signing_input = f"{b64url(header)}.{b64url(_json(claims))}".encode()
    return f"{signing_input.decode()}.{b64url(f.issuer.signing_key.sign(signing_input))}"


ATTACKS = _cases()


def test_catalogue_names_are_unique() -> None:
    names = [attack.name for attack in ATTACKS]
    assert len(names) == len(set(names))


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker_key() -> SigningKey:
    return spare_key_as(2, "attacker-key")  # neither pool B's keys (spares 0 and 1) nor the issuer's


@pytest.fixture(scope="module")
def attacker_server(attacker_key: SigningKey) -> Iterator[JwksServer]:
    """Where jku/x5u point: serves the attacker's key set, and must never be asked for it."""
    with JwksServer(lambda: {"keys": [attacker_key.public_jwk()]}, "/.well-known/jwks.json") as server:
        yield server


@pytest.fixture
def forge(issuer: LocalIssuer, attacker_key: SigningKey, attacker_server: JwksServer) -> Iterator[Forge]:
    attacker_server.reset()
    yield Forge(issuer, attacker_key, ec.generate_private_key(ec.SECP256R1()), attacker_server.url)
    assert attacker_server.request_count == 0, "a token made us contact the attacker's server"


def _id_or_access_api(issuer: LocalIssuer, token_use: TokenUse) -> AuthSettings:
    return issuer.settings(token_use=token_use, http_timeout_seconds=2.0)


@pytest.fixture
def verifier_for(issuer: LocalIssuer) -> Iterator[Callable[[TokenUse], TokenVerifier]]:
    made: dict[str, TokenVerifier] = {}

    def get(token_use: TokenUse) -> TokenVerifier:
        if token_use not in made:
            made[token_use] = TokenVerifier(_id_or_access_api(issuer, token_use))
        return made[token_use]

    yield get
    for verifier in made.values():
        verifier.close()


def _me_app(auth: CognitoAuth) -> FastAPI:
    """An app with the one route every attack is sent to: /me, for any valid token."""
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> Principal:
        return principal

    return app


@pytest.fixture
def app(auth: CognitoAuth) -> FastAPI:
    """conftest's app, cut to the route the attacks use: each test still gets an app of its own,
    and building conftest's five routes took longer than sending the attack."""
    return _me_app(auth)


@pytest.fixture
def client_for(client: TestClient, issuer: LocalIssuer) -> Iterator[Callable[[TokenUse], TestClient]]:
    """The shared ``client`` for an ID-token API; a like app for other token_use settings."""
    extra: list[TestClient] = []

    def get(token_use: TokenUse) -> TestClient:
        if token_use == "id":
            return client
        other = TestClient(_me_app(CognitoAuth(_id_or_access_api(issuer, token_use))))
        other.__enter__()
        extra.append(other)
        return other

    yield get
    for other in extra:
        other.__exit__(None, None, None)


def _authorization(token: str) -> bytes:
    # Bytes, so non-ASCII and control characters reach the server as sent.
    return token.encode("utf-8", "surrogateescape")


# -- the catalogue, three ways ------------------------------------------------

_BY_NAME = pytest.mark.parametrize("attack", ATTACKS, ids=[attack.name for attack in ATTACKS])


@_BY_NAME
def test_fastapi_refuses_attack_with_401(
    attack: Attack, forge: Forge, client_for: Callable[[TokenUse], TestClient]
) -> None:
    client = client_for(attack.token_use)
    response = client.get("/me", headers={"Authorization": _authorization(attack.forge(forge))})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == attack.code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@_BY_NAME
@pytest.mark.anyio
async def test_verify_refuses_attack(
    attack: Attack, forge: Forge, verifier_for: Callable[[TokenUse], TokenVerifier]
) -> None:
    with pytest.raises(AuthError) as refused:
        await verifier_for(attack.token_use).verify(attack.forge(forge))
    assert refused.value.code == attack.code


@_BY_NAME
def test_verify_sync_refuses_attack(
    attack: Attack, forge: Forge, verifier_for: Callable[[TokenUse], TokenVerifier]
) -> None:
    with pytest.raises(AuthError) as refused:
        verifier_for(attack.token_use).verify_sync(attack.forge(forge))
    assert refused.value.code == attack.code


@pytest.mark.parametrize("token_use", ["id", "access"])
def test_honest_token_from_the_same_forge_is_accepted(
    token_use: TokenUse,
    forge: Forge,
    verifier_for: Callable[[TokenUse], TokenVerifier],
    client_for: Callable[[TokenUse], TestClient],
) -> None:
    """The control: without its flaw, a forged token's claims would pass, so each refusal is meaningful."""
    honest = forge.signed(forge.claims(token_use=token_use))
    assert verifier_for(token_use).verify_sync(honest).token_use == token_use
    assert client_for(token_use).get("/me", headers={"Authorization": honest}).status_code == 200


def test_attacker_server_is_reachable_so_zero_requests_means_never_asked(
    forge: Forge, attacker_server: JwksServer, verifier: TokenVerifier
) -> None:
    for header in ({"jku": forge.attacker_url}, {"x5u": forge.attacker_url}):
        with pytest.raises(AuthError):
            verifier.verify_sync(forge.issuer.sign(forge.claims(), header=header, key=forge.attacker))
    assert attacker_server.request_count == 0
    assert loopback.get(forge.attacker_url).json()["keys"][0]["kid"] == "attacker-key"
    assert attacker_server.request_count == 1
    attacker_server.reset()  # the forge fixture checks the count again on teardown


# -- python-jose's known weaknesses ------------------------------------------

_SOURCE = Path(siot_authz.__file__).parent


def _jose_imports(module: Path) -> set[tuple[str, str]]:
    """Every (module, name) the file imports from python-jose."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jose":
            found.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update((alias.name, "*") for alias in node.names if alias.name.split(".")[0] == "jose")
    return found


def test_only_the_jose_module_imports_python_jose() -> None:
    importers = {
        path.relative_to(_SOURCE).as_posix() for path in _SOURCE.rglob("*.py") if _jose_imports(path)
    }
    assert importers == {"_jose.py"}


def test_jose_module_imports_only_the_rsa_key_and_the_error_base() -> None:
    """No jwt/jws/jwe module, no HMAC or EC key class: CVE-2024-33663/33664 and Minerva stay unreachable."""
    assert _jose_imports(_SOURCE / "_jose.py") == {
        ("jose.backends.cryptography_backend", "CryptographyRSAKey"),
        ("jose.exceptions", "JOSEError"),
    }


def test_build_rs256_key_passes_only_n_and_e_and_a_fixed_alg(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    real = jose_crypto_backend.CryptographyRSAKey

    def recording(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr("siot_authz._jose.CryptographyRSAKey", recording)
    private = issuer.signing_key.private_key.private_numbers()
    jwk = {
        **issuer.signing_key.public_jwk(),
        "alg": "HS256",  # what the key says about itself is not taken
        "kty": "oct",
        "k": b64url(b"secret"),
        "d": b64url(private.d.to_bytes(256, "big")),
        "p": b64url(private.p.to_bytes(128, "big")),
    }
    build_rs256_key(jwk)
    public = issuer.signing_key.public_jwk()
    assert calls == [({"kty": "RSA", "n": public["n"], "e": public["e"]}, "RS256", _no_backend)]


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": b64url(b"shared secret")},
        {"kty": "EC", "crv": "P-256", "x": b64url(bytes(32)), "y": b64url(bytes(32))},
        {"kty": "RSA", "n": 12345, "e": "AQAB"},
        {"kty": "RSA", "n": b64url(b"\x01" * 128), "e": "AQAB"},  # 1024 bits
        {"kty": "RSA", "n": "!!!", "e": "AQAB"},
    ],
    ids=["oct", "ec", "numeric-n", "short-modulus", "garbage-n"],
)
def test_build_rs256_key_refuses_anything_but_a_strong_rsa_key(jwk: dict[str, Any]) -> None:
    with pytest.raises(UnusableKey):
        build_rs256_key(jwk)


def test_built_key_verifies_only_pkcs1v15_sha256(forge: Forge) -> None:
    key = build_rs256_key(forge.issuer.signing_key.public_jwk())
    private_key = forge.issuer.signing_key.private_key
    data = b"header.payload"
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    assert key.verify(data, private_key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    refused = {
        "pss": private_key.sign(data, pss, hashes.SHA256()),
        "rs384": private_key.sign(data, padding.PKCS1v15(), hashes.SHA384()),
        "rs512": private_key.sign(data, padding.PKCS1v15(), hashes.SHA512()),
        **{
            f"hmac-{form}": hmac.new(secret, data, hashlib.sha256).digest()
            for form, secret in _public_key_forms(forge.issuer).items()
        },
        "es256": forge.es256_signature(data),
        "psychic": bytes(64),
        "empty": b"",
        # Blocks signed raw with the pool's private key: right digest, wrong encoding around it.
        **{
            name: pkcs1_blocks.raw_signature(private_key, block)
            for name, block in pkcs1_blocks.blocks_almost_right(hashlib.sha256(data).digest()).items()
        },
    }
    assert [name for name, signature in refused.items() if key.verify(data, signature)] == []


class _ForbiddenJosePath(BaseException):
    """Raised by a booby-trapped python-jose entry point; a BaseException so no safety net swallows it."""


@pytest.fixture
def trapped_jose(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Booby-trap every python-jose path we must never take; returns the ones that fired."""
    import jose.backends
    import jose.jwe
    import jose.jwk
    import jose.jws
    import jose.jwt

    fired: list[str] = []

    def trap(name: str) -> Callable[..., Any]:
        def forbidden(*args: Any, **kwargs: Any) -> Any:
            fired.append(name)
            raise _ForbiddenJosePath(name)

        return forbidden

    for module, name in [
        (jose.jwt, "decode"),
        (jose.jwt, "get_unverified_claims"),
        (jose.jws, "verify"),
        (jose.jwe, "decrypt"),
        (jose.jwk, "construct"),
    ]:
        monkeypatch.setattr(module, name, trap(f"{module.__name__}.{name}"))
    for key_class in {
        jose.backends.HMACKey,
        jose.backends.ECKey,
        jose.backends.AESKey,
        jose.backends.DIRKey,
        jose_crypto_backend.CryptographyHMACKey,
        jose_crypto_backend.CryptographyECKey,
    }:
        monkeypatch.setattr(key_class, "__init__", trap(f"{key_class.__name__}.__init__"))
    return fired


def test_no_attack_reaches_python_jose_jwt_jws_jwe_or_hmac_ec_keys(
    trapped_jose: list[str], forge: Forge, verifier_for: Callable[[TokenUse], TokenVerifier]
) -> None:
    assert verifier_for("id").verify_sync(forge.token()).username == "alice"
    for attack in ATTACKS:
        with pytest.raises(AuthError):
            verifier_for(attack.token_use).verify_sync(attack.forge(forge))
    assert trapped_jose == []


def test_der_keyed_hs256_forgery_fools_naive_python_jose_but_not_us(
    forge: Forge, verifier: TokenVerifier
) -> None:
    """Shows the DER-key HS256 confusion is real in the installed python-jose, and that we refuse it."""
    from jose import jwt

    der = _public_key_forms(forge.issuer)["der"]
    forged = forge.hmac_token(der, "HS256")
    with pytest.raises(AuthError) as refused:
        verifier.verify_sync(forged)
    assert refused.value.code == "unsupported_algorithm"
    try:
        claims = jwt.decode(forged, der, options={"verify_aud": False})
    except Exception:
        pytest.skip("this python-jose refuses DER keys as HMAC secrets; the forgery is no longer a live one")
    assert claims["sub"] == forge.claims()["sub"]


# -- cross-pool attacks -------------------------------------------------------
#
# A service that trusts two pools (two SimpleIOT teams) must keep them apart:
# a token is routed by its exact iss to one pool, and only that pool's keys,
# client ids and rules apply. Pool B publishes a key under the very kid pool A
# uses, so nothing but the routing keeps B's key from verifying A's tokens.

POOL_B = "us-east-1_CrossPoolB"


@dataclass(frozen=True)
class CrossPoolAttack:
    name: str
    code: str
    forge: Callable[[LocalIssuer, LocalIssuer], str]  # (pool A, pool B) -> token


def _swapped_across_pools(a: LocalIssuer, b: LocalIssuer) -> str:
    return _with_segment(a.mint(), 1, _segments(b.mint(groups=["admin"]))[1])


def _replica_iss(issuer: LocalIssuer, region: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{issuer.user_pool_id}"


CROSS_POOL_ATTACKS = [
    CrossPoolAttack(
        "iss-a-signed-by-b-under-the-shared-kid",
        "signature_invalid",
        lambda a, b: b.sign(a.claims(groups=["admin"]), key=b.keys[0]),
    ),
    CrossPoolAttack(
        "iss-a-with-a-kid-only-b-has", "kid_unknown", lambda a, b: b.sign(a.claims(), key=b.keys[1])
    ),
    CrossPoolAttack(
        "iss-b-signed-by-a-under-the-shared-kid",
        "signature_invalid",
        lambda a, b: a.sign(b.claims(), key=a.keys[0]),
    ),
    CrossPoolAttack("payload-of-b-under-a-signature", "signature_invalid", _swapped_across_pools),
    CrossPoolAttack("a-token-for-b-app-client", "client_not_allowed", lambda a, b: a.mint(aud=b.client_id)),
    CrossPoolAttack("b-token-for-a-app-client", "client_not_allowed", lambda a, b: b.mint(aud=a.client_id)),
    CrossPoolAttack(
        "a-pool-id-in-b-region",
        "issuer_invalid",
        lambda a, b: a.mint(iss=_replica_iss(a, "eu-west-1")),
    ),
    CrossPoolAttack(
        "b-pool-id-under-a-issuer-path",
        "issuer_invalid",
        lambda a, b: b.mint(iss=f"{a.issuer}/../{b.user_pool_id}"),
    ),
    CrossPoolAttack(
        "unconfigured-pool-signed-under-the-shared-kid",
        "issuer_invalid",
        lambda a, b: b.sign(b.claims(iss=b.issuer.replace(POOL_B, "us-east-1_Unconfigured")), key=b.keys[0]),
    ),
    CrossPoolAttack(
        "both-pools-in-one-iss",
        "issuer_invalid",
        lambda a, b: a.mint(iss=f"{a.issuer} {b.issuer}"),
    ),
    CrossPoolAttack(
        "iss-list-of-both-pools", "issuer_invalid", lambda a, b: a.mint(iss=[a.issuer, b.issuer])
    ),
]
_CROSS_BY_NAME = pytest.mark.parametrize(
    "attack", CROSS_POOL_ATTACKS, ids=[attack.name for attack in CROSS_POOL_ATTACKS]
)


def test_cross_pool_catalogue_names_are_unique() -> None:
    names = [attack.name for attack in CROSS_POOL_ATTACKS]
    assert len(names) == len(set(names))


@pytest.fixture(scope="module")
def _pool_b(_session_issuer: LocalIssuer) -> Iterator[LocalIssuer]:
    shared_kid = _session_issuer.signing_key.kid  # the same kid as pool A's key, other material
    keys = [spare_key_as(0, shared_kid), spare_key_as(1, "only-in-pool-b")]
    with LocalIssuer(user_pool_id=POOL_B, client_id="poolbclient0000000000000", key=keys[0]) as pool_b:
        pool_b.keys = keys
        pool_b.serve()
        yield pool_b


@pytest.fixture
def pool_b(_pool_b: LocalIssuer, issuer: LocalIssuer) -> Iterator[LocalIssuer]:
    _pool_b.serve().reset()
    yield _pool_b
    _pool_b.serve().reset()


@pytest.fixture
def two_pools(issuer: LocalIssuer, pool_b: LocalIssuer) -> list[AuthSettings]:
    return [issuer.settings(http_timeout_seconds=2.0), pool_b.settings(http_timeout_seconds=2.0)]


@pytest.fixture
def two_pool_verifier(two_pools: list[AuthSettings]) -> Iterator[TokenVerifier]:
    verifier = TokenVerifier(two_pools)
    yield verifier
    verifier.close()


def _assert_b_keys_untouched_unless_routed(attack: CrossPoolAttack, pool_b: LocalIssuer) -> None:
    # Only a token whose iss names B may make B's endpoint answer; an unknown iss asks no one.
    if attack.code == "issuer_invalid" or attack.name.startswith(("iss-a-", "a-token-")):
        assert pool_b.serve().request_count == 0


@_CROSS_BY_NAME
def test_fastapi_refuses_cross_pool_attack_with_401(
    attack: CrossPoolAttack, issuer: LocalIssuer, pool_b: LocalIssuer, two_pools: list[AuthSettings]
) -> None:
    auth = CognitoAuth(two_pools)
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> Principal:
        return principal

    with TestClient(app) as client:
        response = client.get("/me", headers={"Authorization": attack.forge(issuer, pool_b)})
        honest = [client.get("/me", headers={"Authorization": i.mint()}) for i in (issuer, pool_b)]

    assert response.status_code == 401
    assert response.json()["detail"]["code"] == attack.code
    assert [r.json()["user_pool_id"] for r in honest] == [issuer.user_pool_id, POOL_B]


@_CROSS_BY_NAME
@pytest.mark.anyio
async def test_verify_refuses_cross_pool_attack(
    attack: CrossPoolAttack, issuer: LocalIssuer, pool_b: LocalIssuer, two_pool_verifier: TokenVerifier
) -> None:
    with pytest.raises(AuthError) as refused:
        await two_pool_verifier.verify(attack.forge(issuer, pool_b))
    assert refused.value.code == attack.code
    _assert_b_keys_untouched_unless_routed(attack, pool_b)


@_CROSS_BY_NAME
def test_verify_sync_refuses_cross_pool_attack(
    attack: CrossPoolAttack, issuer: LocalIssuer, pool_b: LocalIssuer, two_pool_verifier: TokenVerifier
) -> None:
    with pytest.raises(AuthError) as refused:
        two_pool_verifier.verify_sync(attack.forge(issuer, pool_b))
    assert refused.value.code == attack.code
    _assert_b_keys_untouched_unless_routed(attack, pool_b)


def test_unknown_issuer_causes_no_fetch_in_any_pool(
    issuer: LocalIssuer, pool_b: LocalIssuer, two_pool_verifier: TokenVerifier
) -> None:
    for attack in CROSS_POOL_ATTACKS:
        if attack.code == "issuer_invalid":
            with pytest.raises(AuthError):
                two_pool_verifier.verify_sync(attack.forge(issuer, pool_b))
    assert (issuer.serve().request_count, pool_b.serve().request_count) == (0, 0)
