"""Fixtures of the browser tests: one real `grantd serve` process for the session, headless Chromium.

Every test here is marked ``browser`` (``make screenshots`` runs just these) and is skipped, saying
why, where Debian's chromium is not installed at /usr/bin/chromium (``apt-get install chromium``;
.ci/run installs it). No browser is ever downloaded: Playwright drives the system's Chromium.

Fixtures, stable for every browser test module:

- ``base_url``: the live server's URL, ``http://127.0.0.1:<port>`` (also the issuer).
- ``api``: an ``httpx.Client`` on ``base_url`` for the Neucron JSON API (set-up, checks).
- ``browser``: the Chromium browser (session-wide); ``new_page()`` opens a page in a fresh context.
- ``page``: a fresh Page in a new context (its own cookies), closed after the test.
- ``shoot(page, name)``: saves a full-page PNG as ``<name>.png`` in ``$GRANTD_SCREENSHOTS``
  (``make screenshots`` sets it to ``docs/screenshots``); elsewhere into a temporary directory,
  so that a test run leaves the committed screenshots alone.
- ``signed_in_page``: ``(page, email, password)`` of a new account signed in through ``/signin``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from support.neucron import PASSWORD, unique_email
from support.servers import ServerProcess, server_on_new_sqlite

CHROMIUM = os.environ.get("GRANTD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-extensions",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
]
SCREENSHOTS = Path(os.environ.get("GRANTD_SCREENSHOTS") or Path(tempfile.gettempdir()) / "grantd-screenshots")
HERE = Path(__file__).resolve().parent
DESKTOP = {"width": 1024, "height": 768}
PHONE = {"width": 375, "height": 740}
TIMEOUT_MS = 15_000


def _why_no_browser() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium (.ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: make install (it is in the test extra)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_no_browser()
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------- the server


@contextmanager
def launch_server(tmp_path_factory: pytest.TempPathFactory, secret_key: str, **env: Any) -> Iterator[ServerProcess]:
    """A real `grantd serve` on a fresh SQLite database (it migrates itself), stopped on leaving the
    block; ``env``: GRANTD_* overrides by setting name, e.g. ``rate_limit_signup_per_address=2``."""
    overrides = {f"GRANTD_{name.upper()}": str(value) for name, value in env.items()}
    with server_on_new_sqlite(tmp_path_factory, secret_key, "browser-server", env=overrides) as server:
        yield server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    with launch_server(tmp_path_factory, secret_key) as server:
        yield server


@pytest.fixture(scope="session")
def base_url(live_server: ServerProcess) -> str:
    return live_server.base_url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


# ---------------------------------------------------------------- the browser


# Package scope, not session: while Playwright's sync API runs, the main thread counts as running
# an event loop, so asyncio.run() (which other tests' fixtures call) would fail. Chromium is
# stopped when the last browser test is done, before the rest of the suite runs.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Any) -> Iterator[Any]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new_page(viewport=PHONE)``: a Page in a context of its own (a second person, or a second
    browser of the same person); every context is closed after the test."""
    contexts: list[Any] = []

    def open_page(viewport: dict[str, int] = DESKTOP, **options: Any) -> Any:
        context = browser.new_context(viewport=viewport, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


def save_screenshot(page: Any, name: str) -> Path:
    """A full-page PNG of what the page shows now, as <name>.png in SCREENSHOTS."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


@pytest.fixture
def shoot() -> Callable[[Any, str], Path]:
    return save_screenshot


# ---------------------------------------------------------------- people


def field_error(page: Any, label: str) -> Any:
    """The error shown in the same form row as the control labelled ``label``."""
    return page.locator(".field", has=page.get_by_label(label, exact=True)).locator(".error")


def follow(page: Any, control: Any) -> None:
    """Click a link or submit button and wait for the page it leads to (not the one it leaves)."""
    with page.expect_navigation():
        control.click()


def sign_in(page: Any, base_url: str | None, email: str, password: str = PASSWORD) -> None:
    """Sign in through the /signin form (``base_url`` None: the form the page shows now);
    returns on the page the form leads to."""
    if base_url is not None:
        page.goto(f"{base_url}/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    follow(page, page.get_by_role("button", name="Sign in"))


def new_account(api: httpx.Client, email: str | None = None, password: str = PASSWORD) -> tuple[str, str]:
    """(user_id, email) of a new account, created over the Neucron API."""
    user = new_user(api, email, password)
    return user.user_id, user.email


@dataclass
class User:
    user_id: str
    email: str
    token: str  # a user token for the Neucron API (``Authorization: Bearer``)
    password: str = PASSWORD


def new_user(api: httpx.Client, email: str | None = None, password: str = PASSWORD) -> User:
    """A new account created over the Neucron API, with its API token."""
    email = email or unique_email()
    response = api.post("/v1/auth/signup", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return User(data["user_id"], email, data["access_token"], password)


CLIENT_ORIGIN = "https://client.example"  # an app's site: answered by the browser's route, never the network
REDIRECT_URI = f"{CLIENT_ORIGIN}/callback"


@dataclass
class App:
    app_id: str
    name: str
    owner: User
    key_secret: str
    redirect_uri: str = REDIRECT_URI

    def authorize_url(self, base_url: str, **params: str) -> str:
        query = {"response_type": "code", "client_id": self.app_id, "redirect_uri": self.redirect_uri,
                 "scope": "read_profile", "state": "st-1", **params}
        return f"{base_url}/oauth2/authorize?" + urlencode(query)

    def redeem(self, api: httpx.Client, code: str) -> httpx.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        return api.post("/oauth2/token", data=data, auth=(self.app_id, self.key_secret))

    def introspect(self, api: httpx.Client, token: str) -> dict[str, Any]:
        response = api.post("/oauth2/introspect", data={"token": token}, auth=(self.app_id, self.key_secret))
        assert response.status_code == 200, response.text
        return response.json()


def register_app(
    api: httpx.Client,
    name: str = "Photo Printer",
    permissions: str = "read_profile,write_data,manage_notifications",
    owner: User | None = None,
) -> App:
    """A confidential app with one key pair, registered over the Neucron API by ``owner`` (a new
    developer by default), redirecting to ``REDIRECT_URI``."""
    owner = owner or new_user(api)
    body = {"name": name, "redirect_uris": [REDIRECT_URI], "permissions": permissions}
    response = api.post("/v1/apps", json=body, headers={"Authorization": f"Bearer {owner.token}"})
    assert response.status_code == 200, response.text
    app_id = response.json()["data"]["app_id"]
    response = api.post(f"/v1/apps/{app_id}/keys", headers={"Authorization": f"Bearer {owner.token}"})
    assert response.status_code == 200, response.text
    return App(app_id, name, owner, response.json()["data"]["key_secret"])


class Traffic:
    """Every request the browser context makes, and the app's site (``CLIENT_ORIGIN``) played by a route:
    its callback answers a small page, so a test sees where the browser landed and with what."""

    def __init__(self, context: Any) -> None:
        self.urls: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.route(f"{CLIENT_ORIGIN}/**", self._client_site)

    @staticmethod
    def _client_site(route: Any) -> None:
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>client</title><h1>Client callback</h1>")

    def to(self, origin: str) -> list[str]:
        return [url for url in self.urls if url.startswith(origin + "/") or url == origin]


def callback_params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def signed_in_page(page: Any, api: httpx.Client, base_url: str) -> tuple[Any, str, str]:
    """(page, email, password) of a new account, signed in in ``page``'s browser."""
    _, email = new_account(api)
    sign_in(page, base_url, email)
    assert page.context.cookies(base_url) and any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    return page, email, PASSWORD

