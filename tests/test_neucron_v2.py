"""Neucron v2: "Sign in with Neucron" as Neucron's TypeScript SDK 2.2.3 does it.

Every call is replayed as the SDK sends it (``sdk_get``): a GET with ``X-Neucron-SDK``,
``Content-Type: application/json`` and no body, ``Accept: application/json``, no
``Authorization``, the query parameters in the SDK's order. Every 200 is checked against the
SDK's zod schemas, transcribed (``AUTHORIZE``, ``TOKEN``, ``CLIENT_INFO``): what the SDK would
refuse (a required key absent, ``null`` for an optional one, a wrong type) fails the test.

The whole journey runs on a real ``grantd serve``: authorize, the hosted sign-in and consent
pages, the code and state at the redirect, the token (and the SDK's retry of it), verified with
``grantd.sdk.TokenVerifier``; then the server's log and the audit log are searched for the
secrets the query carried. The rules run in-process, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest

from acting_user import ActingUser, developer, new_app, parse_forms
from grantd.config import Settings
from grantd.sdk import TokenVerifier
from grantd.server import create_app
from support.neucron import PASSWORD, Flow, assert_error, unique_email
from support.servers import TIMEOUT, ServerProcess, assert_clean_logs, server_on_new_sqlite

ISSUER = "http://testserver"
SDK_HEADERS = {
    "X-Neucron-SDK": "neucron-ts-sdk/2.2.3",
    "Content-Type": "application/json",
    "Accept": "application/json",
}
STATE = "sdk-state-9f2c"

# ---------------------------------------------------------------- the SDK's zod schemas, transcribed
# key -> (type, required). A type is str, int, bool, a tuple of allowed strings (z.enum), [str]
# (z.array(z.string())) or a nested schema (z.object). zod objects ignore unknown keys.

AUTHORIZE: dict[str, Any] = {"redirect_url": (str, True)}
TOKEN: dict[str, Any] = {"access_token": (str, True)}
CLIENT_INFO: dict[str, Any] = {
    "client_id": (str, True),
    **{
        name: (str, False)
        for name in (
            "app_id", "app_name", "app_icon", "app_domain", "description", "website_url",
            "terms_and_conditions", "privacy_policy",
        )
    },
    "branding": (
        {
            "accent_color": (str, False),
            "theme": (("dark", "light"), False),
            "logo_url": (str, False),
            "login_methods": ([str], False),
        },
        False,
    ),
}


def zod_errors(value: Any, schema: dict[str, Any], where: str = "body") -> list[str]:
    """What zod would refuse in ``value``: [] when the SDK accepts it."""
    if not isinstance(value, dict):
        return [f"{where} is not an object"]
    errors = []
    for key, (kind, required) in schema.items():
        path = f"{where}.{key}"
        if key not in value:
            if required:
                errors.append(f"{path} is required")
            continue
        item = value[key]
        if item is None:
            errors.append(f"{path} is null: .optional() takes an absent key, not null")
        elif isinstance(kind, dict):
            errors += zod_errors(item, kind, path)
        elif isinstance(kind, tuple):
            if item not in kind:
                errors.append(f"{path} is {item!r}, not one of {kind}")
        elif isinstance(kind, list):
            if not isinstance(item, list) or not all(isinstance(i, kind[0]) for i in item):
                errors.append(f"{path} is not a list of {kind[0].__name__}")
        elif not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            errors.append(f"{path} is {type(item).__name__}, not {kind.__name__}")
    return errors


def sdk_ok(response: httpx.Response, schema: dict[str, Any]) -> dict[str, Any]:
    """A 200 the SDK accepts: JSON, its schema holds, never cached or sent on as a Referer."""
    assert response.status_code == 200, response.text
    assert_json_answer(response)
    body = response.json()
    assert zod_errors(body, schema) == [], body
    return body  # type: ignore[no-any-return]


def assert_json_answer(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "application/json", response.headers
    assert response.headers["cache-control"] == "no-store", response.headers
    assert response.headers["referrer-policy"] == "no-referrer", response.headers


def sdk_error(response: httpx.Response, status: int, error: str) -> str:
    """A Neucron error body (the SDK shows its ``message``), never a redirect; returns the message."""
    assert "location" not in response.headers, response.headers
    assert_json_answer(response)
    return assert_error(response, status, error)["message"]  # type: ignore[no-any-return]


async def sdk_get(http: httpx.AsyncClient, path: str, params: dict[str, str | None], prefix: str = "/v1") -> httpx.Response:
    """A GET as the SDK sends it: its base URL includes /v1; parameters in the order given (None: left out)."""
    query = urlencode([(name, value) for name, value in params.items() if value is not None])
    response = await http.get(f"{prefix}{path}?{query}", headers=SDK_HEADERS)
    assert "authorization" not in response.request.headers
    return response


# The SDK's parameters, in its order.


def authorize_params(flow: Flow, /, **changes: str | None) -> dict[str, str | None]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": flow.app_id,
        "redirect_uri": flow.redirect_uri,
        "state": STATE,
        "platform": "Test App",
        "flow": "sign-in",
    }
    params.update(changes)
    return params


def token_params(flow: Flow, code: str, /, **changes: str | None) -> dict[str, str | None]:
    params: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow.redirect_uri,
        "client_id": flow.app_id,
        "client_secret": flow.key_secret,
        "state": STATE,
    }
    params.update(changes)
    return params


def query_of(url: str) -> dict[str, str]:
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    assert len(pairs) == len(dict(pairs)), url
    return dict(pairs)


def consent_path(redirect_url: str) -> str:
    """The /oauth2/authorize URL the hosted sign-in page continues to (its ``next``)."""
    return query_of(redirect_url)["next"]


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


# ---------------------------------------------------------------- in-process fixtures


@asynccontextmanager
async def app_with(settings: Settings, **changes: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app of its own on the session's database, with ``changes`` to its settings."""
    application = create_app(settings.model_copy(update=changes))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield application, http


@pytest.fixture(scope="module")
async def dev(client: httpx.AsyncClient) -> Flow:
    """A developer registering this module's apps, and the end user (``extra["email"]``) who signs in."""
    return await developer(client)


@pytest.fixture
async def v2_app(dev: Flow) -> Flow:
    """A new confidential app named "Test App", with one key."""
    return await new_app(dev)


class Codes:
    """The end user's browser on an app (a cookie jar of its own): codes through the hosted pages."""

    def __init__(self, application: Any, dev: Flow) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER)
        self.person = ActingUser(self.http, dev.extra["email"], PASSWORD)

    async def code(self, api: httpx.AsyncClient, flow: Flow, state: str = STATE) -> str:
        """A code for ``flow``'s app, asked for as the SDK does, granted through the pages (signing
        in, and consenting, the first time); its state checked at the redirect."""
        redirect_url = sdk_ok(await sdk_get(api, "/oauth/authorize", authorize_params(flow, state=state)), AUTHORIZE)
        location = await self.person.authorize(ISSUER + consent_path(redirect_url["redirect_url"]), flow.redirect_uri)
        back = query_of(location)
        assert back["state"] == state and back["iss"] == ISSUER, location
        return back["code"]

    async def token_request(self, api: httpx.AsyncClient, flow: Flow) -> dict[str, str | None]:
        """The SDK's token request for a new code of ``flow``'s app."""
        return token_params(flow, await self.code(api, flow))

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def codes(app: Any, dev: Flow) -> AsyncIterator[Codes]:
    browser = Codes(app, dev)
    yield browser
    await browser.aclose()


async def introspect(http: httpx.AsyncClient, flow: Flow, token: str) -> bool:
    response = await http.post(
        "/oauth2/introspect", data={"token": token}, auth=(flow.app_id, flow.key_secret)
    )
    assert response.status_code == 200, response.text
    return response.json()["active"]  # type: ignore[no-any-return]


async def audit_events(http: httpx.AsyncClient, dev: Flow, app_id: str) -> list[str]:
    response = await http.get("/v1/audit", headers={"Authorization": dev.dev_token})
    assert response.status_code == 200, response.text
    return [e["event"] for e in response.json()["data"]["events"] if e["app_id"] == app_id]


# ---------------------------------------------------------------- the schema checker itself


def test_the_transcribed_schemas_refuse_what_zod_refuses() -> None:
    assert zod_errors({"redirect_url": "https://x"}, AUTHORIZE) == []
    assert zod_errors({}, AUTHORIZE) == ["body.redirect_url is required"]
    assert zod_errors({"access_token": None}, TOKEN) != []
    assert zod_errors({"access_token": 1}, TOKEN) != []
    assert zod_errors({"client_id": "a", "app_name": None}, CLIENT_INFO) != []
    assert zod_errors({"client_id": "a", "branding": {"theme": "blue"}}, CLIENT_INFO) != []
    assert zod_errors({"client_id": "a", "branding": {"login_methods": ["google"]}, "more": 1}, CLIENT_INFO) == []


# ---------------------------------------------------------------- the whole journey, on a real server


async def test_the_sdks_whole_journey_on_a_real_server(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str
) -> None:
    with server_on_new_sqlite(tmp_path_factory, secret_key, "neucron-v2") as server:
        await _journey(server)


async def _journey(server: ServerProcess) -> None:
    base = server.base_url
    async with (
        httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as api,
        httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as browser,
    ):
        dev = await developer(api)
        flow = await new_app(dev)

        # Before sign-in the SDK shows the app.
        info = sdk_ok(await sdk_get(api, "/oauth/client-info", {"client_id": flow.app_id}), CLIENT_INFO)
        assert (info["client_id"], info["app_id"], info["app_name"]) == (flow.app_id, flow.app_id, "Test App")

        # 1. authorize: the hosted sign-in page, continuing to the consent page with the request.
        answer = sdk_ok(await sdk_get(api, "/oauth/authorize", authorize_params(flow)), AUTHORIZE)
        redirect_url = answer["redirect_url"]
        assert redirect_url.startswith(f"{base}/signin?next="), redirect_url
        assert query_of(consent_path(redirect_url)) == {
            "response_type": "code", "client_id": flow.app_id, "redirect_uri": flow.redirect_uri, "state": STATE,
        }

        # 2. the user's browser: the real sign-in page, the consent page, the redirect to the app.
        person = ActingUser(browser, dev.extra["email"], PASSWORD)
        location = await person.authorize(redirect_url, flow.redirect_uri)
        assert [urlsplit(str(page.url)).path for page in person.pages[:2]] == ["/signin", "/signin"]
        assert any(urlsplit(str(page.url)).path == "/oauth2/authorize" and "Test App" in page.text for page in person.pages)
        assert location.startswith(flow.redirect_uri + "?"), location
        back = query_of(location)
        assert back["state"] == STATE and back["iss"] == base and back["code"], location

        # 3. token, from the app's backend (a forged state first: refused, and the code not spent).
        forged = await sdk_get(api, "/oauth/token", token_params(flow, back["code"], state="forged"))
        sdk_error(forged, 401, "invalid_grant")
        request = token_params(flow, back["code"])
        token = sdk_ok(await sdk_get(api, "/oauth/token", request), TOKEN)["access_token"]
        async with TokenVerifier(base) as verifier:
            access = await verifier.averify(token)
        assert access.user_id == dev.user_id and access.app_id == flow.app_id
        assert access.permissions == ("read_profile", "write_data")

        # The SDK retries the GET (say its answer was lost): the same token, not a replay.
        again = sdk_ok(await sdk_get(api, "/oauth/token", request), TOKEN)["access_token"]
        first, second = claims(token), claims(again)
        assert (second["jti"], second["iat"], second["exp"]) == (first["jti"], first["iat"], first["exp"])
        async with TokenVerifier(base, introspection=(flow.app_id, flow.key_secret)) as online:
            assert (await online.averify(again)).jti == access.jti

        # An error that carries the secret too: an unknown code.
        wrong = await sdk_get(api, "/oauth/token", token_params(flow, "not-a-code-" + "x" * 32))
        sdk_error(wrong, 401, "invalid_grant")
        events = await audit_events(api, dev, flow.app_id)
        assert {"code_issued", "code_redeemed"} <= set(events), events
        audit_text = (await api.get("/v1/audit", headers={"Authorization": dev.dev_token})).text

    # The secrets the query carried are in no log line and no audit event; the requests are logged.
    server.stop()
    log = server.log()
    assert "/v1/oauth/token" in log and "/v1/oauth/authorize" in log, log[-2000:]
    for secret in (flow.key_secret, back["code"], token, again):
        assert secret not in log, "a secret of the query reached the server's log"
        assert secret not in audit_text
    assert "client_secret=" not in log and "grant_type=" not in log
    assert_clean_logs([server])


# ---------------------------------------------------------------- authorize


@pytest.mark.db
@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_authorize_answers_the_hosted_sign_in_page(client: httpx.AsyncClient, v2_app: Flow, prefix: str) -> None:
    response = await sdk_get(client, "/oauth/authorize", authorize_params(v2_app), prefix)
    redirect_url = sdk_ok(response, AUTHORIZE)["redirect_url"]
    parts = urlsplit(redirect_url)
    assert (parts.scheme + "://" + parts.netloc, parts.path) == (ISSUER, "/signin")
    assert consent_path(redirect_url) == "/oauth2/authorize?" + urlencode(
        {"response_type": "code", "client_id": v2_app.app_id, "redirect_uri": v2_app.redirect_uri, "state": STATE}
    )
    # flow defaults to sign-in
    default = await sdk_get(client, "/oauth/authorize", authorize_params(v2_app, flow=None), prefix)
    assert sdk_ok(default, AUTHORIZE)["redirect_url"] == redirect_url


@pytest.mark.db
async def test_flow_sign_up_lands_on_the_sign_up_page_and_continues_to_consent(
    app: Any, client: httpx.AsyncClient, v2_app: Flow
) -> None:
    answer = sdk_ok(await sdk_get(client, "/oauth/authorize", authorize_params(v2_app, flow="sign-up")), AUTHORIZE)
    redirect_url = answer["redirect_url"]
    assert urlsplit(redirect_url).path == "/signup"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as browser:
        page = await browser.get(redirect_url)
        assert page.status_code == 200 and "Create an account" in page.text and "Test App" in page.text
        (form,) = [f for f in parse_forms(page.text) if f.action == "/signup"]
        fill = {"email": unique_email(), "password": PASSWORD}
        data = [(name, fill.get(name, value)) for name, value in form.inputs]
        assert ("next", consent_path(redirect_url)) in data
        signed_up = await browser.post("/signup", content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert signed_up.status_code == 303 and signed_up.headers["location"] == consent_path(redirect_url)
        consent = await browser.get(signed_up.headers["location"])
        assert consent.status_code == 200 and "Test App" in consent.text
        (allow,) = [f for f in parse_forms(consent.text) if f.action == "/oauth2/authorize"]
        decided = await browser.post(
            "/oauth2/authorize", content=urlencode([*allow.inputs, ("decision", "allow")]),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert decided.status_code == 303, decided.text
    back = query_of(decided.headers["location"])
    assert back["state"] == STATE
    sdk_ok(await sdk_get(client, "/oauth/token", token_params(v2_app, back["code"])), TOKEN)


REFUSED = [
    # (what, changes to the SDK's parameters, status, error, words of the message)
    ("unknown client", {"client_id": "no-such-app"}, 401, "invalid_client", "Unknown client_id"),
    ("unregistered redirect_uri", {"redirect_uri": "https://app.example.com/callback/other"}, 400, "invalid_redirect_uri", "not registered"),
    ("redirect_uri differing in case", {"redirect_uri": "https://APP.example.com/callback"}, 400, "invalid_redirect_uri", "not registered"),
    ("no redirect_uri", {"redirect_uri": None}, 400, "invalid_request", "redirect_uri is required"),
    ("no client_id", {"client_id": None}, 400, "invalid_request", "client_id is required"),
    ("no state", {"state": None}, 400, "invalid_request", "state is required"),
    ("empty state", {"state": ""}, 400, "invalid_request", "state is required"),
    ("a state too long to carry through sign-in", {"state": "é" * 1000}, 400, "invalid_request", "state is too long"),
    ("response_type token", {"response_type": "token"}, 400, "unsupported_response_type", "response_type=code"),
    ("no response_type", {"response_type": None}, 400, "unsupported_response_type", "response_type=code"),
    ("another app's name as platform", {"platform": "Some Other App"}, 400, "invalid_request", "platform"),
    ("no platform", {"platform": None}, 400, "invalid_request", "platform is required"),
    ("an unknown flow", {"flow": "sign-on"}, 400, "invalid_request", "flow must be sign-in or sign-up"),
]


@pytest.mark.db
@pytest.mark.parametrize(("what", "changes", "status", "error", "words"), REFUSED, ids=[case[0] for case in REFUSED])
async def test_authorize_refuses_what_the_consent_page_refuses(
    client: httpx.AsyncClient, v2_app: Flow, what: str, changes: dict[str, str | None], status: int, error: str, words: str
) -> None:
    message = sdk_error(await sdk_get(client, "/oauth/authorize", authorize_params(v2_app, **changes)), status, error)
    assert words in message, message


@pytest.mark.db
async def test_authorize_refuses_a_repeated_parameter(client: httpx.AsyncClient, v2_app: Flow) -> None:
    query = urlencode([*authorize_params(v2_app).items(), ("state", "another")])
    response = await client.get(f"/v1/oauth/authorize?{query}", headers=SDK_HEADERS)
    assert sdk_error(response, 400, "invalid_request") == "state is repeated."


@pytest.mark.db
async def test_a_public_app_is_refused_clearly(client: httpx.AsyncClient, dev: Flow) -> None:
    public = await new_app(dev, client_type="public")
    message = sdk_error(await sdk_get(client, "/oauth/authorize", authorize_params(public)), 400, "unauthorized_client")
    assert "public client" in message and "PKCE" in message and "confidential" in message, message


@pytest.mark.db
async def test_a_disabled_app_is_unknown(client: httpx.AsyncClient, dev: Flow) -> None:
    flow = await new_app(dev)
    response = await client.delete(f"/v1/apps/{flow.app_id}", headers={"Authorization": dev.dev_token})
    assert response.status_code == 200, response.text
    sdk_error(await sdk_get(client, "/oauth/authorize", authorize_params(flow)), 401, "invalid_client")
    sdk_error(await sdk_get(client, "/oauth/client-info", {"client_id": flow.app_id}), 404, "not_found")


# ---------------------------------------------------------------- token


@pytest.mark.db
async def test_a_wrong_secret_leaves_the_code_unspent(
    client: httpx.AsyncClient, codes: Codes, dev: Flow, v2_app: Flow
) -> None:
    code = await codes.code(client, v2_app)
    other = await new_app(dev)
    tampered = v2_app.key_secret[:-4] + ("AAAA" if not v2_app.key_secret.endswith("AAAA") else "BBBB")
    for changes in (
        {"client_secret": tampered},
        {"client_secret": other.key_secret},  # a real secret, of another app than client_id names
        {"client_id": other.app_id},
        {"client_secret": None},
        {"client_id": None},
    ):
        sdk_error(await sdk_get(client, "/oauth/token", token_params(v2_app, code, **changes)), 401, "invalid_client")
    sdk_ok(await sdk_get(client, "/oauth/token", token_params(v2_app, code)), TOKEN)


@pytest.mark.db
async def test_a_wrong_redirect_uri_or_state_leaves_the_code_unspent(
    client: httpx.AsyncClient, codes: Codes, v2_app: Flow
) -> None:
    code = await codes.code(client, v2_app)
    for changes, status, error, message in (
        ({"redirect_uri": v2_app.redirect_uri + "/x"}, 401, "invalid_grant", "redirect_uri does not match the one the code was issued for."),
        ({"state": STATE + "-forged"}, 401, "invalid_grant", "state does not match the one the code was issued with."),
        ({"state": None}, 400, "invalid_request", "state is required."),
        ({"redirect_uri": None}, 400, "invalid_request", "redirect_uri is required."),
        ({"code": None}, 400, "invalid_request", "code is required."),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type", "grant_type must be authorization_code."),
    ):
        response = await sdk_get(client, "/oauth/token", token_params(v2_app, code, **changes))
        assert sdk_error(response, status, error) == message
    token = sdk_ok(await sdk_get(client, "/oauth/token", token_params(v2_app, code)), TOKEN)["access_token"]
    assert await introspect(client, v2_app, token)


@pytest.mark.db
async def test_the_answer_is_a_bearer_token_of_the_app_for_the_user(
    client: httpx.AsyncClient, codes: Codes, dev: Flow, v2_app: Flow
) -> None:
    code = await codes.code(client, v2_app)
    response = await sdk_get(client, "/oauth/token", token_params(v2_app, code), prefix="")
    body = sdk_ok(response, TOKEN)
    assert body["token_type"] == "Bearer" and body["scope"] == "read_profile write_data"
    token = claims(body["access_token"])
    assert (token["sub"], token["client_id"], token["iss"]) == (dev.user_id, v2_app.app_id, ISSUER)
    assert body["expires_in"] == token["exp"] - token["iat"]
    header = jwt.get_unverified_header(body["access_token"])
    jwks = jwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    jwt.decode(body["access_token"], key.key, algorithms=["ES256"], audience=ISSUER, issuer=ISSUER)


# ---------------------------------------------------------------- the SDK's retries


@pytest.mark.db
async def test_a_retry_within_the_window_gets_the_same_token(
    client: httpx.AsyncClient, codes: Codes, v2_app: Flow
) -> None:
    request = await codes.token_request(client, v2_app)
    first = sdk_ok(await sdk_get(client, "/oauth/token", request), TOKEN)
    second = sdk_ok(await sdk_get(client, "/oauth/token", request), TOKEN)
    a, b = claims(first["access_token"]), claims(second["access_token"])
    assert (a["jti"], a["iat"], a["exp"]) == (b["jti"], b["iat"], b["exp"])
    assert a == b
    assert second["expires_in"] <= first["expires_in"]
    assert await introspect(client, v2_app, first["access_token"])
    assert await introspect(client, v2_app, second["access_token"])


@pytest.mark.db
async def test_identical_requests_at_once_all_get_the_one_token(
    client: httpx.AsyncClient, codes: Codes, v2_app: Flow
) -> None:
    request = await codes.token_request(client, v2_app)
    answers = await asyncio.gather(*(sdk_get(client, "/oauth/token", request) for _ in range(4)))
    jtis = {claims(sdk_ok(answer, TOKEN)["access_token"])["jti"] for answer in answers}
    assert len(jtis) == 1, jtis


async def redeemed(application: Any, http: httpx.AsyncClient, dev: Flow) -> tuple[Flow, dict[str, str | None], str]:
    """On an app of its own (``app_with``): a new app of ``dev``'s, a code granted through the pages,
    and the SDK's token request for it, made once: (the app, the request, the access token)."""
    flow = await new_app(dataclasses.replace(dev, client=http))
    browser = Codes(application, dev)
    try:
        request = await browser.token_request(http, flow)
    finally:
        await browser.aclose()
    return flow, request, sdk_ok(await sdk_get(http, "/oauth/token", request), TOKEN)["access_token"]


@pytest.mark.db
async def test_after_the_window_a_retry_is_a_replay(settings: Settings, dev: Flow) -> None:
    async with app_with(settings) as (application, http):
        flow, request, token = await redeemed(application, http, dev)
        ctx = application.state.ctx
        redeemed_at = claims(token)["iat"]
        grace = settings.code_retry_grace
        assert grace == 30  # the default
        ctx.now = lambda: redeemed_at + grace  # type: ignore[method-assign]
        same = sdk_ok(await sdk_get(http, "/oauth/token", request), TOKEN)["access_token"]
        assert claims(same)["jti"] == claims(token)["jti"]
        ctx.now = lambda: redeemed_at + grace + 1  # type: ignore[method-assign]
        sdk_error(await sdk_get(http, "/oauth/token", request), 401, "invalid_grant")
        del ctx.now
        assert not await introspect(http, flow, token)
        assert "code_replayed" in await audit_events(http, dev, flow.app_id)


@pytest.mark.db
async def test_a_grace_of_zero_is_none(settings: Settings, dev: Flow) -> None:
    async with app_with(settings, code_retry_grace=0) as (application, http):
        flow, request, token = await redeemed(application, http, dev)
        sdk_error(await sdk_get(http, "/oauth/token", request), 401, "invalid_grant")
        assert not await introspect(http, flow, token)


@pytest.mark.db
async def test_another_request_within_the_window_is_a_replay(
    client: httpx.AsyncClient, codes: Codes, dev: Flow, v2_app: Flow
) -> None:
    """Only the identical request is a retry: another state, or another key of the same app, is the
    replay it always was (the token revoked)."""
    second_key = await client.post(f"/v1/apps/{v2_app.app_id}/keys", headers={"Authorization": dev.dev_token})
    assert second_key.status_code == 200, second_key.text
    for changes in ({"state": STATE + "-other"}, {"client_secret": second_key.json()["data"]["key_secret"]}):
        code = await codes.code(client, v2_app)
        token = sdk_ok(await sdk_get(client, "/oauth/token", token_params(v2_app, code)), TOKEN)["access_token"]
        sdk_error(await sdk_get(client, "/oauth/token", token_params(v2_app, code, **changes)), 401, "invalid_grant")
        assert not await introspect(client, v2_app, token), changes


@pytest.mark.db
async def test_another_app_within_the_window_gets_nothing_and_revokes_nothing(
    client: httpx.AsyncClient, codes: Codes, dev: Flow, v2_app: Flow
) -> None:
    code = await codes.code(client, v2_app)
    request = token_params(v2_app, code)
    token = sdk_ok(await sdk_get(client, "/oauth/token", request), TOKEN)["access_token"]
    other = await new_app(dev)
    stolen = token_params(v2_app, code, client_id=other.app_id, client_secret=other.key_secret)
    sdk_error(await sdk_get(client, "/oauth/token", stolen), 401, "invalid_grant")
    assert await introspect(client, v2_app, token)


@pytest.mark.db
async def test_the_other_token_endpoints_judge_a_retry_by_the_same_rule(
    client: httpx.AsyncClient, codes: Codes, v2_app: Flow
) -> None:
    """A code redeemed here and presented again within the window by the same key: at POST
    /oauth/token (which asks the same, an access token alone) a retry, answered with the same
    token; at /oauth2/token (which would also issue a refresh token, which this redemption did not)
    a replay, which revokes it."""
    code = await codes.code(client, v2_app)
    token = sdk_ok(await sdk_get(client, "/oauth/token", token_params(v2_app, code)), TOKEN)["access_token"]
    response = await v2_app.redeem(code)
    assert response.status_code == 200, response.text
    assert claims(response.json()["data"]["access_token"])["jti"] == claims(token)["jti"]
    assert await introspect(client, v2_app, token)

    code = await codes.code(client, v2_app)
    token = sdk_ok(await sdk_get(client, "/oauth/token", token_params(v2_app, code)), TOKEN)["access_token"]
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": v2_app.redirect_uri},
        auth=(v2_app.app_id, v2_app.key_secret),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
    assert not await introspect(client, v2_app, token)


@pytest.mark.db
async def test_failures_count_against_the_token_endpoints_rate_limit(settings: Settings, dev: Flow) -> None:
    async with app_with(settings, rate_limit_token_failures_per_client=3) as (_, http):
        flow = await new_app(dataclasses.replace(dev, client=http))
        wrong = token_params(flow, "x" * 43, client_secret=flow.key_secret[:-4] + "AAAA")
        for _ in range(3):
            sdk_error(await sdk_get(http, "/oauth/token", wrong), 401, "invalid_client")
        limited = await sdk_get(http, "/oauth/token", wrong)
        sdk_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        # The same key's failures at POST /oauth/token count in the same bucket.
        flow.client = http
        response = await flow.redeem("x" * 43, key_secret=flow.key_secret[:-4] + "AAAA")
        assert response.status_code == 429, response.text


# ---------------------------------------------------------------- client-info


@pytest.mark.db
async def test_client_info_shows_the_app_to_anyone(client: httpx.AsyncClient, v2_app: Flow) -> None:
    for prefix in ("/v1", ""):
        body = sdk_ok(await sdk_get(client, "/oauth/client-info", {"client_id": v2_app.app_id}, prefix), CLIENT_INFO)
        assert body == {"client_id": v2_app.app_id, "app_id": v2_app.app_id, "app_name": "Test App"}
    sdk_error(await sdk_get(client, "/oauth/client-info", {"client_id": "no-such-app"}), 404, "not_found")
    sdk_error(await sdk_get(client, "/oauth/client-info", {}), 400, "invalid_request")


@pytest.mark.db
async def test_client_info_carries_the_apps_branding(client: httpx.AsyncClient, v2_app: Flow) -> None:
    """What the developer set as the app's branding reaches the SDK's client-info, in its keys."""
    branding = {
        "logo_uri": "https://cdn.example.com/logo.png", "client_uri": "https://app.example.com/",
        "tos_uri": "https://app.example.com/terms", "policy_uri": "https://app.example.com/privacy",
        "description": "Notes that sync.", "domain": "app.example.com", "accent_color": "#1a7f37", "theme": "dark",
    }
    changed = await client.patch(
        f"/v1/apps/{v2_app.app_id}", json=branding, headers={"Authorization": f"Bearer {v2_app.dev_token}"}
    )
    assert changed.status_code == 200, changed.text
    body = sdk_ok(await sdk_get(client, "/oauth/client-info", {"client_id": v2_app.app_id}), CLIENT_INFO)
    assert body == {
        "client_id": v2_app.app_id, "app_id": v2_app.app_id, "app_name": "Test App",
        "app_icon": "https://cdn.example.com/logo.png", "app_domain": "app.example.com",
        "description": "Notes that sync.", "website_url": "https://app.example.com/",
        "terms_and_conditions": "https://app.example.com/terms", "privacy_policy": "https://app.example.com/privacy",
        "branding": {"accent_color": "#1a7f37", "theme": "dark", "logo_url": "https://cdn.example.com/logo.png"},
    }
