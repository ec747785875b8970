"""Where the CLI's settings come from: flags, then ``--config config.json``, then ``SIOT_AUTHZ_*``.

An explicit ``--config`` file wins over the environment because naming a
file is a deliberate choice, while environment variables are easy to leave
behind from another project.

``verify``, ``jwks`` and ``contract`` also take several pools: ``--config``
more than once, ``--simpleiot-home DIR`` for every team under it, or (for
``verify`` and ``jwks``) ``SIOT_AUTHZ_POOLS`` / ``SIOT_AUTHZ_SIMPLEIOT_CONFIGS``
as the library reads them. Each pool then comes from its own file; the flags
that name one pool (``--region``, ``--user-pool-id``, ``--client-id``,
``--jwks-url``) are refused, since they could not say which pool they mean.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._settings import AuthSettings, read_simpleiot_config, simpleiot_team_configs, trusted_url_problem
from ._exit import CommandFailed

__all__ = [
    "CliConfig",
    "add_config_arguments",
    "config_paths",
    "key_urls",
    "load_config",
    "load_configs",
    "load_pool_settings",
]

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


def add_config_arguments(parser: argparse.ArgumentParser, *, several_pools: bool = False) -> None:
    """The flags every command that talks to a pool accepts; ``several_pools`` lets it take more than one."""
    group = parser.add_argument_group("pool configuration (flags win over --config, which wins over env)")
    if several_pools:
        group.add_argument(
            "--config",
            metavar="PATH",
            action="append",
            help="a SimpleIOT config.json (keys region, cognitoUserPoolId, cognitoClientId); "
            "repeat it for several pools",
        )
        group.add_argument(
            "--simpleiot-home",
            metavar="DIR",
            help="every team's pool under DIR (DIR/<team>/config.json), e.g. ~/.simpleiot",
        )
    else:
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


def config_paths(args: argparse.Namespace) -> list[Path]:
    """Every config.json named by ``--config`` (once or more) and ``--simpleiot-home``, in that order."""
    named = getattr(args, "config", None)
    paths = [Path(named)] if isinstance(named, (str, Path)) else [Path(path) for path in named or ()]
    home = getattr(args, "simpleiot_home", None)
    if home:
        try:
            paths.extend(simpleiot_team_configs(home))
        except ValueError as exc:
            raise CommandFailed(f"--simpleiot-home: {exc}") from None
    return paths


_ONE_POOL_FLAGS = ("region", "user_pool_id", "client_id", "jwks_url")
_POOLS_ENV = (_ENV + "POOLS", _ENV + "SIMPLEIOT_CONFIGS")


def _refuse_one_pool_flags(args: argparse.Namespace) -> None:
    given = [name for name in _ONE_POOL_FLAGS if getattr(args, name, None)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise CommandFailed(
            f"{flags} names one pool, but several are configured; "
            "put each pool's values in its own config.json"
        )


def _is_several(args: argparse.Namespace, paths: list[Path]) -> bool:
    return len(paths) > 1 or bool(getattr(args, "simpleiot_home", None))


def load_configs(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[CliConfig]:
    """One :class:`CliConfig` per configured pool: each config.json, or the single pool of flags and env."""
    paths = config_paths(args)
    if not _is_several(args, paths):
        return [load_config(args, environ)]
    _refuse_one_pool_flags(args)
    configs = []
    for path in paths:
        one = argparse.Namespace(**{**vars(args), "config": str(path), "simpleiot_home": None})
        configs.append(load_config(one, environ))
    return configs


def load_pool_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> list[AuthSettings]:
    """Verifier settings for every configured pool, each file's problems named by its path and its own keys.

    With one pool or none named on the command line, ``SIOT_AUTHZ_POOLS`` or
    ``SIOT_AUTHZ_SIMPLEIOT_CONFIGS`` may still name several.
    """
    env = os.environ if environ is None else environ
    paths = config_paths(args)
    overrides = {"token_use": args.token_use} if getattr(args, "token_use", None) else {}
    try:
        if _is_several(args, paths):
            _refuse_one_pool_flags(args)
            return list(AuthSettings.from_simpleiot_configs(paths, **overrides))
        if _uses_pools_from_env(args, paths, env):
            pools = AuthSettings.pools_from_env(dict(env))
            return [pool.model_copy(update=overrides) for pool in pools]
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None
    return [load_config(args, env).auth_settings()]


def _uses_pools_from_env(args: argparse.Namespace, paths: list[Path], env: Mapping[str, str]) -> bool:
    # Only when the command line names no pool at all: a flag or a file is the deliberate choice.
    has_one_pool_flags = any(getattr(args, name, None) for name in _ONE_POOL_FLAGS)
    return not paths and not has_one_pool_flags and any(env.get(name) for name in _POOLS_ENV)


def key_urls(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(user pool id, JWKS URL) of every configured pool; needs no app client id."""
    env = os.environ if environ is None else environ
    paths = config_paths(args)
    if _uses_pools_from_env(args, paths, env):
        return [(pool.user_pool_id, pool.resolved_jwks_url) for pool in load_pool_settings(args, env)]
    return [(config.user_pool_id or "-", config.jwks_endpoint) for config in load_configs(args, env)]


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> CliConfig:
    """Merge flags, the config file and the environment into a :class:`CliConfig` for one pool."""
    env = os.environ if environ is None else environ
    paths = config_paths(args)
    if len(paths) > 1:
        raise CommandFailed("this command talks to one pool; pass --config once")
    file_values = _read_config_file(str(paths[0])) if paths else {}
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
