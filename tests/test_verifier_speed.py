"""What the cold-path speed work promises: the shortcuts it takes and the behaviour they keep.

A new token whose key is held and which has no check runs the whole
pipeline at once, on both faces, without the generator, the await or the
blocking key call; anything else still waits as before. The claim rules
test plain JSON types inline and leave every other value to the helpers
that accepted or refused it before; a verified cache no larger than its hot
tier evicts without taking entries apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from siot_authz import (
    CheckFailed,
    ClaimTypeInvalid,
    Principal,
    SignatureInvalid,
    TokenExpired,
    TokenVerifier,
)
from siot_authz import _claims as claims_module
from siot_authz import _verified_cache as verified_cache_module
from siot_authz._claims import ClaimRules
from siot_authz._verified_cache import VerifiedTokenCache
from siot_authz.testing import JwksServer, LocalIssuer


@pytest.fixture
def held_verifier(issuer: LocalIssuer) -> Iterator[TokenVerifier]:
    """A verifier holding the issuer's keys from the start (handed in: no fetch)."""
    verifier = TokenVerifier(issuer.settings(), jwks={issuer.user_pool_id: issuer.jwks()})
    yield verifier
    verifier.close()


class _KeyCallsRecorded:
    """Replaces a key cache's waiting calls, so a test can see whether the pipeline used them."""

    def __init__(self, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        keys = verifier.keys
        real_async, real_sync = keys.get_key, keys.get_key_sync

        async def get_key(kid: str) -> Any:
            self.calls.append("get_key")
            return await real_async(kid)

        def get_key_sync(kid: str) -> Any:
            self.calls.append("get_key_sync")
            return real_sync(kid)

        monkeypatch.setattr(keys, "get_key", get_key)
        monkeypatch.setattr(keys, "get_key_sync", get_key_sync)


def _run_without_suspending(verifier: TokenVerifier, token: str) -> Principal:
    """Drive ``verify`` by hand: it must finish on its first step, never yielding to an event loop."""
    coroutine = verifier.verify(token)
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)
    principal: Principal = finished.value.value
    return principal


def test_async_face_verifies_a_new_token_with_a_held_key_without_suspending(
    issuer: LocalIssuer, held_verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _KeyCallsRecorded(held_verifier, monkeypatch)

    principal = _run_without_suspending(held_verifier, issuer.mint(username="new-async", groups=["ops"]))

    assert (principal.username, principal.groups) == ("new-async", ("ops",))
    assert recorded.calls == []
    assert len(held_verifier.pools[0].verified) == 1  # remembered, as on the waiting path


def test_sync_face_verifies_a_new_token_with_a_held_key_without_the_blocking_key_call(
    issuer: LocalIssuer, held_verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _KeyCallsRecorded(held_verifier, monkeypatch)

    principal = held_verifier.verify_sync(issuer.mint(username="new-sync"))

    assert principal.username == "new-sync"
    assert recorded.calls == []


@pytest.mark.anyio
async def test_a_key_not_held_yet_is_still_waited_for_on_both_faces(
    issuer: LocalIssuer, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async_verifier = TokenVerifier(issuer.settings())
    sync_verifier = TokenVerifier(issuer.settings())
    async_calls = _KeyCallsRecorded(async_verifier, monkeypatch)
    sync_calls = _KeyCallsRecorded(sync_verifier, monkeypatch)
    try:
        from_async = await async_verifier.verify(issuer.mint(username="first-async"))
        from_sync = sync_verifier.verify_sync(issuer.mint(username="first-sync"))
    finally:
        await async_verifier.aclose()
        sync_verifier.close()

    assert (from_async.username, from_sync.username) == ("first-async", "first-sync")
    assert (async_calls.calls, sync_calls.calls) == (["get_key"], ["get_key_sync"])
    assert jwks_server.request_count == 2


@pytest.mark.anyio
async def test_with_a_check_a_new_token_waits_for_its_answer_even_with_the_key_held(
    issuer: LocalIssuer,
) -> None:
    seen: list[str] = []

    async def check(principal: Principal) -> bool:
        seen.append(principal.username)
        return principal.username != "refused"

    verifier = TokenVerifier(issuer.settings(), jwks={issuer.user_pool_id: issuer.jwks()}, check=check)
    try:
        accepted = await verifier.verify(issuer.mint(username="accepted"))
        with pytest.raises(CheckFailed):
            await verifier.verify(issuer.mint(username="refused"))
    finally:
        await verifier.aclose()

    assert accepted.username == "accepted"
    assert seen == ["accepted", "refused"]


def test_the_shortcut_refuses_exactly_like_the_waiting_path(
    issuer: LocalIssuer, held_verifier: TokenVerifier
) -> None:
    expired = issuer.mint(expires_in=-60)
    forged = issuer.mint(username="forged")[:-4] + "AAAA"

    with pytest.raises(TokenExpired):
        _run_without_suspending(held_verifier, expired)
    with pytest.raises(SignatureInvalid):
        held_verifier.verify_sync(forged)

    assert len(held_verifier.pools[0].verified) == 0


# -- the claim rules: plain JSON types inline, everything else as before ---------------------------


class _Text(str):
    """A str subclass: never made by the JSON parser, but accepted by the rules when handed one."""


class _Seconds(int):
    """An int subclass, likewise."""


@pytest.fixture
def rules(issuer: LocalIssuer) -> ClaimRules:
    return ClaimRules(issuer.settings())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"sub": _Text("sub-as-subclass")}, {"sub": "sub-as-subclass"}, id="str-subclass-sub"),
        pytest.param(
            {"cognito:username": _Text("subclass-user")},
            {"username": "subclass-user"},
            id="str-subclass-user",
        ),
        pytest.param({"email": _Text("e@example.com")}, {"email": "e@example.com"}, id="str-subclass-email"),
        pytest.param({"email": None}, ClaimTypeInvalid, id="email-null"),
        pytest.param({"email": 7}, ClaimTypeInvalid, id="email-number"),
        pytest.param({"sub": ""}, ClaimTypeInvalid, id="sub-empty"),
        pytest.param({"sub": None}, ClaimTypeInvalid, id="sub-null"),
        pytest.param({"cognito:username": ["a"]}, ClaimTypeInvalid, id="username-list"),
        pytest.param({"exp": True}, ClaimTypeInvalid, id="exp-bool"),
        pytest.param({"iat": False}, ClaimTypeInvalid, id="iat-bool"),
        pytest.param({"exp": -1}, ClaimTypeInvalid, id="exp-negative"),
        pytest.param({"exp": 253_402_300_800}, ClaimTypeInvalid, id="exp-past-year-9999"),
        pytest.param(
            {"exp": _Seconds(int(time.time()) + 600)}, {"username": "alice"}, id="int-subclass-exp-accepted"
        ),
        pytest.param({"exp": time.time() + 600.5}, {"username": "alice"}, id="float-exp"),
        pytest.param({"cognito:groups": ["a", 1]}, ClaimTypeInvalid, id="groups-with-a-number"),
        pytest.param({"cognito:groups": "admin"}, ClaimTypeInvalid, id="groups-string"),
        pytest.param({"cognito:groups": None}, ClaimTypeInvalid, id="groups-null"),
        pytest.param({"cognito:groups": [_Text("ops")]}, {"groups": ("ops",)}, id="groups-of-str-subclass"),
        pytest.param({"cognito:groups": []}, {"groups": ()}, id="groups-empty"),
    ],
)
def test_rules_accept_and_refuse_every_value_as_the_helpers_do(
    rules: ClaimRules, issuer: LocalIssuer, changes: dict[str, Any], expected: Any
) -> None:
    claims = {**issuer.claims(groups=["admin"]), **changes}

    if isinstance(expected, type):
        with pytest.raises(expected):
            rules.check(claims, time.time())
        return
    principal = rules.check(claims, time.time())
    assert {name: getattr(principal, name) for name in expected} == expected


def test_access_token_scope_is_refused_unless_a_string(rules: ClaimRules, issuer: LocalIssuer) -> None:
    settings = issuer.settings(token_use="access")
    access_rules = ClaimRules(settings)
    claims = issuer.claims(token_use="access")

    assert access_rules.check(claims, time.time()).scopes == ("aws.cognito.signin.user.admin",)
    for scope in (None, ["a"], 3):
        with pytest.raises(ClaimTypeInvalid):
            access_rules.check({**claims, "scope": scope}, time.time())


def test_the_principal_and_its_claims_share_one_groups_tuple_and_leave_the_input_alone(
    rules: ClaimRules, issuer: LocalIssuer
) -> None:
    claims = issuer.claims(groups=["admin", "ops"], profile={"plan": "pro"}, identities=[{"id": 1}])
    before = repr(claims)

    principal = rules.check(claims, time.time())

    assert principal.groups == ("admin", "ops")
    assert principal.claims["cognito:groups"] is principal.groups
    assert principal.claims["identities"][0]["id"] == 1
    assert dict(principal.claims["profile"]) == {"plan": "pro"}
    assert list(principal.claims) == list(claims)
    assert repr(claims) == before  # the caller's dict is not changed


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="no-arrays"),
        pytest.param({"cognito:groups": []}, id="empty-groups-only"),
        pytest.param({"cognito:groups": ["admin"]}, id="groups-only"),
        pytest.param({"amr": ["pwd"]}, id="one-array-not-groups"),
        pytest.param({"cognito:groups": ["admin"], "amr": ["pwd", "mfa"]}, id="groups-and-another-array"),
        pytest.param({"cognito:groups": ["admin"], "profile": {"tags": ["a"]}}, id="groups-and-an-object"),
        pytest.param({"identities": [{"userId": "1"}]}, id="objects-in-an-array"),
    ],
)
def test_every_array_and_object_of_a_new_token_reads_back_frozen_whatever_the_parser_counted(
    issuer: LocalIssuer, held_verifier: TokenVerifier, changes: dict[str, Any]
) -> None:
    # The parser's count of arrays and objects lets the rules skip looking for
    # any besides the groups array; every layout must still come out frozen.
    principal = held_verifier.verify_sync(issuer.mint(username="frozen", **changes))

    def is_frozen(value: Any) -> bool:
        if isinstance(value, (list, dict)):
            return False
        if isinstance(value, tuple):
            return all(map(is_frozen, value))
        if isinstance(value, Mapping):
            return all(map(is_frozen, value.values()))
        return True

    assert all(is_frozen(value) for value in principal.claims.values())
    assert principal == Principal.model_validate(principal.model_dump())
    if "cognito:groups" in changes:
        assert principal.claims["cognito:groups"] is principal.groups
        assert principal.groups == tuple(changes["cognito:groups"])


def test_principals_hold_their_pools_own_strings_and_share_each_set_of_groups(
    issuer: LocalIssuer, held_verifier: TokenVerifier
) -> None:
    first, second = (
        held_verifier.verify_sync(issuer.mint(username=name, groups=["team-admins", "devices-rw"]))
        for name in ("ada", "bob")
    )

    # One object per pool, not each token's own copy (which the claims keep).
    assert first.issuer is second.issuer == first.claims["iss"]
    assert first.issuer is not first.claims["iss"]
    assert first.client_id is second.client_id == first.claims["aud"]
    assert first.client_id is not first.claims["aud"]
    assert first.token_use is second.token_use == "id"
    assert first.groups is second.groups == ("team-admins", "devices-rw")
    assert first.claims["cognito:groups"] is first.groups
    assert first.username != second.username


def test_the_shared_group_sets_stay_bounded(
    issuer: LocalIssuer, rules: ClaimRules, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims_module, "_groups_seen", {})
    monkeypatch.setattr(claims_module, "_MAX_GROUP_SETS", 3)
    principals = [rules.check(issuer.claims(groups=[f"team-{i}"]), time.time()) for i in range(10)]

    assert len(claims_module._groups_seen) <= 3
    assert [principal.groups for principal in principals] == [(f"team-{i}",) for i in range(10)]


# -- the verified cache: no cold tier to fill, no entry taken apart ------------------------------


def _principal(issuer: LocalIssuer, rules: ClaimRules, username: str) -> Principal:
    return rules.check(issuer.claims(username=username, expires_in=600), time.time())


def test_a_cache_no_larger_than_its_hot_tier_evicts_the_least_recently_used_without_taking_it_apart(
    issuer: LocalIssuer, rules: ClaimRules, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(principal: Principal) -> Any:
        raise AssertionError("an entry was taken apart for a cold tier that cannot hold it")

    monkeypatch.setattr(verified_cache_module, "principal_parts", never)
    cache = VerifiedTokenCache(2, hot_entries=2)
    trusted = lambda kid, key: True  # noqa: E731
    for name in ("a", "b"):
        cache.put(name.encode(), _principal(issuer, rules, name), "kid", 1, signature=b"s")
    assert cache.get(b"a", trusted, b"s") is not None  # "a" is now the most recently used

    cache.put(b"c", _principal(issuer, rules, "c"), "kid", 1, signature=b"s")

    assert [cache.get(name, trusted, b"s") is not None for name in (b"a", b"b", b"c")] == [True, False, True]
    assert (len(cache.hot_entries), len(cache.cold_entries)) == (2, 0)


def test_a_cache_larger_than_its_hot_tier_still_keeps_the_oldest_in_the_cold_tier(
    issuer: LocalIssuer, rules: ClaimRules
) -> None:
    cache = VerifiedTokenCache(3, hot_entries=2)
    for name in ("a", "b", "c"):
        cache.put(name.encode(), _principal(issuer, rules, name), "kid", 1, signature=b"s")

    assert (len(cache.hot_entries), len(cache.cold_entries)) == (2, 1)
    revived = cache.get(b"a", lambda kid, key: True, b"s")
    assert revived is not None
    assert revived.username == "a"


@pytest.mark.parametrize("given", [True, False], ids=["exp-given", "exp-read-from-principal"])
def test_put_never_caches_a_token_at_or_past_its_exp(
    issuer: LocalIssuer, rules: ClaimRules, given: bool
) -> None:
    now = time.time()
    cache = VerifiedTokenCache(4, clock=lambda: now)
    claims = issuer.claims(iat=int(now) - 120, exp=int(now) - 60)
    principal = rules.check(claims, now - 90)  # valid then, expired now
    expires_at = principal.expires_at.timestamp() if given else None

    cache.put(b"late", principal, "kid", 1, expires_at, signature=b"s")

    assert len(cache) == 0
