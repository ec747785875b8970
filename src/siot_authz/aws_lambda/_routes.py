"""Route rules for the authorizer, in the FastAPI integration's words: groups, scopes, roles and a check.

A rule says what a caller needs for one method on one resource path. The
authorizer weighs every rule for each caller, so the same vocabulary that
guards a FastAPI route (``require_groups``, ``require_scopes``,
``require_roles``, ``check``) guards an API Gateway route.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence

from .._errors import AuthError, CheckFailed, InsufficientPermissions, MissingGroup, MissingRole, MissingScope
from .._principal import Principal
from ._policy import arn_path_pattern

__all__ = ["Route", "RouteCheck"]

logger = logging.getLogger("siot_authz")

#: A route's own rule: True lets the caller in; False or an :class:`InsufficientPermissions` keeps them out.
RouteCheck = Callable[[Principal], bool]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "ANY", "*"})


class RouteCheckRefused(InsufficientPermissions):
    """Raised when a route's ``check`` refuses a caller whose token is valid."""

    code = "route_check_failed"
    reason = "The caller is not allowed to use this route."


class Route:
    """What a caller needs to call ``method`` on ``path`` (an API Gateway resource path, ``{id}`` allowed).

    ``groups``: at least one of these Cognito groups; ``scopes``: every one
    of these scopes; ``roles``: at least one of these application roles
    (from the authorizer's roles source); ``check``: the application's own
    rule. A route with none of them needs a valid token only.
    """

    # A plain class: a dataclass would cost every cold start its code generation.
    __slots__ = ("check", "groups", "method", "path", "roles", "scopes")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        groups: Sequence[str] = (),
        scopes: Sequence[str] = (),
        roles: Sequence[str] = (),
        check: RouteCheck | None = None,
    ) -> None:
        """Check the rule now, so a typo fails the cold start instead of opening or closing a route."""
        if method.upper() not in _METHODS:
            raise ValueError(f"unknown HTTP method {method!r}")
        if not path.startswith("/"):
            raise ValueError("a route path starts with '/'")
        if check is not None and _is_async_callable(check):
            # Never awaited here, its coroutine would be a true value: every caller let in.
            raise TypeError("a route check must be a plain function returning True or False, not async")
        self.method = method.upper()
        self.path = path
        self.groups = _names("groups", groups)
        self.scopes = _names("scopes", scopes)
        self.roles = _names("roles", roles)
        self.check = check

    def __repr__(self) -> str:
        needs = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in ("groups", "scopes", "roles") if getattr(self, name)
        )
        return f"Route({self.method!r}, {self.path!r}{', ' + needs if needs else ''})"

    @property
    def arn_method(self) -> str:
        """The method as it appears in an ARN (``ANY`` is ``*``)."""
        return "*" if self.method in ("ANY", "*") else self.method

    @property
    def arn_path(self) -> str:
        """The path as an ARN pattern (see :func:`arn_path_pattern`)."""
        return arn_path_pattern(self.path)

    @property
    def needs_roles(self) -> bool:
        """True when deciding this route needs the caller's roles."""
        return bool(self.roles)

    def refusal(self, principal: Principal, roles: tuple[str, ...] | None) -> AuthError | None:
        """Why ``principal`` (with ``roles``) may not call this route, or None when they may.

        A check that raises anything but an :class:`AuthError` refuses (the
        cause is logged by type): a bug in a rule must not open a route.
        A check raising an outage (a 503 error) is returned as it is, for
        the authorizer to answer as an outage.
        """
        if self.groups and not principal.is_in_any_group(self.groups):
            return MissingGroup()
        if self.scopes and not principal.has_all_scopes(self.scopes):
            return MissingScope()
        if self.roles and (roles is None or set(self.roles).isdisjoint(roles)):
            return MissingRole()
        if self.check is None:
            return None
        bug = None
        try:
            answer = self.check(principal)
            if inspect.isawaitable(answer):
                # A plain function that returned a coroutine: not an answer, and never a true one.
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
                bug = "awaitable"
            elif answer:
                return None
            else:
                return RouteCheckRefused()
        except (InsufficientPermissions, CheckFailed) as refused:
            return refused
        except AuthError as error:
            return error
        except Exception as exc:
            bug = type(exc).__name__
        logger.error("route_check_raised type=%s method=%s path=%s", bug, self.method, self.path)
        return RouteCheckRefused()


def _is_async_callable(check: object) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(check):
        return True
    return not inspect.isroutine(check) and inspect.iscoroutinefunction(type(check).__call__)


def _names(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):  # ("admin") is a string, not a tuple: say so instead of splitting it
        raise TypeError(f"{kind} must be a sequence of names, not a string")
    return tuple(names)
