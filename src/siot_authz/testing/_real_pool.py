"""A real user pool and test user for contract tests: where they are configured, and one login.

The configuration comes from pytest options or the environment; the password
only from the environment, because options end up in shell history, CI logs
and ``ps`` output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .._cognito_client import LoginFailed, Tokens, log_in_unattended
from .._settings import AuthSettings, read_simpleiot_config, trusted_url_problem
from ._settings_from_arguments import settings_from_arguments

__all__ = [
    "CONFIG_VARIABLE",
    "ENDPOINT_VARIABLE",
    "PASSWORD_VARIABLE",
    "USERNAME_VARIABLE",
    "RealPool",
    "RealPoolError",
    "find_real_pool",
]

CONFIG_VARIABLE = "SIOT_AUTHZ_TEST_CONFIG"
USERNAME_VARIABLE = "SIOT_AUTHZ_TEST_USERNAME"
PASSWORD_VARIABLE = "SIOT_AUTHZ_TEST_PASSWORD"
ENDPOINT_VARIABLE = "SIOT_AUTHZ_ENDPOINT_URL"  # the same variable the CLI reads

NOT_CONFIGURED = (
    "no real user pool configured for contract tests: pass --siot-config CONFIG.json and "
    f"--siot-username USER (or set {CONFIG_VARIABLE} and {USERNAME_VARIABLE}), and put the "
    f"test user's password in {PASSWORD_VARIABLE}"
)


class RealPoolError(Exception):
    """The pool is configured only in part, or the login failed: a mistake to report, not to skip."""


@dataclass(frozen=True)
class RealPool:
    """A Cognito user pool (or an emulator of one) and the test user to log in as."""

    config_path: Path
    region: str
    user_pool_id: str
    client_id: str
    username: str
    endpoint_url: str | None = None

    @property
    def jwks_url(self) -> str | None:
        """Where keys are fetched: moto's layout under ``endpoint_url``, else the pool's default."""
        if self.endpoint_url is None:
            return None
        return f"{self.endpoint_url.rstrip('/')}/{self.user_pool_id}/.well-known/jwks.json"

    def settings(self, **overrides: object) -> AuthSettings:
        """Settings trusting this pool, from its config.json; keyword arguments override fields.

        As with the local issuer, ``SIOT_AUTHZ_*`` variables are not read:
        the contract's valid token is an ID token, whatever the shell says.
        """
        fields: dict[str, object] = {
            "region": self.region,
            "user_pool_id": self.user_pool_id,
            "client_ids": (self.client_id,),
        }
        if self.jwks_url is not None:
            fields["jwks_url"] = self.jwks_url
        return settings_from_arguments(**{**fields, **overrides})

    def log_in(self, password: str, *, timeout: float = 10.0) -> Tokens:
        """Log in as the test user; :class:`RealPoolError` says why not."""
        endpoint = self.endpoint_url or f"https://cognito-idp.{self.region}.amazonaws.com/"
        # The password is posted there: the same https-or-loopback rule as for keys.
        problem = trusted_url_problem(endpoint)
        if problem is not None:
            raise RealPoolError(f"the Cognito endpoint {problem}")
        try:
            return log_in_unattended(endpoint, self.client_id, self.username, password, timeout=timeout)
        except LoginFailed as failure:
            raise RealPoolError(f"{self.username} at {self.config_path}: {failure.message}") from None


def _string(raw: Mapping[str, object], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise RealPoolError(f"{path} has no {key!r} string")
    return value


def find_real_pool(
    config: str | None,
    username: str | None,
    endpoint_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> tuple[RealPool, str] | None:
    """The configured pool and password, None when nothing is configured, or :class:`RealPoolError`.

    Options win over the environment. Setting some but not all of config,
    username and password is an error, so a typo does not quietly skip the
    contract tests.
    """
    env = os.environ if environ is None else environ
    config = config or env.get(CONFIG_VARIABLE) or None
    username = username or env.get(USERNAME_VARIABLE) or None
    password = env.get(PASSWORD_VARIABLE) or None
    endpoint_url = endpoint_url or env.get(ENDPOINT_VARIABLE) or None
    given = {"--siot-config": config, "--siot-username": username, PASSWORD_VARIABLE: password}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise RealPoolError(f"contract tests are configured in part: {', '.join(missing)} not set")
    assert config is not None and username is not None and password is not None  # noqa: PT018
    path = Path(config).expanduser()
    try:
        raw = read_simpleiot_config(path)
    except ValueError as exc:
        raise RealPoolError(str(exc)) from None
    pool = RealPool(
        config_path=path,
        region=_string(raw, "region", path),
        user_pool_id=_string(raw, "cognitoUserPoolId", path),
        client_id=_string(raw, "cognitoClientId", path),
        username=username,
        endpoint_url=endpoint_url,
    )
    return pool, password
