"""FastAPI integration: read the header, call the verifier, translate errors to HTTP.

No verification logic lives here. The dependency is an ``async`` callable,
so it runs on the event loop in async and sync routes alike and never takes
a threadpool slot. It serves ``@app.websocket`` routes too: a refusal there
declines the handshake (see :mod:`._websocket`), it never opens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import httpx
from fastapi import Depends, FastAPI, HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from ._errors import (
    AuthError,
    InsufficientPermissions,
    MissingGroup,
    MissingRole,
    MissingScope,
    MissingToken,
)
from ._health import AuthHealth
from ._key_cache import JwksDocument
from ._observe import Observer
from ._principal import Principal
from ._roles import RolesCache, RolesPrincipal, RolesSource
from ._settings import AuthSettings
from ._token import strip_bearer
from ._verifier import Check, TokenVerifier
from ._websocket import AuthWebSocketException, can_send_denial, end_with_token, websocket_token
from .revocation import RevocationBackend

__all__ = ["AuthHTTPException", "CognitoAuth", "PoolSettings"]

logger = logging.getLogger("siot_authz")

#: One pool's settings, several pools' settings, or a function returning either, called at start-up.
PoolSettings = AuthSettings | Sequence[AuthSettings] | Callable[[], AuthSettings | Sequence[AuthSettings]]

#: The principal a dependency gives: a :class:`Principal`, or a :class:`RolesPrincipal`.
_P = TypeVar("_P", bound=Principal)

_DESCRIPTION = (
    "A Cognito user pool JWT (an ID token unless the API says otherwise). "
    "Paste the token alone: Swagger UI adds the 'Bearer ' prefix itself."
)


class AuthHTTPException(HTTPException):
    """The HTTP form of an :class:`AuthError`; ``error`` keeps the original for handlers."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(
            status_code=error.status_code,
            detail={"code": error.code, "message": error.detail},
            headers=error.headers,
        )
        self.error = error


class CognitoAuth(SecurityBase):
    """A FastAPI dependency that gives route handlers the verified :class:`Principal`.

    ``Depends(auth)`` authenticates; ``Depends(auth.require_groups("admin"))``,
    ``Depends(auth.require_scopes("x"))`` and, with a roles source,
    ``Depends(auth.require_roles("admin"))`` also authorize. All of them
    work on ``@app.websocket`` routes as well. With ``auto_error=False`` a
    request without credentials gets ``None`` instead of a 401 (a bad token
    is still refused).
    """

    def __init__(
        self,
        settings: PoolSettings | None = None,
        *,
        verifier: TokenVerifier | None = None,
        auto_error: bool = True,
        scheme_name: str = "CognitoJWT",
        async_transport: httpx.AsyncBaseTransport | None = None,
        jwks: Mapping[str, JwksDocument] | None = None,
        check: Check | None = None,
        revocations: RevocationBackend | None = None,
        observer: Observer | None = None,
        refusal_log_level: int = logging.INFO,
        roles: RolesCache | RolesSource | None = None,
        websocket_query_param: str | None = None,
        websocket_denial: Literal["close", "response"] = "close",
    ) -> None:
        """Protect routes with the pools ``settings`` names.

        ``settings`` may be a function returning the settings: it is then
        called at start-up (or by the first request), not at import, so an
        app module can be imported, and its tests collected, on a machine
        without the real pool's config. ``async_transport`` to
        ``refusal_log_level`` are passed to :class:`TokenVerifier`.

        ``roles`` is the application's roles source, ``source(principal)``
        returning role names, sync or async, for :meth:`require_roles`,
        cached with :class:`RolesCache`'s defaults; pass a
        ``RolesCache(source, ttl_seconds=..., ...)`` to choose its bounds.

        ``websocket_query_param`` (off by default) also takes a WebSocket's
        token from that query parameter, for clients that can send neither
        a header nor a subprotocol. Off because URLs, query included, end up
        in access logs, proxies and browser history.

        ``websocket_denial`` says how a refused WebSocket handshake is
        declined; it never opens either way. ``"close"`` (the default)
        closes it before accepting, which every ASGI server answers with an
        HTTP 403 and which is all a browser can see anyway. ``"response"``
        sends the refusal's own status, ``WWW-Authenticate`` and body, for
        non-browser clients, on servers with the WebSocket Denial Response
        extension (others still get ``"close"``). Not the default because
        uvicorn's default WebSocket implementation (websockets-sansio, up to
        at least 0.54) logs a spurious ERROR after every such response.
        """
        if verifier is None and settings is None:
            raise TypeError("CognitoAuth needs settings or a verifier")
        self._settings_source = settings
        self._verifier_options: dict[str, Any] = {
            "async_transport": async_transport,
            "jwks": jwks,
            "check": check,
            "revocations": revocations,
            "observer": observer,
            "refusal_log_level": refusal_log_level,
        }
        #: None until first needed when settings come from a function.
        self._verifier: TokenVerifier | None = verifier
        if verifier is None and not callable(settings):
            self._verifier = self._build_verifier()
        #: The roles source's cache; None without a source. Read at every
        #: request, so it may be replaced after the routes are defined (tests do).
        self.roles: RolesCache | None = (
            roles if roles is None or isinstance(roles, RolesCache) else RolesCache(roles)
        )
        self.websocket_query_param = websocket_query_param
        if websocket_denial not in ("close", "response"):
            raise ValueError('websocket_denial must be "close" or "response"')
        self.websocket_denial = websocket_denial
        self.auto_error = auto_error
        self.scheme_name = scheme_name
        self.model = HTTPBearerModel(bearerFormat="JWT", description=_DESCRIPTION)

    def _build_verifier(self) -> TokenVerifier:
        source = self._settings_source
        assert source is not None
        settings = source() if callable(source) else source
        return TokenVerifier(settings, **self._verifier_options)

    def verifier_for(self, settings: AuthSettings | Sequence[AuthSettings]) -> TokenVerifier:
        """A verifier for other pools that keeps this dependency's ``check``, ``revocations``,
        ``observer`` and log level: what tests swap in to trust a local issuer.

        Keys handed in (``jwks``) and transports belong to the real pools and are not carried over.
        """
        options = {
            name: value
            for name, value in self._verifier_options.items()
            if name not in ("jwks", "async_transport")
        }
        return TokenVerifier(settings, **options)

    @property
    def verifier(self) -> TokenVerifier:
        """The verifier behind this dependency, built from the settings on first use."""
        verifier = self._verifier
        if verifier is None:
            verifier = self._verifier = self._build_verifier()
        return verifier

    @verifier.setter
    def verifier(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def extract_token(self, connection: HTTPConnection) -> str | None:
        """The raw ``Authorization`` value, or None when absent. Override to read elsewhere.

        On a WebSocket handshake without that header: the token offered
        after the ``bearer`` subprotocol, else the opted-in query parameter.
        """
        # Read from the ASGI scope rather than ``connection.headers``: same
        # answer (servers send lower-case names; the first one wins), without
        # building a Headers object on every request.
        scope = connection.scope
        for name, raw in scope["headers"]:
            if name == b"authorization":
                value: str = raw.decode("latin-1")
                return value
        if scope["type"] == "websocket":
            return websocket_token(scope, self.websocket_query_param)
        return None

    async def __call__(self, connection: HTTPConnection) -> Principal | None:
        token = self.extract_token(connection)
        if (self._verifier is None or not self.auto_error) and not _has_credentials(token):
            # "No credentials" needs no pool, so it is answered before the
            # settings are read: a "no token gets 401" test passes on a
            # machine without the real config. Where login is optional it
            # lets the request through, which no verifier should log as refused.
            if not self.auto_error:
                return None
            raise self._refusal(connection, self._no_credentials())
        try:
            # The verifier logs every refusal once, "no token" included.
            principal = await self.verifier.verify(token)  # type: ignore[arg-type]  # None: MissingToken
        except MissingToken as error:
            # No header, a blank one, or "Bearer" alone: the verifier decides
            # what counts as no credentials, and auto_error what that means.
            if not self.auto_error:
                return None
            raise self._refusal(connection, error) from None
        except AuthError as error:
            raise self._refusal(connection, error) from None
        # The scope's type first: an isinstance test against Starlette's
        # classes goes through ABCMeta, on every HTTP request.
        if (
            connection.scope["type"] == "websocket"
            and isinstance(connection, WebSocket)
            and self.ends_websockets_with_token
        ):
            self._end_with_token(connection, principal)
        return principal

    # -- WebSockets that end with their token (see _websocket) ------------------------

    #: Close an open WebSocket when its token expires (4401) or is revoked (4403). Set False on
    #: an instance to leave open sockets to the route: they then outlive their token.
    ends_websockets_with_token: bool = True

    def _end_with_token(self, websocket: WebSocket, principal: Principal) -> None:
        # The moment an HTTP request with this token starts getting token_expired: exp plus leeway.
        verifier = self.verifier
        leeway = next(
            (
                pool.settings.leeway_seconds
                for pool in verifier.pools
                if pool.user_pool_id == principal.user_pool_id
            ),
            0.0,
        )
        end_with_token(
            websocket,
            principal,
            verifier.revocations.mirror,
            expires_at=principal.expires_at.timestamp() + leeway,
        )

    def require_groups(self, *groups: str) -> Callable[..., Awaitable[Principal]]:
        """A dependency that also requires membership in at least one of ``groups``."""
        return self._authorizing("group", groups, self, Principal.is_in_any_group, MissingGroup)

    def require_scopes(self, *scopes: str) -> Callable[..., Awaitable[Principal]]:
        """A dependency that also requires every one of ``scopes`` (access tokens)."""
        return self._authorizing("scope", scopes, self, Principal.has_all_scopes, MissingScope)

    def require_roles(self, *roles: str) -> Callable[..., Awaitable[RolesPrincipal]]:
        """A dependency that requires at least one of the application ``roles``; gives a :class:`RolesPrincipal`.

        The roles come from the ``roles`` source given to this object,
        through its cache. A source that fails gives a 503 ``roles_unavailable``.
        """
        return self._authorizing("role", roles, self.with_roles(), RolesPrincipal.has_any_role, MissingRole)

    def with_roles(self) -> Callable[..., Awaitable[RolesPrincipal]]:
        """A dependency that gives the principal with its roles, requiring none: for routes that vary by role."""
        self._roles_cache()  # at route definition, not at the first request: a missing source is a wiring bug

        async def principal_with_roles(
            connection: HTTPConnection, principal: Principal | None = Depends(self)
        ) -> RolesPrincipal:
            principal = self._required(connection, principal)
            try:
                # The cache of the moment, not of route definition: tests replace it.
                roles = await self._roles_cache().roles_of(principal)
            except AuthError as error:
                raise self._refusal(connection, error) from None
            return RolesPrincipal.of(principal, roles)

        return principal_with_roles

    def _authorizing(
        self,
        kind: str,
        names: tuple[str, ...],
        base: Callable[..., Awaitable[_P | None]],
        allows: Callable[[_P, frozenset[str]], bool],
        refusal: Callable[[], InsufficientPermissions],
    ) -> Callable[..., Awaitable[_P]]:
        """The dependency behind every ``require_*``: ``base``'s principal, if ``allows`` it ``names``."""
        if not names:
            raise ValueError(f"require_{kind}s needs at least one {kind}")
        wanted = frozenset(names)

        async def authorized(connection: HTTPConnection, principal: _P | None = Depends(base)) -> _P:
            principal = self._required(connection, principal)
            if not allows(principal, wanted):
                raise self._forbidden(connection, refusal(), principal)
            return principal

        return authorized

    def _roles_cache(self) -> RolesCache:
        cache = self.roles
        if cache is None:
            raise TypeError("roles need a source: CognitoAuth(..., roles=source)")
        return cache

    async def startup(self) -> None:
        """Resolve the settings, prefetch every pool's JWKS and load the revocation list.

        A failed key fetch is logged and the first request fetches again.
        """
        await self.verifier.start()

    def health(self) -> AuthHealth:
        """Readiness of the verifier behind this dependency (see :meth:`TokenVerifier.health`)."""
        return self.verifier.health()

    async def shutdown(self) -> None:
        """Close the verifier's HTTP clients."""
        await self.verifier.aclose()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Use as ``FastAPI(lifespan=auth.lifespan)``: prefetch at start, clean up at stop."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    def _refusal(
        self, connection: HTTPConnection, error: AuthError
    ) -> AuthHTTPException | AuthWebSocketException:
        """The exception that answers ``error`` on this connection.

        An HTTP request gets the HTTP refusal (status, body,
        ``WWW-Authenticate``); so does a WebSocket handshake when
        ``websocket_denial="response"`` and the server can send one. Any
        other handshake is closed before it is accepted.
        """
        if connection.scope["type"] == "websocket" and not (
            self.websocket_denial == "response" and can_send_denial(connection.scope)
        ):
            return AuthWebSocketException(error)
        return AuthHTTPException(error)

    def _forbidden(
        self, connection: HTTPConnection, error: InsufficientPermissions, principal: Principal
    ) -> AuthHTTPException | AuthWebSocketException:
        # Logged like a refusal: the code and the pool; no claim value, no token text.
        logger.info("access_denied code=%s pool=%s", error.code, principal.user_pool_id)
        return self._refusal(connection, error)

    def _required(self, connection: HTTPConnection, principal: _P | None) -> _P:
        # With auto_error=False the base dependency yields None; authorization
        # still needs someone to authorize.
        if principal is None:
            # auto_error=False let an anonymous request through the base
            # dependency; a route that authorizes refuses it, and says so.
            raise self._refusal(connection, self._no_credentials())
        return principal

    def _no_credentials(self) -> MissingToken:
        """A refusal for a request with no credentials, reported as the verifier reports one."""
        error = MissingToken()
        logger.log(self._verifier_options["refusal_log_level"], "token_refused code=%s", error.code)
        observer: Observer | None = self._verifier_options["observer"]
        if observer is not None:
            observer.verification("", error.code, False)
        return error


def _has_credentials(token: str | None) -> bool:
    """Whether the header value holds a token at all, by the verifier's own rule (:func:`strip_bearer`)."""
    if token is None:
        return False
    try:
        strip_bearer(token)
    except MissingToken:
        return False
    return True
