"""The contract probes: a good token and the forgeries a well-behaved API must refuse, and how to send them.

Shared by ``siot-authz contract`` and the test kit's ``check_contract_probe``
(so a suite and the command can never disagree about the contract), and
below both, so neither imports the other.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace

import httpx

from ._cognito_client import Tokens

__all__ = [
    "PROBE_KEYS",
    "Outcome",
    "Probe",
    "ProbeError",
    "build_cross_pool_probes",
    "build_probes",
    "send_probe",
]


class ProbeError(ValueError):
    """Cognito returned a token that is not a JWT, so no forgery can be made from it."""


# Stable short names of the probes, in order; test ids and the pytest helper use them.
PROBE_KEYS = (
    "valid-raw",
    "valid-bearer",
    "no-token",
    "garbage",
    "tampered-payload",
    "truncated-signature",
    "unsigned-alg-none",
    "wrong-token-use",
)


@dataclass(frozen=True)
class Probe:
    """One request to send: its ``Authorization`` value (None sends none) and whether it must pass."""

    name: str
    authorization: str | None
    should_accept: bool
    key: str = ""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment_json(segment: str) -> dict[str, object]:
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(value, dict):
        raise ValueError("segment is not a JSON object")
    return value


def _tampered(token: str) -> str:
    # A privilege escalation a broken API would honour: the signature is the
    # original, the payload claims membership of an admin group.
    header, payload, signature = token.split(".")
    claims = _segment_json(payload)
    claims["cognito:groups"] = ["admin"]
    return f"{header}.{_b64url(json.dumps(claims).encode())}.{signature}"


def _relabelled(token: str, issuer: str) -> str:
    # One pool's genuine token claiming another trusted pool's issuer: only
    # routing by iss and checking the signature with that pool's keys stops it.
    header, payload, signature = token.split(".")
    claims = _segment_json(payload)
    claims["iss"] = issuer
    return f"{header}.{_b64url(json.dumps(claims).encode())}.{signature}"


def _issuer(token: str) -> str:
    try:
        return str(_segment_json(token.split(".")[1]).get("iss", ""))
    except (ValueError, IndexError):
        raise ProbeError("Cognito returned a token that is not a JWT") from None


def build_cross_pool_probes(tokens: dict[str, Tokens], *, token_use: str = "id") -> list[Probe]:
    """For each ordered pair of pools, pool A's good token relabelled with pool B's issuer."""
    good = {pool: t.id_token if token_use == "id" else t.access_token for pool, t in tokens.items()}
    return [
        Probe(
            f"{source} token relabelled as {target}",
            _relabelled(good[source], _issuer(good[target])),
            False,
            "cross-pool-iss",
        )
        for source in good
        for target in good
        if source != target
    ]


def _truncated_signature(token: str) -> str:
    return token[:-8]


def _unsigned(token: str) -> str:
    header, payload, _signature = token.split(".")
    fields = _segment_json(header)
    fields["alg"] = "none"
    return f"{_b64url(json.dumps(fields).encode())}.{payload}."


def build_probes(tokens: Tokens, *, token_use: str = "id") -> list[Probe]:
    """The checks, in the order they are run and printed."""
    good, wrong_kind = (
        (tokens.id_token, tokens.access_token)
        if token_use == "id"
        else (tokens.access_token, tokens.id_token)
    )
    other = "access" if token_use == "id" else "ID"
    kind = "ID" if token_use == "id" else "access"
    try:
        tampered, unsigned = _tampered(good), _unsigned(good)
    except (ValueError, TypeError) as exc:
        raise ProbeError(f"Cognito returned a token that is not a JWT ({exc})") from None
    probes = [
        Probe(f"valid {kind} token, raw", good, True),
        Probe(f"valid {kind} token, 'Bearer ' prefix", f"Bearer {good}", True),
        Probe("no token", None, False),
        Probe("garbage", "not-a-jwt", False),
        Probe("tampered payload", tampered, False),
        Probe("truncated signature", _truncated_signature(good), False),
        Probe("unsigned (alg none)", unsigned, False),
        Probe(f"{other} token instead of {kind} token", wrong_kind, False),
    ]
    return [replace(probe, key=key) for probe, key in zip(probes, PROBE_KEYS, strict=True)]


@dataclass(frozen=True)
class Outcome:
    """What the API answered to one probe: a status, or None and the error when it did not answer."""

    probe: Probe
    status_code: int | None
    error: str = ""

    @property
    def passed(self) -> bool:
        """Accepted means any 2xx; refused means exactly 401; no answer fails either way."""
        if self.status_code is None:
            return False
        if self.probe.should_accept:
            return 200 <= self.status_code < 300
        return self.status_code == 401

    @property
    def got(self) -> str:
        """The status for the table, or why there was none."""
        return str(self.status_code) if self.status_code is not None else f"no response ({self.error})"


def send_probe(client: httpx.Client, method: str, url: str, probe: Probe) -> Outcome:
    """Send one probe and record the answer; a dropped connection is an outcome, not an exception."""
    headers = {} if probe.authorization is None else {"Authorization": probe.authorization}
    try:
        response = client.request(method, url, headers=headers)
    except httpx.HTTPError as exc:
        # A server that drops the connection on one forgery has failed that check;
        # only an API that answers nothing at all stops the run (below).
        return Outcome(probe, None, type(exc).__name__)
    return Outcome(probe, response.status_code)
