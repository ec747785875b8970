"""SimpleIOT's ``iot_api_project`` shaped Lambda: one function per resource, dispatching on the method.

The authorizer already let the request in; each handler verifies the token
again (defence in depth, and the per-method roles), and ``me`` shows the
other way: reading the principal the authorizer put in its context.
"""

from __future__ import annotations

import json
from typing import Any

import model
from authorizer import roles, verifier

from siot_authz import Principal
from siot_authz.aws_lambda import LambdaAuth

auth = LambdaAuth(verifier, roles=roles)


def _ok(body: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def _method(event: dict[str, Any]) -> str | None:
    request_context = event.get("requestContext") or {}
    return event.get("httpMethod") or (request_context.get("http") or {}).get("method")


@auth.protect()
def list_projects(event: dict[str, Any], context: Any, principal: Principal) -> dict[str, Any]:
    """GET /project: any signed-in user."""
    return _ok({"projects": ["demo"], "user": principal.username})


@auth.protect(require_roles=["admin"])
def delete_project(event: dict[str, Any], context: Any, principal: Principal) -> dict[str, Any]:
    """DELETE /project: the ``admin`` role in the example's database; its models go too (an internal call)."""
    # On AWS: boto3.client("lambda").invoke(FunctionName=..., Payload=json.dumps(internal_event)).
    models = model.main({"action": "delete_models", "project": "demo"}, context)
    return _ok({"deleted": "demo", "models": models, "by": principal.username})


def main(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point, as SimpleIOT's ``main.py`` files have it."""
    method = _method(event)
    if method == "DELETE":
        return delete_project(event, context)
    return list_projects(event, context)  # also refuses a direct invocation, which carries no method


@auth.protect_trusting_authorizer_context()
def me(event: dict[str, Any], context: Any, principal: Principal) -> dict[str, Any]:
    """GET /me: who the authorizer said the caller is, with no second verification."""
    return _ok(
        {
            "sub": principal.sub,
            "username": principal.username,
            "groups": list(principal.groups),
            "roles": list(getattr(principal, "roles", ())),
            "token_use": principal.token_use,
        }
    )
