"""The example API's own database and what it shows: roles from SQLite, readiness, metrics, WebSockets, revocation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect

import examples.app.api as example_api
import loopback
from example_server import free_port, run_example_app
from examples.app import create_app
from examples.app.database import Database
from siot_authz import CognitoAuth
from siot_authz.testing import LocalIssuer, make_principal
from spare_keys import spare_key


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(tmp_path / "example.sqlite3")
    db.seed_demo_users()
    yield db
    db.close()


@pytest.fixture
def auth(issuer: LocalIssuer) -> CognitoAuth:
    return CognitoAuth(issuer.settings())


@pytest.fixture
def api(auth: CognitoAuth, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(auth, database=database)) as client:
        yield client


def as_user(issuer: LocalIssuer, username: str) -> dict[str, str]:
    return {"Authorization": issuer.mint(username=username)}


@pytest.mark.parametrize(
    ("username", "roles"),
    [("ada", ["admin"]), ("bob", ["member"]), ("stranger", [])],
)
def test_roles_come_from_the_user_and_role_tables(
    database: Database, username: str, roles: list[str]
) -> None:
    assert database.roles_of(make_principal(username)) == roles


def test_any_role_marked_is_admin_counts_as_admin(database: Database) -> None:
    database.add_user("carol", ("owner", True), ("member", False))
    assert database.roles_of(make_principal("carol")) == ["admin", "member", "owner"]


def test_seeding_twice_changes_nothing(database: Database) -> None:
    database.seed_demo_users()
    assert database.roles_of(make_principal("ada")) == ["admin"]


def test_admin_routes_use_roles_from_the_database_not_cognito_groups(
    api: TestClient, issuer: LocalIssuer
) -> None:
    api.post("/v1/project", json={"name": "greenhouse"}, headers=as_user(issuer, "bob"))
    # bob claims the Cognito group, but the database says he is no admin.
    bob_in_group = {"Authorization": issuer.mint(username="bob", groups=["admin"])}
    refused = api.delete("/v1/project?name=greenhouse", headers=bob_in_group)
    assert refused.status_code == 403
    assert refused.json() == {
        "status": "error",
        "message": "The caller does not have a role this route requires.",
        "code": "missing_role",
    }
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    assert api.delete("/v1/project?name=greenhouse", headers=as_user(issuer, "ada")).json()["status"] == "ok"


def test_me_roles_shows_the_database_roles(api: TestClient, issuer: LocalIssuer) -> None:
    body = api.get("/v1/me/roles", headers=as_user(issuer, "ada")).json()
    assert body == {"status": "ok", "username": "ada", "roles": ["admin"]}


def test_a_promotion_in_the_database_counts_once_the_cache_forgets_it(
    api: TestClient, auth: CognitoAuth, database: Database, issuer: LocalIssuer
) -> None:
    api.post("/v1/project", json={"name": "barn"}, headers=as_user(issuer, "ada"))
    bob = as_user(issuer, "bob")
    assert api.delete("/v1/project?name=barn", headers=bob).status_code == 403
    database.add_user("bob", ("admin", True))
    assert (
        api.delete("/v1/project?name=barn", headers=bob).status_code == 403
    )  # cached for RolesCache's ttl_seconds
    principal = api.get("/v1/me", headers=bob).json()["principal"]
    assert auth.roles is not None
    auth.roles.forget(principal["user_pool_id"], principal["sub"])
    assert api.delete("/v1/project?name=barn", headers=bob).json()["status"] == "ok"


def test_a_database_file_keeps_its_records_between_runs(issuer: LocalIssuer, tmp_path: Path) -> None:
    path = tmp_path / "kept.sqlite3"
    with TestClient(create_app(issuer.settings(), database=path)) as first:
        first.post("/v1/project", json={"name": "orchard"}, headers=as_user(issuer, "bob"))
    with TestClient(create_app(issuer.settings(), database=str(path))) as second:
        projects = second.get("/v1/project", headers=as_user(issuer, "bob")).json()["projects"]
    assert projects == [{"name": "orchard", "desc": "", "owner": "bob"}]


def test_a_database_the_app_opened_is_closed_and_its_temporary_folder_removed_at_shutdown(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Database] = []

    class RecordingDatabase(Database):
        def __init__(self, path: str | Path | None = None) -> None:
            super().__init__(path)
            opened.append(self)

    monkeypatch.setattr(example_api, "Database", RecordingDatabase)
    with TestClient(create_app(issuer.settings())) as client:
        assert client.get("/v1/me/roles", headers=as_user(issuer, "ada")).json()["roles"] == ["admin"]
        assert opened[0].path.exists()
    assert not opened[0].path.parent.exists()


def test_readyz_is_200_with_keys_and_503_without(issuer: LocalIssuer, database: Database) -> None:
    with TestClient(create_app(issuer.settings(), database=database)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    assert ready.json()["health"]["is_ready"] is True
    unreachable = issuer.settings(
        jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", http_timeout_seconds=0.5
    )
    with TestClient(create_app(unreachable, database=database)) as client:
        not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "error"
    assert not_ready.json()["health"]["pools"][0]["keys"]["has_keys"] is False


def test_metrics_are_served_in_prometheus_format(issuer: LocalIssuer, database: Database) -> None:
    pytest.importorskip("siot_authz.metrics")  # needs prometheus_client too
    with TestClient(create_app(issuer.settings(), database=database)) as client:
        client.get("/v1/me", headers=as_user(issuer, "ada"))
        client.get("/v1/me", headers={"Authorization": "Bearer not.a.jwt"})
        scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "siot_authz_" in scraped.text
    assert "token_malformed" in scraped.text


def test_metrics_without_prometheus_client_answer_501_with_the_install_hint(
    issuer: LocalIssuer, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example_api, "_prometheus_metrics", lambda: None)
    with TestClient(create_app(issuer.settings(), database=database)) as client:
        response = client.get("/metrics")
    assert response.status_code == 501
    assert response.json() == {"status": "error", "message": example_api.METRICS_HINT}
    assert "pip install 'siot-authz[prometheus]'" in example_api.METRICS_HINT


def test_websocket_streams_a_devices_data_to_a_bearer_subprotocol_client(
    api: TestClient, issuer: LocalIssuer
) -> None:
    bob = as_user(issuer, "bob")
    api.post("/v1/project", json={"name": "greenhouse"}, headers=bob)
    api.post("/v1/device", json={"serial": "gh-1", "project": "greenhouse"}, headers=bob)
    api.post("/v1/data", json={"serial": "gh-1", "name": "temp", "value": 21.5}, headers=bob)
    token = issuer.mint(username="bob")
    with api.websocket_connect("/v1/ws/data?serial=gh-1", subprotocols=["bearer", token]) as ws:
        assert ws.accepted_subprotocol == "bearer"
        assert ws.receive_json() == {"serial": "gh-1", "data": {"name": "temp", "value": 21.5}}
        api.post("/v1/data", json={"serial": "gh-1", "name": "door", "value": "open"}, headers=bob)
        assert ws.receive_json() == {"serial": "gh-1", "data": {"name": "door", "value": "open"}}


@pytest.mark.parametrize(
    ("path", "subprotocols"),
    [
        ("/v1/ws/data?serial=gh-1", []),
        ("/v1/ws/data?serial=gh-1", ["bearer", "not.a.jwt"]),
        ("/v1/ws/data?serial=nope", None),
    ],
    ids=["no token", "bad token", "unknown device"],
)
def test_websocket_refusals_never_open(
    api: TestClient, issuer: LocalIssuer, path: str, subprotocols: list[str] | None
) -> None:
    offer = subprotocols if subprotocols is not None else ["bearer", issuer.mint(username="bob")]
    with pytest.raises(WebSocketDisconnect) as refused, api.websocket_connect(path, subprotocols=offer):
        pass
    assert refused.value.code == 1008


def test_an_admin_revokes_a_users_tokens(api: TestClient, issuer: LocalIssuer) -> None:
    bob = as_user(issuer, "bob")
    bob_sub = api.get("/v1/me", headers=bob).json()["principal"]["sub"]
    refused = api.post("/v1/admin/revoke", json={"sub": bob_sub}, headers=bob)
    assert refused.status_code == 403
    revoked = api.post("/v1/admin/revoke", json={"sub": bob_sub}, headers=as_user(issuer, "ada"))
    assert revoked.status_code == 200
    assert revoked.json()["revocation"]["subject"] == bob_sub
    assert revoked.json()["revocation"]["kind"] == "user"
    after = api.get("/v1/me", headers=bob)
    assert after.status_code == 401
    assert after.json()["code"] == "token_revoked"


def test_an_admin_revokes_only_in_their_own_pool(api: TestClient, issuer: LocalIssuer) -> None:
    response = api.post(
        "/v1/admin/revoke",
        json={"sub": "someone", "user_pool_id": "eu-west-1_NotOurs"},  # the extra field is ignored
        headers=as_user(issuer, "ada"),
    )
    assert response.status_code == 200
    assert response.json()["revocation"]["user_pool_id"] == issuer.user_pool_id


def test_a_same_named_user_of_another_pool_gets_none_of_the_teams_roles(tmp_path: Path) -> None:
    with (
        LocalIssuer(key=spare_key(0)) as team_a,
        LocalIssuer(user_pool_id="us-east-1_TeamB0001", key=spare_key(1)) as team_b,
    ):
        app = create_app([team_a.settings(), team_b.settings()], database=tmp_path / "siot.db")
        with TestClient(app) as client:
            own_ada = client.get("/v1/me/roles", headers={"Authorization": team_a.mint(username="ada")})
            other_ada = client.get("/v1/me/roles", headers={"Authorization": team_b.mint(username="ada")})
            refused = client.post(
                "/v1/admin/revoke",
                json={"sub": "bob"},
                headers={"Authorization": team_b.mint(username="ada")},
            )
    assert own_ada.json()["roles"] == ["admin"]
    assert other_ada.json()["roles"] == []
    assert refused.status_code == 403


def test_python_m_examples_app_printed_tokens_are_an_admin_and_a_non_admin_in_its_database() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")}
    with run_example_app(env) as app:
        tokens = dict(re.findall(r"export (ADMIN_TOKEN|USER_TOKEN)='([^']+)'", app.output))
        admin = {"Authorization": tokens["ADMIN_TOKEN"]}
        user = {"Authorization": f"Bearer {tokens['USER_TOKEN']}"}
        assert loopback.get(f"{app.base_url}/readyz").status_code == 200
        # gh-1 is seeded (issue 17): the banner's and docs/websockets.md's stream works with no set-up.
        assert "gh-1" in [
            device["serial"]
            for device in loopback.get(f"{app.base_url}/v1/device", headers=user).json()["devices"]
        ]
        refused = loopback.delete(f"{app.base_url}/v1/device?serial=gh-1", headers=user)
        assert refused.status_code == 403
        assert refused.json()["code"] == "missing_role"
        ws_url = app.base_url.replace("http://", "ws://") + "/v1/ws/data?serial=gh-1"
        with connect(ws_url, subprotocols=["bearer", tokens["USER_TOKEN"]]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "bearer"
            loopback.post(
                f"{app.base_url}/v1/data", json={"serial": "gh-1", "name": "t", "value": 1}, headers=user
            )
            assert json.loads(ws.recv(timeout=5)) == {"serial": "gh-1", "data": {"name": "t", "value": 1}}
        assert (
            loopback.delete(f"{app.base_url}/v1/device?serial=gh-1", headers=admin).json()["status"] == "ok"
        )
