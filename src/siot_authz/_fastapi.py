"""FastAPI integration: read the header, call the verifier, translate errors to HTTP.

No verification logic lives here. The dependency is an ``async`` callable,
so it runs on the event loop in async and sync routes alike and never takes
a threadpool slot.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from ._errors import AuthError, InsufficientPermissions, MissingGroup, MissingScope, MissingToken
from ._health import AuthHealth
from ._key_cache import JwksDocument
from ._observe import Observer
from ._principal import Principal
from ._settings import AuthSettings
from ._verifier import Check, TokenVerifier
from .revocation import RevocationBackend

__all__ = ["AuthHTTPException", "CognitoAuth", "PoolSettings"]

logger = logging.getLogger("siot_authz")

#: One pool's settings, several pools' settings, or a function returning either, called at start-up.
PoolSettings = AuthSettings | Sequence[AuthSettings] | Callable[[], AuthSettings | Sequence[AuthSettings]]

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
    ) -> None:
        """Protect routes with the pools ``settings`` names.

        ``settings`` may be a function returning the settings: it is then
        called at start-up (or by the first request), not at import, so an
        app module can be imported, and its tests collected, on a machine
        without the real pool's config. The other keywords are passed to
        :class:`TokenVerifier`.
        """
        if verifier is None and settings is None:
            raise TypeError("CognitoAuth needs settings or a verifier")
        self._settings_source = settings
        self._verifier_options = {
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
        self.auto_error = auto_error
        self.scheme_name = scheme_name
        self.model = HTTPBearerModel(bearerFormat="JWT", description=_DESCRIPTION)

    def _build_verifier(self) -> TokenVerifier:
        source = self._settings_source
        assert source is not None
        settings = source() if callable(source) else source
        return TokenVerifier(settings, **self._verifier_options)  # type: ignore[arg-type]

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
        if token is None and not self.auto_error:
            return None
        try:
            # The verifier logs every refusal once, "no token" included.
            return await self.verifier.verify(token)  # type: ignore[arg-type]  # None: MissingToken
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
                raise _forbidden(MissingGroup(), principal)
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
                raise _forbidden(MissingScope(), principal)
            return principal

        return principal_with_scopes

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


def _forbidden(error: InsufficientPermissions, principal: Principal) -> AuthHTTPException:
    # Logged like a refusal: the code and the pool; no claim value, no token text.
    logger.info("access_denied code=%s pool=%s", error.code, principal.user_pool_id)
    return AuthHTTPException(error)


def _required(principal: Principal | None) -> Principal:
    # With auto_error=False the base dependency yields None; authorization
    # still needs someone to authorize.
    if principal is None:
        raise AuthHTTPException(MissingToken())
    return principal
