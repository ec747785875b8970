"""A stand-in for a Cognito user pool: its own RSA keys, its JWKS, and Cognito-shaped tokens.

Signing is done here with ``cryptography`` directly, not with the code under
test, so a bug in our verifier cannot hide behind a matching bug in the
minting side.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .._settings import AuthSettings
from ._jwks_server import JwksServer
from ._settings_from_arguments import settings_from_arguments

__all__ = ["LocalIssuer", "SigningKey", "b64url"]


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: Mapping[str, Any]) -> bytes:
    """JSON as Cognito writes a token's segments: no spaces, and UTF-8 rather than ``\\u`` escapes.

    A lone surrogate (a test of its refusal) has no UTF-8: such claims are
    written with ``\\u`` escapes throughout, so the issuer still signs them.
    """
    try:
        return json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(dict(value), separators=(",", ":")).encode()


def _int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class SigningKey:
    """One RSA key pair with a kid, as a Cognito pool holds two of."""

    def __init__(self, kid: str | None = None, *, bits: int = 2048) -> None:
        self.kid = kid or secrets.token_urlsafe(16)
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)

    def public_jwk(self) -> dict[str, str]:
        """The key as it appears in a JWKS."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "alg": "RS256",
            "e": _int_b64url(numbers.e),
            "kid": self.kid,
            "kty": "RSA",
            "n": _int_b64url(numbers.n),
            "use": "sig",
        }

    def sign(self, signing_input: bytes) -> bytes:
        """An RS256 signature over ``signing_input``."""
        return self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


class LocalIssuer:
    """A local Cognito user pool for tests and demos.

    ``mint()`` makes ID or access tokens shaped like Cognito's, in any order
    with the rest. ``settings()`` makes :class:`AuthSettings` that trust
    them, and first starts the loopback HTTP server that publishes the JWKS
    (``serve()``), so the settings always point at keys that answer; close
    the issuer (or use a ``with`` block) to stop it. For no socket at all,
    take ``settings(for_transport=True)`` and hand ``transport()`` to the
    verifier as ``async_transport`` and ``sync_transport``.

    Each new issuer makes its own RSA key, which takes tens of milliseconds; a
    test suite making many issuers can hand them keys it made once (``key``,
    and ``rotate_key(key=...)``).
    """

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        user_pool_id: str | None = None,
        client_id: str = "siotlocalclient0000000000",
        key_bits: int = 2048,
        key: SigningKey | None = None,
    ) -> None:
        self.region = region
        self.user_pool_id = user_pool_id or f"{region}_LocalPool1"
        self.client_id = client_id
        self.keys: list[SigningKey] = [key or SigningKey(bits=key_bits)]
        self._server: JwksServer | None = None

    # -- the pool -------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The classic Cognito issuer URL of this pool."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with (the newest)."""
        return self.keys[-1]

    @property
    def jwks_path(self) -> str:
        """Where the JWKS lives on the loopback server, as on Cognito."""
        return f"/{self.user_pool_id}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        """The current JWKS document."""
        return {"keys": [key.public_jwk() for key in self.keys]}

    def rotate_key(self, *, keep_old: bool = True, key: SigningKey | None = None) -> SigningKey:
        """Add a signing key, ``key`` or a new one; drop the old ones unless ``keep_old``.

        A ``key`` whose kid the pool already holds is refused with ``ValueError``:
        rotating it in would leave the pool as it was (or two keys under one kid).
        """
        if key is not None and any(held.kid == key.kid for held in self.keys):
            raise ValueError("the pool already holds a key with this kid")
        new_key = key or SigningKey(bits=self.signing_key.private_key.key_size)
        self.keys = [*self.keys, new_key] if keep_old else [new_key]
        return new_key

    # -- tokens ---------------------------------------------------------------

    def claims(
        self,
        *,
        token_use: Literal["id", "access"] = "id",
        username: str = "alice",
        groups: Iterable[str] | None = (),
        scopes: Iterable[str] = ("aws.cognito.signin.user.admin",),
        expires_in: float = 3600,
        email: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims Cognito would put in a token; ``extra`` adds or overrides any."""
        now = int(time.time())
        sub = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.user_pool_id}/{username}"))
        claims: dict[str, Any] = {
            "sub": sub,
            "iss": self.issuer,
            "token_use": token_use,
            "auth_time": now,
            "iat": now,
            "exp": int(now + expires_in),
            "jti": str(uuid.uuid4()),
            "origin_jti": str(uuid.uuid4()),
            "event_id": str(uuid.uuid4()),
        }
        if groups:
            claims["cognito:groups"] = list(groups)
        if token_use == "id":
            claims.update({"aud": self.client_id, "cognito:username": username, "email_verified": True})
            if email is not None:
                claims["email"] = email
        else:
            claims.update({"client_id": self.client_id, "username": username, "scope": " ".join(scopes)})
        claims.update(extra)
        return claims

    def sign(
        self,
        claims: Mapping[str, Any] | bytes,
        *,
        header: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """Sign arbitrary claims (or raw payload bytes) as a compact JWS with RS256."""
        key = key or self.signing_key
        full_header: dict[str, Any] = {"kid": key.kid, "alg": "RS256"}
        full_header.update(header or {})
        payload = claims if isinstance(claims, bytes) else _compact_json(claims)
        signing_input = f"{b64url(_compact_json(full_header))}.{b64url(payload)}".encode("ascii")
        return f"{signing_input.decode('ascii')}.{b64url(key.sign(signing_input))}"

    def mint(
        self,
        *,
        token_use: Literal["id", "access"] = "id",
        groups: Iterable[str] | None = (),
        expires_in: float = 3600,
        omit: Iterable[str] = (),
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed Cognito-shaped token; ``claims`` override defaults and ``omit`` removes them."""
        body = self.claims(token_use=token_use, groups=groups, expires_in=expires_in, **claims)
        for name in omit:
            body.pop(name, None)
        return self.sign(body, header=header)

    # -- making it reachable ----------------------------------------------------

    def serve(self) -> JwksServer:
        """Start (once) and return a loopback HTTP server publishing the JWKS."""
        if self._server is None:
            self._server = JwksServer(self.jwks, self.jwks_path)
        return self._server

    @property
    def is_serving(self) -> bool:
        """Whether the loopback JWKS server is running."""
        return self._server is not None

    @property
    def jwks_url(self) -> str:
        """The JWKS URL: on the loopback server once served, else a name only ``transport()`` answers."""
        if self._server is not None:
            return self._server.url
        return self._transport_only_url

    @property
    def _transport_only_url(self) -> str:
        # ``.invalid`` never resolves (RFC 2606): without the transport, a
        # fetch fails at once instead of reaching some real host.
        return f"http://local-issuer.invalid{self.jwks_path}"

    def _handle(self, request: httpx.Request) -> httpx.Response:
        # A streamed body, as a real server gives: the fetcher reads it raw, chunk by chunk.
        if request.url.path != self.jwks_path:
            return httpx.Response(404, stream=httpx.ByteStream(b'{"message": "not found"}'))
        body = json.dumps(self.jwks()).encode()
        return httpx.Response(
            200, headers={"Content-Type": "application/json"}, stream=httpx.ByteStream(body)
        )

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering JWKS requests in process (usable sync and async).

        It answers the JWKS path on any host, so it works with ``settings()``
        and with ``settings(for_transport=True)``::

            verifier = TokenVerifier(
                issuer.settings(for_transport=True),
                async_transport=issuer.transport(),
                sync_transport=issuer.transport(),
            )
        """
        return httpx.MockTransport(self._handle)

    def settings(self, *, for_transport: bool = False, **overrides: Any) -> AuthSettings:
        """Settings that trust this issuer's tokens; keyword arguments override fields.

        Only those arguments count: ``SIOT_AUTHZ_*`` variables left in the
        shell (from running the server) are not read, so a test behaves the
        same on every machine. The JWKS is served on loopback first, if it is not yet, so the
        settings work with any verifier. With ``for_transport=True`` nothing
        is started and the key URL is a name only :meth:`transport` answers:
        pass ``issuer.transport()`` to the verifier, or every key fetch fails.
        """
        if for_transport:
            jwks_url = self._transport_only_url
        elif "jwks_url" in overrides:
            jwks_url = overrides["jwks_url"]  # the caller serves the keys themselves
        else:
            jwks_url = self.serve().url
        fields: dict[str, Any] = {
            "region": self.region,
            "user_pool_id": self.user_pool_id,
            "client_ids": (self.client_id,),
            "jwks_url": jwks_url,
        }
        fields.update(overrides)
        return settings_from_arguments(**fields)

    def close(self) -> None:
        """Stop the loopback server, if started."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> LocalIssuer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
