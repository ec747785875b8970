"""Every refusal is logged once, with its code, at a level the user picks; outages read as outages."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

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
