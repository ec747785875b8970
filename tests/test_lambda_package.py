"""A Lambda deployment zip built from the wheel runs the example's functions with nothing else on the path.

docs/lambda.md builds the zip with ``pip install --platform ... --only-binary=:all:
--target``, which downloads wheels for Lambda's platform. This test builds the
same layout for this machine with no download: the wheel goes in with
``pip install --no-deps --no-index --target``, and its dependencies are
copied from this environment's installed distributions (the files pip
recorded for each). The zip is then unpacked elsewhere and a fresh
interpreter, without site-packages and with sockets refused, imports the
functions from it alone and answers an authorizer event and a proxy request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lambda_package import build_function_zip
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key

_RUN = """
import sys

def _no_sockets(event, args):
    if event.startswith("socket."):
        raise RuntimeError(f"a socket was used: {event}")

sys.addaudithook(_no_sockets)
sys.path[:0] = [sys.argv[1]]  # the unpacked zip, as Lambda puts /var/task first
import json, os
import roles_db
roles_db.seed({"ada": ["admin"], "bob": ["member"]})
import authorizer, project

token = os.environ["TEST_TOKEN"]
arn = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/DELETE/project"
answer = authorizer.handler({"type": "TOKEN", "authorizationToken": token, "methodArn": arn})
event = {"httpMethod": "DELETE", "headers": {"Authorization": token}, "requestContext": {"stage": "prod"}}
response = project.main(event, None)
import siot_authz
print(json.dumps({
    "effects": [s["Effect"] for s in answer["policyDocument"]["Statement"]],
    "status": response["statusCode"],
    "from_zip": siot_authz.__file__.startswith(sys.argv[1]),
    "site": [p for p in sys.path if "site-packages" in p],
}))
"""


@pytest.fixture(scope="module")
def function_zip(tmp_path_factory: pytest.TempPathFactory, built_dist: Path) -> Path:
    (wheel,) = built_dist.glob("siot_authz-*.whl")
    return build_function_zip(tmp_path_factory.mktemp("package"), wheel)


def test_the_zip_runs_the_functions_alone_with_no_socket(function_zip: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "task"
    with zipfile.ZipFile(function_zip) as zipped:
        zipped.extractall(unpacked)
    with LocalIssuer(key=spare_key(0)) as issuer:
        (unpacked / "jwks.json").write_text(json.dumps(issuer.jwks()), encoding="utf-8")
        env = {
            "PATH": "/usr/bin:/bin",
            "SIOT_AUTHZ_REGION": issuer.region,
            "SIOT_AUTHZ_USER_POOL_ID": issuer.user_pool_id,
            "SIOT_AUTHZ_CLIENT_IDS": issuer.client_id,
            "SIOT_AUTHZ_JWKS_FILE": str(unpacked / "jwks.json"),
            "SIOT_EXAMPLE_ROLES_DB": str(tmp_path / "roles.sqlite3"),
            "TEST_TOKEN": issuer.mint(username="ada"),
        }
        # -S: no site-packages, so only the zip's contents (and the standard library) can be imported.
        result = subprocess.run(
            [sys.executable, "-S", "-c", _RUN, str(unpacked)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {"effects": ["Allow"], "status": 200, "from_zip": True, "site": []}
    print(f"function.zip for this machine: {function_zip.stat().st_size / 2**20:.1f} MiB")
