"""Keys without a network: a JWKS handed in (in code or as ``jwks_file``) serves from the first request.

The key URL in these tests points at a loopback port nobody listens on, or
the test forbids every socket outright, so any fetch would show. A reachable
URL still refreshes the handed-in keys once their TTL passes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from siot_authz import AuthError, AuthSettings, CognitoAuth, Principal, TokenVerifier
from siot_authz.testing import LocalIssuer
from spare_keys import spare_key, spare_key_as

FACES = ("fastapi", "async", "sync")


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Forbid every name lookup and connection, loopback included; returns what was attempted."""
    attempts: list[str] = []

    def refuse_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"resolve {host}")
        raise OSError("no network in this test")

    def refuse_connect(self: socket.socket, address: Any) -> Any:
        attempts.append(f"connect {address}")
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    return attempts


def _unreachable(issuer: LocalIssuer, port: int, **overrides: Any) -> AuthSettings:
    return issuer.settings(jwks_url=f"http://127.0.0.1:{port}{issuer.jwks_path}", **overrides)


def _write_jwks(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _outcome(face: str, auth: CognitoAuth, token: str) -> str:
    if face == "fastapi":
        app = FastAPI(lifespan=auth.lifespan)

        @app.get("/me")
        async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
            return {"username": principal.username}

        with TestClient(app) as client:  # with the lifespan: start-up must not need the network either
            response = client.get("/me", headers={"Authorization": token})
        return (
            "ok"
            if response.status_code == 200
            else f"{response.status_code} {response.json()['detail']['code']}"
        )
    try:
        if face == "async":
            asyncio.run(_start_and_verify(auth.verifier, token))
        else:
            auth.verifier.verify_sync(token)
    except AuthError as error:
        return f"{error.status_code} {error.code}"
    return "ok"


async def _start_and_verify(verifier: TokenVerifier, token: str) -> None:
    await verifier.start()
    try:
        await verifier.verify(token)
    finally:
        await verifier.aclose()


HANDED_IN: list[tuple[str, Callable[[LocalIssuer, Path], dict[str, Any]]]] = [
    ("document-as-dict", lambda i, d: {"jwks": {i.user_pool_id: i.jwks()}}),
    ("document-as-text", lambda i, d: {"jwks": {i.user_pool_id: json.dumps(i.jwks())}}),
    ("document-as-bytes", lambda i, d: {"jwks": {i.user_pool_id: json.dumps(i.jwks()).encode()}}),
    ("jwks-file", lambda i, d: {"jwks_file": _write_jwks(d / "jwks.json", i.jwks())}),
    ("jwks-file-as-string", lambda i, d: {"jwks_file": str(_write_jwks(d / "jwks.json", i.jwks()))}),
]


def _auth(
    issuer: LocalIssuer, port: int, tmp_path: Path, handed_in: Callable[..., dict[str, Any]]
) -> CognitoAuth:
    options = handed_in(issuer, tmp_path)
    settings = _unreachable(issuer, port, jwks_file=options.pop("jwks_file", None))
    return CognitoAuth(settings, **options)


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("handed_in", [h for _n, h in HANDED_IN], ids=[n for n, _h in HANDED_IN])
def test_handed_in_keys_serve_from_the_first_request_with_the_key_url_unreachable(
    issuer: LocalIssuer, closed_port: int, tmp_path: Path, face: str, handed_in: Callable[..., dict[str, Any]]
) -> None:
    auth = _auth(issuer, closed_port, tmp_path, handed_in)

    assert _outcome(face, auth, issuer.mint()) == "ok"
    assert auth.verifier.pools[0].keys.status().last_error is None  # nothing was even tried


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("handed_in", [h for _n, h in HANDED_IN], ids=[n for n, _h in HANDED_IN])
def test_handed_in_keys_need_no_network_at_all(
    issuer: LocalIssuer,
    closed_port: int,
    tmp_path: Path,
    no_network: list[str],
    face: str,
    handed_in: Callable[..., dict[str, Any]],
) -> None:
    """What a Lambda cold start in a VPC without egress sees: not one socket is opened, start-up included."""
    auth = _auth(issuer, closed_port, tmp_path, handed_in)

    assert _outcome(face, auth, issuer.mint()) == "ok"
    assert _outcome(face, auth, issuer.mint(expires_in=-600)) == "401 token_expired"
    assert no_network == []


def test_handed_in_keys_refuse_a_token_signed_with_another_key(
    issuer: LocalIssuer, closed_port: int, no_network: list[str]
) -> None:
    held = issuer.signing_key
    verifier = TokenVerifier(_unreachable(issuer, closed_port), jwks={issuer.user_pool_id: issuer.jwks()})
    stranger = issuer.rotate_key(keep_old=False, key=spare_key(0))

    with pytest.raises(AuthError) as refused:
        verifier.verify_sync(issuer.sign(issuer.claims(), key=stranger))

    # An unknown kid may look for new keys, but there is no network, so the held ones answer.
    assert refused.value.code == "kid_unknown"
    assert verifier.verify_sync(issuer.sign(issuer.claims(), key=held)).username == "alice"


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("source", ["code", "jwks-file"])
def test_a_reachable_key_url_refreshes_handed_in_keys_after_the_ttl(
    issuer: LocalIssuer, tmp_path: Path, source: str
) -> None:
    old_key = issuer.signing_key
    document = issuer.jwks()
    # The endpoint has moved on since the document was taken.
    new_key = issuer.rotate_key(keep_old=False, key=spare_key(0))
    server = issuer.serve()
    fields: dict[str, Any] = {"jwks_ttl_seconds": 0.3, "jwks_refetch_cooldown_seconds": 60.0}
    if source == "code":
        verifier = TokenVerifier(issuer.settings(**fields), jwks={issuer.user_pool_id: document})
    else:
        verifier = TokenVerifier(
            issuer.settings(jwks_file=_write_jwks(tmp_path / "k.json", document), **fields)
        )
    old_token = issuer.sign(issuer.claims(), key=old_key)

    assert verifier.verify_sync(old_token).sub  # served from the document, no fetch
    assert server.request_count == 0
    time.sleep(0.35)
    assert verifier.verify_sync(issuer.sign(issuer.claims(nonce=1), key=old_key)).sub  # stale, refresh starts
    _wait_for(lambda: verifier.pools[0].keys.generation == 2)

    assert server.request_count == 1
    assert verifier.verify_sync(issuer.sign(issuer.claims(), key=new_key)).sub
    with pytest.raises(AuthError) as refused:
        verifier.verify_sync(old_token)  # withdrawn at the endpoint: cached or not, it is refused now
    assert refused.value.code == "kid_unknown"
    verifier.close()


def test_an_unreachable_key_url_does_not_stop_handed_in_keys_serving_after_the_ttl(
    issuer: LocalIssuer, closed_port: int
) -> None:
    settings = _unreachable(issuer, closed_port, jwks_ttl_seconds=0.2, jwks_refetch_cooldown_seconds=0.0)
    verifier = TokenVerifier(settings, jwks={issuer.user_pool_id: issuer.jwks()})
    assert verifier.verify_sync(issuer.mint()).sub

    time.sleep(0.25)
    started = time.monotonic()
    usernames = [verifier.verify_sync(issuer.mint(username=f"u{n}")).username for n in range(5)]
    _wait_for(lambda: verifier.pools[0].keys.status().last_error is not None)

    assert usernames == [f"u{n}" for n in range(5)]
    assert time.monotonic() - started < 1.0
    status = verifier.pools[0].keys.status()
    assert (status.has_keys, status.is_stale) == (True, True)
    assert verifier.verify_sync(issuer.mint(username="later")).username == "later"
    verifier.close()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("not json at all", "jwks_not_utf8_json"),
        (b"\xff\xfe", "jwks_not_utf8_json"),
        ("[]", "jwks_not_an_object"),
        ({}, "jwks_keys_not_an_array"),
        ({"keys": "none"}, "jwks_keys_not_an_array"),
        ({"keys": []}, "jwks_no_usable_key"),
        ({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}, "jwks_holds_private_key_material"),
    ],
    ids=["not-json", "not-utf8", "array", "no-keys", "keys-not-array", "empty", "only-hmac-key"],
)
def test_a_bad_document_fails_at_construction_saying_why(
    issuer: LocalIssuer, tmp_path: Path, document: Any, reason: str
) -> None:
    settings = issuer.settings(for_transport=True)
    with pytest.raises(ValueError, match=f"JWKS handed in for {issuer.user_pool_id} is unusable: {reason}"):
        TokenVerifier(settings, jwks={issuer.user_pool_id: document})

    path = tmp_path / "bad.json"
    if isinstance(document, str):
        document = document.encode()
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode())
    with pytest.raises(ValueError, match=f"jwks_file {path}.* is unusable: {reason}"):
        CognitoAuth(issuer.settings(for_transport=True, jwks_file=path))


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_a_jwks_file_holding_private_key_material_is_refused_saying_so(
    issuer: LocalIssuer, tmp_path: Path, member: str
) -> None:
    leaked = {**issuer.signing_key.public_jwk(), member: "c2VjcmV0LWtleS1tYXRlcmlhbA"}
    path = _write_jwks(tmp_path / "jwks.json", {"keys": [leaked]})

    with pytest.raises(ValueError, match=r"holds_private_key_material.*private key members.*must be rotated"):
        TokenVerifier(issuer.settings(for_transport=True, jwks_file=path))


@pytest.mark.parametrize("face", FACES)
def test_a_key_whose_key_ops_exclude_verify_is_not_used(
    issuer: LocalIssuer, tmp_path: Path, closed_port: int, no_network: list[str], face: str
) -> None:
    signing_only = {**issuer.signing_key.public_jwk(), "key_ops": ["sign"]}
    other = spare_key_as(0, "verifying-key")
    verifying = {**other.public_jwk(), "key_ops": ["verify"]}
    path = _write_jwks(tmp_path / "jwks.json", {"keys": [signing_only, verifying]})
    auth = CognitoAuth(_unreachable(issuer, closed_port, jwks_file=path))

    assert _outcome(face, auth, issuer.mint()) == "401 kid_unknown"
    assert _outcome(face, auth, issuer.sign(issuer.claims(), key=other)) == "ok"


def test_a_jwks_file_over_max_jwks_bytes_is_refused_before_it_is_parsed(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()) + " " * 2000)  # valid JSON, 2.5 KB

    with pytest.raises(ValueError, match=f"jwks_file {path} is larger than max_jwks_bytes \\(1024 bytes\\)"):
        TokenVerifier(issuer.settings(for_transport=True, jwks_file=path, max_jwks_bytes=1024))
    verifier = TokenVerifier(issuer.settings(for_transport=True, jwks_file=path, max_jwks_bytes=4096))
    assert verifier.verify_sync(issuer.mint()).username == "alice"


def test_a_missing_jwks_file_fails_at_construction_naming_it(issuer: LocalIssuer, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "jwks.json"
    with pytest.raises(ValueError, match=f"cannot read jwks_file {missing}: No such file"):
        TokenVerifier(issuer.settings(for_transport=True, jwks_file=missing))


def test_jwks_file_comes_from_the_environment(
    issuer: LocalIssuer,
    closed_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_network: list[str],
) -> None:
    path = _write_jwks(tmp_path / "jwks.json", issuer.jwks())
    for name, value in {
        "REGION": issuer.region,
        "USER_POOL_ID": issuer.user_pool_id,
        "CLIENT_IDS": issuer.client_id,
        "JWKS_URL": f"http://127.0.0.1:{closed_port}/jwks.json",
        "JWKS_FILE": str(path),
    }.items():
        monkeypatch.setenv(f"SIOT_AUTHZ_{name}", value)

    (settings,) = AuthSettings.pools_from_env()

    assert settings.jwks_file == path
    assert TokenVerifier(settings).verify_sync(issuer.mint()).username == "alice"
    assert no_network == []


def test_each_pool_takes_its_own_handed_in_keys(closed_port: int, no_network: list[str]) -> None:
    with (
        LocalIssuer(user_pool_id="us-east-1_OfflineOne", key=spare_key(0)) as one,
        LocalIssuer(user_pool_id="us-east-1_OfflineTwo", key=spare_key(1)) as two,
    ):
        verifier = TokenVerifier(
            [_unreachable(one, closed_port), two.settings(for_transport=True)],
            jwks={one.user_pool_id: one.jwks(), two.user_pool_id: two.jwks()},
        )
        crossed = one.sign(two.claims(), key=one.signing_key)

        assert verifier.verify_sync(one.mint()).user_pool_id == one.user_pool_id
        assert verifier.verify_sync(two.mint()).user_pool_id == two.user_pool_id
        assert no_network == []
        with pytest.raises(AuthError) as refused:
            verifier.verify_sync(crossed)  # pool two looks for the kid (and finds no network)
    assert refused.value.code == "kid_unknown"


# -- Principal.claims is read-only in fact -----------------------------------------------------


@pytest.fixture
def principal(issuer: LocalIssuer) -> Principal:
    verifier = TokenVerifier(issuer.settings(for_transport=True), jwks={issuer.user_pool_id: issuer.jwks()})
    return verifier.verify_sync(
        issuer.mint(groups=["admin"], devices=[{"id": "d1", "tags": ["a", "b"]}], profile={"plan": "pro"})
    )


def test_claims_cannot_be_changed_in_place(principal: Principal) -> None:
    with pytest.raises(TypeError):
        principal.claims["sub"] = "someone-else"  # type: ignore[index]
    with pytest.raises(TypeError):
        del principal.claims["sub"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        principal.claims["profile"]["plan"] = "free"
    with pytest.raises(AttributeError):
        principal.claims["cognito:groups"].append("root")
    with pytest.raises(AttributeError):
        principal.claims["devices"][0]["tags"].append("c")
    with pytest.raises(ValidationError, match="frozen"):
        principal.claims = {}  # type: ignore[misc]


def test_nested_arrays_are_tuples(principal: Principal) -> None:
    assert principal.claims["cognito:groups"] == ("admin",)
    assert principal.claims["devices"][0]["tags"] == ("a", "b")


def test_model_dump_gives_plain_json(principal: Principal) -> None:
    dumped = principal.model_dump()
    claims = dumped["claims"]

    assert type(claims) is dict
    assert claims["devices"] == [{"id": "d1", "tags": ["a", "b"]}]
    assert type(claims["profile"]) is dict
    assert json.loads(principal.model_dump_json())["claims"] == claims
    assert json.loads(json.dumps(principal.model_dump(mode="json")))["claims"]["cognito:groups"] == ["admin"]


def test_jwks_file_may_start_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalIssuer(key=spare_key(0)) as issuer:
        monkeypatch.setenv("HOME", str(tmp_path))
        (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks()))
        settings = issuer.settings(for_transport=True, jwks_file="~/jwks.json")

        assert settings.jwks_file == tmp_path / "jwks.json"
        assert TokenVerifier(settings).verify_sync(issuer.mint()).username == "alice"
