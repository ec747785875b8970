"""``revoke user``, ``revoke session`` and ``revocations``: record and list revocations in the shared store.

Only a store every serving process follows can take a revocation from the
command line: Redis, through ``RedisRevocations``. The in-process default
lives inside each serving process, out of reach of this one, so without
``--redis-url`` these commands explain that and exit 2 rather than record
something no service would ever see.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from .._revoking import build_revocation
from .._settings import AuthSettings, is_user_pool_id
from ..revocation import Revocation, RevocationMirror, RevocationStoreUnavailable
from ._exit import EXIT_OK, CommandFailed
from ._output import format_table, json_time, utc_iso
from ._terminal import Terminal

if TYPE_CHECKING:
    from .._principal import Principal
    from ..revocation import RevocationBackend

__all__ = [
    "add_revocations_arguments",
    "add_revoke_arguments",
    "add_store_arguments",
    "entry_json",
    "is_revoked",
    "revocation_store",
    "run_revocations",
    "run_revoke_session",
    "run_revoke_user",
    "wants_revocations",
]

_REDIS_URL_ENV = "SIOT_AUTHZ_REDIS_URL"
_REDIS_CA_FILE_ENV = "SIOT_AUTHZ_REDIS_CA_FILE"

_NO_STORE = (
    "no shared revocation store: pass --redis-url (or set SIOT_AUTHZ_REDIS_URL) with the Redis "
    "your service's RedisRevocations uses. Without Redis, revocations live in each serving "
    "process's memory (MemoryRevocations) and only that process can add them, with "
    "verifier.revoke_user() or revoke_session()."
)


def add_store_arguments(parser: argparse.ArgumentParser, *, purpose: str = "") -> None:
    """The flags naming the shared revocation store."""
    group = parser.add_argument_group("revocation store")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"the Redis your services' RedisRevocations follow{purpose} [{_REDIS_URL_ENV}]",
    )
    group.add_argument(
        "--redis-prefix",
        default="siot_authz",
        metavar="PREFIX",
        help="the key prefix they were given (default siot_authz)",
    )
    group.add_argument(
        "--redis-ca-file",
        metavar="PEM",
        help=(
            "the CA that signed a rediss:// server's certificate, when it is not in the system's "
            f"trust store [{_REDIS_CA_FILE_ENV}]"
        ),
    )


def wants_revocations(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a shared store is named, by ``--redis-url`` or ``SIOT_AUTHZ_REDIS_URL``."""
    env = os.environ if environ is None else environ
    return bool(getattr(args, "redis_url", None) or env.get(_REDIS_URL_ENV))


def revocation_store(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RevocationBackend:
    """The shared store the services follow, or a :class:`CommandFailed` saying how to name one."""
    env = os.environ if environ is None else environ
    url = args.redis_url or env.get(_REDIS_URL_ENV)
    if not url:
        raise CommandFailed(_NO_STORE)
    try:
        from ..revocation import RedisRevocations
    except ImportError:
        raise CommandFailed("--redis-url needs the redis extra: pip install 'siot-authz[redis]'") from None
    ca_file = getattr(args, "redis_ca_file", None) or env.get(_REDIS_CA_FILE_ENV) or None
    if ca_file is not None and not os.path.isfile(ca_file):
        # Not repeated: a value typed into the wrong place may be a secret (as in every usage error).
        raise CommandFailed("--redis-ca-file: no such file (the path given is not shown)")
    try:
        return RedisRevocations(url, prefix=args.redis_prefix, tls_ca_file=ca_file)
    except ValueError as exc:
        message = store_message(exc, url).replace("tls_ca_file", "--redis-ca-file")
        raise CommandFailed(f"cannot use the revocation store: {message}") from None


# Parts of a Redis URL that are its shape, not its secrets.
_URL_WORDS = {"redis", "rediss", "cluster", "sentinel", "unix"}


def store_message(error: BaseException, url: str) -> str:
    """``error``'s text, unless it quotes any part of ``url``: then a fixed sentence.

    A password pasted into a URL unencoded can make a parser (redis-py's
    included) quote a piece of it back (issue 19.1); the CLI prints none of
    it, whatever the library beneath does.
    """
    message = str(error)
    pieces = [piece for piece in re.split(r"[^A-Za-z0-9]+", url) if len(piece) >= 4]
    if any(piece in message for piece in pieces if piece.lower() not in _URL_WORDS):
        return "the Redis URL cannot be used as given (its text is not shown: it may hold a password)"
    return message


def is_revoked(store: RevocationBackend, principal: Principal) -> bool:
    """Whether the store's live entries cover ``principal``, by the rule every service enforces.

    The entries are loaded once, as a service's mirror loads them at start,
    and asked the same ``covers`` question the verifier asks on every request.
    """
    try:
        entries = store.entries_sync()
    except RevocationStoreUnavailable as exc:
        raise CommandFailed(f"cannot check revocations: {exc}") from None
    mirror = RevocationMirror()
    mirror.replace_all(entries)
    return mirror.covers(principal)


# Usage errors never repeat the value given (it may be a secret typed in the wrong place).
def _pool(value: str) -> str:
    if not is_user_pool_id(value):
        raise argparse.ArgumentTypeError("not a Cognito user pool id such as 'us-west-2_AbC123xyz'")
    return value


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("not an ISO 8601 time such as 2026-05-01T12:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("no time zone; add Z for UTC or an offset such as +02:00")
    return moment


def add_revoke_arguments(user: argparse.ArgumentParser, session: argparse.ArgumentParser) -> None:
    """The flags of ``revoke user`` and ``revoke session``."""
    for parser in (user, session):
        parser.add_argument(
            "--pool", required=True, type=_pool, help="the user pool id, e.g. us-west-2_AbC123xyz"
        )
    user.add_argument("--sub", required=True, help="the user's sub (not the username)")
    user.add_argument(
        "--before",
        type=_moment,
        metavar="ISO8601",
        help="refuse the user's tokens issued before this time (default now) plus the pool's clock "
        "leeway, e.g. 2026-05-01T12:00:00Z",
    )
    session.add_argument(
        "--origin-jti", required=True, metavar="JTI", help="the session's origin_jti (from any of its tokens)"
    )
    for parser in (user, session):
        parser.add_argument(
            "--max-token-lifetime",
            type=float,
            metavar="SECONDS",
            help="the pool's longest token lifetime, as the services are configured; the entry is "
            "kept this long [SIOT_AUTHZ_MAX_TOKEN_LIFETIME_SECONDS, default 86400]",
        )
        parser.add_argument("--json", action="store_true", help="print the recorded entry as JSON")
        add_store_arguments(parser)


def _lifetime_and_leeway(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[float, float]:
    """The pool's longest token life and its clock leeway, as the services are configured."""
    env = os.environ if environ is None else environ
    fields = AuthSettings.model_fields
    raw_lifetime = args.max_token_lifetime or env.get("SIOT_AUTHZ_MAX_TOKEN_LIFETIME_SECONDS")
    raw_leeway = env.get("SIOT_AUTHZ_LEEWAY_SECONDS")
    try:
        lifetime = (
            float(raw_lifetime) if raw_lifetime else float(fields["max_token_lifetime_seconds"].default)
        )
        leeway = float(raw_leeway) if raw_leeway else float(fields["leeway_seconds"].default)
    except ValueError:
        raise CommandFailed(
            "SIOT_AUTHZ_MAX_TOKEN_LIFETIME_SECONDS and SIOT_AUTHZ_LEEWAY_SECONDS must be numbers"
        ) from None
    if not lifetime > 0:
        raise CommandFailed("--max-token-lifetime must be positive")
    return lifetime, leeway


def _entry(
    args: argparse.Namespace, kind: Literal["user", "session"], subject: str, before: float
) -> Revocation:
    """The entry to record, built by the same function as the verifier's (boundary plus leeway, lifetime)."""
    lifetime, leeway = _lifetime_and_leeway(args)
    try:
        return build_revocation(
            kind,
            args.pool,
            subject,
            before=before,
            clock=time.time,
            leeway_seconds=leeway,
            max_token_lifetime_seconds=lifetime,
        )
    except ValueError as exc:  # an oversize subject: the message names the bound, not the value
        raise CommandFailed(str(exc)) from None


def entry_json(entry: Revocation) -> dict[str, Any]:
    """An entry as ``--json`` prints it: its times in the one JSON time form (ISO 8601, UTC)."""
    document = entry.to_json()
    document.update(before=json_time(entry.before), expires_at=json_time(entry.expires_at))
    return document


def _record(args: argparse.Namespace, terminal: Terminal, entry: Revocation) -> int:
    store = revocation_store(args)
    try:
        store.add_sync(entry)
    except RevocationStoreUnavailable as exc:
        raise CommandFailed(f"nothing was revoked: {exc}") from None
    if args.json:
        terminal.out(json.dumps(entry_json(entry), indent=2))
        return EXIT_OK
    if entry.kind == "user":
        what = (
            f"tokens of user {entry.subject} in {entry.user_pool_id} issued up to {utc_iso(entry.before)}"
            " (the time given plus the pool's clock leeway)"
        )
    else:
        what = f"tokens of session {entry.subject} in {entry.user_pool_id}"
    terminal.out(f"revoked: {what} are refused (entry kept until {utc_iso(entry.expires_at)})")
    return EXIT_OK


def run_revoke_user(args: argparse.Namespace, terminal: Terminal) -> int:
    """Refuse a user's tokens issued before a time (default now), in every service following the store."""
    before = args.before.timestamp() if args.before is not None else datetime.now(UTC).timestamp()
    return _record(args, terminal, _entry(args, "user", args.sub, before))


def run_revoke_session(args: argparse.Namespace, terminal: Terminal) -> int:
    """Refuse every token issued from one refresh token (its ``origin_jti``)."""
    now = datetime.now(UTC).timestamp()
    return _record(args, terminal, _entry(args, "session", args.origin_jti, now))


def run_revocations(args: argparse.Namespace, terminal: Terminal) -> int:
    """List every live revocation in the shared store."""
    store = revocation_store(args)
    try:
        entries = store.entries_sync()
    except RevocationStoreUnavailable as exc:
        raise CommandFailed(str(exc)) from None
    if args.pool:
        entries = [entry for entry in entries if entry.user_pool_id == args.pool]
    if args.json:
        terminal.out(json.dumps([entry_json(entry) for entry in entries], indent=2))
        return EXIT_OK
    terminal.err(f"{len(entries)} revocation(s)")
    rows = [
        [entry.kind, entry.user_pool_id, entry.subject, utc_iso(entry.before), utc_iso(entry.expires_at)]
        for entry in entries
    ]
    terminal.out(format_table(["KIND", "POOL", "SUBJECT", "BEFORE", "KEPT UNTIL"], rows))
    return EXIT_OK


def add_revocations_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``revocations``."""
    parser.add_argument("--pool", type=_pool, help="list only this user pool's entries")
    parser.add_argument("--json", action="store_true", help="print the entries as a JSON array")
    add_store_arguments(parser)
