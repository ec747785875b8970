"""The verified caller, as route handlers see it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Principal"]


class Principal(BaseModel):
    """Who made the request, built only from claims whose signature and rules were checked.

    The same fields are filled for ID and access tokens, so handlers need not
    care which kind the API accepts. Instances are immutable and may be shared
    between requests (the verified-token cache hands out the same object), so
    treat ``claims`` as read-only.
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
    issued_at: datetime = Field(description="'iat' as an aware UTC datetime.")
    expires_at: datetime = Field(description="'exp' as an aware UTC datetime.")
    claims: dict[str, Any] = Field(description="Every claim of the verified token.")

    def is_in_any_group(self, groups: Iterable[str]) -> bool:
        """True when the user belongs to at least one of ``groups``."""
        return not set(groups).isdisjoint(self.groups)

    def has_all_scopes(self, scopes: Iterable[str]) -> bool:
        """True when every one of ``scopes`` was granted."""
        return set(scopes).issubset(self.scopes)
