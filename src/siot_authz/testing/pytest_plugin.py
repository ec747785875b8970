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
siot_override_roles       function ``siot_override_roles(auth, {"ada": ["admin"]})``: the
                                   roles ``require_roles`` sees, on routes already defined
siot_real_pool            session  the real pool and test user (skips when none is set)
siot_real_settings        session  :class:`AuthSettings` trusting the real pool
siot_real_tokens          session  real ``id_token`` and ``access_token``, one login
siot_contract             function ``siot_contract(client_or_url, probe, path=...)``: one
                                   ``siot-authz contract`` probe, as a test
========================  =======  ===================================================

Overrides made through the function-scoped fixtures are undone after each test,
and the app's roles cache is emptied as they are.

The ``siot_real_*`` fixtures and ``siot_contract`` need a real user pool (or
an emulator): ``--siot-config`` (a SimpleIOT config.json), ``--siot-username``,
and the password in ``SIOT_AUTHZ_TEST_PASSWORD``, never an option;
``--siot-endpoint-url`` points logins and key fetches at an emulator such as
moto. Tests using them are skipped, saying what to set, when none is
configured, and fail when it is configured only in part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi import FastAPI

from .._cognito_client import Tokens
from .._fastapi import CognitoAuth
from .._principal import Principal
from .._roles import RolesCache
from .._settings import AuthSettings
from ._contract import ContractCheck, check_contract_probe
from ._issuer import LocalIssuer
from ._overrides import RolesOverride, make_principal, override_principal, override_roles, override_settings
from ._real_pool import (
    CONFIG_VARIABLE,
    ENDPOINT_VARIABLE,
    NOT_CONFIGURED,
    USERNAME_VARIABLE,
    RealPool,
    RealPoolError,
    find_real_pool,
)

__all__ = [
    "pytest_addoption",
    "siot_auth_headers",
    "siot_auth_settings",
    "siot_contract",
    "siot_local_issuer",
    "siot_mint",
    "siot_override_principal",
    "siot_override_roles",
    "siot_real_pool",
    "siot_real_settings",
    "siot_real_tokens",
    "siot_trust_local_issuer",
]

Mint = Callable[..., str]


def pytest_addoption(parser: pytest.Parser) -> None:
    """The options naming a real user pool for contract tests; the password is never one of them."""
    group = parser.getgroup("siot-authz", "siot-authz contract tests against a real user pool")
    group.addoption(
        "--siot-config",
        metavar="PATH",
        help=f"SimpleIOT config.json of the pool to log in to [{CONFIG_VARIABLE}]",
    )
    group.addoption(
        "--siot-username",
        metavar="USER",
        help=f"the test user; its password is read from SIOT_AUTHZ_TEST_PASSWORD only [{USERNAME_VARIABLE}]",
    )
    group.addoption(
        "--siot-endpoint-url",
        metavar="URL",
        help="Cognito endpoint of an emulator such as moto; keys are then fetched from "
        f"URL/<pool id>/.well-known/jwks.json [{ENDPOINT_VARIABLE}]",
    )


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


@pytest.fixture
def siot_override_roles() -> Iterator[Callable[[CognitoAuth, RolesOverride], RolesCache]]:
    """``siot_override_roles(auth, {"ada": ["admin"]})``: the roles ``require_roles`` sees, until the test ends.

    Role names by username (anyone else has none), or a roles source of
    your own. Works on routes defined at import, and the app's own source
    is not asked; the roles are gone in the next test.
    """
    with ExitStack() as stack:

        def override(auth: CognitoAuth, roles: RolesOverride) -> RolesCache:
            return stack.enter_context(override_roles(auth, roles))

        yield override


# -- contract tests against a real pool ---------------------------------------------------


def _real_pool_and_password(config: pytest.Config) -> tuple[RealPool, str]:
    try:
        found = find_real_pool(
            config.getoption("siot_config"),
            config.getoption("siot_username"),
            config.getoption("siot_endpoint_url"),
        )
    except RealPoolError as error:
        pytest.fail(f"siot-authz: {error}", pytrace=False)
    if found is None:
        pytest.skip(NOT_CONFIGURED)
    return found


@pytest.fixture(scope="session")
def siot_real_pool(request: pytest.FixtureRequest) -> RealPool:
    """The real user pool and test user named by ``--siot-config`` and ``--siot-username``.

    Skips the test, saying what to set, when no pool is configured.
    """
    pool, _password = _real_pool_and_password(request.config)
    return pool


@pytest.fixture(scope="session")
def siot_real_settings(siot_real_pool: RealPool) -> AuthSettings:
    """Settings trusting the real pool (key fetches go to the emulator with ``--siot-endpoint-url``)."""
    return siot_real_pool.settings()


@pytest.fixture(scope="session")
def siot_real_tokens(request: pytest.FixtureRequest, siot_real_pool: RealPool) -> Tokens:
    """Real tokens of the test user (``.id_token``, ``.access_token``), from one login per session."""
    _pool, password = _real_pool_and_password(request.config)
    try:
        return siot_real_pool.log_in(password)
    except RealPoolError as error:
        pytest.fail(f"siot-authz: cannot log in for contract tests: {error}", pytrace=False)


@pytest.fixture
def siot_contract(siot_real_tokens: Tokens) -> ContractCheck:
    """``siot_contract(client_or_base_url, probe, path="/v1/me", method="GET", token_use="id")``.

    Sends one of ``siot-authz contract``'s probes with the real tokens and
    fails, naming the probe, unless a valid token gets a 2xx and a forgery
    exactly 401. Parametrize over ``siot_authz.testing.CONTRACT_PROBES`` to
    get one test item per probe.
    """

    def check(target: Any, probe: str, **options: Any) -> Any:
        return check_contract_probe(siot_real_tokens, target, probe, **options)

    return check
