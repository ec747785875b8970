"""The Cognito claim rules, applied only after the signature has verified.

Each claim is checked for its JSON type as well as its value: a string
``exp`` or a ``cognito:groups`` that is not a list of strings is refused,
never coerced, because coercion is where two readers of one token start to
disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ._errors import (
    ClaimTypeInvalid,
    ClientNotAllowed,
    IssuerInvalid,
    TokenExpired,
    TokenNotYetValid,
    TokenUseMismatch,
)
from ._principal import Principal, claims_from_rules, principal_of_fields
from ._settings import AuthSettings

__all__ = ["ClaimRules"]

# datetime cannot represent times past year 9999; such a claim is refused, not crashed on.
_LATEST_TIMESTAMP = 253_402_300_799


def _timestamp(claims: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and name not in claims and not required:
        return None
    # bool is an int subclass; `true` is not a time.
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= _LATEST_TIMESTAMP:
        raise ClaimTypeInvalid(f"The '{name}' claim is missing or not a valid time.")
    return float(value)


def _is_time(value: Any) -> bool:
    """What _timestamp accepts: a number of seconds, not a bool, from 0 to year 9999."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= _LATEST_TIMESTAMP


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise ClaimTypeInvalid(f"The '{name}' claim is missing or not a string.")
    return value


def _optional_string(claims: dict[str, Any], name: str) -> str | None:
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, str):
        raise ClaimTypeInvalid(f"The '{name}' claim is not a string.")
    return value


def _string_list(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    if name not in claims:
        return ()
    value = claims[name]
    if not isinstance(value, list) or not (
        _ONLY_STR.issuperset(map(type, value)) or all(isinstance(item, str) for item in value)
    ):
        raise ClaimTypeInvalid(f"The '{name}' claim is not a list of strings.")
    return tuple(value)


_ONLY_STR = frozenset([str])


class ClaimRules:
    """The claim checks for one configured pool, precomputed once per verifier."""

    def __init__(self, settings: AuthSettings) -> None:
        self._user_pool_id = settings.user_pool_id
        # Each accepted value maps to the configured string itself: the
        # principal holds that one shared object instead of the token's copy,
        # so the collector's walk over cached principals finds it in the CPU
        # cache instead of touching one more object per principal.
        self._issuers = {issuer: issuer for issuer in settings.issuers}
        self._client_ids = {client_id: client_id for client_id in settings.client_ids}
        self._token_use = settings.token_use
        self._leeway = settings.leeway_seconds

    def check(self, claims: dict[str, Any], now: float, containers: int = -1) -> Principal:
        """Apply every rule to verified ``claims`` and build the principal.

        ``containers`` is the parser's bound on the arrays and objects in
        ``claims`` (:attr:`ParsedToken.containers`; -1: not counted).
        """
        # Who issued it, and for what, before when: a token from another pool
        # should say so rather than merely "expired".
        claimed_issuer = claims.get("iss")
        issuer = self._issuers.get(claimed_issuer) if isinstance(claimed_issuer, str) else None
        if issuer is None:
            raise IssuerInvalid(iss=claimed_issuer[:200] if isinstance(claimed_issuer, str) else "-")

        token_use = claims.get("token_use")
        if token_use not in ("id", "access"):
            raise TokenUseMismatch("The 'token_use' claim is missing or unknown.")
        if self._token_use != "any" and token_use != self._token_use:
            raise TokenUseMismatch(f"An {self._token_use} token is required; an {token_use} token was sent.")
        token_use = "id" if token_use == "id" else "access"  # the shared literal, not the token's copy

        if token_use == "id":
            # ID tokens name their app client in 'aud'; Cognito uses a single string.
            client_id = claims.get("aud")
            username_claim = "cognito:username"
        else:
            # Access tokens have no 'aud'; their app client is in 'client_id'.
            # Machine-to-machine (client_credentials) tokens name no user at
            # all: the app client itself is the caller.
            client_id = claims.get("client_id")
            username_claim = "username" if "username" in claims else "client_id"
        client_id = self._client_ids.get(client_id) if isinstance(client_id, str) else None
        if client_id is None:
            raise ClientNotAllowed()

        # Each value is first tested for its plain JSON type, inline (this
        # runs for every new token); anything else goes to the helper that
        # accepts or refuses it exactly as before (a str subclass, a bool).
        expires_at: float = claims.get("exp")  # type: ignore[assignment]  # checked on the next lines
        is_plain = type(expires_at) in _PLAIN_NUMBERS and 0 <= expires_at <= _LATEST_TIMESTAMP
        if not is_plain and not _is_time(expires_at):
            raise ClaimTypeInvalid("The 'exp' claim is missing or not a valid time.")
        issued_at: float = claims.get("iat")  # type: ignore[assignment]  # checked on the next lines
        is_plain = type(issued_at) in _PLAIN_NUMBERS and 0 <= issued_at <= _LATEST_TIMESTAMP
        if not is_plain and not _is_time(issued_at):
            raise ClaimTypeInvalid("The 'iat' claim is missing or not a valid time.")
        not_before = _timestamp(claims, "nbf", required=False) if "nbf" in claims else None
        leeway = self._leeway
        if now >= expires_at + leeway:
            raise TokenExpired()
        if issued_at > now + leeway:
            raise TokenNotYetValid("The token was issued in the future.")
        if not_before is not None and not_before > now + leeway:
            raise TokenNotYetValid()

        scope = claims.get("scope")
        if type(scope) is not str and (scope is not None or "scope" in claims):
            scope = _optional_string(claims, "scope")
        sub = claims.get("sub")
        if type(sub) is not str or not sub:
            sub = _string(claims, "sub")
        username = claims.get(username_claim)
        if type(username) is not str or not username:
            username = _string(claims, username_claim)
        listed = claims.get("cognito:groups")
        if type(listed) is list and _ONLY_STR.issuperset(map(type, listed)):
            groups: tuple[str, ...] = _shared_groups(tuple(listed))
        else:
            groups = _string_list(claims, "cognito:groups")
        email = claims.get("email")
        if type(email) is not str and (email is not None or "email" in claims):
            email = _optional_string(claims, "email")
        # Every value below has its field's exact type, proved by the rules
        # above, so the principal is built without validating it again
        # (one dict, every field in field order: one call, not twelve arguments).
        return principal_of_fields(
            {
                "sub": sub,
                "username": username,
                "groups": groups,
                "scopes": tuple(scope.split()) if scope else (),
                "token_use": token_use,
                "client_id": client_id,
                "email": email,
                "issuer": issuer,
                "user_pool_id": self._user_pool_id,
                "issued_at": _utc(issued_at),
                "expires_at": _utc(expires_at),
                "claims": claims_from_rules(claims, groups, containers),
            }
        )


_PLAIN_NUMBERS = frozenset([int, float])


# A pool's users share a few sets of groups; each set is kept once, and every
# principal with it holds that one tuple (in its fields and its claims): a
# few hundred bytes less per cached token, and one object fewer per cached
# principal for the collector to touch. Bounded in sets and in names per set,
# so what it holds stays small in bytes too (at most 256 sets of 32 names: about
# 1.5 MiB with Cognito's longest, 128-character group names, where 1,024 sets of
# any size held 18 MiB at worst), and emptied when full. A larger set is
# simply not shared. Tuples of strings are immutable, so sharing them is safe.
_groups_seen: dict[tuple[str, ...], tuple[str, ...]] = {}
_MAX_GROUP_SETS = 256
_MAX_SHARED_GROUP_NAMES = 32


def _shared_groups(groups: tuple[str, ...]) -> tuple[str, ...]:
    shared = _groups_seen.get(groups)
    if shared is None:
        if len(groups) > _MAX_SHARED_GROUP_NAMES:
            return groups
        if len(_groups_seen) >= _MAX_GROUP_SETS:
            _groups_seen.clear()
        shared = _groups_seen[groups] = groups
    return shared


# Tokens verified in the same second share their iat and exp; in a login
# storm most do. One datetime per distinct time saves building two per
# token. Bounded, and emptied when full (datetimes are immutable, so sharing
# them is safe).
_datetimes: dict[float, datetime] = {}
_MAX_DATETIMES = 4096


def _utc(timestamp: float) -> datetime:
    # An int and the float of equal value are one dict key, so the claim's
    # own number is looked up as it is.
    moment = _datetimes.get(timestamp)
    if moment is None:
        if len(_datetimes) >= _MAX_DATETIMES:
            _datetimes.clear()
        moment = _datetimes[timestamp] = datetime.fromtimestamp(float(timestamp), UTC)
    return moment
