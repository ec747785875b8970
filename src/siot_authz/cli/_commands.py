"""The ``login``, ``verify``, ``decode`` and ``jwks`` commands.

``verify`` and ``jwks`` take one pool or several (see ``_config.py``).

Each takes the parsed arguments and a :class:`Terminal` and returns an exit
status, or raises :class:`CommandFailed`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx

from .._errors import AuthError, JwksUnavailable, MissingToken, TokenRevoked, TokenUseMismatch
from .._http import JwksFetchError, fetch_jwks_sync, shared_ssl_context
from .._jwks import InvalidJwks, parse_jwks
from .._settings import AuthSettings
from .._token import strip_bearer
from .._verifier import TokenVerifier
from ._config import key_urls, load_config, load_pool_settings
from ._exit import EXIT_OK, EXIT_REFUSED, CommandFailed
from ._login import log_in
from ._output import Spinner, format_table, json_time, relative_time, utc_iso
from ._revoke import is_revoked, revocation_store, wants_revocations
from ._terminal import Terminal

__all__ = ["run_decode", "run_jwks", "run_login", "run_verify"]

logger = logging.getLogger("siot_authz.cli")

_TIME_CLAIMS = ("exp", "iat", "nbf", "auth_time")


def run_login(args: argparse.Namespace, terminal: Terminal) -> int:
    """Print the ID token (or every token with ``--json``)."""
    tokens = log_in(args, load_config(args), terminal)
    if args.json:
        terminal.out(json.dumps(tokens.as_json(), indent=2))
    else:
        terminal.out(tokens.id_token)
    return EXIT_OK


def _token_argument(args: argparse.Namespace, terminal: Terminal) -> str:
    token = args.token
    if token is None or token == "-":
        if token is None and terminal.is_interactive:
            raise CommandFailed("no token: pass it as an argument, or pipe it in ('-' reads stdin)")
        token = terminal.read_all()
    token = str(token).strip()
    if not token:
        raise CommandFailed("no token given")
    return token


# -- jwks and verify ------------------------------------------------------------


def fetch_key_set(url: str, terminal: Terminal, *, time_limit: float, max_bytes: int) -> bytes:
    """The JWKS body at ``url``, or a :class:`CommandFailed` naming exactly what went wrong."""
    try:
        with (
            Spinner(terminal, f"Fetching signing keys from {url}"),
            httpx.Client(verify=shared_ssl_context()) as client,
        ):
            body = fetch_jwks_sync(url, time_limit=time_limit, max_bytes=max_bytes, client=client)
    except JwksFetchError as exc:
        raise CommandFailed(f"cannot fetch signing keys from {url}: {exc.reason}") from None
    logger.info("jwks_request url=%s bytes=%d", url, len(body))
    try:
        parse_jwks(body)
    except InvalidJwks as exc:
        raise CommandFailed(f"{url} did not return a key set: {exc}") from None
    return body


def _describe_keys(body: bytes) -> list[dict[str, Any]]:
    usable = parse_jwks(body).keys
    entries = json.loads(body)["keys"]
    described: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            described.append({"kid": None, "alg": None, "kty": None, "bits": None, "usable": False})
            continue
        kid = entry.get("kid")
        described.append(
            {
                "kid": kid,
                "alg": entry.get("alg"),
                "kty": entry.get("kty"),
                "use": entry.get("use"),
                "bits": _modulus_bits(entry.get("n")),
                "usable": isinstance(kid, str) and kid in usable,
            }
        )
    return described


def _modulus_bits(modulus: Any) -> int | None:
    if not isinstance(modulus, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big").bit_length()


def _saved_path(template: str, pool_id: str, several: bool) -> Path:
    if several and "{pool}" not in template:
        raise CommandFailed(
            "with several pools, --save needs {pool} in the file name "
            "(e.g. --save 'jwks-{pool}.json'): each pool has its own key set"
        )
    return Path(template.replace("{pool}", pool_id)).expanduser()


def save_key_set(path: Path, body: bytes) -> None:
    """Write a fetched JWKS where ``jwks_file`` can read it; the old file stays whole until the new one is."""
    document = json.loads(body)  # fetch_key_set has checked it is a usable key set
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CommandFailed(f"cannot write {path}: {exc.strerror}") from None


def run_jwks(args: argparse.Namespace, terminal: Terminal) -> int:
    """List each key of every configured pool's JWKS with its kid, algorithm and size; ``--save`` writes it."""
    pools = key_urls(args)
    several = len(pools) > 1
    targets = [_saved_path(args.save, pool_id, several) if args.save else None for pool_id, _url in pools]
    max_bytes = AuthSettings.model_fields["max_jwks_bytes"].default
    listed: list[dict[str, Any]] = []
    for (pool_id, url), target in zip(pools, targets, strict=True):
        body = fetch_key_set(url, terminal, time_limit=args.timeout, max_bytes=max_bytes)
        if target is not None:
            save_key_set(target, body)
            terminal.err(f"saved the key set of {pool_id} to {target} (usable as jwks_file)")
        listed.append({"user_pool_id": pool_id, "url": url, "keys": _describe_keys(body)})
    if args.json:
        document: Any = listed if several else {"url": listed[0]["url"], "keys": listed[0]["keys"]}
        terminal.out(json.dumps({"pools": document} if several else document, indent=2))
        return EXIT_OK
    rows = [
        [
            *([str(pool["user_pool_id"])] if several else []),
            str(key["kid"] or "-"),
            str(key["alg"] or "-"),
            str(key["kty"] or "-"),
            str(key["bits"] or "-"),
            "yes" if key["usable"] else "no",
        ]
        for pool in listed
        for key in pool["keys"]
    ]
    for pool in listed:
        terminal.err(f"{len(pool['keys'])} key(s) at {pool['url']}")
    header = ["KID", "ALG", "KTY", "BITS", "USABLE"]
    terminal.out(format_table(["POOL", *header] if several else header, rows))
    return EXIT_OK


def _hint(error: AuthError, settings: AuthSettings) -> str | None:
    if isinstance(error, TokenUseMismatch):
        other = "access" if settings.token_use == "id" else "id"
        return f"hint: this checks for {settings.token_use} tokens; pass --token-use {other} or any"
    return None


def _keys_unavailable(verifier: TokenVerifier, error: JwksUnavailable) -> CommandFailed:
    """Exactly why keys could not be had, from the pool's :class:`KeyStatus`, as ``jwks`` would say it."""
    for pool, status in zip(verifier.pools, verifier.health().pools, strict=True):
        reason = status.keys.last_error
        if reason is None:
            continue
        url = pool.settings.resolved_jwks_url
        if reason.startswith("jwks_"):  # fetched, but not a usable key set
            return CommandFailed(f"{url} did not return a key set: {reason}")
        return CommandFailed(f"cannot fetch signing keys from {url}: {reason}")
    return CommandFailed(f"{error.code}: {error.detail}")


def _refuse(args: argparse.Namespace, terminal: Terminal, error: AuthError) -> int:
    if args.json:
        terminal.out(json.dumps({"valid": False, "code": error.code, "message": error.detail}))
    else:
        terminal.out(f"{error.code}: {error.detail}")
    return EXIT_REFUSED


def run_verify(args: argparse.Namespace, terminal: Terminal) -> int:
    """Verify a token against every configured pool; print the principal (exit 0) or the reason code (exit 1).

    With ``--redis-url`` (or ``SIOT_AUTHZ_REDIS_URL``), a valid token is also
    checked against the revocations in that store, as a service following it would.
    """
    pools = load_pool_settings(args)
    store = revocation_store(args) if wants_revocations(args) else None
    token = _token_argument(args, terminal)
    try:
        verifier = TokenVerifier(pools)
    except ValueError as exc:  # the same pool twice, say
        raise CommandFailed(str(exc)) from None
    try:
        with Spinner(terminal, "Verifying"):
            principal = verifier.verify_sync(token)
    except JwksUnavailable as error:
        raise _keys_unavailable(verifier, error) from None
    except AuthError as error:
        hint = _hint(error, pools[0])
        status = _refuse(args, terminal, error)
        if hint:
            terminal.err(hint)
        return status
    finally:
        verifier.close()
    if store is not None and is_revoked(store, principal):
        return _refuse(args, terminal, TokenRevoked())
    terminal.out(principal.model_dump_json(indent=2))
    return EXIT_OK


# -- decode ------------------------------------------------------------------------


# Deeper than any real token nests; past it, printing (json.dumps with indent
# recurses in Python) could itself run out of stack.
_MAX_DEPTH = 64


def _nesting_depth(value: Any) -> int:
    """How deeply ``value``'s arrays and objects nest, counted without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= _MAX_DEPTH:
                pending.extend(
                    (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _decode_segment(segment: str, name: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CommandFailed(f"the {name} is not base64url-encoded JSON", exit_code=EXIT_REFUSED) from None
    except RecursionError:  # arrays nested ~1,000 deep: about 3 KB of "[[[["
        raise CommandFailed(
            f"the {name} nests too deeply to decode (no token nests like this; the verifier refuses it)",
            exit_code=EXIT_REFUSED,
        ) from None
    if not isinstance(value, dict):
        raise CommandFailed(f"the {name} is not a JSON object", exit_code=EXIT_REFUSED)
    if _nesting_depth(value) > _MAX_DEPTH:
        raise CommandFailed(
            f"the {name} nests more than {_MAX_DEPTH} levels deep; not shown", exit_code=EXIT_REFUSED
        )
    return value


def describe_times(claims: dict[str, Any], now: float) -> dict[str, str]:
    """``{"exp": "2024-05-01T12:00:00Z (expires in 54 min)", ...}`` for the time claims present: for people."""
    described = {}
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                described[name] = f"{utc_iso(value)} ({relative_time(name, value, now)})"
            except (OverflowError, OSError, ValueError):
                described[name] = "(not a representable time)"
    return described


def json_times(claims: dict[str, Any]) -> dict[str, str | None]:
    """``{"exp": "2024-05-01T12:00:00Z", ...}`` for the time claims present: for scripts (None if unrepresentable)."""
    times: dict[str, str | None] = {}
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                times[name] = json_time(value)
            except (OverflowError, OSError, ValueError):
                times[name] = None
    return times


def run_decode(args: argparse.Namespace, terminal: Terminal) -> int:
    """Print a token's header and claims without checking anything."""
    try:
        token = strip_bearer(_token_argument(args, terminal))
    except MissingToken:  # "Bearer" and nothing else
        raise CommandFailed("no token given") from None
    segments = token.split(".")
    if len(segments) != 3:
        raise CommandFailed(
            f"not a JWT: expected 3 dot-separated segments, found {len(segments)}", exit_code=EXIT_REFUSED
        )
    header = _decode_segment(segments[0], "header")
    claims = _decode_segment(segments[1], "payload")
    if args.json:
        document = {"verified": False, "header": header, "claims": claims, "times": json_times(claims)}
        terminal.out(json.dumps(document, indent=2))
        return EXIT_OK
    times = describe_times(claims, time.time())
    terminal.out("UNVERIFIED: decoded without checking the signature or any claim.")
    terminal.out("Header:")
    terminal.out(json.dumps(header, indent=2))
    terminal.out("Claims:")
    terminal.out(json.dumps(claims, indent=2))
    if times:
        terminal.out("Times (UTC):")
        width = max(len(name) for name in times)
        for name, text in times.items():
            terminal.out(f"  {name.ljust(width)}  {text}")
    return EXIT_OK
