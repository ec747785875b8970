"""The app the end-to-end benchmark serves with one uvicorn worker.

Every route answers the same tiny JSON body, so the only difference between
them is how (or whether) the caller is authenticated:

* ``/open``: no auth at all, the reference;
* ``/ours``: ``Depends(CognitoAuth)``, our async dependency, with every
  feature of the other issues on: several pools (the tokens' own plus the
  ``BENCH_EXTRA_JWKS`` ones, keys handed in), Prometheus metrics, and
  ``BENCH_REVOCATION_ENTRIES`` revocation entries for other users;
* ``/noop``: an async dependency that only finds the header: what FastAPI
  charges for any dependency, the floor for a hot token;
* ``/limit``: an async dependency that splits the token, decodes the
  signature and runs one bare RS256 verify, checking no claim: the physical
  floor for a token never seen before;
* ``/naive``: python-jose ``jwt.decode`` with a prebuilt key in a sync
  dependency, the way many tutorials write it (FastAPI runs it in a threadpool).

Configuration comes from the environment, set by ``run.py``: the usual
``SIOT_AUTHZ_*`` variables, plus ``BENCH_JWK`` (the public JWK for the naive
route) and ``BENCH_ISSUER``.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import Depends, FastAPI, Header, HTTPException
from jose import jwk, jwt
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from siot_authz import AuthSettings, CognitoAuth, Principal
from siot_authz.metrics import PrometheusMetrics

settings = AuthSettings()
_extra_jwks: dict[str, Any] = json.loads(os.environ.get("BENCH_EXTRA_JWKS", "{}"))
# The tokens' pool comes last, so routing by issuer has several to choose from.
_pools = [settings.model_copy(update={"user_pool_id": pool_id}) for pool_id in _extra_jwks] + [settings]
auth = CognitoAuth(_pools, jwks=_extra_jwks, observer=PrometheusMetrics(CollectorRegistry()))
for _i in range(int(os.environ.get("BENCH_REVOCATION_ENTRIES", "0")) // 2):
    auth.verifier.revoke_user_sync(settings.user_pool_id, f"revoked-user-{_i}")
    auth.verifier.revoke_session_sync(settings.user_pool_id, f"revoked-session-{_i}")
app = FastAPI(lifespan=auth.lifespan)

_naive_key = jwk.construct(json.loads(os.environ["BENCH_JWK"]), "RS256")
_naive_issuer = os.environ["BENCH_ISSUER"]
_naive_audience = settings.client_ids[0]


def naive_claims(authorization: str = Header()) -> dict[str, Any]:
    """The naive baseline: a sync dependency calling python-jose's ``jwt.decode``."""
    token = authorization.removeprefix("Bearer ")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _naive_key, algorithms=["RS256"], audience=_naive_audience, issuer=_naive_issuer
        )
    except Exception:
        raise HTTPException(status_code=401) from None
    return claims


@app.get("/open")
async def open_route() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/ours")
async def ours(principal: Principal = Depends(auth)) -> dict[str, str]:
    return {"status": "ok"}


async def header_only(connection: HTTPConnection) -> str | None:
    """A dependency that does nothing FastAPI does not already charge for."""
    return connection.headers.get("authorization")


@app.get("/noop")
async def noop(value: str | None = Depends(header_only)) -> dict[str, str]:
    return {"status": "ok"}


_limit_key = _naive_key.prepared_key
assert isinstance(_limit_key, rsa.RSAPublicKey)
_pkcs1, _sha256 = padding.PKCS1v15(), hashes.SHA256()


async def bare_rs256(connection: HTTPConnection) -> str:
    """The floor for a new token: find the header, split, decode the signature, one RS256 verify."""
    token = connection.headers.get("authorization", "").removeprefix("Bearer ")
    signing_input, _, signature = token.rpartition(".")
    try:
        _limit_key.verify(
            base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
            signing_input.encode(),
            _pkcs1,
            _sha256,
        )
    except (InvalidSignature, ValueError):
        raise HTTPException(status_code=401) from None
    return token


@app.get("/limit")
async def limit(token: str = Depends(bare_rs256)) -> dict[str, str]:
    return {"status": "ok"}


@app.get("/naive")
async def naive(claims: dict[str, Any] = Depends(naive_claims)) -> dict[str, str]:
    return {"status": "ok"}
