"""``siot-authz contract`` against real tokens from moto: the example app passes, broken APIs fail.

This is the CI contract test: moto plays Cognito on 127.0.0.1, the example
app runs as a real subprocess trusting moto's pool, and the CLI logs in and
probes it exactly as a user would probe a deployed API.
"""

from __future__ import annotations

import base64
import io
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import loopback
from _cli_moto import PASSWORD, MotoPool, moto_pool
from example_server import free_port, run_example_app
from siot_authz import AuthError, AuthSettings, TokenVerifier
from siot_authz._cognito_client import Tokens, log_in_unattended
from siot_authz.cli import main
from siot_authz.cli._contract import build_probes
from siot_authz.cli._terminal import Terminal
from siot_authz.testing import check_contract_probe

__all__ = ["moto_pool"]  # the fixture, imported so pytest finds it here

pytest_plugins = ["pytester"]

CREDENTIALS = ["--password-stdin", "--path", "/v1/me"]
CHECKS = [
    "valid ID token, raw",
    "valid ID token, 'Bearer ' prefix",
    "no token",
    "garbage",
    "tampered payload",
    "truncated signature",
    "unsigned (alg none)",
    "access token instead of ID token",
]


def table(output: str) -> dict[str, str]:
    """CHECK -> PASS/FAIL from the printed table."""
    results = {}
    for line in output.splitlines():
        for check in CHECKS:
            if line[8:].startswith(check + " ") and line[:4] in ("PASS", "FAIL"):
                results[check] = line[:4]
    return results


@pytest.fixture(scope="module")
def example_api(moto_pool: MotoPool) -> Iterator[str]:
    """The example app as ``python -m examples.app``, trusting moto's pool."""
    with run_example_app({**os.environ, **moto_pool.env()}) as app:
        yield app.base_url


def test_example_app_passes_the_contract_run_as_in_ci(moto_pool: MotoPool, example_api: str) -> None:
    env = {**os.environ, **moto_pool.env()}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "siot_authz.cli",
            "contract",
            "--api",
            example_api,
            "-u",
            "alice",
            *CREDENTIALS,
        ],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert table(result.stdout) == dict.fromkeys(CHECKS, "PASS")
    assert "8 of 8 checks passed." in result.stdout


# -- APIs that get authentication wrong -----------------------------------------------------


def _unverified_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def accepts_everything(authorization: str | None, verifier: TokenVerifier) -> int:
    return 200


def skips_the_signature(authorization: str | None, verifier: TokenVerifier) -> int:
    # Reads the claims and checks them, but never the signature: the classic mistake.
    if not authorization:
        return 401
    token = authorization.removeprefix("Bearer ")
    try:
        claims = _unverified_claims(token)
    except (ValueError, IndexError):
        return 401
    return 200 if claims.get("token_use") == "id" else 401


def forgets_the_bearer_prefix(authorization: str | None, verifier: TokenVerifier) -> int:
    # Verifies properly, but only raw tokens: SimpleIOT's JavaScript clients would be locked out.
    if authorization and authorization.startswith("Bearer "):
        return 401
    return verifies_properly(authorization, verifier)


def crashes_on_garbage(authorization: str | None, verifier: TokenVerifier) -> int:
    # Answers 500 instead of 401 when the value does not even split into three segments.
    if authorization is not None and authorization.count(".") != 2:
        return 500
    return verifies_properly(authorization, verifier)


def hangs_up_on_garbage(authorization: str | None, verifier: TokenVerifier) -> int:
    # Crashes on a value without dots, so the connection closes with no response at all.
    if authorization is not None and "." not in authorization:
        raise RuntimeError("unhandled")
    return verifies_properly(authorization, verifier)


def verifies_properly(authorization: str | None, verifier: TokenVerifier) -> int:
    """What a correct API does; the broken ones above deviate from it in one way each."""
    if authorization is None:
        return 401
    try:
        verifier.verify_sync(authorization)
    except AuthError:
        return 401
    return 200


@pytest.fixture
def broken_api(moto_pool: MotoPool, request: pytest.FixtureRequest) -> Iterator[str]:
    decide: Callable[[str | None, TokenVerifier], int] = request.param
    settings = AuthSettings(
        region=moto_pool.region,
        user_pool_id=moto_pool.user_pool_id,
        client_ids=(moto_pool.client_id,),
        jwks_url=moto_pool.jwks_url,
    )
    verifier = TokenVerifier(settings)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = decide(self.headers.get("Authorization"), verifier)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    # Polled every 50 ms rather than the default 0.5 s: shutdown() waits for the next poll.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        verifier.close()


@pytest.mark.parametrize(
    ("broken_api", "failing"),
    [
        pytest.param(accepts_everything, set(CHECKS[2:]), id="accepts-everything"),
        pytest.param(
            skips_the_signature,
            {"tampered payload", "truncated signature", "unsigned (alg none)"},
            id="skips-signature",
        ),
        pytest.param(forgets_the_bearer_prefix, {"valid ID token, 'Bearer ' prefix"}, id="no-bearer"),
        pytest.param(crashes_on_garbage, {"garbage"}, id="500-on-garbage"),
        pytest.param(hangs_up_on_garbage, {"garbage"}, id="hangs-up-on-garbage"),
    ],
    indirect=["broken_api"],
)
def test_broken_api_fails_exactly_the_checks_it_gets_wrong(
    moto_pool: MotoPool, broken_api: str, failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_pool.env().items():
        monkeypatch.setenv(name, value)
    stdout = io.StringIO()
    terminal = Terminal(stdin=io.StringIO(PASSWORD + "\n"), stdout=stdout, stderr=io.StringIO())
    code = main(["contract", "--api", broken_api, "-u", "alice", "--password-stdin"], terminal=terminal)
    assert code == 1
    results = table(stdout.getvalue())
    assert {check for check, result in results.items() if result == "FAIL"} == failing
    assert set(results) == set(CHECKS)


def test_contract_reports_an_unreachable_api_as_a_network_error(
    moto_pool: MotoPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_pool.env().items():
        monkeypatch.setenv(name, value)
    stderr = io.StringIO()
    terminal = Terminal(stdin=io.StringIO(PASSWORD + "\n"), stdout=io.StringIO(), stderr=stderr)
    argv = ["contract", "--api", f"http://127.0.0.1:{free_port()}", "-u", "alice", "--password-stdin"]
    assert main(argv, terminal=terminal) == 2
    assert "cannot reach the API" in stderr.getvalue()


# -- the forgeries themselves ------------------------------------------------------------------


def _segments(token: str) -> list[str]:
    return token.split(".")


def test_forgeries_differ_from_the_valid_token_only_where_intended(moto_pool: MotoPool) -> None:
    response = loopback.post(
        moto_pool.endpoint_url + "/",
        headers={
            "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
            "Content-Type": "application/x-amz-json-1.1",
        },
        json={
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": moto_pool.client_id,
            "AuthParameters": {"USERNAME": "alice", "PASSWORD": PASSWORD},
        },
    )
    result = response.json()["AuthenticationResult"]
    tokens = Tokens(result["IdToken"], result["AccessToken"], None, None, None)
    probes = {probe.name: probe for probe in build_probes(tokens)}
    header, payload, signature = _segments(tokens.id_token)

    tampered = _segments(probes["tampered payload"].authorization or "")
    assert (tampered[0], tampered[2]) == (header, signature)
    assert _unverified_claims(".".join(tampered))["cognito:groups"] == ["admin"]

    truncated = probes["truncated signature"].authorization or ""
    assert tokens.id_token.startswith(truncated)
    assert len(truncated) < len(tokens.id_token)

    unsigned = _segments(probes["unsigned (alg none)"].authorization or "")
    assert unsigned[1:] == [payload, ""]
    assert json.loads(base64.urlsafe_b64decode(unsigned[0] + "==="))["alg"] == "none"

    assert probes["access token instead of ID token"].authorization == tokens.access_token
    assert probes["no token"].authorization is None
    assert [probe.should_accept for probe in probes.values()] == [True, True] + [False] * 6


# -- the same probes inside a user's pytest suite ----------------------------------------------

CONTRACT_SUITE = """
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from siot_authz import CognitoAuth, Principal
from siot_authz.testing import CONTRACT_PROBES


@pytest.fixture(scope="module")
def client(siot_real_settings):
    auth = CognitoAuth(siot_real_settings)
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/v1/me")
    async def me(principal: Principal = Depends(auth)) -> dict:
        return {"user": principal.username}

    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("probe", CONTRACT_PROBES)
def test_app_keeps_the_contract(siot_contract, client, probe):
    siot_contract(client, probe)


def test_tokens_are_real(siot_real_tokens, siot_real_pool):
    assert siot_real_tokens.id_token.count(".") == 2
    assert siot_real_pool.username == "alice"
"""

DEPLOYED_SUITE = """
import os
import pytest
from siot_authz.testing import CONTRACT_PROBES


@pytest.mark.parametrize("probe", CONTRACT_PROBES)
def test_deployed_api_keeps_the_contract(siot_contract, probe):
    siot_contract(os.environ["API_URL"], probe, path="/v1/me")
"""


@pytest.fixture
def pool_options(
    moto_pool: MotoPool, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Command-line options naming moto's pool; the password goes in the environment only."""
    for name in ("SIOT_AUTHZ_TEST_CONFIG", "SIOT_AUTHZ_TEST_USERNAME", "SIOT_AUTHZ_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIOT_AUTHZ_TEST_PASSWORD", PASSWORD)
    config = moto_pool.write_config(tmp_path_factory.mktemp("pool"))
    return [
        "--siot-config",
        str(config),
        "--siot-username",
        "alice",
        "--siot-endpoint-url",
        moto_pool.endpoint_url,
    ]


def test_contract_probes_run_as_test_items_against_a_testclient(
    pytester: pytest.Pytester, pool_options: list[str]
) -> None:
    pytester.makepyfile(test_contract_suite=CONTRACT_SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-v", *pool_options)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["*test_app_keeps_the_contract?tampered-payload? PASSED*"])


def run_deployed_suite(
    pytester: pytest.Pytester, options: list[str], api_url: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.RunResult:
    monkeypatch.setenv("API_URL", api_url)
    pytester.makepyfile(test_deployed=DEPLOYED_SUITE)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *options)


def test_contract_probes_pass_against_a_running_api(
    pytester: pytest.Pytester, pool_options: list[str], example_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_deployed_suite(pytester, pool_options, example_api, monkeypatch).assert_outcomes(passed=8)


def test_logins_and_probes_load_the_ca_bundle_once_a_process(
    moto_pool: MotoPool, example_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each login and each probe made its own verifying TLS context: 20 to 30 ms of CPU apiece to
    # load the CA bundle again, nine times a pool in one contract run (a login, eight probes).
    # They share the key caches' one.
    loaded: list[object] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loaded.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    for _ in range(3):
        tokens = log_in_unattended(moto_pool.endpoint_url, moto_pool.client_id, "alice", PASSWORD)
        for probe in ("valid-raw", "tampered-payload", "no-token"):
            check_contract_probe(tokens, example_api, probe)
    assert len(loaded) <= 1


@pytest.mark.parametrize("broken_api", [accepts_everything], indirect=True)
def test_a_failing_probe_is_named_in_the_failure(
    pytester: pytest.Pytester, pool_options: list[str], broken_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_deployed_suite(pytester, pool_options, broken_api, monkeypatch)
    result.assert_outcomes(passed=2, failed=6)
    result.stdout.fnmatch_lines(
        ["*contract probe 'unsigned-alg-none' (unsigned (alg none)): expected 401, got 200 from GET *"]
    )


def test_contract_tests_are_skipped_saying_what_to_set_without_a_pool(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CONFIG", "USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"SIOT_AUTHZ_TEST_{name}", raising=False)
    pytester.makepyfile(test_deployed=DEPLOYED_SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=8)
    result.stdout.fnmatch_lines(["*--siot-config*--siot-username*SIOT_AUTHZ_TEST_PASSWORD*"])


@pytest.mark.parametrize(
    ("password", "error"),
    [
        pytest.param(None, "*configured in part: SIOT_AUTHZ_TEST_PASSWORD not set*", id="no-password"),
        pytest.param(
            "not-the-password", "*cannot log in for contract tests*wrong username or password*", id="refused"
        ),
    ],
)
def test_a_pool_that_cannot_be_used_fails_instead_of_skipping(
    pytester: pytest.Pytester,
    pool_options: list[str],
    monkeypatch: pytest.MonkeyPatch,
    password: str | None,
    error: str,
) -> None:
    if password is None:
        monkeypatch.delenv("SIOT_AUTHZ_TEST_PASSWORD")
    else:
        monkeypatch.setenv("SIOT_AUTHZ_TEST_PASSWORD", password)
    pytester.makepyfile(test_deployed=DEPLOYED_SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *pool_options)
    result.assert_outcomes(errors=8)
    result.stdout.fnmatch_lines([error])
    assert "not-the-password" not in result.stdout.str()
