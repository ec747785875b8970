"""Several user pools behind one verifier, as a service serving two SimpleIOT teams runs it.

Two local pools, each publishing its JWKS on its own loopback server, and
both using the same kid string, so nothing but the routing by ``iss`` keeps
their keys apart. Most cases run through each face a caller can use: a
FastAPI route, ``await verify`` and ``verify_sync``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fake_clock import FakeClock
from siot_authz import AuthError, AuthSettings, CognitoAuth, Principal, TokenVerifier
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key, spare_key_as

FACES = ("fastapi", "async", "sync")
SHARED_KID = "shared-kid-1"
POOL_A = "us-east-1_TeamAlpha"
POOL_B = "us-east-1_TeamBravo"


def _pool(user_pool_id: str, client_id: str, spares: tuple[int, ...], *extra_kids: str) -> LocalIssuer:
    """A pool publishing spare keys ``spares`` under SHARED_KID and then ``extra_kids``."""
    keys = [spare_key_as(index, kid) for index, kid in zip(spares, (SHARED_KID, *extra_kids), strict=True)]
    issuer = LocalIssuer(user_pool_id=user_pool_id, client_id=client_id, key=keys[0])
    issuer.keys = keys
    issuer.serve()
    return issuer


@pytest.fixture(scope="module")
def _pools() -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    # Both pools live for the module and are reset per test. Spare keys 0 to 2 are theirs: distinct
    # material under the shared kid. B rotates in spare 3, A spare 4.
    alpha = _pool(POOL_A, "alphaclient00000000000000", (0,))
    bravo = _pool(POOL_B, "bravoclient00000000000000", (1, 2), "bravo-only-kid")
    yield alpha, bravo
    alpha.close()
    bravo.close()


@pytest.fixture
def alpha(_pools: tuple[LocalIssuer, LocalIssuer]) -> Iterator[LocalIssuer]:
    """Pool A: one key, under the shared kid."""
    yield from _reset(_pools[0])


@pytest.fixture
def bravo(_pools: tuple[LocalIssuer, LocalIssuer]) -> Iterator[LocalIssuer]:
    """Pool B: its own key under the shared kid, and a second kid only it has."""
    yield from _reset(_pools[1])


def _reset(issuer: LocalIssuer) -> Iterator[LocalIssuer]:
    keys = list(issuer.keys)
    issuer.serve().reset()
    yield issuer
    issuer.keys = keys
    issuer.serve().reset()


def _settings(issuer: LocalIssuer, **overrides: Any) -> AuthSettings:
    return issuer.settings(http_timeout_seconds=2.0, **overrides)


class Service:
    """One verifier for both pools behind a FastAPI app; reports ``"ok <pool>"`` or ``"<status> <code>"``."""

    def __init__(self, face: str, settings: list[AuthSettings], **options: Any) -> None:
        self.face = face
        self.verifier = TokenVerifier(settings, **options)
        auth = CognitoAuth(verifier=self.verifier)
        app = FastAPI()

        @app.get("/me")
        async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
            return {"pool": principal.user_pool_id, "username": principal.username}

        self.client = TestClient(app)

    def outcome(self, token: str) -> str:
        if self.face == "fastapi":
            response = self.client.get("/me", headers={"Authorization": token})
            if response.status_code == 200:
                return f"ok {response.json()['pool']}"
            return f"{response.status_code} {response.json()['detail']['code']}"
        try:
            if self.face == "async":
                principal = asyncio.run(self.verifier.verify(token))
            else:
                principal = self.verifier.verify_sync(token)
        except AuthError as error:
            return f"{error.status_code} {error.code}"
        return f"ok {principal.user_pool_id}"


@pytest.fixture
def make_service() -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(face: str, *settings: AuthSettings, **options: Any) -> Service:
        service = Service(face, list(settings), **options)
        made.append(service)
        return service

    yield make
    for service in made:
        service.verifier.close()


@pytest.fixture(params=FACES)
def service(
    request: pytest.FixtureRequest,
    make_service: Callable[..., Service],
    alpha: LocalIssuer,
    bravo: LocalIssuer,
) -> Service:
    return make_service(request.param, _settings(alpha), _settings(bravo))


# -- routing --------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
def test_each_pool_holds_its_tokens_to_its_own_size_cap(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer, face: str
) -> None:
    """The header cap is the largest pool's; a pool's own smaller cap applies once the token is routed to it."""
    service = make_service(
        face, _settings(alpha, max_token_bytes=512), _settings(bravo, max_token_bytes=8192)
    )
    alpha_token, bravo_token = alpha.mint(), bravo.mint()  # about 1 KB each
    assert 512 < len(alpha_token) < 8192
    assert 512 < len(bravo_token) < 8192

    assert service.outcome(alpha_token) == "401 token_too_large"
    assert service.outcome(bravo_token) == f"ok {POOL_B}"


def test_each_pools_tokens_are_accepted_and_name_their_pool(
    service: Service, alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    assert service.outcome(alpha.mint()) == f"ok {POOL_A}"
    assert service.outcome(bravo.mint()) == f"ok {POOL_B}"
    assert service.outcome(bravo.sign(bravo.claims(), key=bravo.keys[1])) == f"ok {POOL_B}"


def test_principal_carries_the_pool_it_was_verified_against(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    service = make_service("fastapi", _settings(alpha), _settings(bravo))

    body = service.client.get("/me", headers={"Authorization": f"Bearer {bravo.mint(username='bob')}"}).json()

    assert body == {"pool": POOL_B, "username": "bob"}


def test_token_of_pool_a_signed_under_the_shared_kid_by_pool_b_is_refused(
    service: Service, alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    """Both pools publish the kid; only A's key may verify a token whose iss is A."""
    forged = bravo.sign(alpha.claims(), key=bravo.keys[0])

    assert service.outcome(forged) == "401 signature_invalid"


def test_token_of_pool_a_with_a_kid_only_pool_b_has_is_refused(
    service: Service, alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    forged = bravo.sign(alpha.claims(), key=bravo.keys[1])
    assert service.outcome(bravo.mint()) == f"ok {POOL_B}"  # B's keys, and that kid, are held

    assert service.outcome(forged) == "401 kid_unknown"
    # A looked for the kid at its own endpoint; B's was never asked again.
    assert bravo.serve().request_count == 1


@pytest.mark.parametrize(
    "iss",
    [
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TeamCharlie",
        "https://cognito-idp.eu-west-1.amazonaws.com/us-east-1_TeamAlpha",
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TeamAlpha/",
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_teamalpha",
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TeamAlpha,us-east-1_TeamBravo",
        "",
    ],
    ids=["unknown-pool", "unlisted-region", "trailing-slash", "case-changed", "both-pools", "empty"],
)
def test_unknown_issuer_is_refused_before_any_key_is_fetched(
    service: Service, alpha: LocalIssuer, bravo: LocalIssuer, iss: str
) -> None:
    token = alpha.mint(iss=iss, header={"kid": secrets.token_urlsafe(8)})

    assert service.outcome(token) == "401 issuer_invalid"
    assert service.outcome(alpha.mint(iss=iss)) == "401 issuer_invalid"
    assert (alpha.serve().request_count, bravo.serve().request_count) == (0, 0)


@pytest.mark.parametrize("face", FACES)
def test_pools_keep_their_own_client_ids_and_token_use(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer, face: str
) -> None:
    service = make_service(face, _settings(alpha), _settings(bravo, token_use="access"))

    assert service.outcome(alpha.mint()) == f"ok {POOL_A}"
    assert service.outcome(bravo.mint(token_use="access")) == f"ok {POOL_B}"
    assert service.outcome(alpha.mint(token_use="access")) == "401 token_use_mismatch"
    assert service.outcome(bravo.mint()) == "401 token_use_mismatch"
    # A's token carrying B's app client (or the reverse) is not let in by the other pool's list.
    assert service.outcome(alpha.mint(aud=bravo.client_id)) == "401 client_not_allowed"
    assert (
        service.outcome(bravo.mint(token_use="access", client_id=alpha.client_id)) == "401 client_not_allowed"
    )


def test_cognito_auth_takes_a_list_and_prefetches_every_pool(alpha: LocalIssuer, bravo: LocalIssuer) -> None:
    auth = CognitoAuth([_settings(alpha), _settings(bravo)])
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"pool": principal.user_pool_id}

    with TestClient(app) as client:
        counts = (alpha.serve().request_count, bravo.serve().request_count)
        pools = {
            client.get("/me", headers={"Authorization": i.mint()}).json()["pool"] for i in (alpha, bravo)
        }
        health = auth.health()

    assert counts == (1, 1)
    assert pools == {POOL_A, POOL_B}
    assert [pool.user_pool_id for pool in health.pools] == [POOL_A, POOL_B]
    assert health.is_ready


def test_cognito_auth_resolves_settings_from_a_function_at_startup(
    alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    calls: list[int] = []

    def pools() -> list[AuthSettings]:
        calls.append(1)
        return [_settings(alpha), _settings(bravo)]

    auth = CognitoAuth(pools)
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"pool": principal.user_pool_id}

    assert calls == []  # importing the app must not need the configuration
    with TestClient(app) as client:
        assert client.get("/me", headers={"Authorization": bravo.mint()}).json() == {"pool": POOL_B}
    assert calls == [1]


@pytest.mark.parametrize(
    "settings",
    [
        lambda a, b: [_settings(a), _settings(a)],
        lambda a, b: [_settings(a), _settings(a, client_ids=("otherclient0000000000000",))],
    ],
    ids=["same-settings-twice", "same-pool-other-client"],
)
def test_a_pool_configured_twice_is_refused(
    alpha: LocalIssuer, bravo: LocalIssuer, settings: Callable[..., list[AuthSettings]]
) -> None:
    with pytest.raises(ValueError, match=f"user pool {POOL_A} is configured twice"):
        TokenVerifier(settings(alpha, bravo))
    with pytest.raises(ValueError, match="configured twice"):
        CognitoAuth(settings(alpha, bravo))


def test_no_pools_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one pool"):
        TokenVerifier([])


def test_handed_in_keys_for_an_unconfigured_pool_are_refused(alpha: LocalIssuer, bravo: LocalIssuer) -> None:
    with pytest.raises(ValueError, match=POOL_B):
        TokenVerifier(_settings(alpha), jwks={POOL_B: bravo.jwks()})


# -- per-pool state: the penalty box and the verified-token cache ------------------------


@pytest.mark.parametrize("face", FACES)
def test_kid_spray_against_one_pool_does_not_use_up_the_other_pools_cooldown(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer, face: str
) -> None:
    cooldown = {"jwks_refetch_cooldown_seconds": 30.0}
    clock = FakeClock(5000.0)
    service = make_service(face, _settings(alpha, **cooldown), _settings(bravo, **cooldown), key_timer=clock)
    assert service.outcome(alpha.mint()) == f"ok {POOL_A}"
    assert service.outcome(bravo.mint()) == f"ok {POOL_B}"
    clock.advance(31)

    sprayed = {service.outcome(alpha.mint(header={"kid": secrets.token_urlsafe(8)})) for _ in range(40)}
    rotated_in = bravo.rotate_key(key=spare_key(3))

    assert sprayed == {"401 kid_unknown"}
    assert alpha.serve().request_count == 2  # the cold fetch and one refetch: A's box is shut
    # B's box is its own: a key B has just rotated in is fetched and accepted at once.
    assert service.outcome(bravo.sign(bravo.claims(), key=rotated_in)) == f"ok {POOL_B}"
    assert bravo.serve().request_count == 2
    assert (
        service.outcome(alpha.sign(alpha.claims(), key=alpha.rotate_key(key=spare_key(4))))
        == "401 kid_unknown"
    )
    assert alpha.serve().request_count == 2


class RecordingObserver:
    """Records what the verifier reports, to see cache hits per pool."""

    def __init__(self) -> None:
        self.verifications: list[tuple[str, str | None, bool]] = []
        self.fetches: list[tuple[str, str]] = []

    def verification(self, pool_id: str, code: str | None, cache_hit: bool) -> None:
        self.verifications.append((pool_id, code, cache_hit))

    def jwks_fetch(self, pool_id: str, outcome: str, seconds: float) -> None:
        self.fetches.append((pool_id, outcome))


@pytest.mark.parametrize("face", FACES)
def test_verified_tokens_are_cached_in_their_own_pool(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer, face: str
) -> None:
    observer = RecordingObserver()
    service = make_service(face, _settings(alpha), _settings(bravo), observer=observer)
    alpha_token, bravo_token = alpha.mint(), bravo.mint()

    for token in (alpha_token, bravo_token, alpha_token, bravo_token):
        service.outcome(token)

    pool_a, pool_b = service.verifier.pools
    assert (len(pool_a.verified), len(pool_b.verified)) == (1, 1)
    assert observer.verifications == [
        (POOL_A, None, False),
        (POOL_B, None, False),
        (POOL_A, None, True),
        (POOL_B, None, True),
    ]
    assert sorted(observer.fetches) == [(POOL_A, "ok"), (POOL_B, "ok")]


def test_a_key_withdrawn_by_one_pool_ends_only_that_pools_cached_tokens(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    clock = FakeClock(5000.0)
    service = make_service(
        "sync", _settings(alpha, jwks_ttl_seconds=60), _settings(bravo, jwks_ttl_seconds=60), key_timer=clock
    )
    alpha_token, bravo_token = alpha.mint(), bravo.mint()
    assert service.outcome(alpha_token) == f"ok {POOL_A}"
    assert service.outcome(bravo_token) == f"ok {POOL_B}"

    alpha.rotate_key(keep_old=False, key=spare_key(4))  # A withdraws the shared kid; B keeps publishing it
    clock.advance(61)
    service.verifier.pools[0].keys.refresh_sync()

    assert service.outcome(alpha_token) == "401 kid_unknown"
    assert service.outcome(bravo_token) == f"ok {POOL_B}"


def test_health_reports_each_pool(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer
) -> None:
    service = make_service("sync", _settings(alpha), _settings(bravo))
    assert service.outcome(alpha.mint()) == f"ok {POOL_A}"

    health = service.verifier.health()

    assert not health.is_ready  # B holds no keys yet
    assert [(pool.user_pool_id, pool.keys.has_keys) for pool in health.pools] == [
        (POOL_A, True),
        (POOL_B, False),
    ]


# -- Multi-Region Replication ----------------------------------------------------------------


def _replica_iss(issuer: LocalIssuer, region: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{issuer.user_pool_id}"


@pytest.mark.parametrize("face", FACES)
def test_replica_region_issuer_is_accepted_with_the_primary_pools_keys(
    make_service: Callable[..., Service], alpha: LocalIssuer, bravo: LocalIssuer, face: str
) -> None:
    replicated = _settings(alpha, additional_regions=("eu-west-1", "ap-southeast-2"))
    service = make_service(face, replicated, _settings(bravo))

    assert service.outcome(alpha.mint(iss=_replica_iss(alpha, "eu-west-1"))) == f"ok {POOL_A}"
    assert service.outcome(alpha.mint(iss=_replica_iss(alpha, "ap-southeast-2"))) == f"ok {POOL_A}"
    assert service.outcome(alpha.mint()) == f"ok {POOL_A}"
    # A region the pool is not replicated to, or another pool's replica, is still refused.
    assert service.outcome(alpha.mint(iss=_replica_iss(alpha, "us-west-2"))) == "401 issuer_invalid"
    assert service.outcome(bravo.mint(iss=_replica_iss(bravo, "eu-west-1"))) == "401 issuer_invalid"
    # Replica tokens are still signed by the pool's own keys, fetched once from its one URL.
    forged = bravo.sign(alpha.claims(iss=_replica_iss(alpha, "eu-west-1")), key=bravo.keys[0])
    assert service.outcome(forged) == "401 signature_invalid"
    assert alpha.serve().request_count == 1


class RecordingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers JWKS requests in process, as the issuer would, and records every URL asked for."""

    def __init__(self, issuer: LocalIssuer) -> None:
        self._inner = issuer.transport()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return self._inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return await self._inner.handle_async_request(request)


@pytest.mark.parametrize("face", ["async", "sync"])
def test_replicated_pool_fetches_keys_from_the_primary_cognito_idp_url(alpha: LocalIssuer, face: str) -> None:
    """Never the issuer-cognito-idp form, nor a replica region (aws-jwt-verify issues #279, #282)."""
    transport = RecordingTransport(alpha)
    settings = AuthSettings(
        region="us-east-1",
        user_pool_id=POOL_A,
        client_ids=(alpha.client_id,),
        additional_regions=("eu-west-1",),
    )
    verifier = TokenVerifier(settings, async_transport=transport, sync_transport=transport)
    token = alpha.mint(iss=_replica_iss(alpha, "eu-west-1"))

    principal = asyncio.run(verifier.verify(token)) if face == "async" else verifier.verify_sync(token)

    assert principal.user_pool_id == POOL_A
    assert principal.issuer == _replica_iss(alpha, "eu-west-1")
    assert transport.urls == [f"https://cognito-idp.us-east-1.amazonaws.com/{POOL_A}/.well-known/jwks.json"]
    verifier.close()


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        (("us-east-1",), "must not repeat the pool's own region"),
        (("eu-west",), "not an AWS region"),
    ],
)
def test_replica_regions_are_checked(alpha: LocalIssuer, regions: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(alpha, additional_regions=regions)
