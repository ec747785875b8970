"""``contract``: log in for real tokens, then check that a deployed API accepts and refuses what it should.

A well-behaved API must accept a fresh token of the kind it expects (sent
raw, as SimpleIOT's Python clients do, and with ``Bearer``, as its
JavaScript clients do) and answer 401 to each forgery below. A 403, 404 or
500 for a forgery counts as a failure: it means the request got past
authentication or broke the server.

With several pools (``--config`` more than once, or ``--simpleiot-home``),
it logs in to each, runs every check for each, and adds one forgery per
pair: a token of one pool relabelled with the other's issuer, which an API
that trusts both must still refuse. The probes themselves are built in
:mod:`siot_authz._contract_probes`, which the test kit shares.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import httpx

from .._contract_probes import (
    PROBE_KEYS,
    Outcome,
    Probe,
    ProbeError,
    build_cross_pool_probes,
    build_probes,
    send_probe,
)
from .._http import shared_ssl_context
from ._config import load_configs
from ._exit import EXIT_OK, EXIT_REFUSED, CommandFailed
from ._login import log_in
from ._output import Spinner, format_table
from ._terminal import Terminal

# The probes live in siot_authz._contract_probes, shared with the test kit; re-exported for callers of this module.
__all__ = [
    "PROBE_KEYS",
    "Outcome",
    "Probe",
    "add_contract_arguments",
    "build_cross_pool_probes",
    "build_probes",
    "run_contract",
    "send_probe",
]


def add_contract_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags naming the API and route to check."""
    group = parser.add_argument_group("the API under test")
    group.add_argument("--api", required=True, metavar="URL", help="base URL of the deployed API")
    group.add_argument(
        "--path", default="/v1/me", help="a protected route any logged-in user may call (default /v1/me)"
    )
    group.add_argument("--method", default="GET", help="HTTP method for the route (default GET)")
    group.add_argument(
        "--token-use",
        choices=("id", "access"),
        default="id",
        help="the kind of token the API expects (default id, as SimpleIOT's API does)",
    )


def _probes_for_every_pool(args: argparse.Namespace, terminal: Terminal) -> list[Probe]:
    try:
        return _build_probes(args, terminal)
    except ProbeError as exc:
        raise CommandFailed(str(exc)) from None


def _build_probes(args: argparse.Namespace, terminal: Terminal) -> list[Probe]:
    configs = load_configs(args)
    if len(configs) == 1:
        return build_probes(log_in(args, configs[0], terminal), token_use=args.token_use)
    # One login per pool: the password is asked for (or read from stdin, one line) each time.
    tokens = {config.require("user_pool_id")[0]: log_in(args, config, terminal) for config in configs}
    probes = [
        replace(probe, name=f"{pool}: {probe.name}")
        for pool, pool_tokens in tokens.items()
        for probe in build_probes(pool_tokens, token_use=args.token_use)
    ]
    return probes + build_cross_pool_probes(tokens, token_use=args.token_use)


def run_contract(args: argparse.Namespace, terminal: Terminal) -> int:
    """Log in (to each pool), probe the API, print a pass/fail table; exit 1 if any check failed."""
    probes = _probes_for_every_pool(args, terminal)
    url = args.api.rstrip("/") + "/" + args.path.lstrip("/")
    with (
        Spinner(terminal, f"Checking {url}"),
        httpx.Client(timeout=args.timeout, verify=shared_ssl_context()) as client,
    ):
        outcomes = [send_probe(client, args.method.upper(), url, probe) for probe in probes]
    if all(outcome.status_code is None for outcome in outcomes):
        raise CommandFailed(f"cannot reach the API at {url}: {outcomes[0].error}")
    rows = [
        [
            "PASS" if outcome.passed else "FAIL",
            outcome.probe.name,
            "2xx" if outcome.probe.should_accept else "401",
            outcome.got,
        ]
        for outcome in outcomes
    ]
    terminal.out(f"Contract check of {args.method.upper()} {url}")
    terminal.out(format_table(["RESULT", "CHECK", "EXPECTED", "GOT"], rows))
    failed = sum(not outcome.passed for outcome in outcomes)
    terminal.out(f"{len(outcomes) - failed} of {len(outcomes)} checks passed.")
    return EXIT_REFUSED if failed else EXIT_OK
