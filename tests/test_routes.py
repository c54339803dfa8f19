"""The routes' answers where no handler's own logic decides them: the error dialect of a path no
route matches, of a method a route does not take, and of a body the hot routes refuse.

An error is in one of three shapes (``shape``): the Neucron error body, RFC 6749 §5.2 JSON or
an HTML page. Each hot route is served ahead of FastAPI (``grantd.api.hot``); what it answers a
malformed body is pinned here, to the message.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import sign_up

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
NOT_FOUND = "No such route."
NOT_ALLOWED = "This route does not accept that method."


def shape(response: httpx.Response) -> str:
    """The dialect an error answer is in: "neucron", "oauth2" or "page"."""
    if response.headers["content-type"].startswith("text/html"):
        return "page"
    body = response.json()
    if set(body) == {"error", "message", "status_code"}:
        assert body["status_code"] == response.status_code, body
        return "neucron"
    assert set(body) == {"error", "error_description"}, body
    return "oauth2"


def message(response: httpx.Response) -> str:
    body = response.json()
    return body["message"] if "message" in body else body["error_description"]


def assert_error(response: httpx.Response, status: int, dialect: str, error: str, text: str) -> None:
    assert response.status_code == status, response.text
    assert shape(response) == dialect, response.text
    if dialect == "page":
        assert text in response.text, response.text
        return
    assert response.json()["error"] == error, response.text
    assert message(response) == text, response.text


# ---------------------------------------------------------------- paths no route matches


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/nope", "neucron"),
        ("/no/such/route", "neucron"),
        ("/v1/nope", "neucron"),
        ("/v1", "neucron"),
        ("/oauth/nope", "neucron"),
        ("/auth/nope", "neucron"),
        ("/v1/apps/some-app/nope", "neucron"),
        ("/.well-known/nope", "neucron"),
        ("/static/nope.css", "neucron"),
        ("/docs/nope", "neucron"),
        # a page's path is no folder of pages
        ("/signin/nope", "neucron"),
        ("/accountx", "neucron"),
        ("/oauth2", "neucron"),
        # under /oauth2/ the OAuth 2.0 dialect, even beside the consent page
        ("/oauth2/nope", "oauth2"),
        ("/oauth2/authorize/nope", "oauth2"),
        # under the folders of pages, a page
        ("/account/nope", "page"),
        ("/account/apps/some-app/nope", "page"),
        ("/console/nope", "page"),
        ("/console/apps/some-app/nope/deeper", "page"),
    ],
)
async def test_an_unknown_path_is_answered_in_its_neighbours_dialect(
    client: httpx.AsyncClient, path: str, dialect: str
) -> None:
    assert_error(await client.get(path), 404, dialect, "not_found", NOT_FOUND)


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/oauth/token/nope", "neucron"),
        ("/v1/oauth/tokens", "neucron"),
        ("/oauth/authorizer", "neucron"),
        ("/oauth2/tokens", "oauth2"),
        ("/oauth2/introspect/nope", "oauth2"),
        ("/.well-known/jwks", "neucron"),
    ],
)
async def test_beside_a_hot_route_an_unknown_path_is_a_404(client: httpx.AsyncClient, path: str, dialect: str) -> None:
    assert_error(await client.post(path, content=b"{}", headers={"Content-Type": JSON}), 404, dialect, "not_found", NOT_FOUND)


# ---------------------------------------------------------------- methods a route does not take


@pytest.mark.parametrize(
    ("method", "path", "dialect"),
    [
        # the hot routes: served ahead of FastAPI for one method, a 405 in their dialect for the others
        ("GET", "/oauth/token", "neucron"),
        ("PUT", "/v1/oauth/token", "neucron"),
        ("GET", "/oauth/authorize", "neucron"),
        ("PUT", "/v1/oauth/authorize", "neucron"),
        ("GET", "/oauth2/token", "oauth2"),
        ("DELETE", "/oauth2/token", "oauth2"),
        ("GET", "/oauth2/introspect", "oauth2"),
        ("POST", "/.well-known/jwks.json", "neucron"),
        # and some others
        ("GET", "/oauth2/revoke", "oauth2"),
        ("POST", "/healthz", "neucron"),
        ("PUT", "/oauth2/authorize", "page"),
        ("DELETE", "/signin", "page"),
        ("POST", "/account", "page"),
        ("PUT", "/console/apps/some-app", "page"),
    ],
)
async def test_a_method_a_route_does_not_take_is_a_405_in_the_routes_dialect(
    client: httpx.AsyncClient, method: str, path: str, dialect: str
) -> None:
    response = await client.request(method, path)
    assert_error(response, 405, dialect, "method_not_allowed", NOT_ALLOWED)


# ---------------------------------------------------------------- bodies the hot routes refuse

MUST_BE_OBJECT = "Request body must be a JSON object."
SEND_AS_JSON = " Send it as Content-Type: application/json."
AUTHORIZE_WRAPPER = 'token is required: the body is {"token": {app_id, app_key, state, redirect_uri, permissions}}'

# (body, Content-Type, message) of the Neucron token endpoint and the authorize endpoint
NEUCRON_TOKEN_BODIES = [
    (b"", JSON, "Request body is required: send a JSON object."),
    (b"not json", JSON, "Request body is not valid JSON."),
    (b"\xff\xfe", JSON, "Request body is not valid JSON."),
    (b"[]", JSON, MUST_BE_OBJECT),
    (b"{}", JSON, "token is required."),
    (b'{"token": 1}', JSON, "token must be a JSON object."),
    (b'{"token": null}', JSON, "token must be a JSON object."),
    (b'{"token": {}}', JSON, "token.auth_code is required."),
    (b'{"token": {"auth_code": "", "key_id": "k", "key_secret": "s"}}', JSON, "token.auth_code must not be empty."),
    (b'{"token": {"auth_code": 1, "key_id": "k", "key_secret": "s"}}', JSON, "token.auth_code must be a string."),
    (
        b'{"token": {"auth_code": "a\\u0000", "key_id": "k", "key_secret": "s"}}',
        JSON + "; charset=utf-8",
        "token.auth_code must not contain the NUL character (U+0000).",
    ),
    (b'{"token": {}}', "application/merge-patch+json", "token.auth_code is required."),
    (b'{"token": {"auth_code": "a", "key_id": "k", "key_secret": "s"}}', "text/plain", MUST_BE_OBJECT + SEND_AS_JSON),
    (b'{"token": {"auth_code": "a", "key_id": "k", "key_secret": "s"}}', FORM, MUST_BE_OBJECT + SEND_AS_JSON),
    (b'{"token": {"auth_code": "a", "key_id": "k", "key_secret": "s"}}', None, MUST_BE_OBJECT),
]
NEUCRON_AUTHORIZE_BODIES = [
    (b"", JSON, "Request body is required: send a JSON object."),
    (b"not json", JSON, "Request body is not valid JSON."),
    (b"[]", JSON, MUST_BE_OBJECT),
    (b"{}", JSON, AUTHORIZE_WRAPPER),
    (b'{"token": null, "permissions": null}', JSON, AUTHORIZE_WRAPPER),
    (b'{"token": 1}', JSON, "token must be a JSON object."),
    (b'{"token": {}}', JSON, "token.app_id is required."),
    (b'{"token": {"app_id": "a"}}', JSON, "token.app_key is required."),
    (b'{"permissions": {"app_id": "a"}}', JSON, "permissions.app_key is required."),
    (b'{"token": {"app_id": "a"}}', "text/plain", MUST_BE_OBJECT + SEND_AS_JSON),
    (b'{"token": {"app_id": "a"}}', None, MUST_BE_OBJECT),
]
# (body, Content-Type, message) of both form endpoints on the hot path
FORM_BODIES = [
    (b"grant_type=client_credentials", None, "The body must be application/x-www-form-urlencoded."),
    (b"grant_type=client_credentials", JSON, "The body must be application/x-www-form-urlencoded."),
    (b"\xff", FORM, "The body is not valid form encoding."),
    (b"client_id=a%00", FORM, "The body must not contain the NUL character (%00)."),
    (b"token=a&token=b", FORM, "token is repeated."),
    (b"token=" + b"x" * 4097, FORM, "token is too long."),
]


def neucron_cases(paths: list[str], bodies: list[tuple[bytes, str | None, str]]) -> list[Any]:
    return [pytest.param(path, *case, id=f"{path} {case[1]} {case[0][:40]!r}") for path in paths for case in bodies]


@pytest.fixture(scope="module")
async def user_token(client: httpx.AsyncClient) -> str:
    return (await sign_up(client))[1]


async def post(client: httpx.AsyncClient, path: str, body: bytes, content_type: str | None, **headers: str) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.post(path, content=body, headers=headers)


@pytest.mark.parametrize(
    ("path", "body", "content_type", "text"), neucron_cases(["/oauth/token", "/v1/oauth/token"], NEUCRON_TOKEN_BODIES)
)
async def test_the_neucron_token_endpoint_refuses_a_malformed_body(
    client: httpx.AsyncClient, path: str, body: bytes, content_type: str | None, text: str
) -> None:
    assert_error(await post(client, path, body, content_type), 400, "neucron", "invalid_request", text)


@pytest.mark.parametrize(
    ("path", "body", "content_type", "text"), neucron_cases(["/oauth/authorize", "/v1/oauth/authorize"], NEUCRON_AUTHORIZE_BODIES)
)
async def test_the_neucron_authorize_endpoint_refuses_a_malformed_body(
    client: httpx.AsyncClient, user_token: str, path: str, body: bytes, content_type: str | None, text: str
) -> None:
    response = await post(client, path, body, content_type, Authorization=f"Bearer {user_token}")
    assert_error(response, 400, "neucron", "invalid_request", text)


@pytest.mark.parametrize(
    ("path", "body", "content_type", "text"), neucron_cases(["/oauth2/token", "/oauth2/introspect"], FORM_BODIES)
)
async def test_the_form_endpoints_refuse_a_malformed_body(
    client: httpx.AsyncClient, path: str, body: bytes, content_type: str | None, text: str
) -> None:
    assert_error(await post(client, path, body, content_type), 400, "oauth2", "invalid_request", text)


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/oauth/token", "neucron"),
        ("/v1/oauth/token", "neucron"),
        ("/oauth/authorize", "neucron"),
        ("/v1/oauth/authorize", "neucron"),
        ("/oauth2/token", "oauth2"),
        ("/oauth2/introspect", "oauth2"),
    ],
)
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "streamed"])
async def test_a_hot_route_refuses_a_body_too_large_in_its_dialect(
    client: httpx.AsyncClient, app: Any, path: str, dialect: str, declared: bool
) -> None:
    limit = app.state.ctx.settings.max_body_bytes
    body = b"x" * (limit + 1)

    async def streamed() -> Any:
        yield body[:limit]
        yield body[limit:]

    content_type = JSON if dialect == "neucron" else FORM
    response = await client.post(path, content=body if declared else streamed(), headers={"Content-Type": content_type})
    assert_error(response, 413, dialect, "invalid_request", f"Request body is larger than {limit} bytes.")
