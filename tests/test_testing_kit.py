"""The test kit as a user's project sees it: the pytest plugin's fixtures, and the FastAPI overrides."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from siot_authz import AuthError, AuthSettings, CognitoAuth, Principal, RolesPrincipal, TokenVerifier
from siot_authz.revocation import MemoryRevocations
from siot_authz.testing import (
    LocalIssuer,
    make_principal,
    override_principal,
    override_roles,
    override_settings,
)
from siot_authz.testing._real_pool import RealPool, find_real_pool
from spare_keys import spare_key, spare_key_as

pytest_plugins = ["pytester"]

# A user's app, configured for a real pool whose keys the tests can never reach
# (the JWKS URL is a closed loopback port), so only the kit can make a request pass.
USER_APP = """
from fastapi import Depends, FastAPI
from siot_authz import AuthSettings, CognitoAuth, Principal

auth = CognitoAuth(
    AuthSettings(
        region="us-west-2",
        user_pool_id="us-west-2_RealPool9",
        client_ids=["realappclient"],
        jwks_url="http://127.0.0.1:9/jwks.json",
        http_timeout_seconds=1,
    )
)
app = FastAPI()


@app.get("/me")
async def me(principal: Principal = Depends(auth)) -> dict:
    return {"username": principal.username, "groups": list(principal.groups)}


@app.delete("/things")
async def delete_things(principal: Principal = Depends(auth.require_groups("admin"))) -> dict:
    return {"deleted_by": principal.username}
"""

USER_TESTS = """
import pytest
from fastapi.testclient import TestClient
from myapp import app, auth


@pytest.fixture
def client():
    with TestClient(app) as client:
        yield client


def test_minted_token_passes_the_real_pipeline(client, siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    response = client.get("/me", headers=siot_auth_headers(username="ada", groups=["admin"]))
    assert response.json() == {"username": "ada", "groups": ["admin"]}


def test_raw_token_without_bearer_works_too(client, siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    assert client.get("/me", headers=siot_auth_headers(bearer=False)).status_code == 200


@pytest.mark.parametrize(
    ("mint_args", "code"),
    [({"expires_in": -60}, "token_expired"), ({"token_use": "access"}, "token_use_mismatch")],
)
def test_bad_tokens_are_refused(client, siot_trust_local_issuer, siot_mint, mint_args, code):
    siot_trust_local_issuer(app, auth)
    response = client.get("/me", headers={"Authorization": siot_mint(**mint_args)})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == code


def test_groups_are_still_enforced(client, siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    assert client.delete("/things", headers=siot_auth_headers(groups=["viewer"])).status_code == 403
    assert client.delete("/things", headers=siot_auth_headers(groups=["admin"])).status_code == 200


def test_override_principal_needs_no_token(client, siot_override_principal):
    siot_override_principal(app, auth, "bob", groups=("admin",))
    assert client.delete("/things").json() == {"deleted_by": "bob"}


def test_overrides_are_gone_in_the_next_test(client, siot_mint):
    # The app trusts only its own pool: without the kit a minted token is from a stranger.
    assert app.dependency_overrides == {}
    response = client.get("/me", headers={"Authorization": siot_mint()})
    assert response.json()["detail"]["code"] == "issuer_invalid"


def test_settings_and_issuer_agree(siot_local_issuer, siot_auth_settings):
    assert siot_auth_settings.jwks_url == siot_local_issuer.jwks_url
    assert siot_auth_settings.jwks_url.startswith("http://127.0.0.1:")
    assert siot_auth_settings.user_pool_id == siot_local_issuer.user_pool_id
"""


def test_plugin_is_registered_through_the_entry_point(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    plugin = config.pluginmanager.get_plugin("siot_authz")
    assert plugin is not None
    assert plugin.__name__ == "siot_authz.testing.pytest_plugin"


def test_a_users_failing_assertion_still_fails(pytester: pytest.Pytester) -> None:
    # The kit must not make tests pass by itself: a wrong expectation is reported.
    pytester.makepyfile(
        myapp=USER_APP,
        test_wrong=USER_TESTS.split("\n\n\ndef test_minted")[0]
        + """


def test_expects_the_wrong_user(client, siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    assert client.get("/me", headers=siot_auth_headers(username="ada")).json()["username"] == "eve"
""",
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)


def test_plugin_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess("--fixtures", "-p", "no:cacheprovider")
    for name in (
        "siot_local_issuer",
        "siot_auth_settings",
        "siot_mint",
        "siot_auth_headers",
        "siot_trust_local_issuer",
        "siot_override_principal",
        "siot_override_roles",
    ):
        result.stdout.fnmatch_lines([f"{name}*"])


# A user's app whose roles come from its database, with routes defined at import, and settings
# for a real pool behind a function (the README's way): only the kit can make a request pass.
ROLES_APP = """
from fastapi import Depends, FastAPI
from siot_authz import AuthSettings, CognitoAuth, RolesPrincipal

DATABASE = {"ada": ["member"], "bob": ["member"]}


def roles_of(principal):
    return DATABASE.get(principal.username, [])


auth = CognitoAuth(lambda: AuthSettings.from_simpleiot_config("~/.simpleiot/myteam/config.json"), roles=roles_of)
app = FastAPI(lifespan=auth.lifespan)


@app.delete("/project")
async def delete_project(caller: RolesPrincipal = Depends(auth.require_roles("admin"))) -> dict:
    return {"by": caller.username, "roles": list(caller.roles)}
"""

# In this order: each test after the first would pass only by what an earlier one left behind.
ROLES_TESTS = """
from fastapi.testclient import TestClient
from rolesapp import DATABASE, app, auth


def delete_as(headers):
    with TestClient(app) as client:
        return client.delete("/project", headers=headers).status_code


def test_ada_is_made_admin_by_the_fixture(siot_trust_local_issuer, siot_override_roles, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    siot_override_roles(auth, {"ada": ["admin"]})
    assert delete_as(siot_auth_headers(username="ada")) == 200
    assert delete_as(siot_auth_headers(username="bob")) == 403


def test_ada_is_not_admin_in_the_next_test(siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    assert delete_as(siot_auth_headers(username="ada")) == 403


def test_ada_is_admin_in_a_patched_database(siot_trust_local_issuer, siot_auth_headers, monkeypatch):
    monkeypatch.setitem(DATABASE, "ada", ["admin"])
    siot_trust_local_issuer(app, auth)
    assert delete_as(siot_auth_headers(username="ada")) == 200


def test_the_roles_cached_then_are_gone_in_the_next_test(siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    assert delete_as(siot_auth_headers(username="ada")) == 403


def test_a_source_of_your_own_with_an_overridden_principal(siot_override_principal, siot_override_roles):
    siot_override_principal(app, auth, "carol")
    siot_override_roles(auth, lambda principal: ["admin"] if principal.username == "carol" else [])
    assert delete_as({}) == 200


def test_and_the_apps_own_source_is_back_after_it(siot_override_principal):
    siot_override_principal(app, auth, "ada")
    assert delete_as({}) == 403
"""


def test_fixtures_work_in_a_users_project_without_any_conftest(pytester: pytest.Pytester) -> None:
    # One run for both apps: each pytester run costs seconds.
    pytester.makepyfile(
        myapp=USER_APP, test_routes=USER_TESTS, rolesapp=ROLES_APP, test_user_roles=ROLES_TESTS
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=8 + 6)


# -- the override helpers, in this project's own tests ------------------------------------------


@pytest.fixture
def protected_app(auth: CognitoAuth) -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(principal: Principal = Depends(auth.require_groups("admin"))) -> dict[str, str]:
        return {"username": principal.username}

    return app


def test_override_principal_restores_an_earlier_override(protected_app: FastAPI, auth: CognitoAuth) -> None:
    outer, inner = make_principal("outer", groups=("admin",)), make_principal("inner", groups=("admin",))
    with TestClient(protected_app) as client, override_principal(protected_app, auth, outer):
        with override_principal(protected_app, auth, inner):
            assert client.get("/who").json() == {"username": "inner"}
        assert client.get("/who").json() == {"username": "outer"}
    assert protected_app.dependency_overrides == {}


def test_override_principal_still_checks_groups(protected_app: FastAPI, auth: CognitoAuth) -> None:
    with TestClient(protected_app) as client, override_principal(protected_app, auth, make_principal("bob")):
        response = client.get("/who")
    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "missing_group"


def test_override_settings_trusts_another_issuer_for_the_block(
    protected_app: FastAPI, auth: CognitoAuth
) -> None:
    other_pool = LocalIssuer(user_pool_id="us-east-1_OtherPool2", key=spare_key(0))
    with other_pool as other, TestClient(protected_app) as client:
        other.serve()
        token = other.mint(username="zoe", groups=["admin"])
        assert (
            client.get("/who", headers={"Authorization": token}).json()["detail"]["code"] == "issuer_invalid"
        )
        with override_settings(protected_app, auth, other.settings()):
            assert client.get("/who", headers={"Authorization": token}).json() == {"username": "zoe"}
        assert client.get("/who", headers={"Authorization": token}).status_code == 401


@pytest.mark.parametrize("face", ["sync", "async"])
def test_local_issuer_transport_serves_the_jwks_without_a_socket(face: str) -> None:
    issuer = LocalIssuer(key=spare_key(0))
    token = issuer.mint(username="carol")
    settings = issuer.settings(for_transport=True)
    if face == "sync":
        principal = TokenVerifier(settings, sync_transport=issuer.transport()).verify_sync(token)
    else:
        verifier = TokenVerifier(settings, async_transport=issuer.transport())
        principal = asyncio.run(verifier.verify(token))
    assert principal.username == "carol"
    assert not issuer.is_serving
    assert settings.jwks_url is not None
    assert settings.jwks_url.startswith("http://local-issuer.invalid/")


def test_local_issuer_settings_before_serve_point_at_keys_that_answer() -> None:
    # Issue 10: settings taken before serve() used to name a host nothing answers.
    with LocalIssuer(key=spare_key(0)) as issuer:
        settings = issuer.settings()
        assert issuer.is_serving
        assert settings.jwks_url == issuer.serve().url
        assert TokenVerifier(settings).verify_sync(issuer.mint(username="dan")).username == "dan"
    assert not issuer.is_serving


def test_local_issuer_transport_also_answers_served_settings() -> None:
    with LocalIssuer(key=spare_key(0)) as issuer:
        verifier = TokenVerifier(issuer.settings(), sync_transport=issuer.transport())
        assert verifier.verify_sync(issuer.mint(username="fay")).username == "fay"
        assert issuer.serve().request_count == 0  # the transport answered, not the socket


@pytest.mark.parametrize("keep_old", [True, False], ids=["keep-old", "withdraw-old"])
def test_local_issuer_signs_and_rotates_with_keys_it_is_given(keep_old: bool) -> None:
    first, second = spare_key(0), spare_key(1)
    with LocalIssuer(key=first) as issuer:
        verifier = TokenVerifier(issuer.settings())
        old_token = issuer.mint(username="gus")
        assert issuer.keys == [first]
        assert verifier.verify_sync(old_token).username == "gus"

        assert issuer.rotate_key(keep_old=keep_old, key=second) is second
        assert issuer.keys == ([first, second] if keep_old else [second])
        assert issuer.signing_key is second
        assert [jwk["kid"] for jwk in issuer.jwks()["keys"]] == [key.kid for key in issuer.keys]
        # A new verifier fetches the rotated JWKS: the new key's tokens pass, the old key's only if kept.
        rotated = TokenVerifier(issuer.settings())
        assert rotated.verify_sync(issuer.mint(username="hal")).username == "hal"
        if keep_old:
            assert rotated.verify_sync(old_token).username == "gus"
        else:
            with pytest.raises(AuthError) as refused:
                rotated.verify_sync(old_token)
            assert refused.value.code == "kid_unknown"


def test_local_issuer_refuses_to_rotate_in_a_kid_it_already_holds() -> None:
    key = spare_key(0)
    issuer = LocalIssuer(key=key)
    with pytest.raises(ValueError, match="already holds"):
        issuer.rotate_key(key=key)
    with pytest.raises(ValueError, match="already holds"):
        issuer.rotate_key(keep_old=False, key=spare_key_as(1, key.kid))
    assert issuer.keys == [key]


def test_local_issuer_makes_its_own_keys_the_size_it_was_asked_for() -> None:
    # The rest of the suite hands its issuers spare keys (tests/spare_keys.py); this is where the
    # issuer and rotate_key() make their own. 1024 bits, as no verifier is asked: generation is faster.
    issuer = LocalIssuer(key_bits=1024)
    (first,) = issuer.keys
    rotated = issuer.rotate_key()

    assert issuer.keys == [first, rotated]
    assert issuer.signing_key is rotated
    assert rotated.kid != first.kid
    assert rotated.private_key.key_size == first.private_key.key_size == 1024
    assert rotated.public_jwk()["n"] != first.public_jwk()["n"]
    assert issuer.rotate_key(keep_old=False) not in (first, rotated)
    assert len(issuer.keys) == 1


def test_local_issuer_settings_keep_an_explicit_jwks_url() -> None:
    issuer = LocalIssuer(key=spare_key(0))
    settings = issuer.settings(jwks_url="http://127.0.0.1:9/jwks.json")
    assert settings.jwks_url == "http://127.0.0.1:9/jwks.json"
    assert not issuer.is_serving


def test_override_settings_keeps_the_apps_lifespan_away_from_the_real_pool(issuer: LocalIssuer) -> None:
    real_pool = AuthSettings(
        region="us-west-2",
        user_pool_id="us-west-2_RealPool1",
        client_ids=["realclient"],
        jwks_url="http://127.0.0.1:9/never-reached/jwks.json",  # nothing listens on port 9
        http_timeout_seconds=1.0,
    )
    auth = CognitoAuth(real_pool)
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"username": principal.username}

    server = issuer.serve()
    with override_settings(app, auth, issuer.settings()), TestClient(app) as client:
        assert server.request_count == 1  # the lifespan prefetched from the local issuer
        response = client.get("/me", headers={"Authorization": issuer.mint(username="erin")})
    assert response.json() == {"username": "erin"}
    assert auth.verifier.settings is real_pool  # restored afterwards


# -- an app whose settings come from a function (the README's way) ----------------------------


def _lazy_app(calls: list[str]) -> tuple[FastAPI, CognitoAuth]:
    def real_pool_settings() -> AuthSettings:
        calls.append("resolved")
        raise FileNotFoundError("no ~/.simpleiot config on this machine")

    auth = CognitoAuth(real_pool_settings)
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth.require_groups("admin"))) -> dict[str, str]:
        return {"username": principal.username}

    return app, auth


def test_override_settings_never_resolves_the_apps_own_settings(issuer: LocalIssuer) -> None:
    calls: list[str] = []
    app, auth = _lazy_app(calls)
    token = issuer.mint(username="gus", groups=["admin"])
    with override_settings(app, auth, issuer.settings()), TestClient(app) as client:
        assert client.get("/me", headers={"Authorization": token}).json() == {"username": "gus"}
    assert calls == []
    assert auth._verifier is None  # still unresolved: the next test may swap it again


def test_override_principal_never_resolves_the_apps_own_settings() -> None:
    calls: list[str] = []
    app, auth = _lazy_app(calls)
    with override_principal(app, auth, make_principal("hal", groups=("admin",))), TestClient(app) as client:
        assert client.get("/me").json() == {"username": "hal"}
    with override_principal(app, auth, make_principal("ivy")), TestClient(app) as client:
        assert client.get("/me").status_code == 403
    assert calls == []
    assert auth._verifier is None


def test_override_principal_keeps_the_lifespan_off_the_network(auth: CognitoAuth) -> None:
    app = FastAPI(lifespan=auth.lifespan)
    with override_principal(app, auth, make_principal()), TestClient(app):
        assert auth.verifier.settings.user_pool_id == "us-east-1_Overridden0"
    assert auth.verifier.settings.user_pool_id != "us-east-1_Overridden0"


def test_override_settings_keeps_the_apps_own_check_and_revocations(issuer: LocalIssuer) -> None:
    revocations = MemoryRevocations()
    auth = CognitoAuth(
        lambda: AuthSettings(region="us-west-2", user_pool_id="us-west-2_RealPool1", client_ids=["abc"]),
        check=lambda principal: principal.username != "mallory",
        revocations=revocations,
    )
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"username": principal.username}

    with override_settings(app, auth, issuer.settings()) as local, TestClient(app) as client:
        assert client.get("/me", headers={"Authorization": issuer.mint(username="gus")}).status_code == 200
        refused = client.get("/me", headers={"Authorization": issuer.mint(username="mallory")})
        assert refused.json()["detail"]["code"] == "check_failed"
        victim = issuer.mint(username="vic")
        local.verifier.revoke_user_sync(issuer.user_pool_id, make_sub(issuer, "vic"))
        assert (
            client.get("/me", headers={"Authorization": victim}).json()["detail"]["code"] == "token_revoked"
        )
    assert local.verifier.revocations is revocations


def make_sub(issuer: LocalIssuer, username: str) -> str:
    sub: str = issuer.claims(username=username)["sub"]
    return sub


# -- roles in tests ------------------------------------------------------------------------------


@pytest.fixture
def roles_app(issuer: LocalIssuer) -> tuple[FastAPI, CognitoAuth]:
    auth = CognitoAuth(issuer.settings(), roles=lambda principal: ["member"])
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/roles")
    async def roles(principal: RolesPrincipal = Depends(auth.with_roles())) -> dict[str, list[str]]:
        return {"roles": list(principal.roles)}

    return app, auth


def test_override_roles_gives_fixed_roles_for_the_block_only(roles_app: tuple[FastAPI, CognitoAuth]) -> None:
    app, auth = roles_app
    own_cache = auth.roles
    with override_principal(app, auth, make_principal("ada")), TestClient(app) as client:
        with override_roles(auth, {"ada": ["operator", "admin"]}) as cache:
            assert client.get("/roles").json() == {"roles": ["admin", "operator"]}
            assert auth.roles is cache
        assert client.get("/roles").json() == {"roles": ["member"]}
    assert auth.roles is own_cache


def test_override_roles_refuses_a_bare_string_of_roles(roles_app: tuple[FastAPI, CognitoAuth]) -> None:
    _app, auth = roles_app
    with pytest.raises(TypeError, match="list of role names"), override_roles(auth, {"ada": "admin"}):  # type: ignore[dict-item]
        pass  # pragma: no cover - refused on entry


def test_the_apps_roles_cache_is_emptied_as_each_override_ends(
    roles_app: tuple[FastAPI, CognitoAuth], issuer: LocalIssuer
) -> None:
    app, auth = roles_app
    assert auth.roles is not None
    answers = iter([["admin"], ["member"], ["viewer"]])
    auth.roles.source = lambda principal: next(answers)  # what a test patching the source does
    ada = {"Authorization": issuer.mint(username="ada")}
    with override_settings(app, auth, issuer.settings()), TestClient(app) as client:
        assert client.get("/roles", headers=ada).json() == {"roles": ["admin"]}
        assert client.get("/roles", headers=ada).json() == {"roles": ["admin"]}  # cached
    with override_settings(app, auth, issuer.settings()), TestClient(app) as client:
        assert client.get("/roles", headers=ada).json() == {"roles": ["member"]}
    with override_principal(app, auth, make_principal("ada")), TestClient(app) as client:
        assert client.get("/roles").json() == {"roles": ["viewer"]}


# -- no SIOT_AUTHZ_* variables ------------------------------------------------------------------


LEFTOVER_SERVER_VARIABLES = {
    "SIOT_AUTHZ_REGION": "eu-west-1",
    "SIOT_AUTHZ_USER_POOL_ID": "eu-west-1_Server123",
    "SIOT_AUTHZ_CLIENT_IDS": "serverclient",
    "SIOT_AUTHZ_TOKEN_USE": "access",
    "SIOT_AUTHZ_LEEWAY_SECONDS": "120",
    "SIOT_AUTHZ_MAX_TOKEN_BYTES": "1024",
    "SIOT_AUTHZ_JWKS_TTL_SECONDS": "5",
}


def _real_pool(tmp_path: Path) -> RealPool:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"region": "us-west-2", "cognitoUserPoolId": "us-west-2_Moto12345", "cognitoClientId": "ci"}
        ),
        encoding="utf-8",
    )
    found = find_real_pool(
        str(config), "ci-user", "http://127.0.0.1:5000", environ={"SIOT_AUTHZ_TEST_PASSWORD": "x"}
    )
    assert found is not None
    return found[0]


@pytest.mark.parametrize(
    "build",
    [
        lambda issuer, tmp_path: issuer.settings(),
        lambda issuer, tmp_path: issuer.settings(for_transport=True),
        lambda issuer, tmp_path: _real_pool(tmp_path).settings(),
    ],
    ids=["local issuer", "local issuer, for a transport", "real pool"],
)
def test_kit_settings_never_read_siot_authz_variables_left_in_the_shell(
    issuer: LocalIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Any
) -> None:
    for name in os.environ:
        if name.startswith("SIOT_AUTHZ_"):
            monkeypatch.delenv(name)
    in_a_clean_shell = build(issuer, tmp_path)
    for name, value in LEFTOVER_SERVER_VARIABLES.items():
        monkeypatch.setenv(name, value)

    settings = build(issuer, tmp_path)

    assert settings == in_a_clean_shell
    assert type(settings) is AuthSettings
    assert (settings.token_use, settings.leeway_seconds) == (
        "id",
        AuthSettings.model_fields["leeway_seconds"].default,
    )


def test_kit_settings_still_take_their_arguments(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_TOKEN_USE", "id")

    settings = issuer.settings(token_use="access", leeway_seconds=0)

    assert (settings.token_use, settings.leeway_seconds) == ("access", 0)
    with pytest.raises(ValueError, match="leeway_seconds"):
        issuer.settings(leeway_seconds=-1)


def test_the_test_kit_imports_nothing_from_the_cli() -> None:
    # Layering: the CLI and the test kit both sit on the Cognito client; neither reaches into the other.
    import subprocess
    import sys

    code = (
        "import sys, siot_authz.testing, siot_authz.testing.pytest_plugin, siot_authz.testing._real_pool;"
        "print(sorted(name for name in sys.modules if name.startswith('siot_authz.cli')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
