"""The siot-authz command line, as a new user would drive it: against moto for logins, a local issuer for verify."""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

from _cli_moto import NEW_PASSWORD, PASSWORD, TEMPORARY_PASSWORD, MotoPool, moto_pool
from siot_authz import AuthError, TokenVerifier
from siot_authz._cognito_client import CognitoApiError, CognitoClient, NewPasswordRequired
from siot_authz.cli import build_parser, main
from siot_authz.cli._config import load_config
from siot_authz.cli._output import Spinner, format_table, relative_time
from siot_authz.cli._terminal import Terminal
from siot_authz.testing import JwksResponse, JwksServer, LocalIssuer, SigningKey
from spare_keys import spare_key, spare_key_as

__all__ = ["moto_pool"]  # the fixture, imported so pytest finds it here

COMMANDS = ["login", "verify", "decode", "jwks", "contract", "revoke", "revocations"]
SUBCOMMANDS = [["revoke", "user"], ["revoke", "session"]]


class FakeTerminal(Terminal):
    """A terminal with piped stdin, captured output, and scripted answers to secret prompts."""

    def __init__(
        self, stdin: str = "", *, interactive: bool = False, secrets: list[str] | None = None
    ) -> None:
        super().__init__(stdin=io.StringIO(stdin), stdout=io.StringIO(), stderr=io.StringIO())
        self.interactive = interactive
        self.secrets = list(secrets or [])
        self.secret_prompts: list[str] = []

    @property
    def is_interactive(self) -> bool:
        return self.interactive

    def ask_secret(self, prompt: str) -> str:
        self.secret_prompts.append(prompt)
        return self.secrets.pop(0)

    @property
    def output(self) -> str:
        return self.stdout.getvalue()  # type: ignore[attr-defined]

    @property
    def errors(self) -> str:
        return self.stderr.getvalue()  # type: ignore[attr-defined]


def run(argv: list[str], terminal: FakeTerminal | None = None) -> tuple[int, FakeTerminal]:
    terminal = terminal or FakeTerminal()
    return main(argv, terminal=terminal), terminal


@pytest.fixture(autouse=True)
def _no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own SIOT_AUTHZ_* variables must not change what these tests see.
    for name in (
        *("REGION", "USER_POOL_ID", "CLIENT_IDS", "JWKS_URL", "ENDPOINT_URL", "TOKEN_USE"),
        *("POOLS", "SIMPLEIOT_CONFIGS", "REDIS_URL", "MAX_TOKEN_LIFETIME_SECONDS", "LEEWAY_SECONDS"),
    ):
        monkeypatch.delenv(f"SIOT_AUTHZ_{name}", raising=False)


@pytest.fixture
def pool_env(moto_pool: MotoPool, monkeypatch: pytest.MonkeyPatch) -> MotoPool:
    for name, value in moto_pool.env().items():
        monkeypatch.setenv(name, value)
    return moto_pool


def pool_flags(issuer: LocalIssuer) -> list[str]:
    return [
        "--region",
        issuer.region,
        "--user-pool-id",
        issuer.user_pool_id,
        "--client-id",
        issuer.client_id,
        "--jwks-url",
        issuer.jwks_url,
    ]


def claims_of(token: str) -> dict[str, object]:
    code, terminal = run(["decode", "--json", token])
    assert code == 0
    return json.loads(terminal.output)["claims"]  # type: ignore[no-any-return]


# -- the command line itself --------------------------------------------------------


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS), *SUBCOMMANDS])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: siot-authz" in capsys.readouterr().out


def test_console_script_points_at_main() -> None:
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "siot-authz"]
    assert script.load() is main


def test_runs_as_a_module_and_reports_usage_errors_with_status_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "siot_authz.cli", "verify", "--token-use", "both"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "argument --token-use: invalid choice (choose from 'id', 'access', 'any')" in result.stderr
    assert "both" not in result.stderr  # a value given is never repeated (issue 19 §7)


@pytest.mark.parametrize(
    "flags",
    [
        ["--password", PASSWORD],
        ["-p", PASSWORD],
        [f"--password={PASSWORD}"],
        [f"--password-stdin={PASSWORD}"],
    ],
)
def test_refuses_a_password_given_as_an_argument_without_echoing_it(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["login", "--username", "alice", *flags])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err
    assert "passwords are never taken as arguments" in errors
    assert "--password-stdin" in errors
    assert PASSWORD not in errors


# -- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "in_file", "in_env", "expected"),
    [
        pytest.param({}, None, "us-east-2", "us-east-2", id="env-only"),
        pytest.param({}, "eu-west-1", "us-east-2", "eu-west-1", id="config-file-beats-env"),
        pytest.param({"region": "ap-south-1"}, "eu-west-1", "us-east-2", "ap-south-1", id="flag-beats-all"),
    ],
)
def test_region_comes_from_flag_then_config_file_then_environment(
    tmp_path: Path, flags: dict[str, str], in_file: str | None, in_env: str, expected: str
) -> None:
    config_path = None
    if in_file is not None:
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps({"region": in_file, "cognitoClientId": "fileclient"}))
    args = argparse.Namespace(config=config_path and str(config_path), **{"region": None, **flags})
    config = load_config(args, {"SIOT_AUTHZ_REGION": in_env, "SIOT_AUTHZ_CLIENT_IDS": "envclient,other"})
    assert config.region == expected
    assert config.client_id == ("fileclient" if in_file else "envclient")


def test_missing_setting_names_every_way_to_set_it() -> None:
    code, terminal = run(["jwks"])
    assert code == 2
    assert "--region" in terminal.errors
    assert "SIOT_AUTHZ_REGION" in terminal.errors
    assert "'region'" in terminal.errors


def test_every_missing_setting_is_named_in_one_run() -> None:
    # Issue 17: one missing setting per run meant three runs to learn three names.
    code, terminal = run(["verify", "eyJ.e30.sig"])
    assert code == 2
    for flag, variable in [
        ("--region", "SIOT_AUTHZ_REGION"),
        ("--user-pool-id", "SIOT_AUTHZ_USER_POOL_ID"),
        ("--client-id", "SIOT_AUTHZ_CLIENT_IDS"),
    ]:
        assert flag in terminal.errors
        assert variable in terminal.errors


@pytest.mark.parametrize(
    ("command", "says"),
    [("login", "the first logs in"), ("verify", "any are accepted"), ("jwks", "not needed to list keys")],
)
def test_client_id_help_says_what_each_command_does_with_it(
    command: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert says in help_text
    assert ("the first logs in" in help_text) is (command == "login")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (None, "cannot read SimpleIOT config"),
    ],
)
def test_bad_config_file_is_a_configuration_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    code, terminal = run(["jwks", "--config", str(path)])
    assert code == 2
    assert message in terminal.errors


def test_invalid_pool_id_is_reported_with_the_field_name() -> None:
    flags = ["--region", "us-east-1", "--user-pool-id", "nope", "--client-id", "abc"]
    code, terminal = run(["verify", *flags, "x.y.z"])
    assert code == 2
    assert "user_pool_id" in terminal.errors


# -- login -------------------------------------------------------------------------------


def test_login_prints_an_id_token_for_the_user(pool_env: MotoPool) -> None:
    code, terminal = run(["login", "--username", "alice", "--password-stdin"], FakeTerminal(PASSWORD + "\n"))
    assert code == 0
    claims = claims_of(terminal.output.strip())
    assert claims["token_use"] == "id"
    assert claims["cognito:username"] == "alice"
    assert claims["aud"] == pool_env.client_id


def test_login_json_prints_every_token(pool_env: MotoPool) -> None:
    code, terminal = run(
        ["login", "--username", "alice", "--password-stdin", "--json"], FakeTerminal(PASSWORD + "\n")
    )
    assert code == 0
    tokens = json.loads(terminal.output)
    assert set(tokens) == {"IdToken", "AccessToken", "RefreshToken", "ExpiresIn", "TokenType"}
    assert claims_of(tokens["AccessToken"])["token_use"] == "access"


def test_login_reads_a_simpleiot_config_file(moto_pool: MotoPool, tmp_path: Path) -> None:
    config = moto_pool.write_config(tmp_path)
    argv = ["login", "--config", str(config), "--endpoint-url", moto_pool.endpoint_url, "-u", "alice"]
    code, terminal = run([*argv, "--password-stdin"], FakeTerminal(PASSWORD + "\n"))
    assert code == 0
    assert claims_of(terminal.output.strip())["aud"] == moto_pool.client_id


def test_login_prompts_for_username_and_password_in_a_terminal(pool_env: MotoPool) -> None:
    terminal = FakeTerminal("alice\n", interactive=True, secrets=[PASSWORD])
    code, terminal = run(["login"], terminal)
    assert code == 0
    assert "Username: " in terminal.errors
    assert terminal.secret_prompts == ["Password: "]
    assert terminal.output.count(".") == 2  # only the token is on stdout


@pytest.mark.parametrize(
    ("user_state", "password", "message"),
    [
        pytest.param("confirmed", "Wrong-Pass-9", "wrong username or password", id="wrong-password"),
        pytest.param("missing", PASSWORD, "no such user", id="unknown-user"),
        pytest.param("unconfirmed", PASSWORD, "not confirmed", id="unconfirmed-user"),
    ],
)
def test_login_explains_each_refusal(
    pool_env: MotoPool, user_state: str, password: str, message: str, request: pytest.FixtureRequest
) -> None:
    username = f"user-{request.node.callspec.id}"
    if user_state != "missing":
        pool_env.add_user(username, confirmed=user_state == "confirmed")
    code, terminal = run(["login", "-u", username, "--password-stdin"], FakeTerminal(password + "\n"))
    assert code == 1
    assert message in terminal.errors
    assert terminal.output == ""


def test_login_explains_new_password_required_when_it_cannot_ask(pool_env: MotoPool) -> None:
    pool_env.add_user("newcomer", permanent=False)
    code, terminal = run(
        ["login", "-u", "newcomer", "--password-stdin"], FakeTerminal(TEMPORARY_PASSWORD + "\n")
    )
    assert code == 1
    assert "requires newcomer to choose a new password" in terminal.errors
    assert "in a terminal" in terminal.errors


def test_login_sets_a_new_password_interactively_when_cognito_requires_one(pool_env: MotoPool) -> None:
    pool_env.add_user("firsttimer", permanent=False)
    # The first repeat does not match, so it asks again.
    secrets = [TEMPORARY_PASSWORD, NEW_PASSWORD, "typo", NEW_PASSWORD, NEW_PASSWORD]
    terminal = FakeTerminal(interactive=True, secrets=secrets)
    code, terminal = run(["login", "-u", "firsttimer"], terminal)
    assert code == 0, terminal.errors
    assert "do not match" in terminal.errors
    assert claims_of(terminal.output.strip())["cognito:username"] == "firsttimer"

    code, again = run(["login", "-u", "firsttimer", "--password-stdin"], FakeTerminal(NEW_PASSWORD + "\n"))
    assert code == 0, again.errors


def test_login_reports_an_unreachable_endpoint_as_a_network_error(unused_port: int) -> None:
    argv = ["login", "--region", "us-east-1", "--client-id", "abc", "-u", "alice", "--password-stdin"]
    argv += ["--endpoint-url", f"http://127.0.0.1:{unused_port}/"]
    code, terminal = run(argv, FakeTerminal(PASSWORD + "\n"))
    assert code == 2
    assert "cannot reach Cognito" in terminal.errors


@pytest.mark.parametrize(
    ("stdin", "interactive", "message"),
    [("", False, "no username"), ("", True, "no username given")],
)
def test_login_needs_a_username(pool_env: MotoPool, stdin: str, interactive: bool, message: str) -> None:
    code, terminal = run(["login"], FakeTerminal(stdin, interactive=interactive))
    assert code == 2
    assert message in terminal.errors


def test_login_without_a_terminal_needs_password_stdin(pool_env: MotoPool) -> None:
    code, terminal = run(["login", "-u", "alice"])
    assert code == 2
    assert "--password-stdin" in terminal.errors


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (free when checked; nothing here starts a server on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the Cognito wire format ---------------------------------------------------------------


def test_cognito_requests_use_the_amz_json_protocol() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ChallengeName": "NEW_PASSWORD_REQUIRED", "Session": "s1"})

    client = CognitoClient("http://cognito.test/", "client1", transport=httpx.MockTransport(answer))
    outcome = client.initiate_auth("alice", "pw")
    assert outcome == NewPasswordRequired(username="alice", session="s1")
    client.set_new_password(outcome, "new-pw")
    first, second = seen
    assert first.headers["X-Amz-Target"] == "AWSCognitoIdentityProviderService.InitiateAuth"
    assert first.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert json.loads(first.content) == {
        "AuthFlow": "USER_PASSWORD_AUTH",
        "ClientId": "client1",
        "AuthParameters": {"USERNAME": "alice", "PASSWORD": "pw"},
    }
    assert second.headers["X-Amz-Target"] == "AWSCognitoIdentityProviderService.RespondToAuthChallenge"
    assert json.loads(second.content)["ChallengeResponses"] == {"USERNAME": "alice", "NEW_PASSWORD": "new-pw"}


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"__type": "NotAuthorizedException", "message": "m"}, {}, "NotAuthorizedException"),
        ({"__type": "com.amazonaws.cognito#UserNotFoundException"}, {}, "UserNotFoundException"),
        (
            {"message": "m"},
            {"x-amzn-ErrorType": "UserNotConfirmedException:http://x"},
            "UserNotConfirmedException",
        ),
    ],
)
def test_cognito_error_names_are_read_in_each_spelling(
    body: dict[str, str], headers: dict[str, str], expected: str
) -> None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(400, json=body, headers=headers))
    client = CognitoClient("http://cognito.test/", "client1", transport=transport)
    with pytest.raises(CognitoApiError) as error:
        client.initiate_auth("alice", "pw")
    assert error.value.error_type == expected


# -- verify ----------------------------------------------------------------------------------


def test_verify_prints_the_principal_of_a_real_login(pool_env: MotoPool) -> None:
    _, login = run(["login", "-u", "alice", "--password-stdin"], FakeTerminal(PASSWORD + "\n"))
    code, terminal = run(["verify", login.output.strip()])
    assert code == 0, terminal.output + terminal.errors
    principal = json.loads(terminal.output)
    assert principal["username"] == "alice"
    assert principal["client_id"] == pool_env.client_id


def test_verify_reads_the_token_from_stdin(issuer: LocalIssuer) -> None:
    code, terminal = run(["verify", *pool_flags(issuer), "-"], FakeTerminal(f"Bearer {issuer.mint()}\n"))
    assert code == 0
    assert json.loads(terminal.output)["username"] == "alice"


@pytest.mark.parametrize(
    ("make_token", "code_name"),
    [
        pytest.param(lambda i: i.mint(expires_in=-3600), "token_expired", id="expired"),
        pytest.param(lambda i: i.mint(aud="someoneelse"), "client_not_allowed", id="other-client"),
        pytest.param(lambda i: i.mint(token_use="access"), "token_use_mismatch", id="access-token"),
        pytest.param(lambda i: i.mint()[:-6] + "AAAAAA", "signature_invalid", id="bad-signature"),
        pytest.param(lambda i: i.sign(i.claims(), key=spare_key(2)), "kid_unknown", id="unknown-key"),
        pytest.param(lambda i: "garbage", "token_malformed", id="garbage"),
    ],
)
def test_verify_prints_the_exact_reason_code_and_exits_1(
    issuer: LocalIssuer, make_token, code_name: str
) -> None:  # type: ignore[no-untyped-def]
    code, terminal = run(["verify", *pool_flags(issuer), make_token(issuer)])
    assert code == 1
    assert terminal.output.split(":")[0] == code_name


def test_verify_hints_at_token_use_for_an_access_token(issuer: LocalIssuer) -> None:
    token = issuer.mint(token_use="access")
    code, terminal = run(["verify", *pool_flags(issuer), token])
    assert code == 1
    assert "--token-use access" in terminal.errors
    code, terminal = run(["verify", *pool_flags(issuer), "--token-use", "access", token])
    assert code == 0


def test_verify_json_refusal(issuer: LocalIssuer) -> None:
    code, terminal = run(["verify", *pool_flags(issuer), "--json", issuer.mint(expires_in=-60)])
    assert code == 1
    assert json.loads(terminal.output) == {
        "valid": False,
        "code": "token_expired",
        "message": "The token has expired.",
    }


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (JwksResponse(status=500), "http_500"),
        (JwksResponse(status=404), "http_404"),
        (JwksResponse(body=b"<html>"), "did not return a key set"),
        (JwksResponse(close_without_response=True), "transport_"),
    ],
)
def test_verify_exits_2_when_keys_cannot_be_had(
    issuer: LocalIssuer, jwks_server: JwksServer, response: JwksResponse, reason: str
) -> None:
    jwks_server.response = response
    code, terminal = run(["verify", *pool_flags(issuer), issuer.mint()])
    assert code == 2
    assert reason in terminal.errors
    assert terminal.output == ""


def test_verify_without_a_token_in_a_terminal_says_how_to_give_one(issuer: LocalIssuer) -> None:
    code, terminal = run(["verify", *pool_flags(issuer)], FakeTerminal(interactive=True))
    assert code == 2
    assert "pipe it in" in terminal.errors


# -- decode ------------------------------------------------------------------------------------


def test_decode_labels_output_unverified_and_shows_times(issuer: LocalIssuer) -> None:
    token = issuer.mint(username="ada", expires_in=54 * 60 + 30, groups=["admin"])
    code, terminal = run(["decode", token])
    assert code == 0
    assert terminal.output.startswith("UNVERIFIED")
    assert '"cognito:username": "ada"' in terminal.output
    assert '"kid": "' in terminal.output
    assert "(expires in 54 min)" in terminal.output
    assert "(issued 0 s ago)" in terminal.output or "(issued 1 s ago)" in terminal.output


def test_decode_shows_how_long_ago_a_token_expired(issuer: LocalIssuer) -> None:
    token = issuer.mint(expires_in=-3 * 3600 - 100, iat=int(time.time()) - 4 * 3600)
    code, terminal = run(["decode", f"Bearer {token}"])
    assert code == 0
    assert "(expired 3 h ago)" in terminal.output
    assert "(issued 4 h ago)" in terminal.output


def test_decode_json_gives_times_as_iso_8601_utc_that_scripts_can_parse(issuer: LocalIssuer) -> None:
    # Issue 17: "2026-12-07T13:02:47Z (expires in 11 h)" parsed nowhere.
    token = issuer.mint(expires_in=-3 * 3600 - 100, iat=int(time.time()) - 4 * 3600)
    code, terminal = run(["decode", "--json", f"Bearer {token}"])
    assert code == 0
    document = json.loads(terminal.output)
    assert document["verified"] is False
    for name in ("exp", "iat"):
        parsed = datetime.fromisoformat(document["times"][name])
        assert document["times"][name].endswith("Z")
        assert parsed.timestamp() == document["claims"][name]


@pytest.mark.parametrize(
    ("token", "message"),
    [("abc", "3 dot-separated segments"), ("!!.e30.sig", "header is not"), ("e30.W10.sig", "payload is not")],
)
def test_decode_says_what_is_wrong_with_a_non_jwt(token: str, message: str) -> None:
    code, terminal = run(["decode", token])
    assert code == 1
    assert message in terminal.errors


@pytest.mark.parametrize(
    ("name", "offset", "phrase"),
    [
        ("exp", 54 * 60 + 5, "expires in 54 min"),
        ("exp", -3 * 3600 - 5, "expired 3 h ago"),
        ("exp", -30, "expired 30 s ago"),
        ("iat", -2 * 86400 - 5, "issued 2 d ago"),
        ("nbf", 120, "valid in 2 min"),
        ("auth_time", -90, "authenticated 1 min ago"),
    ],
)
def test_relative_times_read_naturally(name: str, offset: float, phrase: str) -> None:
    assert relative_time(name, 1_000_000 + offset, 1_000_000) == phrase


# -- jwks --------------------------------------------------------------------------------------


def test_jwks_lists_each_key_with_its_size_and_usability(
    issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    small = SigningKey(kid="small-key", bits=1024)
    document = {
        "keys": [*issuer.jwks()["keys"], small.public_jwk(), {"kty": "EC", "kid": "ec-key", "crv": "P-256"}]
    }
    jwks_server.response = JwksResponse(body=json.dumps(document).encode())
    code, terminal = run(["jwks", "--jwks-url", issuer.jwks_url])
    assert code == 0
    rows = {line.split()[0]: line.split() for line in terminal.output.splitlines()[2:]}
    assert rows[issuer.signing_key.kid] == [issuer.signing_key.kid, "RS256", "RSA", "2048", "yes"]
    assert rows["small-key"] == ["small-key", "RS256", "RSA", "1024", "no"]
    assert rows["ec-key"] == ["ec-key", "-", "EC", "-", "no"]


def test_jwks_json_from_the_moto_pool(pool_env: MotoPool) -> None:
    code, terminal = run(["jwks", "--json"])
    assert code == 0
    document = json.loads(terminal.output)
    assert document["url"] == pool_env.jwks_url
    assert [(key["kid"], key["bits"], key["usable"]) for key in document["keys"]] == [("dummy", 2048, True)]


# -- output helpers ------------------------------------------------------------------------------


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("is_tty", [True, False])
def test_spinner_draws_on_stderr_only_when_it_is_a_terminal(is_tty: bool) -> None:
    stderr = TtyStream() if is_tty else io.StringIO()
    terminal = Terminal(stdin=io.StringIO(), stdout=io.StringIO(), stderr=stderr)
    with Spinner(terminal, "Fetching", interval=0.001):
        time.sleep(0.05)
    drawn = stderr.getvalue()
    if is_tty:
        assert "| Fetching" in drawn
        assert drawn.endswith("\r")  # the line is erased for whatever follows
    else:
        assert drawn == ""


def test_table_aligns_columns() -> None:
    assert format_table(["A", "BB"], [["long", "x"], ["s", "yy"]]).splitlines() == [
        "A     BB",
        "----  --",
        "long  x",
        "s     yy",
    ]


def test_parser_lists_every_command() -> None:
    help_text = build_parser().format_help()
    for name in COMMANDS:
        assert name in help_text


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://cognito.example.com/", "must use https"),
        ("https://user:secret@cognito.example.com/", "must not carry credentials"),
    ],
)
def test_login_refuses_to_send_a_password_to_an_untrusted_endpoint(endpoint: str, reason: str) -> None:
    code, terminal = run(
        [
            "login",
            "--region",
            "us-east-1",
            "--user-pool-id",
            "us-east-1_Abc123",
            "--client-id",
            "client1",
            "--endpoint-url",
            endpoint,
            "--username",
            "alice",
            "--password-stdin",
        ],
        FakeTerminal("Correct-Horse-1\n"),
    )
    assert code == 2
    assert reason in terminal.errors
    assert "secret" not in terminal.errors


# -- several pools -----------------------------------------------------------------------------

TEAM_POOLS = ("us-east-1_CliTeamOne", "us-east-1_CliTeamTwo")


@pytest.fixture(scope="module")
def _teams() -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    one = LocalIssuer(user_pool_id=TEAM_POOLS[0], client_id="teamoneclient00000000000", key=spare_key(0))
    # The same kid string in both pools, over other material.
    two_key = spare_key_as(1, one.signing_key.kid)
    two = LocalIssuer(user_pool_id=TEAM_POOLS[1], client_id="teamtwoclient00000000000", key=two_key)
    with one, two:
        one.serve()
        two.serve()
        yield one, two


@pytest.fixture
def teams(_teams: tuple[LocalIssuer, LocalIssuer]) -> tuple[LocalIssuer, LocalIssuer]:
    for team in _teams:
        team.serve().reset()
    return _teams


def write_team(home: Path, name: str, issuer: LocalIssuer, **extra: object) -> Path:
    folder = home / name
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "region": issuer.region,
        "cognitoUserPoolId": issuer.user_pool_id,
        "cognitoClientId": issuer.client_id,
        "apiEndpoint": "https://example.invalid/dev",
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder / "config.json"


@pytest.fixture
def both_keys_server(
    teams: tuple[LocalIssuer, LocalIssuer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[JwksServer]:
    """SimpleIOT config.json has no key URL: SIOT_AUTHZ_JWKS_URL points every pool at one loopback server.

    It serves team one's keys only: enough to tell which pool's keys a token
    reached, and to show that team two's kid (the same string) is not taken.
    """
    one, _two = teams
    with JwksServer(one.jwks, "/jwks.json") as server:
        monkeypatch.setenv("SIOT_AUTHZ_JWKS_URL", server.url)
        yield server


@pytest.fixture
def pools_env(teams: tuple[LocalIssuer, LocalIssuer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Both pools in SIOT_AUTHZ_POOLS, each with its own loopback key URL."""
    pools = [
        {
            "region": t.region,
            "user_pool_id": t.user_pool_id,
            "client_ids": [t.client_id],
            "jwks_url": t.jwks_url,
        }
        for t in teams
    ]
    monkeypatch.setenv("SIOT_AUTHZ_POOLS", json.dumps(pools))


def test_verify_with_several_config_files_names_the_pool(
    teams: tuple[LocalIssuer, LocalIssuer], both_keys_server: JwksServer, tmp_path: Path
) -> None:
    one, two = teams
    configs = [write_team(tmp_path, "one", one), write_team(tmp_path, "two", two)]
    flags = [part for config in configs for part in ("--config", str(config))]

    code, terminal = run(["verify", *flags, one.mint(username="ada")])

    assert code == 0, terminal.errors
    assert (json.loads(terminal.output)["user_pool_id"], json.loads(terminal.output)["username"]) == (
        TEAM_POOLS[0],
        "ada",
    )
    # Team two's token names a kid the served keys have, but they are not team two's keys.
    code, terminal = run(["verify", *flags, two.mint()])
    assert (code, terminal.output.split(":")[0]) == (1, "signature_invalid")


def test_verify_takes_every_team_under_simpleiot_home(
    teams: tuple[LocalIssuer, LocalIssuer], both_keys_server: JwksServer, tmp_path: Path
) -> None:
    one, two = teams
    write_team(tmp_path, "alpha", one)
    write_team(tmp_path, "bravo", two)

    code, terminal = run(
        ["verify", "--simpleiot-home", str(tmp_path), "--json", one.mint(iss=one.issuer + "x")]
    )
    assert (code, json.loads(terminal.output)["code"]) == (1, "issuer_invalid")
    assert both_keys_server.request_count == 0  # an unknown issuer fetches nothing

    code, terminal = run(["verify", "--simpleiot-home", str(tmp_path), one.mint()])
    assert (code, json.loads(terminal.output)["user_pool_id"]) == (0, TEAM_POOLS[0])
    assert both_keys_server.request_count == 1


@pytest.mark.usefixtures("pools_env")
def test_verify_with_pools_from_the_environment_keeps_each_pools_keys_apart(
    teams: tuple[LocalIssuer, LocalIssuer],
) -> None:
    one, two = teams
    assert json.loads(run(["verify", one.mint()])[1].output)["user_pool_id"] == TEAM_POOLS[0]
    assert json.loads(run(["verify", two.mint()])[1].output)["user_pool_id"] == TEAM_POOLS[1]

    # Team one's iss, signed by team two's key under the kid both pools publish.
    code, terminal = run(["verify", two.sign(one.claims())])

    assert (code, terminal.output.split(":")[0]) == (1, "signature_invalid")
    assert [t.serve().request_count for t in teams] == [2, 1]


@pytest.mark.usefixtures("pools_env")
def test_verify_reports_the_exact_reason_the_routed_pools_keys_failed(
    teams: tuple[LocalIssuer, LocalIssuer],
) -> None:
    one, two = teams
    two.serve().response = JwksResponse(status=404)

    assert run(["verify", one.mint()])[0] == 0  # team two's endpoint does not matter to team one's token
    code, terminal = run(["verify", two.mint()])

    assert code == 2
    assert "http_404" in terminal.errors
    assert one.serve().request_count == 1


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--region", "us-east-1"], "--region"),
        (["--user-pool-id", "us-east-1_Other"], "--user-pool-id"),
        (["--client-id", "x", "--jwks-url", "http://127.0.0.1:1/k"], "--client-id, --jwks-url"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "jwks"])
def test_one_pool_flags_are_refused_with_several_pools(
    teams: tuple[LocalIssuer, LocalIssuer], tmp_path: Path, command: str, flags: list[str], named: str
) -> None:
    configs = [write_team(tmp_path, "one", teams[0]), write_team(tmp_path, "two", teams[1])]
    argv = [command, "--config", str(configs[0]), "--config", str(configs[1]), *flags]

    code, terminal = run([*argv, teams[0].mint()] if command == "verify" else argv)

    assert code == 2
    assert f"{named} names one pool, but several are configured" in terminal.errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"region": "us-east-1", "cognitoClientId": "abc"}, "has no 'cognitoUserPoolId'"),
        (
            {"region": "us-east-1", "cognitoUserPoolId": "not a pool", "cognitoClientId": "abc"},
            "'cognitoUserPoolId': must be a Cognito user pool id",
        ),
        (
            {"region": "us-east-1", "cognitoUserPoolId": "us-east-1_Ok", "cognitoClientId": "bad client!"},
            "'cognitoClientId':",
        ),
    ],
    ids=["missing-key", "bad-pool-id", "bad-client-id"],
)
def test_a_bad_config_among_several_is_reported_by_path_and_its_own_key(
    teams: tuple[LocalIssuer, LocalIssuer], tmp_path: Path, content: dict[str, str], message: str
) -> None:
    good = write_team(tmp_path, "good", teams[0])
    bad = tmp_path / "bad" / "config.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(content), encoding="utf-8")

    code, terminal = run(["verify", "--config", str(good), "--config", str(bad), teams[0].mint()])

    assert code == 2
    assert str(bad) in terminal.errors
    assert message in terminal.errors


def test_the_same_pool_twice_is_a_configuration_error(
    teams: tuple[LocalIssuer, LocalIssuer], tmp_path: Path
) -> None:
    config = write_team(tmp_path, "one", teams[0])
    copy = write_team(tmp_path, "copy", teams[0])

    code, terminal = run(["verify", "--config", str(config), "--config", str(copy), teams[0].mint()])

    assert code == 2
    assert f"user pool {TEAM_POOLS[0]} is configured twice" in terminal.errors


@pytest.mark.parametrize("home", ["missing", "empty"])
def test_simpleiot_home_without_teams_is_a_configuration_error(tmp_path: Path, home: str) -> None:
    folder = tmp_path / home
    if home == "empty":
        folder.mkdir()

    code, terminal = run(["jwks", "--simpleiot-home", str(folder)])

    assert code == 2
    assert f"--simpleiot-home: SimpleIOT folder {folder}" in terminal.errors


@pytest.mark.usefixtures("pools_env")
def test_jwks_lists_every_pools_keys(teams: tuple[LocalIssuer, LocalIssuer]) -> None:
    code, terminal = run(["jwks"])
    assert code == 0
    rows = [line.split() for line in terminal.output.splitlines()[2:]]
    assert [row[:2] for row in rows] == [[pool, teams[0].signing_key.kid] for pool in TEAM_POOLS]
    assert terminal.output.splitlines()[0].split()[:2] == ["POOL", "KID"]

    code, terminal = run(["jwks", "--json"])
    listed = json.loads(terminal.output)["pools"]
    assert [(pool["user_pool_id"], pool["url"]) for pool in listed] == [
        (t.user_pool_id, t.jwks_url) for t in teams
    ]


# -- jwks --save ---------------------------------------------------------------------------------


def test_jwks_save_writes_a_document_a_service_can_verify_with_offline(
    issuer: LocalIssuer, tmp_path: Path, unused_port: int
) -> None:
    saved = tmp_path / "keys" / "jwks.json"  # the folder is made if missing

    code, terminal = run(["jwks", "--jwks-url", issuer.jwks_url, "--save", str(saved)])

    assert code == 0
    assert f"to {saved} (usable as jwks_file)" in terminal.errors
    assert json.loads(saved.read_text()) == issuer.jwks()
    offline = issuer.settings(jwks_url=f"http://127.0.0.1:{unused_port}/jwks.json", jwks_file=saved)
    assert TokenVerifier(offline).verify_sync(issuer.mint()).username == "alice"


@pytest.mark.usefixtures("pools_env")
def test_jwks_save_with_several_pools_writes_one_file_per_pool(
    teams: tuple[LocalIssuer, LocalIssuer], tmp_path: Path
) -> None:
    code, _ = run(["jwks", "--save", str(tmp_path / "jwks-{pool}.json")])

    assert code == 0
    for team in teams:
        assert json.loads((tmp_path / f"jwks-{team.user_pool_id}.json").read_text()) == team.jwks()


@pytest.mark.usefixtures("pools_env")
def test_jwks_save_with_several_pools_needs_a_pool_placeholder_and_fetches_nothing(
    teams: tuple[LocalIssuer, LocalIssuer], tmp_path: Path
) -> None:
    code, terminal = run(["jwks", "--save", str(tmp_path / "jwks.json")])

    assert code == 2
    assert "--save needs {pool} in the file name" in terminal.errors
    assert [t.serve().request_count for t in teams] == [0, 0]
    assert list(tmp_path.iterdir()) == []


def test_jwks_save_keeps_the_old_file_when_the_keys_cannot_be_had(
    issuer: LocalIssuer, jwks_server: JwksServer, tmp_path: Path
) -> None:
    saved = tmp_path / "jwks.json"
    saved.write_text('{"keys": ["the old, good file"]}')
    jwks_server.response = JwksResponse(body=b'{"keys": []}')

    code, terminal = run(["jwks", "--jwks-url", issuer.jwks_url, "--save", str(saved)])

    assert code == 2
    assert "did not return a key set" in terminal.errors
    assert saved.read_text() == '{"keys": ["the old, good file"]}'
    assert [path.name for path in tmp_path.iterdir()] == ["jwks.json"]


# -- revoke and revocations ------------------------------------------------------------------------

STORE_COMMANDS = [
    ["revoke", "user", "--pool", "us-east-1_LocalPool1", "--sub", "someone"],
    ["revoke", "session", "--pool", "us-east-1_LocalPool1", "--origin-jti", "jti-1"],
    ["revocations"],
]


@pytest.mark.parametrize("argv", STORE_COMMANDS, ids=["revoke-user", "revoke-session", "revocations"])
def test_store_commands_without_redis_explain_that_in_process_revocations_stay_in_the_process(
    argv: list[str],
) -> None:
    code, terminal = run(argv)

    assert code == 2
    assert "no shared revocation store: pass --redis-url (or set SIOT_AUTHZ_REDIS_URL)" in terminal.errors
    assert "each serving process's memory" in terminal.errors
    assert terminal.output == ""


@pytest.mark.parametrize("argv", STORE_COMMANDS, ids=["revoke-user", "revoke-session", "revocations"])
def test_store_commands_report_an_unreachable_redis_as_a_network_error(
    argv: list[str], unused_port: int
) -> None:
    code, terminal = run([*argv, "--redis-url", f"redis://127.0.0.1:{unused_port}/0"])

    assert code == 2
    assert f"127.0.0.1:{unused_port}" in terminal.errors
    if argv[0] == "revoke":
        assert "nothing was revoked" in terminal.errors


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pool", "not-a-pool", "--sub", "s"], "not a Cognito user pool id"),
        (["--pool", "us-east-1_P", "--sub", "s", "--before", "yesterday"], "not an ISO 8601 time"),
        (["--pool", "us-east-1_P", "--sub", "s", "--before", "2026-05-01T12:00:00"], "no time zone"),
        (["--pool", "us-east-1_P"], "the following arguments are required: --sub"),
    ],
    ids=["bad-pool", "bad-time", "naive-time", "no-sub"],
)
def test_revoke_user_usage_errors(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["revoke", "user", *flags, "--redis-url", "redis://127.0.0.1:1/0"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from redis_server import is_redis_installed, running_redis

    if not is_redis_installed():
        pytest.skip("needs redis-server on PATH")
    with running_redis() as server:
        yield server.url


@pytest.fixture
def store_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SIOT_AUTHZ_REDIS_URL", redis_url)
    return f"cli{time.monotonic_ns()}"  # each test its own key prefix in the module's server


@pytest.fixture
def enforcing_verifier(issuer: LocalIssuer, redis_url: str, store_env: str) -> Iterator[TokenVerifier]:
    """A service's verifier following the same Redis store and prefix as the CLI."""
    from siot_authz.revocation import RedisRevocations

    store = RedisRevocations(redis_url, prefix=store_env)
    store.start_sync()
    verifier = TokenVerifier(issuer.settings(), revocations=store)
    yield verifier
    store.stop_sync()
    verifier.close()


def _wait_until_refused(verifier: TokenVerifier, token: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            verifier.verify_sync(token)
        except AuthError as error:
            return error.code
        time.sleep(0.02)
    return "accepted"


def test_revoke_user_is_enforced_by_a_service_following_the_store(
    issuer: LocalIssuer, enforcing_verifier: TokenVerifier, store_env: str
) -> None:
    token = issuer.mint(username="ada")
    sub = enforcing_verifier.verify_sync(token).sub

    code, terminal = run(
        ["revoke", "user", "--pool", issuer.user_pool_id, "--sub", sub, "--redis-prefix", store_env]
    )

    assert code == 0, terminal.errors
    assert f"tokens of user {sub} in {issuer.user_pool_id} issued up to" in terminal.output
    assert _wait_until_refused(enforcing_verifier, token) == "token_revoked"
    assert enforcing_verifier.verify_sync(issuer.mint(username="bob")).username == "bob"


def test_revoke_user_before_a_given_time_spares_later_tokens(
    issuer: LocalIssuer, enforcing_verifier: TokenVerifier, store_env: str
) -> None:
    now = int(time.time())
    old, new = issuer.mint(iat=now - 600), issuer.mint(iat=now)
    sub = enforcing_verifier.verify_sync(new).sub
    before = datetime.fromtimestamp(now - 300, tz=UTC).isoformat().replace("+00:00", "Z")

    code, terminal = run(
        [
            *("revoke", "user", "--pool", issuer.user_pool_id, "--sub", sub, "--before", before),
            *("--redis-prefix", store_env, "--json"),
        ]
    )

    assert code == 0, terminal.errors
    entry = json.loads(terminal.output)
    # The boundary is the time given plus the leeway (5 s): an iat that far ahead is still accepted.
    boundary = datetime.fromtimestamp(now - 300 + 5, tz=UTC).isoformat().replace("+00:00", "Z")
    assert (entry["kind"], entry["subject"], entry["before"]) == ("user", sub, boundary)
    kept_until = datetime.fromisoformat(entry["expires_at"]).timestamp()
    assert kept_until == now - 300 + 5 + 86_400 + 5  # then the default token lifetime plus the leeway
    assert _wait_until_refused(enforcing_verifier, old) == "token_revoked"
    assert enforcing_verifier.verify_sync(new).sub == sub


def test_revoke_session_refuses_that_sessions_tokens_only(
    issuer: LocalIssuer, enforcing_verifier: TokenVerifier, store_env: str
) -> None:
    session, other = issuer.mint(origin_jti="session-one"), issuer.mint(origin_jti="session-two")

    code, _ = run(
        [
            *("revoke", "session", "--pool", issuer.user_pool_id, "--origin-jti", "session-one"),
            *("--redis-prefix", store_env),
        ]
    )

    assert code == 0
    assert _wait_until_refused(enforcing_verifier, session) == "token_revoked"
    assert enforcing_verifier.verify_sync(other).username == "alice"


def test_revocations_lists_entries_as_a_table_and_as_json(
    store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_MAX_TOKEN_LIFETIME_SECONDS", "3600")
    prefix = ["--redis-prefix", store_env]
    assert run(["revoke", "user", "--pool", "us-east-1_PoolOne", "--sub", "sub-1", *prefix])[0] == 0
    assert run(["revoke", "session", "--pool", "us-east-2_PoolTwo", "--origin-jti", "jti-9", *prefix])[0] == 0

    code, terminal = run(["revocations", *prefix])
    assert code == 0
    rows = [line.split()[:3] for line in terminal.output.splitlines()[2:]]
    assert rows == [["user", "us-east-1_PoolOne", "sub-1"], ["session", "us-east-2_PoolTwo", "jti-9"]]
    assert "2 revocation(s)" in terminal.errors

    code, terminal = run(["revocations", "--json", "--pool", "us-east-2_PoolTwo", *prefix])
    (entry,) = json.loads(terminal.output)
    assert (entry["kind"], entry["subject"]) == ("session", "jti-9")
    # The same time form as decode --json and the principal's issued_at (issue 17): ISO 8601 UTC.
    kept = datetime.fromisoformat(entry["expires_at"]) - datetime.fromisoformat(entry["before"])
    assert kept.total_seconds() == pytest.approx(3600 + 5, abs=1e-5)

    code, terminal = run(["revocations", "--json", "--redis-prefix", store_env + "other"])
    assert (code, json.loads(terminal.output)) == (0, [])


# -- verify --redis-url (issue 16) ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["user", "session"])
@pytest.mark.parametrize("output", ["text", "json"])
def test_verify_with_the_store_refuses_a_revoked_token_as_the_services_do(
    issuer: LocalIssuer, redis_url: str, store_env: str, kind: str, output: str
) -> None:
    token = issuer.mint(username="ada", origin_jti="session-one")
    sub = claims_of(token)["sub"]
    store = ["--redis-url", redis_url, "--redis-prefix", store_env]
    json_flag = ["--json"] if output == "json" else []
    assert run(["verify", *pool_flags(issuer), *store, token])[0] == 0  # nothing revoked yet

    subject = ["--sub", str(sub)] if kind == "user" else ["--origin-jti", "session-one"]
    assert run(["revoke", kind, "--pool", issuer.user_pool_id, *subject, "--redis-prefix", store_env])[0] == 0

    code, terminal = run(["verify", *pool_flags(issuer), *store, *json_flag, token])
    assert code == 1
    if output == "json":
        assert json.loads(terminal.output) == {
            "valid": False,
            "code": "token_revoked",
            "message": "The token has been revoked.",
        }
    else:
        assert terminal.output.startswith("token_revoked: The token has been revoked.")
    # Another user's token, and the same user's token without the store, are unaffected.
    assert run(["verify", *pool_flags(issuer), *store, issuer.mint(username="bob")])[0] == 0


def test_verify_reads_the_store_from_the_environment_as_revoke_does(
    issuer: LocalIssuer, store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issuer.mint(username="ada")
    sub = claims_of(token)["sub"]
    prefix = ["--redis-prefix", store_env]
    assert run(["revoke", "user", "--pool", issuer.user_pool_id, "--sub", str(sub), *prefix])[0] == 0
    assert run(["verify", *pool_flags(issuer), *prefix, token])[0] == 1  # SIOT_AUTHZ_REDIS_URL is set
    monkeypatch.delenv("SIOT_AUTHZ_REDIS_URL")
    assert run(["verify", *pool_flags(issuer), *prefix, token])[0] == 0  # no store named: not checked


def test_verify_with_an_unreachable_store_is_a_network_error_not_a_verdict(
    issuer: LocalIssuer, unused_port: int
) -> None:
    code, terminal = run(
        ["verify", *pool_flags(issuer), "--redis-url", f"redis://127.0.0.1:{unused_port}/0", issuer.mint()]
    )
    assert code == 2
    assert "cannot check revocations" in terminal.errors
    assert terminal.output == ""


# -- contract with several pools ------------------------------------------------------------------


def test_contract_probes_for_two_pools_pass_against_an_api_trusting_both(
    teams: tuple[LocalIssuer, LocalIssuer],
) -> None:
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from siot_authz import CognitoAuth, Principal
    from siot_authz._cognito_client import Tokens
    from siot_authz.cli._contract import build_cross_pool_probes, build_probes, send_probe

    def tokens(issuer: LocalIssuer) -> Tokens:
        return Tokens(issuer.mint(), issuer.mint(token_use="access"), None, 3600, "Bearer")

    logged_in = {team.user_pool_id: tokens(team) for team in teams}
    probes = [p for t in logged_in.values() for p in build_probes(t)] + build_cross_pool_probes(logged_in)
    auth = CognitoAuth([team.settings() for team in teams])
    app = FastAPI()

    @app.get("/v1/me")
    async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
        return {"pool": principal.user_pool_id}

    with TestClient(app) as client:
        outcomes = [send_probe(client, "GET", "/v1/me", probe) for probe in probes]

    assert [o.probe.name for o in outcomes if not o.passed] == []
    cross = [o for o in outcomes if o.probe.key == "cross-pool-iss"]
    assert [o.probe.name for o in cross] == [
        f"{TEAM_POOLS[0]} token relabelled as {TEAM_POOLS[1]}",
        f"{TEAM_POOLS[1]} token relabelled as {TEAM_POOLS[0]}",
    ]
    assert {o.status_code for o in cross} == {401}


# -- the unattended login the test kit shares (siot_authz._cognito_client) ---------------------------


@pytest.mark.parametrize(
    ("case", "is_setup_problem", "says"),
    [
        ("wrong-password", False, "wrong username or password"),
        ("new-password-required", False, "choose a new password first"),
        ("unreachable", True, "cannot reach Cognito"),
    ],
)
def test_unattended_login_says_why_it_cannot_end_in_tokens(
    moto_pool: MotoPool, unused_port: int, case: str, is_setup_problem: bool, says: str
) -> None:
    from siot_authz._cognito_client import LoginFailed, log_in_unattended

    username = moto_pool.add_user(f"u{time.monotonic_ns()}", permanent=case != "new-password-required")
    endpoint = f"http://127.0.0.1:{unused_port}/" if case == "unreachable" else moto_pool.endpoint_url
    password = "Wrong-Horse-9" if case == "wrong-password" else PASSWORD
    if case == "new-password-required":
        password = TEMPORARY_PASSWORD
    with pytest.raises(LoginFailed) as caught:
        log_in_unattended(endpoint, moto_pool.client_id, username, password, timeout=5)
    assert caught.value.is_setup_problem is is_setup_problem
    assert says in caught.value.message
    assert password not in caught.value.message


def test_unattended_login_returns_the_tokens(moto_pool: MotoPool) -> None:
    from siot_authz._cognito_client import log_in_unattended

    username = moto_pool.add_user(f"u{time.monotonic_ns()}")
    tokens = log_in_unattended(moto_pool.endpoint_url, moto_pool.client_id, username, PASSWORD)
    assert claims_of(tokens.id_token)["cognito:username"] == username


@pytest.mark.parametrize("kind", ["user", "session"])
def test_revoke_refuses_an_oversize_subject_with_its_own_message(kind: str) -> None:
    subject = "s" * 10_000
    flag = "--sub" if kind == "user" else "--origin-jti"
    code, terminal = run(
        ["revoke", kind, "--pool", "us-east-1_P", flag, subject, "--redis-url", "redis://127.0.0.1:1/0"]
    )
    assert code != 0
    assert "at most 256 bytes" in terminal.errors
    assert "Traceback" not in terminal.errors
    assert subject not in terminal.errors
