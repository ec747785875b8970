"""The verified-token cache: the security rules it keeps, and that it keeps them under threads.

Rules pinned here (see ``_verified_cache.py``): a hit is the very token that
verified (the digest of its signed part, and its signature segment as sent);
an entry is never served at or after ``exp``; entries of a key
that left the JWKS go; the cache is bounded. Also: a cache hit skips RSA, and
the async FastAPI path sends nothing to a threadpool. No timing assertions.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import hypothesis
import pytest
from fastapi.testclient import TestClient
from hypothesis import strategies as st

from fake_clock import FakeClock
from siot_authz import (
    AuthError,
    AuthSettings,
    KeyIdUnknown,
    Principal,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenRevoked,
    TokenVerifier,
)
from siot_authz._jose import _JoseRS256Key
from siot_authz._pools import Pool
from siot_authz._verified_cache import HOT_ENTRIES, SWEEP_INTERVAL_SECONDS, VerifiedTokenCache
from siot_authz.testing import LocalIssuer, b64url
from spare_keys import spare_key, spare_key_as


def _whole_second_clock() -> FakeClock:
    return FakeClock(float(int(time.time())))  # exp claims are whole seconds


def _principal(expires_at: float, username: str = "alice") -> Principal:
    return Principal.model_construct(
        sub=f"sub-{username}",
        username=username,
        groups=(),
        scopes=(),
        token_use="id",
        client_id="client",
        email=None,
        issuer="https://issuer.example",
        user_pool_id="us-east-1_Pool1",
        issued_at=datetime.fromtimestamp(expires_at - 3600, tz=UTC),
        expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
        claims={},
    )


KEY = object()  # stands for the key object that verified a token
SIGNATURE = b"signature-segment"  # what a hit must present: the token's signature, as sent


def _always_trusted(kid: str, key: object) -> bool:
    return True


def test_the_signature_a_hit_must_present_has_no_default() -> None:
    # An empty default would let a caller that forgot it cache entries that any signature hits.
    for method in (VerifiedTokenCache.put, VerifiedTokenCache.get, Pool.remember):
        assert inspect.signature(method).parameters["signature"].default is inspect.Parameter.empty


@pytest.fixture
def count_rsa_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records the signing input's digest for every RSA signature check the verifier makes."""
    calls: list[bytes] = []
    original = _JoseRS256Key.verify_digest

    def counting(self: _JoseRS256Key, digest: bytes, signature: bytes) -> bool:
        calls.append(digest)
        return original(self, digest, signature)

    monkeypatch.setattr(_JoseRS256Key, "verify_digest", counting)
    return calls


# -- a hit replaces the RSA check, and only for the very same token -------------------


def test_repeat_token_is_served_from_cache_without_rsa(
    verifier: TokenVerifier, issuer: LocalIssuer, count_rsa_checks: list[bytes]
) -> None:
    token = issuer.mint(username="alice")
    first = verifier.verify_sync(token)
    again = verifier.verify_sync(f"Bearer {token}")
    assert again is first
    assert len(count_rsa_checks) == 1


@pytest.mark.anyio
async def test_async_and_sync_faces_share_the_cache(
    verifier: TokenVerifier, issuer: LocalIssuer, count_rsa_checks: list[bytes]
) -> None:
    token = issuer.mint()
    first = await verifier.verify(token)
    assert verifier.verify_sync(token) is first
    assert len(count_rsa_checks) == 1


def _flip_last_char(segment: str) -> str:
    return segment[:-1] + ("A" if segment[-1] != "A" else "B")


def _resign_payload_only(token: str, issuer: LocalIssuer) -> str:
    header, _, signature = token.split(".")
    # It names the right issuer, so it is routed to the pool and reaches the signature check.
    forged_claims = b64url(json.dumps({"sub": "mallory", "iss": issuer.issuer}).encode())
    return f"{header}.{forged_claims}.{signature}"


def _signature_of_other_token(token: str, issuer: LocalIssuer) -> str:
    header, payload, _ = token.split(".")
    other_signature = issuer.mint(username="bob").split(".")[2]
    return f"{header}.{payload}.{other_signature}"


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        pytest.param(lambda t, i: _flip_last_char(t), (SignatureInvalid, TokenMalformed), id="last-char"),
        pytest.param(_resign_payload_only, SignatureInvalid, id="payload-swapped"),
        pytest.param(_signature_of_other_token, SignatureInvalid, id="signature-swapped"),
        pytest.param(lambda t, i: t + "A", (SignatureInvalid, TokenMalformed), id="appended"),
        pytest.param(lambda t, i: t[:-4], (SignatureInvalid, TokenMalformed), id="truncated"),
    ],
)
def test_cached_token_does_not_vouch_for_a_variant_of_it(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    tamper: Callable[[str, LocalIssuer], str],
    error: type[AuthError] | tuple[type[AuthError], ...],
) -> None:
    token = issuer.mint()
    verifier.verify_sync(token)
    with pytest.raises(error):
        verifier.verify_sync(tamper(token, issuer))


@pytest.mark.parametrize("position", [0, 40, 500, -345, -344, -343, -40, -1])
def test_the_key_covers_every_position_of_the_token(issuer: LocalIssuer, position: int) -> None:
    token = issuer.mint()
    changed = list(token)
    changed[position] = "x" if token[position] != "x" else "y"
    assert VerifiedTokenCache.key_of("".join(changed)) != VerifiedTokenCache.key_of(token)


def test_the_key_is_the_digest_of_the_signed_part_and_the_signature_as_sent(issuer: LocalIssuer) -> None:
    token = issuer.mint()
    signed, _, signature = token.rpartition(".")
    assert VerifiedTokenCache.key_of(token) == (hashlib.sha256(signed.encode()).digest(), signature.encode())
    assert VerifiedTokenCache.key_of("no-dot") == (hashlib.sha256(b"").digest(), b"no-dot")


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(lambda s: s[:-1], id="shortened"),
        pytest.param(lambda s: s + b"A", id="lengthened"),
        pytest.param(lambda s: b"", id="empty"),
        pytest.param(lambda s: s[:-1] + (b"B" if s[-1:] != b"B" else b"C"), id="last-character"),
    ],
)
def test_a_hit_must_present_the_signature_the_entry_was_put_with(
    presented: Callable[[bytes], bytes],
) -> None:
    cache = VerifiedTokenCache(10, hot_entries=1)
    signature = b"S" * 342
    cache.put(b"a" * 32, _principal(time.time() + 60, "a"), "kid", KEY, signature=signature)
    cache.put(b"b" * 32, _principal(time.time() + 60, "b"), "kid", KEY, signature=signature)  # "a" goes cold
    cache.put(b"c" * 32, _principal(time.time() + 60, "c"), "kid", KEY, signature=signature)
    assert b"c" * 32 in cache.hot_entries
    assert b"a" * 32 in cache.cold_entries
    for digest in (b"a" * 32, b"c" * 32):  # a cold entry and a hot one
        assert cache.get(digest, _always_trusted, presented(signature)) is None
        assert cache.get(digest, _always_trusted, signature) is not None  # the miss left it in place


# -- expiry -------------------------------------------------------------------------


def test_hit_rechecks_exp_against_the_clock() -> None:
    clock = _whole_second_clock()
    cache = VerifiedTokenCache(10, clock=clock)
    expires_at = clock.now + 60
    cache.put(b"d" * 32, _principal(expires_at), "kid", KEY, signature=SIGNATURE)

    clock.now = expires_at - 0.001
    assert cache.get(b"d" * 32, _always_trusted, SIGNATURE) is not None
    clock.now = expires_at
    assert cache.get(b"d" * 32, _always_trusted, SIGNATURE) is None
    assert len(cache) == 0  # met expired, so dropped


def test_token_accepted_only_thanks_to_leeway_is_not_cached() -> None:
    clock = _whole_second_clock()
    cache = VerifiedTokenCache(10, clock=clock)
    cache.put(b"d" * 32, _principal(clock.now - 1), "kid", KEY, signature=SIGNATURE)
    assert len(cache) == 0


def test_expired_entries_are_swept_without_being_looked_up() -> None:
    clock = _whole_second_clock()
    cache = VerifiedTokenCache(10, clock=clock)
    cache.put(b"a" * 32, _principal(clock.now + 10), "kid", KEY, signature=SIGNATURE)
    cache.put(b"b" * 32, _principal(clock.now + 3600), "kid", KEY, signature=SIGNATURE)

    clock.now += 10 + SWEEP_INTERVAL_SECONDS
    cache.put(b"c" * 32, _principal(clock.now + 3600), "kid", KEY, signature=SIGNATURE)
    assert len(cache) == 2
    assert cache.get(b"b" * 32, _always_trusted, SIGNATURE) is not None


def test_verifier_refuses_cached_token_once_expired(settings: AuthSettings, issuer: LocalIssuer) -> None:
    clock = _whole_second_clock()
    verifier = TokenVerifier(settings, clock=clock)
    token = issuer.mint(expires_in=60)
    verifier.verify_sync(token)

    clock.now += 60 + settings.leeway_seconds + 1
    with pytest.raises(TokenExpired):
        verifier.verify_sync(token)
    verifier.close()


def test_verifier_does_not_serve_a_hit_inside_the_leeway(
    settings: AuthSettings, issuer: LocalIssuer, count_rsa_checks: list[bytes]
) -> None:
    clock = _whole_second_clock()
    verifier = TokenVerifier(settings, clock=clock)
    token = issuer.mint(expires_in=60)
    verifier.verify_sync(token)

    # Past exp but inside the leeway: still accepted, but only by a full check.
    clock.now += 60 + settings.leeway_seconds / 2
    verifier.verify_sync(token)
    assert len(count_rsa_checks) == 2
    verifier.close()


# -- key removal ----------------------------------------------------------------------


def test_entries_go_when_their_key_leaves_the_jwks(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    old_token = issuer.mint(username="old")
    verifier.verify_sync(old_token)

    issuer.rotate_key(keep_old=False, key=spare_key(0))
    verifier.keys.refresh_sync()
    with pytest.raises(KeyIdUnknown):
        verifier.verify_sync(old_token)

    verifier.verify_sync(issuer.mint(username="new"))
    assert len(verifier.pools[0].verified) == 1  # only the new token's entry is left


def test_entries_go_when_new_key_material_arrives_under_the_same_kid(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    old_token = issuer.mint(username="old")
    verifier.verify_sync(old_token)

    issuer.keys = [spare_key_as(0, issuer.signing_key.kid)]  # new material under the same kid
    verifier.keys.refresh_sync()
    with pytest.raises(SignatureInvalid):
        verifier.verify_sync(old_token)
    assert verifier.verify_sync(issuer.mint(username="new")).username == "new"
    assert len(verifier.pools[0].verified) == 1


@pytest.mark.parametrize(
    ("held", "is_served"),
    [
        pytest.param({"kid": KEY}, True, id="same-key"),
        pytest.param({}, False, id="kid-gone"),
        pytest.param({"kid": object()}, False, id="kid-reused-for-another-key"),
    ],
)
def test_hit_is_served_only_while_its_key_is_held_under_its_kid(
    held: dict[str, object], is_served: bool
) -> None:
    cache = VerifiedTokenCache(10)
    cache.put(b"d" * 32, _principal(time.time() + 60), "kid", KEY, signature=SIGNATURE)
    hit = cache.get(b"d" * 32, lambda kid, key: held.get(kid) is key, SIGNATURE)
    assert (hit is not None) is is_served


def test_keep_only_held_keys_drops_dropped_and_replaced_keys() -> None:
    cache = VerifiedTokenCache(10)
    expires_at = time.time() + 60
    kept_key, replaced_key = object(), object()
    cache.put(b"a" * 32, _principal(expires_at), "kept", kept_key, signature=SIGNATURE)
    cache.put(b"b" * 32, _principal(expires_at), "dropped", object(), signature=SIGNATURE)
    cache.put(b"c" * 32, _principal(expires_at), "replaced", replaced_key, signature=SIGNATURE)
    held = {"kept": kept_key, "replaced": object()}
    cache.keep_only_held_keys(held.get)
    assert len(cache) == 1
    assert cache.get(b"a" * 32, _always_trusted, SIGNATURE) is not None


# -- bounds ---------------------------------------------------------------------------


def test_cache_never_holds_more_than_its_size() -> None:
    cache = VerifiedTokenCache(5)
    expires_at = time.time() + 60
    for i in range(50):
        cache.put(i.to_bytes(32, "big"), _principal(expires_at), "kid", KEY, signature=SIGNATURE)
    assert len(cache) == 5


def test_clear_forgets_both_tiers_and_the_cache_fills_again() -> None:
    cache = VerifiedTokenCache(4, hot_entries=2)
    expires_at = time.time() + 60
    digests = [bytes([i]) * 32 for i in range(4)]
    for digest in digests:
        cache.put(digest, _principal(expires_at), "kid", KEY, signature=SIGNATURE)
    assert (len(cache.hot_entries), len(cache.cold_entries)) == (2, 2)

    cache.clear()

    assert len(cache) == 0
    assert [cache.get(digest, _always_trusted, SIGNATURE) for digest in digests] == [None] * 4
    cache.put(digests[0], _principal(expires_at, "again"), "kid", KEY, signature=SIGNATURE)
    revived = cache.get(digests[0], _always_trusted, SIGNATURE)
    assert revived is not None
    assert revived.username == "again"


def test_least_recently_used_entry_goes_first() -> None:
    cache = VerifiedTokenCache(2)
    expires_at = time.time() + 60
    cache.put(b"a" * 32, _principal(expires_at), "kid", KEY, signature=SIGNATURE)
    cache.put(b"b" * 32, _principal(expires_at), "kid", KEY, signature=SIGNATURE)
    cache.get(b"a" * 32, _always_trusted, SIGNATURE)
    cache.put(b"c" * 32, _principal(expires_at), "kid", KEY, signature=SIGNATURE)
    assert cache.get(b"a" * 32, _always_trusted, SIGNATURE) is not None
    assert cache.get(b"b" * 32, _always_trusted, SIGNATURE) is None


@pytest.mark.parametrize("hot_entries", [2, 3], ids=["with-a-cold-tier", "hot-tier-only"])
def test_a_token_verified_again_is_the_most_recently_used(hot_entries: int) -> None:
    # Two requests with one new token verify it at once and both put it; or a hit refused while its
    # key was in doubt is verified again after the refresh. Either way it is the newest entry.
    cache = VerifiedTokenCache(3, hot_entries=hot_entries)
    expires_at = time.time() + 60
    for name in ("a", "b", "a", "c", "d"):
        cache.put(name.encode() * 32, _principal(expires_at, name), "kid", KEY, signature=SIGNATURE)
    assert [cache.get(name.encode() * 32, _always_trusted, SIGNATURE) is not None for name in "abcd"] == [
        True,
        False,
        True,
        True,
    ]


def test_a_cold_token_verified_again_leaves_the_cold_tier() -> None:
    cache = VerifiedTokenCache(10, hot_entries=1)
    expires_at = time.time() + 60
    cache.put(b"a" * 32, _principal(expires_at, "a"), "kid", KEY, signature=SIGNATURE)
    cache.put(b"b" * 32, _principal(expires_at, "b"), "kid", KEY, signature=SIGNATURE)  # "a" goes cold
    again = _principal(expires_at, "a")
    cache.put(b"a" * 32, again, "kid", KEY, signature=SIGNATURE)  # "b" goes cold

    assert (list(cache.cold_entries), list(cache.hot_entries)) == ([b"b" * 32], [b"a" * 32])
    assert len(cache) == 2
    assert cache.get(b"a" * 32, _always_trusted, SIGNATURE) is again


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    max_size=st.integers(1, 5),
    hot_entries=st.integers(0, 6),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 6)), max_size=40),
)
def test_the_tiers_hold_the_most_recently_used_tokens_in_recency_order(
    max_size: int, hot_entries: int, steps: list[tuple[bool, int]]
) -> None:
    # The model: one list of digests, least recently used first, cut to the size from the front;
    # the hot tier is its end, the cold tier the rest. A put or a hit moves a digest to the end.
    cache = VerifiedTokenCache(max_size, hot_entries=hot_entries)
    hot_size = min(hot_entries, max_size)
    expires_at = time.time() + 600
    recency: list[bytes] = []
    for is_put, index in steps:
        digest = bytes([index]) * 32
        if is_put:
            cache.put(digest, _principal(expires_at, str(index)), "kid", KEY, signature=SIGNATURE)
        else:
            hit = cache.get(digest, _always_trusted, SIGNATURE)
            assert (hit is not None) is (digest in recency)
            assert hit is None or hit.username == str(index)
            if hit is None:
                continue
        if digest in recency:
            recency.remove(digest)
        recency = [*recency, digest][-max_size:]
        assert list(cache.cold_entries) + list(cache.hot_entries) == recency
        assert len(cache.hot_entries) == min(hot_size, len(recency))
        assert len(cache) == len(recency)


def test_size_zero_turns_the_cache_off(
    settings: AuthSettings, issuer: LocalIssuer, count_rsa_checks: list[bytes]
) -> None:
    verifier = TokenVerifier(settings.model_copy(update={"verified_cache_size": 0}))
    token = issuer.mint()
    verifier.verify_sync(token)
    verifier.verify_sync(token)
    assert len(count_rsa_checks) == 2
    assert len(verifier.pools[0].verified) == 0
    verifier.close()


# -- threads --------------------------------------------------------------------------


def test_verify_sync_is_safe_from_many_threads(settings: AuthSettings, issuer: LocalIssuer) -> None:
    # A cache smaller than the token set, so threads evict each other's entries
    # while others read and sweep.
    verifier = TokenVerifier(settings.model_copy(update={"verified_cache_size": 7}))
    tokens = {f"user{i}": issuer.mint(username=f"user{i}") for i in range(20)}
    forged = issuer.mint(username="user0")[:-3] + "AAA"
    start = threading.Barrier(16)

    def hammer(worker: int) -> list[str]:
        start.wait()
        problems = []
        for round_ in range(60):
            username = f"user{(worker + round_) % 20}"
            if verifier.verify_sync(tokens[username]).username != username:
                problems.append(f"wrong principal for {username}")
            if round_ % 10 == 0:
                try:
                    verifier.verify_sync(forged)
                    problems.append("forged token accepted")
                except (SignatureInvalid, TokenMalformed):
                    pass
        return problems

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(hammer, range(16)))
    assert [problem for problems in results for problem in problems] == []
    assert len(verifier.pools[0].verified) <= 7
    verifier.close()


# -- the async FastAPI path -------------------------------------------------------------


class ThreadpoolUsed(Exception):
    pass


@pytest.fixture
def forbid_threadpool(monkeypatch: pytest.MonkeyPatch, client: TestClient) -> None:
    """Make any hand-off to a worker thread fail, once the app has started."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ThreadpoolUsed

    monkeypatch.setattr(anyio.to_thread, "run_sync", refuse)


@pytest.mark.usefixtures("forbid_threadpool")
@pytest.mark.parametrize(
    ("make_header", "status"),
    [
        pytest.param(lambda i: f"Bearer {i.mint()}", 200, id="new-token"),
        pytest.param(lambda i: "Bearer not-a-token", 401, id="bad-token"),
        pytest.param(lambda i: "", 401, id="no-token"),
    ],
)
def test_async_route_sends_no_work_to_a_threadpool(
    client: TestClient, issuer: LocalIssuer, make_header: Callable[[LocalIssuer], str], status: int
) -> None:
    header = make_header(issuer)
    for _ in range(2):  # the second time, a valid token is a cache hit
        response = client.get("/me", headers={"Authorization": header} if header else {})
        assert response.status_code == status


@pytest.mark.usefixtures("forbid_threadpool")
def test_threadpool_guard_catches_a_sync_route(client: TestClient, issuer: LocalIssuer) -> None:
    # The guard itself works: a sync route runs in the threadpool, so it trips.
    with pytest.raises(ThreadpoolUsed):
        client.get("/me-sync", headers={"Authorization": issuer.mint()})


# -- the two tiers: recent principals kept whole, older entries as plain values ---------------------


def test_entries_past_the_hot_tier_are_kept_as_plain_values_and_revived_on_a_hit() -> None:
    cache = VerifiedTokenCache(10, hot_entries=2)
    expires_at = time.time() + 60
    originals = {name: _principal(expires_at, name) for name in ("a", "b", "c")}
    for name, principal in originals.items():
        cache.put(name.encode() * 32, principal, "kid", KEY, signature=SIGNATURE)

    assert (len(cache.hot_entries), len(cache.cold_entries)) == (2, 1)
    hit = cache.get(b"a" * 32, _always_trusted, SIGNATURE)
    assert hit is not None
    assert hit is not originals["a"]
    assert hit == originals["a"]
    # Back in the hot tier: the next hit is the same object, and the oldest hot entry went cold.
    assert cache.get(b"a" * 32, _always_trusted, SIGNATURE) is hit
    assert b"b" * 32 in cache.cold_entries
    assert len(cache) == 3


def test_a_revived_principal_keeps_every_claim_read_only() -> None:
    cache = VerifiedTokenCache(10, hot_entries=1)
    expires_at = time.time() + 60
    claims = {"sub": "sub-a", "cognito:groups": ["admin", "ops"], "amr": ["pwd"], "exp": expires_at}
    original = Principal(**{**_principal(expires_at, "a").__dict__, "claims": claims})
    cache.put(b"a" * 32, original, "kid", KEY, signature=SIGNATURE)
    cache.put(b"b" * 32, _principal(expires_at, "b"), "kid", KEY, signature=SIGNATURE)

    revived = cache.get(b"a" * 32, _always_trusted, SIGNATURE)

    assert revived is not None
    assert revived.claims["cognito:groups"] == ("admin", "ops")
    assert revived.model_dump()["claims"] == claims
    with pytest.raises(TypeError):
        revived.claims["sub"] = "mallory"  # type: ignore[index]


def test_a_cold_entry_is_refused_like_a_hot_one_when_expired_or_its_key_is_gone() -> None:
    clock = _whole_second_clock()
    cache = VerifiedTokenCache(10, clock=clock, hot_entries=1)
    cache.put(b"a" * 32, _principal(clock.now + 60, "a"), "kid", KEY, signature=SIGNATURE)
    cache.put(b"b" * 32, _principal(clock.now + 60, "b"), "kid", KEY, signature=SIGNATURE)
    cache.put(b"c" * 32, _principal(clock.now + 600, "c"), "kid", KEY, signature=SIGNATURE)

    assert cache.get(b"a" * 32, lambda kid, key: False, SIGNATURE) is None  # key no longer held
    clock.now += 60
    assert cache.get(b"b" * 32, _always_trusted, SIGNATURE) is None  # expired
    assert len(cache) == 1


def test_both_tiers_together_stay_within_the_size_and_drop_withdrawn_keys() -> None:
    cache = VerifiedTokenCache(5, hot_entries=2)
    expires_at = time.time() + 60
    kept, withdrawn = object(), object()
    for i in range(50):
        key = kept if i % 2 else withdrawn
        cache.put(i.to_bytes(32, "big"), _principal(expires_at, str(i)), "kid", key, signature=SIGNATURE)
    assert len(cache) == 5

    cache.keep_only_held_keys({"kid": kept}.get)

    assert len(cache) == 3  # 48 and 49 were hot, 45 to 47 cold: the odd ones had the kept key
    assert all(
        cache.get(digest, _always_trusted, SIGNATURE) is not None for digest in list(cache.cold_entries)
    )


def test_verifier_serves_a_cold_entry_without_an_rsa_check(
    settings: AuthSettings, issuer: LocalIssuer, count_rsa_checks: list[bytes]
) -> None:
    verifier = TokenVerifier(settings)
    verifier.pools[0].verified._hot_size = 2  # a small hot tier, so the first token goes cold
    tokens = [issuer.mint(username=f"user{i}", groups=["admin"]) for i in range(4)]
    first = [verifier.verify_sync(token) for token in tokens]
    assert VerifiedTokenCache.digest(tokens[0]) in verifier.pools[0].verified.cold_entries

    again = verifier.verify_sync(f"Bearer {tokens[0]}")

    assert len(count_rsa_checks) == 4
    assert again == first[0]
    assert again.groups == ("admin",)
    verifier.close()


def test_a_revoked_user_is_refused_from_the_cold_tier_too(
    settings: AuthSettings, issuer: LocalIssuer
) -> None:
    verifier = TokenVerifier(settings)
    verifier.pools[0].verified._hot_size = 1
    token = issuer.mint(username="vic", iat=int(time.time()) - 60)
    victim = verifier.verify_sync(token)
    verifier.verify_sync(issuer.mint(username="other"))  # pushes vic's entry to the cold tier
    assert VerifiedTokenCache.digest(token) in verifier.pools[0].verified.cold_entries

    verifier.revoke_user_sync(victim.user_pool_id, victim.sub)

    with pytest.raises(TokenRevoked):
        verifier.verify_sync(token)
    verifier.close()


def test_a_full_default_cache_is_mostly_invisible_to_the_garbage_collector(
    settings: AuthSettings, issuer: LocalIssuer
) -> None:
    # Everything older than this test is set aside, so the collections below visit only what it
    # makes: in a whole-suite worker, six collections of its heap took seconds. One collection
    # first untracks the old tuples the entries share (the claim names of every principal).
    gc.collect()
    gc.freeze()
    try:
        verifier = TokenVerifier(settings)
        pool = verifier.pools[0]
        key = verifier.keys.get_key_sync(issuer.signing_key.kid)
        now = time.time()
        for i in range(settings.verified_cache_size):
            claims = issuer.claims(username=f"flood-{i}", groups=["team"], expires_in=7200)
            pool.remember(
                VerifiedTokenCache.digest(f"h.t{i}.s"),
                pool.rules.check(claims, now),
                issuer.signing_key.kid,
                key,
                signature=SIGNATURE,
            )
        # Each full collection stops tracking the tuples whose contents it found untracked, from
        # the inside out, so a few collections in a row leave none tracked.
        for _ in range(6):
            gc.collect()
    finally:
        gc.unfreeze()

    cache = pool.verified
    assert len(cache) == settings.verified_cache_size
    assert len(cache.hot_entries) == HOT_ENTRIES
    assert [entry for entry in cache.cold_entries.values() if gc.is_tracked(entry)] == []
    verifier.close()


def test_a_cached_principal_leaves_the_collector_little_to_visit(
    settings: AuthSettings, issuer: LocalIssuer
) -> None:
    gc.collect()  # as above: then the collections visit only what this test makes
    gc.freeze()
    try:
        verifier = TokenVerifier(settings)
        first, second = (
            verifier.verify_sync(
                issuer.mint(username=name, groups=["admin", "ops"], email=f"{name}@example.com")
            )
            for name in ("ada", "bob")
        )
        gc.collect()
        gc.collect()
    finally:
        gc.unfreeze()

    for principal in (first, second):
        # The claim values (groups as a tuple) are one tuple the collector has stopped tracking.
        assert not gc.is_tracked(principal.claims._values)  # type: ignore[attr-defined]
        assert principal.claims["cognito:groups"] == principal.groups == ("admin", "ops")
    # Claim names, their positions and the fields-set are shared, not held once per principal.
    assert first.claims._names is second.claims._names  # type: ignore[attr-defined]
    assert first.model_fields_set is second.model_fields_set
    # model_copy copies the shared fields-set before changing it.
    copied = first.model_copy(update={"username": "other"})
    assert copied.username == "other"
    assert second.model_fields_set == set(Principal.model_fields)
    verifier.close()
