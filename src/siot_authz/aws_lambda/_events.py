"""Reading API Gateway events: which kind an event is, its token, its route ARN and its authorizer context.

Events are plain dicts from AWS (or from whoever may invoke the function),
so every read here is defensive: a missing or mistyped field gives ``None``
or an empty mapping, never an exception that would turn into a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

__all__ = [
    "AuthorizerEvent",
    "AuthorizerEventKind",
    "authorization_header",
    "authorizer_context",
    "is_direct_invocation",
    "read_authorizer_event",
]

#: ``token``: REST TOKEN; ``request``: REST REQUEST (and HTTP API payload 1.0); ``http``: HTTP API payload 2.0.
AuthorizerEventKind = Literal["token", "request", "http"]


class _Ambiguous:
    """Marks a header sent twice under different cases: refused rather than picking one."""


AMBIGUOUS = _Ambiguous()


class AuthorizerEvent(NamedTuple):
    """What the authorizer needs from its event: the kind, the credential and the ARN of the route called."""

    kind: AuthorizerEventKind
    #: The Authorization value as sent (raw or ``Bearer``); None when absent; AMBIGUOUS when sent twice.
    token: str | _Ambiguous | None
    #: ``methodArn`` (REST) or ``routeArn`` (HTTP API 2.0).
    route_arn: str


def authorization_header(headers: object, name: str = "authorization") -> str | _Ambiguous | None:
    """The value of header ``name``, looked up case-insensitively (HTTP APIs lowercase names, REST keeps them).

    Two differently cased copies with different values are ambiguous: a
    proxy might read one and us the other, so neither is trusted.
    """
    if not isinstance(headers, Mapping):
        return None
    found: str | None = None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            if not isinstance(value, str):
                return AMBIGUOUS
            if found is not None and found != value:
                return AMBIGUOUS
            found = value
    return found


def read_authorizer_event(event: object, header_name: str = "authorization") -> AuthorizerEvent | None:
    """The authorizer's view of ``event``, or None when it is not an API Gateway authorizer event."""
    if not isinstance(event, Mapping):
        return None
    kind = event.get("type")
    if event.get("version") == "2.0" and kind == "REQUEST":
        arn = event.get("routeArn")
        token = authorization_header(event.get("headers"), header_name)
        return AuthorizerEvent("http", token, arn) if isinstance(arn, str) else None
    arn = event.get("methodArn")
    if not isinstance(arn, str):
        return None
    if kind == "TOKEN":
        raw = event.get("authorizationToken")
        return AuthorizerEvent("token", raw if isinstance(raw, str) else None, arn)
    if kind == "REQUEST":
        return AuthorizerEvent("request", authorization_header(event.get("headers"), header_name), arn)
    return None


def is_direct_invocation(event: object) -> bool:
    """True for an event API Gateway did not build: no ``requestContext`` (a Lambda-to-Lambda ``invoke``)."""
    return not isinstance(event, Mapping) or not isinstance(event.get("requestContext"), Mapping)


def authorizer_context(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Lambda authorizer's context in a proxy event; empty when there is none.

    REST APIs put the context's keys straight into ``requestContext.authorizer``
    (as strings); HTTP APIs (payload 2.0) nest them under ``lambda``.
    """
    request_context = event.get("requestContext")
    if not isinstance(request_context, Mapping):
        return {}
    authorizer = request_context.get("authorizer")
    if not isinstance(authorizer, Mapping):
        return {}
    nested = authorizer.get("lambda")
    if isinstance(nested, Mapping):
        return nested
    return authorizer
