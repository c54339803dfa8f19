"""The published OpenAPI document: what a client developer generates a client from.

Every route is there with its method; every JSON body names its real fields; every
Neucron success is the ``{"data", "status_code"}`` envelope and every Neucron error
the ``{"error", "message", "status_code"}`` body, under the statuses the route
can actually answer. The standard OAuth 2.0 endpoints (``/oauth2/``), the
``/.well-known/`` documents and the operations probes speak their own RFC shapes.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from grantd.routes import NEUCRON_V2
from support.routes import documented_routes, needs_user, neucron_paths

# Routes that are not the Neucron dialect, by path prefix: RFC 6749/7009/7662 JSON, RFC 8414/7517
# documents, and liveness/readiness probes.
OTHER_DIALECTS = ("/oauth2/", "/.well-known/", "/healthz", "/readyz", "/metrics")

AUTHORIZE_FIELDS = {"app_id", "app_key", "state", "redirect_uri", "permissions"}
TOKEN_FIELDS = {"auth_code", "key_id", "key_secret"}
CREDENTIALS = {"email", "password"}
APP_FIELDS = {"name", "redirect_uris", "permissions"}
APP_RFC7591_FIELDS = {"client_name", "scope"}

# (method, root path) -> {top-level property: the fields of the object inside it, or None for a plain field}
REQUEST_BODIES: dict[tuple[str, str], dict[str, set[str] | None]] = {
    ("POST", "/oauth/authorize"): {"token": AUTHORIZE_FIELDS, "permissions": AUTHORIZE_FIELDS},
    ("PATCH", "/oauth/permissions/grant"): {"permissions": AUTHORIZE_FIELDS},
    ("POST", "/oauth/token"): {"token": TOKEN_FIELDS},
    ("POST", "/auth/signup"): dict.fromkeys(CREDENTIALS),
    ("POST", "/auth/login"): dict.fromkeys(CREDENTIALS),
    ("POST", "/apps"): dict.fromkeys(APP_FIELDS | APP_RFC7591_FIELDS | {"application_type"}),
    ("PATCH", "/apps/{app_id}"): dict.fromkeys(APP_FIELDS | APP_RFC7591_FIELDS),
}
# The wrapper and fields every client must send.
REQUIRED_BODY_FIELDS: dict[tuple[str, str], set[str]] = {
    ("PATCH", "/oauth/permissions/grant"): {"permissions"},
    ("POST", "/oauth/token"): {"token"},
    ("POST", "/auth/signup"): CREDENTIALS,
    ("POST", "/auth/login"): CREDENTIALS,
    # name and permissions may come as RFC 7591's client_name and scope instead: neither name is required.
    ("POST", "/apps"): {"redirect_uris"},
}
# What the 200 `data` of some routes holds at least.
SUCCESS_DATA: dict[tuple[str, str], set[str]] = {
    ("POST", "/oauth/authorize"): {"code", "user_id"},
    ("PATCH", "/oauth/permissions/grant"): {"message"},
    ("POST", "/oauth/token"): {"access_token"},
    ("POST", "/auth/signup"): {"user_id", "access_token", "expires_at"},
    ("POST", "/auth/login"): {"user_id", "access_token", "expires_at"},
    ("POST", "/apps"): {"app_id", "app_key", "name", "redirect_uris", "permissions"},
    ("POST", "/apps/{app_id}/keys"): {"key_id", "key_secret"},
}

# The calls of Neucron's v2 SDK that no v1 client makes: their 200 is flat (the SDK does not unwrap
# an envelope), the component named here, with at least these properties.
FLAT_SUCCESS: dict[tuple[str, str], tuple[str, set[str]]] = {
    ("GET", "/auth/user/info"): ("UserInfo", {"id", "email", "first_name", "user_name", "is_email_verified", "platform"}),
    ("PUT", "/auth/user/update"): ("AccountMessage", {"message"}),
    ("PUT", "/auth/user/password"): ("AccountMessage", {"message"}),
    ("POST", "/auth/password/forgot"): ("AccountMessage", {"message"}),
    ("GET", "/auth/user/export"): ("AccountExport", {"format", "version", "profile", "apps", "consents", "sessions", "audit_events"}),
}


# ---------------------------------------------------------------- helpers


def root(path: str) -> str:
    return path.removeprefix("/v1")


class Document:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.schemas: dict[str, Any] = spec["components"]["schemas"]

    def resolve(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """(component name, schema) behind a $ref, through a nullable anyOf."""
        if "anyOf" in schema:
            refs = [s for s in schema["anyOf"] if s.get("type") != "null"]
            assert len(refs) == 1, schema
            schema = refs[0]
        ref = schema.get("$ref")
        if ref is None:
            return None, schema
        assert ref.startswith("#/components/schemas/"), ref
        name = ref.rsplit("/", 1)[1]
        assert name in self.schemas, f"dangling reference {ref}"
        return name, self.schemas[name]

    def operation(self, method: str, path: str) -> dict[str, Any]:
        return self.spec["paths"][path][method.lower()]

    def json_schema(self, response_or_body: dict[str, Any]) -> dict[str, Any]:
        content = response_or_body.get("content", {})
        assert "application/json" in content, response_or_body
        return content["application/json"]["schema"]


@pytest.fixture(scope="module")
async def openapi(client: httpx.AsyncClient) -> Document:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    return Document(spec)


# ---------------------------------------------------------------- every route, every method


async def test_every_route_is_documented_with_its_method(app: Any, openapi: Document) -> None:
    routes = documented_routes(app)
    assert len(routes) >= 30, routes
    missing = [(m, p) for m, p, _ in routes if m.lower() not in openapi.spec["paths"].get(p, {})]
    assert not missing, f"routes absent from /openapi.json: {missing}"
    documented = {(m.lower(), p) for m, p, _ in routes}
    extra = [(m, p) for p, ops in openapi.spec["paths"].items() for m in ops if (m, p) not in documented]
    assert not extra, f"operations in /openapi.json without a route: {extra}"


async def test_neucron_routes_are_served_at_the_root_and_under_v1(app: Any, openapi: Document) -> None:
    neucron = neucron_paths(app)
    for method, path, _ in documented_routes(app):
        if path.startswith(OTHER_DIALECTS):
            continue
        if path.startswith("/v1/admin/"):  # the admin API: only under /v1 (/admin is its pages)
            assert path.removeprefix("/v1") not in openapi.spec["paths"], path
            continue
        assert path in neucron, f"{method} {path} is neither a Neucron route at both /v1 and the root nor another dialect"
        twin = path.removeprefix("/v1") if path.startswith("/v1/") else "/v1" + path
        assert method.lower() in openapi.spec["paths"][twin], f"{method} {twin}"
    for method, path in REQUEST_BODIES:
        assert path in neucron and "/v1" + path in neucron, path


async def test_operation_ids_are_unique(openapi: Document) -> None:
    ids = [op["operationId"] for ops in openapi.spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


async def test_component_names_are_clean(openapi: Document) -> None:
    """A client generator turns these into class names: no module paths or numbered duplicates."""
    ugly = [name for name in openapi.schemas if "__" in name or name.startswith("grantd")]
    assert not ugly, ugly


# ---------------------------------------------------------------- request bodies


async def test_json_request_bodies_name_their_real_fields(app: Any, openapi: Document) -> None:
    checked = set()
    for method, path, route in documented_routes(app):
        if route.body_field is None or path.startswith(OTHER_DIALECTS):
            continue
        operation = openapi.operation(method, path)
        assert "requestBody" in operation, f"{method} {path} takes a body but documents none"
        body = operation["requestBody"]
        name, schema = openapi.resolve(openapi.json_schema(body))
        assert name is not None, f"{method} {path}: the body schema is not a named component"
        assert schema.get("type") == "object" and schema.get("properties"), (method, path, schema)
        # The component has the model's own fields.
        model = route.body_field.field_info.annotation
        if hasattr(model, "model_fields"):
            expected = {f.alias or n for n, f in model.model_fields.items()}
            assert set(schema["properties"]) == expected, (method, path, schema["properties"])

        key = (method, root(path))
        if key in REQUEST_BODIES:
            checked.add(key)
            assert set(REQUEST_BODIES[key]) <= set(schema["properties"]), (key, schema["properties"])
            for prop, fields in REQUEST_BODIES[key].items():
                inner_name, inner = openapi.resolve(schema["properties"][prop])
                if fields is None:
                    continue
                assert inner_name is not None, (key, prop)
                assert set(inner["properties"]) == fields, (key, prop, inner["properties"])
                assert set(inner.get("required", [])) == fields, f"{key} {prop}: every field is required"
                for field in fields:
                    assert inner["properties"][field].get("type") == "string", (key, prop, field)
        if key in REQUIRED_BODY_FIELDS:
            assert body.get("required") is True, f"{method} {path}: the body is required"
            assert REQUIRED_BODY_FIELDS[key] <= set(schema.get("required", [])), (key, schema.get("required"))
    assert checked == set(REQUEST_BODIES), set(REQUEST_BODIES) - checked


async def test_token_wrapper_schema(openapi: Document) -> None:
    """The one a developer reads first: {"token": {auth_code, key_id, key_secret}}."""
    for path in ("/oauth/token", "/v1/oauth/token"):
        _, body = openapi.resolve(openapi.json_schema(openapi.operation("POST", path)["requestBody"]))
        assert body["required"] == ["token"]
        _, token = openapi.resolve(body["properties"]["token"])
        assert set(token["properties"]) == {"auth_code", "key_id", "key_secret"}
        assert set(token["required"]) == {"auth_code", "key_id", "key_secret"}


async def test_bodiless_routes_document_no_body(app: Any, openapi: Document) -> None:
    for method, path, route in documented_routes(app):
        if route.body_field is None and not path.startswith(OTHER_DIALECTS):
            assert "requestBody" not in openapi.operation(method, path), f"{method} {path}"


async def test_form_endpoints_document_their_form(app: Any, openapi: Document) -> None:
    for method, path, _ in documented_routes(app):
        if path.startswith("/oauth2/") and method in ("POST", "PUT", "PATCH"):
            body = openapi.operation(method, path).get("requestBody")
            assert body is not None, f"{method} {path}"
            # RFC 7591 §3.1 and RFC 7592 §2.2: the registration endpoint takes the metadata as JSON.
            kind = "application/json" if path.startswith("/oauth2/register") else "application/x-www-form-urlencoded"
            form = body["content"][kind]["schema"]
            assert form.get("properties"), (method, path)


# ---------------------------------------------------------------- success responses


def assert_envelope_schema(openapi: Document, where: str, schema: dict[str, Any]) -> dict[str, Any]:
    name, envelope = openapi.resolve(schema)
    assert name is not None and name.startswith("Envelope"), f"{where}: 200 is {schema}, not an Envelope"
    assert set(envelope["properties"]) == {"data", "status_code"}, (where, envelope)
    assert set(envelope.get("required", [])) == {"data", "status_code"}, f"{where}: both keys are always there"
    assert envelope["properties"]["status_code"]["type"] == "integer", where
    data_name, data = openapi.resolve(envelope["properties"]["data"])
    assert data_name is not None and data.get("properties"), f"{where}: data is {data}"
    return data


async def test_neucron_success_is_the_envelope(app: Any, openapi: Document) -> None:
    neucron = neucron_paths(app)
    checked = set()
    for method, path, _ in documented_routes(app):
        if path not in neucron or (method, root(path)) in FLAT_SUCCESS or NEUCRON_V2 in openapi.operation(method, path)["tags"]:
            continue
        responses = openapi.operation(method, path)["responses"]
        assert "200" in responses, (method, path)
        data = assert_envelope_schema(openapi, f"{method} {path}", openapi.json_schema(responses["200"]))
        key = (method, root(path))
        if key in SUCCESS_DATA:
            checked.add(key)
            assert SUCCESS_DATA[key] <= set(data["properties"]), (key, data["properties"])
            assert SUCCESS_DATA[key] <= set(data.get("required", [])), (key, data.get("required"))
    assert checked == set(SUCCESS_DATA), set(SUCCESS_DATA) - checked


async def test_v2_success_is_flat(app: Any, openapi: Document) -> None:
    neucron = neucron_paths(app)
    checked = set()
    for method, path, _ in documented_routes(app):
        key = (method, root(path))
        if path not in neucron or key not in FLAT_SUCCESS:
            continue
        checked.add(key)
        expected_name, expected = FLAT_SUCCESS[key]
        name, schema = openapi.resolve(openapi.json_schema(openapi.operation(method, path)["responses"]["200"]))
        assert name == expected_name, (method, path, name)
        assert expected <= set(schema["properties"]), (method, path, schema["properties"])
    assert checked == set(FLAT_SUCCESS), set(FLAT_SUCCESS) - checked


async def test_neucron_v2_success_is_flat(app: Any, openapi: Document) -> None:
    """Neucron's SDK 2.x reads the body as it is: its calls answer the object itself, no envelope."""
    neucron = neucron_paths(app)
    flat = []
    for method, path, _ in documented_routes(app):
        operation = openapi.operation(method, path)
        if NEUCRON_V2 not in operation["tags"]:
            continue
        assert path in neucron, f"{method} {path}: served at the root and under /v1"
        name, schema = openapi.resolve(openapi.json_schema(operation["responses"]["200"]))
        assert not (name or "").startswith("Envelope"), f"{method} {path}"
        assert schema["type"] == "object" and schema["properties"] and schema["required"], (method, path, schema)
        assert "data" not in schema["properties"], (method, path, schema)
        flat.append((method, root(path)))
    assert {("GET", "/oauth/authorize"), ("GET", "/oauth/token"), ("GET", "/oauth/client-info")} <= set(flat), flat


async def test_jwks_is_a_plain_jwks(openapi: Document) -> None:
    responses = openapi.operation("GET", "/.well-known/jwks.json")["responses"]
    name, schema = openapi.resolve(openapi.json_schema(responses["200"]))
    assert name is not None and not name.startswith("Envelope")
    assert set(schema["properties"]) == {"keys"}
    assert schema["properties"]["keys"]["type"] == "array"


async def test_other_dialects_are_not_enveloped(app: Any, openapi: Document) -> None:
    for method, path, _ in documented_routes(app):
        if not path.startswith(OTHER_DIALECTS):
            continue
        responses = openapi.operation(method, path)["responses"]
        # RFC 9126 §2.2 and RFC 7591 §3.2.1: 201 Created; RFC 7592 §2.3: 204 No Content
        created = {("POST", "/oauth2/par"), ("POST", "/oauth2/register")}
        success = "201" if (method, path) in created else "204" if (method, path) == ("DELETE", "/oauth2/register/{client_id}") else "200"
        assert success in responses, (method, path)
        schema = responses[success].get("content", {}).get("application/json", {}).get("schema", {})
        name, _ = openapi.resolve(schema)
        assert not (name or "").startswith("Envelope"), f"{method} {path} is not a Neucron route"


# ---------------------------------------------------------------- error responses


def expected_errors(method: str, path: str, route: APIRoute) -> set[str]:
    """The statuses a Neucron route can answer with an error body."""
    statuses = set()
    if route.body_field is not None:
        statuses |= {"400", "413"}  # malformed or too large a body
    if "{" in path:
        statuses.add("400")  # a path parameter too long or with a NUL character
    if needs_user(route):
        statuses.add("401")
    if "{app_id}" in path:
        statuses.add("404")
    key = (method, root(path))
    if key in {("POST", "/oauth/authorize"), ("PATCH", "/oauth/permissions/grant")}:
        statuses |= {"400", "401"}
    if key == ("POST", "/oauth/token"):
        statuses |= {"400", "401"}  # invalid_request; invalid_client, invalid_grant
    if key == ("POST", "/auth/signup"):
        statuses |= {"400", "409"}
    if key == ("POST", "/auth/login"):
        statuses |= {"400", "401"}
    return statuses


async def test_neucron_errors_are_the_error_body(app: Any, openapi: Document) -> None:
    neucron = neucron_paths(app)
    _, error_body = openapi.resolve({"$ref": "#/components/schemas/ErrorBody"})
    assert set(error_body["properties"]) == {"error", "message", "status_code"}
    assert set(error_body["required"]) == {"error", "message", "status_code"}
    assert error_body["properties"]["status_code"]["type"] == "integer"
    assert error_body["properties"]["error"]["type"] == "string"
    assert error_body["properties"]["message"]["type"] == "string"

    for method, path, route in documented_routes(app):
        if path not in neucron:
            continue
        responses = openapi.operation(method, path)["responses"]
        where = f"{method} {path}"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                name, _ = openapi.resolve(openapi.json_schema(response))
                assert name == "ErrorBody", f"{where}: {status} is documented as {name}, but errors are ErrorBody"
                assert response.get("description"), (where, status)
        missing = expected_errors(method, path, route) - set(responses)
        assert not missing, f"{where} can answer {sorted(missing)} but does not document it"


async def test_no_phantom_422(openapi: Document) -> None:
    """grantd answers a malformed request with 400 invalid_request, never FastAPI's 422."""
    with_422 = [(m, p) for p, ops in openapi.spec["paths"].items() for m, op in ops.items() if "422" in op["responses"]]
    assert not with_422, f"documents a 422 the server never sends: {with_422}"
    assert "HTTPValidationError" not in openapi.schemas and "ValidationError" not in openapi.schemas


async def test_malformed_request_really_is_a_documented_400(client: httpx.AsyncClient, openapi: Document) -> None:
    """What the document says is what the server does."""
    response = await client.post("/v1/oauth/token", json={"token": {}})
    assert response.status_code == 400
    assert "400" in openapi.operation("POST", "/v1/oauth/token")["responses"]
    assert set(response.json()) == set(openapi.schemas["ErrorBody"]["properties"])
    response = await client.get("/v1/apps/" + "x" * 65, headers={"Authorization": "Bearer x"})
    assert response.status_code in (400, 401)
    assert str(response.status_code) in openapi.operation("GET", "/v1/apps/{app_id}")["responses"]


# ---------------------------------------------------------------- security


async def test_user_token_routes_declare_their_security(app: Any, openapi: Document) -> None:
    schemes = openapi.spec["components"]["securitySchemes"]
    assert schemes["UserToken"]["in"] == "header" and schemes["UserToken"]["name"] == "Authorization"
    for method, path, route in documented_routes(app):
        if path.startswith(OTHER_DIALECTS):
            continue
        security = openapi.operation(method, path).get("security")
        if needs_user(route):
            assert security == [{"UserToken": []}], f"{method} {path}: {security}"
        else:
            assert not security, f"{method} {path} needs no user token: {security}"
    assert not openapi.operation("POST", "/oauth/token").get("security")


# ---------------------------------------------------------------- Swagger UI


async def test_docs_serve_swagger_ui(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "swagger-ui" in html.lower() and "SwaggerUIBundle" in html
    assert "/openapi.json" in html


async def test_every_security_scheme_a_route_names_is_defined(client) -> None:  # type: ignore[no-untyped-def]
    document = (await client.get("/openapi.json")).json()
    defined = set(document["components"]["securitySchemes"])
    named = {
        name
        for operations in document["paths"].values()
        for operation in operations.values()
        for requirement in operation.get("security", [])
        for name in requirement
    }
    assert named and named <= defined, named - defined
    assert document["components"]["securitySchemes"]["ClientSecretBasic"]["scheme"] == "basic"
