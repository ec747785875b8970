"""The example API behaves as the README promises, in process and as ``python -m examples.app``."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import loopback
from example_server import REPO_ROOT, run_example_app
from examples.app import create_app
from examples.app.__main__ import has_metrics, local_banner, main, websocket_library
from siot_authz import CognitoAuth
from siot_authz.cli import main as siot_authz_cli
from siot_authz.testing import LocalIssuer


@pytest.fixture
def api(issuer: LocalIssuer) -> Iterator[TestClient]:
    with TestClient(create_app(CognitoAuth(issuer.settings()))) as client:
        yield client


@pytest.fixture
def admin_token(issuer: LocalIssuer) -> str:
    return issuer.mint(username="ada", groups=["admin"])


@pytest.fixture
def user_token(issuer: LocalIssuer) -> str:
    return issuer.mint(username="bob")


def test_healthz_is_open(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/v1/me", "/v1/project", "/v1/device", "/v1/data?serial=x"])
def test_every_v1_route_refuses_a_request_without_token_in_simpleiot_shape(
    api: TestClient, path: str
) -> None:
    response = api.get(path)
    assert response.status_code == 401
    assert response.json() == {
        "status": "error",
        "message": "No bearer token was sent.",
        "code": "missing_token",
    }
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_refuses_garbage_token_with_invalid_token_challenge(api: TestClient) -> None:
    response = api.get("/v1/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
    assert response.json()["status"] == "error"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "not.a.jwt" not in response.text


@pytest.mark.parametrize("prefix", ["", "Bearer ", "bearer "])
def test_me_returns_the_principal_for_raw_and_bearer_tokens(
    api: TestClient, user_token: str, prefix: str
) -> None:
    body = api.get("/v1/me", headers={"Authorization": prefix + user_token}).json()
    assert body["status"] == "ok"
    assert body["principal"]["username"] == "bob"
    assert body["principal"]["token_use"] == "id"


def test_project_device_data_round_trip(api: TestClient, user_token: str, admin_token: str) -> None:
    user = {"Authorization": user_token}
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert api.post("/v1/project", json={"name": "greenhouse"}, headers=user).status_code == 201
    assert (
        api.post("/v1/device", json={"serial": "gh-1", "project": "greenhouse"}, headers=user).status_code
        == 201
    )
    assert (
        api.post("/v1/data", json={"serial": "gh-1", "name": "temp", "value": 21.5}, headers=user).status_code
        == 201
    )
    assert api.get("/v1/data?serial=gh-1", headers=user).json()["data"] == [{"name": "temp", "value": 21.5}]
    assert [p["name"] for p in api.get("/v1/project", headers=user).json()["projects"]] == ["greenhouse"]

    for path in ("/v1/data?serial=gh-1", "/v1/device?serial=gh-1", "/v1/project?name=greenhouse"):
        refused = api.delete(path, headers=user)
        assert refused.status_code == 403
        assert refused.json()["code"] == "missing_role"  # roles come from the app database (issue 9)
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
        assert api.delete(path, headers=admin).json()["status"] == "ok"


def test_not_found_and_bad_input_use_the_error_shape(api: TestClient, user_token: str) -> None:
    headers = {"Authorization": user_token}
    missing = api.post("/v1/device", json={"serial": "x", "project": "nope"}, headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {"status": "error", "message": "project 'nope' not found"}
    invalid = api.post("/v1/project", json={"nam": "typo"}, headers=headers)
    assert invalid.status_code == 422
    assert invalid.json()["status"] == "error"


def test_refuses_access_token_because_the_api_expects_id_tokens(api: TestClient, issuer: LocalIssuer) -> None:
    response = api.get("/v1/me", headers={"Authorization": issuer.mint(token_use="access")})
    assert response.status_code == 401
    assert response.json()["code"] == "token_use_mismatch"


def test_bad_config_file_exits_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"region": "us-west-2", "cognitoUserPoolId": "not a pool"}))
    assert main(["--config", str(config)]) == 2
    assert "bad configuration" in capsys.readouterr().err


@pytest.mark.parametrize(("websockets", "metrics"), [("websockets", True), (None, False), ("wsproto", False)])
def test_banner_prints_only_the_commands_that_work_here(
    issuer: LocalIssuer, websockets: str | None, metrics: bool
) -> None:
    # Issue 17: without a WebSocket library the stream fails like a bad token,
    # and without prometheus_client /metrics answers 501; the banner must say so, not offer them.
    banner = local_banner(issuer, "http://127.0.0.1:8123", websockets=websockets, metrics=metrics)
    assert ("/metrics" in banner) is metrics
    assert ("new WebSocket(" in banner) is (websockets is not None)
    if websockets is not None:  # pasteable as is: bob's own token, not a shell variable a console lacks
        user_token = re.search(r"export USER_TOKEN='([^']+)'", banner)
        assert user_token is not None
        assert f'["bearer", "{user_token.group(1)}"]' in banner
    assert ("pip install websockets" in banner) is (websockets is None)
    assert f"client id: {issuer.client_id}" in banner
    assert "ws://127.0.0.1:8123/v1/ws/data?serial=gh-1" in banner


def test_the_banner_detects_what_is_installed() -> None:
    import importlib.util

    assert has_metrics() is (importlib.util.find_spec("prometheus_client") is not None)
    assert websocket_library() in ("websockets", "wsproto")  # the test extra installs websockets


def test_python_m_examples_app_serves_the_printed_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
    with run_example_app(env) as app:
        tokens = dict(re.findall(r"export (ADMIN_TOKEN|USER_TOKEN)='([^']+)'", app.output))
        # The printed verify command works as printed (issue 17: no decoding aud, no four flags to find).
        verify_line = re.search(r"^\s*(siot-authz verify .*)$", app.output, re.MULTILINE)
        assert verify_line is not None
        argv = shlex.split(verify_line.group(1).replace('"$ADMIN_TOKEN"', tokens["ADMIN_TOKEN"]))
        assert siot_authz_cli(argv[1:]) == 0
        assert json.loads(capsys.readouterr().out)["username"] == "ada"
        admin = loopback.get(f"{app.base_url}/v1/me", headers={"Authorization": tokens["ADMIN_TOKEN"]})
        assert admin.json()["principal"]["groups"] == ["admin"]
        user = loopback.get(
            f"{app.base_url}/v1/me", headers={"Authorization": f"Bearer {tokens['USER_TOKEN']}"}
        )
        assert user.json()["principal"]["groups"] == []
        assert loopback.get(f"{app.base_url}/v1/me").status_code == 401
        assert admin.text.endswith("}\n")  # the shell prompt starts on its own line
        refused = loopback.get(f"{app.base_url}/v1/me")
        assert refused.text.endswith("}\n")
        assert int(refused.headers["Content-Length"]) == len(refused.content)
        assert json.loads(refused.text)["code"] == "missing_token"


def test_busy_port_fails_before_printing_any_token() -> None:
    # Issue 10: the banner used to hand out tokens, then fail to bind; the
    # tokens then went to whatever held the port.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "examples.app", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "--port" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "TOKEN" not in result.stdout + result.stderr
