"""An app with Prometheus metrics, served by real uvicorn (and gunicorn) processes in the metrics and logging tests.

``uvicorn served_app:app --workers 2`` (with ``--app-dir tests``) reads one
pool's settings as JSON from ``SIOT_AUTHZ_TEST_SETTINGS`` and how often each
worker writes its gauges from ``SIOT_AUTHZ_TEST_PUBLISH_SECONDS``;
``PROMETHEUS_MULTIPROC_DIR`` is the test's. Every response carries the
answering worker's process id in ``X-Worker-Pid``, so a test knows which
worker counted what.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request, Response

from siot_authz import AuthSettings, CognitoAuth, Principal
from siot_authz.metrics import PrometheusMetrics

SETTINGS_VARIABLE = "SIOT_AUTHZ_TEST_SETTINGS"
PUBLISH_VARIABLE = "SIOT_AUTHZ_TEST_PUBLISH_SECONDS"

metrics = PrometheusMetrics(publish_interval_seconds=float(os.environ.get(PUBLISH_VARIABLE, "5")))
auth = CognitoAuth(AuthSettings(**json.loads(os.environ[SETTINGS_VARIABLE])), observer=metrics)
metrics.watch(auth)
app = FastAPI(lifespan=auth.lifespan)
app.add_route("/metrics", metrics.asgi_app())  # the documented route, unchanged


@app.middleware("http")
async def tell_which_worker(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/me")
async def me(principal: Principal = Depends(auth)) -> dict[str, str]:
    return {"user": principal.username}
