"""Start the example API: ``python -m examples.app [--config config.json] [--port 8000]``.

With no pool configured it runs on an embedded local issuer: a fresh RSA key,
its JWKS on a loopback port, and ready-made tokens printed as curl commands.
With ``--config`` (a SimpleIOT config.json) or ``SIOT_AUTHZ_*`` variables it
trusts a real Cognito user pool instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siot_authz import AuthSettings
from siot_authz.testing import LocalIssuer

from .api import create_app
from .database import DEMO_DEVICE, Database

_TOKEN_HOURS = 12


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--config", type=Path, help="a SimpleIOT config.json naming the user pool")
    parser.add_argument(
        "--db", type=Path, help="the SQLite file of users, roles and projects (default: a temporary one)"
    )
    return parser.parse_args(argv)


def _pool_settings(config: Path | None) -> AuthSettings | None:
    if config is not None:
        return AuthSettings.from_simpleiot_config(config)
    if os.environ.get("SIOT_AUTHZ_USER_POOL_ID"):
        return AuthSettings()  # fields come from the environment
    return None


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed.

    Binding first means a busy port fails here, with a message naming
    ``--port``, instead of after the banner has handed out tokens that the
    port's real owner would then receive.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"error: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            f"is another server using it? Pick a free port with --port, e.g. --port {port + 1}"
        ) from None
    sock.listen(2048)
    return sock


class _NewlineAfterJson:
    """Ends every JSON response body with a newline, so curl's output does not run into the prompt.

    Wraps the whole app, so error bodies from exception handlers get it too;
    ``Content-Length`` is adjusted to match.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_json = False

        async def send_with_newline(message: Message) -> None:
            nonlocal is_json
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                is_json = any(
                    name.lower() == b"content-type" and value.startswith(b"application/json")
                    for name, value in headers
                )
                if is_json:
                    message = {**message, "headers": _longer_by_one(headers)}
            elif message["type"] == "http.response.body" and is_json and not message.get("more_body"):
                message = {**message, "body": message.get("body", b"") + b"\n"}
            await send(message)

        await self.app(scope, receive, send_with_newline)


def _longer_by_one(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (name, str(int(value) + 1).encode()) if name.lower() == b"content-length" else (name, value)
        for name, value in headers
    ]


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does.

    uvicorn stays silent about sockets it is handed (it expects its own
    workers' manager to have said so), and people and scripts wait for this line.
    """

    def __init__(self, config: uvicorn.Config, base_url: str) -> None:
        super().__init__(config)
        self.base_url = base_url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on %s (Press CTRL+C to quit)", self.base_url
            )


def websocket_library() -> str | None:
    """The WebSocket library uvicorn would use here, or None when it has none.

    uvicorn serves WebSockets only through ``websockets`` or ``wsproto``, and
    neither is a dependency of siot-authz: a service picks its own server and
    its extras. Without one, uvicorn declines every upgrade and a browser sees
    the same close 1006 as for a bad token, so the banner says so instead.
    """
    for name in ("websockets", "wsproto"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def has_metrics() -> bool:
    """Whether ``/metrics`` answers (prometheus_client, the ``prometheus`` extra, is installed)."""
    return importlib.util.find_spec("prometheus_client") is not None


def local_banner(
    issuer: LocalIssuer,
    base_url: str,
    *,
    websockets: str | None,
    metrics: bool,
    token_hours: int = _TOKEN_HOURS,
) -> str:
    """What the example prints on an embedded local issuer: tokens, and only commands that work here."""
    admin = issuer.mint(
        username="ada", groups=["admin"], email="ada@example.com", expires_in=token_hours * 3600
    )
    user = issuer.mint(username="bob", email="bob@example.com", expires_in=token_hours * 3600)
    ws_url = base_url.replace("http://", "ws://", 1) + f"/v1/ws/data?serial={DEMO_DEVICE}"
    if websockets is not None:
        stream = (
            f"\nDevice {DEMO_DEVICE}'s data as it is posted, over a WebSocket: paste this into a browser's console\n"
            "(a browser sends its token as the 'bearer' subprotocol), then post a value from the shell:\n"
            f'  new WebSocket("{ws_url}", ["bearer", "{user}"]).onmessage = (m) => console.log(m.data)\n'
            f"  curl -s -X POST -H \"Authorization: $USER_TOKEN\" -H 'Content-Type: application/json' \\\n"
            f'       -d \'{{"serial": "{DEMO_DEVICE}", "name": "temp", "value": 21.5}}\' {base_url}/v1/data\n'
        )
    else:
        stream = (
            f"\nThe WebSocket stream at {ws_url} is OFF: uvicorn has no WebSocket library here,\n"
            "so it would close every WebSocket (1006) as if its token were bad. To turn it on:\n"
            "  python -m pip install websockets   # then restart\n"
        )
    metrics_line = (
        f"  curl -s {base_url}/metrics                                                                # Prometheus\n"
        if metrics
        else ""
    )
    verify = (
        f"siot-authz verify --region {issuer.region} --user-pool-id {issuer.user_pool_id} "
        f'--client-id {issuer.client_id} --jwks-url {issuer.jwks_url} "$ADMIN_TOKEN"'
    )
    return f"""
siot_authz example API on an embedded local issuer
  issuer:    {issuer.issuer}
  JWKS:      {issuer.jwks_url}
  client id: {issuer.client_id}
  tokens below are valid for {token_hours} hours; restart for new ones (the key is made at start)

Admin (ada, role 'admin' in the example's SQLite database), sent raw as SimpleIOT's Python clients do:
  export ADMIN_TOKEN='{admin}'
  curl -s -H "Authorization: $ADMIN_TOKEN" {base_url}/v1/me

Non-admin (bob, role 'member'), with a Bearer prefix as SimpleIOT's JavaScript clients do:
  export USER_TOKEN='{user}'
  curl -s -H "Authorization: Bearer $USER_TOKEN" {base_url}/v1/me

Verify a token as a service would, and see why one is refused:
  {verify}

Try:
  curl -s -X POST -H "Authorization: $ADMIN_TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"name": "greenhouse"}}' {base_url}/v1/project
  curl -s -X DELETE -H "Authorization: $USER_TOKEN" '{base_url}/v1/project?name=greenhouse'   # 403
  curl -s -X DELETE -H "Authorization: $ADMIN_TOKEN" '{base_url}/v1/project?name=greenhouse'  # ok
  curl -s {base_url}/v1/me                                                                  # 401
  curl -s -H "Authorization: $USER_TOKEN" {base_url}/v1/me/roles                            # roles from the database
  curl -s {base_url}/readyz                                                                 # readiness
{metrics_line}  browse to {base_url}/docs and use 'Authorize' with either token (paste it without 'Bearer ')
{stream}"""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # Show siot_authz's refusal codes and JWKS fetches next to uvicorn's access log.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s %(message)s")
    try:
        settings = _pool_settings(args.config)
    except (ValueError, ValidationError) as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2
    issuer: LocalIssuer | None = None
    if settings is None:
        issuer = LocalIssuer()
        settings = issuer.settings()  # serves the JWKS on a loopback port
    try:
        sock = _bind(args.host, args.port)
    except SystemExit:
        if issuer is not None:
            issuer.close()
        raise
    port = int(sock.getsockname()[1])  # the real one, also for --port 0
    database = Database(args.db)
    # The device the banner's WebSocket line watches, so it is not declined as unknown.
    database.seed_demo_device()
    app = create_app(settings, database=database)
    host = f"[{args.host}]" if ":" in args.host else args.host
    base_url = f"http://{host}:{port}"
    if issuer is not None:
        print(
            local_banner(issuer, base_url, websockets=websocket_library(), metrics=has_metrics()), flush=True
        )
    else:
        print(f"siot_authz example API for user pool {settings.user_pool_id} on {base_url}", flush=True)
    config = uvicorn.Config(_NewlineAfterJson(app), host=args.host, port=port, log_level="info")
    try:
        _Server(config, base_url).run(sockets=[sock])
    finally:
        sock.close()
        database.close()
        if issuer is not None:
            issuer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
