"""Skipping token verification in a user's own route tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI

from .._fastapi import CognitoAuth
from .._principal import Principal

__all__ = ["make_principal", "override_principal"]


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
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return Principal(
        sub=f"local-{username}",
        username=username,
        groups=groups,
        scopes=scopes,
        token_use="access" if token_use == "access" else "id",
        client_id=client_id,
        email=email,
        issuer="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_LocalPool1",
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        claims={"sub": f"local-{username}"},
    )


@contextmanager
def override_principal(app: FastAPI, auth: CognitoAuth, principal: Principal) -> Iterator[Principal]:
    """Within the block, ``Depends(auth)`` in ``app`` yields ``principal`` without a token.

    ``require_groups`` and ``require_scopes`` still apply their checks to it,
    so authorization logic stays under test.
    """

    async def fixed_principal() -> Principal:
        return principal

    previous = app.dependency_overrides.get(auth)
    app.dependency_overrides[auth] = fixed_principal
    try:
        yield principal
    finally:
        if previous is None:
            app.dependency_overrides.pop(auth, None)
        else:
            app.dependency_overrides[auth] = previous
