"""The verified caller, as route handlers see it."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

__all__ = [
    "Claims",
    "Principal",
    "freeze_claims",
    "principal_from_parts",
    "principal_parts",
    "verified_principal",
]

# Values handed out as they are: immutable, and holding nothing mutable.
_ATOMS = (str, int, float, bool, type(None))


_ATOM_TYPES = frozenset(_ATOMS)


def _frozen(value: Any) -> Any:
    """An immutable copy of a JSON value: arrays become tuples and objects :class:`Claims`."""
    if isinstance(value, (list, tuple)):
        if _ATOM_TYPES.issuperset(map(type, value)):
            return tuple(value)  # the common case, an array of strings: no walk in Python
        return tuple([_frozen(item) for item in value])
    if isinstance(value, Claims):
        return value
    if isinstance(value, Mapping):
        return Claims({name: _frozen(item) for name, item in value.items()})
    return value


class Claims(Mapping[str, Any]):
    """Every claim of a verified token, read-only: no item can be set or deleted, and arrays are tuples.

    A principal is shared by every request that presents the same token (the
    verified-token cache hands out one object), so one handler must not be
    able to change what the next one sees. The claims are held as the parser
    produced them and made immutable as they are read: nested arrays come out
    as tuples and nested objects as :class:`Claims`. Wrapping instead of
    copying keeps a cold verification and each cached entry cheap (one
    object; a flat claims dict is not even tracked by the garbage collector).
    """

    __slots__ = ("_claims",)

    def __init__(self, claims: dict[str, Any]) -> None:
        # Owned: nothing else may hold ``claims`` (the parser's fresh dict, or a frozen copy).
        self._claims = claims

    def __getitem__(self, name: str) -> Any:
        value = self._claims[name]
        return value if isinstance(value, _ATOMS) else _frozen(value)

    def get(self, name: str, default: Any = None) -> Any:
        """The claim ``name``, or ``default`` when the token does not have it."""
        value = self._claims.get(name, default)
        return value if isinstance(value, _ATOMS) else _frozen(value)

    def __contains__(self, name: object) -> bool:
        return name in self._claims

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)

    def __repr__(self) -> str:
        return f"Claims({dict(self.items())!r})"


def freeze_claims(claims: Mapping[str, Any]) -> Claims:
    """A read-only copy of ``claims`` (see :class:`Claims`); a :class:`Claims` is returned as it is."""
    if isinstance(claims, Claims):
        return claims
    if not isinstance(claims, Mapping):
        raise ValueError("claims must be a mapping")
    frozen: Claims = _frozen(claims)
    return frozen


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

    # defer_build: the validator and serializer are compiled on first use, not
    # at import (a few ms of start-up); verification builds principals with
    # verified_principal() and never needs the validator.
    model_config = ConfigDict(frozen=True, defer_build=True)

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


_FIELD_NAMES = frozenset(Principal.model_fields)
_set_attribute = object.__setattr__


def verified_principal(
    sub: str,
    username: str,
    groups: tuple[str, ...],
    scopes: tuple[str, ...],
    token_use: Literal["id", "access"],
    client_id: str,
    email: str | None,
    issuer: str,
    user_pool_id: str,
    issued_at: datetime,
    expires_at: datetime,
    claims: dict[str, Any],
) -> Principal:
    """A :class:`Principal` from values the claim rules have already proved, without validating them again.

    Every argument must have its field's exact type (the claim rules check
    each one), and ``claims`` must be a dict nothing else holds. pydantic's
    validator would re-check all of it and deep-copy the claims, which cost
    more than the rules themselves on the cold path; this sets the same
    attributes pydantic's own ``model_construct`` sets, in field order.
    ``tests/test_claims.py`` proves the result equals a validated principal.
    """
    principal = Principal.__new__(Principal)
    _set_attribute(
        principal,
        "__dict__",
        {
            "sub": sub,
            "username": username,
            "groups": groups,
            "scopes": scopes,
            "token_use": token_use,
            "client_id": client_id,
            "email": email,
            "issuer": issuer,
            "user_pool_id": user_pool_id,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "claims": Claims(claims),
        },
    )
    _set_attribute(principal, "__pydantic_fields_set__", set(_FIELD_NAMES))
    _set_attribute(principal, "__pydantic_extra__", None)
    _set_attribute(principal, "__pydantic_private__", None)
    return principal


# Every field but ``claims``, in verified_principal's order, read in one C-level call.
_part_fields = operator.itemgetter(*(name for name in Principal.model_fields if name != "claims"))

#: A principal as plain values: its fields, its claim names, and its claim values (arrays as tuples).
PrincipalParts = tuple[tuple[Any, ...], tuple[str, ...], tuple[Any, ...]]

# Tokens of one pool share a few claim-name layouts; each layout is kept once
# instead of once per cached token. Bounded: layouts past this are not shared.
_shared_names: dict[tuple[str, ...], tuple[str, ...]] = {}
_MAX_SHARED_LAYOUTS = 64


def principal_parts(principal: Principal) -> PrincipalParts:
    """The principal as plain values, which the garbage collector stops tracking once it has seen them.

    Strings, numbers, datetimes and tuples of them are not containers the
    collector must visit, so a cached entry held this way costs a full
    collection nothing, where a principal object costs several visits. The
    claims are a tuple of names (shared by every token with the same
    layout) and a tuple of values, not a dict: the collector never stops
    tracking a tuple that holds a dict, and the names need not be stored
    once per token.
    """
    values = principal.__dict__
    claims = values["claims"]
    raw = claims._claims if isinstance(claims, Claims) else dict(claims)
    names = tuple(raw)
    claim_values = tuple(raw.values())
    if list in set(map(type, claim_values)):
        claim_values = tuple([_frozen(value) if type(value) is list else value for value in claim_values])
    shared = _shared_names.get(names)
    if shared is None:
        if len(_shared_names) < _MAX_SHARED_LAYOUTS:
            _shared_names[names] = names
        shared = names
    return _part_fields(values), shared, claim_values


def principal_from_parts(parts: PrincipalParts) -> Principal:
    """The principal again, equal to the one :func:`principal_parts` took apart; nothing is re-validated."""
    fields, names, claim_values = parts
    build: Callable[..., Principal] = verified_principal  # fields are in its order, claims last
    return build(*fields, dict(zip(names, claim_values, strict=True)))
