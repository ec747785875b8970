"""CognitoAuth in a FastAPI app: the header, the HTTP answers, authorization, OpenAPI, lifespan and overrides."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from siot_authz import AuthSettings, CognitoAuth, Principal, RolesCache, TokenVerifier
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer, override_principal

INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'
INSUFFICIENT_SCOPE_CHALLENGE = 'Bearer error="insufficient_scope"'


def assert_refused(
    response: Any, status: int, code: str, challenge: str | None, *, token: str | None = None
) -> None:
    """The response is an auth refusal of this kind, shaped ``{"detail": {"code", "message"}}``."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert set(detail) == {"code", "message"}
    assert detail["code"] == code
    assert isinstance(detail["message"], str)
    assert detail["message"]
    assert response.headers.get("WWW-Authenticate") == challenge
    if token is not None:
        for part in token.split("."):
            assert part not in response.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def splice(signed: str, other: str) -> str:
    """``signed``'s header and signature around ``other``'s payload."""
    header, _, signature = signed.split(".")
    return f"{header}.{other.split('.')[1]}.{signature}"


def make_principal(username: str, *, groups: tuple[str, ...] = ()) -> Principal:
    """A principal with no token behind it, for dependency overrides."""
    now = datetime.now(UTC)
    return Principal(
        sub=f"sub-{username}",
        username=username,
        groups=groups,
        token_use="id",
        client_id="siotlocalclient0000000000",
        issuer="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_LocalPool1",
        user_pool_id="us-east-1_LocalPool1",
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        claims={"sub": f"sub-{username}"},
    )


# -- authentication on async and sync routes -------------------------------------------------


@pytest.mark.parametrize("path", ["/me", "/me-sync"])
@pytest.mark.parametrize(
    "template",
    ["{}", "Bearer {}", "bearer {}", "BEARER {}", "Bearer    {}", "  Bearer {}  ", "  {}  "],
)
def test_route_gets_principal_for_token_raw_or_with_bearer(
    client: TestClient, issuer: LocalIssuer, path: str, template: str
) -> None:
    token = issuer.mint(username="carol", groups=["ops"], email="carol@example.com")

    response = client.get(path, headers={"Authorization": template.format(token)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["username"] == "carol"
    assert body["groups"] == ["ops"]
    assert body["email"] == "carol@example.com"
    assert body["token_use"] == "id"
    assert body["client_id"] == issuer.client_id
    assert body["issuer"] == issuer.issuer


@pytest.mark.parametrize("path", ["/me", "/me-sync"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "   "},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "bearer    "},
    ],
    ids=repr,
)
def test_request_without_token_gets_401_missing_token(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers)

    assert_refused(response, 401, "missing_token", "Bearer")


@pytest.mark.parametrize("path", ["/me", "/me-sync"])
@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda issuer: "garbage", "token_malformed"),
        (lambda issuer: issuer.mint(expires_in=-3600), "token_expired"),
        (lambda issuer: issuer.mint(omit=("exp",)), "claim_invalid"),
        (lambda issuer: issuer.mint(exp=str(int(time.time()) + 3600)), "claim_invalid"),
        (lambda issuer: issuer.mint(iat=int(time.time()) + 3600), "token_not_yet_valid"),
        (lambda issuer: issuer.mint(nbf=int(time.time()) + 3600), "token_not_yet_valid"),
        (lambda issuer: issuer.mint(iss=issuer.issuer + "/"), "issuer_invalid"),
        (
            lambda issuer: issuer.mint(iss=issuer.issuer.replace("cognito-idp.", "issuer-cognito-idp.x.")),
            "issuer_invalid",
        ),
        (lambda issuer: issuer.mint(omit=("sub",)), "claim_invalid"),
        (lambda issuer: issuer.mint(email=["a@example.com"]), "claim_invalid"),
        (lambda issuer: issuer.mint(aud="unknownappclient00000000"), "client_not_allowed"),
        (lambda issuer: issuer.mint(token_use="access"), "token_use_mismatch"),
        (lambda issuer: issuer.mint(**{"cognito:groups": "admin"}), "claim_invalid"),
        (lambda issuer: issuer.mint(header={"kid": "unknown-kid"}), "kid_unknown"),
        (lambda issuer: issuer.mint(header={"alg": "none"}), "unsupported_algorithm"),
        (lambda issuer: issuer.mint(header={"kid": None}), "kid_missing"),
        (lambda issuer: issuer.mint(header={"crit": ["exp"]}), "header_invalid"),
        (lambda issuer: splice(issuer.mint(), issuer.mint(username="mallory")), "signature_invalid"),
    ],
)
def test_invalid_token_gets_401_invalid_token_without_echoing_it(
    client: TestClient, issuer: LocalIssuer, path: str, make_token: Any, code: str
) -> None:
    token = make_token(issuer)

    response = client.get(path, headers=bearer(token))

    assert_refused(response, 401, code, INVALID_TOKEN_CHALLENGE, token=token)


@pytest.mark.parametrize("host", ["cognito-idp", "issuer-cognito-idp"])
def test_accepts_both_cognito_issuer_forms(client: TestClient, issuer: LocalIssuer, host: str) -> None:
    iss = f"https://{host}.{issuer.region}.amazonaws.com/{issuer.user_pool_id}"

    response = client.get("/me", headers=bearer(issuer.mint(iss=iss)))

    assert response.json()["issuer"] == iss


@pytest.mark.parametrize("aud", ["siotlocalclient0000000000", "secondappclient000000000"])
def test_accepts_id_token_for_any_configured_client(issuer: LocalIssuer, aud: str) -> None:
    settings = issuer.settings(client_ids=[issuer.client_id, "secondappclient000000000"])

    with TestClient(protected_app(CognitoAuth(settings))) as client:
        response = client.get("/whoami", headers=bearer(issuer.mint(aud=aud)))

    assert response.json() == {"user": "alice"}


def test_open_route_needs_no_token(client: TestClient) -> None:
    assert client.get("/open").json() == {"status": "ok"}


def test_jwks_unreachable_with_nothing_cached_gets_503(issuer: LocalIssuer, jwks_server: JwksServer) -> None:
    jwks_server.response = JwksResponse(status=500)
    auth = CognitoAuth(issuer.settings(http_timeout_seconds=2.0))
    app = protected_app(auth)

    with TestClient(app) as client:
        response = client.get("/whoami", headers=bearer(issuer.mint()))

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "jwks_unavailable"
    assert "Retry-After" in response.headers


# -- authorization: groups (any of) and scopes (all of) ------------------------------------------


@pytest.mark.parametrize(
    ("groups", "status"),
    [
        (["admin"], 200),
        (["ops", "admin"], 200),
        (["ops"], 403),
        (["Admin"], 403),
        ([], 403),
    ],
)
def test_admin_route_requires_admin_group(
    client: TestClient, issuer: LocalIssuer, groups: list[str], status: int
) -> None:
    response = client.delete("/admin", headers=bearer(issuer.mint(username="root", groups=groups)))

    if status == 200:
        assert response.json() == {"deleted_by": "root"}
    else:
        assert_refused(response, 403, "missing_group", INSUFFICIENT_SCOPE_CHALLENGE)


def test_admin_route_checks_the_token_before_the_group(client: TestClient, issuer: LocalIssuer) -> None:
    response = client.delete("/admin", headers=bearer(issuer.mint(groups=["admin"], expires_in=-3600)))

    assert_refused(response, 401, "token_expired", INVALID_TOKEN_CHALLENGE)


def test_admin_route_without_token_is_401(client: TestClient) -> None:
    assert_refused(client.delete("/admin"), 401, "missing_token", "Bearer")


def protected_app(auth: CognitoAuth, *, lifespan: bool = True) -> FastAPI:
    """An app with routes using each kind of dependency ``auth`` offers."""
    app = FastAPI(lifespan=auth.lifespan) if lifespan else FastAPI()
    staff_only = auth.require_groups("admin", "ops")
    reader_and_writer = auth.require_scopes("siot/read", "siot/write")

    @app.get("/whoami")
    async def whoami(principal: Principal | None = Depends(auth)) -> dict[str, Any]:
        return {"user": None if principal is None else principal.username}

    @app.get("/whoami-sync")
    def whoami_sync(principal: Principal | None = Depends(auth)) -> dict[str, Any]:
        return {"user": None if principal is None else principal.username}

    @app.get("/staff")
    async def staff(principal: Principal = Depends(staff_only)) -> dict[str, str]:
        return {"user": principal.username}

    @app.get("/staff-sync")
    def staff_sync(principal: Principal = Depends(staff_only)) -> dict[str, str]:
        return {"user": principal.username}

    @app.get("/read-write")
    async def read_write(
        principal: Principal = Depends(reader_and_writer),
    ) -> dict[str, list[str]]:
        return {"scopes": list(principal.scopes)}

    return app


@pytest.fixture
def access_client(issuer: LocalIssuer) -> Iterator[TestClient]:
    """A client for ``protected_app`` accepting ID and access tokens."""
    auth = CognitoAuth(issuer.settings(token_use="any", http_timeout_seconds=2.0))
    with TestClient(protected_app(auth)) as client:
        yield client


@pytest.mark.parametrize("path", ["/staff", "/staff-sync"])
@pytest.mark.parametrize(
    ("groups", "status"),
    [(["admin"], 200), (["ops"], 200), (["guest", "ops"], 200), (["guest"], 403), ([], 403)],
)
def test_require_groups_needs_any_one_of_the_groups(
    access_client: TestClient, issuer: LocalIssuer, path: str, groups: list[str], status: int
) -> None:
    response = access_client.get(path, headers=bearer(issuer.mint(groups=groups)))

    assert response.status_code == status
    if status == 403:
        assert_refused(response, 403, "missing_group", INSUFFICIENT_SCOPE_CHALLENGE)


@pytest.mark.parametrize(
    ("scopes", "status"),
    [
        (("siot/read", "siot/write"), 200),
        (("aws.cognito.signin.user.admin", "siot/write", "siot/read"), 200),
        (("siot/read",), 403),
        (("siot/write",), 403),
        ((), 403),
    ],
)
def test_require_scopes_needs_every_scope(
    access_client: TestClient, issuer: LocalIssuer, scopes: tuple[str, ...], status: int
) -> None:
    token = issuer.mint(token_use="access", scopes=scopes)

    response = access_client.get("/read-write", headers=bearer(token))

    assert response.status_code == status
    if status == 200:
        assert set(response.json()["scopes"]) == set(scopes)
    else:
        assert_refused(response, 403, "missing_scope", INSUFFICIENT_SCOPE_CHALLENGE, token=token)


def test_id_token_without_scope_claim_is_refused_by_require_scopes(
    access_client: TestClient, issuer: LocalIssuer
) -> None:
    response = access_client.get("/read-write", headers=bearer(issuer.mint()))

    assert_refused(response, 403, "missing_scope", INSUFFICIENT_SCOPE_CHALLENGE)


@pytest.mark.parametrize("method", ["require_groups", "require_scopes"])
def test_authorization_needs_at_least_one_name(auth: CognitoAuth, method: str) -> None:
    with pytest.raises(ValueError, match="at least one"):
        getattr(auth, method)()


# -- optional authentication ----------------------------------------------------------------------


@pytest.fixture
def optional_client(issuer: LocalIssuer) -> Iterator[TestClient]:
    auth = CognitoAuth(issuer.settings(http_timeout_seconds=2.0), auto_error=False)
    with TestClient(protected_app(auth)) as client:
        yield client


@pytest.mark.parametrize("path", ["/whoami", "/whoami-sync"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "  "}, {"Authorization": "Bearer "}],
    ids=repr,
)
def test_optional_auth_gives_none_without_credentials(
    optional_client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = optional_client.get(path, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"user": None}


@pytest.mark.parametrize("path", ["/whoami", "/whoami-sync"])
def test_optional_auth_gives_principal_for_a_valid_token(
    optional_client: TestClient, issuer: LocalIssuer, path: str
) -> None:
    response = optional_client.get(path, headers=bearer(issuer.mint(username="frank")))

    assert response.json() == {"user": "frank"}


@pytest.mark.parametrize("path", ["/whoami", "/whoami-sync"])
@pytest.mark.parametrize(
    "make_token",
    [lambda issuer: "garbage", lambda issuer: issuer.mint(expires_in=-3600)],
)
def test_optional_auth_still_refuses_a_bad_token(
    optional_client: TestClient, issuer: LocalIssuer, path: str, make_token: Any
) -> None:
    response = optional_client.get(path, headers=bearer(make_token(issuer)))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}], ids=repr)
def test_optional_auth_with_require_groups_and_no_token_is_401(
    optional_client: TestClient, headers: dict[str, str]
) -> None:
    assert_refused(optional_client.get("/staff", headers=headers), 401, "missing_token", "Bearer")


# -- OpenAPI ------------------------------------------------------------------------------------------


def test_openapi_declares_http_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    scheme = schema["components"]["securitySchemes"]["CognitoJWT"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "JWT"
    assert scheme["description"]


@pytest.mark.parametrize(
    ("path", "method"),
    [("/me", "get"), ("/me-sync", "get"), ("/admin", "delete"), ("/scoped", "get")],
)
def test_openapi_protected_routes_reference_the_scheme(client: TestClient, path: str, method: str) -> None:
    operation = client.get("/openapi.json").json()["paths"][path][method]

    assert operation["security"] == [{"CognitoJWT": []}]


def test_openapi_open_route_has_no_security(client: TestClient) -> None:
    assert "security" not in client.get("/openapi.json").json()["paths"]["/open"]["get"]


def test_openapi_scheme_name_can_be_chosen(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings(), scheme_name="SimpleIOT")

    schema = protected_app(auth, lifespan=False).openapi()

    assert set(schema["components"]["securitySchemes"]) == {"SimpleIOT"}
    assert schema["paths"]["/staff"]["get"]["security"] == [{"SimpleIOT": []}]


# -- lifespan ---------------------------------------------------------------------------------------


def test_lifespan_prefetches_jwks_before_any_request(
    app: FastAPI, issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    assert jwks_server.request_count == 0

    with TestClient(app) as client:
        assert jwks_server.request_count == 1
        assert jwks_server.requested_paths == [issuer.jwks_path]

        assert client.get("/me", headers=bearer(issuer.mint())).status_code == 200
        assert jwks_server.request_count == 1


def test_without_lifespan_first_request_fetches_lazily(issuer: LocalIssuer, jwks_server: JwksServer) -> None:
    auth = CognitoAuth(issuer.settings())

    with TestClient(protected_app(auth, lifespan=False)) as client:
        assert jwks_server.request_count == 0

        assert client.get("/whoami", headers=bearer(issuer.mint(username="gina"))).json() == {"user": "gina"}
        assert jwks_server.request_count == 1

        assert client.get("/whoami-sync", headers=bearer(issuer.mint())).status_code == 200
        assert jwks_server.request_count == 1


def test_lifespan_survives_unreachable_jwks_and_first_request_retries(
    issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    jwks_server.response = JwksResponse(status=503)
    auth = CognitoAuth(issuer.settings(jwks_refetch_cooldown_seconds=0, http_timeout_seconds=2.0))

    with TestClient(protected_app(auth)) as client:
        jwks_server.response = JwksResponse()

        response = client.get("/whoami", headers=bearer(issuer.mint(username="hank")))

    assert response.json() == {"user": "hank"}


# -- no credentials need no pool ---------------------------------------------------------------


class RecordingObserver:
    """Keeps every verification reported, to show a refusal is counted once."""

    def __init__(self) -> None:
        self.verifications: list[tuple[str, str | None, bool]] = []

    def verification(self, pool_id: str, code: str | None, cache_hit: bool) -> None:
        self.verifications.append((pool_id, code, cache_hit))

    def jwks_fetch(self, pool_id: str, outcome: str, seconds: float) -> None:
        pass


def lazy_auth(issuer: LocalIssuer, calls: list[str], **options: Any) -> CognitoAuth:
    """A dependency whose settings come from a function, as the README builds it; ``calls`` shows when it is read."""

    def real_pool_settings() -> AuthSettings:
        calls.append("read")
        return issuer.settings(http_timeout_seconds=2.0)

    return CognitoAuth(real_pool_settings, **options)


NO_CREDENTIALS = [
    {},
    {"Authorization": ""},
    {"Authorization": "   "},
    {"Authorization": "Bearer"},
    {"Authorization": "bearer   "},
]


@pytest.mark.parametrize("settings_are", ["a function, not yet called", "resolved"])
@pytest.mark.parametrize("path", ["/whoami", "/staff", "/read-write"])
@pytest.mark.parametrize("headers", NO_CREDENTIALS, ids=repr)
def test_no_credentials_get_401_before_the_settings_are_read_and_are_reported_once(
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    settings_are: str,
    path: str,
    headers: dict[str, str],
) -> None:
    calls: list[str] = []
    observer = RecordingObserver()
    auth = lazy_auth(issuer, calls, observer=observer)
    if settings_are == "resolved":
        assert auth.verifier is not None
    # No lifespan (no ``with``): nothing at start-up reads the settings either.
    client = TestClient(protected_app(auth))

    with caplog.at_level(logging.DEBUG, logger="siot_authz"):
        response = client.get(path, headers=headers)

    assert_refused(response, 401, "missing_token", "Bearer")
    assert calls == ([] if settings_are != "resolved" else ["read"])
    assert [record.getMessage() for record in caplog.records] == ["token_refused code=missing_token"]
    assert observer.verifications == [("", "missing_token", False)]


@pytest.mark.parametrize("settings_are", ["a function, not yet called", "resolved"])
@pytest.mark.parametrize("headers", NO_CREDENTIALS, ids=repr)
def test_optional_login_without_credentials_is_let_through_unlogged_and_refused_once_where_it_authorizes(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, settings_are: str, headers: dict[str, str]
) -> None:
    calls: list[str] = []
    observer = RecordingObserver()
    auth = lazy_auth(issuer, calls, auto_error=False, observer=observer)
    if settings_are == "resolved":
        assert auth.verifier is not None
    client = TestClient(protected_app(auth))

    with caplog.at_level(logging.DEBUG, logger="siot_authz"):
        assert client.get("/whoami", headers=headers).json() == {"user": None}
        assert not caplog.records
        assert_refused(client.get("/staff", headers=headers), 401, "missing_token", "Bearer")

    assert calls == ([] if settings_are != "resolved" else ["read"])
    assert [record.getMessage() for record in caplog.records] == ["token_refused code=missing_token"]
    assert observer.verifications == [("", "missing_token", False)]


@pytest.mark.parametrize("auto_error", [True, False])
def test_a_token_reads_the_settings_on_first_use(issuer: LocalIssuer, auto_error: bool) -> None:
    calls: list[str] = []
    client = TestClient(protected_app(lazy_auth(issuer, calls, auto_error=auto_error)))

    assert client.get("/whoami", headers=bearer(issuer.mint(username="lee"))).json() == {"user": "lee"}
    assert client.get("/whoami", headers=bearer(issuer.mint(username="max"))).json() == {"user": "max"}
    assert calls == ["read"]


def test_a_websocket_without_credentials_is_declined_before_the_settings_are_read(
    issuer: LocalIssuer,
) -> None:
    calls: list[str] = []
    auth = lazy_auth(issuer, calls)
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(websocket: WebSocket, principal: Principal = Depends(auth)) -> None:
        await websocket.accept()  # pragma: no cover - never reached

    with pytest.raises(WebSocketDisconnect) as declined, TestClient(app).websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is declined
    assert declined.value.reason == "missing_token"
    assert calls == []


# -- roles: a source or a cache ---------------------------------------------------------------------


def nobody_has_roles(principal: Principal) -> list[str]:
    return []


def test_a_roles_source_is_cached_with_the_default_bounds(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings(), roles=nobody_has_roles)

    assert isinstance(auth.roles, RolesCache)
    assert auth.roles.source is nobody_has_roles
    assert auth.roles.timeout_seconds == RolesCache(nobody_has_roles).timeout_seconds


def test_a_roles_cache_is_used_as_given(issuer: LocalIssuer) -> None:
    cache = RolesCache(nobody_has_roles, ttl_seconds=1, timeout_seconds=0.5)

    assert CognitoAuth(issuer.settings(), roles=cache).roles is cache


def test_roles_set_after_the_routes_are_defined_are_the_ones_asked(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings(), roles=nobody_has_roles)
    app = FastAPI(lifespan=auth.lifespan)

    @app.delete("/project")
    async def delete_project(principal: Principal = Depends(auth.require_roles("admin"))) -> dict[str, str]:
        return {"by": principal.username}

    ada = bearer(issuer.mint(username="ada"))
    with TestClient(app) as client:
        assert_refused(
            client.delete("/project", headers=ada), 403, "missing_role", INSUFFICIENT_SCOPE_CHALLENGE
        )
        auth.roles = RolesCache(lambda principal: ["admin"] if principal.username == "ada" else [])
        assert client.delete("/project", headers=ada).json() == {"by": "ada"}


# -- construction -----------------------------------------------------------------------------------------


def test_needs_settings_or_verifier() -> None:
    with pytest.raises(TypeError):
        CognitoAuth(None)


def test_uses_a_given_verifier(issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(issuer.settings())

    auth = CognitoAuth(verifier=verifier)

    assert auth.verifier is verifier


def test_builds_its_own_verifier_from_settings(settings: AuthSettings) -> None:
    auth = CognitoAuth(settings)

    assert isinstance(auth.verifier, TokenVerifier)
    assert auth.verifier.settings == settings


# -- testing.override_principal ------------------------------------------------------------------------


def test_override_principal_skips_the_token(app: FastAPI, auth: CognitoAuth, jwks_server: JwksServer) -> None:
    with TestClient(app) as client, override_principal(app, auth, make_principal("ivy")):
        response = client.get("/me")
        response_sync = client.get("/me-sync")

    assert response.json()["username"] == "ivy"
    assert response_sync.json()["username"] == "ivy"


@pytest.mark.parametrize(("groups", "status"), [(("admin",), 200), (("ops",), 403), ((), 403)])
def test_override_principal_still_applies_require_groups(
    app: FastAPI, auth: CognitoAuth, groups: tuple[str, ...], status: int
) -> None:
    with TestClient(app) as client, override_principal(app, auth, make_principal("jo", groups=groups)):
        response = client.delete("/admin")

    assert response.status_code == status


def test_override_principal_is_undone_after_the_block(app: FastAPI, auth: CognitoAuth) -> None:
    with TestClient(app) as client:
        with override_principal(app, auth, make_principal("kim")):
            assert client.get("/me").status_code == 200

        assert_refused(client.get("/me"), 401, "missing_token", "Bearer")
