"""The Lambda authorizer on AWS's sample events: outcomes per event type, the policy across routes, the context.

Tokens come from a local issuer whose keys are handed in, so nothing here
opens a socket; the same authorizer behind API Gateway's emulator, on
moto's tokens, is in test_lambda_emulator.py.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambda_events import (
    API_ID,
    http_api_authorizer_event,
    method_arn,
    request_authorizer_event,
    token_authorizer_event,
)
from revocation_stub import StubRevocations
from siot_authz import MissingRole, Principal, RolesCache, RolesUnavailable, TokenVerifier
from siot_authz.aws_lambda import (
    AuthorizerPolicy,
    AuthorizerUnavailable,
    LambdaAuthorizer,
    Route,
    RouteArn,
    principal_from_context,
)
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key

ROLES = {"ada": ("admin",), "bob": ("member",)}
ROUTES = [
    Route("GET", "/project"),
    Route("DELETE", "/project", roles=["admin"]),
    Route("GET", "/project/{id}/devices", groups=["operators"]),
    Route("POST", "/report", check=lambda principal: principal.username != "mallory"),
]


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(key=spare_key(0)) as issuer:
        yield issuer


def make_verifier(issuer: LocalIssuer, **kwargs: Any) -> TokenVerifier:
    # Keys handed in; the key URL is a closed loopback port, so a fetch would fail, not leave the machine.
    settings = issuer.settings(jwks_url="http://127.0.0.1:9/jwks.json", http_timeout_seconds=0.5)
    return TokenVerifier(settings, jwks={issuer.user_pool_id: issuer.jwks()}, **kwargs)


def roles_source(principal: Principal) -> tuple[str, ...]:
    return ROLES.get(principal.username, ())


@pytest.fixture
def authorizer(issuer: LocalIssuer) -> LambdaAuthorizer:
    return LambdaAuthorizer(make_verifier(issuer), ROUTES, roles=RolesCache(roles_source))


Event = Callable[..., dict[str, Any]]


def token_event(token: str | None, method: str = "GET", path: str = "/project") -> dict[str, Any]:
    return token_authorizer_event(token, method, path)


def request_event(token: str | None, method: str = "GET", path: str = "/project") -> dict[str, Any]:
    return request_authorizer_event({"Authorization": token} if token else {}, method, path)


def http_event(token: str | None, method: str = "GET", path: str = "/project") -> dict[str, Any]:
    return http_api_authorizer_event({"Authorization": token} if token else {}, method, path)


REST_EVENTS = [pytest.param(token_event, id="token"), pytest.param(request_event, id="request")]
ALL_EVENTS = [*REST_EVENTS, pytest.param(http_event, id="http")]


def iam_allows(document: dict[str, Any], arn: str) -> bool:
    """API Gateway's decision from a policy document, computed independently of AuthorizerPolicy.allows."""
    matching = [
        statement["Effect"]
        for statement in document["Statement"]
        if statement["Action"] == "execute-api:Invoke"
        and any(fnmatch.fnmatchcase(arn, pattern) for pattern in statement["Resource"])
    ]
    return "Deny" not in matching and "Allow" in matching


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ALL_EVENTS)
@pytest.mark.parametrize("prefix", ["", "Bearer "], ids=["raw", "bearer"])
def test_allows_a_valid_id_token_raw_or_bearer(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, event: Event, prefix: str
) -> None:
    answer = authorizer(event(prefix + issuer.mint(username="bob")))

    assert answer["principalId"] == answer["context"]["sub"]
    assert iam_allows(answer["policyDocument"], method_arn("GET", "/project", stage=_stage(event)))
    assert principal_from_context(answer["context"]).username == "bob"


def _stage(event: Event) -> str:
    return "$default" if event is http_event else "test"


def _refused_tokens(issuer: LocalIssuer) -> dict[str, str | None]:
    forged = issuer.mint(username="bob")
    head, body, _ = forged.split(".")
    other = issuer.mint(username="ada").split(".")[2]
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "forged": f"{head}.{body}.{other}",
        "expired": issuer.mint(expires_in=-3600),
        "access_token": issuer.mint(token_use="access"),
    }


REFUSALS = ["missing", "garbage", "forged", "expired", "access_token"]


@pytest.mark.parametrize("event", REST_EVENTS)
@pytest.mark.parametrize("kind", REFUSALS)
def test_rest_refusals_raise_exactly_unauthorized_for_a_401(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, event: Event, kind: str
) -> None:
    with pytest.raises(Exception) as raised:  # noqa: PT011  # the exact type and message are the contract
        authorizer(event(_refused_tokens(issuer)[kind]))

    assert type(raised.value) is Exception
    assert str(raised.value) == "Unauthorized"
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None  # nothing from the verification rides along in its traceback


@pytest.mark.parametrize("kind", REFUSALS)
def test_http_api_refusals_deny_every_route(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, kind: str
) -> None:
    answer = authorizer(http_event(_refused_tokens(issuer)[kind]))

    assert "context" not in answer
    for route in ROUTES:
        assert not iam_allows(
            answer["policyDocument"], method_arn(route.method, "/project", stage="$default")
        )
    assert not iam_allows(answer["policyDocument"], method_arn("GET", "/anything", stage="$default"))


@pytest.mark.parametrize("kind", REFUSALS)
def test_http_api_simple_refusals_are_not_authorized(issuer: LocalIssuer, kind: str) -> None:
    authorizer = LambdaAuthorizer(make_verifier(issuer), http_api_response="simple")

    assert authorizer(http_event(_refused_tokens(issuer)[kind])) == {"isAuthorized": False}


@pytest.mark.parametrize("event", REST_EVENTS)
def test_revoked_token_is_refused_with_401(issuer: LocalIssuer, event: Event) -> None:
    verifier = make_verifier(issuer)
    authorizer = LambdaAuthorizer(verifier)
    token = issuer.mint(username="bob", sub="bob-sub", iat=1_000)
    authorizer(event(token))  # accepted, and now in the verified cache

    verifier.revoke_user_sync(issuer.user_pool_id, "bob-sub")

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorizer(event(token))


@pytest.mark.parametrize("event", ALL_EVENTS)
def test_non_admin_is_denied_the_admin_route_and_allowed_the_others(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, event: Event
) -> None:
    answer = authorizer(event(issuer.mint(username="bob"), "DELETE", "/project"))

    stage = _stage(event)
    assert not iam_allows(answer["policyDocument"], method_arn("DELETE", "/project", stage=stage))
    assert iam_allows(answer["policyDocument"], method_arn("GET", "/project", stage=stage))
    assert iam_allows(answer["policyDocument"], method_arn("POST", "/report", stage=stage))


@pytest.mark.parametrize("event", ALL_EVENTS)
def test_a_denied_route_stays_denied_with_a_trailing_slash(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, event: Event
) -> None:
    # API Gateway puts the path as sent in the ARN, and "/project/" reaches the /project resource:
    # a Deny of exactly ".../DELETE/project" would leave it to the Allow of every route.
    answer = authorizer(event(issuer.mint(username="bob"), "DELETE", "/project/"))

    stage = _stage(event)
    assert not iam_allows(answer["policyDocument"], method_arn("DELETE", "/project/", stage=stage))
    assert not iam_allows(answer["policyDocument"], method_arn("DELETE", "/project", stage=stage))
    assert iam_allows(answer["policyDocument"], method_arn("GET", "/project/", stage=stage))


def test_http_api_simple_response_refuses_a_denied_route_with_a_trailing_slash(issuer: LocalIssuer) -> None:
    authorizer = LambdaAuthorizer(
        make_verifier(issuer), ROUTES, roles=RolesCache(roles_source), http_api_response="simple"
    )

    assert authorizer(http_event(issuer.mint(username="bob"), "DELETE", "/project/"))["isAuthorized"] is False


def test_http_api_simple_response_answers_for_the_route_called(issuer: LocalIssuer) -> None:
    authorizer = LambdaAuthorizer(
        make_verifier(issuer), ROUTES, roles=RolesCache(roles_source), http_api_response="simple"
    )
    bob = issuer.mint(username="bob")

    assert authorizer(http_event(bob, "GET", "/project"))["isAuthorized"] is True
    assert authorizer(http_event(bob, "DELETE", "/project"))["isAuthorized"] is False
    assert authorizer(http_event(issuer.mint(username="ada"), "DELETE", "/project"))["isAuthorized"] is True


# -- outages: never an Allow, never a cached Deny ----------------------------------------------


def test_keys_unavailable_is_an_outage_not_a_401(issuer: LocalIssuer) -> None:
    settings = issuer.settings(jwks_url="http://127.0.0.1:9/jwks.json", http_timeout_seconds=0.5)
    authorizer = LambdaAuthorizer(TokenVerifier(settings))

    with pytest.raises(AuthorizerUnavailable, match="jwks_unavailable"):
        authorizer(token_event(issuer.mint()))


def test_revocation_store_failed_closed_is_an_outage(issuer: LocalIssuer) -> None:
    authorizer = LambdaAuthorizer(make_verifier(issuer, revocations=StubRevocations("failed", 400.0)))

    with pytest.raises(AuthorizerUnavailable, match="revocation_unavailable"):
        authorizer(http_event(issuer.mint()))


def test_roles_source_failure_is_an_outage(issuer: LocalIssuer) -> None:
    def broken(principal: Principal) -> list[str]:
        raise ConnectionError("database down")

    authorizer = LambdaAuthorizer(make_verifier(issuer), ROUTES, roles=RolesCache(broken))

    with pytest.raises(AuthorizerUnavailable, match="roles_unavailable"):
        authorizer(token_event(issuer.mint(username="bob")))


def test_a_check_reporting_an_outage_is_an_outage(issuer: LocalIssuer) -> None:
    def database_down(principal: Principal) -> bool:
        raise RolesUnavailable()

    authorizer = LambdaAuthorizer(make_verifier(issuer), [Route("GET", "/project", check=database_down)])

    with pytest.raises(AuthorizerUnavailable):
        authorizer(token_event(issuer.mint()))


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": "TOKEN", "authorizationToken": "x"},
        {"type": "TOKEN", "authorizationToken": "x", "methodArn": "arn:aws:s3:::bucket"},
        {
            "type": "TOKEN",
            "authorizationToken": "x",
            "methodArn": "arn:aws:execute-api:r:1:api/stage/FETCH/x",
        },
        {"httpMethod": "GET", "path": "/project", "requestContext": {}},
    ],
    ids=["empty", "no-arn", "not-execute-api", "bad-method", "proxy-event"],
)
def test_a_misconfigured_event_is_an_outage_not_an_allow(
    authorizer: LambdaAuthorizer, event: dict[str, Any]
) -> None:
    with pytest.raises(AuthorizerUnavailable):
        authorizer(event)


def test_two_authorization_headers_that_disagree_are_refused(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer
) -> None:
    event = request_authorizer_event({"Authorization": issuer.mint(), "authorization": "other"})

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorizer(event)


# -- the policy across routes (API Gateway's result cache) ------------------------------------

CALLERS = {
    "admin": {"username": "ada"},
    "member": {"username": "bob"},
    "operator": {"username": "olga", "groups": ["operators"]},
    "mallory": {"username": "mallory", "groups": ["operators"]},
}
# The real paths callers use; API Gateway puts these (not the templates) in the ARN.
CALLS = [
    ("GET", "/project"),
    ("DELETE", "/project"),
    ("GET", "/project/42/devices"),
    ("POST", "/report"),
    ("GET", "/unlisted"),
]


def expected(caller: str, call: tuple[str, str]) -> bool:
    return {
        ("DELETE", "/project"): caller == "admin",
        ("GET", "/project/42/devices"): caller in ("operator", "mallory"),
        ("POST", "/report"): caller != "mallory",
    }.get(call, True)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("first_call", CALLS, ids=lambda call: " ".join(call))
def test_one_policy_answers_every_route_as_if_asked_for_it(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, caller: str, first_call: tuple[str, str]
) -> None:
    # API Gateway caches the first answer for the token and applies it to every later call.
    cached = authorizer(token_event(issuer.mint(**CALLERS[caller]), *first_call))

    for call in CALLS:
        assert iam_allows(cached["policyDocument"], method_arn(*call)) is expected(caller, call), call


def test_the_policy_names_the_api_and_stage_of_the_event_and_nothing_hard_coded(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer
) -> None:
    event = token_event(issuer.mint(username="bob"))
    event["methodArn"] = "arn:aws-cn:execute-api:cn-north-1:210987654321:zyx987/prod/GET/project"

    document = authorizer(event)["policyDocument"]

    resources = [resource for statement in document["Statement"] for resource in statement["Resource"]]
    assert resources
    assert all(
        resource.startswith("arn:aws-cn:execute-api:cn-north-1:210987654321:zyx987/prod/")
        for resource in resources
    )
    assert API_ID not in str(document)


def test_unlisted_routes_can_be_denied(issuer: LocalIssuer) -> None:
    authorizer = LambdaAuthorizer(make_verifier(issuer), [Route("GET", "/project")], unlisted="deny")

    document = authorizer(token_event(issuer.mint(), "GET", "/project"))["policyDocument"]

    assert iam_allows(document, method_arn("GET", "/project"))
    assert not iam_allows(document, method_arn("GET", "/unlisted"))
    assert not iam_allows(document, method_arn("DELETE", "/project"))


def test_authorizer_policy_allows_agrees_with_iam_matching(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer
) -> None:
    for caller in CALLERS.values():
        principal = authorizer.verifier.verify_sync(issuer.mint(**caller))
        arn = RouteArn.parse(method_arn("GET", "/project"))
        policy = authorizer.policy_for(principal, arn, ROLES.get(principal.username, ()))
        for call in CALLS:
            assert policy.allows(method_arn(*call)) is iam_allows(policy.document(), method_arn(*call))


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("/", ""),
        ("/project", "project"),
        ("/project/{id}", "project/*"),
        ("/{proxy+}", "*"),
        ("/a/{b}/c", "a/*/c"),
    ],
)
def test_route_paths_become_arn_patterns(path: str, pattern: str) -> None:
    assert Route("GET", path).arn_path == pattern


def test_route_arn_round_trips() -> None:
    arn = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/GET/project/42"
    parsed = RouteArn.parse(arn)

    assert (parsed.api_id, parsed.stage, parsed.method, parsed.path) == (
        "abcdef123",
        "test",
        "GET",
        "project/42",
    )
    assert str(parsed) == arn


def test_deny_all_allows_nothing() -> None:
    policy = AuthorizerPolicy.deny_all(RouteArn.parse(method_arn("GET", "/")))

    assert not policy.allows(method_arn("GET", "/"))
    assert [statement["Effect"] for statement in policy.document()["Statement"]] == ["Deny"]


# -- configuration -------------------------------------------------------------------------


def test_routes_needing_roles_need_a_roles_source(issuer: LocalIssuer) -> None:
    with pytest.raises(TypeError, match="roles"):
        LambdaAuthorizer(make_verifier(issuer), [Route("DELETE", "/project", roles=["admin"])])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": "FETCH", "path": "/x"}, ValueError),
        ({"method": "GET", "path": "x"}, ValueError),
        ({"method": "GET", "path": "/x", "roles": "admin"}, TypeError),
    ],
)
def test_route_rejects_mistakes_when_built(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Route(**kwargs)


async def _async_refusing_check(principal: Principal) -> bool:
    return False


def test_route_refuses_an_async_check_when_built() -> None:
    # Never awaited, its coroutine would be a true value, and every caller would be let in.
    with pytest.raises(TypeError, match="async"):
        Route("GET", "/project", check=_async_refusing_check)  # type: ignore[arg-type]


def test_route_check_returning_an_awaitable_denies_the_route(issuer: LocalIssuer) -> None:
    def returns_a_coroutine(principal: Principal) -> Any:
        return _async_refusing_check(principal)

    authorizer = LambdaAuthorizer(
        make_verifier(issuer), [Route("GET", "/project", check=returns_a_coroutine)]
    )

    document = authorizer(token_event(issuer.mint()))["policyDocument"]

    assert not iam_allows(document, method_arn("GET", "/project"))


def test_route_check_that_crashes_denies_the_route(issuer: LocalIssuer) -> None:
    def buggy(principal: Principal) -> bool:
        raise KeyError("bug")

    authorizer = LambdaAuthorizer(make_verifier(issuer), [Route("GET", "/project", check=buggy)])

    document = authorizer(token_event(issuer.mint()))["policyDocument"]

    assert not iam_allows(document, method_arn("GET", "/project"))
    assert iam_allows(document, method_arn("GET", "/other"))


def test_route_refusal_names_what_is_missing(issuer: LocalIssuer) -> None:
    principal = make_verifier(issuer).verify_sync(issuer.mint(username="bob"))

    assert isinstance(
        Route("DELETE", "/project", roles=["admin"]).refusal(principal, ("member",)), MissingRole
    )


def test_logs_hold_no_token_text_and_no_forged_lines(
    authorizer: LambdaAuthorizer, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="siot_authz")
    bob = issuer.mint(username="bob")
    refused = _refused_tokens(issuer)
    # A real path is the caller's text: it may hold a line break.
    answer = authorizer(token_event(bob, "GET", "/project/42\nforged_line code=ok/devices"))
    assert not iam_allows(
        answer["policyDocument"], method_arn("GET", "/project/42\nforged_line code=ok/devices")
    )
    for token in refused.values():
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            authorizer(token_event(token))

    assert "access_denied" in caplog.text
    assert "\nforged_line" not in caplog.text
    for token in [bob, *filter(None, refused.values())]:
        assert token.split(".")[-1][:20] not in caplog.text


@pytest.mark.parametrize(
    ("pattern", "arn"),
    [
        ("a/*/*", "a/GET/"),
        ("a/*/*", "a/GET/project/42"),
        ("a/*/*", "a/GET"),
        ("a/GET/project", "a/GET/project"),
        ("a/GET/project", "a/GET/project/"),
        ("a/GET/project/*", "a/GET/project/"),
        ("a/GET/project/*/devices", "a/GET/project/4/2/devices"),
        ("a/GET/project/*/devices", "a/GET/project/devices"),
        ("a/*/x*x", "a/GET/x"),
        ("a/*/x*x", "a/GET/xx"),
        ("a/*/p?", "a/GET/px"),
        ("a/*/p?", "a/GET/p"),
        ("a/*", "a/GET/\nline"),
        ("a/GET/[x]", "a/GET/[x]"),
        ("a/GET/[x]", "a/GET/x"),
    ],
)
def test_policy_matching_agrees_with_glob_matching(pattern: str, arn: str) -> None:
    policy = AuthorizerPolicy((pattern,), ())

    assert policy.allows(arn) is fnmatch.fnmatchcase(arn, pattern.replace("[", "[[]"))
