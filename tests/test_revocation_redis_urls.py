"""Redis URLs: credentials never reach a message or a log, whatever the URL's shape (issue 19 §1).

Nothing listens on the port these URLs name, so every attempt fails the way
an unreachable store does, and each failure's text is searched for the
secrets the URL holds.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
import redis
import redis.asyncio as redis_asyncio

from siot_authz.revocation import (
    RedisLookupRevocations,
    RedisRevocations,
    Revocation,
    RevocationStoreUnavailable,
)
from siot_authz.revocation._redis_client import RedisTarget, redacted_url


@pytest.fixture(scope="module")
def port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: URL, the secrets it holds, and what messages show instead; PORT is the closed port.
SHAPES = [
    (
        "redis://app:8842/TopSecretPw@127.0.0.1:PORT/0",
        ["8842", "TopSecretPw"],
        "redis://***@127.0.0.1:PORT/0",
    ),
    ("redis://:S3cr3t/Pw+x=@127.0.0.1:PORT", ["S3cr3t", "Pw+x="], "redis://***@127.0.0.1:PORT"),
    (
        "redis://appuser:p@ss:w@rd@127.0.0.1:PORT/0",
        ["appuser", "p@ss", "w@rd"],
        "redis://***@127.0.0.1:PORT/0",
    ),
    (
        "rediss://svc:Se%2Fcret@127.0.0.1:PORT/0",
        ["svc", "Se%2Fcret", "Se/cret"],
        "rediss://***@127.0.0.1:PORT/0",
    ),
    ("redis://OnlyAToken99@127.0.0.1:PORT", ["OnlyAToken99"], "redis://***@127.0.0.1:PORT"),
    (
        "redis+cluster://u5er:Cl?ust#er@127.0.0.1:PORT",
        ["u5er", "Cl?ust#er"],
        "redis+cluster://***@127.0.0.1:PORT",
    ),
]
SHAPE_IDS = ["slash-in-password", "token-with-slash", "at-signs", "percent-encoded", "token-only", "cluster"]


def _has_no_secret(text: str, secrets: list[str]) -> bool:
    return not any(secret in text for secret in secrets)


@pytest.mark.parametrize(("url", "secrets", "shown"), SHAPES, ids=SHAPE_IDS)
def test_messages_show_where_redis_is_never_its_credentials(
    url: str, secrets: list[str], shown: str, port: int
) -> None:
    url, shown = url.replace("PORT", str(port)), shown.replace("PORT", str(port))
    assert redacted_url(url) == shown
    revocations = RedisRevocations(url)
    assert revocations.where == shown
    assert _has_no_secret(repr(revocations.store.target), secrets)

    with pytest.raises(RevocationStoreUnavailable) as refused:
        revocations.add_sync(Revocation("user", "eu-west-1_pool", "alice", 1.0, 4e9))

    assert f"127.0.0.1:{port}" in str(refused.value)
    assert _has_no_secret(str(refused.value), secrets)
    assert _has_no_secret(revocations.status().last_error or "", secrets)


@pytest.mark.parametrize(("url", "secrets", "shown"), SHAPES, ids=SHAPE_IDS)
def test_the_reconnect_warnings_never_show_credentials(
    url: str, secrets: list[str], shown: str, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    url, shown = url.replace("PORT", str(port)), shown.replace("PORT", str(port))
    # Nothing listens there: the start gives up at once, and the test waits for the first warning.
    revocations = RedisRevocations(url, start_timeout_seconds=0.05)
    with caplog.at_level(logging.INFO, logger="siot_authz"):
        revocations.start_sync()
        deadline = time.monotonic() + 10
        while not any(
            record.getMessage().startswith("revocation_store_unreachable") for record in caplog.records
        ):
            assert time.monotonic() < deadline, "no reconnect warning was logged"
            time.sleep(0.01)
        revocations.stop_sync()

    warnings = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("revocation_store_unreachable") for message in warnings)
    assert all(_has_no_secret(message, secrets) for message in warnings)
    assert any(shown in message for message in warnings)


def test_the_credentials_reach_redis_as_given() -> None:
    # Unencoded: everything before the last "@", split at the first ":"; percent-encoded: decoded.
    pasted = RedisTarget.from_url("redis://app:8842/Top@Secret@127.0.0.1:6399/2")
    encoded = RedisTarget.from_url("rediss+cluster://svc:Se%2Fcret@[::1]:7000")
    token_only = RedisTarget.from_url("redis://:S3cr3t/Pw+x=@cache.internal")

    assert (pasted.username, pasted.password, pasted.host, pasted.port, pasted.db) == (
        "app",
        "8842/Top@Secret",
        "127.0.0.1",
        6399,
        2,
    )
    assert (encoded.username, encoded.password, encoded.host, encoded.is_tls, encoded.is_cluster) == (
        "svc",
        "Se/cret",
        "::1",
        True,
        True,
    )
    assert (token_only.username, token_only.password, token_only.port) == (None, "S3cr3t/Pw+x=", 6379)


@pytest.mark.parametrize(
    ("make", "client_class"),
    [("sync_client", "Redis"), ("sync_client", "RedisCluster"), ("async_node_client", "Redis")],
)
def test_a_tls_client_asks_for_the_certificate_and_the_host_name_to_be_checked(
    monkeypatch: pytest.MonkeyPatch, make: str, client_class: str
) -> None:
    # Asked for, not left to redis-py's default: redis>=5 is allowed, and redis-py 5 leaves
    # ssl_check_hostname off, so any certificate from a trusted CA would pass for the store.
    module = redis_asyncio if make == "async_node_client" else redis
    asked: dict[str, object] = {}
    monkeypatch.setattr(module, client_class, lambda **options: asked.update(options))
    url = "rediss+cluster://127.0.0.1:6399" if client_class == "RedisCluster" else "rediss://127.0.0.1:6399/0"

    getattr(RedisTarget.from_url(url), make)()

    assert (asked.get("ssl"), asked.get("ssl_cert_reqs"), asked.get("ssl_check_hostname")) == (
        True,
        "required",
        True,
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://us3r:Pw1secret@h0st:notaport/0",
        "redis://us3r:Pw2secret@/0",
        "http://us3r:Pw3secret@h0st:6379",
        "redis://us3r:Pw4secret@h0st:6379/zero",
        "redis://us3r:Pw5secret@h0st:99999",
        "Pw6secret-with-no-scheme",
        "redis://us3r:Pw7secret@h0st:6379/0?ssl_cert_reqs=none",
        "redis+cluster://us3r:Pw8secret@h0st:6379/3",
        "redis://us3r:Pw9secret@[::1:6379",
    ],
)
@pytest.mark.parametrize("backend", [RedisRevocations, RedisLookupRevocations])
def test_refuses_a_url_it_cannot_parse_quoting_none_of_it(url: str, backend: type) -> None:
    with pytest.raises(ValueError, match="cannot be parsed") as refused:
        backend(url)

    message = str(refused.value)
    assert "secret" not in message
    assert "us3r" not in message
    assert "h0st" not in message
    assert "secret" not in redacted_url(url)
    assert "us3r" not in redacted_url(url)


def test_a_stored_entry_too_large_to_be_a_revocation_is_ignored_before_parsing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from siot_authz.revocation._redis_store import MAX_ENTRY_BYTES, parse_entry

    huge = b'{"kind": "user", "pool": "us-east-1_P", "subject": "' + b"x" * MAX_ENTRY_BYTES + b'"}'
    with caplog.at_level("WARNING", logger="siot_authz"):
        assert parse_entry(huge) is None
    assert "revocation_entry_malformed" in caplog.text
    assert "xxxx" not in caplog.text
