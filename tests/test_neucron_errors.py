"""Every row of the spec's error table, through HTTP, on the Neucron routes.

Each error must be exactly ``{"error", "message", "status_code"}`` with the HTTP
status equal to ``status_code``, the spec's error code, and a human sentence as
message (naming the offending field for ``invalid_request``). No input a client
can send may produce a 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from support.neucron import PASSWORD, Flow, new_flow, ok, sign_up, unique_email
from support.routes import api_routes, flat_success, needs_user, neucron_paths, takes_access_token

PREFIXES = ["", "/v1"]
JSON = {"Content-Type": "application/json"}

# The three OAuth endpoints: method, path, wrapper object, the fields inside it.
AUTHORIZE_FIELDS = ("app_id", "app_key", "state", "redirect_uri", "permissions")
TOKEN_FIELDS = ("auth_code", "key_id", "key_secret")
OAUTH = {
    "authorize": ("POST", "/oauth/authorize", "token", AUTHORIZE_FIELDS),
    "grant": ("PATCH", "/oauth/permissions/grant", "permissions", AUTHORIZE_FIELDS),
    "token": ("POST", "/oauth/token", "token", TOKEN_FIELDS),
}
OAUTH_FIELDS = [(endpoint, name) for endpoint, (_, _, _, fields) in OAUTH.items() for name in fields]

# Words that betray internals leaking into a message.
INTERNALS = ("Traceback", "sqlalchemy", "sqlite", "asyncpg", "pydantic", "errors.pydantic.dev", "input_value", "File \"")


# ---------------------------------------------------------------- helpers


def assert_error(response: httpx.Response, status: int, error: str, *mentions: str) -> str:
    """The response is the Neucron error body with this status and code; returns the message."""
    assert response.status_code == status, f"expected {status} {error}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error", "message", "status_code"}, body
    assert body["error"] == error, body
    assert body["status_code"] == response.status_code, body
    assert type(body["status_code"]) is int, body
    message = body["message"]
    assert_human(message)
    for mention in mentions:
        assert mention in message, f"{mention!r} not named in {message!r}"
    return message


def assert_human(message: Any) -> None:
    assert isinstance(message, str), message
    assert message.strip() == message and len(message) >= 8, message
    assert len(message.split()) >= 2, f"not a sentence: {message!r}"
    assert message[0].isalnum(), message
    for marker in INTERNALS:
        assert marker.lower() not in message.lower(), f"internals in message: {message!r}"


def assert_envelope(response: httpx.Response) -> dict[str, Any]:
    return ok(response)


def assert_no_server_error(response: httpx.Response, what: str, *, flat: bool = False) -> None:
    """Any status below 500, and the Neucron shape whatever the outcome (``flat``: a 200 of a v2
    call is its body itself, not the envelope)."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    body = response.json()
    if response.status_code == 200 and flat:
        assert isinstance(body, dict) and "data" not in body, f"{what}: {body}"
    elif response.status_code == 200:
        ok(response)  # the envelope (a log-in's with v2's keys beside it)
    else:
        assert set(body) == {"error", "message", "status_code"}, f"{what}: {body}"
        assert body["status_code"] == response.status_code, f"{what}: {body}"
        assert isinstance(body["error"], str) and body["error"], f"{what}: {body}"
        assert_human(body["message"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def inner(flow: Flow, endpoint: str, **overrides: Any) -> dict[str, Any]:
    """A well-formed object for the endpoint's wrapper (the token endpoint with an unknown code)."""
    if endpoint == "token":
        body: dict[str, Any] = {"auth_code": "unknown-code", "key_id": flow.key_id, "key_secret": flow.key_secret}
        body.update(overrides)
        return body
    return flow.params(**overrides)


async def send(
    client: httpx.AsyncClient,
    flow: Flow,
    endpoint: str,
    body: Any = None,
    *,
    content: bytes | str | None = None,
    prefix: str = "",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """``body`` as JSON, or ``content`` as raw bytes, to one of the three endpoints, as the flow's user."""
    method, path, _, _ = OAUTH[endpoint]
    all_headers = {**JSON, **bearer(flow.user_token)}
    all_headers.update(headers or {})
    if content is None:
        content = json.dumps(body)
    if isinstance(content, str):
        content = content.encode()
    return await client.request(method, prefix + path, content=content, headers=all_headers)


def wrapped(endpoint: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {OAUTH[endpoint][2]: fields}


def field_name(endpoint: str, name: str) -> str:
    """How a message names the field: ``token.app_id``, ``permissions.state``."""
    return f"{OAUTH[endpoint][2]}.{name}"


def raw_object(pairs: Iterable[tuple[str, str]]) -> str:
    """A JSON object text whose values are given as raw JSON (to write escapes such as \\ud800)."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


def raw_body(endpoint: str, flow: Flow, name: str, raw_value: str) -> str:
    """The endpoint's body with one field replaced by a raw JSON text."""
    fields = inner(flow, endpoint)
    pairs = [(k, raw_value if k == name else json.dumps(v)) for k, v in fields.items()]
    return raw_object([(OAUTH[endpoint][2], raw_object(pairs))])


@pytest.fixture(scope="module")
async def shared(client: httpx.AsyncClient) -> Flow:
    """A flow for requests that change nothing (they fail before any write)."""
    return await new_flow(client)


# ---------------------------------------------------------------- invalid_request: the body


NOT_AN_OBJECT = [
    pytest.param(b"not json", "not valid JSON", id="not-json"),
    pytest.param(b"{", "not valid JSON", id="truncated"),
    pytest.param(b'{"token": {"app_id": "a",}}', "not valid JSON", id="trailing-comma"),
    pytest.param(b"", "Request body", id="empty"),
    pytest.param(b"[]", "Request body", id="array"),
    pytest.param(b'[{"token": {}}]', "Request body", id="array-of-object"),
    pytest.param(b'"token"', "Request body", id="string"),
    pytest.param(b"42", "Request body", id="number"),
    pytest.param(b"true", "Request body", id="bool"),
    pytest.param(b"null", "Request body", id="null"),
    pytest.param(b"\xff\xfe{\x00}", "", id="not-utf8"),
]


@pytest.mark.parametrize(("content", "mention"), NOT_AN_OBJECT)
async def test_body_not_a_json_object(client: httpx.AsyncClient, shared: Flow, content: bytes, mention: str) -> None:
    for endpoint in OAUTH:
        for prefix in PREFIXES:
            response = await send(client, shared, endpoint, content=content, prefix=prefix)
            assert_error(response, 400, "invalid_request", mention)


@pytest.mark.parametrize("endpoint", OAUTH)
async def test_missing_wrapper_object(client: httpx.AsyncClient, shared: Flow, endpoint: str) -> None:
    wrapper = OAUTH[endpoint][2]
    for body in ({}, {"other": inner(shared, endpoint)}, {"data": {}}):
        response = await send(client, shared, endpoint, body)
        assert_error(response, 400, "invalid_request", wrapper)


@pytest.mark.parametrize("endpoint", OAUTH)
@pytest.mark.parametrize("value", ["text", "", 1, 1.5, True, False, [], [{}], None], ids=repr)
async def test_wrapper_of_wrong_type(client: httpx.AsyncClient, shared: Flow, endpoint: str, value: Any) -> None:
    response = await send(client, shared, endpoint, wrapped(endpoint, value))
    assert_error(response, 400, "invalid_request", OAUTH[endpoint][2])


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("endpoint", "name"), OAUTH_FIELDS)
async def test_missing_field(client: httpx.AsyncClient, shared: Flow, endpoint: str, name: str, prefix: str) -> None:
    fields = inner(shared, endpoint)
    del fields[name]
    response = await send(client, shared, endpoint, wrapped(endpoint, fields), prefix=prefix)
    message = assert_error(response, 400, "invalid_request", field_name(endpoint, name))
    assert "required" in message


@pytest.mark.parametrize(("endpoint", "name"), OAUTH_FIELDS)
async def test_field_of_wrong_type(client: httpx.AsyncClient, shared: Flow, endpoint: str, name: str) -> None:
    for value in (0, 123, -1, 1.5, 1e308, True, False, [], ["read_profile"], {}, {"a": "b"}, None):
        response = await send(client, shared, endpoint, wrapped(endpoint, inner(shared, endpoint, **{name: value})))
        message = assert_error(response, 400, "invalid_request", field_name(endpoint, name))
        assert "string" in message, (value, message)


@pytest.mark.parametrize(("endpoint", "name"), OAUTH_FIELDS)
async def test_empty_string_field(client: httpx.AsyncClient, shared: Flow, endpoint: str, name: str) -> None:
    response = await send(client, shared, endpoint, wrapped(endpoint, inner(shared, endpoint, **{name: ""})))
    assert_error(response, 400, "invalid_request", field_name(endpoint, name))


@pytest.mark.parametrize(("endpoint", "name"), OAUTH_FIELDS)
async def test_extremely_long_field(client: httpx.AsyncClient, shared: Flow, endpoint: str, name: str) -> None:
    for length in (2_049, 20_000, 60_000):
        response = await send(client, shared, endpoint, wrapped(endpoint, inner(shared, endpoint, **{name: "a" * length})))
        assert_error(response, 400, "invalid_request", field_name(endpoint, name), "too long")


@pytest.mark.parametrize("endpoint", ["authorize", "grant"])
@pytest.mark.parametrize("permissions", [",read_profile", "read_profile,", "read_profile,,write_data", " , ", ",", "   "])
async def test_permissions_with_empty_items(client: httpx.AsyncClient, shared: Flow, endpoint: str, permissions: str) -> None:
    response = await send(client, shared, endpoint, wrapped(endpoint, shared.params(permissions=permissions)))
    assert_error(response, 400, "invalid_request", "permissions")


async def test_permissions_spaces_trimmed_and_duplicates_folded(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    data = assert_envelope(await flow.authorize(permissions=" read_profile , write_data,read_profile "))
    token = assert_envelope(await flow.redeem(data["code"]))
    assert token["scope"].split() == ["read_profile", "write_data"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("endpoint", OAUTH)
async def test_body_too_large(client: httpx.AsyncClient, shared: Flow, endpoint: str, prefix: str) -> None:
    body = json.dumps(wrapped(endpoint, inner(shared, endpoint, state="x" * 1_000_000, auth_code="x" * 1_000_000)))
    assert len(body) > 1_000_000
    response = await send(client, shared, endpoint, content=body, prefix=prefix)
    assert_error(response, 413, "invalid_request")


@pytest.mark.parametrize("endpoint", OAUTH)
async def test_body_too_large_without_content_length(client: httpx.AsyncClient, shared: Flow, endpoint: str) -> None:
    """Chunked, so the size is known only while reading."""
    chunk = b" " * 65536

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"token": {"state": "'
        for _ in range(16):
            yield chunk
        yield b'"}}'

    method, path, _, _ = OAUTH[endpoint]
    response = await client.request(method, path, content=chunks(), headers={**JSON, **bearer(shared.user_token)})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "invalid_request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("endpoint", OAUTH)
async def test_body_not_sent_as_json(client: httpx.AsyncClient, shared: Flow, endpoint: str, content_type: str) -> None:
    """A perfectly good JSON text, labelled as something else."""
    response = await send(
        client, shared, endpoint, wrapped(endpoint, inner(shared, endpoint)), headers={"Content-Type": content_type}
    )
    assert_error(response, 400, "invalid_request", "application/json")


@pytest.mark.parametrize("endpoint", OAUTH)
@pytest.mark.parametrize(
    "content",
    [
        pytest.param("[" * 10_000 + "]" * 10_000, id="10000-nested-arrays"),
        pytest.param('{"a":' * 10_000 + "1" + "}" * 10_000, id="10000-nested-objects"),
        pytest.param('{"token":' + "[" * 5_000 + "]" * 5_000 + "}", id="nested-in-wrapper"),
    ],
)
async def test_deeply_nested_json(client: httpx.AsyncClient, shared: Flow, endpoint: str, content: str) -> None:
    response = await send(client, shared, endpoint, content=content)
    assert_error(response, 400, "invalid_request")


async def test_duplicate_keys_last_one_wins(client: httpx.AsyncClient, shared: Flow) -> None:
    """As in JavaScript's JSON.parse (what Neucron's SDK speaks): the last duplicate counts."""
    good, bad = json.dumps(shared.app_id), json.dumps(str(uuid.uuid4()))
    rest = [(k, json.dumps(v)) for k, v in shared.params().items() if k != "app_id"]
    headers = {**JSON, **bearer(shared.user_token)}

    content = raw_object([("token", raw_object([("app_id", bad), *rest, ("app_id", good)]))])
    assert_envelope(await shared.client.post("/oauth/authorize", content=content, headers=headers))

    content = raw_object([("token", raw_object([("app_id", good), *rest, ("app_id", bad)]))])
    assert_error(await shared.client.post("/oauth/authorize", content=content, headers=headers), 401, "invalid_client")

    broken = raw_object([("token", raw_object([(k, v) for k, v in rest]))])
    content = raw_object([("token", raw_object([("app_id", good), *rest])), ("token", broken)])
    assert_error(
        await shared.client.post("/oauth/authorize", content=content, headers=headers), 400, "invalid_request", "token.app_id"
    )


async def test_unknown_extra_fields_are_ignored(client: httpx.AsyncClient, shared: Flow) -> None:
    extra = {"scope": "admin", "client_secret": None, "nested": {"a": [1, 2]}, "app_id ": 5}
    headers = bearer(shared.user_token)

    response = await client.post("/oauth/authorize", json={"token": shared.params(**extra), **extra}, headers=headers)
    code = assert_envelope(response)["code"]
    response = await client.patch(
        "/v1/oauth/permissions/grant", json={"permissions": shared.params(**extra), **extra}, headers=headers
    )
    assert assert_envelope(response) == {"message": "Permissions granted successfully."}
    body = {"token": {"auth_code": code, "key_id": shared.key_id, "key_secret": shared.key_secret, **extra}, **extra}
    assert "access_token" in assert_envelope(await client.post("/v1/oauth/token", json=body))

    response = await client.post("/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD, **extra})
    assert "access_token" in assert_envelope(response)


async def test_permissions_wrapper_accepted_on_authorize(client: httpx.AsyncClient, shared: Flow) -> None:
    response = await client.post("/oauth/authorize", json={"permissions": shared.params()}, headers=bearer(shared.user_token))
    assert "code" in assert_envelope(response)


# ---------------------------------------------------------------- invalid_request: unicode


EMOJI = "🔐✨👩🏽‍💻"
RTL = "مرحبا\u202eevil\u202c שלום"


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("state", [EMOJI, RTL, "日本語 ñ ü \u00a0 \u2028", "a" * 1024], ids=["emoji", "rtl", "mixed", "max-length"])
async def test_unicode_state_is_returned_as_sent(client: httpx.AsyncClient, shared: Flow, state: str, prefix: str) -> None:
    response = await client.post(
        prefix + "/oauth/authorize", json={"token": shared.params(state=state)}, headers=bearer(shared.user_token)
    )
    data = assert_envelope(response)
    assert data["state"] == state
    assert httpx.URL(data["redirect_url"]).params["state"] == state
    assert_envelope(await shared.redeem(data["code"]))


@pytest.mark.parametrize("value", [EMOJI, RTL, "x\u0000y", "\u0000"], ids=["emoji", "rtl", "nul-inside", "nul"])
async def test_unicode_in_credentials(client: httpx.AsyncClient, shared: Flow, value: str) -> None:
    """Not the app's credentials: the client is refused; a NUL character is a malformed field."""
    for endpoint, name, error in [
        ("authorize", "app_id", "invalid_client"),
        ("authorize", "app_key", "invalid_client"),
        ("grant", "app_id", "invalid_client"),
        ("token", "key_id", "invalid_client"),
        ("token", "key_secret", "invalid_client"),
        ("token", "auth_code", "invalid_grant"),
    ]:
        response = await send(client, shared, endpoint, wrapped(endpoint, inner(shared, endpoint, **{name: value})))
        if "\u0000" in value:
            assert_error(response, 400, "invalid_request", field_name(endpoint, name), "NUL")
        else:
            assert_error(response, 401, error)


@pytest.mark.parametrize("value", [EMOJI, RTL, "https://app.example.com/callback\u0000", "https://app.example.com/cällback"])
async def test_unicode_redirect_uri(client: httpx.AsyncClient, shared: Flow, value: str) -> None:
    for endpoint in ("authorize", "grant"):
        response = await send(client, shared, endpoint, wrapped(endpoint, shared.params(redirect_uri=value)))
        if "\u0000" in value:
            assert_error(response, 400, "invalid_request", field_name(endpoint, "redirect_uri"), "NUL")
        else:
            assert_error(response, 400, "invalid_redirect_uri", "redirect_uri")


@pytest.mark.parametrize("value", [EMOJI, RTL, "read_profile,权限", "read_profile\u0000"])
async def test_unicode_permissions(client: httpx.AsyncClient, shared: Flow, value: str) -> None:
    for endpoint in ("authorize", "grant"):
        response = await send(client, shared, endpoint, wrapped(endpoint, shared.params(permissions=value)))
        if "\u0000" in value:
            assert_error(response, 400, "invalid_request", field_name(endpoint, "permissions"), "NUL")
        else:
            message = assert_error(response, 400, "invalid_scope")
            assert value.split(",")[-1] in message


async def test_nul_in_state(client: httpx.AsyncClient, shared: Flow) -> None:
    """U+0000 is refused on every database alike (PostgreSQL text cannot hold it)."""
    for state in ("a\u0000b", "\u0000"):
        assert_error(await shared.authorize(state=state), 400, "invalid_request", "token.state", "NUL")


async def test_malformed_path_parameters(client: httpx.AsyncClient, shared: Flow) -> None:
    headers = bearer(shared.dev_token)
    long_id = "x" * 65
    for method, path, name, what in [
        ("GET", "/v1/apps/a%00b", "app_id", "NUL"),
        ("PATCH", "/apps/%00", "app_id", "NUL"),
        ("DELETE", "/v1/apps/%00", "app_id", "NUL"),
        ("GET", "/v1/apps/%00/keys", "app_id", "NUL"),
        ("POST", "/v1/apps/%00/keys", "app_id", "NUL"),
        ("DELETE", f"/v1/apps/{shared.app_id}/keys/%00", "key_id", "NUL"),
        ("DELETE", "/v1/grants/%00", "app_id", "NUL"),
        ("GET", f"/v1/apps/{long_id}", "app_id", "too long"),
        ("PATCH", f"/apps/{long_id}", "app_id", "too long"),
        ("GET", f"/v1/apps/{long_id}/keys", "app_id", "too long"),
        ("DELETE", f"/v1/apps/{shared.app_id}/keys/{long_id}", "key_id", "too long"),
        ("DELETE", f"/grants/{long_id}", "app_id", "too long"),
    ]:
        response = await client.request(method, path, json={"name": "x"}, headers=headers)
        assert_error(response, 400, "invalid_request", name, what)


LONE_SURROGATES = [r'"\ud800"', r'"abc\udfff"', r'"\udc00\ud800"', r'"ok\ud83d"']


@pytest.mark.parametrize(("endpoint", "name"), OAUTH_FIELDS)
async def test_lone_surrogates(client: httpx.AsyncClient, shared: Flow, endpoint: str, name: str) -> None:
    """Valid JSON grammar, but not Unicode text: a malformed field."""
    for raw in LONE_SURROGATES:
        response = await send(client, shared, endpoint, content=raw_body(endpoint, shared, name, raw))
        assert_error(response, 400, "invalid_request", field_name(endpoint, name))


async def test_escaped_surrogate_pair_is_ordinary_text(client: httpx.AsyncClient, shared: Flow) -> None:
    """``\\ud83d\\udd10`` is a proper pair (🔐), not a lone surrogate."""
    content = raw_body("authorize", shared, "state", r'"lock \ud83d\udd10"')
    response = await client.post("/oauth/authorize", content=content, headers={**JSON, **bearer(shared.user_token)})
    assert assert_envelope(response)["state"] == "lock 🔐"


# ---------------------------------------------------------------- invalid_request: the other routes


SIGNUP_BAD = [
    pytest.param({}, "email", id="empty-object"),
    pytest.param({"password": PASSWORD}, "email", id="no-email"),
    pytest.param({"email": "a@example.com"}, "password", id="no-password"),
    pytest.param({"email": 1, "password": PASSWORD}, "email", id="email-number"),
    pytest.param({"email": ["a@example.com"], "password": PASSWORD}, "email", id="email-list"),
    pytest.param({"email": "a@example.com", "password": None}, "password", id="password-null"),
    pytest.param({"email": "a@example.com", "password": 12345678}, "password", id="password-number"),
    pytest.param({"email": "a" * 400 + "@example.com", "password": PASSWORD}, "email", id="email-too-long"),
    pytest.param({"email": "a@example.com", "password": "p" * 5000}, "password", id="password-too-long"),
]


@pytest.mark.parametrize("route", ["/v1/auth/signup", "/v1/auth/login", "/auth/signup", "/auth/login"])
@pytest.mark.parametrize(("body", "mention"), SIGNUP_BAD)
async def test_credentials_malformed(client: httpx.AsyncClient, route: str, body: Any, mention: str) -> None:
    assert_error(await client.post(route, json=body), 400, "invalid_request", mention)


@pytest.mark.parametrize("route", ["/v1/auth/signup", "/v1/auth/login"])
@pytest.mark.parametrize(("content", "mention"), NOT_AN_OBJECT)
async def test_credentials_not_a_json_object(client: httpx.AsyncClient, route: str, content: bytes, mention: str) -> None:
    assert_error(await client.post(route, content=content, headers=JSON), 400, "invalid_request", mention)


APP_BAD = [
    pytest.param({}, "redirect_uris", id="empty-object"),  # name may come as client_name: redirect_uris is the first field always required
    pytest.param({"redirect_uris": ["https://a.example.com/cb"], "permissions": "read_profile"}, "name", id="no-name"),
    pytest.param({"name": "A", "permissions": "read_profile"}, "redirect_uris", id="no-redirect-uris"),
    pytest.param({"name": "A", "redirect_uris": ["https://a.example.com/cb"]}, "permissions", id="no-permissions"),
    pytest.param({"name": 5, "redirect_uris": ["https://a.example.com/cb"], "permissions": "read_profile"}, "name", id="name-number"),
    pytest.param({"name": "A", "redirect_uris": "https://a.example.com/cb", "permissions": "read_profile"}, "redirect_uris", id="uris-string"),
    pytest.param({"name": "A", "redirect_uris": [1], "permissions": "read_profile"}, "redirect_uris", id="uris-item-number"),
    pytest.param({"name": "A", "redirect_uris": [], "permissions": "read_profile"}, "redirect_uris", id="uris-empty"),
    pytest.param({"name": "A", "redirect_uris": ["http://a.example.com/cb"], "permissions": "read_profile"}, "redirect_uris", id="uris-http"),
    pytest.param({"name": "A", "redirect_uris": ["https://a.example.com/cb#x"], "permissions": "read_profile"}, "redirect_uris", id="uris-fragment"),
    pytest.param({"name": "A", "redirect_uris": ["https://[::1/cb"], "permissions": "read_profile"}, "redirect_uris", id="uris-bad-ipv6"),
    pytest.param({"name": "A", "redirect_uris": ["https://a.example.com:99999/cb"], "permissions": "read_profile"}, "redirect_uris", id="uris-bad-port"),
    pytest.param({"name": "A", "redirect_uris": ["https://a.example.com/cb"] * 21, "permissions": "read_profile"}, "redirect_uris", id="uris-too-many"),
    pytest.param({"name": "A", "redirect_uris": ["https://a.example.com/cb"], "permissions": ",read_profile"}, "permissions", id="permissions-empty-item"),
    pytest.param({"name": "A", "redirect_uris": ["https://a.example.com/cb"], "permissions": 1}, "permissions", id="permissions-number"),
    pytest.param({"name": "  ", "redirect_uris": ["https://a.example.com/cb"], "permissions": "read_profile"}, "name", id="name-blank"),
    pytest.param({"name": "a\u0000b", "redirect_uris": ["https://a.example.com/cb"], "permissions": "read_profile"}, "name", id="name-nul"),
]


@pytest.mark.parametrize(("body", "mention"), APP_BAD)
async def test_app_create_malformed(client: httpx.AsyncClient, shared: Flow, body: Any, mention: str) -> None:
    response = await client.post("/v1/apps", json=body, headers={"Authorization": shared.dev_token})
    assert_error(response, 400, "invalid_request", mention)


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        ({"name": 1}, "name"),
        ({"redirect_uris": "https://a.example.com/cb"}, "redirect_uris"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"permissions": ["read_profile"]}, "permissions"),
        ({"permissions": ""}, "permissions"),
    ],
)
async def test_app_update_malformed(client: httpx.AsyncClient, shared: Flow, body: Any, mention: str) -> None:
    response = await client.patch(f"/v1/apps/{shared.app_id}", json=body, headers={"Authorization": shared.dev_token})
    assert_error(response, 400, "invalid_request", mention)


@pytest.mark.parametrize(("content", "mention"), NOT_AN_OBJECT)
async def test_app_body_not_a_json_object(client: httpx.AsyncClient, shared: Flow, content: bytes, mention: str) -> None:
    headers = {**JSON, "Authorization": shared.dev_token}
    assert_error(await client.post("/v1/apps", content=content, headers=headers), 400, "invalid_request", mention)
    response = await client.patch(f"/v1/apps/{shared.app_id}", content=content, headers=headers)
    if content == b"":  # PATCH with nothing in it changes nothing
        assert response.status_code in (200, 400), response.text
    else:
        assert_error(response, 400, "invalid_request", mention)


# ---------------------------------------------------------------- invalid_scope


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("endpoint", ["authorize", "grant"])
@pytest.mark.parametrize(
    ("permissions", "named", "not_named"),
    [
        ("delete_everything", ["delete_everything"], []),
        ("read_profile,delete_everything,admin", ["delete_everything", "admin"], ["read_profile"]),
        ("manage_notifications", ["manage_notifications"], []),  # in the catalog, not allowed for the app
        ("write_data, manage_notifications", ["manage_notifications"], ["write_data"]),
        ("READ_PROFILE", ["READ_PROFILE"], []),  # names are case-sensitive
    ],
)
async def test_invalid_scope(
    client: httpx.AsyncClient,
    shared: Flow,
    endpoint: str,
    prefix: str,
    permissions: str,
    named: list[str],
    not_named: list[str],
) -> None:
    response = await send(client, shared, endpoint, wrapped(endpoint, shared.params(permissions=permissions)), prefix=prefix)
    message = assert_error(response, 400, "invalid_scope", *named)
    for name in not_named:
        assert name not in message


async def test_invalid_scope_when_registering_an_app(client: httpx.AsyncClient, shared: Flow) -> None:
    body = {"name": "A", "redirect_uris": ["https://a.example.com/cb"], "permissions": "read_profile,root_access"}
    response = await client.post("/v1/apps", json=body, headers={"Authorization": shared.dev_token})
    assert_error(response, 400, "invalid_scope", "root_access")


# ---------------------------------------------------------------- invalid_redirect_uri


REDIRECT_MISMATCHES = [
    "https://evil.example.com/callback",
    "https://app.example.com/callback/",
    "https://APP.example.com/callback",
    "https://app.example.com/Callback",
    "HTTPS://app.example.com/callback",
    "https://app.example.com/callback?x=1",
    "https://app.example.com/callback?",
    "https://app.example.com/callback#",
    "https://app.example.com:443/callback",
    "http://app.example.com/callback",
    "https://app.example.com/callback/../callback",
    "https://app.example.com/%63allback",
    " https://app.example.com/callback",
    "https://app.example.com/callback ",
    "https://app.example.com",
    "https://app.example.com.evil.com/callback",
]


@pytest.mark.parametrize("endpoint", ["authorize", "grant"])
@pytest.mark.parametrize("redirect_uri", REDIRECT_MISMATCHES)
async def test_invalid_redirect_uri(client: httpx.AsyncClient, shared: Flow, endpoint: str, redirect_uri: str) -> None:
    response = await send(client, shared, endpoint, wrapped(endpoint, shared.params(redirect_uri=redirect_uri)))
    assert_error(response, 400, "invalid_redirect_uri", "redirect_uri")


async def test_each_registered_redirect_uri_matches_exactly(client: httpx.AsyncClient) -> None:
    uris = ["https://app.example.com/callback", "https://app.example.com/callback?tenant=1", "com.example.app:/cb"]
    flow = await new_flow(client, redirect_uris=uris)
    for uri in uris:
        assert "code" in assert_envelope(await flow.authorize(redirect_uri=uri))
    assert_error(await flow.authorize(redirect_uri="https://app.example.com/callback?tenant=2"), 400, "invalid_redirect_uri")


# ---------------------------------------------------------------- consent_required


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_consent_required_then_granted(client: httpx.AsyncClient, prefix: str) -> None:
    flow = await new_flow(client, permissions="read_profile,write_data,manage_notifications")
    headers = bearer(flow.user_token)

    # The first authorize records the grant: read_profile.
    assert_envelope(await client.post(prefix + "/oauth/authorize", json={"token": flow.params()}, headers=headers))

    wider = flow.params(permissions="read_profile,write_data,manage_notifications")
    response = await client.post(prefix + "/oauth/authorize", json={"token": wider}, headers=headers)
    message = assert_error(response, 400, "consent_required", "write_data", "manage_notifications")
    assert "read_profile" not in message

    # Granting part of it is not enough.
    partial = flow.params(permissions="write_data")
    response = await client.patch(prefix + "/oauth/permissions/grant", json={"permissions": partial}, headers=headers)
    assert assert_envelope(response) == {"message": "Permissions granted successfully."}
    response = await client.post(prefix + "/oauth/authorize", json={"token": wider}, headers=headers)
    message = assert_error(response, 400, "consent_required", "manage_notifications")
    assert "write_data" not in message

    response = await client.patch(prefix + "/oauth/permissions/grant", json={"permissions": wider}, headers=headers)
    assert_envelope(response)
    code = assert_envelope(await client.post(prefix + "/oauth/authorize", json={"token": wider}, headers=headers))["code"]
    token = assert_envelope(await flow.redeem(code))
    assert set(token["scope"].split()) == {"read_profile", "write_data", "manage_notifications"}

    # A narrower request stays within the grant.
    assert_envelope(await client.post(prefix + "/oauth/authorize", json={"token": partial}, headers=headers))


async def test_consent_is_per_user(client: httpx.AsyncClient, flow: Flow) -> None:
    assert_envelope(await flow.authorize(permissions="read_profile,write_data"))
    _, other_user = await sign_up(client)
    other = Flow(client, user_token=other_user, app_id=flow.app_id, app_key=flow.app_key)
    assert_envelope(await other.authorize(permissions="read_profile"))
    assert_error(await other.authorize(permissions="write_data"), 400, "consent_required", "write_data")


# ---------------------------------------------------------------- invalid_token


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _hostile_tokens(client: httpx.AsyncClient, app: Any, flow: Flow) -> dict[str, str]:
    """Bearer tokens that must not be accepted, by name."""
    kid = jwt.get_unverified_header(flow.user_token)["kid"]  # the ES256 key's, which user tokens name
    claims = jwt.decode(flow.user_token, options={"verify_signature": False})
    header = jwt.get_unverified_header(flow.user_token)
    now = int(time.time())
    other_key = ec.generate_private_key(ec.SECP256R1())
    signer = app.state.ctx.signing
    payload, signature = flow.user_token.split(".")[1:]
    return {
        "garbage": "garbage",
        "three-dots": "a.b.c",
        "empty-parts": "..",
        "jwt-other-key": jwt.encode(claims, other_key, algorithm="ES256", headers={"kid": kid, "typ": "JWT"}),
        "jwt-alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload}.",
        "jwt-hs256": jwt.encode(claims, "secret" * 8, algorithm="HS256", headers={"kid": kid, "typ": "JWT"}),
        "jwt-kid-list": f"{_b64({**header, 'kid': [kid]})}.{payload}.{signature}",
        "jwt-kid-object": f"{_b64({**header, 'kid': {'a': 1}})}.{payload}.{signature}",
        "jwt-header-list": f"{_b64([1, 2])}.{payload}.{signature}",  # type: ignore[arg-type]
        "jwt-typ-at": f"{_b64({**header, 'typ': 'at+jwt'})}.{payload}.{signature}",
        "jwt-tampered-sub": f"{flow.user_token.split('.')[0]}.{_b64({**claims, 'sub': str(uuid.uuid4())})}.{signature}",
        "expired": signer.sign({**claims, "jti": str(uuid.uuid4()), "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, "JWT"),
        "wrong-issuer": signer.sign({**claims, "iss": "https://evil.example.com"}, "JWT"),
        "unknown-session": signer.sign({**claims, "jti": str(uuid.uuid4())}, "JWT"),
        "sub-not-string": signer.sign({**claims, "sub": 12345}, "JWT"),
        "long": "a" * 8000,
    }


EXPECTED_BEARER_ROUTES = {
    ("POST", "/oauth/authorize"),
    ("PATCH", "/oauth/permissions/grant"),
    ("POST", "/auth/logout"),
    ("GET", "/apps"),
    ("POST", "/apps"),
    ("GET", "/apps/{app_id}"),
    ("PATCH", "/apps/{app_id}"),
    ("DELETE", "/apps/{app_id}"),
    ("POST", "/apps/{app_id}/keys"),
    ("GET", "/apps/{app_id}/keys"),
    ("DELETE", "/apps/{app_id}/keys/{key_id}"),
}


def bearer_routes(app: Any, *, user_tokens_only: bool = False) -> list[tuple[str, str]]:
    """(method, path) of every root Neucron route that needs a user token; DELETEs last.
    ``user_tokens_only``: leaving out the one that also takes an app's access token for its user."""
    routes = sorted(
        {
            (m, p)
            for m, p, r in api_routes(app)
            if not p.startswith("/v1/") and needs_user(r) and not (user_tokens_only and takes_access_token(r))
        },
        key=lambda r: (r[0] == "DELETE", r),
    )
    assert EXPECTED_BEARER_ROUTES <= set(routes), routes
    return routes


def _bearer_request(flow: Flow, method: str, path: str) -> tuple[str, str, dict[str, Any] | None]:
    path = path.format(app_id=flow.app_id, key_id=flow.key_id, token_id=flow.extra.get("token_id", "no-such-token"))
    bodies: dict[str, Any] = {
        "/registration-tokens": {},
        "/oauth/authorize": {"token": flow.params()},
        "/oauth/permissions/grant": {"permissions": flow.params()},
        "/apps": {"name": "X", "redirect_uris": ["https://x.example.com/cb"], "permissions": "read_profile"},
        f"/apps/{flow.app_id}": {"name": "Renamed"},
    }
    return method, path, bodies.get(path) if method in ("POST", "PATCH") else None


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_invalid_token(client: httpx.AsyncClient, app: Any, shared: Flow, prefix: str) -> None:
    tokens = await _hostile_tokens(client, app, shared)
    headers_list: dict[str, dict[str, str]] = {"no-header": {}}
    headers_list["bearer-nothing"] = {"Authorization": "Bearer "}
    headers_list["bearer-word"] = {"Authorization": "Bearer"}
    headers_list["empty"] = {"Authorization": ""}
    headers_list["basic"] = {"Authorization": "Basic dXNlcjpwYXNz"}
    headers_list["two-tokens"] = {"Authorization": f"Bearer {shared.user_token} {shared.user_token}"}
    headers_list["dev-token-of-other-kind"] = {"Authorization": f"Token {shared.user_token}"}
    for name, token in tokens.items():
        headers_list[name] = {"Authorization": f"Bearer {token}"}
        headers_list[name + "-bare"] = {"Authorization": token}
    for method, route in bearer_routes(app):
        method, path, body = _bearer_request(shared, method, route)
        for name, headers in headers_list.items():
            response = await client.request(method, prefix + path, json=body, headers=headers)
            assert response.status_code == 401, f"{method} {prefix}{path} with {name}: {response.text}"
            assert_error(response, 401, "invalid_token")


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_logged_out_token(client: httpx.AsyncClient, app: Any, prefix: str) -> None:
    flow = await new_flow(client)
    response = await client.post(prefix + "/auth/logout", headers=bearer(flow.user_token))
    assert_envelope(response)
    for method, route in bearer_routes(app):
        method, path, body = _bearer_request(flow, method, route)
        response = await client.request(method, prefix + path, json=body, headers=bearer(flow.user_token))
        assert_error(response, 401, "invalid_token")
    # Logging out twice is refused the same way.
    assert_error(await client.post(prefix + "/auth/logout", headers=bearer(flow.user_token)), 401, "invalid_token")
    # The developer's own session is untouched.
    assert_envelope(await client.get(prefix + "/apps", headers=bearer(flow.dev_token)))


async def test_app_access_token_is_not_a_user_token(client: httpx.AsyncClient, app: Any, shared: Flow) -> None:
    access_token = assert_envelope(await shared.redeem(await shared.code()))["access_token"]
    for prefix in PREFIXES:
        for method, route in bearer_routes(app, user_tokens_only=True):
            method, path, body = _bearer_request(shared, method, route)
            for headers in (bearer(access_token), {"Authorization": access_token}):
                response = await client.request(method, prefix + path, json=body, headers=headers)
                assert_error(response, 401, "invalid_token")
    # The app cannot authorize itself for its user either: still nothing but a 401.
    assert_error(
        await client.post("/oauth/authorize", json={"token": shared.params()}, headers=bearer(access_token)), 401, "invalid_token"
    )


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("scheme", ["Bearer {}", "{}", "bearer {}", "BEARER {}", "Bearer  {} "])
async def test_bearer_prefix_optional(client: httpx.AsyncClient, shared: Flow, prefix: str, scheme: str) -> None:
    headers = {"Authorization": scheme.format(shared.user_token)}
    response = await client.post(prefix + "/oauth/authorize", json={"token": shared.params()}, headers=headers)
    assert "code" in assert_envelope(response)
    response = await client.patch(prefix + "/oauth/permissions/grant", json={"permissions": shared.params()}, headers=headers)
    assert_envelope(response)
    dev = {"Authorization": scheme.format(shared.dev_token)}
    apps = assert_envelope(await client.get(prefix + "/apps", headers=dev))["apps"]
    assert shared.app_id in [a["app_id"] for a in apps]


async def test_token_endpoint_needs_no_bearer(client: httpx.AsyncClient, shared: Flow) -> None:
    """The token endpoint authenticates the app by its key; a bearer, even a bad one, is irrelevant."""
    code = await shared.code()
    body = {"token": {"auth_code": code, "key_id": shared.key_id, "key_secret": shared.key_secret}}
    response = await client.post("/oauth/token", json=body, headers={"Authorization": "Bearer garbage"})
    assert "access_token" in assert_envelope(response)


# ---------------------------------------------------------------- invalid_client


async def test_invalid_client_on_authorize(client: httpx.AsyncClient, shared: Flow) -> None:
    flow, other = shared, await new_flow(client)
    cases = {
        "unknown app_id": {"app_id": str(uuid.uuid4())},
        "app_id of another app": {"app_id": other.app_id},
        "wrong app_key": {"app_key": flow.app_key[:-2] + ("AA" if not flow.app_key.endswith("AA") else "BB")},
        "app_key of another app": {"app_key": other.app_key},
        "key_secret as app_key": {"app_key": flow.key_secret},
        "app_key with a trailing space": {"app_key": flow.app_key + " "},
        "app_key upper-cased": {"app_key": flow.app_key.upper()},
        "app_id upper-cased": {"app_id": flow.app_id.upper()},
    }
    for prefix in PREFIXES:
        for name, overrides in cases.items():
            for endpoint in ("authorize", "grant"):
                response = await send(client, flow, endpoint, wrapped(endpoint, flow.params(**overrides)), prefix=prefix)
                assert response.status_code == 401, f"{name} on {endpoint}: {response.text}"
                message = assert_error(response, 401, "invalid_client")
                assert flow.app_key not in message and other.app_key not in message
    # The right pair still works.
    assert_envelope(await flow.authorize())


async def test_invalid_client_on_token(client: httpx.AsyncClient) -> None:
    flow, other = await new_flow(client), await new_flow(client)
    second = assert_envelope(await client.post(f"/v1/apps/{flow.app_id}/keys", headers=bearer(flow.dev_token)))
    cases = {
        "unknown key_id": {"key_id": "key_0000000000000000"},
        "key_id of another app": {"key_id": other.key_id},
        "wrong key_secret": {"key_secret": flow.key_secret[:-2] + ("AA" if not flow.key_secret.endswith("AA") else "BB")},
        "key_secret of another app": {"key_secret": other.key_secret},
        "key_secret of another key of the app": {"key_secret": second["key_secret"]},
        "app_key as key_secret": {"key_secret": flow.app_key},
        "app_id as key_id": {"key_id": flow.app_id},
    }
    code = await flow.code()
    for name, overrides in cases.items():
        for prefix in PREFIXES:
            body = {"token": {"auth_code": code, "key_id": flow.key_id, "key_secret": flow.key_secret, **overrides}}
            response = await client.post(prefix + "/oauth/token", json=body)
            assert response.status_code == 401, f"{name}: {response.text}"
            assert_error(response, 401, "invalid_client")
    # None of these spent the code.
    assert_envelope(await flow.redeem(code))


async def test_revoked_key_is_invalid_client(client: httpx.AsyncClient, flow: Flow) -> None:
    second = assert_envelope(await client.post(f"/v1/apps/{flow.app_id}/keys", headers=bearer(flow.dev_token)))
    response = await client.delete(f"/v1/apps/{flow.app_id}/keys/{flow.key_id}", headers=bearer(flow.dev_token))
    assert assert_envelope(response)["revoked"] is True
    code = await flow.code()
    assert_error(await flow.redeem(code), 401, "invalid_client")
    # Another key of the same app still redeems the code, which the refusal did not spend.
    assert_envelope(await flow.redeem(code, key_id=second["key_id"], key_secret=second["key_secret"]))


async def test_disabled_app_is_invalid_client(client: httpx.AsyncClient, flow: Flow) -> None:
    code = await flow.code()
    response = await client.delete(f"/v1/apps/{flow.app_id}", headers=bearer(flow.dev_token))
    assert assert_envelope(response)["disabled"] is True
    assert_error(await flow.redeem(code), 401, "invalid_client")
    assert_error(await flow.authorize(), 401, "invalid_client")
    assert_error(await flow.grant(), 401, "invalid_client")
    # And the disabled app can hold no new key.
    response = await client.post(f"/v1/apps/{flow.app_id}/keys", headers=bearer(flow.dev_token))
    assert_error(response, 400, "invalid_request", "disabled")


# ---------------------------------------------------------------- invalid_grant


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_invalid_grant(client: httpx.AsyncClient, prefix: str) -> None:
    flow, other = await new_flow(client), await new_flow(client)

    for unknown in ("unknown", "x" * 43, "a" * 256, "🔐"):
        response = await client.post(
            prefix + "/oauth/token", json={"token": {"auth_code": unknown, "key_id": flow.key_id, "key_secret": flow.key_secret}}
        )
        assert_error(response, 401, "invalid_grant")

    # A code of another app, redeemed with that other app's key: refused, and not spent.
    code = await flow.code()
    response = await client.post(
        prefix + "/oauth/token", json={"token": {"auth_code": code, "key_id": other.key_id, "key_secret": other.key_secret}}
    )
    message = assert_error(response, 401, "invalid_grant")
    assert code not in message
    assert "access_token" in assert_envelope(await flow.redeem(code))

    # A used code, presented by another key of the app (the same key within the grace window would
    # be a retry, answered with the same token); then by either key.
    created = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert created.status_code == 200, created.text
    spare = created.json()["data"]
    message = assert_error(await flow.redeem(code, key_id=spare["key_id"], key_secret=spare["key_secret"]), 401, "invalid_grant")
    assert code not in message
    assert_error(await flow.redeem(code), 401, "invalid_grant")


async def test_expired_code_is_invalid_grant(client: httpx.AsyncClient, app: Any, shared: Flow) -> None:
    from grantd.store.schema import authorization_codes

    code = await shared.code()
    ctx = app.state.ctx
    async with ctx.db.write() as tx:
        await tx.execute(
            update(authorization_codes)
            .where(authorization_codes.c.code_hash == ctx.hasher.hash(code))
            .values(expires_at=int(time.time()) - 1)
        )
    assert_error(await shared.redeem(code), 401, "invalid_grant")


# ---------------------------------------------------------------- accounts: conflict, 401, 400


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_signup_conflict(client: httpx.AsyncClient, prefix: str) -> None:
    email = unique_email()
    await sign_up(client, email)
    local, domain = email.split("@")
    for taken in (email, email.upper(), local.capitalize() + "@" + domain.upper()):
        response = await client.post(prefix + "/auth/signup", json={"email": taken, "password": PASSWORD + "!"})
        message = assert_error(response, 409, "conflict")
        assert "password" not in message.lower()


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_login_wrong_credentials(client: httpx.AsyncClient, prefix: str) -> None:
    email = unique_email()
    await sign_up(client, email)
    messages = set()
    for body in (
        {"email": email, "password": PASSWORD + "x"},
        {"email": email, "password": PASSWORD.upper()},
        {"email": email, "password": ""},
        {"email": unique_email(), "password": PASSWORD},
        {"email": "not-an-email", "password": PASSWORD},
    ):
        response = await client.post(prefix + "/auth/login", json=body)
        assert response.status_code == 401, response.text
        assert response.json()["error"] in ("invalid_grant", "invalid_token", "invalid_client"), response.text
        messages.add(assert_error(response, 401, response.json()["error"]))
    assert len(messages) == 1, f"log-in tells which accounts exist: {messages}"
    # The right pair, with the email differently cased, signs in.
    assert "access_token" in assert_envelope(await client.post(prefix + "/auth/login", json={"email": email.upper(), "password": PASSWORD}))


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com", "a@@example.com", "a@localhost", "", "a@exa mple.com", "🔐@example.com\u0000"])
async def test_signup_invalid_email(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert_error(response, 400, "invalid_request", "email")


@pytest.mark.parametrize("password", ["short", "1234567", "password123", "PASSWORD123", "12345678", "qwerty123", "aaaaaaaaaaaa", "abababababab", "{local}"])
async def test_signup_weak_password(client: httpx.AsyncClient, password: str) -> None:
    email = unique_email()
    response = await client.post("/v1/auth/signup", json={"email": email, "password": password.format(local=email.split("@")[0])})
    assert_error(response, 400, "invalid_request", "password")
    # Nothing was created: the same email can then sign up with a good password.
    await sign_up(client, email)


# ---------------------------------------------------------------- not_found


async def test_another_users_app_is_not_found(client: httpx.AsyncClient) -> None:
    mine, theirs = await new_flow(client), await new_flow(client)
    stranger = bearer(theirs.dev_token)
    for prefix in PREFIXES:
        for app_id in (mine.app_id, str(uuid.uuid4()), "x" * 64):
            requests = [
                ("GET", f"/apps/{app_id}", None),
                ("PATCH", f"/apps/{app_id}", {"name": "Stolen"}),
                ("DELETE", f"/apps/{app_id}", None),
                ("GET", f"/apps/{app_id}/keys", None),
                ("POST", f"/apps/{app_id}/keys", None),
                ("DELETE", f"/apps/{app_id}/keys/{mine.key_id}", None),
            ]
            for method, path, body in requests:
                response = await client.request(method, prefix + path, json=body, headers=stranger)
                message = assert_error(response, 404, "not_found")
                assert mine.app_key not in message
        # Their own app, my key: still not found.
        response = await client.delete(f"{prefix}/apps/{theirs.app_id}/keys/{mine.key_id}", headers=stranger)
        assert_error(response, 404, "not_found")
        assert_error(await client.delete(f"{prefix}/apps/{theirs.app_id}/keys/key_0", headers=stranger), 404, "not_found")
    # None of it touched my app.
    data = assert_envelope(await client.get(f"/v1/apps/{mine.app_id}", headers=bearer(mine.dev_token)))
    assert data["name"] == "Test App" and data["disabled"] is False
    keys = assert_envelope(await client.get(f"/v1/apps/{mine.app_id}/keys", headers=bearer(mine.dev_token)))["keys"]
    assert [(k["key_id"], k["revoked"]) for k in keys] == [(mine.key_id, False)]
    assert_envelope(await mine.redeem(await mine.code()))
    assert [a["app_id"] for a in assert_envelope(await client.get("/v1/apps", headers=stranger))["apps"]] == [theirs.app_id]


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nope"), 404, "not_found")
    assert_error(await client.delete("/oauth/token"), 405, "method_not_allowed")  # its GET is Neucron v2's
    assert_error(await client.put("/v1/oauth/authorize", json={}), 405, "method_not_allowed")


# ---------------------------------------------------------------- no input yields a 500


def _hostile_bodies(flow: Flow) -> list[tuple[str, bytes, str]]:
    """(name, body, content type): what a hostile or broken client might send to any route."""
    good = flow.params()
    token = {"auth_code": "code", "key_id": flow.key_id, "key_secret": flow.key_secret}
    app_body = {"name": "A", "redirect_uris": ["https://a.example.com/cb"], "permissions": "read_profile"}
    all_fields = {**good, **token, **app_body, "email": unique_email(), "password": PASSWORD}
    texts: dict[str, str] = {
        "empty": "",
        "space": " ",
        "garbage": "garbage",
        "open-brace": "{",
        "close-brace": "}",
        "array": "[]",
        "null": "null",
        "true": "true",
        "zero": "0",
        "huge-number": "1" * 5000,
        "huge-exponent": "1e999999",
        "nan": "NaN",
        "infinity": '{"token": Infinity}',
        "string": '"hello"',
        "empty-object": "{}",
        "nested-arrays": "[" * 10_000 + "]" * 10_000,
        "nested-objects": '{"a":' * 10_000 + "1" + "}" * 10_000,
        "nested-in-token": '{"token":{"app_id":' + "[" * 3_000 + "]" * 3_000 + "}}",
        "wrapper-null": json.dumps({"token": None, "permissions": None}),
        "wrapper-list": json.dumps({"token": [good], "permissions": [good]}),
        "fields-null": json.dumps({"token": dict.fromkeys(all_fields), "permissions": dict.fromkeys(all_fields), **dict.fromkeys(all_fields)}),
        "fields-numbers": json.dumps({k: 1 for k in all_fields}),
        "fields-objects": json.dumps({k: {"$ne": None} for k in all_fields}),
        "all-fields": json.dumps({"token": {**good, **token}, "permissions": good, **all_fields}),
        "surrogates": raw_object(
            [("token", raw_object([(k, r'"\ud800"') for k in (*good, *token)]))]
            + [("permissions", raw_object([(k, r'"\udfff"') for k in good]))]
            + [(k, r'"\ud800x"') for k in ("name", "email", "password", "permissions")]
            + [("redirect_uris", r'["https://a.example.com/\ud800"]')]
        ),
        "surrogate-password": raw_object([("email", json.dumps(unique_email())), ("password", r'"\ud800\udbff\udfffabcdefgh"')]),
        "surrogate-email": raw_object([("email", r'"\ud800@example.com"'), ("password", json.dumps(PASSWORD))]),
        "nul-everywhere": json.dumps(
            {
                "token": {**{k: f"{v}\u0000" for k, v in {**good, **token}.items()}},
                "permissions": {k: f"\u0000{v}" for k, v in good.items()},
                **{k: f"{v}\u0000" for k, v in app_body.items() if isinstance(v, str)},
                "redirect_uris": ["https://a.example.com/cb\u0000"],
                "email": f"{unique_email()}\u0000",
                "password": f"{PASSWORD}\u0000",
            }
        ),
        "nul-password": json.dumps({"email": unique_email(), "password": "abc\u0000defgh12345"}),
        "emoji-everywhere": json.dumps(
            {"token": {k: EMOJI for k in (*good, *token)}, "permissions": {k: EMOJI for k in good}, **{k: EMOJI for k in all_fields}}
        ),
        "rtl-everywhere": json.dumps({"token": {k: RTL for k in (*good, *token)}, **{k: RTL for k in all_fields}}),
        "long-fields": json.dumps({"token": {k: "a" * 6000 for k in (*good, *token)}}),
        "long-email": json.dumps({"email": "a" * 64 + "@" + ("b" * 63 + ".") * 3 + "com", "password": PASSWORD}),
        "weird-uris": json.dumps({**app_body, "redirect_uris": ["https://[::1/cb", "https://a:99999/", "https://a:-1/", "com.x:/\u0085", "https://" + "a" * 1990]}),
        "uris-nested": json.dumps({**app_body, "redirect_uris": [["https://a.example.com/cb"]]}),
        "bad-utf8": "\udcff",  # written as raw bytes below
        "bom": "\ufeff" + json.dumps({"token": good}),
        "duplicate-keys": '{"token": {"app_id": 1, "app_id": "x"}, "token": null}',
        "permissions-separators": json.dumps({"token": {**good, "permissions": ",,, ,\t,\n,\u3000,"}, "permissions": ",\u0000,"}),
    }
    out: list[tuple[str, bytes, str]] = []
    for name, text in texts.items():
        raw = b"\xff\xfe\xfd{}" if name == "bad-utf8" else text.encode("utf-8", "surrogatepass")
        out.append((name, raw, "application/json"))
    out.append(("form", b"token=1&app_id=2", "application/x-www-form-urlencoded"))
    form_fields = ("grant_type", "code", "client_id", "client_secret", "token", "refresh_token", "redirect_uri", "scope", "code_verifier")
    for grant_type in ("authorization_code", "refresh_token", "client_credentials"):
        for name, value in (("nul", "%00"), ("surrogate", "%ED%A0%80"), ("emoji", "%F0%9F%94%90"), ("long", "a" * 5000)):
            form = "&".join(f"{k}={grant_type if k == 'grant_type' else value}" for k in form_fields)
            out.append((f"form-{grant_type}-{name}", form.encode(), "application/x-www-form-urlencoded"))
        out.append((f"form-{grant_type}-key", f"grant_type={grant_type}&code=x&client_id={flow.key_id}%00&client_secret={flow.key_secret}".encode(), "application/x-www-form-urlencoded"))
    out.append(("text-json", json.dumps({"token": good}).encode(), "text/plain"))
    out.append(("no-content-type", json.dumps({"token": good}).encode(), ""))
    out.append(("json-charset-latin1", json.dumps({"token": good}).encode(), "application/json; charset=latin-1"))
    out.append(("multipart", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n", "multipart/form-data; boundary=x"))
    return out


HOSTILE_HEADERS = [
    None,
    "Bearer ",
    "Bearer a.b.c",
    "Bearer e30.e30.",
    "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6WzFdfQ.e30.AAAA",  # kid is a list
    "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6bnVsbH0.e30.AAAA",  # kid is null
    "Bearer eyJhbGciOlsiRVMyNTYiXSwidHlwIjp7fX0.e30.AAAA",  # alg is a list, typ an object
    "Bearer WzFd.e30.AAAA",  # header is a JSON array
    "Bearer bnVsbA.bnVsbA.",  # header and payload are null
    "Bearer " + "a" * 10_000,
    "Bearer \t",
    "Basic Og==",
]


async def _all(requests: Iterable[Any], limit: int = 12) -> list[httpx.Response]:
    """Run request coroutines concurrently, at most ``limit`` at a time, in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(request: Any) -> httpx.Response:
        async with semaphore:
            return await request

    return await asyncio.gather(*(one(r) for r in requests))


async def test_no_input_yields_a_server_error(client: httpx.AsyncClient, app: Any) -> None:
    """Every hostile body to every route that reads one, and every hostile Authorization header to
    every route, at the root and under /v1: never a 500, always the dialect's error shape."""
    flow = await new_flow(client)
    _, logout_token = await sign_up(client)
    bodies = _hostile_bodies(flow)
    tokens = await _hostile_tokens(client, app, flow)
    neucron = neucron_paths(app)
    routes = [(m, p, r) for m, p, r in api_routes(app) if not p.startswith("/.well-known")]
    assert len([r for r in routes if r[1] in neucron]) >= 28, routes
    routes.sort(key=lambda r: r[0] == "DELETE")  # disable the app and revoke its key last
    for method, template, route in routes:
        path = template.format(  # color: /static/accent/; client_id: /oauth2/register/
            app_id=flow.app_id, key_id=flow.key_id, color="0b5cad", client_id=flow.app_id, token_id="no-such-token",
            user_id="no-such-user",  # /v1/admin/users/{user_id}: refused to anyone but an admin anyway
            credential_id="no-such-passkey", action="lock",  # /account/passkeys/…, /admin/…/{action}
        )
        user = logout_token if template.endswith("/logout") else flow.dev_token if "/apps" in template else flow.user_token
        reads_body = route.body_field is not None or template.startswith("/oauth2/") and method == "POST"
        requests: list[tuple[str, Any]] = []
        for name, content, content_type in bodies if reads_body else bodies[:3]:
            headers = {"Authorization": f"Bearer {user}"}
            if content_type:
                headers["Content-Type"] = content_type
            requests.append((f"body {name}", client.request(method, path, content=content, headers=headers)))
        for header in [*HOSTILE_HEADERS, tokens["jwt-other-key"], tokens["expired"], tokens["jwt-alg-none"]]:
            headers = {} if header is None else {"Authorization": header}
            body = {"token": flow.params()}
            requests.append((f"Authorization {header!r:.60}", client.request(method, path, json=body, headers=headers)))
        for raw_header in (b"Bearer \xff\xfe", b"\xc3\x28", "Bearer 🔐".encode()):
            headers_raw = [(b"Authorization", raw_header)]
            requests.append((f"Authorization {raw_header!r}", client.request(method, path, json={}, headers=headers_raw)))
        responses = await _all(request for _, request in requests)
        for (what, _), response in zip(requests, responses, strict=True):
            if template in neucron:
                assert_no_server_error(response, f"{method} {path} {what}", flat=flat_success(route))
            else:  # another dialect (standard OAuth 2.0, HTML pages): its own shapes, but never a 500
                assert response.status_code < 500, f"{method} {path} {what}: {response.status_code} {response.text[:300]}"
    requests = []
    for template in ("/apps/{}", "/apps/{}/keys", "/apps/{}/keys/key_x", "/grants/{}", "/registration-tokens/{}"):
        for hostile_id in ("%00", "%F0%9F%94%90", "%ED%A0%80", "a" * 5000, "..%2F..%2Fetc", "%25", "%FF", "%20"):
            for prefix in PREFIXES:
                for method in ("GET", "PATCH", "DELETE", "POST"):
                    url = prefix + template.format(hostile_id)
                    requests.append((f"{method} {url[:60]}", client.request(method, url, json={}, headers=bearer(flow.dev_token))))
    responses = await _all(request for _, request in requests)
    for (what, _), response in zip(requests, responses, strict=True):
        assert_no_server_error(response, what)
