"""Roles from the application: require_roles through FastAPI, the TTL cache, the back-off and single-flight."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fake_clock import FakeClock
from siot_authz import CognitoAuth, Principal, RolesCache, RolesPrincipal
from siot_authz.testing import LocalIssuer, make_principal

ROLES = {"ada": ["admin", "operator"], "bob": ["viewer"], "eve": []}


class CountingSource:
    """A roles source over ROLES that counts its calls; sync or async, optionally failing."""

    def __init__(self, *, is_async: bool = False, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.is_async = is_async

    def look_up(self, principal: Principal) -> list[str]:
        self.calls.append(principal.username)
        if self.fail:
            raise ConnectionError("database at 10.0.0.5 is down; password=hunter2")
        return ROLES.get(principal.username, [])

    def source(self) -> Callable[[Principal], Any]:
        if not self.is_async:
            return self.look_up

        async def look_up(principal: Principal) -> list[str]:
            await asyncio.sleep(0)
            return self.look_up(principal)

        return look_up


def roles_app(auth: CognitoAuth) -> FastAPI:
    app = FastAPI(lifespan=auth.lifespan)

    @app.delete("/admin")
    async def admin(principal: RolesPrincipal = Depends(auth.require_roles("admin"))) -> dict[str, Any]:
        return {"user": principal.username, "roles": list(principal.roles)}

    @app.get("/staff")
    def staff(principal: RolesPrincipal = Depends(auth.require_roles("admin", "viewer"))) -> dict[str, Any]:
        return {"user": principal.username, "roles": list(principal.roles)}

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, Any]:
        return {"type": type(principal).__name__}

    @app.get("/whoami")
    async def whoami(principal: RolesPrincipal = Depends(auth.with_roles())) -> dict[str, Any]:
        return {"roles": list(principal.roles), "is_admin": principal.has_any_role(["admin"])}

    return app


@pytest.fixture
def source() -> CountingSource:
    return CountingSource()


@pytest.fixture
def client(issuer: LocalIssuer, source: CountingSource) -> Iterator[TestClient]:
    auth = CognitoAuth(issuer.settings(), roles=source.source())
    with TestClient(roles_app(auth)) as client:
        yield client


def as_user(issuer: LocalIssuer, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint(username=username)}"}


@pytest.mark.anyio
async def test_forget_discards_the_answer_of_a_lookup_already_under_way() -> None:
    roles = {"ada": ["admin"]}
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_source(principal: Principal) -> list[str]:
        answer = list(roles[principal.username])  # read before the change below
        started.set()
        await release.wait()
        return answer

    cache = RolesCache(slow_source)
    ada = make_principal("ada")
    in_flight = asyncio.ensure_future(cache.roles_of(ada))
    await started.wait()
    roles["ada"] = []  # the application removes the role...
    cache.forget(ada.user_pool_id, ada.sub)  # ...and says so
    release.set()
    await in_flight

    assert await cache.roles_of(ada) == ()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync source", "async source"])
def test_route_gets_the_roles_of_a_user_who_has_a_required_one(issuer: LocalIssuer, is_async: bool) -> None:
    source = CountingSource(is_async=is_async)
    with TestClient(roles_app(CognitoAuth(issuer.settings(), roles=source.source()))) as client:
        response = client.delete("/admin", headers=as_user(issuer, "ada"))
    assert response.status_code == 200, response.text
    assert response.json() == {"user": "ada", "roles": ["admin", "operator"]}


@pytest.mark.parametrize(
    ("username", "path", "status"),
    [
        ("ada", "/staff", 200),
        ("bob", "/staff", 200),
        ("eve", "/staff", 403),
        ("bob", "/admin", 403),
        ("nobody", "/admin", 403),
    ],
)
def test_require_roles_is_any_of(
    client: TestClient, issuer: LocalIssuer, username: str, path: str, status: int
) -> None:
    method = client.delete if path == "/admin" else client.get
    assert method(path, headers=as_user(issuer, username)).status_code == status


def test_missing_role_is_403_missing_role_with_insufficient_scope_and_is_logged(
    client: TestClient, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="siot_authz"):
        response = client.delete("/admin", headers=as_user(issuer, "bob"))
    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "missing_role"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    denial = [record.getMessage() for record in caplog.records if "access_denied" in record.getMessage()]
    assert denial == [f"access_denied code=missing_role pool={issuer.user_pool_id}"]


def test_request_without_token_is_401_and_never_asks_the_source(
    client: TestClient, source: CountingSource
) -> None:
    response = client.delete("/admin")
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "missing_token"
    assert source.calls == []


def test_with_roles_gives_the_roles_without_requiring_any(client: TestClient, issuer: LocalIssuer) -> None:
    assert client.get("/whoami", headers=as_user(issuer, "eve")).json() == {"roles": [], "is_admin": False}
    assert client.get("/whoami", headers=as_user(issuer, "ada")).json()["is_admin"] is True


def test_roles_stay_out_of_the_plain_principal_and_the_verified_cache(
    client: TestClient, issuer: LocalIssuer
) -> None:
    headers = as_user(issuer, "ada")
    assert client.delete("/admin", headers=headers).status_code == 200
    # The same token, now a verified-cache hit, still yields a plain Principal.
    assert client.get("/me", headers=headers).json() == {"type": "Principal"}


def test_roles_principal_is_immutable() -> None:
    principal = RolesPrincipal.of(make_principal("ada"), ("admin",))
    with pytest.raises(ValueError, match="frozen"):
        principal.roles = ("root",)  # type: ignore[misc]
    assert principal.model_dump()["roles"] == ("admin",)


def test_roles_are_cached_per_user_for_the_ttl(issuer: LocalIssuer, source: CountingSource) -> None:
    clock = FakeClock(1000.0)
    auth = CognitoAuth(issuer.settings())
    auth.roles = RolesCache(source.source(), ttl_seconds=60, timer=clock)
    with TestClient(roles_app(auth)) as client:
        for _ in range(3):
            assert client.delete("/admin", headers=as_user(issuer, "ada")).status_code == 200
            assert client.get("/staff", headers=as_user(issuer, "bob")).status_code == 200
        assert source.calls == ["ada", "bob"]
        clock.now += 61
        assert client.delete("/admin", headers=as_user(issuer, "ada")).status_code == 200
    assert source.calls == ["ada", "bob", "ada"]


@pytest.mark.anyio
async def test_the_cache_is_bounded_in_users() -> None:
    source = CountingSource()
    cache = RolesCache(source.source(), max_entries=2)
    for username in ("ada", "bob", "eve", "ada"):
        await cache.roles_of(make_principal(username))
    assert source.calls == ["ada", "bob", "eve", "ada"]  # ada was evicted by eve


@pytest.mark.anyio
async def test_the_same_sub_in_two_pools_is_two_users() -> None:
    seen: list[str] = []

    def by_pool(principal: Principal) -> list[str]:
        seen.append(principal.user_pool_id)
        return ["admin"] if principal.user_pool_id == "us-east-1_TeamA" else []

    cache = RolesCache(by_pool)
    team_a = make_principal("ada").model_copy(update={"user_pool_id": "us-east-1_TeamA"})
    team_b = make_principal("ada").model_copy(update={"user_pool_id": "us-east-1_TeamB"})
    assert await cache.roles_of(team_a) == ("admin",)
    assert await cache.roles_of(team_b) == ()
    assert await cache.roles_of(team_a) == ("admin",)
    assert seen == ["us-east-1_TeamA", "us-east-1_TeamB"]


@pytest.mark.anyio
async def test_forget_drops_one_users_roles() -> None:
    source = CountingSource()
    cache = RolesCache(source.source())
    ada = make_principal("ada")
    await cache.roles_of(ada)
    cache.forget(ada.user_pool_id, ada.sub)
    await cache.roles_of(ada)
    assert source.calls == ["ada", "ada"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync source", "async source"])
def test_failing_source_gives_503_once_per_backoff_not_500(
    issuer: LocalIssuer, is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(1000.0)
    source = CountingSource(is_async=is_async, fail=True)
    auth = CognitoAuth(issuer.settings())
    auth.roles = RolesCache(source.source(), backoff_seconds=5, timer=clock)
    with TestClient(roles_app(auth), raise_server_exceptions=False) as client:
        headers = as_user(issuer, "ada")
        with caplog.at_level(logging.INFO, logger="siot_authz"):
            answers = [client.delete("/admin", headers=headers) for _ in range(3)]
        assert source.calls == ["ada"]  # not retried on every request
        for response in answers:
            assert response.status_code == 503
            assert response.json()["detail"]["code"] == "roles_unavailable"
            assert response.headers["Retry-After"] == "5"
        assert "hunter2" not in caplog.text
        assert "10.0.0.5" not in caplog.text
        assert "cause=ConnectionError" in caplog.text
        # Another user is not held back by ada's failure.
        client.delete("/admin", headers=as_user(issuer, "bob"))
        assert source.calls == ["ada", "bob"]
        clock.now += 6
        source.fail = False
        assert client.delete("/admin", headers=headers).status_code == 200
    assert source.calls == ["ada", "bob", "ada"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    ["admin", b"admin", None, 42, ["admin", 7], {"admin": False}, {"admin": True}, iter(["admin"])],
    ids=[
        "a bare string",
        "bytes",
        "None",
        "a number",
        "a non-string name",
        "a mapping whose keys look like roles",
        "a mapping saying yes",
        "an iterator",
    ],
)
async def test_a_source_answer_that_is_not_role_names_is_a_failure(answer: Any) -> None:
    cache = RolesCache(lambda principal: answer)
    with pytest.raises(Exception, match="roles_unavailable"):
        await cache.roles_of(make_principal("ada"))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync source", "async source"])
def test_slow_source_times_out_with_503_and_never_blocks_the_event_loop(
    issuer: LocalIssuer, is_async: bool
) -> None:
    release = threading.Event()

    def stuck(principal: Principal) -> Iterable[str]:
        release.wait(10)
        return ["admin"]

    async def stuck_async(principal: Principal) -> Iterable[str]:
        await asyncio.sleep(10)
        return ["admin"]

    auth = CognitoAuth(
        issuer.settings(), roles=RolesCache(stuck_async if is_async else stuck, timeout_seconds=1.0)
    )
    app = roles_app(auth)
    with TestClient(app) as client:
        ada = as_user(issuer, "ada")
        client.get("/me", headers=ada)  # keys fetched, token cached
        answers: dict[str, Any] = {}

        def call_admin() -> None:
            answers["admin"] = client.delete("/admin", headers=ada)

        started = time.monotonic()
        caller = threading.Thread(target=call_admin)
        caller.start()
        time.sleep(0.05)
        # Meanwhile the loop still answers other requests: this one while the admin call waits.
        assert client.get("/me", headers=ada).status_code == 200
        still_waiting = "admin" not in answers
        caller.join(5)
        elapsed = time.monotonic() - started
        release.set()
    assert still_waiting
    assert answers["admin"].status_code == 503
    assert answers["admin"].json()["detail"]["code"] == "roles_unavailable"
    assert 0.95 < elapsed < 3


class SlowAdminSource:
    """An async source that takes 50 ms to say "admin", counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, principal: Principal) -> list[str]:
        self.calls += 1
        await asyncio.sleep(0.05)
        return ["admin"]


@pytest.mark.anyio
async def test_concurrent_requests_for_one_uncached_user_share_one_lookup() -> None:
    slow = SlowAdminSource()
    cache = RolesCache(slow)
    ada = make_principal("ada")
    answers = await asyncio.gather(*(cache.roles_of(ada) for _ in range(50)))
    assert slow.calls == 1
    assert set(answers) == {("admin",)}


@pytest.mark.anyio
async def test_one_waiter_giving_up_does_not_cancel_the_shared_lookup() -> None:
    slow = SlowAdminSource()
    cache = RolesCache(slow)
    ada = make_principal("ada")
    impatient = asyncio.ensure_future(cache.roles_of(ada))
    patient = asyncio.ensure_future(cache.roles_of(ada))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await patient == ("admin",)
    assert await cache.roles_of(ada) == ("admin",)
    assert slow.calls == 1


def test_require_roles_without_a_source_fails_at_route_definition(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings())
    with pytest.raises(TypeError, match="roles=source"):
        auth.require_roles("admin")


def test_require_roles_needs_at_least_one_role(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings(), roles=lambda principal: [])
    with pytest.raises(ValueError, match="at least one role"):
        auth.require_roles()


@pytest.mark.parametrize(
    "options",
    [{"ttl_seconds": 0}, {"timeout_seconds": -1}, {"backoff_seconds": 0}, {"max_entries": 0}],
)
def test_cache_bounds_must_be_positive(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RolesCache(lambda principal: [], **options)  # type: ignore[arg-type]


def test_has_any_role_needs_one_of_the_roles_not_all() -> None:
    principal = RolesPrincipal.of(make_principal("ada"), ("operator",))
    assert principal.has_any_role(["admin", "operator"])
    assert principal.has_any_role({"operator"})
    assert not principal.has_any_role(["admin", "viewer"])
    assert not principal.has_any_role([])


def test_a_mapping_from_the_source_grants_nothing_through_fastapi(issuer: LocalIssuer) -> None:
    auth = CognitoAuth(issuer.settings())
    auth.roles = RolesCache(lambda principal: {"admin": False})
    with TestClient(roles_app(auth)) as client:
        response = client.delete("/admin", headers=as_user(issuer, "ada"))
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "roles_unavailable"


class HungSource:
    """A sync source that blocks until released, recording how many calls run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.calls = 0

    def __call__(self, principal: Principal) -> list[str]:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.release.wait(10)
            return ["admin"]
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.anyio
async def test_a_hung_sync_source_holds_at_most_max_threads_and_refuses_the_rest_at_once() -> None:
    source = HungSource()
    cache = RolesCache(source, max_threads=3, timeout_seconds=0.2)
    users = [make_principal(f"user{n}") for n in range(40)]
    try:
        answers = await asyncio.gather(*(cache.roles_of(user) for user in users), return_exceptions=True)
        # Callers gave up at the timeout, but their threads still hang: the
        # slots stay taken, so later users start no thread either.
        late = await asyncio.gather(
            *(cache.roles_of(make_principal(f"late{n}")) for n in range(20)), return_exceptions=True
        )
        assert source.calls == 3
        assert source.most_at_once == 3
        assert all(type(answer).__name__ == "RolesUnavailable" for answer in [*answers, *late])
    finally:
        source.release.set()
    # Once the threads end, their slots come back.
    for _ in range(100):
        if source.running == 0:
            break
        await asyncio.sleep(0.02)
    assert await cache.roles_of(make_principal("fresh")) == ("admin",)


def test_the_thread_cap_holds_through_fastapi_with_many_users(issuer: LocalIssuer) -> None:
    source = HungSource()
    auth = CognitoAuth(issuer.settings())
    auth.roles = RolesCache(source, max_threads=2, timeout_seconds=0.2)
    try:
        with TestClient(roles_app(auth)) as client:
            statuses = {
                client.delete("/admin", headers=as_user(issuer, f"user{n}")).status_code for n in range(30)
            }
        assert statuses == {503}
        assert source.calls == 2
        assert threading.active_count() < 40
    finally:
        source.release.set()


def test_no_thread_free_puts_no_user_in_back_off() -> None:
    source = HungSource()
    cache = RolesCache(source, max_threads=1, timeout_seconds=0.1)
    ada, bob = make_principal("ada"), make_principal("bob")
    with pytest.raises(Exception, match="roles_unavailable"):
        cache.roles_of_sync(ada)  # times out; its thread hangs on
    with pytest.raises(Exception, match="roles_unavailable"):
        cache.roles_of_sync(bob)  # no thread free: refused without a call
    assert source.calls == 1
    source.release.set()
    for _ in range(100):
        if source.running == 0:
            break
        time.sleep(0.02)
    assert cache.roles_of_sync(bob) == ("admin",)  # bob was not put in back-off
    with pytest.raises(Exception, match="roles_unavailable"):
        cache.roles_of_sync(ada)  # ada's source did fail: she waits out the back-off


async def _cancelled_source(principal: Principal) -> list[str]:
    raise asyncio.CancelledError()


def _exits(principal: Principal) -> list[str]:
    raise SystemExit(3)


def _closes(principal: Principal) -> list[str]:
    raise GeneratorExit()


@pytest.mark.parametrize(
    "failing_source",
    [_cancelled_source, _exits, _closes],
    ids=["async CancelledError", "sync SystemExit", "sync GeneratorExit"],
)
def test_a_source_raising_a_base_exception_is_roles_unavailable_not_a_500(
    issuer: LocalIssuer, failing_source: Callable[[Principal], Any]
) -> None:
    auth = CognitoAuth(issuer.settings())
    auth.roles = RolesCache(failing_source)
    with TestClient(roles_app(auth), raise_server_exceptions=False) as client:
        response = client.delete("/admin", headers=as_user(issuer, "ada"))
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "roles_unavailable"


@pytest.mark.parametrize(
    "failing_source",
    [_cancelled_source, _exits, _closes],
    ids=["async CancelledError", "sync SystemExit", "sync GeneratorExit"],
)
def test_roles_of_sync_turns_a_base_exception_into_roles_unavailable(
    failing_source: Callable[[Principal], Any],
) -> None:
    with pytest.raises(Exception, match="roles_unavailable"):
        RolesCache(failing_source).roles_of_sync(make_principal("ada"))


@pytest.mark.anyio
async def test_a_caller_cancelled_while_waiting_is_cancelled_and_the_lookup_still_answers() -> None:
    source = SlowAdminSource()
    cache = RolesCache(source)
    ada = make_principal("ada")
    waiter = asyncio.ensure_future(cache.roles_of(ada))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter  # the request's own cancellation (a client hanging up) propagates
    assert await cache.roles_of(ada) == ("admin",)
    assert source.calls == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync source", "async source"])
def test_roles_of_sync_caches_per_user_and_backs_off_after_a_failure(is_async: bool) -> None:
    source = CountingSource(is_async=is_async)
    clock = FakeClock(1000.0)
    cache = RolesCache(source.source(), ttl_seconds=60, backoff_seconds=5, timer=clock)
    ada = make_principal("ada")
    assert cache.roles_of_sync(ada) == ("admin", "operator")
    assert cache.roles_of_sync(ada) == ("admin", "operator")
    assert source.calls == ["ada"]
    source.fail = True
    clock.now += 61
    with pytest.raises(Exception, match="roles_unavailable"):
        cache.roles_of_sync(ada)
    with pytest.raises(Exception, match="roles_unavailable"):
        cache.roles_of_sync(ada)  # in back-off: the source is not asked again
    assert source.calls == ["ada", "ada"]
    source.fail = False
    clock.now += 6
    assert cache.roles_of_sync(ada) == ("admin", "operator")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync source", "async source"])
def test_roles_of_sync_times_out(is_async: bool) -> None:
    release = threading.Event()

    def stuck(principal: Principal) -> list[str]:
        release.wait(5)
        return ["admin"]

    async def stuck_async(principal: Principal) -> list[str]:
        await asyncio.sleep(5)
        return ["admin"]

    cache = RolesCache(stuck_async if is_async else stuck, timeout_seconds=0.1)
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="roles_unavailable"):
            cache.roles_of_sync(make_principal("ada"))
    finally:
        release.set()
    assert time.monotonic() - started < 3
