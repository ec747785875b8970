"""The principal as an authorizer context, and back.

API Gateway passes an authorizer's ``context`` to the integration, but only
flat string, number and boolean values, and REST APIs turn every value into
a string on the way. Lists are therefore sent as JSON text (group and role
names may contain commas or spaces; scopes may not, so they are joined with
spaces as in the token), times as whole Unix seconds.

Reading back gives a :class:`Principal` whose ``claims`` hold only what the
context carried; the token itself never reaches the handler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._principal import Principal, verified_principal

if TYPE_CHECKING:
    from .._roles import RolesPrincipal

__all__ = ["ContextUnreadable", "principal_from_context", "principal_to_context"]

ContextValue = str | int | bool


class ContextUnreadable(ValueError):
    """Raised when an authorizer context does not hold a principal written by :func:`principal_to_context`."""


def principal_to_context(
    principal: Principal, roles: tuple[str, ...] | None = None
) -> dict[str, ContextValue]:
    """``principal`` as flat context values; ``roles`` are included when the authorizer looked them up."""
    context: dict[str, ContextValue] = {
        "sub": principal.sub,
        "username": principal.username,
        "user_pool_id": principal.user_pool_id,
        "issuer": principal.issuer,
        "client_id": principal.client_id,
        "token_use": principal.token_use,
        "groups": json.dumps(list(principal.groups)),
        "scopes": " ".join(principal.scopes),
        "issued_at": int(principal.issued_at.timestamp()),
        "expires_at": int(principal.expires_at.timestamp()),
    }
    if principal.email is not None:
        context["email"] = principal.email
    if roles is not None:
        context["roles"] = json.dumps(list(roles))
    return context


def _text(context: Mapping[str, Any], name: str) -> str:
    value = context.get(name)
    if not isinstance(value, str) or not value:
        raise ContextUnreadable(f"the authorizer context has no {name}")
    return value


def _seconds(context: Mapping[str, Any], name: str) -> int:
    value = context.get(name)
    if isinstance(value, bool):
        raise ContextUnreadable(f"the authorizer context's {name} is not a time")
    # ASCII digits only, and few enough for int(): "\u00b2" passes isdigit() and a
    # 5,000-digit string passes both, yet int() raises a plain ValueError for each.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    if isinstance(value, int):
        return value
    raise ContextUnreadable(f"the authorizer context's {name} is not a time")


def _names(context: Mapping[str, Any], name: str) -> tuple[str, ...]:
    try:
        names = json.loads(_text(context, name))
    except (json.JSONDecodeError, RecursionError):  # "[[[[..." nested past the recursion limit
        raise ContextUnreadable(f"the authorizer context's {name} is not a JSON list") from None
    if not isinstance(names, list) or not all(isinstance(item, str) for item in names):
        raise ContextUnreadable(f"the authorizer context's {name} is not a list of names")
    return tuple(names)


def principal_from_context(context: Mapping[str, Any]) -> Principal | RolesPrincipal:
    """The principal an authorizer put in ``context``; a ``RolesPrincipal`` when it carried roles.

    Every field is checked here, so the principal is built without pydantic's
    validator (which a cold start would pay to compile). Raises
    :class:`ContextUnreadable` when a field is missing or malformed.
    """
    issued_at = _seconds(context, "issued_at")
    expires_at = _seconds(context, "expires_at")
    token_use = _text(context, "token_use")
    if token_use not in ("id", "access"):
        raise ContextUnreadable("the authorizer context's token_use is neither id nor access")
    scopes = context.get("scopes", "")
    if not isinstance(scopes, str):
        raise ContextUnreadable("the authorizer context's scopes are not text")
    email = context.get("email")
    sub = _text(context, "sub")
    issuer = _text(context, "issuer")
    try:
        issued, expires = datetime.fromtimestamp(issued_at, UTC), datetime.fromtimestamp(expires_at, UTC)
    except (OverflowError, OSError, ValueError):
        raise ContextUnreadable("the authorizer context's times are out of range") from None
    principal = verified_principal(
        sub,
        _text(context, "username"),
        _names(context, "groups"),
        tuple(scopes.split()),
        token_use,  # type: ignore[arg-type]  # checked above
        _text(context, "client_id"),
        email if isinstance(email, str) and email else None,
        issuer,
        _text(context, "user_pool_id"),
        issued,
        expires,
        # What the context carried, under the claim names a token has them.
        {"sub": sub, "iss": issuer, "token_use": token_use, "iat": issued_at, "exp": expires_at},
    )
    if "roles" not in context:
        return principal
    from .._roles import RolesPrincipal  # only when roles were sent: it imports anyio

    return RolesPrincipal.of(principal, tuple(sorted(set(_names(context, "roles")))))
