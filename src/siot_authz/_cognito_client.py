"""A tiny client for the two Cognito calls a password login needs, over plain httpx.

It sits below both the CLI (``siot-authz login`` and ``contract``) and the
test kit (the pytest plugin's real-pool fixtures), so neither reaches into
the other for it.

``InitiateAuth`` with ``USER_PASSWORD_AUTH`` and ``RespondToAuthChallenge``
are unauthenticated JSON calls for app clients without a secret (as
SimpleIOT's are), so neither boto3 nor AWS credentials are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from ._http import shared_ssl_context

__all__ = [
    "CognitoApiError",
    "CognitoClient",
    "CognitoUnreachable",
    "LoginFailed",
    "NewPasswordRequired",
    "Tokens",
    "log_in_unattended",
]

_TARGET_PREFIX = "AWSCognitoIdentityProviderService."
_CONTENT_TYPE = "application/x-amz-json-1.1"


class CognitoApiError(Exception):
    """Cognito answered with an error; ``error_type`` is its exception name, e.g. NotAuthorizedException."""

    def __init__(self, error_type: str, message: str, status_code: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.status_code = status_code


class CognitoUnreachable(Exception):
    """No answer from the endpoint (connection refused, DNS, TLS, timeout) or one that is not Cognito's."""


@dataclass(frozen=True)
class Tokens:
    """The tokens of a successful login."""

    id_token: str
    access_token: str
    refresh_token: str | None
    expires_in: int | None
    token_type: str | None

    def as_json(self) -> dict[str, Any]:
        """The tokens under Cognito's own names, as ``--json`` prints them."""
        return {
            "IdToken": self.id_token,
            "AccessToken": self.access_token,
            "RefreshToken": self.refresh_token,
            "ExpiresIn": self.expires_in,
            "TokenType": self.token_type,
        }


@dataclass(frozen=True)
class NewPasswordRequired:
    """Cognito wants a new password before it issues tokens (first login of an admin-created user)."""

    username: str
    session: str


def _error_type(response: httpx.Response, body: Any) -> str:
    # Cognito puts the name in "__type", sometimes as "namespace#Name", and in a header.
    raw = body.get("__type") if isinstance(body, dict) else None
    if not isinstance(raw, str):
        raw = response.headers.get("x-amzn-ErrorType", "UnknownError")
    return raw.rsplit("#", 1)[-1].split(":", 1)[0]


class CognitoClient:
    """Calls one Cognito endpoint for one app client."""

    def __init__(
        self,
        endpoint: str,
        client_id: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self._timeout = timeout
        self._transport = transport

    def _call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"X-Amz-Target": _TARGET_PREFIX + action, "Content-Type": _CONTENT_TYPE}
        try:
            with httpx.Client(
                timeout=self._timeout, transport=self._transport, verify=shared_ssl_context()
            ) as client:
                response = client.post(self.endpoint, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise CognitoUnreachable(f"{type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            if not isinstance(body, dict):
                raise CognitoUnreachable(f"HTTP {response.status_code} without a Cognito error body")
            message = body.get("message") or body.get("Message") or ""
            raise CognitoApiError(_error_type(response, body), str(message), response.status_code)
        if not isinstance(body, dict):
            raise CognitoUnreachable(f"HTTP {response.status_code} with a body that is not a JSON object")
        return body

    def _outcome(self, body: dict[str, Any], username: str) -> Tokens | NewPasswordRequired:
        result = body.get("AuthenticationResult")
        if isinstance(result, dict) and result.get("IdToken") and result.get("AccessToken"):
            return Tokens(
                id_token=result["IdToken"],
                access_token=result["AccessToken"],
                refresh_token=result.get("RefreshToken"),
                expires_in=result.get("ExpiresIn"),
                token_type=result.get("TokenType"),
            )
        challenge = body.get("ChallengeName")
        if challenge == "NEW_PASSWORD_REQUIRED":
            parameters = body.get("ChallengeParameters") or {}
            # Cognito names the user by its internal name here; the response must use it.
            challenged_user = parameters.get("USER_ID_FOR_SRP") or parameters.get("USERNAME") or username
            return NewPasswordRequired(username=str(challenged_user), session=str(body.get("Session", "")))
        if challenge:
            raise CognitoApiError(
                "UnsupportedChallenge",
                f"Cognito asked for the {challenge} challenge, which this CLI cannot answer.",
                200,
            )
        raise CognitoUnreachable("the response has neither tokens nor a challenge")

    def initiate_auth(self, username: str, password: str) -> Tokens | NewPasswordRequired:
        """Log in with ``USER_PASSWORD_AUTH``."""
        body = self._call(
            "InitiateAuth",
            {
                "AuthFlow": "USER_PASSWORD_AUTH",
                "ClientId": self.client_id,
                "AuthParameters": {"USERNAME": username, "PASSWORD": password},
            },
        )
        return self._outcome(body, username)

    def set_new_password(
        self, challenge: NewPasswordRequired, new_password: str
    ) -> Tokens | NewPasswordRequired:
        """Answer ``NEW_PASSWORD_REQUIRED`` with ``new_password``."""
        body = self._call(
            "RespondToAuthChallenge",
            {
                "ChallengeName": "NEW_PASSWORD_REQUIRED",
                "ClientId": self.client_id,
                "Session": challenge.session,
                "ChallengeResponses": {"USERNAME": challenge.username, "NEW_PASSWORD": new_password},
            },
        )
        return self._outcome(body, challenge.username)


# Cognito error name -> what to tell the person, and whether it is a set-up problem (True) or a refusal.
_REFUSALS: dict[str, tuple[str, bool]] = {
    "NotAuthorizedException": ("wrong username or password", False),
    "UserNotFoundException": ("no such user in this user pool", False),
    "UserNotConfirmedException": (
        "the user has signed up but is not confirmed; confirm it with the code Cognito sent "
        "(or an administrator can run 'aws cognito-idp admin-confirm-sign-up')",
        False,
    ),
    "PasswordResetRequiredException": (
        "an administrator has required a password reset; reset it through the app's "
        "forgot-password flow first",
        False,
    ),
    "InvalidPasswordException": ("the new password does not meet the pool's password policy", False),
    "ResourceNotFoundException": (
        "Cognito does not know this app client in this region; check region and cognitoClientId",
        True,
    ),
    "InvalidParameterException": (
        "Cognito rejected the request; the app client must allow USER_PASSWORD_AUTH",
        True,
    ),
    "TooManyRequestsException": ("Cognito is throttling requests; wait and try again", True),
}


class LoginFailed(Exception):
    """A login that could not end in tokens, with a message for a person; ``is_setup_problem`` tells
    a configuration or network problem (the client, the endpoint) from a refusal of this user."""

    def __init__(self, message: str, *, is_setup_problem: bool) -> None:
        super().__init__(message)
        self.message = message
        self.is_setup_problem = is_setup_problem

    @classmethod
    def from_api_error(cls, error: CognitoApiError) -> LoginFailed:
        """What a Cognito error means for the person logging in."""
        explanation, is_setup_problem = _REFUSALS.get(error.error_type, ("Cognito refused the login", False))
        if error.error_type == "NotAuthorizedException" and "secret" in error.message.lower():
            # Same exception name, different cause: the app client has a secret.
            explanation = "this app client has a client secret; use an app client without one"
            is_setup_problem = True
        detail = f" (Cognito: {error.error_type}: {error.message})" if error.message else ""
        return cls(f"login failed: {explanation}{detail}", is_setup_problem=is_setup_problem)


def log_in_unattended(
    endpoint: str,
    client_id: str,
    username: str,
    password: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> Tokens:
    """Log in with no one to ask, for callers that hold the password already (CI, the test kit's fixtures).

    A refusal, an unreachable endpoint, or a demand for a new password (which
    only a person can answer) is a :class:`LoginFailed` saying what to do.
    """
    client = CognitoClient(endpoint, client_id, timeout=timeout, transport=transport)
    try:
        outcome = client.initiate_auth(username, password)
    except CognitoApiError as error:
        raise LoginFailed.from_api_error(error) from None
    except CognitoUnreachable as error:
        raise LoginFailed(f"cannot reach Cognito at {endpoint}: {error}", is_setup_problem=True) from None
    if isinstance(outcome, NewPasswordRequired):
        raise LoginFailed(
            f"login failed: Cognito requires {outcome.username} to choose a new password first; "
            "log in once with 'siot-authz login' in a terminal, or have an administrator run "
            "'aws cognito-idp admin-set-user-password --permanent'",
            is_setup_problem=False,
        )
    return outcome
