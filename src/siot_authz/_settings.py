"""Configuration: which user pool and app clients to trust, and how hard to try.

Settings are checked when they are built, so a typo in a pool id fails at
start-up with the field's name instead of turning every request into a 401.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "SIMPLEIOT_HOME",
    "AuthSettings",
    "TokenUse",
    "as_pool_list",
    "read_simpleiot_config",
    "simpleiot_team_configs",
    "trusted_url_problem",
]

TokenUse = Literal["id", "access", "any"]

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# Cognito pool ids are "<region>_<alphanumerics>".
_POOL_ID = re.compile(r"^(?P<region>[a-z]{2}(-[a-z]+)+-\d{1,2})_[0-9A-Za-z]+$")
_CLIENT_ID = re.compile(r"^[\w+]+$")

# SimpleIOT config.json keys, and the settings fields they fill.
_SIMPLEIOT_KEYS = {"region": "region", "cognitoUserPoolId": "user_pool_id", "cognitoClientId": "client_ids"}
_FIELD_TO_SIMPLEIOT_KEY = {field: key for key, field in _SIMPLEIOT_KEYS.items()}

#: Where SimpleIOT keeps one folder per team, each with a ``config.json``.
SIMPLEIOT_HOME = "~/.simpleiot"


def simpleiot_team_configs(home: str | Path = SIMPLEIOT_HOME) -> list[Path]:
    """Every team's ``config.json`` under ``home`` (``<home>/<team>/config.json``), in team-name order."""
    root = Path(home).expanduser()
    if not root.is_dir():
        raise ValueError(f"SimpleIOT folder {root} does not exist")
    configs = sorted(root.glob("*/config.json"))
    if not configs:
        raise ValueError(f"SimpleIOT folder {root} has no <team>/config.json")
    return configs


def read_simpleiot_config(path: str | Path) -> dict[str, Any]:
    """The JSON object in a SimpleIOT ``config.json``; ValueError says what is wrong with the file."""
    config_path = Path(path).expanduser()
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read SimpleIOT config {config_path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"SimpleIOT config {config_path} is not valid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"SimpleIOT config {config_path} must be a JSON object")
    return raw


def _is_local_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # ".invalid" never resolves (RFC 6761): LocalIssuer uses it for in-process transports.
        return host == "localhost" or host.endswith((".localhost", ".invalid"))


def trusted_url_problem(url: str) -> str | None:
    """Why ``url`` may not serve signing keys (or receive logins), or None when it may.

    Whoever controls the key endpoint can sign tokens that pass every check,
    and a login endpoint receives passwords, so both travel over https. Plain http is allowed only to loopback hosts,
    for tests and local issuers. Credentials in the URL are refused: the URL
    is logged when a fetch fails.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
        return "must be an http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.scheme == "http" and not _is_local_host(parts.hostname):
        return "must use https (plain http is allowed only for loopback hosts)"
    return None


class AuthSettings(BaseSettings):
    """Which Cognito user pool and app clients to trust, read from arguments or ``SIOT_AUTHZ_*``.

    Built directly (``AuthSettings(region=..., user_pool_id=..., client_ids=[...])``),
    from the environment (``SIOT_AUTHZ_REGION``, ``SIOT_AUTHZ_USER_POOL_ID``,
    ``SIOT_AUTHZ_CLIENT_IDS=a,b``), or from a SimpleIOT ``config.json`` with
    :meth:`from_simpleiot_config`.
    """

    model_config = SettingsConfigDict(
        env_prefix="SIOT_AUTHZ_",
        frozen=True,
        extra="forbid",
    )

    region: str = Field(description="AWS region of the user pool, e.g. 'us-west-2'.")
    user_pool_id: str = Field(description="Cognito user pool id, e.g. 'us-west-2_AbC123xyz'.")
    client_ids: Annotated[tuple[str, ...], NoDecode] = Field(
        description="App client ids whose tokens are accepted (comma-separated in the environment).",
    )
    token_use: TokenUse = Field(
        default="id",
        description="Which tokens to accept: 'id' (what SimpleIOT's API expects), 'access' or 'any'.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Where to fetch signing keys; defaults to the pool's Cognito JWKS URL.",
    )
    leeway_seconds: float = Field(
        default=5.0, ge=0, le=300, description="Allowed clock skew for exp, nbf and iat."
    )
    jwks_ttl_seconds: float = Field(
        default=900.0, gt=0, description="How long fetched keys are used before a refresh."
    )
    jwks_refetch_cooldown_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Least time between fetches triggered by unknown kids or failed fetches.",
    )
    http_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Upper bound on the time one JWKS fetch may take."
    )
    max_token_bytes: int = Field(
        default=8192, ge=512, le=1_048_576, description="Longer tokens are refused before decoding."
    )
    max_jwks_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Larger JWKS responses are refused while being read.",
    )
    verified_cache_size: int = Field(
        default=10_000,
        ge=0,
        description="How many verified tokens to remember (0 turns the cache off).",
    )
    additional_regions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Regions the pool is replicated to (Cognito Multi-Region Replication); tokens issued there "
            "carry that region in 'iss' and are accepted, verified with the pool's own keys "
            "(comma-separated in the environment)."
        ),
    )
    jwks_file: Path | None = Field(
        default=None,
        description=(
            "A JWKS document to serve from the first request on, with no fetch "
            "(for cold starts and hosts without a network); the key URL still refreshes it."
        ),
    )
    max_token_lifetime_seconds: float = Field(
        default=86_400.0,
        gt=0,
        le=10 * 86_400,
        description=(
            "The longest an ID or access token of this pool lives (Cognito allows at most 1 day); "
            "revocation entries are kept this long."
        ),
    )

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError("must be an AWS region such as 'us-west-2'")
        return value

    @field_validator("user_pool_id")
    @classmethod
    def _check_user_pool_id(cls, value: str) -> str:
        if not _POOL_ID.fullmatch(value):
            raise ValueError("must be a Cognito user pool id such as 'us-west-2_AbC123xyz'")
        return value

    @field_validator("client_ids", "additional_regions", mode="before")
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("jwks_file")
    @classmethod
    def _expand_jwks_file(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("additional_regions")
    @classmethod
    def _check_additional_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            if not _REGION.fullmatch(region):
                raise ValueError(f"{region!r} is not an AWS region such as 'eu-west-1'")
        return value

    @field_validator("client_ids")
    @classmethod
    def _check_client_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one app client id")
        for client_id in value:
            if not _CLIENT_ID.fullmatch(client_id):
                raise ValueError(f"{client_id!r} is not a Cognito app client id")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = trusted_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _pool_matches_region_and_default_jwks_url(self) -> AuthSettings:
        match = _POOL_ID.fullmatch(self.user_pool_id)
        if match is not None and match["region"] != self.region:
            raise ValueError(f"user_pool_id is in region {match['region']!r} but region is {self.region!r}")
        if self.region in self.additional_regions:
            raise ValueError("additional_regions must not repeat the pool's own region")
        if self.jwks_url is None:
            default = (
                f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}/.well-known/jwks.json"
            )
            # The model is frozen; this runs once, during construction.
            object.__setattr__(self, "jwks_url", default)
        return self

    @property
    def issuers(self) -> frozenset[str]:
        """Every exact ``iss`` this pool's tokens may carry.

        The classic and the newer (``issuer-cognito-idp``) form in the pool's
        region, plus the classic form in each replica region: a replicated
        pool keeps its id, and only the region in ``iss`` changes.
        """
        pool = self.user_pool_id
        return frozenset(
            {
                f"https://cognito-idp.{self.region}.amazonaws.com/{pool}",
                f"https://issuer-cognito-idp.{self.region}.amazonaws.com/{pool}",
                *(f"https://cognito-idp.{region}.amazonaws.com/{pool}" for region in self.additional_regions),
            }
        )

    @property
    def resolved_jwks_url(self) -> str:
        """The JWKS URL actually used (the override or the pool's default)."""
        assert self.jwks_url is not None  # filled in by the model validator
        return self.jwks_url

    @classmethod
    def from_simpleiot_config(cls, path: str | Path, **overrides: Any) -> AuthSettings:
        """Build settings from a SimpleIOT ``config.json`` (``~/.simpleiot/<team>/config.json``).

        The file is flat JSON; ``region``, ``cognitoUserPoolId`` and
        ``cognitoClientId`` are used and other keys are ignored. Keyword
        arguments override or add any field. A bad file raises ValueError
        naming the file and its own key (``cognitoClientId``, not ``client_ids``).
        """
        config_path = Path(path).expanduser()
        raw = read_simpleiot_config(config_path)
        fields: dict[str, Any] = {}
        for config_key, field_name in _SIMPLEIOT_KEYS.items():
            if config_key in raw:
                fields[field_name] = raw[config_key]
            elif field_name not in overrides:
                raise ValueError(f"SimpleIOT config {config_path} has no {config_key!r}")
        fields.update(overrides)
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise ValueError(_describe_config_errors(config_path, exc, overrides)) from None

    @classmethod
    def from_simpleiot_configs(
        cls, paths: Iterable[str | Path], **overrides: Any
    ) -> tuple[AuthSettings, ...]:
        """Settings for several pools, one SimpleIOT ``config.json`` each; ``overrides`` apply to all."""
        pools = tuple(cls.from_simpleiot_config(path, **overrides) for path in paths)
        if not pools:
            raise ValueError("no SimpleIOT config.json was given")
        return pools

    @classmethod
    def from_simpleiot_home(
        cls, home: str | Path = SIMPLEIOT_HOME, **overrides: Any
    ) -> tuple[AuthSettings, ...]:
        """Settings for every team under ``home`` (``<home>/<team>/config.json``), in team-name order."""
        return cls.from_simpleiot_configs(simpleiot_team_configs(home), **overrides)

    @classmethod
    def pools_from_env(cls, environ: dict[str, str] | None = None) -> tuple[AuthSettings, ...]:
        """Settings for one or several pools, from the environment.

        ``SIOT_AUTHZ_POOLS`` holds a JSON array of objects, one per pool, with
        the same field names as keyword arguments; ``SIOT_AUTHZ_SIMPLEIOT_CONFIGS``
        lists SimpleIOT ``config.json`` paths (separated by ``os.pathsep``).
        Either may be combined with the other; the plain ``SIOT_AUTHZ_*``
        variables fill every field a pool leaves out, so shared limits are set
        once. With neither, the plain variables describe a single pool.
        """
        env = os.environ if environ is None else environ
        pools: list[AuthSettings] = []
        listed = env.get("SIOT_AUTHZ_POOLS", "").strip()
        if listed:
            try:
                entries = json.loads(listed)
            except json.JSONDecodeError as exc:
                raise ValueError(f"SIOT_AUTHZ_POOLS is not valid JSON: {exc.msg}") from None
            if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
                raise ValueError("SIOT_AUTHZ_POOLS must be a JSON array of objects")
            for index, entry in enumerate(entries):
                try:
                    pools.append(cls(**entry))
                except ValidationError as exc:
                    raise ValueError(f"SIOT_AUTHZ_POOLS[{index}]: {_first_errors(exc)}") from None
        paths = [part for part in env.get("SIOT_AUTHZ_SIMPLEIOT_CONFIGS", "").split(os.pathsep) if part]
        if paths:
            pools.extend(cls.from_simpleiot_configs(paths))
        if not pools:
            pools.append(cls())  # the fields come from the environment
        return tuple(pools)


def _first_errors(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        label = (names or {}).get(field, field)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{label!r}: {message}")
    return "; ".join(parts)


def _describe_config_errors(path: Path, exc: ValidationError, overrides: dict[str, Any]) -> str:
    # Name the config file's own keys for what came from the file, and the
    # field names for what the caller passed as keyword arguments.
    names = {field: key for field, key in _FIELD_TO_SIMPLEIOT_KEY.items() if field not in overrides}
    return f"SimpleIOT config {path}: {_first_errors(exc, names)}"


def as_pool_list(settings: AuthSettings | Sequence[AuthSettings]) -> tuple[AuthSettings, ...]:
    """One settings object or several, as a non-empty tuple with no pool twice."""
    pools = (settings,) if isinstance(settings, AuthSettings) else tuple(settings)
    if not pools:
        raise ValueError("at least one pool's settings are needed")
    for pool in pools:
        if not isinstance(pool, AuthSettings):
            raise TypeError(f"expected AuthSettings, got {type(pool).__name__}")
    seen: set[str] = set()
    for pool in pools:
        if pool.user_pool_id in seen:
            raise ValueError(f"user pool {pool.user_pool_id} is configured twice")
        seen.add(pool.user_pool_id)
    return pools
