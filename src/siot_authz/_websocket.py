"""WebSockets: where a token can come from on a handshake, accepting it safely, and declining it.

A browser cannot set ``Authorization`` on ``new WebSocket(url)``. What it
can set is the subprotocol offer, so dashboards send
``new WebSocket(url, ["bearer", token])``: the token travels in
``Sec-WebSocket-Protocol`` right after the marker ``bearer``. The server
must then accept with the subprotocol ``bearer`` (a browser drops a
connection whose answer names none of its offers) and must never echo the
token back as the chosen protocol.

A refused handshake is declined before it opens, and no route code runs:
by closing before accepting, which servers answer with an HTTP 403, or,
when the application opts in and the server supports the ASGI WebSocket
Denial Response extension, with the refusal's own HTTP status and
``WWW-Authenticate``.

An accepted socket then lives only as long as its token: it is closed when
the token expires (close code 4401) and as soon as a revocation covers it
(4403), in every process that holds it, because each process's revocation
mirror tells its open sockets of every entry it applies. To the route, the
end looks like a client that went away: ``receive`` gives
``websocket.disconnect`` and a later ``send`` raises ``WebSocketDisconnect``,
so nothing is ever sent after the close. Watching costs a timer and an index
entry per socket and nothing per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.exceptions import WebSocketException
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._errors import AuthError

if TYPE_CHECKING:
    from ._principal import Principal
    from .revocation import Revocation, RevocationMirror

__all__ = [
    "BEARER_SUBPROTOCOL",
    "WS_4401_TOKEN_EXPIRED",
    "WS_4403_TOKEN_REVOKED",
    "AuthWebSocketException",
    "accept_websocket",
    "can_send_denial",
    "end_with_token",
    "websocket_token",
]

logger = logging.getLogger("siot_authz")

#: Close code of a socket whose token expired: get a fresh token (refresh) and reconnect.
#: 4000-4999 are the codes RFC 6455 leaves to applications; 4401 reads as HTTP's 401.
WS_4401_TOKEN_EXPIRED = 4401
#: Close code of a socket whose token was revoked (its user signed out or was disabled, or
#: its session was revoked): do not reconnect silently; sign in again. Reads as HTTP's 403,
#: as in the GraphQL-over-WebSocket protocol's 4403 Forbidden.
WS_4403_TOKEN_REVOKED = 4403

#: The subprotocol a browser offers, followed by its token: ``new WebSocket(url, ["bearer", token])``.
BEARER_SUBPROTOCOL = "bearer"

_DENIAL_EXTENSION = "websocket.http.response"


class AuthWebSocketException(WebSocketException):
    """A refused handshake, declined by closing it before accept (policy violation; servers answer 403).

    ``error`` keeps the :class:`AuthError`. The close reason is its fixed,
    token-free code.
    """

    def __init__(self, error: AuthError) -> None:
        super().__init__(code=WS_1008_POLICY_VIOLATION, reason=error.code)
        self.error = error


def can_send_denial(scope: Scope) -> bool:
    """True when the server can answer a WebSocket handshake with a full HTTP response."""
    return _DENIAL_EXTENSION in scope.get("extensions", {})


def websocket_token(scope: Scope, query_param: str | None) -> str | None:
    """The token offered after ``bearer`` in the subprotocols, else in ``query_param`` when opted in."""
    offered: list[str] = scope.get("subprotocols") or []
    for index, protocol in enumerate(offered):
        if protocol.lower() == BEARER_SUBPROTOCOL:
            # "bearer" with nothing after it is an offer with no credentials.
            token: str = offered[index + 1] if index + 1 < len(offered) else ""
            return token
    if query_param is not None:
        query: bytes = scope.get("query_string", b"")
        for name, value in parse_qsl(query.decode("latin-1")):
            if name == query_param:
                return value
    return None


def _chosen_subprotocol(offered: Iterable[str], preferred: str | None) -> str | None:
    offers = list(offered)
    for protocol in offers:
        if protocol.lower() == BEARER_SUBPROTOCOL:
            # The client's own spelling: a client accepts only an answer equal
            # to one of its offers, and "Bearer" is not "bearer" to it.
            return protocol
    if preferred is not None and preferred in offers:
        return preferred
    return None


async def accept_websocket(
    websocket: WebSocket,
    subprotocol: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] | None = None,
) -> None:
    """Accept a handshake the way a ``bearer`` client needs: one line in the route, after authorization.

    Picks the subprotocol ``bearer`` when the client offered it (its token
    came in the offer), so a browser keeps the connection and the token is
    never echoed. Otherwise picks ``subprotocol`` if the client offered it,
    and else none.
    """
    chosen = _chosen_subprotocol(websocket.scope.get("subprotocols") or [], subprotocol)
    await websocket.accept(subprotocol=chosen, headers=headers)


# -- sockets that end with their token ----------------------------------------------------


class _TokenWatch:
    """One open socket's tie to its token: a timer to its expiry and a place in its mirror's index.

    Installs itself between the route and the server (the WebSocket's
    ``receive`` and ``send``), so that once the token has ended no message
    reaches the route and no send reaches the wire. Everything but
    :meth:`end_soon` runs on the socket's event loop.
    """

    def __init__(
        self,
        websocket: WebSocket,
        principal: Principal,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.principal = principal
        #: The index it is in while watched.
        self.watchers: _Watchers | None = None
        self._loop = loop
        self._receive: Receive = websocket._receive
        self._send: Send = websocket._send
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        # The task waiting in receive(), and the one _close interrupted.
        self._receiver: asyncio.Task[Any] | None = None
        self._interrupted: asyncio.Task[Any] | None = None
        #: (code, reason) once the token has ended.
        self.ended: tuple[int, str] | None = None
        self.is_stopped = False
        websocket._receive = self.receive
        websocket._send = self.send

    # -- the route's side ---------------------------------------------------------------

    async def receive(self) -> Message:
        if self.ended is not None:
            await self._closed()
            return self._disconnect()
        task = asyncio.current_task()
        self._receiver = task
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            # Interrupted by _close (not every server ends a pending receive when the app closes):
            # take back that one cancellation and hand the route its disconnect. Any other
            # cancellation still propagates.
            if task is None or self._interrupted is not task:
                raise
            self._interrupted = None
            if task.uncancel() > 0:
                raise
            return self._disconnect()
        finally:
            self._receiver = None
        if self.ended is not None:
            # Sent by the client before it saw the close: not the route's to act on any more.
            await self._closed()
            return self._disconnect()
        if message["type"] == "websocket.disconnect":
            self.stop()
        return message

    async def _closed(self) -> None:
        """Wait for the close frame to be sent: a route that returned first would have the server
        drop the connection without one (browsers then see 1006, not the code)."""
        closing = self._closing
        if closing is not None:
            await asyncio.shield(closing)

    def _disconnect(self) -> Message:
        assert self.ended is not None
        return {"type": "websocket.disconnect", "code": self.ended[0], "reason": self.ended[1]}

    async def send(self, message: Message) -> None:
        ended = self.ended
        kind = message["type"]
        if ended is not None:
            await self._closed()
            if kind == "websocket.close":
                return  # already closed, as the route wanted
            # Ended before an accept too: the watcher's close declines the handshake (a 403).
            raise WebSocketDisconnect(code=ended[0], reason=ended[1])
        if kind == "websocket.close" or kind == "websocket.http.response.start":
            self.stop()
        await self._send(message)

    # -- the watcher's side -------------------------------------------------------------

    def start(self, mirror: RevocationMirror, deadline: float, clock: Callable[[], float]) -> None:
        self._timer = self._loop.call_later(max(0.0, deadline - clock()), self._end, *_EXPIRED)
        _watch(mirror, self)

    def end_soon(self, code: int, reason: str) -> None:
        """End the socket from any thread (a revocation arrives on the writer's)."""
        # A closed loop raises RuntimeError: its sockets are gone already.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._end, code, reason)

    def _end(self, code: int, reason: str) -> None:
        if self.is_stopped:
            return
        self.ended = (code, reason)
        self.stop()
        logger.info("websocket_closed code=%s pool=%s", reason, self.principal.user_pool_id)
        self._closing = self._loop.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as exc:
            # The client went first: nothing left to close.
            logger.debug("websocket_close_failed type=%s", type(exc).__name__)
        finally:
            self._closing = None
            receiver = self._receiver
            if receiver is not None:
                # The route is waiting for a message: end its wait now, whatever the server does.
                self._interrupted = receiver
                receiver.cancel()

    def stop(self) -> None:
        """Forget the socket: cancel the timer and leave the index. Idempotent."""
        if self.is_stopped:
            return
        self.is_stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _unwatch(self)


_EXPIRED = (WS_4401_TOKEN_EXPIRED, "token_expired")
_REVOKED = (WS_4403_TOKEN_REVOKED, "token_revoked")


class _Watchers:
    """The open sockets of one revocation mirror, indexed by what an entry names.

    Subscribed to the mirror only while it holds a socket. An entry for one
    user or session looks up only that user's or session's sockets; a full
    reload checks every socket. Either way the check is the mirror's own
    :meth:`~siot_authz.revocation.RevocationMirror.covers`, as on a request.
    """

    def __init__(self, mirror: RevocationMirror) -> None:
        self.mirror = mirror
        self._by_user: dict[tuple[str, str], set[_TokenWatch]] = {}
        self._by_session: dict[tuple[str, str], set[_TokenWatch]] = {}
        self.count = 0

    def _keys(
        self, watch: _TokenWatch
    ) -> list[tuple[dict[tuple[str, str], set[_TokenWatch]], tuple[str, str]]]:
        principal = watch.principal
        keys = [(self._by_user, (principal.user_pool_id, principal.sub))]
        origin_jti = principal.claims.get("origin_jti")
        if isinstance(origin_jti, str):
            keys.append((self._by_session, (principal.user_pool_id, origin_jti)))
        return keys

    def add(self, watch: _TokenWatch) -> None:
        """Index ``watch``; the caller holds ``_lock``."""
        for table, key in self._keys(watch):
            table.setdefault(key, set()).add(watch)
        self.count += 1

    def discard(self, watch: _TokenWatch) -> None:
        """Unindex ``watch``; the caller holds ``_lock``."""
        for table, key in self._keys(watch):
            held = table.get(key)
            if held is not None and watch in held:
                held.discard(watch)
                if not held:
                    del table[key]
        self.count -= 1

    def applied(self, entries: Sequence[Revocation]) -> None:
        """The mirror's listener: end every socket an applied entry now covers."""
        with _lock:
            if len(entries) >= self.count:
                candidates = {watch for held in self._by_user.values() for watch in held}
            else:
                candidates = set()
                for entry in entries:
                    table = self._by_user if entry.kind == "user" else self._by_session
                    candidates.update(table.get((entry.user_pool_id, entry.subject), ()))
        covers = self.mirror.covers
        for watch in candidates:
            if covers(watch.principal):
                watch.end_soon(*_REVOKED)


# One registry per mirror with open sockets, subscribed to it only while it has one; guarded by
# _lock, as are the registries themselves (sockets come and go on event loops, revocations arrive
# on writers' threads).
_lock = threading.Lock()
_registries: dict[RevocationMirror, _Watchers] = {}


def _watch(mirror: RevocationMirror, watch: _TokenWatch) -> None:
    with _lock:
        watchers = _registries.get(mirror)
        if watchers is None:
            watchers = _registries[mirror] = _Watchers(mirror)
            mirror.add_listener(watchers.applied)
        watchers.add(watch)
        watch.watchers = watchers
    # An entry written between the handshake's check and now was not heard: look once.
    if mirror.has_entries and mirror.covers(watch.principal):
        watch.end_soon(*_REVOKED)


def _unwatch(watch: _TokenWatch) -> None:
    with _lock:
        watchers = watch.watchers
        if watchers is None:
            return
        watch.watchers = None
        watchers.discard(watch)
        if watchers.count == 0:
            watchers.mirror.remove_listener(watchers.applied)
            if _registries.get(watchers.mirror) is watchers:
                del _registries[watchers.mirror]


def end_with_token(
    websocket: WebSocket,
    principal: Principal,
    mirror: RevocationMirror,
    *,
    expires_at: float,
    clock: Callable[[], float] = time.time,
) -> None:
    """Tie ``websocket`` to ``principal``'s token: close it at ``expires_at`` (Unix time), or when ``mirror`` revokes it.

    Call from the handshake's task (what ``Depends(auth)`` does), before the
    route accepts. The tie ends by itself when the socket closes, either
    side first, or when the connection's task finishes; nothing is left
    behind. Calling it twice for the same socket and mirror is harmless.
    """
    scope = websocket.scope
    marker = "siot_authz.token_watch"
    watched: set[int] = scope.setdefault(marker, set())
    if id(mirror) in watched:
        return
    watched.add(id(mirror))
    watch = _TokenWatch(websocket, principal, asyncio.get_running_loop())
    watch.start(mirror, expires_at, clock)
    task = asyncio.current_task()
    if task is not None:
        # Whatever way the route ends (returned, raised, cancelled), the watch goes with it.
        task.add_done_callback(lambda _: watch.stop())


def open_socket_count(mirror: RevocationMirror) -> int:
    """How many open sockets ``mirror`` is watching (for health and tests)."""
    with _lock:
        watchers = _registries.get(mirror)
        return 0 if watchers is None else watchers.count
