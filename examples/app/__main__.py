"""Start the example API: ``python -m examples.app [--config config.json] [--port 8000]``.

With no pool configured it runs on an embedded local issuer: a fresh RSA key,
its JWKS on a loopback port, and ready-made tokens printed as curl commands.
With ``--config`` (a SimpleIOT config.json) or ``SIOT_AUTHZ_*`` variables it
trusts a real Cognito user pool instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from siot_authz import AuthSettings, CognitoAuth
from siot_authz.testing import LocalIssuer

from .api import create_app

_TOKEN_HOURS = 12


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--config", type=Path, help="a SimpleIOT config.json naming the user pool")
    return parser.parse_args(argv)


def _pool_settings(config: Path | None) -> AuthSettings | None:
    if config is not None:
        return AuthSettings.from_simpleiot_config(config)
    if os.environ.get("SIOT_AUTHZ_USER_POOL_ID"):
        return AuthSettings()  # type: ignore[call-arg]  # fields come from the environment
    return None


def _print_local_instructions(issuer: LocalIssuer, base_url: str) -> None:
    admin = issuer.mint(
        username="ada", groups=["admin"], email="ada@example.com", expires_in=_TOKEN_HOURS * 3600
    )
    user = issuer.mint(username="bob", email="bob@example.com", expires_in=_TOKEN_HOURS * 3600)
    print(
        f"""
siot_authz example API on an embedded local issuer
  issuer: {issuer.issuer}
  JWKS:   {issuer.jwks_url}
  tokens below are valid for {_TOKEN_HOURS} hours; restart for new ones (the key is made at start)

Admin (group 'admin'), sent raw as SimpleIOT's Python clients do:
  export ADMIN_TOKEN='{admin}'
  curl -s -H "Authorization: $ADMIN_TOKEN" {base_url}/v1/me

Non-admin, with a Bearer prefix as SimpleIOT's JavaScript clients do:
  export USER_TOKEN='{user}'
  curl -s -H "Authorization: Bearer $USER_TOKEN" {base_url}/v1/me

Try:
  curl -s -X POST -H "Authorization: $ADMIN_TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"name": "greenhouse"}}' {base_url}/v1/project
  curl -s -X DELETE -H "Authorization: $USER_TOKEN" '{base_url}/v1/project?name=greenhouse'   # 403
  curl -s -X DELETE -H "Authorization: $ADMIN_TOKEN" '{base_url}/v1/project?name=greenhouse'  # ok
  curl -s {base_url}/v1/me                                                                  # 401
  browse to {base_url}/docs and use 'Authorize' with either token (paste it without 'Bearer ')
""",
        flush=True,
    )


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
        issuer.serve()
        settings = issuer.settings()
    app = create_app(CognitoAuth(settings))
    base_url = f"http://{args.host}:{args.port}"
    if issuer is not None:
        _print_local_instructions(issuer, base_url)
    else:
        print(f"siot_authz example API for user pool {settings.user_pool_id} on {base_url}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        if issuer is not None:
            issuer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
