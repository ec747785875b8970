"""A user revocation covers every token issued before it, as far as the accepted clock skew allows.

The verifier accepts an ``iat`` up to the pool's leeway ahead of its own
clock, so an issuer whose clock runs fast can mint, just before a sign-out,
a token whose ``iat`` lies after it. The entry's boundary is shifted by the
leeway to cover it (issue 19 §3).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fake_clock import FakeClock
from siot_authz import AuthError, TokenVerifier
from siot_authz._revoking import build_revocation, revocation_for
from siot_authz.testing import LocalIssuer

NOW = 1_900_000_000.0
LEEWAY = 5


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def verifier(issuer: LocalIssuer, clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(
        issuer.settings(leeway_seconds=LEEWAY), jwks={issuer.user_pool_id: issuer.jwks()}, clock=clock
    )


def _outcome(verifier: TokenVerifier, token: str) -> str:
    try:
        verifier.verify_sync(token)
    except AuthError as error:
        return error.code
    return "ok"


@pytest.mark.parametrize("face", ["async", "sync"])
def test_a_sign_out_covers_a_token_whose_iat_is_ahead_of_this_hosts_clock(
    issuer: LocalIssuer, verifier: TokenVerifier, clock: FakeClock, face: str
) -> None:
    """The issuer's clock runs 3 s fast: a token minted at login carries an iat 3 s in our future."""
    iat = int(NOW) + 3
    token = issuer.mint(iat=iat, auth_time=iat, exp=iat + 3600)
    assert _outcome(verifier, token) == "ok"  # within the 5 s leeway: accepted, and cached

    clock.now = NOW + 1  # the user signs out a second later, by this host's clock
    sub = issuer.claims()["sub"]
    if face == "sync":
        verifier.revoke_user_sync(issuer.user_pool_id, sub)
    else:
        import asyncio

        asyncio.run(verifier.revoke_user(issuer.user_pool_id, sub))

    assert _outcome(verifier, token) == "token_revoked"


@pytest.mark.parametrize(
    ("iat_after_sign_out", "expected"),
    [
        (-600, "token_revoked"),
        (0, "token_revoked"),
        (LEEWAY - 1, "token_revoked"),  # could have been minted before it, by a fast clock
        (LEEWAY, "token_revoked"),  # the boundary's own second: refused, as any same-second token
        (LEEWAY + 1, "ok"),  # a later login
    ],
)
def test_the_boundary_is_the_sign_out_plus_the_leeway(
    issuer: LocalIssuer, verifier: TokenVerifier, clock: FakeClock, iat_after_sign_out: int, expected: str
) -> None:
    entry = verifier.revoke_user_sync(issuer.user_pool_id, issuer.claims()["sub"], before=NOW)
    iat = int(NOW) + iat_after_sign_out
    clock.now = max(NOW, iat)

    assert entry.before == NOW + LEEWAY
    assert _outcome(verifier, issuer.mint(iat=iat, auth_time=iat, exp=iat + 3600)) == expected


def test_an_entry_lives_until_no_token_it_covers_can_pass_the_exp_check(issuer: LocalIssuer) -> None:
    settings = issuer.settings(leeway_seconds=LEEWAY, max_token_lifetime_seconds=3600)

    entry = revocation_for(settings, "user", "some-sub", before=None, clock=lambda: NOW)

    # The latest token covered has iat just under before + leeway, exp an hour later,
    # and passes the exp check for one more leeway.
    assert (entry.before, entry.expires_at) == (NOW + LEEWAY, NOW + LEEWAY + 3600 + LEEWAY)
    assert (entry.kind, entry.user_pool_id, entry.subject) == ("user", issuer.user_pool_id, "some-sub")


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (NOW - 60, NOW - 60 + LEEWAY),
        (datetime.fromtimestamp(NOW - 60, tz=UTC), NOW - 60 + LEEWAY),
        (None, NOW + LEEWAY),
    ],
    ids=["unix-time", "aware-datetime", "now"],
)
def test_before_may_be_a_unix_time_an_aware_datetime_or_now(
    issuer: LocalIssuer, before: float | datetime | None, expected: float
) -> None:
    settings = issuer.settings(leeway_seconds=LEEWAY)

    assert revocation_for(settings, "session", "jti", before=before, clock=lambda: NOW).before == expected


@pytest.mark.parametrize(
    ("subject", "before", "message"),
    [
        ("", None, "non-empty subject"),
        ("sub", datetime(2026, 1, 1), "timezone-aware"),
        ("sub", float("nan"), "finite"),
        ("sub", True, "finite"),
    ],
    ids=["empty-subject", "naive-datetime", "nan", "bool"],
)
def test_refuses_what_cannot_be_a_revocation(
    issuer: LocalIssuer, subject: str, before: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_revocation(
            "user",
            issuer.user_pool_id,
            subject,
            before=before,  # type: ignore[arg-type]
            clock=lambda: NOW,
            leeway_seconds=LEEWAY,
            max_token_lifetime_seconds=3600,
        )
