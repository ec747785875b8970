"""examples/lambda behind API Gateway's emulator (serverless-offline), on real tokens from moto's Cognito.

One emulator process and one moto pool serve the whole module. The REST API
has ``/project`` behind a TOKEN authorizer and ``/device`` behind a REQUEST
one; the HTTP API has ``/project`` behind an IAM-policy authorizer and
``/device`` behind a simple (``isAuthorized``) one. The emulator spawns the
example's handlers with ``python3`` from this venv.

What the emulator cannot show (the result cache, one policy answering every
route) is covered by test_lambda_authorizer.py on the policy itself. Where it
differs from AWS it is said next to the test.
"""

from __future__ import annotations

import functools
import gzip
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwk, jwt

import loopback
import siot_authz.revocation
from lambda_emulator import EXAMPLE, Emulator, emulator, emulator_missing
from moto_pool import MotoPool, Tokens, moto_user_pool
from redis_server import RedisServer, is_redis_installed

pytestmark = pytest.mark.skipif(emulator_missing() is not None, reason=str(emulator_missing()))

PASSWORD = "Correct-Horse-9-Battery"
#: How long a Lambda keeps a revocation lookup's answer in the example (SIOT_EXAMPLE_REVOCATION_CACHE).
REVOCATION_CACHE_SECONDS = 1.0
HAS_REDIS_LOOKUP = is_redis_installed() and hasattr(siot_authz.revocation, "RedisLookupRevocations")


@pytest.fixture(scope="module")
def pool() -> Iterator[MotoPool]:
    with moto_user_pool(username="ada", password=PASSWORD) as pool:
        pool.add_user("bob", PASSWORD)
        for revoked_later in ("carol", "dave"):  # revoked by one test each: nobody else uses them
            pool.add_user(revoked_later, PASSWORD)
        yield pool


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str | None]:
    """A real Redis for the revocation lookup, when this checkout has the lookup backend and redis-server."""
    if not HAS_REDIS_LOOKUP:
        yield None
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def ada(pool: MotoPool) -> Tokens:
    return pool.login()


@pytest.fixture(scope="module")
def bob(pool: MotoPool) -> Tokens:
    return pool.login(username="bob", password=PASSWORD)


@pytest.fixture(scope="module")
def running(
    pool: MotoPool, redis_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("lambda")
    # The pool's keys bundled with the functions, as docs/lambda.md does it: no fetch at run time.
    (folder / "jwks.json").write_text(loopback.get(pool.jwks_url).text, encoding="utf-8")
    _seed_roles(folder / "roles.sqlite3", {"ada": ["admin"], "bob": ["member"]})
    env = {
        "SIOT_AUTHZ_REGION": pool.region,
        "SIOT_AUTHZ_USER_POOL_ID": pool.user_pool_id,
        "SIOT_AUTHZ_CLIENT_IDS": pool.client_id,
        "SIOT_AUTHZ_JWKS_FILE": str(folder / "jwks.json"),
        # Nothing listens there: a fetch (an unknown kid) fails at once instead of leaving the machine.
        "SIOT_AUTHZ_JWKS_URL": "http://127.0.0.1:9/jwks.json",
        "SIOT_EXAMPLE_ROLES_DB": str(folder / "roles.sqlite3"),
    }
    if redis_url is not None:
        env["SIOT_EXAMPLE_REDIS_URL"] = redis_url
        env["SIOT_EXAMPLE_REVOCATION_CACHE"] = str(REVOCATION_CACHE_SECONDS)
    started = time.monotonic()
    with emulator(env, folder / "serverless.log") as running:
        print(f"serverless offline started in {time.monotonic() - started:.1f} s")
        yield running


def _seed_roles(path: Path, users: dict[str, list[str]]) -> None:
    # The example's own seeding, loaded by path: examples/lambda is not a package.
    namespace: dict[str, Any] = {"__name__": "roles_db"}
    exec(compile((EXAMPLE / "roles_db.py").read_text(encoding="utf-8"), "roles_db.py", "exec"), namespace)  # noqa: S102
    namespace["seed"](users, str(path))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM user_role").fetchone() == (2,)


@functools.cache
def _moto_key() -> Any:
    """moto's own signing key, built once: its JWK has no primes, and recovering them costs 0.1 s of CPU."""
    import moto.cognitoidp  # here, not at the top: collecting this file need not import moto

    with gzip.open(Path(moto.cognitoidp.__file__).parent / "resources" / "jwks-private.json.gz") as file:
        return jwk.construct(json.load(file), "RS256")


def _moto_signed(token: str, **changes: Any) -> str:
    """``token`` with ``changes`` to its claims, signed again with moto's own key: valid but for those changes."""
    claims = {**jwt.get_unverified_claims(token), **changes}
    return str(jwt.encode(claims, _moto_key(), algorithm="RS256", headers={"kid": "dummy"}))


def _forged(token: str) -> str:
    head, body, signature = token.split(".")
    return f"{head}.{body}.{signature[:-4]}AAAA"


# The four fronts: (base URL attribute, path, what API Gateway answers a refused token with).
FRONTS = [
    pytest.param("rest_url", "project", 401, id="rest-token"),
    pytest.param("rest_url", "device", 401, id="rest-request"),
    # HTTP APIs have no 401 for an authorizer's refusal: the Deny or isAuthorized false gives 403.
    pytest.param("http_api_url", "project", 403, id="http-policy"),
    pytest.param("http_api_url", "device", 403, id="http-simple"),
]


def call(running: Emulator, base: str, method: str, path: str, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return loopback.request(method, f"{getattr(running, base)}/{path}", headers=headers, timeout=60)


@pytest.mark.parametrize(("base", "path", "refused"), FRONTS)
def test_raw_and_bearer_id_tokens_are_accepted(
    running: Emulator, ada: Tokens, bob: Tokens, base: str, path: str, refused: int
) -> None:
    raw = call(running, base, "GET", path, ada.id_token)
    bearer = call(running, base, "GET", path, f"Bearer {bob.id_token}")

    assert (raw.status_code, raw.json()["user"]) == (200, "ada")
    assert (bearer.status_code, bearer.json()["user"]) == (200, "bob")


@pytest.mark.parametrize(("base", "path", "refused"), FRONTS)
@pytest.mark.parametrize("kind", ["access_token", "forged", "expired"])
def test_bad_tokens_are_refused(
    running: Emulator, ada: Tokens, base: str, path: str, refused: int, kind: str
) -> None:
    token = {
        "access_token": ada.access_token,
        "forged": _forged(ada.id_token),
        "expired": _moto_signed(ada.id_token, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    }[kind]

    assert call(running, base, "GET", path, token).status_code == refused


@pytest.mark.parametrize(("base", "path", "refused"), FRONTS)
def test_no_token_is_a_401(running: Emulator, base: str, path: str, refused: int) -> None:
    assert call(running, base, "GET", path, None).status_code == 401


@pytest.mark.parametrize(("base", "path", "refused"), FRONTS)
def test_non_admin_gets_403_on_the_admin_route_and_admin_gets_through(
    running: Emulator, ada: Tokens, bob: Tokens, base: str, path: str, refused: int
) -> None:
    assert call(running, base, "DELETE", path, bob.id_token).status_code == 403
    assert call(running, base, "DELETE", path, ada.id_token).status_code == 200
    assert call(running, base, "GET", path, bob.id_token).status_code == 200


@pytest.mark.parametrize("base", ["rest_url", "http_api_url"])
def test_the_authorizers_context_reaches_the_handler(running: Emulator, ada: Tokens, base: str) -> None:
    response = call(running, base, "GET", "me", ada.id_token)

    assert response.status_code == 200
    assert response.json()["username"] == "ada"
    assert response.json()["roles"] == ["admin"]
    assert response.json()["sub"] == jwt.get_unverified_claims(ada.id_token)["sub"]


def test_admin_delete_makes_an_internal_direct_call(running: Emulator, ada: Tokens) -> None:
    response = call(running, "rest_url", "DELETE", "project", ada.id_token)

    assert response.json()["models"] == {"action": "delete_models", "project": "demo", "caller": "internal"}


def test_direct_invocations_reach_only_the_function_that_trusts_them(running: Emulator) -> None:
    internal = {"action": "delete_models", "project": "demo"}

    assert running.invoke("model", internal) == {**internal, "caller": "internal"}
    refused = running.invoke("project", internal)
    assert isinstance(refused, dict)
    assert refused["statusCode"] == 403
    assert json.loads(refused["body"])["detail"]["code"] == "direct_invocation_refused"


@pytest.mark.skipif(not HAS_REDIS_LOOKUP, reason="needs redis-server and RedisLookupRevocations")
@pytest.mark.parametrize(
    ("base", "path", "user"), [("rest_url", "project", "carol"), ("http_api_url", "device", "dave")]
)
def test_a_token_revoked_with_the_cli_is_refused_within_the_lookups_cache_time(
    running: Emulator, pool: MotoPool, redis_url: str, base: str, path: str, user: str
) -> None:
    token = pool.login(username=user, password=PASSWORD).id_token
    assert (
        call(running, base, "GET", path, token).status_code == 200
    )  # the lookup's "not revoked" is now cached
    sub = jwt.get_unverified_claims(token)["sub"]

    revoke = [sys.executable, "-m", "siot_authz.cli", "revoke", "user", "--pool", pool.user_pool_id]
    subprocess.run(
        [*revoke, "--sub", sub, "--redis-url", redis_url], check=True, capture_output=True, timeout=60
    )
    revoked_at = time.monotonic()

    # The emulator does not cache authorizer results; on AWS add the authorizer's resultTtlInSeconds.
    refused = 401 if base == "rest_url" else 403
    while call(running, base, "GET", path, token).status_code != refused:
        assert time.monotonic() - revoked_at < REVOCATION_CACHE_SECONDS + 20, "still accepted"
        time.sleep(0.2)
    print(f"{base} refused {time.monotonic() - revoked_at:.2f} s after siot-authz revoke returned")
