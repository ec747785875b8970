"""The Cognito claim rules and the Principal they build, on correctly signed tokens.

The verifier's clock is pinned to ``NOW`` so that leeway boundaries are exact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import anyio
import pytest
from pydantic import ValidationError

from siot_authz import (
    ClaimTypeInvalid,
    ClientNotAllowed,
    InvalidToken,
    IssuerInvalid,
    Principal,
    TokenExpired,
    TokenNotYetValid,
    TokenUseMismatch,
    TokenVerifier,
)
from siot_authz.testing import LocalIssuer

pytestmark = pytest.mark.anyio

NOW = 1_750_000_000
LEEWAY = 5
OTHER_CLIENT = "secondappclient000000000"

Verify = Callable[[str], Awaitable[Principal]]
VerifyWith = Callable[..., Verify]
Sign = Callable[..., str]


@pytest.fixture(params=["verify", "verify_sync"])
def verify_with(request: pytest.FixtureRequest, issuer: LocalIssuer) -> Iterator[VerifyWith]:
    """Makes ``verify(token)`` at clock ``NOW`` for settings overrides, through either face."""
    verifiers: list[TokenVerifier] = []

    def make(**overrides: Any) -> Verify:
        settings = issuer.settings(**{"leeway_seconds": LEEWAY, **overrides})
        verifier = TokenVerifier(settings, clock=lambda: NOW)
        verifiers.append(verifier)
        if request.param == "verify":
            return verifier.verify
        return partial(anyio.to_thread.run_sync, verifier.verify_sync)

    yield make
    for verifier in verifiers:
        verifier.close()


@pytest.fixture
def verify(verify_with: VerifyWith) -> Verify:
    return verify_with()


@pytest.fixture
def sign(issuer: LocalIssuer) -> Sign:
    """Signs a Cognito ``kind`` token issued at ``NOW``; keyword arguments override claims, ``omit`` drops them."""

    def sign(*, kind: Literal["id", "access"] = "id", omit: tuple[str, ...] = (), **changes: Any) -> str:
        claims = issuer.claims(token_use=kind, iat=NOW, auth_time=NOW, exp=NOW + 3600)
        claims.update(changes)
        for name in omit:
            claims.pop(name)
        return issuer.sign(claims)

    return sign


# -- exp, iat, nbf --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"exp": NOW + 1}, None),
        ({"exp": NOW - LEEWAY + 1}, None),
        ({"exp": NOW - LEEWAY + 0.5}, None),
        ({"exp": NOW - LEEWAY}, TokenExpired),
        ({"exp": NOW - 3600}, TokenExpired),
        ({"iat": NOW + LEEWAY}, None),
        ({"iat": NOW + LEEWAY + 1}, TokenNotYetValid),
        ({"iat": NOW - 86_400}, None),
        ({"nbf": NOW - 60}, None),
        ({"nbf": NOW + LEEWAY}, None),
        ({"nbf": NOW + LEEWAY + 1}, TokenNotYetValid),
        ({"nbf": NOW + 3000}, TokenNotYetValid),
    ],
    ids=repr,
)
async def test_time_claims_honour_the_leeway_boundary(
    verify: Verify, sign: Sign, changes: dict[str, Any], error: type[Exception] | None
) -> None:
    token = sign(**changes)

    if error is None:
        assert (await verify(token)).username == "alice"
    else:
        with pytest.raises(error):
            await verify(token)


@pytest.mark.parametrize(
    ("leeway", "exp", "is_accepted"),
    [
        (0, NOW + 1, True),
        (0, NOW, False),
        (60, NOW - 59, True),
        (60, NOW - 60, False),
    ],
)
async def test_leeway_setting_moves_the_expiry_boundary(
    verify_with: VerifyWith, sign: Sign, leeway: int, exp: int, is_accepted: bool
) -> None:
    verify = verify_with(leeway_seconds=leeway)

    if is_accepted:
        assert (await verify(sign(exp=exp))).expires_at.timestamp() == exp
    else:
        with pytest.raises(TokenExpired):
            await verify(sign(exp=exp))


@pytest.mark.parametrize("name", ["exp", "iat"])
async def test_refuses_token_without_required_time_claim(verify: Verify, sign: Sign, name: str) -> None:
    with pytest.raises(ClaimTypeInvalid):
        await verify(sign(omit=(name,)))


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "bad_value",
    [str(NOW + 60), True, False, None, [NOW + 60], {"t": NOW}, -1, 10**20, 1e300],
    ids=repr,
)
async def test_refuses_time_claim_that_is_not_a_plausible_number(
    verify: Verify, sign: Sign, name: str, bad_value: Any
) -> None:
    with pytest.raises(ClaimTypeInvalid):
        await verify(sign(**{name: bad_value}))


async def test_accepts_fractional_times(verify: Verify, sign: Sign) -> None:
    principal = await verify(sign(iat=NOW - 0.25, exp=NOW + 60.5, nbf=NOW - 0.5))

    assert principal.expires_at.timestamp() == NOW + 60.5


# -- iss ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["cognito-idp", "issuer-cognito-idp"])
async def test_accepts_both_cognito_issuer_forms(
    issuer: LocalIssuer, verify: Verify, sign: Sign, host: str
) -> None:
    iss = f"https://{host}.{issuer.region}.amazonaws.com/{issuer.user_pool_id}"

    assert (await verify(sign(iss=iss))).issuer == iss


LOOK_ALIKE_ISSUERS = [
    "{iss}/",
    "{iss}x",
    "{iss}/extra",
    "{iss}?x=1",
    "{iss}#frag",
    " {iss}",
    "{iss} ",
    "{iss_upper}",
    "http://cognito-idp.{region}.amazonaws.com/{pool}",
    "https://cognito-idp.{region}.amazonaws.com.evil.example/{pool}",
    "https://evil.example/https://cognito-idp.{region}.amazonaws.com/{pool}",
    "https://cognito-idp.{region}.amazonaws.com:443/{pool}",
    "https://cognito-idp.eu-west-1.amazonaws.com/{pool}",
    "https://cognito-idp.{region}.amazonaws.com/{region}_OtherPool1",
    "https://cognito-idp.{region}.amazonaws.com/{pool_lower}",
    "https://xcognito-idp.{region}.amazonaws.com/{pool}",
    "https://issuer-cognito-idp.{region}.amazonaws.com/{pool}/",
    "cognito-idp.{region}.amazonaws.com/{pool}",
    "",
]


@pytest.mark.parametrize("template", LOOK_ALIKE_ISSUERS)
async def test_refuses_look_alike_issuer(
    issuer: LocalIssuer, verify: Verify, sign: Sign, template: str
) -> None:
    iss = template.format(
        iss=issuer.issuer,
        iss_upper=issuer.issuer.upper(),
        region=issuer.region,
        pool=issuer.user_pool_id,
        pool_lower=issuer.user_pool_id.lower(),
    )

    with pytest.raises(IssuerInvalid):
        await verify(sign(iss=iss))


@pytest.mark.parametrize("bad_value", ["<absent>", None, 1, ["{iss}"], {"iss": "{iss}"}], ids=repr)
async def test_refuses_issuer_that_is_not_a_string(
    issuer: LocalIssuer, verify: Verify, sign: Sign, bad_value: Any
) -> None:
    if bad_value == "<absent>":
        token = sign(omit=("iss",))
    else:
        token = sign(iss=[issuer.issuer] if isinstance(bad_value, list) else bad_value)

    with pytest.raises(IssuerInvalid):
        await verify(token)


# -- token_use --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "token_use", "is_accepted"),
    [
        ("id", "id", True),
        ("id", "access", False),
        ("access", "access", True),
        ("access", "id", False),
        ("any", "id", True),
        ("any", "access", True),
    ],
)
async def test_token_use_setting_picks_which_tokens_are_accepted(
    verify_with: VerifyWith, sign: Sign, setting: str, token_use: str, is_accepted: bool
) -> None:
    verify = verify_with(token_use=setting)
    token = sign(kind=token_use)

    if is_accepted:
        assert (await verify(token)).token_use == token_use
    else:
        with pytest.raises(TokenUseMismatch):
            await verify(token)


@pytest.mark.parametrize("bad_value", ["<absent>", "refresh", "ID", "", None, ["id"], 1], ids=repr)
async def test_refuses_unknown_token_use_even_when_any_is_accepted(
    verify_with: VerifyWith, sign: Sign, bad_value: Any
) -> None:
    token = sign(omit=("token_use",)) if bad_value == "<absent>" else sign(token_use=bad_value)

    with pytest.raises(TokenUseMismatch):
        await verify_with(token_use="any")(token)


# -- the app client: aud for ID tokens, client_id for access tokens ---------------------------------


@pytest.mark.parametrize("aud", ["siotlocalclient0000000000", OTHER_CLIENT])
async def test_id_token_aud_may_be_any_configured_client(
    verify_with: VerifyWith, sign: Sign, issuer: LocalIssuer, aud: str
) -> None:
    verify = verify_with(client_ids=(issuer.client_id, OTHER_CLIENT))

    assert (await verify(sign(aud=aud))).client_id == aud


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "unknownappclient00000000"},
        {"aud": "SIOTLOCALCLIENT0000000000"},
        {"aud": "siotlocalclient0000000000 "},
        {"aud": ["siotlocalclient0000000000"]},
        {"aud": None},
        {"aud": ""},
    ],
    ids=repr,
)
async def test_refuses_id_token_for_another_client(
    verify: Verify, sign: Sign, changes: dict[str, Any]
) -> None:
    with pytest.raises(ClientNotAllowed):
        await verify(sign(**changes))


async def test_refuses_id_token_without_aud_even_with_allowed_client_id(
    verify: Verify, sign: Sign, issuer: LocalIssuer
) -> None:
    with pytest.raises(ClientNotAllowed):
        await verify(sign(omit=("aud",), client_id=issuer.client_id))


@pytest.mark.parametrize("client_id", ["siotlocalclient0000000000", OTHER_CLIENT])
async def test_access_token_client_id_may_be_any_configured_client(
    verify_with: VerifyWith, sign: Sign, issuer: LocalIssuer, client_id: str
) -> None:
    verify = verify_with(token_use="access", client_ids=(issuer.client_id, OTHER_CLIENT))

    assert (await verify(sign(kind="access", client_id=client_id))).client_id == client_id


@pytest.mark.parametrize(
    "changes",
    [
        {"client_id": "unknownappclient00000000"},
        {"client_id": ["siotlocalclient0000000000"]},
        {"client_id": None},
    ],
    ids=repr,
)
async def test_refuses_access_token_for_another_client(
    verify_with: VerifyWith, sign: Sign, changes: dict[str, Any]
) -> None:
    with pytest.raises(ClientNotAllowed):
        await verify_with(token_use="access")(sign(kind="access", **changes))


async def test_access_token_cannot_borrow_an_allowed_aud(
    verify_with: VerifyWith, sign: Sign, issuer: LocalIssuer
) -> None:
    # Access tokens name their client only in client_id; an aud must not stand in for it.
    token = sign(kind="access", omit=("client_id",), aud=issuer.client_id)

    with pytest.raises(ClientNotAllowed):
        await verify_with(token_use="access")(token)


# -- claim types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_use", "changes", "omit"),
    [
        ("id", {"cognito:groups": "admin"}, ()),
        ("id", {"cognito:groups": ["admin", 1]}, ()),
        ("id", {"cognito:groups": ["admin", None]}, ()),
        ("id", {"cognito:groups": [["admin"]]}, ()),
        ("id", {"cognito:groups": {"admin": True}}, ()),
        ("id", {"cognito:groups": None}, ()),
        ("access", {"scope": ["siot/read"]}, ()),
        ("access", {"scope": 1}, ()),
        ("access", {"scope": None}, ()),
        ("id", {"email": 1}, ()),
        ("id", {"email": ["a@example.com"]}, ()),
        ("id", {"email": None}, ()),
        ("id", {}, ("sub",)),
        ("id", {"sub": ""}, ()),
        ("id", {"sub": 42}, ()),
        ("id", {}, ("cognito:username",)),
        ("id", {"cognito:username": ""}, ()),
        ("id", {"cognito:username": ["alice"]}, ()),
        ("id", {"username": "alice"}, ("cognito:username",)),
        ("access", {"username": 7}, ()),
        ("access", {"username": ""}, ()),
    ],
    ids=repr,
)
async def test_refuses_claim_of_the_wrong_type_or_missing(
    verify_with: VerifyWith, sign: Sign, token_use: str, changes: dict[str, Any], omit: tuple[str, ...]
) -> None:
    with pytest.raises(ClaimTypeInvalid):
        await verify_with(token_use="any")(sign(kind=token_use, omit=omit, **changes))


async def test_machine_to_machine_access_token_names_its_app_client_as_the_user(
    verify_with: VerifyWith, issuer: LocalIssuer
) -> None:
    # client_credentials tokens carry no username; sub is the app client id.
    claims = issuer.claims(token_use="access", iat=NOW, exp=NOW + 3600, scopes=("siot/read",))
    del claims["username"]
    claims["sub"] = issuer.client_id
    principal = await verify_with(token_use="access")(issuer.sign(claims))

    assert principal.username == issuer.client_id
    assert principal.client_id == issuer.client_id
    assert principal.scopes == ("siot/read",)


# -- the principal -----------------------------------------------------------------------------------------


async def test_principal_from_id_token(verify: Verify, issuer: LocalIssuer) -> None:
    claims = issuer.claims(
        username="carol", groups=["admin", "ops"], email="carol@example.com", iat=NOW - 10, exp=NOW + 3590
    )

    principal = await verify(issuer.sign(claims))

    assert principal.sub == claims["sub"]
    assert principal.username == "carol"
    assert principal.groups == ("admin", "ops")
    assert principal.scopes == ()
    assert principal.token_use == "id"
    assert principal.client_id == issuer.client_id
    assert principal.email == "carol@example.com"
    assert principal.issuer == issuer.issuer
    assert principal.issued_at == datetime(2025, 6, 15, 15, 6, 30, tzinfo=UTC)
    assert principal.expires_at == principal.issued_at + timedelta(hours=1)
    assert principal.model_dump()["claims"] == claims  # read-only: arrays are tuples in the principal


async def test_principal_from_access_token(verify_with: VerifyWith, issuer: LocalIssuer) -> None:
    claims = issuer.claims(
        token_use="access",
        username="dave",
        groups=["ops"],
        scopes=(),
        scope="siot/read  siot/write aws.cognito.signin.user.admin",
        iat=NOW,
        exp=NOW + 60,
    )

    principal = await verify_with(token_use="access")(issuer.sign(claims))

    assert principal.username == "dave"
    assert principal.groups == ("ops",)
    assert principal.scopes == ("siot/read", "siot/write", "aws.cognito.signin.user.admin")
    assert principal.token_use == "access"
    assert principal.client_id == issuer.client_id
    assert principal.email is None
    assert principal.model_dump()["claims"] == claims  # read-only: arrays are tuples in the principal
    assert "aud" not in principal.claims


@pytest.mark.parametrize(
    ("token_use", "expected"),
    [("id", "from-cognito-username"), ("access", "from-username")],
)
async def test_username_comes_from_the_claim_of_its_token_kind(
    verify_with: VerifyWith, sign: Sign, token_use: str, expected: str
) -> None:
    token = sign(
        kind=token_use,
        **{"cognito:username": "from-cognito-username", "username": "from-username"},
    )

    assert (await verify_with(token_use="any")(token)).username == expected


@pytest.mark.parametrize("scope", ["", "   "])
async def test_blank_scope_grants_no_scopes(verify_with: VerifyWith, sign: Sign, scope: str) -> None:
    principal = await verify_with(token_use="access")(sign(kind="access", scope=scope))

    assert principal.scopes == ()


async def test_principal_without_groups_claim_has_no_groups(verify: Verify, sign: Sign) -> None:
    principal = await verify(sign())

    assert "cognito:groups" not in principal.claims
    assert principal.groups == ()


async def test_principal_times_are_aware_utc(verify: Verify, sign: Sign) -> None:
    principal = await verify(sign())

    for moment in (principal.issued_at, principal.expires_at):
        assert moment.tzinfo is not None
        assert moment.utcoffset() == timedelta(0)
    assert principal.issued_at.timestamp() == NOW
    assert principal.expires_at.timestamp() == NOW + 3600


@pytest.mark.parametrize(
    ("field", "value"),
    [("username", "mallory"), ("groups", ("admin",)), ("client_id", "other"), ("claims", {})],
)
async def test_principal_is_frozen(verify: Verify, sign: Sign, field: str, value: Any) -> None:
    principal = await verify(sign())

    with pytest.raises(ValidationError):
        setattr(principal, field, value)


@pytest.mark.parametrize(
    "change",
    [
        lambda fields: fields.clear(),
        lambda fields: fields.add("extra"),
        lambda fields: fields.discard("sub"),
        lambda fields: fields.intersection_update({"sub"}),
    ],
    ids=["clear", "add", "discard", "intersection_update"],
)
async def test_one_principal_cannot_change_how_another_serializes(
    verify: Verify, sign: Sign, change: Callable[[set[str]], object]
) -> None:
    """Every principal shares one fields set (one object for the collector, not one per entry)."""
    first, second = await verify(sign(sub="first")), await verify(sign(sub="second"))

    with pytest.raises(TypeError, match="shared"):
        change(first.model_fields_set)

    assert second.model_dump(exclude_unset=True) == second.model_dump()
    renamed = first.model_copy(update={"username": "other"})
    assert renamed.username == "other"
    assert renamed.model_fields_set == set(Principal.model_fields)


async def test_a_principal_is_hashable_like_any_frozen_model(verify_with: VerifyWith, sign: Sign) -> None:
    """Equal principals hash alike, so they can be set members, dict keys and lru_cache arguments."""
    token = sign(**{"cognito:groups": ["admin"], "identities": [{"providerName": "Google", "userId": "1"}]})
    first = await verify_with(verified_cache_size=0)(token)
    again = await verify_with(verified_cache_size=0)(token)
    other = await verify_with(verified_cache_size=0)(sign(sub="someone-else"))

    assert first is not again
    assert first == again
    assert hash(first) == hash(again)
    assert {first, again, other} == {first, other}
    assert len({first, again, other}) == 2
    assert hash(first.claims) == hash(Principal.model_validate(first.model_dump()).claims)


async def test_every_claim_rule_failure_is_an_invalid_token_401(verify: Verify, sign: Sign) -> None:
    with pytest.raises(InvalidToken) as caught:
        await verify(sign(exp=NOW - 3600))

    assert caught.value.status_code == 401
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}


# -- the principal is built without validating twice, and equals a validated one ------------


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("id", {}),
        ("id", {"cognito:groups": ["admin", "ops"], "email": "hank@example.com"}),
        ("access", {"scope": "siot/read siot/write", "username": "hank"}),
        ("id", {"identities": [{"providerName": "Google", "userId": "1"}], "profile": {"plan": "pro"}}),
    ],
)
async def test_principal_built_by_the_rules_equals_a_validated_one(
    verify_with: VerifyWith, sign: Sign, kind: Literal["id", "access"], changes: dict[str, Any]
) -> None:
    principal = await verify_with(token_use="any")(sign(kind=kind, **changes))
    validated = Principal.model_validate(principal.model_dump())

    assert principal == validated
    assert principal.model_dump() == validated.model_dump()
    assert principal.model_fields_set == validated.model_fields_set
    assert principal.model_dump_json() == validated.model_dump_json()
    assert [type(getattr(principal, name)) for name in Principal.model_fields] == [
        type(getattr(validated, name)) for name in Principal.model_fields
    ]
    assert principal.model_copy(update={"username": "other"}).username == "other"


async def test_claims_read_back_frozen_however_they_are_read(verify: Verify, sign: Sign) -> None:
    principal = await verify(sign(**{"cognito:groups": ["admin"], "profile": {"tags": ["a"]}}))
    claims = principal.claims

    assert claims["cognito:groups"] == claims.get("cognito:groups") == ("admin",)
    assert dict(claims.items())["profile"]["tags"] == ("a",)
    assert claims.get("absent") is None
    assert "absent" not in claims
    assert len(claims) == len(list(claims))
    with pytest.raises(TypeError):
        claims["profile"]["tags"] = ()  # type: ignore[index]
