"""SimpleIOT's ``iot_api_device`` shaped Lambda, behind the REQUEST and simple-response authorizers."""

from __future__ import annotations

import json
from typing import Any

from authorizer import roles, verifier

from siot_authz import Principal
from siot_authz.aws_lambda import LambdaAuth

auth = LambdaAuth(verifier, roles=roles)


@auth.protect()
def main(event: dict[str, Any], context: Any, principal: Principal) -> dict[str, Any]:
    """GET /device for anyone signed in; DELETE /device is refused at the authorizer unless admin."""
    body = {"devices": ["sensor-1"], "user": principal.username}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
