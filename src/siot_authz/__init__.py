"""Verify Amazon Cognito JWTs in FastAPI services, the server side of SimpleIOT's login.

Everything a user needs is importable from here; modules with a leading
underscore are private and may change without notice.
"""

from ._errors import (
    AuthError,
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
    MissingScope,
    MissingToken,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenTooLarge,
    TokenUseMismatch,
    UnsupportedAlgorithm,
)
from ._fastapi import AuthHTTPException, CognitoAuth
from ._principal import Principal
from ._settings import AuthSettings, TokenUse
from ._verifier import TokenVerifier

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "AuthHTTPException",
    "AuthSettings",
    "ClaimTypeInvalid",
    "ClientNotAllowed",
    "CognitoAuth",
    "HeaderInvalid",
    "InsufficientPermissions",
    "InvalidToken",
    "IssuerInvalid",
    "JwksUnavailable",
    "KeyIdMissing",
    "KeyIdUnknown",
    "MissingGroup",
    "MissingScope",
    "MissingToken",
    "Principal",
    "SignatureInvalid",
    "TokenExpired",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenTooLarge",
    "TokenUse",
    "TokenUseMismatch",
    "TokenVerifier",
    "UnsupportedAlgorithm",
    "__version__",
]
