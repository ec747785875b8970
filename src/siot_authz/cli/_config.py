"""Where the CLI's settings come from: flags, then ``--config config.json``, then ``SIOT_AUTHZ_*``.

An explicit ``--config`` file wins over the environment because naming a
file is a deliberate choice, while environment variables are easy to leave
behind from another project.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .._settings import AuthSettings, read_simpleiot_config, trusted_url_problem
from ._exit import CommandFailed

__all__ = ["CliConfig", "add_config_arguments", "load_config"]

_ENV = "SIOT_AUTHZ_"

# field -> (flag, key in a SimpleIOT config.json, environment variable)
_SOURCES = {
    "region": ("--region", "region", _ENV + "REGION"),
    "user_pool_id": ("--user-pool-id", "cognitoUserPoolId", _ENV + "USER_POOL_ID"),
    "client_ids": ("--client-id", "cognitoClientId", _ENV + "CLIENT_IDS"),
}


@dataclass(frozen=True)
class CliConfig:
    """The pool, app client and endpoints a command talks to; any may be missing until used."""

    region: str | None = None
    user_pool_id: str | None = None
    client_ids: tuple[str, ...] = ()
    endpoint_url: str | None = None
    jwks_url: str | None = None
    token_use: str | None = None

    @property
    def cognito_endpoint(self) -> str:
        """The Cognito Identity Provider API endpoint for logins."""
        if self.endpoint_url:
            # Passwords are posted here: the same https-or-loopback rule as for keys.
            problem = trusted_url_problem(self.endpoint_url)
            if problem is not None:
                raise CommandFailed(f"--endpoint-url {problem}")
            return self.endpoint_url
        return f"https://cognito-idp.{self.require('region')}.amazonaws.com/"

    @property
    def jwks_endpoint(self) -> str:
        """The JWKS URL: the override, or the pool's Cognito default."""
        if self.jwks_url:
            return self.jwks_url
        region, pool = self.require("region"), self.require("user_pool_id")
        return f"https://cognito-idp.{region}.amazonaws.com/{pool}/.well-known/jwks.json"

    @property
    def client_id(self) -> str:
        """The app client to log in with: the first configured one."""
        return self.require("client_ids")[0]  # type: ignore[no-any-return]

    def require(self, name: str) -> Any:
        """The value of ``name``, or a :class:`CommandFailed` saying every way to set it."""
        value = getattr(self, name)
        if not value:
            flag, config_key, variable = _SOURCES[name]
            raise CommandFailed(
                f"{name} is not configured: pass {flag}, use --config with a config.json "
                f"that has {config_key!r}, or set {variable}."
            )
        return value

    def auth_settings(self) -> AuthSettings:
        """Verifier settings for this pool; other fields still come from ``SIOT_AUTHZ_*``."""
        fields: dict[str, Any] = {
            "region": self.require("region"),
            "user_pool_id": self.require("user_pool_id"),
            "client_ids": self.require("client_ids"),
        }
        if self.jwks_url:
            fields["jwks_url"] = self.jwks_url
        if self.token_use:
            fields["token_use"] = self.token_use
        try:
            return AuthSettings(**fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
                for error in exc.errors()
            )
            raise CommandFailed(f"invalid configuration: {problems}") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every command that talks to a pool accepts."""
    group = parser.add_argument_group("pool configuration (flags win over --config, which wins over env)")
    group.add_argument(
        "--config",
        metavar="PATH",
        help="a SimpleIOT config.json (keys region, cognitoUserPoolId, cognitoClientId)",
    )
    group.add_argument("--region", help=f"AWS region of the user pool [{_ENV}REGION]")
    group.add_argument("--user-pool-id", help=f"Cognito user pool id [{_ENV}USER_POOL_ID]")
    group.add_argument(
        "--client-id", help=f"app client id [{_ENV}CLIENT_IDS, comma-separated; the first logs in]"
    )


def _read_config_file(path: str) -> Mapping[str, Any]:
    try:
        return read_simpleiot_config(path)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> CliConfig:
    """Merge flags, the config file and the environment into a :class:`CliConfig`."""
    env = os.environ if environ is None else environ
    file_values = _read_config_file(args.config) if getattr(args, "config", None) else {}
    values: dict[str, Any] = {}
    for name, (flag, config_key, variable) in _SOURCES.items():
        flag_value = getattr(args, flag[2:].replace("-", "_"), None)
        file_value = file_values.get(config_key)
        if flag_value:
            chosen: Any = flag_value
        elif file_value is not None:
            if not isinstance(file_value, str):
                raise CommandFailed(f"{config_key!r} in the config file must be a string")
            chosen = file_value
        else:
            chosen = env.get(variable) or None
        if name == "client_ids":
            chosen = _split(chosen) if chosen else ()
        values[name] = chosen
    return CliConfig(
        **values,
        endpoint_url=getattr(args, "endpoint_url", None) or env.get(_ENV + "ENDPOINT_URL") or None,
        jwks_url=getattr(args, "jwks_url", None) or env.get(_ENV + "JWKS_URL") or None,
        token_use=getattr(args, "token_use", None) or env.get(_ENV + "TOKEN_USE") or None,
    )
