"""Pointing a user's FastAPI app at test identities: a fixed principal, or a local issuer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from .._fastapi import CognitoAuth
from .._principal import Principal
from .._settings import AuthSettings

__all__ = ["make_principal", "override_principal", "override_settings"]


def make_principal(
    username: str = "alice",
    *,
    groups: tuple[str, ...] = (),
    scopes: tuple[str, ...] = (),
    token_use: str = "id",
    client_id: str = "siotlocalclient0000000000",
    email: str | None = None,
) -> Principal:
    """A plausible principal for tests, without any token behind it."""
    now = datetime.now(UTC).replace(microsecond=0)
    return Principal(
        sub=f"local-{username}",
        username=username,
        groups=groups,
        scopes=scopes,
        token_use="access" if token_use == "access" else "id",
        client_id=client_id,
        email=email,
        issuer="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_LocalPool1",
        user_pool_id="us-east-1_LocalPool1",
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        claims={"sub": f"local-{username}"},
    )


@contextmanager
def _overridden(app: FastAPI, auth: CognitoAuth, replacement: Callable[..., Any]) -> Iterator[None]:
    # Restore whatever was there before, so overrides nest and tests cannot leak into each other.
    had_previous = auth in app.dependency_overrides
    previous = app.dependency_overrides.get(auth)
    app.dependency_overrides[auth] = replacement
    try:
        yield
    finally:
        if had_previous:
            app.dependency_overrides[auth] = previous  # type: ignore[assignment]
        else:
            app.dependency_overrides.pop(auth, None)


@contextmanager
def override_principal(app: FastAPI, auth: CognitoAuth, principal: Principal) -> Iterator[Principal]:
    """Within the block, ``Depends(auth)`` in ``app`` yields ``principal`` without a token.

    ``require_groups`` and ``require_scopes`` still apply their checks to it,
    so authorization logic stays under test.
    """

    async def fixed_principal() -> Principal:
        return principal

    with _overridden(app, auth, fixed_principal):
        yield principal


@contextmanager
def override_settings(app: FastAPI, auth: CognitoAuth, settings: AuthSettings) -> Iterator[CognitoAuth]:
    """Within the block, ``Depends(auth)`` in ``app`` verifies tokens against ``settings`` instead.

    Use it with ``LocalIssuer.settings()`` to send real minted tokens through
    the whole verification pipeline of an app built for a real user pool.
    ``require_groups`` and ``require_scopes`` still apply, and the app's
    lifespan prefetches keys from ``settings``, not from the real pool.
    """
    local_auth = CognitoAuth(settings, auto_error=auth.auto_error)
    # The app's own lifespan (``auth.lifespan``) prefetches keys through
    # ``auth.verifier``: swapping it too keeps a test from reaching the real pool.
    real_verifier = auth.verifier
    auth.verifier = local_auth.verifier
    try:
        with _overridden(app, auth, local_auth):
            yield local_auth
    finally:
        auth.verifier = real_verifier
        local_auth.verifier.close()
