"""The API Gateway Lambda authorizer: an event in, a policy (or API Gateway's 401) out.

How each outcome reaches the client:

- **No token, or a bad, expired or revoked one.** REST (``TOKEN`` and
  ``REQUEST``): the function raises ``Exception("Unauthorized")``, the one
  error API Gateway turns into a 401 (any other becomes a 500). HTTP APIs
  have no such error: the authorizer answers a refusal (``isAuthorized``
  false, or a Deny of the whole API), and the client gets a 403. A request
  with no ``Authorization`` header at all never reaches the authorizer:
  API Gateway answers it 401 itself.
- **A valid token on a route it may not use**: a policy whose Deny covers
  that route; API Gateway answers 403 without calling the integration.
- **An outage** (no signing keys, the roles source or the revocation store
  unavailable): the function raises :class:`AuthorizerUnavailable`. API
  Gateway answers 500 (REST: the ``AUTHORIZER_FAILURE`` gateway response,
  which can be changed to a 503) and caches nothing, so the next request
  tries again. It is never an Allow, and never a Deny that would be cached.

Verification is :meth:`TokenVerifier.verify_sync`, the same pipeline every
other face uses; this module only translates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .._errors import AuthError, InvalidToken
from .._principal import Principal
from .._verifier import TokenVerifier
from ._context import principal_to_context
from ._events import AMBIGUOUS, read_authorizer_event
from ._policy import AuthorizerPolicy, RouteArn
from ._routes import Route

if TYPE_CHECKING:
    from .._roles import RolesCache

__all__ = ["AuthorizerUnavailable", "LambdaAuthorizer"]

logger = logging.getLogger("siot_authz")

#: The only error message API Gateway answers with a 401 (REST authorizers).
UNAUTHORIZED = "Unauthorized"


class AuthorizerUnavailable(Exception):
    """Raised out of the authorizer on an outage or a misconfiguration: API Gateway answers 500, caches nothing."""

    def __init__(self, code: str) -> None:
        # Only a code: the message ends up in API Gateway's and Lambda's logs.
        super().__init__(f"authorizer unavailable: {code}")
        self.code = code


class LambdaAuthorizer:
    """An API Gateway Lambda authorizer for REST (``TOKEN``, ``REQUEST``) and HTTP APIs (payload 2.0).

    ``routes`` lists what each route needs (see :class:`Route`); a route not
    listed needs a valid token when ``unlisted="authenticated"`` (what
    API Gateway's Cognito authorizer gives today), and is denied when
    ``unlisted="deny"``. Where patterns overlap (``/project/{id}`` also
    covers ``/project/1/devices`` in IAM), a Deny wins, as in IAM; but an
    Allow of ``/project/{id}`` under ``unlisted="deny"`` also allows an
    unlisted ``/project/1/devices``. List every route the authorizer
    guards, deeper ones included, so that each caller's policy covers them
    all and API Gateway's result cache never answers one route with
    another's decision.

    ``roles`` is the application's :class:`RolesCache`, needed when a route
    asks for roles; the roles are looked up once per invocation, only then.
    ``http_api_response`` picks the HTTP API response: ``"policy"`` (an IAM
    policy, cached per token like REST's) or ``"simple"`` (``isAuthorized``,
    which API Gateway caches per identity source for *every* route: with
    rules that differ by route, add ``$context.routeKey`` to the identity
    sources or turn caching off).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        routes: Iterable[Route] = (),
        *,
        unlisted: Literal["authenticated", "deny"] = "authenticated",
        roles: RolesCache | None = None,
        http_api_response: Literal["policy", "simple"] = "policy",
        header_name: str = "Authorization",
    ) -> None:
        """Check the configuration now, so a mistake fails the cold start and not a request."""
        self.verifier = verifier
        self.routes: tuple[Route, ...] = tuple(routes)
        if not all(isinstance(route, Route) for route in self.routes):
            raise TypeError("routes must be Route objects")
        if unlisted not in ("authenticated", "deny"):
            raise ValueError("unlisted must be 'authenticated' or 'deny'")
        if http_api_response not in ("policy", "simple"):
            raise ValueError("http_api_response must be 'policy' or 'simple'")
        self._needs_roles = any(route.needs_roles for route in self.routes)
        if self._needs_roles and roles is None:
            raise TypeError("a route requires roles: pass roles=RolesCache(source)")
        self.roles = roles
        self.unlisted = unlisted
        self.http_api_response = http_api_response
        self._header_name = header_name.lower()

    def __call__(self, event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
        """The Lambda entry point: ``handler = LambdaAuthorizer(...)`` and name ``handler`` in the function."""
        request = read_authorizer_event(event, self._header_name)
        if request is None:
            logger.error("authorizer_misconfigured: the event is not an API Gateway authorizer event")
            raise AuthorizerUnavailable("not_an_authorizer_event")
        try:
            arn = RouteArn.parse(request.route_arn)
        except ValueError:
            logger.error("authorizer_misconfigured: the event's route ARN is not an execute-api ARN")
            raise AuthorizerUnavailable("route_arn_unreadable") from None
        refusal: AuthError | None = None
        try:
            if request.token is AMBIGUOUS:
                raise InvalidToken()  # two Authorization headers that disagree
            principal = self.verifier.verify_sync(request.token)  # type: ignore[arg-type]  # None: MissingToken
            roles = self._roles_of(principal)
            policy = self.policy_for(principal, arn, roles)
        except AuthError as error:
            refusal = error
        if refusal is not None:
            return self._refused(refusal, request.kind, arn)
        is_allowed = policy.allows(request.route_arn)  # as sent: API Gateway matches the ARN it built
        if not is_allowed:
            # The path is the caller's: quoted and cut short, so it cannot forge log lines.
            route = f"{arn.method}/{arn.path}"
            logger.info("access_denied pool=%s route=%r", principal.user_pool_id, route[:128])
        answer: dict[str, Any] = {"context": principal_to_context(principal, roles)}
        if request.kind == "http" and self.http_api_response == "simple":
            answer["isAuthorized"] = is_allowed
        else:
            answer["principalId"] = principal.sub
            answer["policyDocument"] = policy.document()
        return answer

    def policy_for(
        self, principal: Principal, arn: RouteArn, roles: tuple[str, ...] | None = None
    ) -> AuthorizerPolicy:
        """Every route of ``arn``'s API and stage, allowed or denied for ``principal``; the same for any route called.

        Raises an :class:`AuthError` with a 5xx status when a route's check reports an outage.
        """
        allows_unlisted = self.unlisted == "authenticated"
        # With every route allowed, listing the allowed ones again only makes the policy
        # longer (API Gateway limits its size); the denials carry the decision.
        allowed: list[str] = [arn.every_route] if allows_unlisted else []
        denied: list[str] = []
        for route in self.routes:
            refusal = route.refusal(principal, roles)
            if refusal is not None and refusal.status_code >= 500:
                raise refusal
            resource = arn.resource(route.arn_method, route.arn_path)
            if refusal is not None:
                denied.append(resource)
                if not resource.endswith("*"):
                    # The ARN holds the path as sent, and "/project/" reaches the /project
                    # resource: deny that spelling too, or the Allow of every route covers it.
                    denied.append(resource + "/")
            elif not allows_unlisted:
                allowed.append(resource)
        return AuthorizerPolicy.of(allowed, denied)

    def _roles_of(self, principal: Principal) -> tuple[str, ...] | None:
        if not self._needs_roles:
            return None
        assert self.roles is not None
        return self.roles.roles_of_sync(principal)

    def _refused(self, error: AuthError, kind: str, arn: RouteArn) -> dict[str, Any]:
        if error.status_code >= 500:
            # Never an Allow, and not a Deny either: a Deny would be cached for the token's TTL.
            raise AuthorizerUnavailable(error.code)
        if kind != "http":
            raise Exception(UNAUTHORIZED)  # API Gateway matches this exact message
        if self.http_api_response == "simple":
            return {"isAuthorized": False}
        return {"principalId": "anonymous", "policyDocument": AuthorizerPolicy.deny_all(arn).document()}
