"""The ``siot-authz`` argument parser and entry point."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import __version__
from ._commands import run_decode, run_jwks, run_login, run_verify
from ._config import add_config_arguments
from ._contract import add_contract_arguments, run_contract
from ._exit import EXIT_ERROR, EXIT_INTERRUPTED, CommandFailed
from ._login import add_credential_arguments
from ._revoke import (
    add_revocations_arguments,
    add_revoke_arguments,
    add_store_arguments,
    run_revocations,
    run_revoke_session,
    run_revoke_user,
)
from ._terminal import Terminal

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace, Terminal], int]

_EXIT_STATUS = """\
exit status: 0 success; 1 refused (invalid token, login refused, a contract
check failed); 2 configuration, usage or network error; 130 interrupted."""

_STORE_EPILOG = f"""\
{_EXIT_STATUS}

The store is the Redis the services' RedisRevocations follow: --redis-url, then
SIOT_AUTHZ_REDIS_URL. Without one there is nothing this command can reach
(in-process revocations live only in the serving process), and it exits 2."""

_EPILOG = f"""\
{_EXIT_STATUS}

Settings come from flags, then --config (a SimpleIOT config.json), then
SIOT_AUTHZ_* environment variables."""


# argparse quotes the offending value in these messages; the value may be a
# password or a token typed where it must not go, so the quote is cut out.
_QUOTED_VALUE = re.compile(
    r"(?P<what>invalid choice|invalid [\w ]+ value|ignored explicit argument): .*?(?P<rest> \(choose from [^()]*\))?$",
    re.DOTALL,
)
# A long option's name, without any "=value" glued to it.
_OPTION_NAME = re.compile(r"^--[A-Za-z][A-Za-z0-9-]{0,40}$")


def _unrecognized(extras: Sequence[str]) -> str:
    """Which arguments were not understood, naming long options only and never a value."""
    names = []
    for extra in extras:
        name = extra.split("=", 1)[0]
        if _OPTION_NAME.fullmatch(name) and name not in names:
            names.append(name)
    others = len(extras) - sum(extra.split("=", 1)[0] in names for extra in extras)
    parts = [f"unrecognized option(s) {', '.join(names)}"] if names else []
    if others:
        parts.append(f"{others} unexpected argument(s), not shown (one may be a secret)")
    return "; ".join(parts) + " (values are never shown)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors name flags but never repeat a value given on the command line.

    A value can be a password typed after a misspelt flag (``--pasword PW``,
    ``--password-stdin PW``) or a token given to the wrong flag
    (``--token-use TOKEN``), and usage errors land in terminals, CI logs and
    screenshots.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(_unrecognized(extras))
        return parsed

    def error(self, message: str) -> NoReturn:
        message = _QUOTED_VALUE.sub(lambda found: found["what"] + (found["rest"] or ""), message)
        # Whatever the message's wording (it varies across Python versions),
        # no long argument given on the command line is repeated.
        for given in getattr(self, "_given", ()):
            for value in (given, given.split("=", 1)[-1]):
                if len(value) >= _SHORTEST_HIDDEN and not value.startswith("-") and value in message:
                    message = message.replace(value, "<hidden>")
        super().error(message)


# Values shorter than this are flags' choices ("id") or numbers, never a secret worth hiding.
_SHORTEST_HIDDEN = 6


def _token_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "token",
        nargs="?",
        metavar="TOKEN|-",
        help="the token, raw or with 'Bearer '; '-' or nothing reads it from stdin",
    )


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _add_command(
    commands: argparse._SubParsersAction[_Parser],
    name: str,
    run: Command | None,
    summary: str,
    description: str,
    *,
    epilog: str = _EPILOG,
    full_name: str | None = None,
) -> _Parser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No prefix matching: "--password" must not quietly mean "--password-stdin".
        allow_abbrev=False,
    )
    parser.set_defaults(run=run, command=full_name or name)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The full command-line interface."""
    parser = _Parser(
        prog="siot-authz",
        description="Get, inspect and verify Cognito tokens for SimpleIOT services, "
        "and check that a deployed API refuses what it should.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what the library does (key fetches, refusals)"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    login = _add_command(
        commands,
        "login",
        run_login,
        "log in with a username and password and print the ID token",
        "Log in with USER_PASSWORD_AUTH and print the ID token. The password is read from a "
        "prompt, or from stdin with --password-stdin; never from an argument.",
    )
    add_config_arguments(login, client_ids_mean="the first logs in")
    add_credential_arguments(login)
    _json_flag(login, "every token (IdToken, AccessToken, RefreshToken, ExpiresIn)")

    verify = _add_command(
        commands,
        "verify",
        run_verify,
        "verify a token against the pool and print the principal",
        "Verify a token exactly as a service using siot_authz would, and print the principal as "
        "JSON (exit 0) or the reason code it was refused with (exit 1). With several pools "
        "(--config more than once, or --simpleiot-home), the token is routed to its pool by iss.",
    )
    _token_argument(verify)
    add_config_arguments(verify, several_pools=True, client_ids_mean="tokens issued to any are accepted")
    verify.add_argument("--jwks-url", metavar="URL", help="fetch keys here instead [SIOT_AUTHZ_JWKS_URL]")
    verify.add_argument(
        "--token-use",
        choices=("id", "access", "any"),
        help="which tokens to accept (default id) [SIOT_AUTHZ_TOKEN_USE]",
    )
    _json_flag(verify, "a refusal")
    add_store_arguments(verify, purpose=": a valid token is also checked against its revocations")

    decode = _add_command(
        commands,
        "decode",
        run_decode,
        "show a token's header and claims WITHOUT verifying it",
        "Show a token's header and claims without verifying anything, with its times in UTC "
        "and relative to now. The output is labelled UNVERIFIED: never trust it for decisions.",
        # decode reads the token alone: no pool, no settings, so no word about where they come from.
        epilog=_EXIT_STATUS,
    )
    _token_argument(decode)
    _json_flag(decode, "header, claims and times")

    jwks = _add_command(
        commands,
        "jwks",
        run_jwks,
        "list the signing keys of the pool, or save them for jwks_file",
        "Fetch the pool's JSON Web Key Set and list each key's kid, algorithm and size, and "
        "whether siot_authz would verify with it. With several pools, each pool's keys. "
        "--save writes the key set to a file a service can load as jwks_file, to verify "
        "from its first request without a network.",
    )
    add_config_arguments(jwks, several_pools=True, client_ids_mean="not needed to list keys")
    jwks.add_argument("--jwks-url", metavar="URL", help="fetch this URL instead [SIOT_AUTHZ_JWKS_URL]")
    jwks.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="default 10")
    jwks.add_argument(
        "--save",
        metavar="FILE",
        help="also write the key set to FILE (usable as jwks_file); with several pools, "
        "FILE must contain {pool}, replaced by each pool's id",
    )
    _json_flag(jwks, "the keys")

    contract = _add_command(
        commands,
        "contract",
        run_contract,
        "log in, then check that an API accepts good tokens and refuses forged ones",
        "Log in for real tokens, then call a protected route of a deployed API with a valid "
        "token (raw and with 'Bearer ') and with forgeries that must each get a 401. Prints a "
        "pass/fail table; exits 1 if any check fails.",
    )
    add_contract_arguments(contract)
    add_config_arguments(contract, several_pools=True, client_ids_mean="the first logs in")
    add_credential_arguments(contract)

    revoke = _add_command(
        commands,
        "revoke",
        None,
        "revoke a user's tokens or one session, in every service sharing the Redis store",
        "Record a revocation in the shared store (Redis) that every service's "
        "RedisRevocations follows; each enforces it within about a second.",
        epilog=_STORE_EPILOG,
    )
    kinds = revoke.add_subparsers(title="what to revoke", metavar="KIND", required=True)
    user = _add_command(
        kinds,
        "user",
        run_revoke_user,
        "refuse a user's tokens issued before a time (what GlobalSignOut means)",
        "Refuse every token of the user (by sub) issued before --before (default now), as "
        "after GlobalSignOut, disabling the user or removing them from a team.",
        epilog=_STORE_EPILOG,
        full_name="revoke user",
    )
    session = _add_command(
        kinds,
        "session",
        run_revoke_session,
        "refuse every token of one session (what RevokeToken means)",
        "Refuse every ID and access token issued from one refresh token, named by the "
        "origin_jti its tokens carry, as after RevokeToken.",
        epilog=_STORE_EPILOG,
        full_name="revoke session",
    )
    add_revoke_arguments(user, session)

    revocations = _add_command(
        commands,
        "revocations",
        run_revocations,
        "list the revocations in the shared Redis store",
        "List every live revocation in the shared store: kind, pool, subject (sub or "
        "origin_jti), the time it names, and until when it is kept.",
        epilog=_STORE_EPILOG,
    )
    add_revocations_arguments(revocations)
    return parser


def main(argv: Sequence[str] | None = None, *, terminal: Terminal | None = None) -> int:
    """Run the CLI with ``argv`` (default: the process arguments) and return the exit status."""
    terminal = terminal or Terminal()
    raw = list(sys.argv[1:] if argv is None else argv)
    if any(arg.startswith("--pass") and "=" in arg for arg in raw):
        # argparse would quote the value back in its usage error, and that
        # value is most likely a password typed where it must not go.
        terminal.err("siot-authz: passwords are never taken as arguments; pipe one in with --password-stdin")
        raise SystemExit(EXIT_ERROR)  # as argparse does for every other usage error
    args = build_parser().parse_args(raw)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=terminal.stderr, format="%(name)s: %(message)s")
        # httpx's own line per request repeats the library's jwks_fetched line.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    run: Command = args.run
    try:
        return run(args, terminal)
    except CommandFailed as failure:
        terminal.err(f"siot-authz {args.command}: {failure.message}")
        return failure.exit_code
    except KeyboardInterrupt:
        terminal.err("interrupted")
        return EXIT_INTERRUPTED
