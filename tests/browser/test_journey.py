"""THE journey of issue 4, in one browser: from signing up to watching a revoked token fail.

A person signs up, registers an app in the developer console, creates a key (reading the
secret off the page), opens the app's Try-it authorization URL, allows it on the consent page
and lands on the app's redirect URI with a code. The app (played with httpx) redeems the code
with the key and the PKCE verifier the console showed. The person then finds the app under
Connected apps, revokes it, and the app's access token fails introspection.

The app's site is a tiny HTTP server on the loopback interface (an http redirect URI is allowed
there, RFC 8252 §7.3), which records where the browser landed. A Playwright route cannot play
it: Chromium does not hand the request that follows a redirect to the route, and the consent
form's Allow ends in one. Screenshots: journey-*.png (docs/screenshots/ by `make screenshots`).
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from support.neucron import PASSWORD, unique_email
from support.servers import serving



class AppSite:
    """The app's own site: answers every GET with a small page and remembers the paths asked for."""

    def __init__(self) -> None:
        self.landed: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                site.landed.append(self.path)
                body = b"<!doctype html><title>Journey Printer</title><h1>Signed in</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # the code in the URL: not into test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.redirect_uri = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/callback"


@pytest.fixture
def app_site() -> Iterator[AppSite]:
    site = AppSite()
    with serving(site.server):
        yield site


def go(page: Any, role: str, name: str) -> None:
    page.get_by_role(role, name=name, exact=True).click()
    page.wait_for_load_state()


def test_sign_up_register_authorize_redeem_revoke(
    page: Any, base_url: str, api: httpx.Client, shoot: Any, app_site: AppSite
) -> None:
    redirect_uri = app_site.redirect_uri
    # 1. Sign up.
    email = unique_email()
    page.goto(f"{base_url}/")
    go(page, "link", "Create an account")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    go(page, "button", "Create account")
    assert page.url == f"{base_url}/"
    shoot(page, "journey-1-signed-up")

    # 2. Register an app in the developer console.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Developer console").click()
    page.wait_for_load_state()
    go(page, "link", "Register an app")
    page.get_by_label("Name", exact=True).fill("Journey Printer")
    page.get_by_label("Redirect URIs, one a line").fill(redirect_uri)
    page.locator("#permission-read_profile").check()
    page.locator("#permission-write_data").check()
    go(page, "button", "Register the app")
    app_id = page.locator("#app-id").inner_text()
    shoot(page, "journey-2-app-registered")

    # 3. Create a key pair; the secret is read off the page, where it is shown this once.
    go(page, "link", "Go to the app")
    go(page, "button", "Create a key pair")
    key_secret = page.locator("#key-secret").inner_text()
    assert key_secret.startswith("gks_")
    shoot(page, "journey-3-key-created")
    go(page, "link", "Back to the app")

    # 4. Try it: the authorization URL, with the verifier to redeem its code.
    go(page, "button", "Build the authorization URL")
    verifier = page.locator("#code-verifier").inner_text()
    state = page.locator("#state").inner_text()
    shoot(page, "journey-4-try-it")
    go(page, "link", "Open the consent page")
    assert urlsplit(page.url).path == "/oauth2/authorize"
    assert page.get_by_role("heading", level=1).inner_text() == "Journey Printer wants to access your account"
    assert email in page.inner_text("main")  # the owner: this same person
    shoot(page, "journey-5-consent")

    # 5. Allow: the browser lands on the app's redirect URI with a code and the state.
    page.get_by_role("button", name="Allow", exact=True).click()
    page.wait_for_url(f"{redirect_uri}?**")
    assert page.get_by_role("heading", level=1).inner_text() == "Signed in"
    callbacks = [path for path in app_site.landed if path.startswith("/oauth/callback")]
    assert len(callbacks) == 1 and page.url == f"{redirect_uri.rsplit('/oauth/callback', 1)[0]}{callbacks[0]}"
    back = dict(parse_qsl(urlsplit(callbacks[0]).query))
    assert back["state"] == state and back["iss"] == base_url
    shoot(page, "journey-6-redirected")

    # 6. The app redeems the code with its key and the PKCE verifier.
    response = api.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": back["code"], "redirect_uri": redirect_uri, "code_verifier": verifier},
        auth=(app_id, key_secret),
    )
    assert response.status_code == 200, response.text
    access_token = response.json()["access_token"]
    assert response.json()["scope"] == "read_profile write_data"

    def introspect() -> dict[str, Any]:
        result = api.post("/oauth2/introspect", data={"token": access_token}, auth=(app_id, key_secret))
        assert result.status_code == 200, result.text
        return result.json()

    assert introspect()["active"] is True

    # 7. The person sees the app under Connected apps, and revokes it.
    page.goto(f"{base_url}/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Connected apps").click()
    page.wait_for_load_state()
    grant = page.locator(".grant", has=page.get_by_role("heading", name="Journey Printer"))
    assert grant.count() == 1
    assert "Read your profile" in grant.inner_text() and "Create and change data" in grant.inner_text()
    shoot(page, "journey-7-connected-apps")
    grant.get_by_role("button", name="Revoke access of Journey Printer").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Journey Printer").count() == 0
    shoot(page, "journey-8-revoked")

    # 8. The app's access token now fails introspection.
    assert introspect() == {"active": False}
