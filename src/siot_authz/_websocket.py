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
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.exceptions import WebSocketException
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.types import Scope
from starlette.websockets import WebSocket

from ._errors import AuthError

__all__ = [
    "BEARER_SUBPROTOCOL",
    "AuthWebSocketException",
    "accept_websocket",
    "can_send_denial",
    "websocket_token",
]

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
