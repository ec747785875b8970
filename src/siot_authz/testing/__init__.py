"""Test helpers for users of siot_authz: a local Cognito stand-in and FastAPI overrides.

``LocalIssuer`` mints Cognito-shaped tokens and serves their JWKS on
loopback; ``override_principal`` makes a FastAPI app treat every request as
a fixed user, for tests of route logic that do not care about tokens.
"""

from ._issuer import LocalIssuer, SigningKey, b64url
from ._jwks_server import JwksResponse, JwksServer
from ._overrides import override_principal

__all__ = ["JwksResponse", "JwksServer", "LocalIssuer", "SigningKey", "b64url", "override_principal"]
