"""The ``siot-authz contract`` probes as pytest checks, against a TestClient or a running API.

The probes, their order and what passes are the CLI's own
(:mod:`siot_authz.cli._contract`), so a suite and the command can never
disagree about the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import httpx

from .._cognito_client import Tokens
from .._contract_probes import PROBE_KEYS, Outcome, Probe, build_probes, send_probe
from .._http import shared_ssl_context

__all__ = ["CONTRACT_PROBES", "ContractCheck", "check_contract_probe"]

CONTRACT_PROBES: tuple[str, ...] = PROBE_KEYS
"""The probe names, for ``@pytest.mark.parametrize("probe", CONTRACT_PROBES)``."""

ContractCheck = Callable[..., Outcome]


def _probe(tokens: Tokens, key: str, token_use: Literal["id", "access"]) -> Probe:
    probes = {probe.key: probe for probe in build_probes(tokens, token_use=token_use)}
    if key not in probes:
        raise ValueError(f"no contract probe {key!r}; the probes are {', '.join(PROBE_KEYS)}")
    return probes[key]


def check_contract_probe(
    tokens: Tokens,
    target: httpx.Client | str,
    probe: str,
    *,
    path: str = "/v1/me",
    method: str = "GET",
    token_use: Literal["id", "access"] = "id",
    timeout: float = 10.0,
) -> Outcome:
    """Send ``probe`` to ``path`` on ``target`` and assert the API answered as the contract says.

    ``target`` is a client (a Starlette ``TestClient`` is one) or a base URL.
    A valid token must get a 2xx; every forgery exactly 401. The assertion
    message names the probe, what was expected and what came back.
    """
    chosen = _probe(tokens, probe, token_use)
    method = method.upper()
    if isinstance(target, str):
        url = target.rstrip("/") + "/" + path.lstrip("/")
        with httpx.Client(timeout=timeout, verify=shared_ssl_context()) as client:
            outcome = send_probe(client, method, url, chosen)
    else:
        url = path
        outcome = send_probe(target, method, url, chosen)
    if not outcome.passed:
        # Raised, not asserted: it must fail under ``python -O`` too.
        expected = "a 2xx" if chosen.should_accept else "401"
        raise AssertionError(
            f"contract probe {chosen.key!r} ({chosen.name}): expected {expected}, "
            f"got {outcome.got} from {method} {url}"
        )
    return outcome
