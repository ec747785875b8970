"""A real uvicorn serving an ASGI app in a thread on a free loopback port, with a handle on its event loop.

For tests that need the server's own loop: counting its tasks (nothing may
leak) or running something on it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from loopback import free_port

T = TypeVar("T")


class ThreadedUvicorn:
    """``with ThreadedUvicorn(app) as server:`` serves ``app`` at ``server.url`` (ws://) until the block ends.

    ``ws`` picks uvicorn's WebSocket implementation (``auto``: websockets-sansio).
    """

    def __init__(self, app: ASGIApp, *, ws: str = "auto") -> None:
        self._app = app
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        config = uvicorn.Config(
            self._asgi,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            interface="asgi3",
            ws=ws,  # type: ignore[arg-type]  # one of uvicorn's names
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await self._app(scope, receive, send)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def task_count(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())

        return self.run(count())

    def connection_count(self) -> int:
        """Connections the server holds open (a closed one is gone once uvicorn saw it lost)."""

        async def count() -> int:
            return len(self._server.server_state.connections)

        return self.run(count())

    def wait_until_idle(self, tasks: int, *, timeout: float = 5) -> None:
        """Until no connection is open and at most ``tasks`` tasks run: all the tests' traffic handled.

        After that nothing more of it can run, or log. Returns after ``timeout`` regardless.
        """
        deadline = time.monotonic() + timeout
        while (self.connection_count() > 0 or self.task_count() > tasks) and time.monotonic() < deadline:
            time.sleep(0.005)

    def __enter__(self) -> ThreadedUvicorn:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
