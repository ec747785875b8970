"""The ``login`` flow: gather credentials, call Cognito, and explain every refusal.

Passwords come only from a no-echo prompt or from stdin: a command-line
argument would land in shell history and in ``ps`` output.
"""

from __future__ import annotations

import argparse

from .._cognito_client import (
    CognitoApiError,
    CognitoClient,
    CognitoUnreachable,
    LoginFailed,
    NewPasswordRequired,
    Tokens,
    log_in_unattended,
)
from ._config import CliConfig
from ._exit import EXIT_ERROR, EXIT_REFUSED, CommandFailed
from ._output import Spinner
from ._terminal import Terminal

__all__ = ["add_credential_arguments", "log_in", "log_in_as"]


class _RefusePasswordArgument(argparse.Action):
    """Turns ``--password X`` into a usage error that explains why, without echoing X."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "passwords are never taken as arguments (they would land in shell history and ps "
            "output); answer the prompt or pipe it in with --password-stdin"
        )


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags for who logs in and how the password is read."""
    parser.add_argument("--password", "-p", action=_RefusePasswordArgument, help=argparse.SUPPRESS)
    group = parser.add_argument_group("credentials")
    group.add_argument("--username", "-u", help="the user to log in as (prompted for when omitted)")
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of prompting",
    )
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="Cognito API endpoint (default https://cognito-idp.<region>.amazonaws.com/) "
        "[SIOT_AUTHZ_ENDPOINT_URL]",
    )
    group.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)"
    )


def _explain(error: CognitoApiError) -> CommandFailed:
    refusal = LoginFailed.from_api_error(error)
    return CommandFailed(refusal.message, exit_code=EXIT_ERROR if refusal.is_setup_problem else EXIT_REFUSED)


def _username(args: argparse.Namespace, terminal: Terminal) -> str:
    if args.username:
        return str(args.username)
    if not terminal.is_interactive:
        raise CommandFailed("no username: pass --username (stdin is not a terminal to prompt on)")
    try:
        username = terminal.ask("Username: ").strip()
    except EOFError:
        username = ""
    if not username:
        raise CommandFailed("no username given")
    return username


def _password(args: argparse.Namespace, terminal: Terminal) -> str:
    try:
        if args.password_stdin:
            password = terminal.read_line()
        elif terminal.is_interactive:
            password = terminal.ask_secret("Password: ")
        else:
            raise CommandFailed("no password: use --password-stdin to pipe it in, or run in a terminal")
    except EOFError:
        password = ""
    if not password:
        raise CommandFailed("no password given")
    return password


def _new_password(challenge: NewPasswordRequired, args: argparse.Namespace, terminal: Terminal) -> str:
    if args.password_stdin or not terminal.is_interactive:
        raise CommandFailed(
            f"login failed: Cognito requires {challenge.username} to choose a new password before "
            "it issues tokens (the first login of an account an administrator created). Run "
            "'siot-authz login' in a terminal to set one, or have an administrator run "
            "'aws cognito-idp admin-set-user-password --permanent'.",
            exit_code=EXIT_REFUSED,
        )
    terminal.err(f"Cognito requires {challenge.username} to choose a new password.")
    for _attempt in range(3):
        first = terminal.ask_secret("New password: ")
        if first and first == terminal.ask_secret("Repeat new password: "):
            return first
        terminal.err("The passwords are empty or do not match; try again.")
    raise CommandFailed("login failed: no new password was set", exit_code=EXIT_REFUSED)


def log_in(args: argparse.Namespace, config: CliConfig, terminal: Terminal) -> Tokens:
    """Log in as the configured user, setting a new password if Cognito demands one interactively."""
    client = CognitoClient(config.cognito_endpoint, config.client_id, timeout=args.timeout)
    username = _username(args, terminal)
    password = _password(args, terminal)
    try:
        with Spinner(terminal, f"Logging in to {client.endpoint}"):
            outcome = client.initiate_auth(username, password)
        while isinstance(outcome, NewPasswordRequired):
            new_password = _new_password(outcome, args, terminal)
            with Spinner(terminal, "Setting the new password"):
                outcome = client.set_new_password(outcome, new_password)
    except CognitoApiError as error:
        raise _explain(error) from None
    except CognitoUnreachable as error:
        raise CommandFailed(f"cannot reach Cognito at {client.endpoint}: {error}") from None
    return outcome


def log_in_as(config: CliConfig, username: str, password: str, *, timeout: float = 10.0) -> Tokens:
    """Log in with no one to ask: a refusal, or a demand for a new password, is a :class:`CommandFailed`.

    The CLI's face of :func:`siot_authz._cognito_client.log_in_unattended`,
    which the test kit can call directly.
    """
    try:
        return log_in_unattended(
            config.cognito_endpoint, config.client_id, username, password, timeout=timeout
        )
    except LoginFailed as refusal:
        exit_code = EXIT_ERROR if refusal.is_setup_problem else EXIT_REFUSED
        raise CommandFailed(refusal.message, exit_code=exit_code) from None
