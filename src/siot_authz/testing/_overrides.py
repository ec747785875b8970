"""Pointing a user's FastAPI app at test identities: a fixed principal, a local issuer, fixed roles.

Each override is undone when its block ends, and the app's roles cache is
emptied as it is: roles looked up for a test identity must not carry over
to the next test, where the same user may hold other roles.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from .._fastapi import CognitoAuth
from .._principal import Principal
from .._roles import RolesCache, RolesSource
from .._settings import AuthSettings
from .._verifier import TokenVerifier
from ._issuer import LocalIssuer

__all__ = ["make_principal", "override_principal", "override_roles", "override_settings"]

#: What a test gives as roles: role names by username, or a roles source of its own.
RolesOverride = Mapping[str, Iterable[str]] | RolesSource


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
def _verifier_swapped(auth: CognitoAuth, verifier: TokenVerifier) -> Iterator[None]:
    # The app's lifespan starts and stops ``auth.verifier``. Saving and
    # restoring the private slot, not the property, keeps settings given as
    # a function unresolved: a test never reads the real pool's config.
    saved = auth._verifier
    auth._verifier = verifier
    try:
        yield
    finally:
        auth._verifier = saved


@contextmanager
def _roles_forgotten(auth: CognitoAuth) -> Iterator[None]:
    # Emptied on the way in and out: roles cached for a test identity (the
    # same pool and sub in every test) would otherwise outlive the test.
    if auth.roles is not None:
        auth.roles.clear()
    try:
        yield
    finally:
        if auth.roles is not None:
            auth.roles.clear()


@functools.cache
def _stand_in_issuer() -> LocalIssuer:
    # One per process: it only has to answer the lifespan's key prefetch.
    return LocalIssuer(user_pool_id="us-east-1_Overridden0", client_id="siotoverriddenprincipal")


def _stand_in_verifier() -> TokenVerifier:
    """A verifier for a pool no token comes from, with its keys in process: never the network."""
    issuer = _stand_in_issuer()
    return TokenVerifier(
        issuer.settings(for_transport=True),
        async_transport=issuer.transport(),
        sync_transport=issuer.transport(),
    )


@contextmanager
def override_principal(app: FastAPI, auth: CognitoAuth, principal: Principal) -> Iterator[Principal]:
    """Within the block, ``Depends(auth)`` in ``app`` yields ``principal`` without a token.

    ``require_groups``, ``require_scopes`` and ``require_roles`` still apply
    their checks to it, so authorization logic stays under test (roles come
    from the app's source, or from :func:`override_roles`). The app's
    lifespan meanwhile starts a stand-in verifier, so the real pool is
    neither configured nor contacted: the app's settings function is not called.
    """

    async def fixed_principal() -> Principal:
        return principal

    stand_in = _stand_in_verifier()
    try:
        with (
            _verifier_swapped(auth, stand_in),
            _overridden(app, auth, fixed_principal),
            _roles_forgotten(auth),
        ):
            yield principal
    finally:
        stand_in.close()


@contextmanager
def override_settings(app: FastAPI, auth: CognitoAuth, settings: AuthSettings) -> Iterator[CognitoAuth]:
    """Within the block, ``Depends(auth)`` in ``app`` verifies tokens against ``settings`` instead.

    Use it with ``LocalIssuer.settings()`` to send real minted tokens through
    the whole verification pipeline of an app built for a real user pool.
    ``require_groups``, ``require_scopes`` and ``require_roles`` still apply,
    and so do the app's ``check``, revocations and observer; the app's
    lifespan prefetches keys from ``settings``. The app's own settings are
    never resolved: when they come from a function, it is not called.
    """
    # A copy of the app's own dependency (auto_error, WebSocket options, roles,
    # any overridden method), with its check, revocations and observer; only
    # the pools change.
    local_auth = copy.copy(auth)
    local_auth.verifier = auth.verifier_for(settings)
    try:
        with (
            _verifier_swapped(auth, local_auth.verifier),
            _overridden(app, auth, local_auth),
            _roles_forgotten(auth),
        ):
            yield local_auth
    finally:
        local_auth.verifier.close()


@contextmanager
def override_roles(auth: CognitoAuth, roles: RolesOverride) -> Iterator[RolesCache]:
    """Within the block, ``auth.require_roles`` and ``auth.with_roles`` get their roles from ``roles``.

    ``roles`` maps usernames to role names (``{"ada": ["admin"]}``; anyone
    else has none), or is a roles source like the app's own. It works on
    routes already defined, and the app's own source is not asked. Each
    block starts with an empty cache, so roles never carry over from an
    earlier block or test.
    """
    source = _roles_by_username(roles) if isinstance(roles, Mapping) else roles
    saved = auth.roles
    auth.roles = RolesCache(source)
    try:
        yield auth.roles
    finally:
        auth.roles = saved
        if saved is not None:
            saved.clear()


def _roles_by_username(roles: Mapping[str, Iterable[str]]) -> RolesSource:
    # Copied now: the mapping is what the test said at this point.
    table = {username: _names(username, names) for username, names in roles.items()}

    async def roles_of(principal: Principal) -> tuple[str, ...]:
        # Async, so no thread is needed to read a dict.
        return table.get(principal.username, ())

    return roles_of


def _names(username: str, names: Iterable[str]) -> tuple[str, ...]:
    # {"ada": "admin"} would otherwise grant the roles "a", "d", "m", "i" and "n".
    if isinstance(names, str):
        raise TypeError(f"roles of {username!r} must be a list of role names, not the string {names!r}")
    return tuple(names)
