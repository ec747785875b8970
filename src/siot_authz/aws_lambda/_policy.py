"""IAM policies for API Gateway: the route ARN taken apart, route patterns, and the policy a caller gets.

API Gateway caches an authorizer's answer per token (``resultTtlInSeconds``,
300 s by default) and applies it to every route the token is then used on.
A policy naming only the route being called therefore answers the caller's
next, different route with a 403 until the cache expires. The policy built
here depends only on who the caller is, never on the route being called: it
names every route of the API, allowing those the caller may use and denying
the others, with the API id and stage read from the ARN of the event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = ["AuthorizerPolicy", "RouteArn", "arn_path_pattern"]

_ACTION = "execute-api:Invoke"
_ARN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})


# NamedTuples rather than dataclasses: a cold start pays a dataclass's code generation at import.
class RouteArn(NamedTuple):
    """``arn:<partition>:execute-api:<region>:<account>:<api id>/<stage>/<METHOD>/<path>``, taken apart."""

    partition: str
    region: str
    account: str
    api_id: str
    stage: str
    method: str
    path: str

    @classmethod
    def parse(cls, arn: str) -> RouteArn:
        """Take ``arn`` apart; ``ValueError`` when it is not an execute-api route ARN."""
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "execute-api":
            raise ValueError("not an execute-api ARN")
        pieces = parts[5].split("/", 3)
        if len(pieces) < 3 or not all(pieces[:3]):
            raise ValueError("the ARN names no API id, stage and method")
        if pieces[2] not in _ARN_METHODS:
            raise ValueError("the ARN's method is not an HTTP method")
        path = pieces[3] if len(pieces) == 4 else ""
        return cls(parts[1], parts[3], parts[4], pieces[0], pieces[1], pieces[2], path)

    def resource(self, method: str, path_pattern: str) -> str:
        """The ARN of ``method`` on ``path_pattern`` (no leading slash) in this ARN's API and stage."""
        return (
            f"arn:{self.partition}:execute-api:{self.region}:{self.account}:"
            f"{self.api_id}/{self.stage}/{method}/{path_pattern}"
        )

    @property
    def every_route(self) -> str:
        """The ARN matching every method and path of this ARN's API and stage."""
        return self.resource("*", "*")

    def __str__(self) -> str:
        return self.resource(self.method, self.path)


def arn_path_pattern(path: str) -> str:
    """An API Gateway resource path (``/project/{id}``, ``/{proxy+}``) as an ARN path pattern (``project/*``).

    IAM's ``*`` also matches ``/``, so ``/project/{id}`` covers deeper paths
    too. A Deny of such a pattern can only deny more (a Deny wins in IAM);
    an Allow of it also allows the deeper paths, listed or not.
    """
    segments = path.strip("/").split("/") if path.strip("/") else []
    return "/".join("*" if segment.startswith("{") else segment for segment in segments)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    # IAM resource matching: ``*`` is any run of characters (``/`` and line breaks included), ``?`` one.
    pieces = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(pieces), re.DOTALL)


def _matches(pattern: str, arn: str) -> bool:
    if "?" in pattern:
        return _compiled(pattern).fullmatch(arn) is not None
    # Only ``*``: the literal pieces in order, the first at the start and the last at the end.
    # Every policy here is of this kind; no regular expression is compiled on a cold start.
    first, *middle_and_last = pattern.split("*")
    if not middle_and_last:
        return arn == pattern
    *middle, last = middle_and_last
    if not arn.startswith(first) or len(arn) < len(first) + len(last) or not arn.endswith(last):
        return False
    position, end = len(first), len(arn) - len(last)
    for piece in middle:
        found = arn.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


class AuthorizerPolicy(NamedTuple):
    """An authorizer's IAM policy: resources allowed and resources denied, evaluated as IAM does."""

    allowed: tuple[str, ...]
    denied: tuple[str, ...]

    @classmethod
    def deny_all(cls, arn: RouteArn) -> AuthorizerPolicy:
        """Nothing in this API and stage."""
        return cls((), (arn.every_route,))

    @classmethod
    def of(cls, allowed: Iterable[str], denied: Iterable[str]) -> AuthorizerPolicy:
        """A policy from resource ARNs, each listed once, in the order first given."""
        return cls(tuple(dict.fromkeys(allowed)), tuple(dict.fromkeys(denied)))

    def allows(self, arn: str) -> bool:
        """What API Gateway will decide for ``arn``: an explicit Deny wins, then an Allow, else denied."""
        if any(_matches(pattern, arn) for pattern in self.denied):
            return False
        return any(_matches(pattern, arn) for pattern in self.allowed)

    def document(self) -> dict[str, Any]:
        """The ``policyDocument`` API Gateway expects."""
        statements = [
            {"Action": _ACTION, "Effect": effect, "Resource": list(resources)}
            for effect, resources in (("Allow", self.allowed), ("Deny", self.denied))
            if resources
        ]
        return {"Version": "2012-10-17", "Statement": statements}
