"""The CLI under hostile or careless input: no secret echoed in a usage error, no traceback (issue 19 §6, §7; 17.9)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from siot_authz.cli import main
from siot_authz.testing import LocalIssuer

SECRET = "Tr0ub4dor-and-3"  # a password or a token typed where it must not go
TOKEN = "eyJraWQiOiJrIiwiYWxnIjoiUlMyNTYifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def _no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGION", "USER_POOL_ID", "CLIENT_IDS", "JWKS_URL", "REDIS_URL", "POOLS"):
        monkeypatch.delenv(f"SIOT_AUTHZ_{name}", raising=False)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        pytest.param(
            ["login", "-u", "ada", "--password-stdin", SECRET], [], id="password-after-password-stdin"
        ),
        pytest.param(["login", "-u", "ada", "--pasword", SECRET], ["--pasword"], id="misspelt-flag"),
        pytest.param(["login", "-u", "ada", f"--pw={SECRET}"], ["--pw"], id="made-up-flag-with-equals"),
        pytest.param(["login", "-u", "ada", "--json", f"--pwd={SECRET}"], ["--pwd"], id="after-a-flag"),
        pytest.param(
            ["contract", "--api", "http://127.0.0.1:9/", "-u", "ada", "--password-stdin", SECRET],
            [],
            id="contract-password-after-password-stdin",
        ),
        pytest.param(["verify", "--token-use", TOKEN], ["--token-use"], id="token-as-a-choice"),
        pytest.param(["verify", "--token-use", SECRET, TOKEN], ["--token-use"], id="secret-as-a-choice"),
        pytest.param(["login", f"--json={SECRET}"], ["--json"], id="value-for-a-switch"),
        pytest.param(["jwks", "--timeout", SECRET], ["--timeout"], id="not-a-number"),
        pytest.param(["revoke", "user", "--pool", SECRET, "--sub", "s"], ["--pool"], id="not-a-pool-id"),
        pytest.param(
            ["revoke", "user", "--pool", "us-east-1_P", "--sub", "s", "--before", SECRET],
            ["--before"],
            id="not-a-time",
        ),
        pytest.param([SECRET], [], id="not-a-command"),
        pytest.param(["decode", TOKEN, SECRET], [], id="extra-positional"),
    ],
)
def test_a_usage_error_names_the_flag_but_never_repeats_a_value(
    argv: list[str], names: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    everything = captured.out + captured.err
    assert SECRET not in everything
    assert TOKEN not in everything
    for fragment in (SECRET[:8], TOKEN[:12]):
        assert fragment not in everything
    for name in names:
        assert name in captured.err
    assert "error:" in captured.err


def test_a_real_process_echoes_no_value_either() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "siot_authz.cli", "login", "-u", "ada", "--password-stdin", SECRET],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr
    assert "unexpected argument" in result.stderr


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _nested_payload(depth: int) -> str:
    # A payload object holding arrays nested ``depth`` deep: about 2 bytes a level.
    raw = '{"a": ' + "[" * depth + "]" * depth + "}"
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_decode_refuses_a_deeply_nested_payload_with_its_own_message(
    depth: int, json_flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    token = f"{_segment({'alg': 'RS256'})}.{_nested_payload(depth)}.sig"
    assert main(["decode", *json_flag, token]) == 1
    captured = capsys.readouterr()
    assert "siot-authz decode: the payload nests" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_decode_still_shows_a_token_nested_as_deep_as_real_ones_go(
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = f"{_segment({'alg': 'RS256'})}.{_nested_payload(20)}.sig"
    assert main(["decode", "--json", token]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is False


@pytest.mark.parametrize("command", ["verify", "decode", "decode --json"])
def test_a_reader_that_closes_the_pipe_early_gets_no_traceback_and_the_real_status(
    command: str, issuer: LocalIssuer
) -> None:
    # Issue 17: "siot-authz verify ... | head -3" printed a BrokenPipeError traceback and exited 1 ("refused").
    argv = command.split()
    if command == "verify":
        argv += ["--region", issuer.region, "--user-pool-id", issuer.user_pool_id]
        argv += ["--client-id", issuer.client_id, "--jwks-url", issuer.jwks_url]
    process = subprocess.Popen(
        [sys.executable, "-m", "siot_authz.cli", *argv, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={key: value for key, value in os.environ.items() if not key.startswith("SIOT_AUTHZ_")},
    )
    assert process.stdout is not None
    assert process.stdin is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader has gone before the first line is written
    process.stdin.write(issuer.mint(username="ada"))
    process.stdin.close()
    errors = process.stderr.read()
    assert process.wait(timeout=60) == 0, errors  # a valid token, whoever stopped reading
    assert "Traceback" not in errors
    assert "BrokenPipeError" not in errors


@pytest.mark.parametrize(
    "command", [["revocations"], ["revoke", "session", "--pool", "us-east-1_P", "--origin-jti", "j"]]
)
def test_a_redis_url_the_parser_chokes_on_is_never_quoted(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 19.1: an unencoded password made redis-py's parser quote it back ("...as 'S3cr3t'").
    url = "redis://:S3cr3tPw/x+y=@127.0.0.1:99999/0"  # an unencoded password and a port out of range
    assert main([*command, "--redis-url", url]) == 2
    errors = capsys.readouterr().err
    assert "S3cr3tPw" not in errors
    assert "cannot use the revocation store" in errors


def test_an_unencoded_password_that_parses_is_never_quoted_when_the_store_is_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The URL parser takes everything before the last "@" as credentials, so this one parses; the
    # store is unreachable, and the message names the host, never the password.
    assert main(["revocations", "--redis-url", "redis://:S3cr3tPw/x+y=@127.0.0.1:1/0"]) == 2
    errors = capsys.readouterr().err
    assert "S3cr3tPw" not in errors
    assert "127.0.0.1:1" in errors


def test_a_bad_prefix_is_still_explained(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["revocations", "--redis-url", "redis://127.0.0.1:1/0", "--redis-prefix", "a:b"]) == 2
    assert "prefix must be non-empty and contain no ':'" in capsys.readouterr().err
