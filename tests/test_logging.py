"""Every refusal is logged once, with its code, at a level the user picks; outages read as outages."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import loopback
from loopback import free_port
from siot_authz import CognitoAuth, Principal, TokenVerifier
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "siot_authz"]


@pytest.fixture
def protected(issuer: LocalIssuer) -> Iterator[tuple[TestClient, CognitoAuth]]:
    auth = CognitoAuth(issuer.settings(http_timeout_seconds=1.0))
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"user": principal.username}

    @app.get("/admin")
    async def admin(principal: Principal = Depends(auth.require_groups("admin"))) -> dict[str, str]:
        return {"user": principal.username}

    @app.get("/scoped")
    async def scoped(principal: Principal = Depends(auth.require_scopes("siot/write"))) -> dict[str, str]:
        return {"user": principal.username}

    with TestClient(app) as client:
        yield client, auth


@pytest.mark.parametrize(
    ("path", "headers", "status", "line"),
    [
        ("/me", {}, 401, "token_refused code=missing_token"),
        ("/me", {"Authorization": ""}, 401, "token_refused code=missing_token"),
        ("/me", {"Authorization": "Bearer"}, 401, "token_refused code=missing_token"),
        ("/me", {"Authorization": "garbage"}, 401, "token_refused code=token_malformed"),
        ("/admin", "valid", 403, "access_denied code=missing_group pool=us-east-1_LocalPool1"),
        ("/scoped", "valid", 403, "access_denied code=missing_scope pool=us-east-1_LocalPool1"),
    ],
    ids=["no-header", "blank", "bearer-alone", "garbage", "missing-group", "missing-scope"],
)
def test_each_refusal_is_logged_exactly_once_with_its_code(
    protected: tuple[TestClient, CognitoAuth],
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    headers: dict[str, str] | str,
    status: int,
    line: str,
) -> None:
    client, _ = protected
    sent = {"Authorization": issuer.mint()} if headers == "valid" else headers
    with caplog.at_level(logging.INFO, logger="siot_authz"):
        response = client.get(path, headers=sent)  # type: ignore[arg-type]

    assert response.status_code == status
    assert _lines(caplog) == [line]


def test_expired_token_is_logged_with_its_pool_and_no_trailing_space(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="siot_authz"), pytest.raises(Exception, match="token_expired"):
        verifier.verify_sync(issuer.mint(expires_in=-60))

    assert _lines(caplog) == ["token_refused code=token_expired pool=us-east-1_LocalPool1"]


def test_unknown_kid_is_logged_with_the_kid(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    verifier.verify_sync(issuer.mint())
    token = issuer.sign(issuer.claims(), header={"kid": "not-a-kid"})
    with caplog.at_level(logging.INFO, logger="siot_authz"), pytest.raises(Exception, match="kid_unknown"):
        verifier.verify_sync(token)

    assert _lines(caplog) == ["token_refused code=kid_unknown pool=us-east-1_LocalPool1 kid='not-a-kid'"]


def test_key_outage_is_logged_as_an_outage_at_warning(
    issuer: LocalIssuer, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_server.response = JwksResponse(status=503)
    verifier = TokenVerifier(issuer.settings(http_timeout_seconds=1.0))
    with (
        caplog.at_level(logging.INFO, logger="siot_authz"),
        pytest.raises(Exception, match="jwks_unavailable"),
    ):
        verifier.verify_sync(issuer.mint())

    records = [record for record in caplog.records if record.name == "siot_authz"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert (
        records[0].getMessage().startswith("keys_unavailable code=jwks_unavailable pool=us-east-1_LocalPool1")
    )
    assert "token_refused" not in caplog.text


@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING])
def test_refusal_level_is_the_users_choice(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    verifier = TokenVerifier(issuer.settings(), refusal_log_level=level)
    with (
        caplog.at_level(logging.DEBUG, logger="siot_authz"),
        pytest.raises(Exception, match="token_malformed"),
    ):
        verifier.verify_sync("not.a.token")

    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (level, "token_refused code=token_malformed")
    ]


def test_optional_auth_logs_nothing_for_an_anonymous_request(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    auth = CognitoAuth(issuer.settings(), auto_error=False)
    app = FastAPI()

    @app.get("/maybe")
    async def maybe(principal: Principal | None = Depends(auth)) -> dict[str, str | None]:
        return {"user": principal.username if principal else None}

    with caplog.at_level(logging.DEBUG, logger="siot_authz"), TestClient(app) as client:
        assert client.get("/maybe").json() == {"user": None}

    assert _lines(caplog) == []


def test_an_anonymous_request_to_an_authorizing_route_is_logged_once(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    auth = CognitoAuth(issuer.settings(), auto_error=False)
    app = FastAPI()

    @app.get("/admin")
    async def admin(principal: Principal = Depends(auth.require_groups("admin"))) -> dict[str, str]:
        return {"user": principal.username}

    with caplog.at_level(logging.INFO, logger="siot_authz"), TestClient(app) as client:
        assert client.get("/admin").status_code == 401

    assert _lines(caplog) == ["token_refused code=missing_token"]


# -- under real servers -----------------------------------------------------------------------

TESTS = Path(__file__).resolve().parent
DEPLOYMENT = TESTS.parent / "docs" / "deployment.md"


def documented_logging_json() -> str:
    """The first ```json block of docs/deployment.md's "Logging" section: what users save as logging.json."""
    section = DEPLOYMENT.read_text(encoding="utf-8").split("\n## Logging\n", 1)[1]
    return section.split("```json\n", 1)[1].split("\n```", 1)[0]


def _served_output(command: list[str], issuer: LocalIssuer, tmp_path: Path, *, expect: str | None) -> str:
    """Start ``command`` (a server for tests/served_app.py on ``{port}``), send one refused request, stop it; its output.

    With ``expect``, waits (bounded) for that text to appear before stopping,
    since a worker's log line may come just after its response.
    """
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("SIOT_AUTHZ_", "PROMETHEUS"))
    }
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # where gunicorn puts its control socket, rather than ~/.gunicorn
    env["SIOT_AUTHZ_TEST_SETTINGS"] = issuer.settings().model_dump_json(
        include={"region", "user_pool_id", "client_ids", "jwks_url"}
    )
    output = tmp_path / "server.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [part.format(port=port) for part in command],
            cwd=TESTS,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:  # until it serves, asking for something that logs no refusal
                assert process.poll() is None, output.read_text(errors="replace")
                assert time.monotonic() < deadline, "the server did not answer within 60 s"
                try:
                    loopback.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            response = loopback.get(
                f"http://127.0.0.1:{port}/me", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30
            )
            assert response.status_code == 401
            deadline = time.monotonic() + 10
            while expect is not None and expect not in output.read_text(errors="replace"):
                assert time.monotonic() < deadline, (
                    f"{expect!r} not logged:\n{output.read_text(errors='replace')}"
                )
                time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(timeout=20)
    return output.read_text(errors="replace")


UVICORN = [sys.executable, "-m", "uvicorn", "served_app:app", "--host", "127.0.0.1", "--port", "{port}"]
GUNICORN = [
    sys.executable,
    "-m",
    "gunicorn",
    "served_app:app",
    "-k",
    "uvicorn_worker.UvicornWorker",
    "-w",
    "1",
    "-b",
    "127.0.0.1:{port}",
]
REFUSAL_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+ INFO siot_authz token_refused code=token_malformed$", re.M
)


def test_plain_uvicorn_shows_no_refusal_line(issuer: LocalIssuer, tmp_path: Path) -> None:
    # Why the deployment docs give a logging configuration: without one, the line goes nowhere.
    output = _served_output(UVICORN, issuer, tmp_path, expect=None)

    assert "Application startup complete" in output  # uvicorn's own lines are captured
    assert "token_refused" not in output


@pytest.mark.parametrize(
    ("server", "option"),
    [(UVICORN, "--log-config"), (GUNICORN, "--log-config-json")],
    ids=["uvicorn", "gunicorn"],
)
def test_the_documented_logging_json_shows_each_refusal_in_the_servers_output(
    issuer: LocalIssuer, tmp_path: Path, server: list[str], option: str
) -> None:
    config = tmp_path / "logging.json"
    config.write_text(documented_logging_json(), encoding="utf-8")

    output = _served_output([*server, option, str(config)], issuer, tmp_path, expect="token_refused")

    assert len(REFUSAL_LINE.findall(output)) == 1, output
    assert "not-a-jwt" not in output
