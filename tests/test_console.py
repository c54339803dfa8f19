"""The developer console pages over HTTP: what a developer sees and may do, and what others may not.

A browser is played by an httpx client over the in-process app with a cookie jar of its own,
signed in through the /signin form. Forms are read from the pages as a browser would post them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from acting_user import ActingUser, parse_forms
from grantd.core import apps
from grantd.crypto.secrets import s256
from support.neucron import PASSWORD, sign_up, unique_email

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
REDIRECT_URI = "https://app.example.com/callback"
LOCAL_REDIRECT_URI = "http://127.0.0.1:8765/cb"


# ---------------------------------------------------------------- reading pages


class _Texts(HTMLParser):
    """The text of every element with an id, and the attributes of every element with an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str]] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        element_id = a.get("id")
        if element_id:
            self.attrs[element_id] = a
            self.texts.setdefault(element_id, "")
        if tag not in ("input", "br", "meta", "link"):
            self._open.append((tag, element_id))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.texts[element_id] += data


def texts(html: str) -> _Texts:
    parser = _Texts()
    parser.feed(html)
    return parser


def text_of(response: httpx.Response, element_id: str) -> str:
    found = texts(response.text).texts
    assert element_id in found, f"no #{element_id} in:\n{response.text}"
    return " ".join(found[element_id].split())


def field_error(response: httpx.Response, control_id: str) -> str:
    """The error shown for a form control: the element its aria-describedby names, which the page
    places right by the control. Empty when the control is not marked invalid."""
    parsed = texts(response.text)
    control = parsed.attrs.get(control_id)
    assert control is not None, f"no control #{control_id} in:\n{response.text}"
    if control.get("aria-invalid") != "true":
        return ""
    error_id = control["aria-describedby"].split()[0]
    return " ".join(parsed.texts[error_id].split())


def post_form(response: httpx.Response, action: str) -> list[tuple[str, str]]:
    """The inputs a browser would post from the page's form with this action (checked boxes only)."""
    forms = [f for f in parse_forms(response.text) if f.action == action and f.method == "post"]
    assert len(forms) == 1, f"no single form posting to {action} in:\n{response.text}"
    return forms[0].inputs


def options(response: httpx.Response, select_id: str) -> list[tuple[str, str]]:
    """The options of the page's select with this id: (value, " selected" or "")."""
    match = re.search(rf'<select id="{select_id}".*?</select>', response.text, re.S)
    assert match, f"no select #{select_id} in:\n{response.text}"
    return re.findall(r'<option value="([^"]*)"( selected)?>', match.group(0))


def selected(response: httpx.Response, select_id: str) -> str:
    """The value of the select's chosen option (the first when none is marked, as a browser does)."""
    found = options(response, select_id)
    return next((value for value, chosen in found if chosen), found[0][0])


def csrf_of(response: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert match, response.text
    return match.group(1)


def assert_secret_page(response: httpx.Response) -> None:
    """Never cached; its one inline script (the copy button) allowed by its hash, and nothing else."""
    assert response.headers["cache-control"] == "no-store"
    csp = {d.split()[0]: d.split()[1:] for d in response.headers["content-security-policy"].split(";") if d.strip()}
    scripts = re.findall(r"<script>(.*?)</script>", response.text, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert csp["script-src"] == [f"'sha256-{digest}'"]
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]


# ---------------------------------------------------------------- people


@dataclass
class Developer:
    http: httpx.AsyncClient
    email: str
    user_id: str

    async def page(self, path: str, **params: Any) -> httpx.Response:
        response = await self.http.get(path, params=params or None)
        assert response.status_code == 200, response.text
        return response

    async def post(self, path: str, data: list[tuple[str, str]] | dict[str, str]) -> httpx.Response:
        return await self.http.post(
            path, content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )

    async def register(
        self,
        name: str = "Photo Printer",
        redirect_uris: str = REDIRECT_URI,
        permissions: tuple[str, ...] = ("read_profile", "write_data"),
        client_type: str = "confidential",
    ) -> tuple[str, httpx.Response]:
        """(app_id, the page shown after registering) of an app registered through the form."""
        form = await self.page("/console/apps/new")
        data = [
            ("csrf_token", csrf_of(form)),
            ("name", name),
            ("redirect_uris", redirect_uris),
            *[("permissions", p) for p in permissions],
            ("client_type", client_type),
            ("refresh_token_rotation", "yes"),  # ticked on the new-app form, as a browser sends it
        ]
        response = await self.post("/console/apps", data)
        assert response.status_code == 200, response.text
        return text_of(response, "app-id"), response

    async def new_key(self, app_id: str) -> tuple[str, str, httpx.Response]:
        """(key_id, key_secret, the page) of a key created with the app page's button."""
        app_page = await self.page(f"/console/apps/{app_id}")
        response = await self.post(f"/console/apps/{app_id}/keys", post_form(app_page, f"/console/apps/{app_id}/keys"))
        assert response.status_code == 200, response.text
        return text_of(response, "key-id"), text_of(response, "key-secret"), response


@asynccontextmanager
async def signed_in(app: Any) -> AsyncIterator[Developer]:
    """A browser of its own (cookie jar), signed in through the form as a new account; closed on leaving."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    try:
        email = unique_email()
        user_id, _ = await sign_up(http, email)
        form = await http.get("/signin")
        response = await http.post(
            "/signin", data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(form), "next": "/console"}
        )
        assert response.status_code == 303 and response.headers["location"] == "/console", response.text
        yield Developer(http, email, user_id)
    finally:
        await http.aclose()


@pytest.fixture
async def dev(app: Any) -> AsyncIterator[Developer]:
    async with signed_in(app) as developer:
        yield developer


@pytest.fixture
async def other(app: Any) -> AsyncIterator[Developer]:
    """Another developer, in a browser of their own."""
    async with signed_in(app) as developer:
        yield developer


@pytest.fixture
async def anonymous(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as http:
        yield http


async def client_credentials(client: httpx.AsyncClient, app_id: str, key_secret: str) -> httpx.Response:
    return await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": key_secret}
    )


# ---------------------------------------------------------------- signed out


@pytest.mark.parametrize(
    "path", ["/console", "/console/apps/new", "/console/apps/some-id", "/console/apps/some-id/try?scope=read_profile"]
)
async def test_signed_out_pages_go_to_signin_and_back(anonymous: httpx.AsyncClient, path: str) -> None:
    response = await anonymous.get(path)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/signin"
    assert parse_qs(location.query)["next"] == [path]


async def test_signed_out_post_changes_nothing_and_goes_to_signin(
    anonymous: httpx.AsyncClient, dev: Developer, client: httpx.AsyncClient
) -> None:
    app_id, _ = await dev.register()
    for action in ("/console/apps", f"/console/apps/{app_id}/disable", f"/console/apps/{app_id}/keys"):
        response = await anonymous.post(action, data={"name": "Hijacked", "redirect_uris": REDIRECT_URI, "confirm": "yes"})
        assert response.status_code == 303, response.text
        assert urlsplit(response.headers["location"]).path == "/signin"
    app_page = await dev.page(f"/console/apps/{app_id}")
    assert "Disabled" not in app_page.text and "No keys yet" in app_page.text


# ---------------------------------------------------------------- registering an app


async def test_register_an_app_and_see_its_key_once(dev: Developer, client: httpx.AsyncClient) -> None:
    empty = await dev.page("/console")
    assert "You have no apps yet" in empty.text

    form = await dev.page("/console/apps/new")
    # Every permission of the catalog is offered with its description, each control labelled.
    assert re.search(r'<label for="permission-read_profile">Read your profile: your user id and email address\.', form.text)
    for control in ("name", "redirect_uris", "permission-read_profile", "client_type-public"):
        assert f'<label for="{control}">' in form.text

    app_id, created = await dev.register(
        name="Photo Printer", redirect_uris=f"{REDIRECT_URI}\n\n  {LOCAL_REDIRECT_URI}  \n", permissions=("read_profile",)
    )
    assert_secret_page(created)
    app_key = text_of(created, "app-key")
    assert app_key.startswith("gak_")
    assert "will not be shown again" in created.text

    # The app key is the app's: the Neucron authorize call accepts it (and the redirect URIs as registered).
    _, user_token = await sign_up(client)
    response = await client.post(
        "/oauth/authorize",
        json={"token": {"app_id": app_id, "app_key": app_key, "state": "s", "redirect_uri": LOCAL_REDIRECT_URI, "permissions": "read_profile"}},
        headers={"Authorization": f"Bearer {user_token}"},
    )
    assert response.status_code == 200, response.text

    # Listed, and the key is never shown again.
    listing = await dev.page("/console")
    assert "Photo Printer" in listing.text and f"/console/apps/{app_id}" in listing.text
    assert "confidential" in listing.text and "Active" in listing.text
    app_page = await dev.page(f"/console/apps/{app_id}")
    assert app_key not in app_page.text and app_key not in listing.text
    assert text_of(app_page, "app-id") == app_id
    assert text_of(app_page, "redirect_uris") == f"{REDIRECT_URI} {LOCAL_REDIRECT_URI}"


async def test_a_public_client(dev: Developer) -> None:
    app_id, _ = await dev.register(name="Phone App", client_type="public")
    listing = await dev.page("/console")
    row = re.search(r"<tr>\s*<td><a href=\"/console/apps/" + app_id + r"\">Phone App</a></td>\s*<td>(\w+)</td>", listing.text)
    assert row and row.group(1) == "public"


async def test_every_bad_field_is_shown_next_to_it(dev: Developer) -> None:
    form = await dev.page("/console/apps/new")
    data = [
        ("csrf_token", csrf_of(form)),
        ("name", "   "),
        ("redirect_uris", "http://app.example.com/callback"),
        ("client_type", "confidential"),
    ]
    response = await dev.post("/console/apps", data)
    assert response.status_code == 400
    assert field_error(response, "name") == "name must be 1 to 200 printable characters."
    assert field_error(response, "redirect_uris") == "http redirect_uris are allowed only on a loopback host; use https."
    assert field_error(response, "permission-read_profile") == "" and 'aria-describedby="permissions-error"' in response.text
    assert text_of(response, "permissions-error") == "permissions must name at least one permission."
    # What was typed is kept, and nothing was registered.
    assert text_of(response, "redirect_uris") == "http://app.example.com/callback"
    assert "You have no apps yet" in (await dev.page("/console")).text


@pytest.mark.parametrize(
    ("changes", "control", "message"),
    [
        ({"name": "x" * 201}, "name", "name must be 1 to 200 printable characters."),
        ({"redirect_uris": "https://app.example.com/cb#frag"}, "redirect_uris", "redirect_uris items may not have a fragment."),
        ({"redirect_uris": "\n".join(f"https://app.example.com/{i}" for i in range(21))}, "redirect_uris",
         "redirect_uris may list at most 20 URIs."),
        ({"redirect_uris": ""}, "redirect_uris", "redirect_uris must list at least one URI."),
        ({"permissions": "read_everything"}, "permissions-error", "Unknown permission(s): read_everything."),
        ({"client_type": "trusted"}, "client_type-error", "client_type must be one of: confidential, public."),
    ],
)
async def test_one_bad_field(dev: Developer, changes: dict[str, str], control: str, message: str) -> None:
    form = await dev.page("/console/apps/new")
    data = {"csrf_token": csrf_of(form), "name": "Fine", "redirect_uris": REDIRECT_URI, "permissions": "read_profile",
            "client_type": "confidential", **changes}
    response = await dev.post("/console/apps", data)
    assert response.status_code == 400, response.text
    shown = text_of(response, control) if control.endswith("-error") else field_error(response, control)
    assert shown == message
    assert response.text.count('class="error"') == 1


async def test_the_json_api_still_answers_the_first_bad_field(client: httpx.AsyncClient) -> None:
    """The console shows every bad field; the Neucron API, using the same rules, names the first as before."""
    _, token = await sign_up(client)
    body = {"name": " ", "redirect_uris": ["http://x.example/cb"], "permissions": "nope"}
    response = await client.post("/v1/apps", json=body, headers={"Authorization": token})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request", "message": "name must be 1 to 200 printable characters.", "status_code": 400,
    }


async def test_malformed_bodies_get_a_page_not_a_crash(dev: Developer) -> None:
    form = await dev.page("/console/apps/new")
    response = await dev.http.post("/console/apps", json={"name": "x"})
    assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
    response = await dev.post("/console/apps", [("csrf_token", csrf_of(form)), ("name", "a"), ("name", "b")])
    assert response.status_code == 400 and "name is repeated." in response.text
    response = await dev.post("/console/apps", {"csrf_token": csrf_of(form), "name": "a\x00b"})
    assert response.status_code == 400 and "NUL" in response.text


# ---------------------------------------------------------------- editing


async def test_edit_an_app(dev: Developer) -> None:
    app_id, _ = await dev.register()
    app_page = await dev.page(f"/console/apps/{app_id}")
    data = [(k, v) for k, v in post_form(app_page, f"/console/apps/{app_id}") if k not in ("name", "redirect_uris", "permissions")]
    data += [("name", "Photo Printer 2"), ("redirect_uris", f"{REDIRECT_URI}\nhttps://app.example.com/other"),
             ("permissions", "manage_notifications")]
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 303 and response.headers["location"] == f"/console/apps/{app_id}?saved=1"
    saved = await dev.page(response.headers["location"])
    assert "Saved." in saved.text
    assert texts(saved.text).attrs["name"]["value"] == "Photo Printer 2"
    assert text_of(saved, "redirect_uris") == f"{REDIRECT_URI} https://app.example.com/other"
    checked = {name: value for name, value in post_form(saved, f"/console/apps/{app_id}") if name == "permissions"}
    assert checked == {"permissions": "manage_notifications"}


async def test_a_refused_edit_shows_why_and_changes_nothing(dev: Developer) -> None:
    app_id, _ = await dev.register(name="Keep Me")
    app_page = await dev.page(f"/console/apps/{app_id}")
    data = [(k, v) for k, v in post_form(app_page, f"/console/apps/{app_id}") if k not in ("name", "redirect_uris")]
    data += [("name", "Renamed"), ("redirect_uris", "ftp://app.example.com/cb")]
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 400
    assert field_error(response, "redirect_uris").startswith("redirect_uris item must be https")
    assert field_error(response, "name") == ""
    assert texts(response.text).attrs["name"]["value"] == "Renamed"  # what was typed is kept
    again = await dev.page(f"/console/apps/{app_id}")
    assert texts(again.text).attrs["name"]["value"] == "Keep Me"
    assert text_of(again, "redirect_uris") == REDIRECT_URI


# ---------------------------------------------------------------- keys


async def test_keys_created_used_and_revoked(dev: Developer, client: httpx.AsyncClient) -> None:
    app_id, _ = await dev.register()
    key_id, key_secret, shown = await dev.new_key(app_id)
    assert_secret_page(shown)
    assert "will not be shown again" in shown.text
    assert '<button type="button" class="copy" data-copy="key-secret" hidden>' in shown.text  # shown by the script

    app_page = await dev.page(f"/console/apps/{app_id}")
    assert key_secret not in app_page.text
    row = re.search(rf"<code class=\"inline\">{key_id}</code></td>\s*<td data-label=\"Created\">([^<]+)</td>\s*<td data-label=\"Last used\">([^<]+)</td>", app_page.text)
    assert row and row.group(2) == "never"

    # Using the key shows when it was last used.
    response = await client_credentials(client, app_id, key_secret)
    assert response.status_code == 200, response.text
    app_page = await dev.page(f"/console/apps/{app_id}")
    row = re.search(rf"<code class=\"inline\">{key_id}</code></td>\s*<td data-label=\"Created\">([^<]+)</td>\s*<td data-label=\"Last used\">([^<]+)</td>", app_page.text)
    assert row and row.group(2).endswith("UTC") and row.group(2) != "never"

    # Revoking it: listed as revoked, and the secret stops working at once.
    action = f"/console/apps/{app_id}/keys/{key_id}/revoke"
    response = await dev.post(action, post_form(app_page, action))
    assert response.status_code == 303 and response.headers["location"] == f"/console/apps/{app_id}"
    app_page = await dev.page(f"/console/apps/{app_id}")
    assert re.search(rf"{key_id}</code></td>(.|\n)*?Revoked \d", app_page.text)
    assert action not in app_page.text
    assert (await client_credentials(client, app_id, key_secret)).status_code == 401


async def test_revoking_an_unknown_key_is_a_404_page(dev: Developer) -> None:
    app_id, _ = await dev.register()
    app_page = await dev.page(f"/console/apps/{app_id}")
    response = await dev.post(f"/console/apps/{app_id}/keys/key_0000000000000000/revoke", {"csrf_token": csrf_of(app_page)})
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert "Key not found." in response.text


# ---------------------------------------------------------------- disabling


async def test_disable_needs_a_confirmation_then_stops_the_app(dev: Developer, client: httpx.AsyncClient) -> None:
    app_id, _ = await dev.register()
    _, key_secret, _ = await dev.new_key(app_id)
    app_page = await dev.page(f"/console/apps/{app_id}")
    action = f"/console/apps/{app_id}/disable"
    unconfirmed = post_form(app_page, action)  # the box is not ticked
    response = await dev.post(action, unconfirmed)
    assert response.status_code == 400
    assert field_error(response, "confirm") == "Tick the box to confirm: disabling cannot be undone."
    assert (await client_credentials(client, app_id, key_secret)).status_code == 200

    response = await dev.post(action, [*unconfirmed, ("confirm", "yes")])
    assert response.status_code == 303
    app_page = await dev.page(f"/console/apps/{app_id}")
    assert "Disabled" in app_page.text and "Create a key pair" not in app_page.text and "Try it" not in app_page.text
    assert "Disabled" in (await dev.page("/console")).text
    assert (await client_credentials(client, app_id, key_secret)).status_code == 401

    # A form still open elsewhere: a disabled app gets no new key, and cannot be tried.
    response = await dev.post(f"/console/apps/{app_id}/keys", {"csrf_token": csrf_of(app_page)})
    assert response.status_code == 400 and text_of(response, "keys-error") == "The app is disabled; it can hold no new keys."
    response = await dev.http.get(f"/console/apps/{app_id}/try")
    assert response.status_code == 400 and "The app is disabled; it cannot be authorized." in response.text


# ---------------------------------------------------------------- owner only, CSRF


async def test_another_users_app_is_not_found(dev: Developer, other: Developer) -> None:
    app_id, _ = await dev.register(name="Mine Alone")
    key_id, _, _ = await dev.new_key(app_id)
    their_page = await other.page("/console")
    token = csrf_of(their_page)  # the other user's own valid token
    assert "Mine Alone" not in their_page.text

    for path in (f"/console/apps/{app_id}", f"/console/apps/{app_id}/try"):
        response = await other.http.get(path)
        assert response.status_code == 404, path
        assert "Mine Alone" not in response.text and "App not found" in response.text
    posts = {
        f"/console/apps/{app_id}": {"name": "Stolen", "redirect_uris": "https://evil.example/cb", "permissions": "read_profile"},
        f"/console/apps/{app_id}/keys": {},
        f"/console/apps/{app_id}/keys/{key_id}/revoke": {},
        f"/console/apps/{app_id}/disable": {"confirm": "yes"},
    }
    for path, data in posts.items():
        response = await other.post(path, {"csrf_token": token, **data})
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"].startswith("text/html")

    app_page = await dev.page(f"/console/apps/{app_id}")
    assert texts(app_page.text).attrs["name"]["value"] == "Mine Alone"
    assert "Disabled" not in app_page.text and "Revoked" not in app_page.text
    assert app_page.text.count(f"/console/apps/{app_id}/keys/") == 1  # still one key, still live


@pytest.mark.parametrize("path", ["/console/apps/" + "x" * 65, "/console/apps/a%00b", "/console/apps/a%00b/try"])
async def test_impossible_app_ids_are_not_found(dev: Developer, path: str) -> None:
    response = await dev.http.get(path)
    assert response.status_code == 404 and "App not found" in response.text


async def test_every_form_refuses_a_missing_or_foreign_csrf_token(dev: Developer, other: Developer) -> None:
    app_id, _ = await dev.register(name="Guarded")
    key_id, key_secret, _ = await dev.new_key(app_id)
    foreign = csrf_of(await other.page("/console"))
    posts = {
        "/console/apps": {"name": "Forged", "redirect_uris": REDIRECT_URI, "permissions": "read_profile", "client_type": "public"},
        f"/console/apps/{app_id}": {"name": "Forged", "redirect_uris": REDIRECT_URI, "permissions": "read_profile"},
        f"/console/apps/{app_id}/keys": {},
        f"/console/apps/{app_id}/keys/{key_id}/revoke": {},
        f"/console/apps/{app_id}/disable": {"confirm": "yes"},
    }
    for path, data in posts.items():
        for token in (None, foreign, ""):
            body = data if token is None else {**data, "csrf_token": token}
            response = await dev.post(path, body)
            assert response.status_code == 403, (path, token, response.text)
            assert "The form was not sent from this site" in response.text
    listing = await dev.page("/console")
    assert "Forged" not in listing.text and listing.text.count("/console/apps/") == 2  # the app, and "new"
    app_page = await dev.page(f"/console/apps/{app_id}")
    assert app_page.text.count(f"/console/apps/{app_id}/keys/") == 1 and "Disabled" not in app_page.text


# ---------------------------------------------------------------- try it


async def test_try_it_builds_a_working_authorization_url(app: Any, dev: Developer, client: httpx.AsyncClient) -> None:
    app_id, _ = await dev.register(redirect_uris=f"{REDIRECT_URI}\n{LOCAL_REDIRECT_URI}", permissions=("read_profile", "write_data"))
    _, key_secret, _ = await dev.new_key(app_id)
    app_page = await dev.page(f"/console/apps/{app_id}")
    # The panel offers the app's own redirect URIs and permissions, the first URI and every permission chosen.
    assert options(app_page, "try-redirect_uri") == [(REDIRECT_URI, " selected"), (LOCAL_REDIRECT_URI, "")]
    assert re.findall(r'name="scope" value="(\w+)" checked', app_page.text) == ["read_profile", "write_data"]

    tried = await dev.page(f"/console/apps/{app_id}/try", redirect_uri=LOCAL_REDIRECT_URI, scope="write_data")
    assert_secret_page(tried)
    url = texts(tried.text).attrs["authorize-link"]["href"]
    assert text_of(tried, "authorize-url") == url
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/oauth2/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    verifier = text_of(tried, "code-verifier")
    assert query == {
        "response_type": "code",
        "client_id": app_id,
        "redirect_uri": LOCAL_REDIRECT_URI,
        "scope": "write_data",
        "state": text_of(tried, "state"),
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    assert verifier not in url

    # Another person opens it, allows, and the app redeems the code with its key and the verifier.
    email = unique_email()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as browser:
        await sign_up(browser, email)
        person = ActingUser(browser, email, PASSWORD)
        landed = await person.authorize(url, LOCAL_REDIRECT_URI)
    back = {k: v[0] for k, v in parse_qs(urlsplit(landed).query).items()}
    assert back["state"] == query["state"]
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": back["code"], "redirect_uri": LOCAL_REDIRECT_URI,
              "code_verifier": verifier, "client_id": app_id, "client_secret": key_secret},
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "write_data"


async def test_try_it_without_choices_asks_for_every_permission(dev: Developer) -> None:
    app_id, _ = await dev.register(permissions=("read_profile", "write_data"))
    first = await dev.page(f"/console/apps/{app_id}/try")
    second = await dev.page(f"/console/apps/{app_id}/try")
    assert text_of(first, "scope") == "read_profile write_data"
    # A fresh state and verifier every time.
    assert text_of(first, "state") != text_of(second, "state")
    assert text_of(first, "code-verifier") != text_of(second, "code-verifier")


@pytest.mark.parametrize(
    ("params", "control", "message"),
    [
        ({"redirect_uri": "https://evil.example/cb"}, "try-redirect_uri", "redirect_uri is not registered for this app."),
        ({"scope": "manage_notifications"}, "try_scope-error", "Permission(s) not allowed for this app: manage_notifications."),
        ({"scope": "nope"}, "try_scope-error", "Unknown permission(s): nope."),
    ],
)
async def test_try_it_refuses_what_the_authorization_endpoint_would(
    dev: Developer, params: dict[str, str], control: str, message: str
) -> None:
    app_id, _ = await dev.register(permissions=("read_profile",))
    response = await dev.http.get(f"/console/apps/{app_id}/try", params=params)
    assert response.status_code == 400, response.text
    shown = text_of(response, control) if control.endswith("-error") else field_error(response, control)
    assert shown == message
    assert "authorize-link" not in response.text


# ---------------------------------------------------------------- OpenID Connect settings

OPENID_FORM = {
    "post_logout_redirect_uris": f"{REDIRECT_URI}/bye\n  \nhttp://127.0.0.1:8765/out",
    "id_token_signed_response_alg": "ES256",
    "subject_type": "pairwise",
    "sector_identifier_uri": "https://sector.example.com/s.json",
    "require_nonce": "yes",
    "require_pushed_authorization_requests": "yes",
    "dpop_bound_access_tokens": "yes",
}
OPENID_SHOWN = {
    "post_logout_redirect_uris": f"{REDIRECT_URI}/bye http://127.0.0.1:8765/out",  # one a line, blank lines dropped
    "id_token_signed_response_alg": "ES256",
    "subject_type": "pairwise",
    "sector_identifier_uri": "https://sector.example.com/s.json",
    "require_nonce": True,
    "require_pushed_authorization_requests": True,
    "dpop_bound_access_tokens": True,
}
OPENID_DEFAULTS_SHOWN = {
    "post_logout_redirect_uris": "", "id_token_signed_response_alg": "RS256", "subject_type": "public",
    "sector_identifier_uri": "", "require_nonce": False, "require_pushed_authorization_requests": False,
    "dpop_bound_access_tokens": False,
}


def openid_settings(page: httpx.Response) -> dict[str, Any]:
    """The OpenID Connect settings the page's form holds."""
    attrs = texts(page.text).attrs
    return {
        "post_logout_redirect_uris": text_of(page, "post_logout_redirect_uris"),
        "id_token_signed_response_alg": selected(page, "id_token_signed_response_alg"),
        "subject_type": selected(page, "subject_type"),
        "sector_identifier_uri": attrs["sector_identifier_uri"].get("value", ""),
        "require_nonce": "checked" in attrs["require_nonce"],
        "require_pushed_authorization_requests": "checked" in attrs["require_pushed_authorization_requests"],
        "dpop_bound_access_tokens": "checked" in attrs["dpop_bound_access_tokens"],
    }


def settings_form(page: httpx.Response, app_id: str, **changes: str) -> list[tuple[str, str]]:
    """What a browser posts from the app page's settings form (its text areas and selects too),
    with ``changes`` in place of what the page holds."""
    held = post_form(page, f"/console/apps/{app_id}")
    held += [(area, "\n".join(text_of(page, area).split())) for area in ("redirect_uris", "post_logout_redirect_uris")]
    held += [(name, selected(page, name)) for name in ("id_token_signed_response_alg", "subject_type")]
    return [(k, v) for k, v in held if k not in changes] + [(k, v) for k, v in changes.items() if v is not None]


async def register_with(dev: Developer, redirect_uris: str = REDIRECT_URI, **settings: str) -> httpx.Response:
    form = await dev.page("/console/apps/new")
    data = {"csrf_token": csrf_of(form), "name": "Photo Printer", "redirect_uris": redirect_uris,
            "permissions": "read_profile", "client_type": "confidential", **settings}
    return await dev.post("/console/apps", data)


async def test_the_console_registers_shows_and_edits_the_openid_settings(app: Any, dev: Developer) -> None:
    new = await dev.page("/console/apps/new")
    assert "<legend>OpenID Connect</legend>" in new.text
    for control in apps.OPENID_FIELDS:
        assert f'<label for="{control}">' in new.text, control
    assert openid_settings(new) == OPENID_DEFAULTS_SHOWN
    assert options(new, "id_token_signed_response_alg") == [("RS256", " selected"), ("ES256", "")]
    assert options(new, "subject_type") == [("public", " selected"), ("pairwise", "")]

    two_hosts = f"{REDIRECT_URI}\nhttps://other.example.com/cb"
    created = await register_with(dev, two_hosts, **OPENID_FORM)
    assert created.status_code == 200, created.text
    app_id = text_of(created, "app-id")
    page = await dev.page(f"/console/apps/{app_id}")
    assert openid_settings(page) == OPENID_SHOWN
    registered = await apps.get_owned(app.state.ctx, dev.user_id, app_id)
    assert registered.openid.post_logout_redirect_uris == (f"{REDIRECT_URI}/bye", "http://127.0.0.1:8765/out")

    # The page posts back what it shows: nothing changes.
    same = await dev.post(f"/console/apps/{app_id}", settings_form(page, app_id))
    assert same.status_code == 303, re.findall(r"class=\"error\"[^>]*>([^<]*)", same.text)
    assert openid_settings(await dev.page(f"/console/apps/{app_id}")) == OPENID_SHOWN

    # Unticked, emptied or set back: the defaults.
    data = settings_form(page, app_id, require_nonce=None, require_pushed_authorization_requests=None, dpop_bound_access_tokens=None, post_logout_redirect_uris="", subject_type="public",
                         sector_identifier_uri="", id_token_signed_response_alg="RS256")
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 303, response.text
    assert openid_settings(await dev.page(response.headers["location"])) == OPENID_DEFAULTS_SHOWN


@pytest.mark.parametrize(
    ("changes", "control", "message"),
    [
        ({"post_logout_redirect_uris": "http://app.example.com/bye"}, "post_logout_redirect_uris",
         "http post_logout_redirect_uris are allowed only on a loopback host; use https."),
        ({"post_logout_redirect_uris": "\n".join(f"https://app.example.com/{i}" for i in range(21))}, "post_logout_redirect_uris",
         "post_logout_redirect_uris may list at most 20 URIs."),
        ({"id_token_signed_response_alg": "HS256"}, "id_token_signed_response_alg",
         "id_token_signed_response_alg must be one of: RS256, ES256."),
        ({"subject_type": "private"}, "subject_type", "subject_type must be one of: public, pairwise."),
        ({"sector_identifier_uri": "http://sector.example.com/s.json"}, "sector_identifier_uri",
         "sector_identifier_uri must be an absolute https URL (http only on localhost, 127.0.0.1 or [::1])."),
        ({"redirect_uris": f"{REDIRECT_URI}\nhttps://other.example.com/cb", "subject_type": "pairwise"}, "sector_identifier_uri",
         "sector_identifier_uri is required when subject_type is pairwise and the redirect_uris are on more than one host"),
    ],
)
async def test_each_bad_openid_setting_is_shown_next_to_it(
    dev: Developer, changes: dict[str, str], control: str, message: str
) -> None:
    response = await register_with(dev, **changes)
    assert response.status_code == 400, response.text
    assert field_error(response, control).startswith(message), field_error(response, control)
    assert response.text.count('class="error"') == 1
    assert "You have no apps yet" in (await dev.page("/console")).text


async def test_a_refused_openid_edit_shows_every_bad_field_and_changes_nothing(dev: Developer) -> None:
    app_id = text_of(await register_with(dev, **OPENID_FORM), "app-id")
    page = await dev.page(f"/console/apps/{app_id}")
    data = settings_form(page, app_id, name="Renamed", post_logout_redirect_uris="ftp://app.example.com/bye",
                         id_token_signed_response_alg="none", redirect_uris=f"{REDIRECT_URI}\ncom.example.app:/cb",
                         sector_identifier_uri="")
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 400
    assert field_error(response, "post_logout_redirect_uris").startswith("post_logout_redirect_uris item must be https")
    assert field_error(response, "id_token_signed_response_alg").startswith("id_token_signed_response_alg must be one of")
    assert field_error(response, "sector_identifier_uri").startswith("sector_identifier_uri is required")
    assert response.text.count('class="error"') == 3
    assert text_of(response, "post_logout_redirect_uris") == "ftp://app.example.com/bye"  # what was typed is kept
    again = await dev.page(f"/console/apps/{app_id}")
    assert openid_settings(again) == OPENID_SHOWN and texts(again.text).attrs["name"]["value"] == "Photo Printer"


# ---------------------------------------------------------------- client authentication (private_key_jwt)

PUBLIC_JWK = {"kty": "EC", "crv": "P-256", "kid": "k1",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}


async def test_the_console_registers_and_shows_private_key_jwt(app: Any, dev: Developer) -> None:
    new = await dev.page("/console/apps/new")
    for control in ("token_endpoint_auth_method", "jwks", "jwks_uri"):
        assert f'<label for="{control}">' in new.text, control
    assert selected(new, "token_endpoint_auth_method") == ""
    created = await register_with(
        dev, token_endpoint_auth_method="private_key_jwt", jwks=json.dumps({"keys": [PUBLIC_JWK]})
    )
    assert created.status_code == 200, created.text
    app_id = text_of(created, "app-id")
    page = await dev.page(f"/console/apps/{app_id}")
    assert selected(page, "token_endpoint_auth_method") == "private_key_jwt"
    assert json.loads(text_of(page, "jwks")) == {"keys": [PUBLIC_JWK]}
    registered = await apps.get_owned(app.state.ctx, dev.user_id, app_id)
    assert registered.openid.auth_method(registered.client_type) == "private_key_jwt"


@pytest.mark.parametrize(
    ("changes", "control", "message"),
    [
        ({"token_endpoint_auth_method": "private_key_jwt"}, "jwks", "private_key_jwt needs the app's public keys"),
        ({"jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}, "jwks", "jwks: kty must be RSA"),
        ({"jwks": json.dumps({"keys": [{**PUBLIC_JWK, "d": "x"}]})}, "jwks", "jwks: public keys only"),
        ({"jwks": "not json"}, "jwks", "jwks must be a JWK Set"),
        ({"jwks_uri": "http://keys.example.com/jwks.json"}, "jwks_uri", "jwks_uri must be an absolute https URL"),
        ({"token_endpoint_auth_method": "none"}, "token_endpoint_auth_method", "token_endpoint_auth_method of a confidential"),
    ],
)
async def test_each_bad_client_authentication_setting_is_shown_next_to_it(
    dev: Developer, changes: dict[str, str], control: str, message: str
) -> None:
    response = await register_with(dev, **changes)
    assert response.status_code == 400, response.text
    assert field_error(response, control).startswith(message), field_error(response, control)


# ---------------------------------------------------------------- security profile and refresh-token rotation


def checked(page: httpx.Response, control: str) -> bool:
    return "checked" in texts(page.text).attrs[control]


async def test_the_console_registers_a_fapi2_app_and_turns_rotation_off(app: Any, dev: Developer) -> None:
    new = await dev.page("/console/apps/new")
    assert '<label for="security_profile">' in new.text and '<label for="refresh_token_rotation">' in new.text
    assert options(new, "security_profile") == [("none", " selected"), ("fapi2", "")]
    # The option names what the profile enforces, DPoP among it.
    fapi2 = re.search(r'<option value="fapi2"[^>]*>([^<]*)</option>', new.text)
    assert fapi2 and "DPoP-bound tokens" in fapi2.group(1) and "private_key_jwt" in fapi2.group(1), new.text
    assert checked(new, "refresh_token_rotation")  # on by default
    created = await register_with(
        dev, token_endpoint_auth_method="private_key_jwt", jwks=json.dumps({"keys": [PUBLIC_JWK]}),
        security_profile="fapi2", refresh_token_rotation="yes",
    )
    assert created.status_code == 200, created.text
    app_id = text_of(created, "app-id")
    page = await dev.page(f"/console/apps/{app_id}")
    assert selected(page, "security_profile") == "fapi2" and checked(page, "refresh_token_rotation")
    registered = await apps.get_owned(app.state.ctx, dev.user_id, app_id)
    assert registered.openid.fapi2 and not registered.openid.rotates_refresh_tokens  # the profile does not rotate

    # Unticked: the setting is off; the profile chosen again is kept.
    data = settings_form(
        page, app_id, refresh_token_rotation=None, security_profile="fapi2", token_endpoint_auth_method="private_key_jwt",
        jwks=text_of(page, "jwks"),
    )
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 303, re.findall(r"class=\"error\"[^>]*>([^<]*)", response.text)
    page = await dev.page(response.headers["location"])
    assert not checked(page, "refresh_token_rotation") and selected(page, "security_profile") == "fapi2"
    assert (await apps.get_owned(app.state.ctx, dev.user_id, app_id)).openid.refresh_token_rotation is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"security_profile": "fapi2"}, "security_profile fapi2 needs token_endpoint_auth_method private_key_jwt"),
        ({"security_profile": "fapi2", "client_type": "public", "refresh_token_rotation": "yes"},
         "security_profile fapi2 needs a confidential client"),
        ({"security_profile": "fapi1"}, "security_profile must be one of: none, fapi2."),
    ],
)
async def test_a_refused_security_profile_is_shown_next_to_it(dev: Developer, changes: dict[str, str], message: str) -> None:
    response = await register_with(dev, **changes)
    assert response.status_code == 400, response.text
    assert field_error(response, "security_profile").startswith(message), field_error(response, "security_profile")
    assert selected(response, "security_profile") in ("fapi2", "none")
    assert "You have no apps yet" in (await dev.page("/console")).text


async def test_a_public_client_cannot_untick_rotation(dev: Developer) -> None:
    response = await register_with(dev, client_type="public")  # the box unticked
    assert response.status_code == 400, response.text
    assert field_error(response, "refresh_token_rotation").startswith(
        "refresh_token_rotation can be false only for a confidential client"
    )
    assert not checked(response, "refresh_token_rotation")  # what was posted is shown
    created = await register_with(dev, client_type="public", refresh_token_rotation="yes")
    assert created.status_code == 200, created.text
