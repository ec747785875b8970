"""Real tokens from a third party: log in to moto's Cognito emulator and verify what it signs.

moto signs with its own RSA key (kid ``dummy``) and serves the JWKS at
``/<pool_id>/.well-known/jwks.json``; its ``iss`` is the real AWS URL, so the
settings point ``jwks_url`` at moto and keep the pool's real issuer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import loopback
from moto_pool import MotoPool, Tokens, moto_user_pool
from siot_authz import (
    AuthError,
    AuthSettings,
    ClientNotAllowed,
    CognitoAuth,
    Principal,
    TokenUse,
    TokenUseMismatch,
    TokenVerifier,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def pool() -> Iterator[MotoPool]:
    with moto_user_pool(groups=["admin"]) as pool:
        pool.add_user("siot-viewer", "Viewer-Passw0rd-Long")
        yield pool


@pytest.fixture(scope="module")
def tokens(pool: MotoPool) -> Tokens:
    return pool.login()


@pytest.fixture(scope="module")
def viewer_tokens(pool: MotoPool) -> Tokens:
    return pool.login(username="siot-viewer", password="Viewer-Passw0rd-Long")


@pytest.fixture(scope="module")
def other_client_id(pool: MotoPool) -> str:
    return pool.add_client("another-app")


@pytest.fixture(scope="module")
def other_client_tokens(pool: MotoPool, other_client_id: str) -> Tokens:
    return pool.login(client_id=other_client_id)


def make_verifier(pool: MotoPool, token_use: TokenUse) -> TokenVerifier:
    return TokenVerifier(pool.settings(token_use=token_use, http_timeout_seconds=5.0))


def token_of(tokens: Tokens, kind: str) -> str:
    return tokens.id_token if kind == "id" else tokens.access_token


def test_moto_serves_one_2048_bit_rs256_key_with_kid_dummy(pool: MotoPool) -> None:
    jwks = loopback.get(pool.jwks_url).json()

    assert [(key["kid"], key["kty"], key["alg"], key["use"]) for key in jwks["keys"]] == [
        ("dummy", "RSA", "RS256", "sig")
    ]
    verifier = make_verifier(pool, "any")
    try:
        key = verifier.keys.get_key_sync("dummy")
    finally:
        verifier.close()
    assert key.size_bits == 2048


@pytest.mark.parametrize("prefix", ["", "Bearer ", "bearer "])
@pytest.mark.parametrize(
    ("kind", "token_use"), [("id", "id"), ("id", "any"), ("access", "access"), ("access", "any")]
)
async def test_accepts_tokens_from_user_password_login(
    pool: MotoPool, tokens: Tokens, kind: str, token_use: TokenUse, prefix: str
) -> None:
    verifier = make_verifier(pool, token_use)
    try:
        principal = await verifier.verify(prefix + token_of(tokens, kind))
        principal_sync = verifier.verify_sync(prefix + token_of(tokens, kind))
    finally:
        await verifier.aclose()

    assert principal == principal_sync
    assert principal.token_use == kind
    assert principal.username == pool.username
    assert principal.client_id == pool.client_id
    assert principal.groups == ("admin",)
    assert principal.issuer == f"https://cognito-idp.{pool.region}.amazonaws.com/{pool.user_pool_id}"
    assert principal.expires_at > principal.issued_at
    if kind == "access":
        assert principal.scopes == ("aws.cognito.signin.user.admin",)


async def test_user_without_groups_has_no_groups(pool: MotoPool, viewer_tokens: Tokens) -> None:
    verifier = make_verifier(pool, "id")
    try:
        principal = await verifier.verify(viewer_tokens.id_token)
    finally:
        await verifier.aclose()

    assert principal.username == "siot-viewer"
    assert principal.groups == ()


@pytest.mark.parametrize(
    ("login", "kind", "token_use", "error"),
    [
        ("tokens", "id", "access", TokenUseMismatch),
        ("tokens", "access", "id", TokenUseMismatch),
        ("other_client_tokens", "id", "id", ClientNotAllowed),
        ("other_client_tokens", "id", "any", ClientNotAllowed),
        ("other_client_tokens", "access", "access", ClientNotAllowed),
    ],
    ids=["id-for-access", "access-for-id", "other-client-id", "other-client-id-any", "other-client-access"],
)
async def test_refuses_wrong_kind_of_token_or_other_app_client(
    request: pytest.FixtureRequest,
    pool: MotoPool,
    login: str,
    kind: str,
    token_use: TokenUse,
    error: type[AuthError],
) -> None:
    token = token_of(request.getfixturevalue(login), kind)
    verifier = make_verifier(pool, token_use)
    try:
        with pytest.raises(error):
            await verifier.verify(token)
        with pytest.raises(error):
            verifier.verify_sync(token)
    finally:
        await verifier.aclose()


async def test_accepts_other_app_client_once_it_is_listed(
    pool: MotoPool, other_client_id: str, other_client_tokens: Tokens, tokens: Tokens
) -> None:
    settings = pool.settings(client_ids=(pool.client_id, other_client_id))
    verifier = TokenVerifier(settings)
    try:
        assert (await verifier.verify(other_client_tokens.id_token)).client_id == other_client_id
        assert (await verifier.verify(tokens.id_token)).client_id == pool.client_id
    finally:
        await verifier.aclose()


# -- through FastAPI ---------------------------------------------------------


def build_app(settings: AuthSettings) -> FastAPI:
    auth = CognitoAuth(settings)
    admin_only = auth.require_groups("admin")
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/v1/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, object]:
        return {"username": principal.username, "groups": list(principal.groups)}

    @app.get("/v1/me-sync")
    def me_sync(principal: Principal = Depends(auth)) -> dict[str, object]:
        return {"username": principal.username, "groups": list(principal.groups)}

    @app.delete("/v1/device")
    async def delete_device(principal: Principal = Depends(admin_only)) -> dict[str, str]:
        return {"status": "ok", "deleted_by": principal.username}

    return app


@pytest.fixture
def id_client(pool: MotoPool) -> Iterator[TestClient]:
    with TestClient(build_app(pool.settings(token_use="id"))) as client:
        yield client


@pytest.mark.parametrize("prefix", ["", "Bearer "])
@pytest.mark.parametrize("path", ["/v1/me", "/v1/me-sync"])
def test_fastapi_route_sees_the_logged_in_user(
    id_client: TestClient, pool: MotoPool, tokens: Tokens, prefix: str, path: str
) -> None:
    response = id_client.get(path, headers={"Authorization": prefix + tokens.id_token})

    assert response.status_code == 200
    assert response.json() == {"username": pool.username, "groups": ["admin"]}


def test_fastapi_admin_route_allows_group_member_and_refuses_others(
    id_client: TestClient, tokens: Tokens, viewer_tokens: Tokens
) -> None:
    allowed = id_client.delete("/v1/device", headers={"Authorization": tokens.id_token})
    refused = id_client.delete("/v1/device", headers={"Authorization": viewer_tokens.id_token})

    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["detail"]["code"] == "missing_group"
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("token_name", "code"),
    [("access", "token_use_mismatch"), ("other_client_id", "client_not_allowed")],
)
def test_fastapi_refuses_wrong_token_with_401(
    id_client: TestClient, tokens: Tokens, other_client_tokens: Tokens, token_name: str, code: str
) -> None:
    token = tokens.access_token if token_name == "access" else other_client_tokens.id_token

    response = id_client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.json()["detail"]["code"] == code
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert token not in response.text
