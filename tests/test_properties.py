"""Property-based proof that nothing but a Principal or an AuthError leaves verification.

``verify()`` and ``verify_sync()`` end in a catch-all that turns a bug into a
refusal, so "no other exception escaped" alone would prove little. Here an
escape is also any input that reached that safety net (it logs
``token_verification_bug``), any disagreement between the sync and async
faces, any mutated token that still verifies, and any request that ends in
a 500. The examples run and the escapes found are counted and printed at
the end of the module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siot_authz import AuthError, Principal, TokenVerifier
from siot_authz.testing import LocalIssuer, b64url

settings.register_profile(
    "siot-authz-properties",
    max_examples=300,
    deadline=None,
    # The fixtures (a verifier, a client) are meant to be shared by every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = settings.get_profile("siot-authz-properties")

EXAMPLES: Counter[str] = Counter()
ESCAPES: list[str] = []


class _SafetyNetWatch(logging.Handler):
    """Records every time the verifier's catch-all had to turn an exception into a refusal."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.caught: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("token_verification_bug"):
            self.caught.append(record.getMessage())


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    counts = ", ".join(f"{name}={count}" for name, count in sorted(EXAMPLES.items()))
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            f"\nhypothesis examples run: {sum(EXAMPLES.values()) - EXAMPLES['accepted']} ({counts}); "
            f"escapes found: {len(ESCAPES)}"
        )


@pytest.fixture
def safety_net() -> Iterator[_SafetyNetWatch]:
    watch = _SafetyNetWatch()
    logger = logging.getLogger("siot_authz")
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)


class Harness:
    """Runs one input through both faces of the shared verifier and records escapes."""

    def __init__(
        self, verifier: TokenVerifier, loop: asyncio.AbstractEventLoop, safety_net: _SafetyNetWatch
    ) -> None:
        self.verifier = verifier
        self._loop = loop
        self._safety_net = safety_net

    def check(self, name: str, token: str) -> Principal | str:
        """The shared outcome of verify_sync and verify: a Principal, or the refusal's code."""
        EXAMPLES[name] += 1
        self._safety_net.caught.clear()  # per example, so a failure shrinks to its own cause
        outcomes = [self._face(face, token) for face in ("sync", "async")]
        if outcomes[0] != outcomes[1]:
            ESCAPES.append(f"sync and async disagree: {outcomes}")
        assert outcomes[0] == outcomes[1]
        if self._safety_net.caught:
            ESCAPES.append(f"{name}: {self._safety_net.caught[0]}")
        assert self._safety_net.caught == [], "an exception reached the verifier's safety net"
        return outcomes[0]

    def _face(self, face: str, token: str) -> Principal | str:
        try:
            if face == "sync":
                return self.verifier.verify_sync(token)
            return self._loop.run_until_complete(self.verifier.verify(token))
        except AuthError as error:
            return error.code
        except BaseException as exc:
            ESCAPES.append(f"{face}: {type(exc).__name__}")
            raise


@pytest.fixture
def harness(verifier: TokenVerifier, safety_net: _SafetyNetWatch) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    yield Harness(verifier, loop, safety_net)
    loop.close()


# -- strategies -------------------------------------------------------------

_JWS_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \t"

random_strings = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(categories=["Cs", "Co", "Cc", "Zs"])),  # surrogates, controls
    st.text(alphabet=_JWS_ALPHABET, max_size=400),
    st.binary().map(lambda raw: raw.decode("latin-1")),
    st.lists(st.text(alphabet=_JWS_ALPHABET[:64], max_size=40), min_size=1, max_size=6).map(".".join),
    st.builds(lambda value: "Bearer " + value, st.text(alphabet=_JWS_ALPHABET, max_size=200)),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

_CLAIM_NAMES = (
    "iss",
    "aud",
    "client_id",
    "token_use",
    "exp",
    "iat",
    "nbf",
    "sub",
    "cognito:username",
    "username",
    "cognito:groups",
    "scope",
    "email",
)
_HEADER_NAMES = ("alg", "kid", "typ", "crit", "jku", "jwk", "x5u", "x5c", "cty", "b64", "zip", "enc")


# -- properties ---------------------------------------------------------------


@PROFILE
@given(value=random_strings)
def test_random_strings_end_in_a_principal_or_an_auth_error(value: str, harness: Harness) -> None:
    outcome = harness.check("random-strings", value)
    assert isinstance(outcome, str)  # no random string is a signed token


# The strategies the composites below draw from, made once: a strategy built inside a composite
# is built and validated again for every example, which cost more than drawing from it.
_MUTATIONS = st.sampled_from(["bit-flip", "truncate", "swap", "splice", "drop", "duplicate", "insert"])
_BITS = st.integers(0, 7)
_SEGMENT_INDEXES = st.integers(0, 2)
_SEGMENT_ORDERS = st.permutations(range(3))
_INSERTED = st.text(alphabet=_JWS_ALPHABET, min_size=1, max_size=3)


@st.composite
def mutated_tokens(draw: st.DrawFn, honest: str, other: str) -> str:
    segments, others = honest.split("."), other.split(".")
    kind = draw(_MUTATIONS)
    if kind == "bit-flip":
        position = draw(st.integers(0, len(honest) - 1))
        bit = draw(_BITS)
        return honest[:position] + chr(ord(honest[position]) ^ (1 << bit)) + honest[position + 1 :]
    if kind == "truncate":
        return honest[: draw(st.integers(0, len(honest) - 1))]
    if kind == "swap":
        first, second = draw(_SEGMENT_ORDERS)[:2]
        segments[first], segments[second] = segments[second], segments[first]
        return ".".join(segments)
    if kind == "splice":  # one segment from another genuine token
        index = draw(_SEGMENT_INDEXES)
        segments[index] = others[index]
        return ".".join(segments)
    if kind == "drop":
        del segments[draw(_SEGMENT_INDEXES)]
        return ".".join(segments)
    if kind == "duplicate":
        index = draw(_SEGMENT_INDEXES)
        return ".".join([*segments[: index + 1], segments[index], *segments[index + 1 :]])
    position = draw(st.integers(0, len(honest)))
    return honest[:position] + draw(_INSERTED) + honest[position:]


@PROFILE
@given(data=st.data())
def test_mutated_genuine_tokens_never_verify(
    data: st.DataObject, issuer: LocalIssuer, harness: Harness
) -> None:
    honest, other = _genuine_pair(issuer)
    mutated = data.draw(mutated_tokens(honest, other))
    outcome = harness.check("mutated-tokens", mutated)
    # Whitespace around a token is stripped like a "Bearer " prefix: adding
    # some at either end is not a mutation of the token itself.
    if mutated.strip() not in (honest, other):
        assert isinstance(outcome, str), "a mutated token verified"


_PAIRS: dict[str, tuple[str, str]] = {}


def _genuine_pair(issuer: LocalIssuer) -> tuple[str, str]:
    # Minted once per signing key: RSA signing is the slow part of an example.
    kid = issuer.signing_key.kid
    if kid not in _PAIRS:
        _PAIRS[kid] = (issuer.mint(), issuer.mint(groups=["admin"], username="bob"))
    return _PAIRS[kid]


_BOOLEANS = st.booleans()
_HEADER_CHANGES = st.dictionaries(
    st.sampled_from(_HEADER_NAMES) | st.text(max_size=8), json_values, max_size=3
)
_PAYLOAD_SHAPES = st.sampled_from(["cognito-with-changes", "random-object", "random-json", "random-bytes"])
_TOKEN_USES = st.sampled_from(["id", "access"])
_CLAIM_CHANGES = st.dictionaries(st.sampled_from(_CLAIM_NAMES), json_values, max_size=3)
_CLAIMS_DROPPED = st.sets(st.sampled_from(_CLAIM_NAMES), max_size=2)
_RANDOM_OBJECTS = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
_RANDOM_PAYLOAD_BYTES = st.binary(max_size=200)


@st.composite
def signed_random_tokens(draw: st.DrawFn, issuer: LocalIssuer) -> str:
    """Random headers and claims, signed with the pool's real key."""
    if draw(_BOOLEANS):
        header: dict[str, Any] = {"alg": "RS256", "kid": issuer.signing_key.kid}
    else:
        header = {}
    header.update(draw(_HEADER_CHANGES))
    shape = draw(_PAYLOAD_SHAPES)
    payload: bytes
    if shape == "cognito-with-changes":
        claims = issuer.claims(token_use=draw(_TOKEN_USES))
        claims.update(draw(_CLAIM_CHANGES))
        for name in draw(_CLAIMS_DROPPED):
            claims.pop(name, None)
        payload = json.dumps(claims).encode()
    elif shape == "random-object":
        payload = json.dumps(draw(_RANDOM_OBJECTS)).encode()
    elif shape == "random-json":
        payload = json.dumps(draw(json_values)).encode()
    else:
        payload = draw(_RANDOM_PAYLOAD_BYTES)
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url(issuer.signing_key.sign(signing_input))}"


@PROFILE
@given(data=st.data())
def test_random_headers_and_claims_signed_with_the_real_key_pass_only_with_valid_claims(
    data: st.DataObject, issuer: LocalIssuer, harness: Harness
) -> None:
    token = data.draw(signed_random_tokens(issuer))
    outcome = harness.check("signed-random", token)
    if isinstance(outcome, Principal):
        EXAMPLES["accepted"] += 1
        # Whatever was accepted must satisfy every rule, whatever else it carried.
        claims = outcome.claims
        header = json.loads(_segment_json(token.split(".")[0]))
        assert header["alg"] == "RS256"
        assert header["kid"] == issuer.signing_key.kid
        assert not {"crit", "jku", "jwk", "x5u", "x5c"} & header.keys()
        assert claims["iss"] in harness.verifier.settings.issuers
        assert claims["token_use"] == "id"
        assert claims["aud"] == issuer.client_id
        assert isinstance(claims["exp"], (int, float))
        assert not isinstance(claims["exp"], bool)
        assert claims["exp"] > time.time() - harness.verifier.settings.leeway_seconds - 60
        assert isinstance(claims["sub"], str)
        assert claims["sub"]


def _segment_json(segment: str) -> str:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()


_SOURCES = st.sampled_from(["bytes", "mutated", "signed-random"])
_REQUEST_BYTES = st.binary(min_size=1, max_size=300)
_PATHS = st.sampled_from(["/me", "/me-sync", "/scoped"])


@PROFILE
@given(data=st.data())
def test_no_request_ends_in_a_500(
    data: st.DataObject, issuer: LocalIssuer, client: TestClient, safety_net: _SafetyNetWatch
) -> None:
    source = data.draw(_SOURCES)
    if source == "bytes":
        value = data.draw(_REQUEST_BYTES)
    elif source == "mutated":
        value = data.draw(mutated_tokens(*_genuine_pair(issuer))).encode("utf-8", "surrogateescape")
    else:
        value = data.draw(signed_random_tokens(issuer)).encode()
    EXAMPLES[f"fastapi-{source}"] += 1
    safety_net.caught.clear()
    path = data.draw(_PATHS)
    response = client.get(path, headers={"Authorization": value})
    if response.status_code >= 500 or safety_net.caught:
        ESCAPES.append(f"fastapi {path}: {response.status_code} {safety_net.caught[:1]}")
    assert response.status_code in (200, 401, 403)
    assert safety_net.caught == []
    if response.status_code != 200:
        assert response.json()["detail"]["code"]
