"""SimpleIOT's ``iot_dev_api_model`` shaped Lambda: called by other Lambdas directly, with made-up events.

Such an event has no ``requestContext`` and no token; IAM's
``lambda:InvokeFunction`` is what authorizes it. ``trust_direct_invocations``
says so explicitly: anything allowed to invoke this function gets in, so
grant that permission to the project function's role alone.
"""

from __future__ import annotations

from typing import Any

from siot_authz import Principal
from siot_authz.aws_lambda import LambdaAuth

internal = LambdaAuth(None, trust_direct_invocations=True)


@internal.protect_trusting_authorizer_context()
def main(event: dict[str, Any], context: Any, principal: Principal | None) -> dict[str, Any]:
    """Delete a project's models; ``principal`` is None for a direct (internal) call."""
    caller = "internal" if principal is None else principal.username
    return {"action": event.get("action"), "project": event.get("project"), "caller": caller}
