"""The Lambda path on a cold start: no web framework imported, and no socket opened with bundled keys.

Each test runs a fresh interpreter, as a Lambda cold start does, so that
what this test session already imported cannot hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from siot_authz.testing import LocalIssuer
from spare_keys import spare_key

# An audit hook refuses every socket before any siot_authz import: a fetch, a DNS lookup or a
# connection to a revocation store would all have to create one first.
_NO_SOCKETS = """
import sys

def _no_sockets(event, args):
    if event.startswith("socket."):
        print(f"socket blocked: {event}", file=sys.stderr)
        raise RuntimeError(f"a socket was used: {event}")

sys.addaudithook(_no_sockets)
"""

_COLD_START = """
import json, os, sys
from siot_authz import AuthSettings, TokenVerifier
from siot_authz.aws_lambda import LambdaAuth, LambdaAuthorizer, Route

verifier = TokenVerifier(AuthSettings())
authorizer = LambdaAuthorizer(verifier, [Route("DELETE", "/project", groups=["admins"])])
event = {"type": "TOKEN", "authorizationToken": os.environ["TEST_TOKEN"],
         "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/GET/project"}
answer = authorizer(event)

@LambdaAuth(verifier).protect()
def handler(event, context, principal):
    return {"statusCode": 200, "body": principal.username}

response = handler({"headers": {"authorization": os.environ["TEST_TOKEN"]}, "requestContext": {}}, None)
# cryptography's OpenSSL backend module is what python-jose's default key backend imports (2 ms).
heavy = sorted(
    name
    for name in ("fastapi", "starlette", "uvicorn", "httpx", "anyio", "cryptography.hazmat.backends.openssl")
    if name in sys.modules
)
print(json.dumps({"effects": [s["Effect"] for s in answer["policyDocument"]["Statement"]],
                  "status": response["statusCode"], "user": response["body"], "heavy": heavy}))
"""


def run_cold(tmp_path: Path, issuer: LocalIssuer, program: str) -> subprocess.CompletedProcess[str]:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(issuer.jwks()), encoding="utf-8")
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("SIOT_AUTHZ_", "PYTEST_"))
    }
    env.update(
        {
            "SIOT_AUTHZ_REGION": issuer.region,
            "SIOT_AUTHZ_USER_POOL_ID": issuer.user_pool_id,
            "SIOT_AUTHZ_CLIENT_IDS": issuer.client_id,
            "SIOT_AUTHZ_JWKS_FILE": str(jwks_file),
            "TEST_TOKEN": issuer.mint(username="bob"),
        }
    )
    return subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_cold_start_imports_no_web_framework_and_opens_no_socket(tmp_path: Path) -> None:
    # The key URL is Cognito's real one (the default): any fetch would have to open a socket.
    with LocalIssuer(key=spare_key(0)) as issuer:
        result = run_cold(tmp_path, issuer, _NO_SOCKETS + _COLD_START)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "socket blocked" not in result.stderr
    assert json.loads(result.stdout) == {
        "effects": ["Allow", "Deny"],
        "status": 200,
        "user": "bob",
        "heavy": [],
    }


def test_the_socket_guard_catches_a_fetch(tmp_path: Path) -> None:
    # The guard itself: with no bundled keys the verifier must fetch, and the guard must stop it.
    program = _NO_SOCKETS + _COLD_START.replace("AuthSettings()", "AuthSettings(jwks_file=None)")
    with LocalIssuer(key=spare_key(0)) as issuer:
        result = run_cold(tmp_path, issuer, program)

    assert result.returncode != 0
    assert "socket blocked" in result.stderr
    assert "AuthorizerUnavailable: authorizer unavailable: jwks_unavailable" in result.stderr
