"""A real Cognito user pool to log in to: moto's emulator in server mode, on 127.0.0.1 only.

``moto_user_pool()`` starts ``ThreadedMotoServer`` on a free loopback port,
creates a pool, an app client that allows ``USER_PASSWORD_AUTH`` and a
confirmed user with a permanent password (optionally in groups), and yields a
:class:`MotoPool`. ``pool.login()`` logs in exactly as SimpleIOT's CLI does
and returns the tokens moto signed with its own key.

AWS credentials and endpoints are set to dummy loopback values for the whole
block, so neither boto3 nor moto can reach the internet or read a real profile.

boto3 and moto are imported where a server or client is made, not at the top: they take about
a third of a second to import, which every pytest worker would pay while collecting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from siot_authz import AuthSettings

__all__ = ["MotoPool", "Tokens", "create_app_client", "moto_server", "moto_user_pool"]

_DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # No profile, no instance metadata lookups: credentials come only from above.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Tokens:
    """What ``initiate_auth`` returns in ``AuthenticationResult``."""

    id_token: str
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class MotoPool:
    """A user pool on a running moto server, with one app client and one user."""

    endpoint_url: str
    region: str
    user_pool_id: str
    client_id: str
    username: str
    password: str

    @property
    def jwks_url(self) -> str:
        """Where moto serves the pool's JWKS (the real pool's URL is on AWS)."""
        return f"{self.endpoint_url}/{self.user_pool_id}/.well-known/jwks.json"

    def cognito(self) -> Any:
        """A boto3 ``cognito-idp`` client talking to moto only."""
        import boto3

        return boto3.client(
            "cognito-idp",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def login(
        self, *, client_id: str | None = None, username: str | None = None, password: str | None = None
    ) -> Tokens:
        """Log in as SimpleIOT's CLI does: ``initiate_auth`` with ``USER_PASSWORD_AUTH``.

        Defaults to the pool's own app client and user.
        """
        response = self.cognito().initiate_auth(
            ClientId=client_id or self.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={
                "USERNAME": username or self.username,
                "PASSWORD": password or self.password,
            },
        )
        result = response["AuthenticationResult"]
        return Tokens(result["IdToken"], result["AccessToken"], result["RefreshToken"])

    def add_client(self, name: str) -> str:
        """Create another app client in the pool and return its id."""
        return create_app_client(self.cognito(), self.user_pool_id, name)

    def add_user(self, username: str, password: str, *, groups: Iterable[str] = ()) -> None:
        """Create another confirmed user, in ``groups`` (which must not exist yet)."""
        _create_user(self.cognito(), self.user_pool_id, username, password, groups=groups, email=None)

    def settings(self, **overrides: Any) -> AuthSettings:
        """Settings that trust this pool, with ``jwks_url`` pointed at moto."""
        pool = {"region": self.region, "user_pool_id": self.user_pool_id, "jwks_url": self.jwks_url}
        return AuthSettings(**{**pool, "client_ids": (self.client_id,), **overrides})


def create_app_client(cognito: Any, user_pool_id: str, name: str) -> str:
    """An app client allowing USER_PASSWORD_AUTH, as SimpleIOT's login needs."""
    client = cognito.create_user_pool_client(
        UserPoolId=user_pool_id,
        ClientName=name,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )
    return str(client["UserPoolClient"]["ClientId"])


def _create_user(
    cognito: Any,
    user_pool_id: str,
    username: str,
    password: str,
    *,
    groups: Iterable[str],
    email: str | None,
) -> None:
    attributes = [{"Name": "email", "Value": email}] if email is not None else []
    cognito.admin_create_user(
        UserPoolId=user_pool_id, Username=username, UserAttributes=attributes, MessageAction="SUPPRESS"
    )
    # A permanent password confirms the user: no NEW_PASSWORD_REQUIRED challenge.
    cognito.admin_set_user_password(
        UserPoolId=user_pool_id, Username=username, Password=password, Permanent=True
    )
    for group in groups:
        cognito.create_group(UserPoolId=user_pool_id, GroupName=group)
        cognito.admin_add_user_to_group(UserPoolId=user_pool_id, Username=username, GroupName=group)


@contextmanager
def _dummy_aws_env() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in _DUMMY_AWS_ENV}
    os.environ.update(_DUMMY_AWS_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def moto_server(region: str = "us-east-1") -> Iterator[tuple[str, Any]]:
    """moto in server mode on 127.0.0.1 with dummy AWS credentials; yields (endpoint URL, cognito-idp client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    werkzeug_logger = logging.getLogger("werkzeug")
    saved_level = werkzeug_logger.level
    werkzeug_logger.setLevel(logging.WARNING)  # one access-log line per request otherwise
    with _dummy_aws_env():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint_url = f"http://{host}:{port}"
            cognito = boto3.client(
                "cognito-idp",
                region_name=region,
                endpoint_url=endpoint_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            yield endpoint_url, cognito
        finally:
            server.stop()
            werkzeug_logger.setLevel(saved_level)


@contextmanager
def moto_user_pool(
    *,
    region: str = "us-east-1",
    username: str = "siot-user",
    password: str = "Correct-Horse-9-Battery",
    groups: Iterable[str] = (),
    email: str | None = "siot-user@example.com",
) -> Iterator[MotoPool]:
    """Start moto on 127.0.0.1, set up a pool with a confirmed user, and yield it."""
    with moto_server(region) as (endpoint_url, cognito):
        user_pool_id = cognito.create_user_pool(PoolName="siot-authz-test")["UserPool"]["Id"]
        client_id = create_app_client(cognito, user_pool_id, "siot-cli")
        _create_user(cognito, user_pool_id, username, password, groups=groups, email=email)
        yield MotoPool(
            endpoint_url=endpoint_url,
            region=region,
            user_pool_id=user_pool_id,
            client_id=client_id,
            username=username,
            password=password,
        )
