"""The hosted pages of the standard authorization code flow: sign-in, consent, sign-out.

A browser is played by an httpx client over the in-process app with its own cookie jar,
following redirects by hand so that every hop can be checked.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest

from grantd.config import Settings
from grantd.crypto.secrets import s256
from grantd.server import create_app
from support.neucron import PASSWORD, sign_up, unique_email

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
REDIRECT_URI = "https://app.example.com/callback"
ODD_STATE = "a b+c&d=e/f?g#h%25i é\"'<>"
PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


# ---------------------------------------------------------------- helpers


@dataclass
class Form:
    action: str
    method: str
    inputs: list[tuple[str, str]]
    buttons: list[tuple[str, str, str]]  # name, value, text

    def data(self, **changes: str | None) -> dict[str, str]:
        values = dict(self.inputs)
        for name, value in changes.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        return values


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", ""), [], []))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].inputs.append((a["name"], a.get("value", "")))
        elif tag == "button" and self.forms:
            self._button = [a.get("name", ""), a.get("value", ""), ""]

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button[2] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None:
            self.forms[-1].buttons.append((self._button[0], self._button[1], self._button[2].strip()))
            self._button = None


def form(response: httpx.Response, action: str) -> Form:
    parser = _Forms()
    parser.feed(response.text)
    found = [f for f in parser.forms if f.action == action]
    assert len(found) == 1, f"no single form posting to {action} in:\n{response.text}"
    assert found[0].method == "post"
    return found[0]


def query_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


def assert_page_headers(response: httpx.Response, *form_action: str) -> None:
    for name, value in PAGE_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["form-action"] == ["'self'", *form_action], csp
    assert "script-src" not in directives


def assert_redirect(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    return response.headers["location"]


def set_cookies(response: httpx.Response) -> dict[str, str]:
    cookies = {}
    for header in response.headers.get_list("set-cookie"):
        cookies[header.split("=", 1)[0]] = header
    return cookies


@dataclass
class Client:
    """A registered app as the standard OAuth 2.0 client sees it."""

    app_id: str
    name: str
    owner_email: str
    public: bool
    key_secret: str
    redirect_uri: str = REDIRECT_URI
    verifier: str = ""

    def authorize_params(self, **overrides: Any) -> dict[str, str]:
        self.verifier = secrets.token_urlsafe(48)
        params = {
            "response_type": "code",
            "client_id": self.app_id,
            "redirect_uri": self.redirect_uri,
            "scope": "read_profile",
            "state": "state-1",
            "code_challenge": s256(self.verifier),
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def authorize_path(self, **overrides: Any) -> str:
        return "/oauth2/authorize?" + urlencode(self.authorize_params(**overrides))


async def new_client(api: httpx.AsyncClient, client_type: str, **fields: Any) -> Client:
    owner_email = unique_email()
    _, dev_token = await sign_up(api, owner_email)
    name = fields.pop("name", f"Photo Printer {client_type} <&>")
    body = {
        "name": name,
        "redirect_uris": [REDIRECT_URI],
        "permissions": "read_profile,write_data,manage_notifications",
        "client_type": client_type,
        **fields,
    }
    response = await api.post("/v1/apps", json=body, headers={"Authorization": dev_token})
    assert response.status_code == 200, response.text
    app_id = response.json()["data"]["app_id"]
    response = await api.post(f"/v1/apps/{app_id}/keys", headers={"Authorization": dev_token})
    assert response.status_code == 200, response.text
    return Client(app_id, name, owner_email, client_type == "public", response.json()["data"]["key_secret"])


@pytest.fixture
async def browser(app: Any) -> Any:
    """A browser of its own: cookies do not leak between tests or into the shared client."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as b:
        yield b


@pytest.fixture
async def public_client(client: httpx.AsyncClient) -> Client:
    return await new_client(client, "public")


@pytest.fixture
async def confidential_client(client: httpx.AsyncClient) -> Client:
    return await new_client(client, "confidential")


@pytest.fixture
async def user(client: httpx.AsyncClient) -> tuple[str, str]:
    """(user_id, email) of a user with support.neucron.PASSWORD."""
    email = unique_email()
    user_id, _ = await sign_up(client, email)
    return user_id, email


async def sign_in(browser: httpx.AsyncClient, email: str, next_path: str = "/") -> httpx.Response:
    page = await browser.get("/signin", params={"next": next_path})
    assert page.status_code == 200, page.text
    data = form(page, "/signin").data(email=email, password=PASSWORD)
    return await browser.post("/signin", data=data)


async def consent_page(browser: httpx.AsyncClient, path: str) -> httpx.Response:
    response = await browser.get(path)
    assert response.status_code == 200, response.text
    return response


async def decide(browser: httpx.AsyncClient, page: httpx.Response, decision: str) -> str:
    data = form(page, "/oauth2/authorize").data(decision=decision)
    return assert_redirect(await browser.post("/oauth2/authorize", data=data))


async def redeem(api: httpx.AsyncClient, oauth: Client, code: str, **overrides: str | None) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": oauth.redirect_uri,
        "code_verifier": oauth.verifier,
    }
    auth = None
    if oauth.public:
        data["client_id"] = oauth.app_id
    else:
        auth = (oauth.app_id, oauth.key_secret)
    data.update(overrides)
    return await api.post("/oauth2/token", data={k: v for k, v in data.items() if v is not None}, auth=auth)


# ---------------------------------------------------------------- the whole flow


async def test_full_flow_public_client(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    user_id, email = user
    request = public_client.authorize_params(scope="read_profile write_data", state=ODD_STATE)
    path = "/oauth2/authorize?" + urlencode(request)

    # Not signed in: to the sign-in page, carrying the whole request.
    location = assert_redirect(await browser.get(path))
    assert location == "/signin?next=" + quote(path, safe=""), location
    assert query_of(location)["next"] == [path]

    signin = await browser.get(location)
    assert signin.status_code == 200
    assert_page_headers(signin, "https://app.example.com")
    assert "to continue to <strong>Photo Printer public &lt;&amp;&gt;</strong>" in signin.text
    signin_form = form(signin, "/signin")
    assert dict(signin_form.inputs)["next"] == path

    signed_in = await browser.post("/signin", data=signin_form.data(email=email, password=PASSWORD))
    assert assert_redirect(signed_in) == path
    cookie = set_cookies(signed_in)["grantd_session"]
    flags = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in flags and "SameSite=Lax" in flags and "Path=/" in flags
    assert "Secure" not in flags  # the issuer is http://
    max_age = int(next(f for f in flags if f.startswith("Max-Age=")).split("=")[1])
    assert 30 * 86400 - 60 <= max_age <= 30 * 86400

    # The consent page: the app, its owner, and what each permission means.
    page = await consent_page(browser, path)
    assert_page_headers(page, "https://app.example.com")
    assert "Photo Printer public &lt;&amp;&gt;" in page.text  # autoescaped
    assert public_client.owner_email in page.text
    assert "Read your profile: your user id and email address." in page.text
    assert "Create and change data on your behalf." in page.text
    assert "Manage the notifications" not in page.text
    assert '<form method="post" action="/oauth2/authorize">' in page.text
    assert '<button type="submit" name="decision" value="allow">Allow</button>' in page.text
    assert '<button type="submit" name="decision" value="deny">Deny</button>' in page.text
    consent = form(page, "/oauth2/authorize")
    hidden = dict(consent.inputs)
    assert {k: v for k, v in hidden.items() if k != "csrf_token"} == request
    assert request["code_challenge"] == s256(public_client.verifier)
    assert hidden["csrf_token"]

    # Allow: back to the client with code, the state untouched, and iss.
    callback = await decide(browser, page, "allow")
    assert callback.startswith(REDIRECT_URI + "?")
    params = query_of(callback)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == [ODD_STATE]
    assert params["iss"] == [ISSUER]

    # The code redeems at the token endpoint with PKCE, once.
    response = await redeem(client, public_client, params["code"][0])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["access_token"] and body["refresh_token"]
    assert body["scope"] == "read_profile write_data"
    assert (await redeem(client, public_client, params["code"][0])).status_code == 400

    # The same request again: consent is not asked twice.
    again = assert_redirect(await browser.get(public_client.authorize_path(scope="read_profile", state="s2")))
    assert again.startswith(REDIRECT_URI + "?")
    assert set(query_of(again)) == {"code", "state", "iss"} and query_of(again)["state"] == ["s2"]
    assert (await redeem(client, public_client, query_of(again)["code"][0])).status_code == 200

    # A wider request asks only for what is new, listing the rest as already granted.
    wider = public_client.authorize_path(scope="read_profile write_data manage_notifications", state="s3")
    page = await consent_page(browser, wider)
    asked, granted = page.text.split("already allowed", 1)
    assert "Manage the notifications sent to you." in asked
    assert "Read your profile" not in asked and "Create and change data" not in asked
    assert "Read your profile" in granted and "Create and change data" in granted
    callback = await decide(browser, page, "allow")
    assert query_of(callback)["state"] == ["s3"]
    response = await redeem(client, public_client, query_of(callback)["code"][0])
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read_profile write_data manage_notifications"


async def test_confidential_client(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, confidential_client: Client, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    # PKCE is optional for a confidential client, but verified when present.
    for with_pkce in (True, False):
        overrides = {} if with_pkce else {"code_challenge": None, "code_challenge_method": None}
        path = confidential_client.authorize_path(scope="write_data", **overrides)
        if with_pkce:
            callback = await decide(browser, await consent_page(browser, path), "allow")
        else:
            callback = assert_redirect(await browser.get(path))  # consent given a moment ago
        code = query_of(callback)["code"][0]
        verifier = confidential_client.verifier if with_pkce else None
        response = await redeem(client, confidential_client, code, code_verifier=verifier)
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "write_data"


async def test_deny(browser: httpx.AsyncClient, public_client: Client, user: tuple[str, str]) -> None:
    await sign_in(browser, user[1])
    page = await consent_page(browser, public_client.authorize_path(state=ODD_STATE))
    callback = await decide(browser, page, "deny")
    assert callback.startswith(REDIRECT_URI + "?")
    params = query_of(callback)
    assert params["error"] == ["access_denied"]
    assert params["state"] == [ODD_STATE]
    assert params["iss"] == [ISSUER]
    assert "code" not in params
    # Nothing was granted: the next request asks again.
    await consent_page(browser, public_client.authorize_path())


async def test_omitted_redirect_uri_and_scope_default_to_the_registration(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    page = await consent_page(browser, public_client.authorize_path(redirect_uri=None, scope=None))
    assert "redirect_uri" not in dict(form(page, "/oauth2/authorize").inputs)
    for description in ("Read your profile", "Create and change data", "Manage the notifications"):
        assert description in page.text
    callback = await decide(browser, page, "allow")
    assert callback.startswith(REDIRECT_URI + "?")


# ---------------------------------------------------------------- sign-in


async def test_signin_page(browser: httpx.AsyncClient) -> None:
    response = await browser.get("/signin", params={"next": "/somewhere?x=1"})
    assert response.status_code == 200
    assert_page_headers(response)
    html = response.text
    assert '<form method="post" action="/signin">' in html
    assert '<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username">' in html
    assert (
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password">'
    ) in html
    assert '<a href="/signup?next=%2Fsomewhere%3Fx%3D1">Create one</a>' in html
    signin = form(response, "/signin")
    assert ("", "", "Sign in") in signin.buttons
    hidden = dict(signin.inputs)
    assert hidden["next"] == "/somewhere?x=1" and hidden["csrf_token"]
    cookie = set_cookies(response)["grantd_csrf"]
    flags = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in flags and "SameSite=Lax" in flags and "Path=/" in flags and "Secure" not in flags
    # The page is the same again with the same cookie: two tabs may sign in.
    again = await browser.get("/signin")
    assert dict(form(again, "/signin").inputs)["csrf_token"] == hidden["csrf_token"]


async def test_wrong_password(browser: httpx.AsyncClient, user: tuple[str, str]) -> None:
    page = await browser.get("/signin", params={"next": "/oauth2/authorize?client_id=x"})
    data = form(page, "/signin").data(email=user[1], password=PASSWORD + "!")
    response = await browser.post("/signin", data=data)
    assert response.status_code == 401
    assert_page_headers(response)
    assert "Wrong email or password." in response.text
    assert "grantd_session" not in set_cookies(response)
    again = form(response, "/signin")
    assert dict(again.inputs)["next"] == "/oauth2/authorize?client_id=x"
    # The form shown again works.
    response = await browser.post("/signin", data=again.data(email=user[1], password=PASSWORD))
    assert assert_redirect(response) == "/oauth2/authorize?client_id=x"


async def test_unknown_email_and_missing_fields(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/signin")
    response = await browser.post("/signin", data=form(page, "/signin").data(email=unique_email(), password=PASSWORD))
    assert response.status_code == 401 and "Wrong email or password." in response.text
    response = await browser.post("/signin", data=form(page, "/signin").data(email="", password=""))
    assert response.status_code == 400 and "Enter your email and password." in response.text
    assert_page_headers(response)


@pytest.mark.parametrize(
    "next_path",
    ["//evil.example", "https://evil.example", "/\\evil.example", "/\t/evil.example", "\\\\evil.example", "", "evil"],
)
async def test_signin_never_redirects_off_site(browser: httpx.AsyncClient, user: tuple[str, str], next_path: str) -> None:
    page = await browser.get("/signin", params={"next": next_path})
    assert dict(form(page, "/signin").inputs)["next"] == "/"
    # Even a next tampered with in the form itself.
    data = form(page, "/signin").data(email=user[1], password=PASSWORD, next=next_path)
    assert assert_redirect(await browser.post("/signin", data=data)) == "/"
    home = await browser.get("/")
    assert home.status_code == 200
    assert_page_headers(home)


async def test_signin_csrf(browser: httpx.AsyncClient, user: tuple[str, str]) -> None:
    page = await browser.get("/signin")
    good = form(page, "/signin").data(email=user[1], password=PASSWORD)
    # A wrong or missing token.
    for data in (dict(good, csrf_token="x" * 43), {k: v for k, v in good.items() if k != "csrf_token"}):
        response = await browser.post("/signin", data=data)
        assert response.status_code == 403
        assert_page_headers(response)
        assert "grantd_session" not in set_cookies(response)
    # The right token without its cookie (a cross-site post from another browser's page).
    async with httpx.AsyncClient(transport=browser._transport, base_url=ISSUER) as other:
        response = await other.post("/signin", data=good)
        assert response.status_code == 403
        assert "grantd_session" not in set_cookies(response)
    # A token from another cookie does not fit this one.
    async with httpx.AsyncClient(transport=browser._transport, base_url=ISSUER) as other:
        other_token = dict(form(await other.get("/signin"), "/signin").inputs)["csrf_token"]
    assert other_token != good["csrf_token"]
    assert (await browser.post("/signin", data=dict(good, csrf_token=other_token))).status_code == 403
    assert (await browser.post("/signin", data=good)).status_code == 303


# ---------------------------------------------------------------- errors that are shown, never redirected


async def test_unknown_client_and_unregistered_redirect_uri(
    browser: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    bad = [
        public_client.authorize_path(client_id="no-such-app"),
        public_client.authorize_path(client_id=None),
        public_client.authorize_path(redirect_uri="https://evil.example/callback"),
        public_client.authorize_path(redirect_uri=REDIRECT_URI + "/"),
        public_client.authorize_path(redirect_uri=REDIRECT_URI.upper()),
        public_client.authorize_path() + "&redirect_uri=" + quote("https://evil.example/cb", safe=""),
        public_client.authorize_path() + "&client_id=" + public_client.app_id,
    ]
    for signed_in in (False, True):
        if signed_in:
            await sign_in(browser, user[1])
        for path in bad:
            response = await browser.get(path)
            assert response.status_code == 400, (path, response.text)
            assert "location" not in response.headers
            assert "evil.example" not in response.text
            assert_page_headers(response)
            assert "cannot be authorized" in response.text
    # The consent form posted with a tampered redirect_uri is refused the same way.
    page = await consent_page(browser, public_client.authorize_path())
    data = form(page, "/oauth2/authorize").data(decision="allow", redirect_uri="https://evil.example/callback")
    response = await browser.post("/oauth2/authorize", data=data)
    assert response.status_code == 400 and "location" not in response.headers


async def test_request_errors_go_back_to_the_client(
    browser: httpx.AsyncClient, public_client: Client, confidential_client: Client
) -> None:
    cases = [
        (public_client.authorize_path(code_challenge_method="plain"), "invalid_request"),
        (public_client.authorize_path(code_challenge_method=None), "invalid_request"),
        (public_client.authorize_path(code_challenge=None, code_challenge_method=None), "invalid_request"),
        (confidential_client.authorize_path(code_challenge_method="plain"), "invalid_request"),
        (public_client.authorize_path(code_challenge="short"), "invalid_request"),
        (public_client.authorize_path(response_type="token"), "unsupported_response_type"),
        (public_client.authorize_path(response_type=None), "unsupported_response_type"),
        (public_client.authorize_path(scope="read_profile admin"), "invalid_scope"),
        (public_client.authorize_path() + "&state=again", "invalid_request"),
    ]
    for path, error in cases:
        # Signed in or not, a request error is the client's to hear about.
        location = assert_redirect(await browser.get(path))
        assert location.startswith(REDIRECT_URI + "?"), (path, location)
        params = query_of(location)
        assert params["error"] == [error], (path, params)
        assert params["error_description"][0]
        assert params["iss"] == [ISSUER]
        assert params["state"] == ["state-1"]
        assert "code" not in params


# ---------------------------------------------------------------- CSRF on the consent form


async def test_consent_csrf(
    app: Any, browser: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    page = await consent_page(browser, public_client.authorize_path())
    good = form(page, "/oauth2/authorize").data(decision="allow")
    for data in (
        {k: v for k, v in good.items() if k != "csrf_token"},
        dict(good, csrf_token="A" * 43),
        dict(good, csrf_token=good["csrf_token"][:-1]),
    ):
        response = await browser.post("/oauth2/authorize", data=data)
        assert response.status_code == 403
        assert "location" not in response.headers
        assert "code=" not in response.text
        assert_page_headers(response)
    # Nothing was granted: consent is still asked for.
    page = await consent_page(browser, public_client.authorize_path())
    # Another user's session token does not fit this session.
    async with httpx.AsyncClient(transport=browser._transport, base_url=ISSUER) as other:
        _, other_email = user[0], unique_email()
        await sign_up(other, other_email)
        await sign_in(other, other_email)
        other_page = await consent_page(other, public_client.authorize_path())
        other_token = dict(form(other_page, "/oauth2/authorize").inputs)["csrf_token"]
    assert (await browser.post("/oauth2/authorize", data=dict(good, csrf_token=other_token))).status_code == 403
    # The real token works.
    assert "code" in query_of(await decide(browser, page, "allow"))


async def test_consent_post_without_session_goes_to_signin(
    browser: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    page = await consent_page(browser, public_client.authorize_path(state=ODD_STATE))
    data = form(page, "/oauth2/authorize").data(decision="allow")
    browser.cookies.delete("grantd_session")
    location = assert_redirect(await browser.post("/oauth2/authorize", data=data))
    assert location.startswith("/signin?")
    next_path = query_of(location)["next"][0]
    assert next_path.startswith("/oauth2/authorize?")
    carried = query_of(next_path)
    assert carried["state"] == [ODD_STATE] and "decision" not in carried and "csrf_token" not in carried


async def test_bad_decision_and_bad_body(
    browser: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    page = await consent_page(browser, public_client.authorize_path())
    response = await browser.post("/oauth2/authorize", data=form(page, "/oauth2/authorize").data(decision="maybe"))
    assert response.status_code == 400 and "location" not in response.headers
    response = await browser.post("/oauth2/authorize", json={"decision": "allow"})
    assert response.status_code == 400
    assert_page_headers(response)
    response = await browser.put("/oauth2/authorize")
    assert response.status_code == 405
    assert_page_headers(response)


# ---------------------------------------------------------------- sign-out


async def test_signout(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    signed_in = await sign_in(browser, user[1])
    token = browser.cookies["grantd_session"]
    assert set_cookies(signed_in)["grantd_session"].startswith(f"grantd_session={token};")
    path = public_client.authorize_path()
    page = await consent_page(browser, path)
    signout = form(page, "/signout")
    assert dict(signout.inputs)["next"] == path
    # Without or with a wrong token: refused, still signed in.
    for data in (signout.data(csrf_token=None), signout.data(csrf_token="x")):
        response = await browser.post("/signout", data=data)
        assert response.status_code == 403
        assert "grantd_session" not in set_cookies(response)
    assert (await client.get("/v1/apps", headers={"Authorization": token})).status_code == 200
    # The form itself: the session is revoked and the cookie cleared.
    response = await browser.post("/signout", data=signout.data())
    assert assert_redirect(response) == path
    assert "Max-Age=0" in set_cookies(response)["grantd_session"]
    assert "grantd_session" not in browser.cookies
    assert (await client.get("/v1/apps", headers={"Authorization": token})).status_code == 401
    # The authorization request starts over at the sign-in page.
    assert assert_redirect(await browser.get(path)).startswith("/signin?")
    # A revoked token in the cookie counts as no session.
    browser.cookies.set("grantd_session", token)
    assert assert_redirect(await browser.get(path)).startswith("/signin?")


# ---------------------------------------------------------------- headers, stylesheet, OpenAPI


async def test_every_page_forbids_framing_and_caching(
    browser: httpx.AsyncClient, public_client: Client, user: tuple[str, str]
) -> None:
    pages = [await browser.get("/signin"), await browser.get("/"), await browser.get("/oauth2/authorize?client_id=nope")]
    await sign_in(browser, user[1])
    pages += [await browser.get("/"), await consent_page(browser, public_client.authorize_path())]
    for page in pages:
        assert_page_headers(page, *(["https://app.example.com"] if 'action="/oauth2/authorize"' in page.text else []))
        assert "<script" not in page.text and "style=" not in page.text
    assert 'action="/signout"' in pages[-2].text  # the home page of a signed-in user


async def test_form_action_names_the_clients_origin(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, user: tuple[str, str]
) -> None:
    uris = {
        "https://app.example.com:8443/cb?x=1": "https://app.example.com:8443",
        "http://127.0.0.1:9000/cb": "http://127.0.0.1:9000",
        "http://[::1]:9000/cb": "http:",
        "com.example.app:/oauth": "com.example.app:",
    }
    await sign_in(browser, user[1])
    for uri, source in uris.items():
        oauth = await new_client(client, "public", redirect_uris=[uri])
        oauth.redirect_uri = uri
        path = oauth.authorize_path()
        assert_page_headers(await consent_page(browser, path), source)
        signin = await browser.get("/signin", params={"next": path})
        assert_page_headers(signin, source)


async def test_stylesheet(browser: httpx.AsyncClient) -> None:
    response = await browser.get("/static/grantd.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "max-width" in response.text and "@media" in response.text
    page = await browser.get("/signin")
    assert '<link rel="stylesheet" href="/static/grantd.css">' in page.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.text


async def test_pages_are_not_in_openapi(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/", "/signin", "/signout", "/oauth2/authorize", "/static/grantd.css"} & set(paths)


async def test_secure_cookies_on_an_https_issuer(settings: Settings, user: tuple[str, str]) -> None:
    https = settings.model_copy(update={"issuer": "https://auth.example"})
    application = create_app(https)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://auth.example") as b:
            page = await b.get("/signin")
            assert "Secure" in [p.strip() for p in set_cookies(page)["grantd_csrf"].split(";")]
            data = form(page, "/signin").data(email=user[1], password=PASSWORD)
            response = await b.post("/signin", data=data)
            assert assert_redirect(response) == "/"
            flags = [p.strip() for p in set_cookies(response)["grantd_session"].split(";")]
            assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= set(flags)


def test_csrf_key_is_its_own() -> None:
    """The CSRF MAC key is derived from the master secret, not the secret itself nor the hashing pepper."""
    import hashlib
    import hmac

    from grantd.web import session

    master = b"m" * 40

    class Ctx:
        class settings:  # noqa: N801
            master_secret = master

    key = session._csrf_key(Ctx())  # type: ignore[arg-type]
    assert key == hmac.new(master, b"grantd csrf v1", hashlib.sha256).digest()
    assert key != master and key != hmac.new(master, b"grantd secret-hash pepper v1", hashlib.sha256).digest()
    token = session._mac(Ctx(), b"session", "jti")  # type: ignore[arg-type]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token) and base64.urlsafe_b64decode(token + "=")


# ---------------------------------------------------------------- sign-up, account, connected apps


async def login_token(api: httpx.AsyncClient, email: str) -> str:
    """A Neucron API token of the account (a new session)."""
    response = await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["data"]["access_token"]


async def test_signup_form(browser: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    page = await browser.get("/signup", params={"next": "/account"})
    assert page.status_code == 200
    assert_page_headers(page)
    signup = form(page, "/signup")
    assert dict(signup.inputs)["next"] == "/account"
    email = unique_email()
    # Without the double-submit cookie's token: refused, no account.
    response = await browser.post("/signup", data=signup.data(email=email, password=PASSWORD, csrf_token="x" * 43))
    assert response.status_code == 403 and "grantd_session" not in set_cookies(response)
    assert (await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
    # Each refusal is a 4xx page with the form again.
    for data, status, text in (
        (signup.data(email="", password=""), 400, "Enter your email address."),
        (signup.data(email="not-an-email", password=PASSWORD), 400, "Email is not a valid email address"),
        (signup.data(email=email, password="12345678"), 400, "Password is too weak"),
        (signup.data(email=email, password="x" * 300), 400, "Password is too long"),
    ):
        response = await browser.post("/signup", data=data)
        assert response.status_code == status and text in response.text, (data, response.text)
        assert_page_headers(response)
        assert dict(form(response, "/signup").inputs)["next"] == "/account"
    # Success: signed in, on to next.
    response = await browser.post("/signup", data=signup.data(email=email, password=PASSWORD))
    assert assert_redirect(response) == "/account"
    assert "HttpOnly" in set_cookies(response)["grantd_session"]
    # The same email again is a 409 page.
    async with httpx.AsyncClient(transport=browser._transport, base_url=ISSUER) as other:
        again = form(await other.get("/signup"), "/signup").data(email=email.upper(), password=PASSWORD)
        response = await other.post("/signup", data=again)
        assert response.status_code == 409 and "An account with this email already exists." in response.text


@pytest.mark.parametrize("next_path", ["//evil.example", "https://evil.example", "/\\evil.example"])
async def test_signup_never_redirects_off_site(browser: httpx.AsyncClient, next_path: str) -> None:
    page = await browser.get("/signup", params={"next": next_path})
    data = form(page, "/signup").data(email=unique_email(), password=PASSWORD, next=next_path)
    assert assert_redirect(await browser.post("/signup", data=data)) == "/"


async def test_account_pages_need_a_session(browser: httpx.AsyncClient) -> None:
    assert assert_redirect(await browser.get("/account")) == "/signin?next=%2Faccount"
    assert assert_redirect(await browser.get("/account/apps")) == "/signin?next=%2Faccount%2Fapps"
    page = await browser.get("/signin")  # a form token, to show that it is the session that is missing
    token = dict(form(page, "/signin").inputs)["csrf_token"]
    posted = await browser.post("/account/password", data={"csrf_token": token, "current_password": "x", "new_password": "y"})
    assert assert_redirect(posted).startswith("/signin?")
    assert assert_redirect(await browser.post("/account/apps/some-app/revoke", data={"csrf_token": token})).startswith(
        "/signin?"
    )


async def test_password_change_form(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    page = await browser.get("/account")
    assert page.status_code == 200
    assert_page_headers(page)
    assert user[1] in page.text
    change = form(page, "/account/password")
    new_password = "another good passphrase"
    # A forged form (no or another token): refused, nothing changed.
    for data in (change.data(csrf_token=None), change.data(csrf_token="A" * 43)):
        response = await browser.post(
            "/account/password", data={**data, "current_password": PASSWORD, "new_password": new_password}
        )
        assert response.status_code == 403
        assert_page_headers(response)
    for current, new, status, text in (
        ("", new_password, 400, "Enter your current password."),
        (PASSWORD, "", 400, "Choose a new password."),
        ("wrong password", new_password, 400, "The current password is wrong."),
        (PASSWORD, user[1], 400, "it may not be your email address"),
        (PASSWORD, PASSWORD, 400, "Password is unchanged"),
    ):
        response = await browser.post(
            "/account/password", data=change.data(current_password=current, new_password=new)
        )
        assert response.status_code == status and text in response.text, (current, new, response.text)
        assert_page_headers(response)
    assert (await client.post("/v1/auth/login", json={"email": user[1], "password": PASSWORD})).status_code == 200
    response = await browser.post(
        "/account/password", data=change.data(current_password=PASSWORD, new_password=new_password)
    )
    assert assert_redirect(response) == "/account?changed=1"
    assert "Every other session of yours was signed out." in (await browser.get("/account?changed=1")).text
    assert (await client.post("/v1/auth/login", json={"email": user[1], "password": new_password})).status_code == 200


async def test_connected_apps_revoke(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, confidential_client: Client, user: tuple[str, str]
) -> None:
    await sign_in(browser, user[1])
    callback = await decide(browser, await consent_page(browser, confidential_client.authorize_path()), "allow")
    assert "code" in query_of(callback)
    page = await browser.get("/account/apps")
    assert page.status_code == 200
    assert_page_headers(page)
    assert "Photo Printer confidential &lt;&amp;&gt;" in page.text
    assert "Read your profile: your user id and email address." in page.text
    action = f"/account/apps/{confidential_client.app_id}/revoke"
    revoke = form(page, action)
    # Forged: refused, the grant stays.
    for data in (revoke.data(csrf_token=""), revoke.data(csrf_token="A" * 43)):
        assert (await browser.post(action, data=data)).status_code == 403
    assert action in (await browser.get("/account/apps")).text
    # Unknown, odd or too long app ids: a 404 page, never a 500.
    for app_id in ("no-such-app", "%00", "x" * 300, "%2F..%2F"):
        response = await browser.post(f"/account/apps/{app_id}/revoke", data=revoke.data())
        assert response.status_code == 404, (app_id, response.text)
        assert_page_headers(response)
    assert (await browser.get(action)).status_code == 405
    # Revoked.
    assert assert_redirect(await browser.post(action, data=revoke.data())) == "/account/apps?revoked=1"
    page = await browser.get("/account/apps?revoked=1")
    assert "Access revoked" in page.text and action not in page.text and "Photo Printer" not in page.text
    grants = await client.get("/v1/grants", headers={"Authorization": (await login_token(client, user[1]))})
    assert grants.json()["data"]["grants"] == []
    assert (await browser.post(action, data=revoke.data())).status_code == 404  # nothing left to revoke
