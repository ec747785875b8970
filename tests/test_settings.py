"""AuthSettings: built from arguments, the environment or a SimpleIOT config.json, and checked up front."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from siot_authz import AuthSettings

REGION = "us-west-2"
POOL = "us-west-2_AbC123xyz"
CLIENT = "4h5kq0b1example0client0id"

VALID: dict[str, Any] = {"region": REGION, "user_pool_id": POOL, "client_ids": [CLIENT]}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read SIOT_AUTHZ_* variables; a developer's own must not leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SIOT_AUTHZ_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


# -- construction ---------------------------------------------------------------


def test_builds_from_keyword_arguments_with_documented_defaults() -> None:
    settings = AuthSettings(**VALID)

    assert settings.region == REGION
    assert settings.user_pool_id == POOL
    assert settings.client_ids == (CLIENT,)
    assert settings.token_use == "id"
    assert 0 < settings.leeway_seconds <= 60
    assert settings.jwks_ttl_seconds > 0
    assert settings.jwks_refetch_cooldown_seconds > 0
    assert settings.http_timeout_seconds > 0
    assert settings.max_token_bytes >= 4096


def test_default_jwks_url_is_the_pools_cognito_endpoint() -> None:
    settings = AuthSettings(**VALID)

    expected = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL}/.well-known/jwks.json"
    assert settings.jwks_url == expected
    assert settings.resolved_jwks_url == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://keys.example.com/pool/.well-known/jwks.json",
        "http://127.0.0.1:9000/pool/.well-known/jwks.json",
        "http://[::1]:9000/jwks.json",
        "http://localhost:9000/jwks.json",
        "http://local-issuer.invalid/pool/.well-known/jwks.json",
    ],
)
def test_jwks_url_may_be_https_anywhere_or_http_on_loopback(url: str) -> None:
    assert AuthSettings(**VALID, jwks_url=url).resolved_jwks_url == url


def test_jwks_url_override_is_kept() -> None:
    settings = AuthSettings(**VALID, jwks_url="http://127.0.0.1:9000/pool/.well-known/jwks.json")

    assert settings.resolved_jwks_url == "http://127.0.0.1:9000/pool/.well-known/jwks.json"


def test_issuers_are_exactly_the_classic_and_newer_cognito_urls() -> None:
    assert AuthSettings(**VALID).issuers == {
        f"https://cognito-idp.{REGION}.amazonaws.com/{POOL}",
        f"https://issuer-cognito-idp.{REGION}.amazonaws.com/{POOL}",
    }


@pytest.mark.parametrize(
    ("client_ids", "expected"),
    [
        ([CLIENT], (CLIENT,)),
        ((CLIENT, "second0client"), (CLIENT, "second0client")),
        (f"{CLIENT},second0client", (CLIENT, "second0client")),
        (f" {CLIENT} , second0client ,", (CLIENT, "second0client")),
    ],
)
def test_accepts_one_or_more_client_ids(client_ids: Any, expected: tuple[str, ...]) -> None:
    assert AuthSettings(**{**VALID, "client_ids": client_ids}).client_ids == expected


@pytest.mark.parametrize("token_use", ["id", "access", "any"])
def test_accepts_each_token_use(token_use: str) -> None:
    assert AuthSettings(**VALID, token_use=token_use).token_use == token_use


def test_settings_are_immutable() -> None:
    settings = AuthSettings(**VALID)

    with pytest.raises(ValidationError):
        settings.region = "eu-west-1"  # type: ignore[misc]


# -- the environment --------------------------------------------------------------


def test_builds_from_siot_authz_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_REGION", REGION)
    monkeypatch.setenv("SIOT_AUTHZ_USER_POOL_ID", POOL)
    monkeypatch.setenv("SIOT_AUTHZ_CLIENT_IDS", f"{CLIENT}, second0client")
    monkeypatch.setenv("SIOT_AUTHZ_TOKEN_USE", "access")
    monkeypatch.setenv("SIOT_AUTHZ_LEEWAY_SECONDS", "30")
    monkeypatch.setenv("SIOT_AUTHZ_JWKS_URL", "http://127.0.0.1:9000/jwks.json")

    settings = AuthSettings()  # type: ignore[call-arg]

    assert settings.region == REGION
    assert settings.user_pool_id == POOL
    assert settings.client_ids == (CLIENT, "second0client")
    assert settings.token_use == "access"
    assert settings.leeway_seconds == 30
    assert settings.resolved_jwks_url == "http://127.0.0.1:9000/jwks.json"


def test_single_client_id_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_REGION", REGION)
    monkeypatch.setenv("SIOT_AUTHZ_USER_POOL_ID", POOL)
    monkeypatch.setenv("SIOT_AUTHZ_CLIENT_IDS", CLIENT)

    assert AuthSettings().client_ids == (CLIENT,)  # type: ignore[call-arg]


def test_keyword_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_TOKEN_USE", "access")

    assert AuthSettings(**VALID, token_use="any").token_use == "any"


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("SIOT_AUTHZ_CLIENT_IDS", "", "client_ids"),
        ("SIOT_AUTHZ_CLIENT_IDS", " , ", "client_ids"),
        ("SIOT_AUTHZ_TOKEN_USE", "refresh", "token_use"),
        ("SIOT_AUTHZ_LEEWAY_SECONDS", "soon", "leeway_seconds"),
    ],
)
def test_bad_environment_value_fails_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_REGION", REGION)
    monkeypatch.setenv("SIOT_AUTHZ_USER_POOL_ID", POOL)
    monkeypatch.setenv("SIOT_AUTHZ_CLIENT_IDS", CLIENT)
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as caught:
        AuthSettings()  # type: ignore[call-arg]

    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_missing_required_settings_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        AuthSettings()  # type: ignore[call-arg]

    assert {error["loc"] for error in caught.value.errors()} == {
        ("region",),
        ("user_pool_id",),
        ("client_ids",),
    }
    # Issue 17: the message names the variables a newcomer has to set, not just the fields.
    for variable in ("SIOT_AUTHZ_REGION", "SIOT_AUTHZ_USER_POOL_ID", "SIOT_AUTHZ_CLIENT_IDS"):
        assert variable in str(caught.value)


def test_a_missing_setting_among_bad_ones_keeps_every_error_and_its_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIOT_AUTHZ_REGION", "not a region")
    with pytest.raises(ValidationError) as caught:
        AuthSettings(user_pool_id=POOL)  # type: ignore[call-arg]
    errors = {error["loc"]: error for error in caught.value.errors()}
    assert set(errors) == {("region",), ("client_ids",)}
    assert "must be an AWS region" in errors[("region",)]["msg"]
    assert "SIOT_AUTHZ_CLIENT_IDS" in errors[("client_ids",)]["msg"]


# -- bad values fail at construction -------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("region", ""),
        ("region", "us-west"),
        ("region", "US-WEST-2"),
        ("region", "us-west-2 "),
        ("region", "cognito-idp.us-west-2"),
        ("user_pool_id", ""),
        ("user_pool_id", "AbC123xyz"),
        ("user_pool_id", "us-west-2_"),
        ("user_pool_id", "us-west-2_AbC-123"),
        ("user_pool_id", "us-west-2_AbC123xyz/../other"),
        ("client_ids", []),
        ("client_ids", ""),
        ("client_ids", ["has space"]),
        ("client_ids", ["semi;colon"]),
        ("client_ids", [""]),
        ("token_use", "refresh"),
        ("token_use", "ID"),
        ("jwks_url", "ftp://example.com/jwks.json"),
        ("jwks_url", "not a url"),
        ("jwks_url", "https://"),
        # Whoever serves the keys can mint accepted tokens: plain http only to loopback.
        ("jwks_url", "http://keys.example.com/pool/.well-known/jwks.json"),
        ("jwks_url", "http://10.0.0.5/pool/.well-known/jwks.json"),
        ("jwks_url", "https://user:secret@keys.example.com/jwks.json"),
        ("leeway_seconds", -1),
        ("leeway_seconds", 301),
        ("jwks_ttl_seconds", 0),
        ("jwks_ttl_seconds", -5),
        ("jwks_refetch_cooldown_seconds", -1),
        ("http_timeout_seconds", 0),
        ("http_timeout_seconds", 61),
        ("max_token_bytes", 100),
        ("max_token_bytes", 2_000_000),
        ("max_jwks_bytes", 10),
        ("verified_cache_size", -1),
    ],
)
def test_bad_field_fails_at_construction_naming_it(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        AuthSettings(**{**VALID, field: value})

    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    assert field in str(caught.value)


def test_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as caught:
        AuthSettings(**VALID, leeway=10)

    assert "leeway" in str(caught.value)


def test_pool_from_another_region_fails_naming_both_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        AuthSettings(region="eu-west-1", user_pool_id=POOL, client_ids=[CLIENT])

    message = str(caught.value)
    assert "user_pool_id" in message
    assert "region" in message
    assert "eu-west-1" in message


# -- SimpleIOT config.json --------------------------------------------------------------


def simpleiot_config(**changes: Any) -> dict[str, Any]:
    """A config.json as SimpleIOT writes it: flat, with keys this library does not use."""
    config: dict[str, Any] = {
        "apiEndpoint": "https://abc123.execute-api.us-west-2.amazonaws.com/dev/",
        "cognitoClientId": CLIENT,
        "cognitoUserPoolId": POOL,
        "dashboardDomainName": "d1234.cloudfront.net",
        "iotEndpoint": "a1b2c3-ats.iot.us-west-2.amazonaws.com",
        "region": REGION,
        "team": "acme",
    }
    config.update(changes)
    return {name: value for name, value in config.items() if value is not None}


def test_reads_simpleiot_config_ignoring_other_keys(tmp_path: Path) -> None:
    settings = AuthSettings.from_simpleiot_config(write_config(tmp_path, simpleiot_config()))

    assert settings.region == REGION
    assert settings.user_pool_id == POOL
    assert settings.client_ids == (CLIENT,)
    assert settings.token_use == "id"
    assert settings.resolved_jwks_url == (
        f"https://cognito-idp.{REGION}.amazonaws.com/{POOL}/.well-known/jwks.json"
    )


def test_accepts_config_path_as_string(tmp_path: Path) -> None:
    path = write_config(tmp_path, simpleiot_config())

    assert AuthSettings.from_simpleiot_config(str(path)).user_pool_id == POOL


def test_expands_home_in_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    team_dir = tmp_path / ".simpleiot" / "acme"
    team_dir.mkdir(parents=True)
    write_config(team_dir, simpleiot_config())
    monkeypatch.setenv("HOME", str(tmp_path))

    assert AuthSettings.from_simpleiot_config("~/.simpleiot/acme/config.json").region == REGION


def test_config_overrides_replace_and_add_fields(tmp_path: Path) -> None:
    settings = AuthSettings.from_simpleiot_config(
        write_config(tmp_path, simpleiot_config()),
        token_use="access",
        client_ids=[CLIENT, "second0client"],
        jwks_url="http://127.0.0.1:9000/jwks.json",
        leeway_seconds=0,
    )

    assert settings.token_use == "access"
    assert settings.client_ids == (CLIENT, "second0client")
    assert settings.resolved_jwks_url == "http://127.0.0.1:9000/jwks.json"
    assert settings.leeway_seconds == 0


@pytest.mark.parametrize("missing", ["region", "cognitoUserPoolId", "cognitoClientId"])
def test_config_missing_a_key_fails_naming_it(tmp_path: Path, missing: str) -> None:
    path = write_config(tmp_path, simpleiot_config(**{missing: None}))

    with pytest.raises(ValueError, match=missing):
        AuthSettings.from_simpleiot_config(path)


def test_override_supplies_a_key_missing_from_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, simpleiot_config(cognitoClientId=None))

    settings = AuthSettings.from_simpleiot_config(path, client_ids=[CLIENT])

    assert settings.client_ids == (CLIENT,)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('["region", "us-west-2"]', "JSON object"),
        ("null", "JSON object"),
    ],
)
def test_unreadable_config_fails_clearly(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthSettings.from_simpleiot_config(write_config(tmp_path, content))


def test_missing_config_file_fails_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.json"

    with pytest.raises(ValueError, match="cannot read") as caught:
        AuthSettings.from_simpleiot_config(path)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("config_key", "bad_value", "field"),
    [
        ("region", "Oregon", "region"),
        ("cognitoUserPoolId", "not-a-pool", "user_pool_id"),
        ("cognitoClientId", "bad client", "client_ids"),
    ],
)
def test_bad_value_in_config_fails_naming_the_file_and_its_own_key(
    tmp_path: Path, config_key: str, bad_value: str, field: str
) -> None:
    path = write_config(tmp_path, simpleiot_config(**{config_key: bad_value}))

    with pytest.raises(ValueError, match="SimpleIOT config") as caught:
        AuthSettings.from_simpleiot_config(path)

    message = str(caught.value)
    assert str(path) in message
    assert f"{config_key!r}" in message
    if field != config_key:
        assert field not in message  # the user wrote cognitoClientId, not client_ids


# -- several pools: loaders ---------------------------------------------------------------------

TEAM_ONE = {
    "region": "us-west-2",
    "cognitoUserPoolId": "us-west-2_TeamOne1",
    "cognitoClientId": "teamoneclient",
}
TEAM_TWO = {
    "region": "eu-west-1",
    "cognitoUserPoolId": "eu-west-1_TeamTwo2",
    "cognitoClientId": "teamtwoclient",
}


def write_team(home: Path, team: str, content: Any) -> Path:
    (home / team).mkdir(parents=True, exist_ok=True)
    return write_config(home / team, content)


def test_reads_several_simpleiot_configs_in_order(tmp_path: Path) -> None:
    paths = [write_team(tmp_path, "b", TEAM_TWO), write_team(tmp_path, "a", TEAM_ONE)]

    pools = AuthSettings.from_simpleiot_configs(paths, token_use="access")

    assert [(p.user_pool_id, p.client_ids, p.token_use) for p in pools] == [
        ("eu-west-1_TeamTwo2", ("teamtwoclient",), "access"),
        ("us-west-2_TeamOne1", ("teamoneclient",), "access"),
    ]


def test_reads_every_team_under_a_simpleiot_home_in_team_order(tmp_path: Path) -> None:
    write_team(tmp_path, "zeta", TEAM_ONE)
    write_team(tmp_path, "alpha", TEAM_TWO)
    (tmp_path / "not-a-team").mkdir()
    (tmp_path / "stray.json").write_text("{}")

    pools = AuthSettings.from_simpleiot_home(tmp_path)

    assert [pool.user_pool_id for pool in pools] == ["eu-west-1_TeamTwo2", "us-west-2_TeamOne1"]


def test_simpleiot_home_defaults_to_the_users_simpleiot_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_team(tmp_path / ".simpleiot", "myteam", TEAM_ONE)

    (pool,) = AuthSettings.from_simpleiot_home()

    assert pool.user_pool_id == "us-west-2_TeamOne1"


@pytest.mark.parametrize(
    ("make", "message"), [("missing", "does not exist"), ("empty", "has no <team>/config.json")]
)
def test_simpleiot_home_without_teams_fails_naming_it(tmp_path: Path, make: str, message: str) -> None:
    home = tmp_path / "home"
    if make == "empty":
        home.mkdir()
    with pytest.raises(ValueError, match=f"SimpleIOT folder {home} {message}"):
        AuthSettings.from_simpleiot_home(home)


def test_no_configs_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no SimpleIOT config\.json was given"):
        AuthSettings.from_simpleiot_configs([])


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ({**TEAM_TWO, "cognitoClientId": "bad client"}, "'cognitoClientId'"),
        ({**TEAM_TWO, "cognitoUserPoolId": "eu-west-1"}, "'cognitoUserPoolId'"),
        ({**TEAM_TWO, "region": "Europe"}, "'region'"),
        ({k: v for k, v in TEAM_TWO.items() if k != "cognitoClientId"}, "has no 'cognitoClientId'"),
    ],
    ids=["client-id", "pool-id", "region", "missing"],
)
def test_a_bad_team_is_reported_by_its_path_and_its_own_key_name(
    tmp_path: Path, content: dict[str, str], key: str
) -> None:
    write_team(tmp_path, "good", TEAM_ONE)
    bad = write_team(tmp_path, "broken", content)

    with pytest.raises(ValueError, match="broken") as failure:
        AuthSettings.from_simpleiot_home(tmp_path)

    assert str(bad) in str(failure.value)
    assert key in str(failure.value)
    assert "client_ids" not in str(failure.value)
    assert "user_pool_id" not in str(failure.value)


def test_pools_from_env_reads_a_json_array_with_shared_plain_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools = [
        {"region": "us-west-2", "user_pool_id": "us-west-2_TeamOne1", "client_ids": ["one"]},
        {
            "region": "eu-west-1",
            "user_pool_id": "eu-west-1_TeamTwo2",
            "client_ids": "two,three",
            "additional_regions": ["eu-central-1"],
            "leeway_seconds": 1,
        },
    ]
    monkeypatch.setenv("SIOT_AUTHZ_POOLS", json.dumps(pools))
    monkeypatch.setenv("SIOT_AUTHZ_LEEWAY_SECONDS", "9")

    one, two = AuthSettings.pools_from_env()

    assert (one.client_ids, one.leeway_seconds) == (("one",), 9)  # the shared variable fills the gap
    assert (two.client_ids, two.leeway_seconds) == (("two", "three"), 1)  # the pool's own value wins
    assert "https://cognito-idp.eu-central-1.amazonaws.com/eu-west-1_TeamTwo2" in two.issuers


def test_pools_from_env_reads_simpleiot_config_paths_after_the_json_pools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [write_team(tmp_path, "one", TEAM_ONE), write_team(tmp_path, "two", TEAM_TWO)]
    environ = {
        "SIOT_AUTHZ_SIMPLEIOT_CONFIGS": os.pathsep.join(str(path) for path in paths),
        "SIOT_AUTHZ_POOLS": json.dumps([{**VALID, "user_pool_id": "us-west-2_Listed1"}]),
    }

    pools = AuthSettings.pools_from_env(environ)

    assert [pool.user_pool_id for pool in pools] == [
        "us-west-2_Listed1",
        "us-west-2_TeamOne1",
        "eu-west-1_TeamTwo2",
    ]


def test_pools_from_env_without_a_list_is_the_single_pool_of_plain_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {"SIOT_AUTHZ_REGION": REGION, "SIOT_AUTHZ_USER_POOL_ID": POOL, "SIOT_AUTHZ_CLIENT_IDS": CLIENT}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    (pool,) = AuthSettings.pools_from_env()

    assert (pool.user_pool_id, pool.client_ids) == (POOL, (CLIENT,))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{", "SIOT_AUTHZ_POOLS is not valid JSON"),
        ('{"region": "us-west-2"}', "must be a JSON array of objects"),
        ('["us-west-2_TeamOne1"]', "must be a JSON array of objects"),
        (json.dumps([VALID, {**VALID, "user_pool_id": "nope"}]), r"SIOT_AUTHZ_POOLS\[1\]: 'user_pool_id'"),
        (json.dumps([{**VALID, "colour": "blue"}]), r"SIOT_AUTHZ_POOLS\[0\]: 'colour'"),
    ],
    ids=["bad-json", "object", "strings", "bad-field", "unknown-field"],
)
def test_bad_pools_variable_fails_saying_where(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthSettings.pools_from_env({"SIOT_AUTHZ_POOLS": value})


def test_a_bad_path_in_simpleiot_configs_variable_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "config.json"
    with pytest.raises(ValueError, match=f"cannot read SimpleIOT config {missing}"):
        AuthSettings.pools_from_env({"SIOT_AUTHZ_SIMPLEIOT_CONFIGS": str(missing)})
