"""FastAPI integration: read the header, call the verifier, translate errors to HTTP.

No verification logic lives here. The dependency is an ``async`` callable,
so it runs on the event loop in async and sync routes alike and never takes
a threadpool slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from ._errors import AuthError, MissingGroup, MissingScope, MissingToken
from ._principal import Principal
from ._settings import AuthSettings
from ._verifier import TokenVerifier

__all__ = ["AuthHTTPException", "CognitoAuth"]

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

    ``Depends(auth)`` authenticates; ``Depends(auth.require_groups("admin"))``
    and ``Depends(auth.require_scopes("x"))`` also authorize. With
    ``auto_error=False`` a request without credentials gets ``None`` instead
    of a 401 (a bad token is still refused).
    """

    def __init__(
        self,
        settings: AuthSettings | None = None,
        *,
        verifier: TokenVerifier | None = None,
        auto_error: bool = True,
        scheme_name: str = "CognitoJWT",
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if verifier is None:
            if settings is None:
                raise TypeError("CognitoAuth needs settings or a verifier")
            verifier = TokenVerifier(settings, async_transport=async_transport)
        self.verifier = verifier
        self.auto_error = auto_error
        self.scheme_name = scheme_name
        self.model = HTTPBearerModel(bearerFormat="JWT", description=_DESCRIPTION)

    def extract_token(self, connection: HTTPConnection) -> str | None:
        """The raw ``Authorization`` value, or None when absent. Override to read elsewhere."""
        # Read from the ASGI scope rather than ``connection.headers``: same
        # answer (servers send lower-case names; the first one wins), without
        # building a Headers object on every request.
        for name, raw in connection.scope["headers"]:
            if name == b"authorization":
                value: str = raw.decode("latin-1")
                return value
        return None

    async def __call__(self, connection: HTTPConnection) -> Principal | None:
        token = self.extract_token(connection)
        try:
            if token is None:
                raise MissingToken()
            return await self.verifier.verify(token)
        except MissingToken as error:
            # No header, a blank one, or "Bearer" alone: the verifier decides
            # what counts as no credentials, and auto_error what that means.
            if not self.auto_error:
                return None
            raise AuthHTTPException(error) from None
        except AuthError as error:
            raise AuthHTTPException(error) from None

    def require_groups(self, *groups: str) -> Callable[..., Awaitable[Principal]]:
        """A dependency that also requires membership in at least one of ``groups``."""
        if not groups:
            raise ValueError("require_groups needs at least one group")
        wanted = frozenset(groups)

        async def principal_in_group(
            principal: Principal | None = Depends(self),
        ) -> Principal:
            principal = _required(principal)
            if not principal.is_in_any_group(wanted):
                raise AuthHTTPException(MissingGroup())
            return principal

        return principal_in_group

    def require_scopes(self, *scopes: str) -> Callable[..., Awaitable[Principal]]:
        """A dependency that also requires every one of ``scopes`` (access tokens)."""
        if not scopes:
            raise ValueError("require_scopes needs at least one scope")
        wanted = frozenset(scopes)

        async def principal_with_scopes(
            principal: Principal | None = Depends(self),
        ) -> Principal:
            principal = _required(principal)
            if not principal.has_all_scopes(wanted):
                raise AuthHTTPException(MissingScope())
            return principal

        return principal_with_scopes

    async def startup(self) -> None:
        """Prefetch the JWKS; a failure is logged and the first request fetches again."""
        await self.verifier.prefetch()

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


def _required(principal: Principal | None) -> Principal:
    # With auto_error=False the base dependency yields None; authorization
    # still needs someone to authorize.
    if principal is None:
        raise AuthHTTPException(MissingToken())
    return principal
