"""Acts as the end user in a browser: follows grantd's hosted pages over HTTP.

Starting from an authorization URL, it follows redirects with one cookie-keeping httpx
client, fills in the sign-in form (email, password), answers the consent form (Allow or
Deny), and returns the final redirect to the app's redirect_uri, which it does not fetch.
Forms are read with the standard library's html.parser: every input of the form is
posted back as found (hidden ``next``, ``csrf_token`` and request parameters included),
so nothing about the pages is assumed beyond the HTML contract:

- ``<form method="post" action="/signin">`` with inputs ``email``, ``password``, ``next``, ``csrf_token``;
- ``<form method="post" action="/oauth2/authorize">`` with hidden inputs and
  ``<button name="decision" value="allow">`` / ``value="deny"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from support.neucron import Flow, sign_up, unique_email


REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class Form:
    action: str
    method: str
    inputs: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, label)

    def path(self, page_url: str) -> str:
        return urlsplit(urljoin(page_url, self.action)).path


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: (value if value is not None else "") for name, value in attrs}
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind in ("submit", "image"):
                self._form.buttons.append((a["name"], a.get("value", ""), a.get("value", "")))
            elif kind in ("checkbox", "radio") and "checked" not in a:
                return
            elif kind not in ("button", "reset", "file"):
                self._form.inputs.append((a["name"], a.get("value", "")))
        elif tag == "button" and a.get("type", "submit").lower() == "submit":
            self._button = [a.get("name", ""), a.get("value", ""), ""]

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button[2] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None and self._form is not None:
            name, value, label = self._button
            self._form.buttons.append((name, value, label.strip()))
            self._button = None
        elif tag == "form":
            self._form = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


class PageError(AssertionError):
    """The pages did not lead where a user would expect; carries the last response."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(
            f"{message}: {response.request.method} {response.request.url} -> {response.status_code}\n"
            f"{response.text[:2000]}"
        )
        self.response = response


def _same_endpoint(url: str, redirect_uri: str) -> bool:
    a, b = urlsplit(url), urlsplit(redirect_uri)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


@dataclass
class ActingUser:
    """One person with one browser (cookie jar): ``http`` must be used for nothing else."""

    http: httpx.AsyncClient
    email: str
    password: str
    user_id: str = ""
    pages: list[httpx.Response] = field(default_factory=list)  # every response seen, in order

    async def authorize(self, authorization_url: str, redirect_uri: str, decision: str = "allow") -> str:
        """Sign in if asked, answer the consent page with ``decision``; the final redirect Location to the app."""
        method, url, data = "GET", authorization_url, None
        for _ in range(12):
            if method == "GET":
                response = await self.http.get(url)
            else:
                response = await self.http.post(
                    url, content=urlencode(data or []), headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
            self.pages.append(response)
            url = str(response.url)
            if response.status_code in REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise PageError("a redirect without Location", response)
                target = urljoin(url, location)
                if _same_endpoint(target, redirect_uri):
                    return target
                if urlsplit(target).netloc != urlsplit(url).netloc:
                    raise PageError(f"redirected off the server to {target}", response)
                method, url, data = "GET", target, None
                continue
            if response.status_code != 200:
                raise PageError("the page failed", response)
            method, url, data = self._answer(response, decision)
        raise PageError("too many pages", response)

    def _answer(self, response: httpx.Response, decision: str) -> tuple[str, str, list[tuple[str, str]]]:
        page_url = str(response.url)
        forms = {form.path(page_url): form for form in parse_forms(response.text) if form.method == "post"}
        if "/signin" in forms:
            form = forms["/signin"]
            names = {name for name, _ in form.inputs}
            assert {"email", "password", "next", "csrf_token"} <= names, form
            fill = {"email": self.email, "password": self.password}
            data = [(name, fill.get(name, value)) for name, value in form.inputs]
            return "POST", urljoin(page_url, form.action), data
        if "/oauth2/authorize" in forms:
            form = forms["/oauth2/authorize"]
            assert "csrf_token" in {name for name, _ in form.inputs}, form
            chosen = [b for b in form.buttons if b[0] == "decision" and b[1] == decision]
            assert chosen, f"no decision button {decision!r} in {form.buttons}"
            return "POST", urljoin(page_url, form.action), [*form.inputs, ("decision", chosen[0][1])]
        raise PageError("neither a sign-in nor a consent form", response)


async def new_person(http: httpx.AsyncClient) -> tuple[str, str]:
    """(user_id, email) of a new account with support.neucron.PASSWORD, created over the Neucron API."""
    email = unique_email()
    user_id, _ = await sign_up(http, email)
    return user_id, email


async def developer(http: httpx.AsyncClient) -> Flow:
    """A developer and one end user (email in ``extra["email"]``), to register many apps with ``new_app``."""
    template = Flow(http)
    _, template.dev_token = await sign_up(http)
    email = unique_email()
    template.user_id, template.user_token = await sign_up(http, email)
    template.extra["email"] = email
    return template


async def new_app(dev: Flow, **fields: Any) -> Flow:
    """A new app of ``dev`` (redirect URI ``dev.redirect_uri``) with one key: what support.neucron.new_flow makes,
    without its two sign-ups (a password hash each)."""
    flow = dataclasses.replace(dev, extra=dict(dev.extra))
    body = {"name": "Test App", "redirect_uris": [flow.redirect_uri], "permissions": flow.app_permissions, **fields}
    response = await flow.client.post("/v1/apps", json=body, headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    flow.app_id, flow.app_key = data["app_id"], data["app_key"]
    response = await flow.client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    flow.key_id, flow.key_secret = data["key_id"], data["key_secret"]
    return flow
