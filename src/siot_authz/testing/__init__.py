"""Test helpers for users of siot_authz: a local Cognito stand-in, FastAPI overrides and a pytest plugin.

``LocalIssuer`` mints Cognito-shaped tokens and serves their JWKS on
loopback; ``override_principal`` makes a FastAPI app treat every request as
a fixed user, ``override_settings`` makes it trust a local issuer, and
``override_roles`` gives its users fixed application roles. The
pytest plugin (:mod:`siot_authz.testing.pytest_plugin`, loaded automatically
once siot-authz is installed) offers these as ``siot_*`` fixtures, and runs
``siot-authz contract``'s probes (:data:`CONTRACT_PROBES`) as tests against
real tokens when a pool is configured.
"""

from ._contract import CONTRACT_PROBES, check_contract_probe
from ._issuer import LocalIssuer, SigningKey, b64url
from ._jwks_server import JwksResponse, JwksServer
from ._overrides import make_principal, override_principal, override_roles, override_settings

__all__ = [
    "CONTRACT_PROBES",
    "JwksResponse",
    "JwksServer",
    "LocalIssuer",
    "SigningKey",
    "b64url",
    "check_contract_probe",
    "make_principal",
    "override_principal",
    "override_roles",
    "override_settings",
]
