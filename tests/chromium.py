"""The system's Chromium (apt), driven by Playwright from PyPI: a real browser as a WebSocket client.

Playwright never downloads a browser here: it launches the ``chromium``
binary the machine has (``.ci/run`` installs it). Without either, the
browser tests are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SIOT_AUTHZ_TEST_CHROMIUM", "/usr/bin/chromium")

_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Opens a socket as a dashboard does, ``new WebSocket(url, ["bearer", token])``, and keeps what it
#: sees in ``window.seen[key]``; resolves with the accepted subprotocol once open.
OPEN_IN_PAGE = """([key, url, token]) => new Promise((opened, failed) => {
  window.seen = window.seen || {};
  const seen = (window.seen[key] = { messages: [], code: null, reason: null, closedAt: null });
  const socket = new WebSocket(url, ["bearer", token]);
  socket.onopen = () => { socket.send("ping"); opened(socket.protocol); };
  socket.onmessage = (event) => seen.messages.push(String(event.data));
  socket.onerror = () => failed(new Error("refused"));
  socket.onclose = (event) => { seen.code = event.code; seen.reason = event.reason; seen.closedAt = Date.now(); };
})"""


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium browser, or a pytest skip when Playwright or the browser is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_in_page(page: Any, key: str, url: str, token: str) -> str:
    """Open a socket in ``page``; returns the subprotocol the server accepted."""
    protocol: str = page.evaluate(OPEN_IN_PAGE, [key, url, token])
    return protocol


def closed_in_page(page: Any, key: str, timeout: float = 10) -> dict[str, Any]:
    """What socket ``key`` saw, once it has closed: messages, code, reason, closedAt (Unix ms)."""
    page.wait_for_function(
        "(key) => window.seen && window.seen[key] && window.seen[key].code !== null",
        arg=key,
        timeout=timeout * 1000,
    )
    seen: dict[str, Any] = page.evaluate("(key) => window.seen[key]", key)
    return seen
