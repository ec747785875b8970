"""Configuration: which user pool and app clients to trust, and how hard to try.

Settings are checked when they are built, so a typo in a pool id fails at
start-up with the field's name instead of turning every request into a 401.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import _settings_loaders as loaders
from ._settings_loaders import SIMPLEIOT_HOME, read_simpleiot_config, simpleiot_team_configs, split_list

__all__ = [
    "SIMPLEIOT_HOME",
    "AuthSettings",
    "TokenUse",
    "as_pool_list",
    "is_user_pool_id",
    "read_simpleiot_config",
    "simpleiot_team_configs",
    "split_list",
    "trusted_url_problem",
]

TokenUse = Literal["id", "access", "any"]

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# Cognito pool ids are "<region>_<alphanumerics>".
_POOL_ID = re.compile(r"^(?P<region>[a-z]{2}(-[a-z]+)+-\d{1,2})_[0-9A-Za-z]+$")
_CLIENT_ID = re.compile(r"^[\w+]+$")


def is_user_pool_id(value: str) -> bool:
    """Whether ``value`` is shaped like a Cognito user pool id (``us-west-2_AbC123xyz``)."""
    return _POOL_ID.fullmatch(value) is not None


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

    @model_validator(mode="wrap")
    @classmethod
    def _name_missing_variables(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # pydantic's "3 validation errors ... Field required" names no variable;
        # a newcomer with no environment needs to read SIOT_AUTHZ_REGION and the others.
        try:
            return handler(data)
        except ValidationError as exc:
            if not any(error["type"] == "missing" for error in exc.errors()):
                raise
            raise loaders.naming_missing_variables(cls.__name__, exc) from None

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
            return split_list(value)
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
        return loaders.from_simpleiot_config(cls, path, **overrides)

    @classmethod
    def from_simpleiot_configs(
        cls, paths: Iterable[str | Path], **overrides: Any
    ) -> tuple[AuthSettings, ...]:
        """Settings for several pools, one SimpleIOT ``config.json`` each; ``overrides`` apply to all."""
        return loaders.from_simpleiot_configs(cls, paths, **overrides)

    @classmethod
    def from_simpleiot_home(
        cls, home: str | Path = SIMPLEIOT_HOME, **overrides: Any
    ) -> tuple[AuthSettings, ...]:
        """Settings for every team under ``home`` (``<home>/<team>/config.json``), in team-name order."""
        return loaders.from_simpleiot_home(cls, home, **overrides)

    @classmethod
    def pools_from_env(cls, environ: Mapping[str, str] | None = None) -> tuple[AuthSettings, ...]:
        """Settings for one or several pools, from the environment.

        ``SIOT_AUTHZ_POOLS`` holds a JSON array of objects, one per pool, with
        the same field names as keyword arguments; ``SIOT_AUTHZ_SIMPLEIOT_CONFIGS``
        lists SimpleIOT ``config.json`` paths (separated by ``os.pathsep``).
        Either may be combined with the other; the plain ``SIOT_AUTHZ_*``
        variables fill every field a pool leaves out, so shared limits are set
        once. With neither, the plain variables describe a single pool.
        """
        return loaders.pools_from_env(cls, environ)


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
