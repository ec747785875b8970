"""SimpleIOT's API authorizer: siot_authz in place of API Gateway's Cognito authorizer.

Built once per cold start (module level), used for every invocation after.
Configuration comes from the environment (``SIOT_AUTHZ_*``, see
docs/configuration.md); with ``SIOT_AUTHZ_JWKS_FILE`` naming the pool's keys
bundled in the package, the first invocation opens no socket.
"""

from __future__ import annotations

import os

import roles_db

from siot_authz import AuthSettings, RolesCache, TokenVerifier
from siot_authz.aws_lambda import LambdaAuthorizer, Route
from siot_authz.revocation import RevocationBackend

#: Every route of the API and what it needs; any signed-in user may call the rest.
ROUTES = [
    Route("GET", "/project"),
    Route("DELETE", "/project", roles=["admin"]),
    Route("GET", "/device"),
    Route("DELETE", "/device", roles=["admin"]),
    Route("GET", "/me"),
]


def revocations() -> RevocationBackend | None:
    """Revocations shared with ``siot-authz revoke`` through Redis, when ``SIOT_EXAMPLE_REDIS_URL`` is set.

    A Lambda is frozen between invocations, so it looks entries up per token
    (with a short cache) instead of following Redis in the background.
    """
    url = os.environ.get("SIOT_EXAMPLE_REDIS_URL")
    if not url:
        return None  # in-process only: fine for one process, not for a fleet of Lambdas
    from siot_authz.revocation import RedisLookupRevocations

    return RedisLookupRevocations(
        url, cache_seconds=float(os.environ.get("SIOT_EXAMPLE_REVOCATION_CACHE", "5"))
    )


verifier = TokenVerifier(AuthSettings(), revocations=revocations())
roles = RolesCache(roles_db.roles_of, ttl_seconds=30)

#: REST (TOKEN or REQUEST) and HTTP API authorizers answering with an IAM policy.
handler = LambdaAuthorizer(verifier, ROUTES, roles=roles)

#: An HTTP API authorizer answering ``isAuthorized`` (its identity sources must include
#: ``$context.routeKey`` when caching is on: the answer differs by route).
simple_handler = LambdaAuthorizer(verifier, ROUTES, roles=roles, http_api_response="simple")
