"""The routes' answers where no handler's own logic decides them: the error dialect of a path no
route matches, of a method a route does not take, and of a body the hot routes refuse.

An error is in one of three shapes (``shape``): the Neucron error body, RFC 6749 §5.2 JSON or
an HTML page. Each hot route is served ahead of FastAPI (``grantd.api.hot``); what it answers a
malformed body is pinned here, to the message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from grantd import metrics, routes
from grantd.api.errors import Dialects

from support.neucron import new_flow, sign_up

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
    response = await client.post(path, content=b"{}", headers={"Content-Type": JSON})
    assert_error(response, 404, dialect, "not_found", NOT_FOUND)


# ---------------------------------------------------------------- methods a route does not take


@pytest.mark.parametrize(
    ("method", "path", "dialect"),
    [
        # the hot routes: served ahead of FastAPI for one method, a 405 in their dialect for the others
        # (a GET of /oauth/token and /oauth/authorize is Neucron v2's, served by FastAPI)
        ("DELETE", "/oauth/token", "neucron"),
        ("PUT", "/v1/oauth/token", "neucron"),
        ("DELETE", "/oauth/authorize", "neucron"),
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


HOT_PATHS = {
    "/oauth/token": "neucron",
    "/v1/oauth/token": "neucron",
    "/oauth/authorize": "neucron",
    "/v1/oauth/authorize": "neucron",
    "/oauth2/token": "oauth2",
    "/oauth2/introspect": "oauth2",
}
MALFORMED = [
    pytest.param(path, *case, id=f"{path} {case[1]} {case[0][:40]!r}")
    for paths, bodies in (
        (["/oauth/token", "/v1/oauth/token"], NEUCRON_TOKEN_BODIES),
        (["/oauth/authorize", "/v1/oauth/authorize"], NEUCRON_AUTHORIZE_BODIES),
        (["/oauth2/token", "/oauth2/introspect"], FORM_BODIES),
    )
    for path in paths
    for case in bodies
]


@pytest.fixture(scope="module")
async def user_token(client: httpx.AsyncClient) -> str:
    return (await sign_up(client))[1]


@pytest.fixture(scope="module")
async def fastapi_alone(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app without its hot dispatch: FastAPI, which the dispatch hands every other request to,
    answers the hot routes too, with their FastAPI handlers."""
    transport = httpx.ASGITransport(app=app.hot_routes.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture(params=["hot", "fastapi"], ids=["served", "by-fastapi-alone"])
def served_by(request: pytest.FixtureRequest) -> httpx.AsyncClient:
    """Each hot route as served, and by its FastAPI handler: the two answer alike."""
    return request.getfixturevalue("client" if request.param == "hot" else "fastapi_alone")  # type: ignore[no-any-return]


@pytest.mark.parametrize(("path", "body", "content_type", "text"), MALFORMED)
async def test_a_hot_route_refuses_a_malformed_body(
    served_by: httpx.AsyncClient, user_token: str, path: str, body: bytes, content_type: str | None, text: str
) -> None:
    headers = {"Authorization": f"Bearer {user_token}"} if path.endswith("/authorize") else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await served_by.post(path, content=body, headers=headers)
    assert_error(response, 400, HOT_PATHS[path], "invalid_request", text)


@pytest.mark.parametrize(("path", "dialect"), HOT_PATHS.items())
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "streamed"])
async def test_a_hot_route_refuses_a_body_too_large_in_its_dialect(
    served_by: httpx.AsyncClient, app: Any, path: str, dialect: str, declared: bool
) -> None:
    limit = app.state.ctx.settings.max_body_bytes
    body = b"x" * (limit + 1)

    async def streamed() -> Any:
        yield body[:limit]
        yield body[limit:]

    content_type = JSON if dialect == "neucron" else FORM
    response = await served_by.post(path, content=body if declared else streamed(), headers={"Content-Type": content_type})
    assert_error(response, 413, dialect, "invalid_request", f"Request body is larger than {limit} bytes.")


async def test_a_hot_route_and_its_fastapi_handler_answer_alike(
    client: httpx.AsyncClient, fastapi_alone: httpx.AsyncClient
) -> None:
    """A success and the errors of the handlers' own: the same status, body and headers."""
    flow = await new_flow(client)
    basic = httpx.BasicAuth(flow.app_id, flow.key_secret)
    form = {"Content-Type": FORM}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/.well-known/jwks.json", {}),
        ("POST", "/oauth2/token", {"content": b"grant_type=password", "headers": form, "auth": basic}),
        ("POST", "/oauth2/token", {"content": b"grant_type=client_credentials", "headers": form}),
        ("POST", "/oauth2/introspect", {"content": b"token=not-a-token", "headers": form, "auth": basic}),
        ("POST", "/oauth/token", {"json": {"token": {"auth_code": "spent", "key_id": flow.key_id, "key_secret": "wrong"}}}),
        (
            "POST",
            "/v1/oauth/authorize",
            {
                "json": {"token": flow.params(redirect_uri="https://elsewhere.example/cb")},
                "headers": {"Authorization": flow.user_token},
            },
        ),
        ("POST", "/oauth/authorize", {"json": {"token": flow.params()}, "headers": {"Authorization": "Bearer nonsense"}}),
    ]
    for method, path, options in requests:
        hot, fastapi = [await c.request(method, path, **options) for c in (client, fastapi_alone)]
        assert (hot.status_code, hot.content) == (fastapi.status_code, fastapi.content), (path, hot.text, fastapi.text)
        assert without_request_id(hot.headers) == without_request_id(fastapi.headers), path
    counted = metrics.tokens_issued.labels("client_credentials")
    before = counted._value.get()
    issued = [
        await c.post("/oauth2/token", content=b"grant_type=client_credentials", headers=form, auth=basic)
        for c in (client, fastapi_alone)
    ]
    assert [r.status_code for r in issued] == [200, 200], [r.text for r in issued]
    assert counted._value.get() == before + 2, "each counted by the route's declared issues"
    assert set(issued[0].json()) == set(issued[1].json())
    assert without_request_id(issued[0].headers) == without_request_id(issued[1].headers)


def without_request_id(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((name, value) for name, value in headers.multi_items() if name not in ("x-request-id", "content-length"))


# ---------------------------------------------------------------- what comes from the route table


def test_the_hot_dispatch_serves_exactly_the_routes_declared_hot(app: Any) -> None:
    served = routes.served(app.state.ctx.settings)
    declared_hot = {(route.method, route.path): route for route in served if route.hot is not None}
    assert set(app.hot_routes.routes) == set(declared_hot)
    assert {path for _, path in declared_hot} == set(HOT_PATHS) | {"/.well-known/jwks.json"}
    for key, hot in app.hot_routes.routes.items():
        route = declared_hot[key]
        assert (hot.label, hot.handler, hot.dialect, hot.issues) == (route.path, route.hot, route.dialect, route.issues)
        assert hot.reads_body == (route.method == "POST")


async def test_every_declared_route_is_in_the_openapi_document_unless_hidden(
    app: Any, client: httpx.AsyncClient
) -> None:
    document = (await client.get("/openapi.json")).json()["paths"]
    served = routes.served(app.state.ctx.settings)
    documented = {(method.upper(), path) for path, operations in document.items() for method in operations}
    assert documented == {(route.method, route.path) for route in served if not route.hidden}
    hidden = [route for route in served if route.hidden]
    assert {"/signin", "/oauth2/authorize", "/console/apps/{app_id}", "/static/grantd.css"} <= {r.path for r in hidden}
    assert all(route.dialect is routes.PAGE for route in hidden if route.path.startswith(("/account", "/console")))


def test_every_declared_route_is_served_once_under_its_whole_path(app: Any) -> None:
    """The Neucron API, declared once, comes twice: under /v1 and at the root; the admin API only
    under /v1 (/admin is the admin pages)."""
    served = routes.served(app.state.ctx.settings)
    keys = [(route.method, route.path) for route in served]
    assert len(keys) == len(set(keys))
    registered = {
        (method, route.path): route
        for route in app.routes
        if isinstance(route, routes.DeclaredRoute)
        for method in route.methods
    }
    assert set(registered) == set(keys)
    for declared in served:
        route = registered[(declared.method, declared.path)]
        assert route.endpoint is declared.handler and route.dialect is declared.dialect
    neucron = {
        (r.method, r.path)
        for r in served
        if r.dialect is routes.NEUCRON and r.path.startswith("/v1/") and not r.path.startswith("/v1/admin/")
    }
    assert {("GET", "/v1/admin/users"), ("GET", "/admin")} <= set(keys) and ("GET", "/admin/users") not in keys
    assert len(neucron) >= 18 and {(m, p.removeprefix("/v1")) for m, p in neucron} <= set(keys)


def test_one_path_answers_errors_in_one_dialect() -> None:
    with pytest.raises(ValueError, match="/x"):
        Dialects([("/x", routes.NEUCRON), ("/y", routes.PAGE), ("/x", routes.PAGE)])
