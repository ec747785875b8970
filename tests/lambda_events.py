"""API Gateway events in the shapes AWS documents, with the parts a test varies filled in.

The field sets follow the sample events of the API Gateway developer guide
(Lambda authorizer input for TOKEN and REQUEST, HTTP API authorizer payload
2.0, and proxy-integration payloads 1.0 and 2.0); the account and API ids are
the guide's placeholders, never real ones.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACCOUNT",
    "API_ID",
    "http_api_authorizer_event",
    "http_api_proxy_event",
    "method_arn",
    "request_authorizer_event",
    "rest_proxy_event",
    "token_authorizer_event",
]

ACCOUNT = "123456789012"
API_ID = "abcdef123"
REGION = "us-east-1"


def method_arn(method: str, path: str, *, stage: str = "test", api_id: str = API_ID) -> str:
    """The ARN API Gateway builds for a call of ``method`` on ``path`` (the real path, as AWS sends it)."""
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api_id}/{stage}/{method}{path}"


def token_authorizer_event(token: str | None, method: str = "GET", path: str = "/project") -> dict[str, Any]:
    """A REST ``TOKEN`` authorizer's input."""
    event: dict[str, Any] = {"type": "TOKEN", "methodArn": method_arn(method, path)}
    if token is not None:
        event["authorizationToken"] = token
    return event


def _request_context(method: str, path: str, stage: str = "test") -> dict[str, Any]:
    return {
        "path": f"/{stage}{path}",
        "accountId": ACCOUNT,
        "resourceId": "05c7jb",
        "stage": stage,
        "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "identity": {"apiKey": "", "sourceIp": "10.0.0.1"},
        "resourcePath": path,
        "httpMethod": method,
        "apiId": API_ID,
    }


def request_authorizer_event(
    headers: dict[str, str], method: str = "GET", path: str = "/project"
) -> dict[str, Any]:
    """A REST ``REQUEST`` authorizer's input."""
    return {
        "type": "REQUEST",
        "methodArn": method_arn(method, path),
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {},
        "multiValueQueryStringParameters": {},
        "pathParameters": {},
        "stageVariables": {},
        "requestContext": _request_context(method, path),
    }


def _http_api_request_context(method: str, path: str) -> dict[str, Any]:
    """An HTTP API's ``requestContext``, payload 2.0, as its authorizer and its integration both get it."""
    return {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "domainPrefix": API_ID,
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1"},
        "requestId": "id",
        "routeKey": f"{method} {path}",
        "stage": "$default",
        "time": "12/Mar/2020:19:03:58 +0000",
        "timeEpoch": 1583348638390,
    }


def http_api_authorizer_event(
    headers: dict[str, str], method: str = "GET", path: str = "/project"
) -> dict[str, Any]:
    """An HTTP API Lambda authorizer's input, payload format 2.0 (header names lowercased, as AWS sends them)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": method_arn(method, path, stage="$default"),
        "identitySource": list(lowered.values())[:1],
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "cookies": [],
        "headers": lowered,
        "queryStringParameters": {},
        "requestContext": _http_api_request_context(method, path),
        "pathParameters": {},
        "stageVariables": {},
    }


def rest_proxy_event(
    headers: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/project",
    authorizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A REST API proxy integration's input, payload 1.0 (the authorizer context's values as strings)."""
    request_context = _request_context(method, path)
    if authorizer is not None:
        request_context["authorizer"] = {
            "principalId": "user",
            "integrationLatency": 42,
            **{
                name: str(value) if not isinstance(value, str) else value
                for name, value in authorizer.items()
            },
        }
    headers = headers or {}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": None,
        "isBase64Encoded": False,
    }


def http_api_proxy_event(
    headers: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/project",
    authorizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP API proxy integration's input, payload 2.0 (the authorizer context under ``lambda``)."""
    request_context = _http_api_request_context(method, path)
    if authorizer is not None:
        request_context["authorizer"] = {"lambda": authorizer}
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {name.lower(): value for name, value in (headers or {}).items()},
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
