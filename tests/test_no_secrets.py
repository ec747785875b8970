"""No token, signature or claim value ever appears in logs, error responses or exceptions.

Tokens here carry distinctive claim values; every refusal (and one success)
runs through the verifier and through FastAPI with every logger at DEBUG, and
then the logs, the HTTP responses and the raised errors (their str, repr,
args, details, log context, and every exception chained to them) are
searched for the token, its segments and those values. By design a log line
may carry the reason code, the kid and the iss; those are not secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from siot_authz import AuthError, TokenVerifier
from siot_authz.testing import LocalIssuer, b64url

# Claim values that must never leak: each is unique enough to grep for.
SECRET_CLAIMS = {
    "sub": "sub-7f3e9c2a-secret",
    "username": "user-secret-5521",
    "email": "mail-secret-8812@example.com",
    "jti": "jti-secret-66af",
    "custom:device_key": "device-secret-0b7d",
}


def _mint(issuer: LocalIssuer, **overrides: object) -> str:
    return issuer.mint(**{**SECRET_CLAIMS, **overrides})


def _signed(issuer: LocalIssuer, payload: bytes, **header: object) -> str:
    return issuer.sign(payload, header=header)


def _claims_json(issuer: LocalIssuer) -> str:
    return json.dumps(issuer.claims(**SECRET_CLAIMS))


def _flip_signature(token: str) -> str:
    head, signature = token.rsplit(".", 1)
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


@dataclass(frozen=True)
class Refusal:
    name: str
    code: str
    token: Callable[[LocalIssuer], str]


REFUSALS = [
    Refusal("expired", "token_expired", lambda i: _mint(i, expires_in=-60)),
    Refusal("not-yet-valid", "token_not_yet_valid", lambda i: _mint(i, nbf=10**10)),
    Refusal("other-client", "client_not_allowed", lambda i: _mint(i, aud="otherclient0000000000000")),
    Refusal("other-issuer", "issuer_invalid", lambda i: _mint(i, iss="https://evil.example/pool")),
    Refusal("access-token", "token_use_mismatch", lambda i: _mint(i, token_use="access")),
    Refusal("bad-signature", "signature_invalid", lambda i: _flip_signature(_mint(i))),
    Refusal("unknown-kid", "kid_unknown", lambda i: _mint(i, header={"kid": "unknown-kid"})),
    Refusal("alg-none", "unsupported_algorithm", lambda i: _mint(i, header={"alg": "none"})),
    Refusal("crit", "header_invalid", lambda i: _mint(i, header={"crit": ["exp"]})),
    Refusal("jku", "header_invalid", lambda i: _mint(i, header={"jku": "http://127.0.0.1:9/k"})),
    Refusal("groups-not-a-list", "claim_invalid", lambda i: _mint(i, **{"cognito:groups": "group-secret-1"})),
    Refusal(
        "duplicate-claim",
        "token_malformed",
        lambda i: _signed(i, (_claims_json(i)[:-1] + ', "sub": "sub-dup-secret-2"}').encode()),
    ),
    Refusal(
        "non-finite-exp",
        "token_malformed",
        lambda i: _signed(i, (_claims_json(i)[:-1] + ', "exp": Infinity}').encode()),
    ),
    Refusal("not-utf8", "token_malformed", lambda i: _signed(i, b"\xff" + _claims_json(i).encode())),
    Refusal("json-array", "token_malformed", lambda i: _signed(i, f"[{_claims_json(i)}]".encode())),
    Refusal("not-base64url", "token_malformed", lambda i: _mint(i).replace(".", ".+", 1)),
    Refusal("two-segments", "token_malformed", lambda i: _mint(i).rsplit(".", 1)[0]),
    Refusal("too-large", "token_too_large", lambda i: _mint(i, filler="secret-filler-" * 700)),
    Refusal(
        "secret-in-header",
        "kid_missing",
        lambda i: _mint(i, header={"kid": None, "x-secret": "header-secret-3"}),
    ),
]


def _secrets(token: str) -> set[str]:
    """What must not appear: the token, any segment of it, and every secret value inside it."""
    values = {token, *(segment for segment in token.split(".") if len(segment) >= 8)}
    values.update(SECRET_CLAIMS.values())
    values.update({"sub-dup-secret-2", "group-secret-1", "header-secret-3", "secret-filler-"})
    if token.startswith("Bearer "):
        values.add(token.removeprefix("Bearer "))
    # Signatures also must not show up re-encoded.
    values.update(b64url(segment.encode()) for segment in token.split(".")[2:3] if len(segment) >= 8)
    return values


def _exception_texts(error: BaseException) -> Iterator[str]:
    """str and repr of the error and of every exception chained to it, suppressed or not."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield repr(vars(current))
        pending.extend([current.__cause__, current.__context__])


def _leaks(texts: list[str], secrets: set[str]) -> list[str]:
    return sorted({secret[:40] for secret in secrets for text in texts if secret in text})


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, so nothing said quietly escapes the search."""
    previous = {name: logging.getLogger(name).level for name in ("siot_authz", "httpx", "httpcore")}
    caplog.set_level(logging.DEBUG)
    for name in previous:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    # Every attribute of every record, in case a formatter shows more than the message.
    return [caplog.text] + [f"{record.getMessage()} {vars(record)!r}" for record in caplog.records]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal.name for refusal in REFUSALS])
@pytest.mark.parametrize("prefix", ["", "Bearer "], ids=["raw", "bearer"])
def test_refusal_leaks_nothing_from_the_token(
    refusal: Refusal,
    prefix: str,
    issuer: LocalIssuer,
    verifier: TokenVerifier,
    client: TestClient,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    token = prefix + refusal.token(issuer)
    secrets = _secrets(token)

    with pytest.raises(AuthError) as refused:
        verifier.verify_sync(token)
    assert refused.value.code == refusal.code  # the refusal happened for the reason meant
    response = client.get("/me", headers={"Authorization": token})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == refusal.code

    texts = [*_exception_texts(refused.value), response.text, repr(response.headers)]
    assert _leaks(texts, secrets) == []
    assert _leaks(_log_texts(debug_logs), secrets) == []
    # The log line says why, so an operator is not left guessing.
    assert f"code={refusal.code}" in debug_logs.text


def test_forbidden_response_leaks_nothing(
    issuer: LocalIssuer, client: TestClient, debug_logs: pytest.LogCaptureFixture
) -> None:
    token = _mint(issuer)
    response = client.delete("/admin", headers={"Authorization": token})
    assert response.status_code == 403
    assert _leaks([response.text, repr(response.headers)], _secrets(token)) == []
    assert _leaks(_log_texts(debug_logs), _secrets(token)) == []


def test_success_logs_nothing_from_the_token(
    issuer: LocalIssuer, verifier: TokenVerifier, client: TestClient, debug_logs: pytest.LogCaptureFixture
) -> None:
    token = _mint(issuer)
    assert verifier.verify_sync(token).username == SECRET_CLAIMS["username"]
    assert verifier.verify_sync(token).username == SECRET_CLAIMS["username"]  # the cached path too
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert _leaks(_log_texts(debug_logs), _secrets(token)) == []


def test_the_search_would_find_a_leak(issuer: LocalIssuer, debug_logs: pytest.LogCaptureFixture) -> None:
    """The detector itself works: a logged token, signature or claim value is caught."""
    token = _mint(issuer)
    logging.getLogger("siot_authz").debug("careless %s", token.split(".")[2])
    logging.getLogger("siot_authz").debug("careless %s", SECRET_CLAIMS["email"])
    error = AuthError(None, note=token)
    assert len(_leaks(_log_texts(debug_logs), _secrets(token))) == 2
    assert _leaks(list(_exception_texts(error)), _secrets(token)) != []
