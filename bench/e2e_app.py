"""The app the end-to-end benchmark serves with one uvicorn worker.

Every route answers the same tiny JSON body, so the only difference between
them is how (or whether) the caller is authenticated:

* ``/open``: no auth at all, the reference;
* ``/ours``: ``Depends(CognitoAuth)``, our async dependency;
* ``/noop-dep``: an async dependency that only reads the header, to show
  what FastAPI itself charges for a dependency;
* ``/naive``: python-jose ``jwt.decode`` with a prebuilt key in a sync
  dependency, the way many tutorials write it (FastAPI runs it in a threadpool).

Configuration comes from the environment, set by ``run.py``: the usual
``SIOT_AUTHZ_*`` variables, plus ``BENCH_JWK`` (the public JWK for the naive
route) and ``BENCH_ISSUER``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from jose import jwk, jwt
from starlette.requests import HTTPConnection

from siot_authz import AuthSettings, CognitoAuth, Principal

settings = AuthSettings()
auth = CognitoAuth(settings)
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


@app.get("/noop-dep")
async def noop_dep(value: str | None = Depends(header_only)) -> dict[str, str]:
    return {"status": "ok"}


@app.get("/naive")
async def naive(claims: dict[str, Any] = Depends(naive_claims)) -> dict[str, str]:
    return {"status": "ok"}
