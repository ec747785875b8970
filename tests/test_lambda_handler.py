"""Proxy handlers wrapped by LambdaAuth: the verifying default, the explicit context-trusting mode, direct calls.

Events are AWS's sample proxy payloads (REST 1.0, HTTP API 2.0); tokens come
from a local issuer whose keys are handed in, so nothing opens a socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from lambda_events import http_api_proxy_event, rest_proxy_event
from siot_authz import AuthError, Principal, RolesCache, TokenVerifier
from siot_authz.aws_lambda import (
    ContextUnreadable,
    LambdaAuth,
    principal_from_context,
    principal_to_context,
    refusal_response,
)
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key

ROLES = {"ada": ("admin",), "bob": ("member",)}


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(key=spare_key(0)) as issuer:
        yield issuer


@pytest.fixture
def verifier(issuer: LocalIssuer) -> TokenVerifier:
    settings = issuer.settings(jwks_url="http://127.0.0.1:9/jwks.json", http_timeout_seconds=0.5)
    return TokenVerifier(settings, jwks={issuer.user_pool_id: issuer.jwks()})


@pytest.fixture
def auth(verifier: TokenVerifier) -> LambdaAuth:
    return LambdaAuth(verifier, roles=RolesCache(lambda principal: ROLES.get(principal.username, ())))


def echo(event: dict[str, Any], context: Any, principal: Principal | None) -> dict[str, Any]:
    body = (
        None
        if principal is None
        else {"user": principal.username, "roles": list(getattr(principal, "roles", ()))}
    )
    return {"statusCode": 200, "body": json.dumps(body)}


PROXY_EVENTS = [
    pytest.param(rest_proxy_event, id="rest-1.0"),
    pytest.param(http_api_proxy_event, id="http-2.0"),
]
ProxyEvent = Callable[..., dict[str, Any]]


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


# -- the default: verify the token ------------------------------------------------------------


@pytest.mark.parametrize("make_event", PROXY_EVENTS)
@pytest.mark.parametrize("header", ["Authorization", "authorization", "AUTHORIZATION"])
@pytest.mark.parametrize("prefix", ["", "Bearer "], ids=["raw", "bearer"])
def test_verifies_the_authorization_header_in_any_case_raw_or_bearer(
    auth: LambdaAuth, issuer: LocalIssuer, make_event: ProxyEvent, header: str, prefix: str
) -> None:
    handler = auth.protect()(echo)

    response = handler(make_event({header: prefix + issuer.mint(username="bob")}), None)

    assert response["statusCode"] == 200
    assert body(response)["user"] == "bob"


def _refusal(issuer: LocalIssuer, case: str) -> tuple[dict[str, str], int, str, str | None]:
    """headers, status, code, WWW-Authenticate."""
    return {
        "missing": ({}, 401, "missing_token", "Bearer"),
        "expired": (
            {"Authorization": issuer.mint(expires_in=-3600)},
            401,
            "token_expired",
            'Bearer error="invalid_token"',
        ),
        "access": (
            {"Authorization": issuer.mint(token_use="access")},
            401,
            "token_use_mismatch",
            'Bearer error="invalid_token"',
        ),
        "garbage": (
            {"Authorization": "Bearer x.y.z"},
            401,
            "token_malformed",
            'Bearer error="invalid_token"',
        ),
    }[case]


@pytest.mark.parametrize("make_event", PROXY_EVENTS)
@pytest.mark.parametrize("case", ["missing", "expired", "access", "garbage"])
def test_refusals_are_proxy_responses_with_status_challenge_and_json_body(
    auth: LambdaAuth, issuer: LocalIssuer, make_event: ProxyEvent, case: str
) -> None:
    headers, status, code, challenge = _refusal(issuer, case)
    called = []
    handler = auth.protect()(lambda event, context, principal: called.append(principal))

    response = handler(make_event(headers), None)

    assert not called
    assert response["statusCode"] == status
    assert response["headers"]["WWW-Authenticate"] == challenge
    assert response["headers"]["Content-Type"] == "application/json"
    assert body(response)["detail"]["code"] == code
    for token in headers.values():
        assert token.split(".")[-1] not in response["body"]


@pytest.mark.parametrize(
    ("requirement", "claims", "status", "code"),
    [
        ({"require_groups": ["admins"]}, {"groups": ["admins"]}, 200, None),
        ({"require_groups": ["admins"]}, {"groups": ["users"]}, 403, "missing_group"),
        (
            {"require_scopes": ["siot/write"]},
            {"token_use": "access", "scope": "siot/write siot/read"},
            200,
            None,
        ),
        (
            {"require_scopes": ["siot/write"]},
            {"token_use": "access", "scope": "siot/read"},
            403,
            "missing_scope",
        ),
        ({"require_roles": ["admin"]}, {"username": "ada"}, 200, None),
        ({"require_roles": ["admin"]}, {"username": "bob"}, 403, "missing_role"),
    ],
)
def test_requirements_as_in_fastapi(
    issuer: LocalIssuer, requirement: dict[str, Any], claims: dict[str, Any], status: int, code: str | None
) -> None:
    token_use = claims.get("token_use", "id")
    settings = issuer.settings(jwks_url="http://127.0.0.1:9/jwks.json", token_use=token_use)
    verifier = TokenVerifier(settings, jwks={issuer.user_pool_id: issuer.jwks()})
    auth = LambdaAuth(verifier, roles=RolesCache(lambda principal: ROLES.get(principal.username, ())))
    handler = auth.protect(**requirement)(echo)

    response = handler(rest_proxy_event({"Authorization": issuer.mint(**claims)}), None)

    assert response["statusCode"] == status
    if code is not None:
        assert body(response)["detail"]["code"] == code
        assert response["headers"]["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    elif "require_roles" in requirement:
        assert body(response)["roles"] == ["admin"]


def test_roles_outage_is_a_503_with_retry_after(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    def broken(principal: Principal) -> list[str]:
        raise ConnectionError("database down")

    handler = LambdaAuth(verifier, roles=RolesCache(broken)).protect(require_roles=["admin"])(echo)

    response = handler(rest_proxy_event({"Authorization": issuer.mint(username="ada")}), None)

    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == "5"
    assert body(response)["detail"]["code"] == "roles_unavailable"


def test_revoked_token_is_refused(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    handler = LambdaAuth(verifier).protect()(echo)
    token = issuer.mint(sub="bob-sub", iat=1_000)
    assert handler(http_api_proxy_event({"Authorization": token}), None)["statusCode"] == 200

    verifier.revoke_user_sync(issuer.user_pool_id, "bob-sub")

    response = handler(http_api_proxy_event({"Authorization": token}), None)
    assert (response["statusCode"], body(response)["detail"]["code"]) == (401, "token_revoked")


def test_the_default_mode_ignores_an_authorizer_context(
    auth: LambdaAuth, issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    context = principal_to_context(verifier.verify_sync(issuer.mint(username="ada")))
    handler = auth.protect()(echo)

    assert handler(rest_proxy_event({}, authorizer=context), None)["statusCode"] == 401


def test_requirements_need_names_not_a_string(auth: LambdaAuth) -> None:
    with pytest.raises(TypeError):
        auth.protect(require_groups="admins")
    with pytest.raises(TypeError, match="roles"):
        LambdaAuth(auth.verifier).protect(require_roles=["admin"])
    with pytest.raises(TypeError, match="TokenVerifier"):
        LambdaAuth(None).protect()


# -- the explicit mode: trust the authorizer's context ---------------------------------------


@pytest.mark.parametrize("make_event", PROXY_EVENTS)
def test_trusting_mode_reads_the_authorizers_context(
    verifier: TokenVerifier, issuer: LocalIssuer, make_event: ProxyEvent
) -> None:
    principal = verifier.verify_sync(issuer.mint(username="ada", groups=["ops"]))
    context = principal_to_context(principal, ("admin",))
    handler = LambdaAuth(None).protect_trusting_authorizer_context(
        require_roles=["admin"], require_groups=["ops"]
    )(echo)

    response = handler(make_event({}, authorizer=context), None)  # no token: the authorizer had it

    assert response["statusCode"] == 200
    assert body(response) == {"user": "ada", "roles": ["admin"]}


def test_trusting_mode_without_roles_in_context_or_a_source_is_an_outage(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    context = principal_to_context(verifier.verify_sync(issuer.mint(username="ada")))  # no roles sent
    handler = LambdaAuth(None).protect_trusting_authorizer_context(require_roles=["admin"])(echo)

    response = handler(rest_proxy_event({}, authorizer=context), None)

    assert (response["statusCode"], body(response)["detail"]["code"]) == (503, "roles_unavailable")


def test_trusting_mode_refuses_a_context_whose_token_has_expired_since(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # API Gateway's cached Allow (and its context) can outlive the token.
    context = principal_to_context(verifier.verify_sync(issuer.mint(username="ada")))
    context["expires_at"] = context["issued_at"]
    handler = LambdaAuth(None).protect_trusting_authorizer_context()(echo)

    response = handler(http_api_proxy_event({}, authorizer=context), None)

    assert (response["statusCode"], body(response)["detail"]["code"]) == (401, "token_expired")


@pytest.mark.parametrize(
    "damage",
    [
        {"expires_at": "\u00b2"},  # passes str.isdigit(), not int()
        {"expires_at": "9" * 5000},  # passes str.isdigit(), not int()'s digit limit
        {"groups": "[" * 100_000},  # json.loads raises RecursionError, not JSONDecodeError
        {"roles": "[" * 100_000},
    ],
    ids=["superscript-two", "5000-digits", "deep-groups", "deep-roles"],
)
def test_trusting_mode_refuses_an_unreadable_context_instead_of_raising(
    verifier: TokenVerifier, issuer: LocalIssuer, damage: dict[str, str]
) -> None:
    context = {**principal_to_context(verifier.verify_sync(issuer.mint(username="ada"))), **damage}
    handler = LambdaAuth(None).protect_trusting_authorizer_context()(echo)

    response = handler(http_api_proxy_event({}, authorizer=context), None)

    assert (response["statusCode"], body(response)["detail"]["code"]) == (401, "authorizer_context_missing")


def test_trusting_mode_refuses_a_request_with_no_context() -> None:
    handler = LambdaAuth(None).protect_trusting_authorizer_context()(echo)

    response = handler(rest_proxy_event({"Authorization": "anything"}), None)

    assert (response["statusCode"], body(response)["detail"]["code"]) == (401, "authorizer_context_missing")


# -- direct invocations ---------------------------------------------------------------------


def test_direct_invocations_are_refused_by_default(auth: LambdaAuth) -> None:
    called = []
    handler = auth.protect()(lambda event, context, principal: called.append(event))

    response = handler({"action": "delete_models", "project": "demo"}, None)

    assert not called
    assert (response["statusCode"], body(response)["detail"]["code"]) == (403, "direct_invocation_refused")


@pytest.mark.parametrize("mode", ["protect", "protect_trusting_authorizer_context"])
def test_trusted_direct_invocations_reach_the_handler_with_no_principal(
    verifier: TokenVerifier, mode: str
) -> None:
    handler = getattr(LambdaAuth(verifier, trust_direct_invocations=True), mode)()(echo)

    assert handler({"action": "delete_models"}, None) == {"statusCode": 200, "body": "null"}


def test_trusting_direct_invocations_still_verifies_api_gateway_requests(verifier: TokenVerifier) -> None:
    handler = LambdaAuth(verifier, trust_direct_invocations=True).protect()(echo)

    assert handler(rest_proxy_event({}), None)["statusCode"] == 401


# -- the context mapping ----------------------------------------------------------------------


def test_context_holds_only_strings_numbers_and_booleans(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    principal = verifier.verify_sync(
        issuer.mint(username="ada", groups=["a,b", "c d"], email="ada@example.com")
    )

    context = principal_to_context(principal, ("admin", "x y"))

    assert all(isinstance(value, str | int | bool) for value in context.values())


@pytest.mark.parametrize("stringify", [False, True], ids=["http-api", "rest-strings"])
@pytest.mark.parametrize("roles", [None, ("admin", "x,y")])
def test_context_reads_back_into_the_principal(
    verifier: TokenVerifier, issuer: LocalIssuer, stringify: bool, roles: tuple[str, ...] | None
) -> None:
    principal = verifier.verify_sync(
        issuer.mint(username="ada", groups=["a,b", "c d"], email="ada@example.com")
    )
    context: dict[str, Any] = dict(principal_to_context(principal, roles))
    if stringify:  # REST APIs hand every context value to the integration as a string
        context = {name: str(value) for name, value in context.items()}

    back = principal_from_context(context)

    for field in (
        "sub",
        "username",
        "groups",
        "scopes",
        "token_use",
        "client_id",
        "email",
        "issuer",
        "user_pool_id",
    ):
        assert getattr(back, field) == getattr(principal, field), field
    assert back.expires_at == principal.expires_at.replace(microsecond=0)
    assert back.issued_at.tzinfo is UTC
    assert getattr(back, "roles", None) == (tuple(sorted(roles)) if roles else None)
    assert back.claims["sub"] == principal.sub
    assert "cognito:username" not in back.claims


@pytest.mark.parametrize(
    "damage",
    [
        {"sub": None},
        {"sub": ""},
        {"groups": "admin"},
        {"groups": "[1]"},
        {"expires_at": "soon"},
        {"expires_at": True},
        {"expires_at": "\u00b2"},  # str.isdigit() says yes; int() raises a plain ValueError
        {"token_use": "refresh"},
        {"roles": "{}"},
    ],
    ids=str,
)
def test_a_damaged_context_is_unreadable(
    verifier: TokenVerifier, issuer: LocalIssuer, damage: dict[str, Any]
) -> None:
    context: dict[str, Any] = {**principal_to_context(verifier.verify_sync(issuer.mint())), **damage}
    context = {name: value for name, value in context.items() if value is not None}

    with pytest.raises(ContextUnreadable):
        principal_from_context(context)


def test_context_times_are_whole_seconds(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    context = principal_to_context(verifier.verify_sync(issuer.mint(exp=2_000_000_000, iat=1_000)))

    assert context["expires_at"] == 2_000_000_000
    assert principal_from_context(context).expires_at == datetime.fromtimestamp(2_000_000_000, UTC)


# -- aws-lambda-powertools (optional) ----------------------------------------------------------


def test_works_with_powertools_rest_resolver(auth: LambdaAuth, issuer: LocalIssuer) -> None:
    event_handler = pytest.importorskip("aws_lambda_powertools.event_handler")
    app = event_handler.APIGatewayRestResolver()

    @app.exception_handler(AuthError)
    def refused(error: AuthError) -> Any:
        response = refusal_response(error)
        return event_handler.Response(
            response["statusCode"], body=response["body"], headers=response["headers"]
        )

    @app.get("/project")
    def list_projects() -> dict[str, Any]:
        principal: Principal = app.context["principal"]
        return {"user": principal.username}

    @app.delete("/project")
    def delete_project() -> dict[str, Any]:
        auth.authorize(app.context["principal"], require_roles=["admin"])  # per route, inside one function
        return {"deleted": True}

    @auth.protect()
    def lambda_handler(event: dict[str, Any], context: Any, principal: Principal) -> dict[str, Any]:
        app.append_context(principal=principal)
        return app.resolve(event, context)

    bob, ada = issuer.mint(username="bob"), issuer.mint(username="ada")
    got = lambda_handler(rest_proxy_event({"Authorization": bob}, "GET", "/project"), _LambdaContext())
    assert (got["statusCode"], json.loads(got["body"])) == (200, {"user": "bob"})
    denied = lambda_handler(rest_proxy_event({"Authorization": bob}, "DELETE", "/project"), _LambdaContext())
    assert (denied["statusCode"], json.loads(denied["body"])["detail"]["code"]) == (403, "missing_role")
    assert (
        lambda_handler(rest_proxy_event({"Authorization": ada}, "DELETE", "/project"), _LambdaContext())[
            "statusCode"
        ]
        == 200
    )
    assert lambda_handler(rest_proxy_event({}, "GET", "/project"), _LambdaContext())["statusCode"] == 401


class _LambdaContext:
    function_name = "project"
    aws_request_id = "1234567890"
