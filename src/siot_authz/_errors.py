"""Every way a request can fail authentication or authorization.

Each failure is its own class with a stable machine ``code``, an HTTP
``status_code`` and a ``reason`` that is safe to show to the caller. None of
them ever carries token text: messages are fixed strings chosen here, and
details (a kid, an issuer) go only to logs through ``log_context``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthError",
    "CheckFailed",
    "CheckUnavailable",
    "ClaimTypeInvalid",
    "ClientNotAllowed",
    "HeaderInvalid",
    "InsufficientPermissions",
    "InvalidToken",
    "IssuerInvalid",
    "JwksUnavailable",
    "KeyIdMissing",
    "KeyIdUnknown",
    "MissingGroup",
    "MissingRole",
    "MissingScope",
    "MissingToken",
    "RevocationUnavailable",
    "RolesUnavailable",
    "SignatureInvalid",
    "TokenExpired",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenTooLarge",
    "TokenUseMismatch",
    "UnsupportedAlgorithm",
]


class AuthError(Exception):
    """Base of every failure this library raises; nothing else escapes verification."""

    code: ClassVar[str] = "auth_error"
    status_code: ClassVar[int] = 401
    reason: ClassVar[str] = "Authentication failed."
    #: The RFC 6750 ``error`` attribute for ``WWW-Authenticate``; None omits it.
    bearer_error: ClassVar[str | None] = "invalid_token"

    def __init__(self, reason: str | None = None, **log_context: str) -> None:
        # ``reason`` overrides the class default only with text written in this
        # package; callers never pass token material.
        self.detail = reason or self.reason
        self.log_context = log_context
        super().__init__(f"{self.code}: {self.detail}")

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the HTTP layer must send with this error."""
        if self.status_code == 503:
            return {"Retry-After": "5"}
        challenge = "Bearer"
        if self.bearer_error is not None:
            challenge = f'Bearer error="{self.bearer_error}"'
        return {"WWW-Authenticate": challenge}


class MissingToken(AuthError):
    """Raised when a request carries no credentials at all."""

    code = "missing_token"
    reason = "No bearer token was sent."
    bearer_error = None


class InvalidToken(AuthError):
    """Base for every reason a presented token is refused (HTTP 401)."""

    code = "invalid_token"
    reason = "The token is invalid."


class TokenTooLarge(InvalidToken):
    """Raised before any decoding when the token exceeds ``max_token_bytes``."""

    code = "token_too_large"
    reason = "The token is larger than allowed."


class TokenMalformed(InvalidToken):
    """Raised when the token is not three canonical base64url JSON segments."""

    code = "token_malformed"
    reason = "The token is not a well-formed JWT."


class UnsupportedAlgorithm(InvalidToken):
    """Raised when the header ``alg`` is anything but ``RS256``."""

    code = "unsupported_algorithm"
    reason = "The token is not signed with RS256."


class HeaderInvalid(InvalidToken):
    """Raised for header parameters we refuse, such as ``crit``."""

    code = "header_invalid"
    reason = "The token header has a parameter that is not accepted."


class KeyIdMissing(InvalidToken):
    """Raised when the header has no string ``kid`` to pick a key with."""

    code = "kid_missing"
    reason = "The token header has no key id."


class KeyIdUnknown(InvalidToken):
    """Raised when no usable key in the JWKS has the token's ``kid``."""

    code = "kid_unknown"
    reason = "The token was signed with an unknown key."


class SignatureInvalid(InvalidToken):
    """Raised when the RS256 signature does not verify under the chosen key."""

    code = "signature_invalid"
    reason = "The token signature is invalid."


class TokenExpired(InvalidToken):
    """Raised when ``exp`` is in the past, beyond the allowed leeway."""

    code = "token_expired"
    reason = "The token has expired."


class TokenNotYetValid(InvalidToken):
    """Raised when ``nbf`` or ``iat`` lie in the future, beyond the allowed leeway."""

    code = "token_not_yet_valid"
    reason = "The token is not valid yet."


class IssuerInvalid(InvalidToken):
    """Raised when ``iss`` is not exactly the configured user pool."""

    code = "issuer_invalid"
    reason = "The token was not issued by the expected user pool."


class ClientNotAllowed(InvalidToken):
    """Raised when ``aud`` (ID token) or ``client_id`` (access token) is not allowed."""

    code = "client_not_allowed"
    reason = "The token was issued to an app client that is not allowed."


class TokenUseMismatch(InvalidToken):
    """Raised when ``token_use`` is not the kind of token this API accepts."""

    code = "token_use_mismatch"
    reason = "The token is not the expected kind (ID or access token)."


class ClaimTypeInvalid(InvalidToken):
    """Raised when a required claim is missing or a claim has the wrong JSON type."""

    code = "claim_invalid"
    reason = "A token claim is missing or has the wrong type."


class TokenRevoked(InvalidToken):
    """Raised when a revocation covers the token: its user was signed out, or its session revoked."""

    code = "token_revoked"
    reason = "The token has been revoked."


class CheckFailed(InvalidToken):
    """Raised when the application's own ``check`` refuses an otherwise valid token."""

    code = "check_failed"
    reason = "The token was refused by the application's check."


class CheckUnavailable(AuthError):
    """Raised when the application's ``check`` did not answer within ``check_timeout_seconds``."""

    code = "check_unavailable"
    status_code = 503
    reason = "The application's check did not answer in time; try again shortly."
    bearer_error = None


class InsufficientPermissions(AuthError):
    """Base for a valid token whose principal may not do this (HTTP 403)."""

    code = "insufficient_permissions"
    status_code = 403
    reason = "The caller is not allowed to do this."
    bearer_error = "insufficient_scope"


class MissingGroup(InsufficientPermissions):
    """Raised when the principal is in none of the groups a route requires."""

    code = "missing_group"
    reason = "The caller is not in a group this route requires."


class MissingScope(InsufficientPermissions):
    """Raised when the principal lacks one of the scopes a route requires."""

    code = "missing_scope"
    reason = "The token lacks a scope this route requires."


class MissingRole(InsufficientPermissions):
    """Raised when the principal has none of the application roles a route requires."""

    code = "missing_role"
    reason = "The caller does not have a role this route requires."


class JwksUnavailable(AuthError):
    """Raised when no signing key can be had: the JWKS is unreachable and none is cached."""

    code = "jwks_unavailable"
    status_code = 503
    reason = "Signing keys are unavailable; try again shortly."
    bearer_error = None


class RevocationUnavailable(AuthError):
    """Raised when the revocation list has gone unconfirmed too long to be trusted (fail closed)."""

    code = "revocation_unavailable"
    status_code = 503
    reason = "The revocation list cannot be confirmed; try again shortly."
    bearer_error = None


class RolesUnavailable(AuthError):
    """Raised when the application's roles source failed or timed out for this user."""

    code = "roles_unavailable"
    status_code = 503
    reason = "The caller's roles cannot be looked up; try again shortly."
    bearer_error = None
