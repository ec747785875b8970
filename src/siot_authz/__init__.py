"""Verify Amazon Cognito JWTs in FastAPI services, the server side of SimpleIOT's login.

Everything a user needs is importable from here; modules with a leading
underscore are private and may change without notice.

The FastAPI integration (``CognitoAuth``, ``AuthHTTPException``) is imported
on first use, so a Lambda handler or script that only calls
``TokenVerifier.verify_sync`` never pays for importing FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    AuthError,
    CheckFailed,
    ClaimTypeInvalid,
    ClientNotAllowed,
    HeaderInvalid,
    InsufficientPermissions,
    InvalidToken,
    IssuerInvalid,
    JwksUnavailable,
    KeyIdMissing,
    KeyIdUnknown,
    MissingGroup,
    MissingRole,
    MissingScope,
    MissingToken,
    RevocationUnavailable,
    RolesUnavailable,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenRevoked,
    TokenTooLarge,
    TokenUseMismatch,
    UnsupportedAlgorithm,
)
from ._health import AuthHealth, PoolHealth
from ._key_cache import JwksDocument, KeyStatus
from ._observe import Observer
from ._principal import Principal
from ._settings import AuthSettings, TokenUse
from ._verifier import Check, TokenVerifier

if TYPE_CHECKING:
    from ._fastapi import AuthHTTPException, CognitoAuth, PoolSettings
    from ._roles import RolesCache, RolesPrincipal, RolesSource
    from ._websocket import (
        BEARER_SUBPROTOCOL,
        WS_4401_TOKEN_EXPIRED,
        WS_4403_TOKEN_REVOKED,
        AuthWebSocketException,
        accept_websocket,
    )

__version__ = "0.1.0"

_LAZY = {
    "AuthHTTPException": "._fastapi",
    "CognitoAuth": "._fastapi",
    "PoolSettings": "._fastapi",
    "RolesCache": "._roles",
    "RolesPrincipal": "._roles",
    "RolesSource": "._roles",
    "AuthWebSocketException": "._websocket",
    "BEARER_SUBPROTOCOL": "._websocket",
    "WS_4401_TOKEN_EXPIRED": "._websocket",
    "WS_4403_TOKEN_REVOKED": "._websocket",
    "accept_websocket": "._websocket",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'siot_authz' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module_name, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BEARER_SUBPROTOCOL",
    "WS_4401_TOKEN_EXPIRED",
    "WS_4403_TOKEN_REVOKED",
    "AuthError",
    "AuthHTTPException",
    "AuthHealth",
    "AuthSettings",
    "AuthWebSocketException",
    "Check",
    "CheckFailed",
    "ClaimTypeInvalid",
    "ClientNotAllowed",
    "CognitoAuth",
    "HeaderInvalid",
    "InsufficientPermissions",
    "InvalidToken",
    "IssuerInvalid",
    "JwksDocument",
    "JwksUnavailable",
    "KeyIdMissing",
    "KeyIdUnknown",
    "KeyStatus",
    "MissingGroup",
    "MissingRole",
    "MissingScope",
    "MissingToken",
    "Observer",
    "PoolHealth",
    "PoolSettings",
    "Principal",
    "RevocationUnavailable",
    "RolesCache",
    "RolesPrincipal",
    "RolesSource",
    "RolesUnavailable",
    "SignatureInvalid",
    "TokenExpired",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenTooLarge",
    "TokenUse",
    "TokenUseMismatch",
    "TokenVerifier",
    "UnsupportedAlgorithm",
    "__version__",
    "accept_websocket",
]
