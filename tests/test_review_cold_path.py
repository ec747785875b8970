"""The review of issue 18's cold-path changes: the behaviours those shortcuts must keep, pinned at their edges.

The parser's bracket count lets the claim rules skip looking for values to
freeze when it proves there are none besides the groups array; the rows
below sit on each side of that proof (one container left, or none; counted
by the fast parser, or not counted at all), so a count that is one short, or
blind to one bracket kind, leaves a list in a principal and fails here. The
rules' lookups that return the configured string must still refuse values
that are not strings, unhashable ones included, with the same error. The
verified cache now demotes inside the put's lock round: threads that verify,
revive and clear at once must never see a wrong principal or a cache past its
bounds. Principals that share a groups tuple must not share a change.
"""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pytest

from siot_authz import (
    ClientNotAllowed,
    IssuerInvalid,
    Principal,
    TokenUseMismatch,
    TokenVerifier,
)
from siot_authz import _claims as claims_module
from siot_authz import _pools as pools_module
from siot_authz._claims import ClaimRules
from siot_authz._token import parse_token
from siot_authz._verified_cache import VerifiedTokenCache
from siot_authz.testing import LocalIssuer


@pytest.fixture
def held_verifier(issuer: LocalIssuer) -> Iterator[TokenVerifier]:
    """A verifier holding the issuer's keys from the start (handed in: no fetch), ID and access tokens alike."""
    verifier = TokenVerifier(issuer.settings(token_use="any"), jwks={issuer.user_pool_id: issuer.jwks()})
    yield verifier
    verifier.close()


def _deeply_frozen(value: Any) -> bool:
    """True when ``value`` holds nothing a handler could change: atoms, tuples and read-only mappings only."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if type(value) is tuple:
        return all(map(_deeply_frozen, value))
    if isinstance(value, Mapping) and not isinstance(value, dict):
        if hasattr(value, "__setitem__"):
            return False
        return all(map(_deeply_frozen, value.values()))
    return False


# -- the bracket count's proof, at its edges -------------------------------------------------------

_PAD = "x" * 5000  # past the fast parser's 4,096 bytes: the reference parser decides, nothing is counted

_EDGES = [
    pytest.param({"cognito:groups": ["admin"], "amr": ["pwd"]}, id="groups-and-one-array"),
    pytest.param({"cognito:groups": ["admin"], "profile": {"plan": "pro"}}, id="groups-and-one-object"),
    pytest.param({"cognito:groups": [], "amr": ["pwd"]}, id="empty-groups-and-one-array"),
    pytest.param({"amr": ["pwd"]}, id="one-array-no-groups"),
    pytest.param({"profile": {"plan": "pro"}}, id="one-object-no-groups"),
    pytest.param({"profile": {}}, id="one-empty-object-no-groups"),
    pytest.param({"amr": []}, id="one-empty-array-no-groups"),
    pytest.param({"cognito:groups": ["[{"], "note": "{[", "amr": ["pwd"]}, id="brackets-in-strings-too"),
    pytest.param({"[": "{", "amr": [["nested"]]}, id="brackets-in-a-name-and-nested-arrays"),
    pytest.param({"cognito:groups": ["admin"], "amr": ["pwd"], "pad": _PAD}, id="too-long-to-count"),
    pytest.param({"cognito:groups": ["admin"], "amr": ["caf\u00e9"]}, id="escaped-so-not-counted"),
    pytest.param({"cognito:groups": [f"group-{i}" for i in range(300)], "amr": ["pwd"]}, id="many-groups"),
]


@pytest.mark.parametrize("extra", _EDGES)
@pytest.mark.parametrize("token_use", ["id", "access"])
def test_every_claim_of_a_new_token_is_frozen_whatever_the_parser_counted(
    issuer: LocalIssuer,
    held_verifier: TokenVerifier,
    extra: dict[str, Any],
    token_use: Literal["id", "access"],
) -> None:
    groups = extra.get("cognito:groups", ())
    others = {name: value for name, value in extra.items() if name != "cognito:groups"}
    token = issuer.mint(token_use=token_use, groups=groups, **others)
    sent = parse_token(token, 1 << 20).claims

    new = held_verifier.verify_sync(token)
    hit = held_verifier.verify_sync(token)

    assert hit is new  # the cache hands the same object on: nothing in it may be changeable
    assert _deeply_frozen(new.claims)
    assert json.loads(new.model_dump_json())["claims"] == sent
    assert new.groups == tuple(groups)
    if groups:
        assert new.claims["cognito:groups"] is new.groups


# -- the rules' lookups: anything but a configured string is refused, as before --------------------

_NOT_STRINGS = [["a"], {"a": 1}, [], {}, 7, 1.5, True, None]


@pytest.mark.parametrize("value", _NOT_STRINGS, ids=repr)
@pytest.mark.parametrize(
    ("claim", "token_use", "refusal"),
    [
        ("iss", "id", IssuerInvalid),
        ("aud", "id", ClientNotAllowed),
        ("client_id", "access", ClientNotAllowed),
        ("token_use", "id", TokenUseMismatch),
    ],
)
def test_rules_refuse_a_claim_that_is_not_a_string_even_if_unhashable(
    issuer: LocalIssuer, claim: str, token_use: str, refusal: type[Exception], value: Any
) -> None:
    rules = ClaimRules(issuer.settings(token_use="any"))
    claims = {**issuer.claims(token_use=token_use), claim: value}  # type: ignore[arg-type]

    with pytest.raises(refusal):
        rules.check(claims, time.time())


@pytest.mark.parametrize("value", [["siotlocalclient0000000000"], {"siotlocalclient0000000000": 1}, 0])
@pytest.mark.parametrize(("claim", "token_use"), [("aud", "id"), ("client_id", "access")])
def test_verifier_refuses_an_app_client_that_is_not_a_string(
    issuer: LocalIssuer, held_verifier: TokenVerifier, claim: str, token_use: str, value: Any
) -> None:
    token = issuer.mint(token_use=token_use, **{claim: value})  # type: ignore[arg-type]

    with pytest.raises(ClientNotAllowed):
        held_verifier.verify_sync(token)


def test_rules_take_the_configured_strings_and_the_literal_token_use(issuer: LocalIssuer) -> None:
    rules = ClaimRules(issuer.settings(token_use="any"))
    claims = issuer.claims(token_use="access")
    claims.update(iss="".join(claims["iss"]), client_id="".join(claims["client_id"]), token_use="acc" + "ess")

    principal = rules.check(claims, time.time())

    assert (principal.issuer, principal.client_id, principal.token_use) == (
        claims["iss"],
        claims["client_id"],
        "access",
    )
    assert [type(value) for value in (principal.issuer, principal.client_id, principal.token_use)] == [
        str
    ] * 3


# -- shared groups: one tuple, never one change -----------------------------------------------------


def test_a_change_to_one_principal_never_shows_in_another_that_shares_its_groups(
    issuer: LocalIssuer, held_verifier: TokenVerifier
) -> None:
    first = held_verifier.verify_sync(issuer.mint(username="first", groups=["ops", "admin"]))
    second = held_verifier.verify_sync(issuer.mint(username="second", groups=["ops", "admin"]))
    assert first.groups is second.groups  # what the shared table is for

    changed = first.model_copy(update={"groups": ("changed",), "username": "third"})

    assert changed.groups == ("changed",)
    assert (first.groups, second.groups) == (("ops", "admin"), ("ops", "admin"))
    assert (first.username, second.username) == ("first", "second")
    assert first.claims["cognito:groups"] == second.claims["cognito:groups"] == ("ops", "admin")
    assert first != second


def test_the_shared_group_sets_stay_within_their_real_bound(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims_module, "_groups_seen", {})
    rules = ClaimRules(issuer.settings())
    count = claims_module._MAX_GROUP_SETS + 100
    now = time.time()

    principals = [rules.check(issuer.claims(groups=[f"team-{i}", "all"]), now) for i in range(count)]

    assert 0 < len(claims_module._groups_seen) <= claims_module._MAX_GROUP_SETS
    assert [principal.groups for principal in principals] == [(f"team-{i}", "all") for i in range(count)]


def test_a_set_of_more_groups_than_is_shared_is_used_as_it_is_and_never_kept(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims_module, "_groups_seen", {})
    rules = ClaimRules(issuer.settings())
    many = [f"{'g' * 120}-{i}" for i in range(claims_module._MAX_SHARED_GROUP_NAMES + 1)]
    few = many[: claims_module._MAX_SHARED_GROUP_NAMES]

    large = rules.check(issuer.claims(groups=many), time.time())
    small = rules.check(issuer.claims(groups=few), time.time())

    assert large.groups == tuple(many)
    assert small.groups == tuple(few)
    assert list(claims_module._groups_seen) == [tuple(few)]


def test_what_the_shared_group_sets_hold_is_bounded_in_names_as_well_as_in_sets(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims_module, "_groups_seen", {})
    rules = ClaimRules(issuer.settings())
    now = time.time()
    # Cognito's worst case: many distinct sets of up to 100 long names each.
    for i in range(claims_module._MAX_GROUP_SETS * 2):
        size = 100 if i % 2 else claims_module._MAX_SHARED_GROUP_NAMES
        rules.check(issuer.claims(groups=[f"{'n' * 120}-{i}-{j}" for j in range(size)]), now)

    held = sum(len(groups) for groups in claims_module._groups_seen)
    assert held <= claims_module._MAX_GROUP_SETS * claims_module._MAX_SHARED_GROUP_NAMES


# -- the verified cache under threads, with a cold tier to demote to -------------------------------


def _principals(issuer: LocalIssuer, count: int) -> list[Principal]:
    rules = ClaimRules(issuer.settings())
    now = time.time()
    return [
        rules.check(issuer.claims(username=f"user{i}", groups=[f"g{i % 3}"], amr=[i]), now)
        for i in range(count)
    ]


def test_put_get_and_clear_from_many_threads_keep_each_token_to_its_own_principal(
    issuer: LocalIssuer,
) -> None:
    principals = _principals(issuer, 40)
    cache = VerifiedTokenCache(12, hot_entries=4)
    digests = [VerifiedTokenCache.digest(f"header.payload-{i}.signature") for i in range(len(principals))]
    expires_at = time.time() + 600
    trusted = lambda kid, key: True  # noqa: E731
    start = threading.Barrier(6)

    def hammer(worker: int) -> list[str]:
        rng = random.Random(worker)
        start.wait()
        problems = []
        for step in range(1500):
            i = rng.randrange(len(principals))
            if rng.random() < 0.4:
                cache.put(digests[i], principals[i], "kid", 1, expires_at, signature=b"signature")
            else:
                found = cache.get(digests[i], trusted, b"signature")
                if found is not None and (found.username, found.claims["amr"]) != (f"user{i}", (i,)):
                    problems.append(f"token {i} gave {found.username}")
            if worker == 0 and step % 50 == 0:
                cache.clear()
            if len(cache) > 12:
                problems.append(f"{len(cache)} entries held")
        return problems

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(hammer, range(6)))

    assert [problem for problems in results for problem in problems] == []
    hot, cold = set(cache.hot_entries), set(cache.cold_entries)
    assert not hot & cold
    assert len(hot) <= 4
    assert len(hot) + len(cold) <= 12


def test_verify_from_many_threads_through_both_tiers_gives_each_token_its_own_principal(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hot tier of four in a cache of twelve, so every new token demotes one and hits revive others.
    monkeypatch.setattr(
        pools_module, "VerifiedTokenCache", functools.partial(VerifiedTokenCache, hot_entries=4)
    )
    verifier = TokenVerifier(
        issuer.settings(verified_cache_size=12), jwks={issuer.user_pool_id: issuer.jwks()}
    )
    tokens = [issuer.mint(username=f"user{i}", groups=[f"g{i % 3}"]) for i in range(24)]
    start = threading.Barrier(8)

    def hammer(worker: int) -> list[str]:
        start.wait()
        problems = []
        for round_ in range(120):
            i = (worker * 7 + round_) % len(tokens)
            principal = verifier.verify_sync(tokens[i])
            if (principal.username, principal.groups) != (f"user{i}", (f"g{i % 3}",)):
                problems.append(f"token {i} gave {principal.username}")
            if not _deeply_frozen(principal.claims):
                problems.append(f"token {i} has a claim that can change")
        return problems

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(hammer, range(8)))
        cache = verifier.pools[0].verified
        assert [problem for problems in results for problem in problems] == []
        assert len(cache.hot_entries) == 4
        assert len(cache) == 12
        assert not set(cache.hot_entries) & set(cache.cold_entries)
    finally:
        verifier.close()
