"""Proxy-integration handlers (REST payload 1.0, HTTP API 2.0) that receive a verified principal.

Three ways an event can be accepted, each chosen explicitly:

- :meth:`LambdaAuth.protect` (the default) verifies the ``Authorization``
  header itself, through the same pipeline as every other face: for
  functions with no authorizer, for defence in depth, or for per-route roles.
- :meth:`LambdaAuth.protect_trusting_authorizer_context` reads the
  principal a :class:`LambdaAuthorizer` put in the request's context and
  verifies nothing. It is only as safe as the guarantee that every event
  came through that authorizer (anyone allowed ``lambda:InvokeFunction``
  can hand the function any context).
- ``trust_direct_invocations=True`` lets events with no ``requestContext``
  through with no principal: Lambda-to-Lambda ``invoke`` calls, authorized
  only by IAM. Off by default, because every principal allowed to invoke
  the function then gets past this check.

Refusals are answered as proxy responses: the error's status, its
``WWW-Authenticate`` (or ``Retry-After``) header and a JSON body, the same
``{"detail": {"code", "message"}}`` the FastAPI integration sends.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import (
    AuthError,
    InsufficientPermissions,
    InvalidToken,
    MissingGroup,
    MissingRole,
    MissingScope,
    RolesUnavailable,
    TokenExpired,
)
from .._principal import Principal
from .._verifier import TokenVerifier
from ._context import ContextUnreadable, principal_from_context
from ._events import AMBIGUOUS, authorization_header, authorizer_context, is_direct_invocation

if TYPE_CHECKING:
    from .._roles import RolesCache

__all__ = ["DirectInvocationRefused", "LambdaAuth", "ProtectedHandler", "refusal_response"]

logger = logging.getLogger("siot_authz")

_R = TypeVar("_R")

#: A handler the wrapper calls: ``handler(event, context, principal)``; ``principal`` is None only for a
#: trusted direct invocation.
ProtectedHandler = Callable[[dict[str, Any], Any, Any], _R]


class DirectInvocationRefused(InsufficientPermissions):
    """Raised for an event with no ``requestContext`` when direct invocations are not trusted."""

    code = "direct_invocation_refused"
    reason = "This function only answers requests that come through API Gateway."


class AuthorizerContextMissing(InvalidToken):
    """Raised when a handler trusting the authorizer's context finds none it can read."""

    code = "authorizer_context_missing"
    reason = "The request carries no authorizer context."


def refusal_response(error: AuthError) -> dict[str, Any]:
    """``error`` as a proxy-integration response, valid for REST (1.0) and HTTP APIs (2.0)."""
    return {
        "statusCode": error.status_code,
        "headers": {"Content-Type": "application/json", **error.headers},
        "body": json.dumps({"detail": {"code": error.code, "message": error.detail}}),
    }


class LambdaAuth:
    """Wraps Lambda proxy handlers so that each one receives the caller's verified :class:`Principal`.

    ``verifier`` verifies tokens for :meth:`protect` (it may be None when
    only :meth:`protect_trusting_authorizer_context` is used); ``roles`` is
    the application's :class:`RolesCache` for ``require_roles``.
    """

    def __init__(
        self,
        verifier: TokenVerifier | None,
        *,
        roles: RolesCache | None = None,
        trust_direct_invocations: bool = False,
        header_name: str = "Authorization",
    ) -> None:
        """See the class docstring; ``trust_direct_invocations`` is explained in the module's."""
        self.verifier = verifier
        self.roles = roles
        self.trust_direct_invocations = trust_direct_invocations
        self._header_name = header_name.lower()

    def protect(
        self,
        *,
        require_groups: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
        require_roles: Sequence[str] = (),
    ) -> Callable[[ProtectedHandler[_R]], Callable[[dict[str, Any], Any], _R | dict[str, Any]]]:
        """A decorator that verifies the request's token and passes the principal as the third argument.

        ``require_groups``: at least one; ``require_scopes``: all;
        ``require_roles``: at least one, from ``roles`` (the handler then
        gets a ``RolesPrincipal``).
        """
        if self.verifier is None:
            raise TypeError("protect() verifies tokens: LambdaAuth needs a TokenVerifier")
        verifier = self.verifier
        header_name = self._header_name

        def verified_principal(event: Mapping[str, Any]) -> Principal:
            token = authorization_header(event.get("headers"), header_name)
            if token is AMBIGUOUS:
                raise InvalidToken()
            return verifier.verify_sync(token)  # type: ignore[arg-type]  # None: MissingToken

        return self._decorator(
            verified_principal, require_groups, require_scopes, require_roles, reads_context=False
        )

    def protect_trusting_authorizer_context(
        self,
        *,
        require_groups: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
        require_roles: Sequence[str] = (),
    ) -> Callable[[ProtectedHandler[_R]], Callable[[dict[str, Any], Any], _R | dict[str, Any]]]:
        """A decorator that reads the principal from the :class:`LambdaAuthorizer`'s context, verifying nothing.

        Use it only for functions that API Gateway reaches through that
        authorizer, and that nothing else may invoke with a made-up event.
        Roles come from the context when the authorizer looked them up, else from ``roles``.
        """

        def principal_of(event: Mapping[str, Any]) -> Principal:
            try:
                principal = principal_from_context(authorizer_context(event))
            except ContextUnreadable:
                raise AuthorizerContextMissing() from None
            # API Gateway's cached Allow can outlive the token it was given for.
            if principal.expires_at.timestamp() <= time.time():
                raise TokenExpired()
            return principal

        return self._decorator(
            principal_of, require_groups, require_scopes, require_roles, reads_context=True
        )

    def _decorator(
        self,
        principal_of: Callable[[Mapping[str, Any]], Principal],
        require_groups: Sequence[str],
        require_scopes: Sequence[str],
        require_roles: Sequence[str],
        *,
        reads_context: bool,
    ) -> Callable[[ProtectedHandler[_R]], Callable[[dict[str, Any], Any], _R | dict[str, Any]]]:
        groups, scopes, roles = (
            _names(kind, value)
            for kind, value in (
                ("require_groups", require_groups),
                ("require_scopes", require_scopes),
                ("require_roles", require_roles),
            )
        )
        # Verified principals carry no roles; read from a context they may (see _with_roles).
        if roles and self.roles is None and not reads_context:
            raise TypeError("require_roles needs a roles source: LambdaAuth(..., roles=RolesCache(source))")

        def decorate(handler: ProtectedHandler[_R]) -> Callable[[dict[str, Any], Any], _R | dict[str, Any]]:
            @functools.wraps(handler)
            def protected(event: dict[str, Any], context: Any) -> _R | dict[str, Any]:
                if is_direct_invocation(event):
                    if self.trust_direct_invocations:
                        return handler(event, context, None)
                    logger.info("token_refused code=%s", DirectInvocationRefused.code)
                    return refusal_response(DirectInvocationRefused())
                try:
                    principal = self._authorized(principal_of(event), groups, scopes, roles)
                except AuthError as error:
                    return refusal_response(error)
                return handler(event, context, principal)

            return protected

        return decorate

    def authorize(
        self,
        principal: Principal,
        *,
        require_groups: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
        require_roles: Sequence[str] = (),
    ) -> Principal:
        """``principal`` if it meets the requirements (with its roles when asked for), else an :class:`AuthError`.

        For per-route rules inside one function, such as the routes of an
        aws-lambda-powertools resolver; answer the error with :func:`refusal_response`.
        """
        return self._authorized(
            principal,
            _names("require_groups", require_groups),
            _names("require_scopes", require_scopes),
            _names("require_roles", require_roles),
        )

    def _authorized(
        self, principal: Principal, groups: tuple[str, ...], scopes: tuple[str, ...], roles: tuple[str, ...]
    ) -> Principal:
        refusal: InsufficientPermissions | None = None
        if groups and not principal.is_in_any_group(groups):
            refusal = MissingGroup()
        elif scopes and not principal.has_all_scopes(scopes):
            refusal = MissingScope()
        elif roles:
            principal = self._with_roles(principal)
            if set(roles).isdisjoint(principal.roles):  # type: ignore[attr-defined]
                refusal = MissingRole()
        if refusal is not None:
            logger.info("access_denied code=%s pool=%s", refusal.code, principal.user_pool_id)
            raise refusal
        return principal

    def _with_roles(self, principal: Principal) -> Principal:
        from .._roles import RolesPrincipal  # only for routes that ask for roles: it imports anyio

        if isinstance(principal, RolesPrincipal):
            return principal  # the authorizer looked them up and sent them in its context
        if self.roles is None:
            # A configuration error (an authorizer that sends no roles, and no source here): an outage, not a 403.
            logger.error(
                "roles_unavailable: the authorizer context has no roles and LambdaAuth has no roles source"
            )
            raise RolesUnavailable(pool=principal.user_pool_id)
        return RolesPrincipal.of(principal, self.roles.roles_of_sync(principal))


def _names(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{kind} must be a sequence of names, not a string")
    return tuple(names)
