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

from .. import _settings_loaders as loaders
from .._settings import (
    AuthSettings,
    read_simpleiot_config,
    simpleiot_team_configs,
    split_list,
    trusted_url_problem,
)
from ._exit import CommandFailed

__all__ = [
    "CliConfig",
    "PoolSources",
    "add_config_arguments",
    "key_urls",
    "load_config",
    "load_configs",
    "load_pool_settings",
    "pool_sources",
]

_ENV = loaders.ENV_PREFIX

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
        region, pool = self.require("region", "user_pool_id")
        return f"https://cognito-idp.{region}.amazonaws.com/{pool}/.well-known/jwks.json"

    @property
    def client_id(self) -> str:
        """The app client to log in with: the first configured one."""
        (client_ids,) = self.require("client_ids")
        return client_ids[0]  # type: ignore[no-any-return]

    def require(self, *names: str) -> tuple[Any, ...]:
        """The values of ``names``, or one :class:`CommandFailed` naming every missing one and how to set it."""
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            ways = "; ".join(
                f"{name}: pass {flag}, put {config_key!r} in the --config file, or set {variable}"
                for name in missing
                for flag, config_key, variable in [_SOURCES[name]]
            )
            raise CommandFailed(f"not configured: {', '.join(missing)} ({ways})")
        return tuple(getattr(self, name) for name in names)

    def auth_settings(self) -> AuthSettings:
        """Verifier settings for this pool; other fields still come from ``SIOT_AUTHZ_*``."""
        region, user_pool_id, client_ids = self.require("region", "user_pool_id", "client_ids")
        fields: dict[str, Any] = {"region": region, "user_pool_id": user_pool_id, "client_ids": client_ids}
        if self.jwks_url:
            fields["jwks_url"] = self.jwks_url
        if self.token_use:
            fields["token_use"] = self.token_use
        try:
            return AuthSettings(**fields)
        except ValidationError as exc:
            raise CommandFailed(f"invalid configuration: {loaders.describe_errors(exc)}") from None


def add_config_arguments(
    parser: argparse.ArgumentParser, *, several_pools: bool = False, client_ids_mean: str
) -> None:
    """The flags every command that talks to a pool accepts; ``several_pools`` lets it take more than one.

    ``client_ids_mean`` says what this command does with the app client ids, in ``--client-id``'s help.
    """
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
        "--client-id", help=f"app client id [{_ENV}CLIENT_IDS, comma-separated; {client_ids_mean}]"
    )


_ONE_POOL_FLAGS = ("region", "user_pool_id", "client_id", "jwks_url")
_POOLS_ENV = (_ENV + "POOLS", _ENV + "SIMPLEIOT_CONFIGS")


@dataclass(frozen=True)
class PoolSources:
    """Where a command's pools come from, decided once for every command.

    Exactly one holds: ``files`` (several pools, one config.json each),
    ``from_env`` (several pools from ``SIOT_AUTHZ_POOLS`` /
    ``SIOT_AUTHZ_SIMPLEIOT_CONFIGS``), or ``single`` (one pool from flags,
    then one ``--config``, then ``SIOT_AUTHZ_*``).
    """

    files: tuple[Path, ...] = ()
    from_env: bool = False
    single: CliConfig | None = None


def _named_paths(args: argparse.Namespace) -> list[Path]:
    named = getattr(args, "config", None)
    paths = [Path(named)] if isinstance(named, (str, Path)) else [Path(path) for path in named or ()]
    home = getattr(args, "simpleiot_home", None)
    if home:
        try:
            paths.extend(simpleiot_team_configs(home))
        except ValueError as exc:
            raise CommandFailed(f"--simpleiot-home: {exc}") from None
    return paths


def pool_sources(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, *, env_pools: bool = True
) -> PoolSources:
    """The one decision of where pools come from; ``env_pools`` False ignores ``SIOT_AUTHZ_POOLS`` (logins)."""
    env = os.environ if environ is None else environ
    paths = _named_paths(args)
    one_pool_flags = [name for name in _ONE_POOL_FLAGS if getattr(args, name, None)]
    if len(paths) > 1 or getattr(args, "simpleiot_home", None):
        if one_pool_flags:
            flags = ", ".join("--" + name.replace("_", "-") for name in one_pool_flags)
            raise CommandFailed(
                f"{flags} names one pool, but several are configured; "
                "put each pool's values in its own config.json"
            )
        return PoolSources(files=tuple(paths))
    # SIOT_AUTHZ_POOLS only when the command line names no pool at all: a flag or a file is the deliberate choice.
    if env_pools and not paths and not one_pool_flags and any(env.get(name) for name in _POOLS_ENV):
        return PoolSources(from_env=True)
    return PoolSources(single=load_config(args, env))


def load_configs(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[CliConfig]:
    """One :class:`CliConfig` per configured pool, for commands that log in (no ``SIOT_AUTHZ_POOLS``)."""
    env = os.environ if environ is None else environ
    sources = pool_sources(args, env, env_pools=False)
    if sources.single is not None:
        return [sources.single]
    return [_file_config(path, args, env) for path in sources.files]


def load_pool_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> list[AuthSettings]:
    """Verifier settings for every configured pool, each file's problems named by its path and its own keys."""
    env = os.environ if environ is None else environ
    sources = pool_sources(args, env)
    overrides = {"token_use": args.token_use} if getattr(args, "token_use", None) else {}
    try:
        if sources.files:
            return list(loaders.from_simpleiot_configs(AuthSettings, sources.files, **overrides))
        if sources.from_env:
            return list(loaders.pools_from_env(AuthSettings, env, **overrides))
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None
    assert sources.single is not None
    return [sources.single.auth_settings()]


def key_urls(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(user pool id, JWKS URL) of every configured pool; needs no app client id."""
    env = os.environ if environ is None else environ
    sources = pool_sources(args, env)
    if sources.from_env:
        return [(pool.user_pool_id, pool.resolved_jwks_url) for pool in load_pool_settings(args, env)]
    configs = (
        [sources.single]
        if sources.single is not None
        else [_file_config(p, args, env) for p in sources.files]
    )
    return [(config.user_pool_id or "-", config.jwks_endpoint) for config in configs if config is not None]


def _read_config_file(path: Path) -> Mapping[str, Any]:
    try:
        return read_simpleiot_config(path)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None


def _file_config(path: Path, args: argparse.Namespace, env: Mapping[str, str]) -> CliConfig:
    one = argparse.Namespace(**{**vars(args), "config": str(path), "simpleiot_home": None})
    return load_config(one, env)


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> CliConfig:
    """Merge flags, the config file and the environment into a :class:`CliConfig` for one pool."""
    env = os.environ if environ is None else environ
    paths = _named_paths(args)
    if len(paths) > 1:
        raise CommandFailed("this command talks to one pool; pass --config once")
    file_values = _read_config_file(paths[0]) if paths else {}
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
            chosen = split_list(chosen) if chosen else ()
        values[name] = chosen
    return CliConfig(
        **values,
        endpoint_url=getattr(args, "endpoint_url", None) or env.get(_ENV + "ENDPOINT_URL") or None,
        jwks_url=getattr(args, "jwks_url", None) or env.get(_ENV + "JWKS_URL") or None,
        token_use=getattr(args, "token_use", None) or env.get(_ENV + "TOKEN_USE") or None,
    )
