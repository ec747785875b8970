"""pytest fixtures for testing routes protected by siot_authz, loaded through the ``pytest11`` entry point.

Installing siot-authz makes these fixtures available in every project; no
``conftest.py`` import is needed. They are all prefixed ``siot_`` so they
never clash with a project's own ``issuer`` or ``settings`` fixtures.

========================  =======  ===================================================
fixture                   scope    what it gives
========================  =======  ===================================================
siot_local_issuer         session  a :class:`LocalIssuer` with its JWKS on 127.0.0.1
siot_auth_settings        session  :class:`AuthSettings` trusting that issuer
siot_mint                 function ``siot_mint(username=..., groups=..., **claims)`` -> token
siot_auth_headers         function ``siot_auth_headers(**mint_args)`` -> ``{"Authorization": ...}``
siot_trust_local_issuer   function ``siot_trust_local_issuer(app, auth)``: the app verifies
                                   minted tokens (through the real pipeline)
siot_override_principal   function ``siot_override_principal(app, auth, username=..., groups=...)``:
                                   every request is that user, no token needed
========================  =======  ===================================================

Overrides made through the function-scoped fixtures are undone after each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi import FastAPI

from .._fastapi import CognitoAuth
from .._principal import Principal
from .._settings import AuthSettings
from ._issuer import LocalIssuer
from ._overrides import make_principal, override_principal, override_settings

__all__ = [
    "siot_auth_headers",
    "siot_auth_settings",
    "siot_local_issuer",
    "siot_mint",
    "siot_override_principal",
    "siot_trust_local_issuer",
]

Mint = Callable[..., str]


@pytest.fixture(scope="session")
def siot_local_issuer() -> Iterator[LocalIssuer]:
    """A local Cognito user pool for the whole session, its JWKS served on 127.0.0.1.

    It is shared by every test, so do not rotate its keys; make your own
    ``LocalIssuer()`` for key-rotation tests.
    """
    # RSA key generation takes a moment; one issuer and one server serve the session.
    with LocalIssuer() as issuer:
        issuer.serve()
        yield issuer


@pytest.fixture(scope="session")
def siot_auth_settings(siot_local_issuer: LocalIssuer) -> AuthSettings:
    """Settings that trust ``siot_local_issuer`` (ID tokens, its app client, its JWKS URL)."""
    return siot_local_issuer.settings()


@pytest.fixture
def siot_mint(siot_local_issuer: LocalIssuer) -> Mint:
    """Mint a signed token: ``siot_mint(username="ada", groups=["admin"], token_use="id", expires_in=3600)``.

    Any other keyword sets or overrides a claim; ``omit=["email"]`` drops one.
    """
    return siot_local_issuer.mint


@pytest.fixture
def siot_auth_headers(siot_mint: Mint) -> Callable[..., dict[str, str]]:
    """``siot_auth_headers(groups=["admin"])`` -> ``{"Authorization": "Bearer <token>"}``.

    Takes the same keywords as ``siot_mint``, plus ``bearer=False`` to send
    the token raw as SimpleIOT's Python clients do.
    """

    def headers(*, bearer: bool = True, **mint_args: Any) -> dict[str, str]:
        token = siot_mint(**mint_args)
        return {"Authorization": f"Bearer {token}" if bearer else token}

    return headers


@pytest.fixture
def siot_trust_local_issuer(
    siot_auth_settings: AuthSettings,
) -> Iterator[Callable[[FastAPI, CognitoAuth], None]]:
    """``siot_trust_local_issuer(app, auth)`` makes ``Depends(auth)`` in ``app`` trust the local issuer.

    Tokens from ``siot_mint`` then pass the app's full verification, groups
    and scopes included, though the app was configured for a real user pool.
    """
    with ExitStack() as stack:

        def trust(app: FastAPI, auth: CognitoAuth) -> None:
            stack.enter_context(override_settings(app, auth, siot_auth_settings))

        yield trust


@pytest.fixture
def siot_override_principal() -> Iterator[Callable[..., Principal]]:
    """``siot_override_principal(app, auth, "ada", groups=("admin",))``: every request is that user.

    No token is needed at all; ``require_groups`` and ``require_scopes``
    still check the principal. Takes ``principal=`` to use one you built.
    """
    with ExitStack() as stack:

        def override(
            app: FastAPI,
            auth: CognitoAuth,
            username: str = "alice",
            *,
            principal: Principal | None = None,
            **principal_fields: Any,
        ) -> Principal:
            chosen = principal or make_principal(username, **principal_fields)
            return stack.enter_context(override_principal(app, auth, chosen))

        yield override
