"""Issue 10 item 11: ``-v`` logs each key fetch once, and ``decode --help`` promises no settings."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from siot_authz.cli import main
from siot_authz.cli._terminal import Terminal
from siot_authz.testing import LocalIssuer


@pytest.fixture
def restore_logging() -> Iterator[None]:
    # ``-v`` configures the root logger; put it back so later tests see what they expect.
    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, httpx_level = list(root.handlers), root.level, httpx_logger.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    httpx_logger.setLevel(httpx_level)


def _terminal() -> Terminal:
    return Terminal(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.usefixtures("restore_logging")
def test_verbose_verify_logs_one_line_per_key_request(issuer: LocalIssuer) -> None:
    terminal = _terminal()
    logging.getLogger().handlers.clear()  # let -v's basicConfig attach to this terminal
    argv = ["-v", "verify", "--jwks-url", issuer.serve().url, "--region", issuer.region]
    argv += ["--user-pool-id", issuer.user_pool_id, "--client-id", issuer.client_id, issuer.mint()]

    assert main(argv, terminal=terminal) == 0

    log = terminal.stderr.getvalue()  # type: ignore[attr-defined]
    assert issuer.serve().request_count == 1
    assert log.count("jwks_fetched") == 1, log  # the library's own line; httpx's copy is silenced
    assert "HTTP Request" not in log, log


def test_decode_help_does_not_describe_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    help_text = capsys.readouterr().out
    assert "exit status" in help_text
    assert "SIOT_AUTHZ_" not in help_text
    assert "--config" not in help_text


def test_verify_help_still_says_where_settings_come_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "SIOT_AUTHZ_* environment variables" in capsys.readouterr().out
