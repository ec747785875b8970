"""A Cognito user pool in moto's server mode on 127.0.0.1, for the CLI and contract tests.

The CLI talks to Cognito over plain HTTP, so it needs a real server to talk
to; moto in server mode answers InitiateAuth and RespondToAuthChallenge and
serves the pool's JWKS, with tokens signed by its own key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from moto_pool import create_app_client, moto_server

PASSWORD = "Correct-Horse-1"
TEMPORARY_PASSWORD = "Temporary-Pass-1"
NEW_PASSWORD = "Brand-New-Pass-2"


@dataclass
class MotoPool:
    """A user pool with one app client and users in each state a login can meet."""

    endpoint_url: str
    region: str
    user_pool_id: str
    client_id: str
    cognito: Any  # a boto3 cognito-idp client pointed at moto

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint_url}/{self.user_pool_id}/.well-known/jwks.json"

    def write_config(self, directory: Path) -> Path:
        """A SimpleIOT-style flat config.json naming this pool."""
        path = directory / "config.json"
        config = {
            "region": self.region,
            "cognitoUserPoolId": self.user_pool_id,
            "cognitoClientId": self.client_id,
            "apiEndpoint": "https://example.invalid/dev",
        }
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def env(self) -> dict[str, str]:
        """``SIOT_AUTHZ_*`` variables pointing every command and the example app at this pool."""
        return {
            "SIOT_AUTHZ_REGION": self.region,
            "SIOT_AUTHZ_USER_POOL_ID": self.user_pool_id,
            "SIOT_AUTHZ_CLIENT_IDS": self.client_id,
            "SIOT_AUTHZ_JWKS_URL": self.jwks_url,
            "SIOT_AUTHZ_ENDPOINT_URL": self.endpoint_url,
        }

    def add_user(self, username: str, *, confirmed: bool = True, permanent: bool = True) -> str:
        """Create ``username``: with a permanent password, only a temporary one, or signed up unconfirmed."""
        if not confirmed:
            self.cognito.sign_up(ClientId=self.client_id, Username=username, Password=PASSWORD)
            return username
        self.cognito.admin_create_user(
            UserPoolId=self.user_pool_id, Username=username, TemporaryPassword=TEMPORARY_PASSWORD
        )
        if permanent:
            self.cognito.admin_set_user_password(
                UserPoolId=self.user_pool_id, Username=username, Password=PASSWORD, Permanent=True
            )
        return username


@pytest.fixture(scope="module")
def moto_pool() -> Iterator[MotoPool]:
    """One moto server and pool per test module, with the confirmed user ``alice``."""
    region = "us-east-1"
    with moto_server(region) as (endpoint_url, cognito):
        pool_id = cognito.create_user_pool(PoolName="siot-cli-tests")["UserPool"]["Id"]
        client_id = create_app_client(cognito, pool_id, "siot-cli")
        pool = MotoPool(endpoint_url, region, pool_id, client_id, cognito)
        pool.add_user("alice")
        yield pool
