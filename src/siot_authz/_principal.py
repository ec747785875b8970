"""The verified caller, as route handlers see it."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

__all__ = [
    "Claims",
    "Principal",
    "claims_from_rules",
    "freeze_claims",
    "principal_from_parts",
    "principal_of_fields",
    "principal_parts",
    "verified_principal",
]

# Values handed out as they are: immutable, and holding nothing mutable.
_ATOMS = (str, int, float, bool, type(None))


_ATOM_TYPES: frozenset[type] = frozenset(_ATOMS)
# Claims handed in as the JSON parser's dict never hold a tuple but the claim
# rules' groups, all strings: a tuple there is frozen already.
_PARSED_FROZEN = _ATOM_TYPES | {tuple}


def _frozen(value: Any) -> Any:
    """An immutable copy of a JSON value: arrays become tuples and objects :class:`Claims`."""
    if isinstance(value, (list, tuple)):
        if _ATOM_TYPES.issuperset(map(type, value)):
            return tuple(value)  # the common case, an array of strings: no walk in Python
        return tuple([_frozen(item) for item in value])
    if isinstance(value, Claims):
        return value
    if isinstance(value, Mapping):
        return _claims_of(dict(value))
    return value


#: A claim-name layout: the names in token order, and each name's position.
_Layout = tuple[tuple[str, ...], dict[str, int]]

# Tokens of one pool share a few claim-name layouts; each is kept once,
# with its name-to-position map, instead of once per token. Bounded:
# layouts past this are built per token and not shared.
_layouts: dict[tuple[str, ...], _Layout] = {}
_MAX_SHARED_LAYOUTS = 64


def _layout(names: tuple[str, ...]) -> _Layout:
    layout = _layouts.get(names)
    if layout is None:
        layout = (names, {name: position for position, name in enumerate(names)})
        if len(_layouts) < _MAX_SHARED_LAYOUTS:
            layout = _layouts.setdefault(names, layout)
    return layout


class Claims(Mapping[str, Any]):
    """Every claim of a verified token, read-only: no item can be set or deleted, and arrays are tuples.

    A principal is shared by every request that presents the same token (the
    verified-token cache hands out one object), so one handler must not be
    able to change what the next one sees.

    Held as one tuple of frozen values (arrays as tuples, objects as
    :class:`Claims`) beside a layout of names that every token with the same
    claim names shares. That is the cheapest form for the garbage collector,
    which every full collection walks for each cached principal: the values
    tuple holds no container it must visit, so after its first collection it
    is not tracked at all, where a dict of claims with a list of groups in it
    is two objects and thirty references to visit, for as long as it lives.
    """

    __slots__ = ("_index", "_names", "_values")

    _names: tuple[str, ...]
    _index: dict[str, int]
    _values: tuple[Any, ...]

    def __init__(self, claims: Mapping[str, Any]) -> None:
        self._names, self._index = _layout(tuple(claims))
        self._values = tuple([_frozen(value) for value in claims.values()])

    def __getitem__(self, name: str) -> Any:
        return self._values[self._index[name]]

    def get(self, name: str, default: Any = None) -> Any:
        """The claim ``name``, or ``default`` when the token does not have it."""
        position = self._index.get(name)
        return default if position is None else self._values[position]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"Claims({dict(zip(self._names, self._values, strict=True))!r})"

    # Mapping defines __eq__ and so leaves instances unhashable, which made
    # every frozen Principal unhashable too (no set of principals, no
    # lru_cache keyed by one). Frozen values are hashable all the way down,
    # and equality ignores order, so the hash does too.
    def __hash__(self) -> int:
        return hash(frozenset(zip(self._names, self._values, strict=True)))


_new_claims = Claims.__new__


def _claims_from(names: tuple[str, ...], values: tuple[Any, ...]) -> Claims:
    """Claims from a layout's names and frozen values, in the same order; nothing is copied or checked."""
    claims = Claims.__new__(Claims)
    claims._names, claims._index = _layout(names)
    claims._values = values
    return claims


def _claims_of(claims: dict[str, Any], *, frozen_types: frozenset[type] = _ATOM_TYPES) -> Claims:
    """Claims from a parsed JSON object, its arrays made tuples and nested objects :class:`Claims`.

    ``frozen_types`` are the value types taken as they are.
    """
    values = tuple(claims.values())
    if not frozen_types.issuperset(map(type, values)):
        # An array of groups, as a rule: only those values are frozen.
        values = tuple([value if type(value) in _ATOM_TYPES else _frozen(value) for value in values])
    return _claims_from(tuple(claims), values)


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


class _SharedFieldsSet(set[str]):
    """Every field's name: the one fields-set all principals built here share.

    One object instead of one set (a container the collector visits) per
    cached principal. Shared, it must not change: one route clearing
    ``principal.model_fields_set`` would change how every other principal
    serializes. So it refuses changes in place, and its copies (pydantic's
    ``model_copy`` copies it before adding to it) are plain sets.
    """

    def _refuse(self, *args: object) -> NoReturn:
        raise TypeError("a principal's fields set is shared by every principal and cannot be changed")

    add = discard = remove = pop = clear = _refuse
    update = intersection_update = difference_update = symmetric_difference_update = _refuse
    __ior__ = __iand__ = __isub__ = __ixor__ = _refuse

    def __copy__(self) -> set[str]:
        return set(self)

    def __deepcopy__(self, memo: object) -> set[str]:
        return set(self)

    def __reduce__(self) -> tuple[type[set[str]], tuple[list[str]]]:
        return set, (list(self),)


_ALL_FIELDS_SET = _SharedFieldsSet(Principal.model_fields)
_new_principal = Principal.__new__
# BaseModel's four slots, set through their descriptors: the same stores
# ``object.__setattr__`` makes, without looking each name up on every call
# (a third of a principal's construction cost).
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


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
    claims: dict[str, Any] | Claims,
) -> Principal:
    """A :class:`Principal` from values the claim rules have already proved, without validating them again.

    Every argument must have its field's exact type (the claim rules check
    each one), and ``claims`` must be the parser's dict (made a :class:`Claims`
    here) or a :class:`Claims`. pydantic's validator would re-check all of it
    and deep-copy the claims, which cost more than the rules themselves on
    the cold path; this sets the same attributes pydantic's own
    ``model_construct`` sets, in field order. ``tests/test_claims.py`` proves
    the result equals a validated principal.
    """
    return principal_of_fields(
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
            "claims": claims if type(claims) is Claims else _claims_of(claims, frozen_types=_PARSED_FROZEN),  # type: ignore[arg-type]
        }
    )


def principal_of_fields(fields: dict[str, Any]) -> Principal:
    """A :class:`Principal` holding ``fields`` as they are: every field, in field order, each of its exact type.

    What pydantic's own ``model_construct`` sets, without its per-field
    work; the claim rules call it with a dict of values they have proved.
    """
    principal = _new_principal(Principal)
    _set_dict(principal, fields)
    _set_fields_set(principal, _ALL_FIELDS_SET)
    _set_extra(principal, None)
    _set_private(principal, None)
    return principal


def claims_from_rules(claims: dict[str, Any], groups: tuple[str, ...], containers: int = -1) -> Claims:
    """The principal's :class:`Claims` from the parser's object, as the claim rules hand it over.

    Every new token comes through here. ``groups`` is the rules' tuple of the
    ``cognito:groups`` array and takes the array's place, so the principal's
    groups and its claims share one object. ``containers`` is the parser's
    bound on the arrays and objects in ``claims`` at any depth (never fewer
    than there are; -1: not counted): when it proves the groups array is the
    only one, or that there is none, no other value is looked at. The
    result equals what :func:`verified_principal` makes of the dict
    (``tests/test_claims.py`` compares the two principals). ``claims`` itself
    is left as it was.
    """
    names, index = _layout(tuple(claims))
    at = index.get("cognito:groups")
    if at is None:
        values = tuple(claims.values())
    else:
        # The rules accepted the array, so it is one: a list of the values
        # with it swapped out, then one tuple (cheaper than slicing a tuple).
        listed = list(claims.values())
        listed[at] = groups
        values = tuple(listed)
        containers -= 1
    # The parser never makes a tuple: one here is the groups, frozen already.
    if containers != 0 and not _PARSED_FROZEN.issuperset(map(type, values)):
        values = tuple([value if type(value) in _PARSED_FROZEN else _frozen(value) for value in values])
    frozen = _new_claims(Claims)
    frozen._names, frozen._index, frozen._values = names, index, values
    return frozen


# Every field but ``claims``, in verified_principal's order, read in one C-level call.
_part_fields = operator.itemgetter(*(name for name in Principal.model_fields if name != "claims"))

#: A principal as plain values: its fields, its claim names, and its claim values (arrays as tuples).
PrincipalParts = tuple[tuple[Any, ...], tuple[str, ...], tuple[Any, ...]]


def principal_parts(principal: Principal) -> PrincipalParts:
    """The principal as plain values, which the garbage collector stops tracking once it has seen them.

    Strings, numbers, datetimes and tuples of them are not containers the
    collector must visit, so a cached entry held this way costs a full
    collection nothing, where a principal object costs several visits. The
    claims are their layout's shared names and their values tuple, taken as
    they are from a principal built by the claim rules.
    """
    values = principal.__dict__
    claims = values["claims"]
    if type(claims) is not Claims:  # a principal built some other way (model_construct)
        claims = _claims_of(dict(claims))
    return _part_fields(values), claims._names, claims._values


def principal_from_parts(parts: PrincipalParts) -> Principal:
    """The principal again, equal to the one :func:`principal_parts` took apart; nothing is re-validated."""
    fields, names, claim_values = parts
    build: Callable[..., Principal] = verified_principal  # fields are in its order, claims last
    return build(*fields, _claims_from(names, claim_values))
