"""The verified caller, as route handlers see it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

__all__ = ["Principal", "freeze_claims"]


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return MappingProxyType({name: _frozen(item) for name, item in value.items()})
    return value


def freeze_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``claims``: mappings become read-only views and arrays become tuples.

    A principal is shared by every request that presents the same token (the
    verified-token cache hands out one object), so one handler must not be
    able to change what the next one sees.
    """
    if isinstance(claims, MappingProxyType):
        return claims
    if not isinstance(claims, Mapping):
        raise ValueError("claims must be a mapping")
    return MappingProxyType({name: _frozen(value) for name, value in claims.items()})


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: _thawed(item) for name, item in value.items()}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


ReadOnlyClaims = Annotated[
    Mapping[str, Any],
    PlainValidator(freeze_claims),
    PlainSerializer(_thawed, return_type=dict[str, Any]),
    WithJsonSchema({"type": "object", "additionalProperties": True}),
]


class Principal(BaseModel):
    """Who made the request, built only from claims whose signature and rules were checked.

    The same fields are filled for ID and access tokens, so handlers need not
    care which kind the API accepts. Instances are immutable, ``claims``
    included (arrays in it are tuples), because the verified-token cache
    hands the same object to every request that presents the same token.
    """

    model_config = ConfigDict(frozen=True)

    sub: str = Field(description="The user's stable, unique id in the pool.")
    username: str = Field(description="'cognito:username' in ID tokens, 'username' in access tokens.")
    groups: tuple[str, ...] = Field(default=(), description="Cognito groups of the user ('cognito:groups').")
    scopes: tuple[str, ...] = Field(
        default=(), description="OAuth scopes granted ('scope', split on spaces)."
    )
    token_use: Literal["id", "access"] = Field(description="Which kind of token was presented.")
    client_id: str = Field(description="App client the token was issued to ('aud' or 'client_id').")
    email: str | None = Field(default=None, description="The user's email, when the token has it.")
    issuer: str = Field(description="The 'iss' claim: the user pool's issuer URL.")
    user_pool_id: str = Field(description="The configured user pool the token was verified against.")
    issued_at: datetime = Field(description="'iat' as an aware UTC datetime.")
    expires_at: datetime = Field(description="'exp' as an aware UTC datetime.")
    claims: ReadOnlyClaims = Field(description="Every claim of the verified token, read-only.")

    def is_in_any_group(self, groups: Iterable[str]) -> bool:
        """True when the user belongs to at least one of ``groups``."""
        return not set(groups).isdisjoint(self.groups)

    def has_all_scopes(self, scopes: Iterable[str]) -> bool:
        """True when every one of ``scopes`` was granted."""
        return set(scopes).issubset(self.scopes)
