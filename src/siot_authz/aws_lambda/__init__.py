"""API Gateway and Lambda: an authorizer, and a wrapper for proxy-integration handlers.

SimpleIOT's API is a REST API Gateway with one Python Lambda per resource.
This package brings siot_authz's verification, roles and revocation there:

- :class:`LambdaAuthorizer` answers API Gateway's authorizer events (REST
  ``TOKEN`` and ``REQUEST``, HTTP API payload 2.0) with a policy covering
  every route in :class:`Route` rules, and the principal in the context;
- :class:`LambdaAuth` wraps proxy handlers so each gets the caller's
  :class:`~siot_authz.Principal`, verified again or read from the context;
- :func:`principal_to_context` and :func:`principal_from_context` are the
  mapping between the two.

It imports nothing from FastAPI, Starlette, uvicorn or httpx, so a cold
start pays only for the verifier (see docs/lambda.md).
"""

from __future__ import annotations

from ._authorizer import AuthorizerUnavailable, LambdaAuthorizer
from ._context import ContextUnreadable, principal_from_context, principal_to_context
from ._handler import DirectInvocationRefused, LambdaAuth, refusal_response
from ._policy import AuthorizerPolicy, RouteArn
from ._routes import Route, RouteCheck

__all__ = [
    "AuthorizerPolicy",
    "AuthorizerUnavailable",
    "ContextUnreadable",
    "DirectInvocationRefused",
    "LambdaAuth",
    "LambdaAuthorizer",
    "Route",
    "RouteArn",
    "RouteCheck",
    "principal_from_context",
    "principal_to_context",
    "refusal_response",
]
