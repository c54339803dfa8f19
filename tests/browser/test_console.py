"""The developer console in a real browser: registering an app, its keys, its OpenID Connect settings, Try it, disabling it.

Each page is photographed (console-*.png, into docs/screenshots/ by `make screenshots`). Also
checked here: the copy buttons work (the inline script is allowed by the page's CSP), the pages work with JavaScript
off (the secret is shown, the dead copy button is not), and they fit a phone's width.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from browser.conftest import PHONE, field_error, new_account, sign_in

REDIRECT_URI = "https://printer.example/oauth/callback"


def open_console(page: Any) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Developer console").click()
    page.wait_for_load_state()


def fill_app_form(page: Any, name: str, redirect_uris: str, permissions: tuple[str, ...]) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Redirect URIs, one a line").fill(redirect_uris)
    for permission in permissions:
        page.locator(f"#permission-{permission}").check()


def click(page: Any, button: str) -> None:
    page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_load_state()


def no_horizontal_scroll(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_developer_registers_an_app_and_manages_it(
    signed_in_page: tuple[Any, str, str], base_url: str, api: httpx.Client, shoot: Any
) -> None:
    from playwright.sync_api import expect  # here: the module is collected (and skipped) without playwright

    page, _, _ = signed_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)

    open_console(page)
    assert page.url == f"{base_url}/console"
    assert page.get_by_text("You have no apps yet").is_visible()
    shoot(page, "console-empty")

    # Register: a mistake in every field first, each message under its own field.
    page.get_by_role("link", name="Register an app").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Register an app"
    page.get_by_label("Redirect URIs, one a line").fill("http://printer.example/callback")
    click(page, "Register the app")
    assert field_error(page, "Name").inner_text() == "name must be 1 to 200 printable characters."
    assert field_error(page, "Redirect URIs, one a line").inner_text() == (
        "http redirect_uris are allowed only on a loopback host; use https."
    )
    assert page.locator("#permissions-error").inner_text() == "permissions must name at least one permission."
    assert page.get_by_label("Redirect URIs, one a line").input_value() == "http://printer.example/callback"
    shoot(page, "console-new-errors")

    fill_app_form(page, "Photo Printer", f"{REDIRECT_URI}\nhttp://127.0.0.1:9000/callback", ("read_profile", "write_data"))
    page.get_by_label("Public", exact=False).check()
    page.get_by_label("Confidential", exact=False).check()
    click(page, "Register the app")
    assert page.get_by_role("heading", level=1).inner_text() == "Photo Printer is registered"
    app_id = page.locator("#app-id").inner_text()
    app_key = page.locator("#app-key").inner_text()
    assert app_key.startswith("gak_")
    assert "it will not be shown again" in page.get_by_role("alert").inner_text()
    # The copy button works: the script runs under the page's CSP and writes the key to the clipboard.
    copy = page.locator('button[data-copy="app-key"]')
    assert copy.inner_text() == "Copy app key"
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == app_key
    shoot(page, "console-app-created")

    # The app's page: its facts, no keys yet, and never the app key again.
    page.get_by_role("link", name="Go to the app").click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/console/apps/{app_id}"
    assert app_key not in page.content()
    assert page.get_by_text("No keys yet").is_visible()
    shoot(page, "console-app")

    # A key pair: the secret shown once, copied, and listed afterwards without it.
    click(page, "Create a key pair")
    key_id = page.locator("#key-id").inner_text()
    key_secret = page.locator("#key-secret").inner_text()
    assert key_secret.startswith("gks_")
    assert "it will not be shown again" in page.get_by_role("alert").inner_text()
    page.get_by_role("button", name="Copy key secret").click()
    expect(page.locator('button[data-copy="key-secret"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key_secret
    shoot(page, "console-key")
    page.get_by_role("link", name="Back to the app").click()
    page.wait_for_load_state()
    row = page.get_by_role("row", name=key_id)
    assert row.get_by_role("cell").nth(2).inner_text() == "never"
    assert key_secret not in page.content()

    # Used once at the token endpoint: "last used" says when.
    response = api.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(app_id, key_secret))
    assert response.status_code == 200, response.text
    page.reload()
    last_used = page.get_by_role("row", name=key_id).get_by_role("cell").nth(2).inner_text()
    assert last_used.endswith("UTC")

    # Edit: the name changes; a bad redirect URI is refused next to its field.
    page.get_by_label("Name", exact=True).fill("Photo Printer Pro")
    click(page, "Save changes")
    assert page.get_by_role("status").inner_text() == "Saved."
    assert page.get_by_role("heading", level=1).inner_text() == "Photo Printer Pro"
    # OpenID Connect: a refused setting next to its field, then saved and shown as chosen.
    page.get_by_label("Post-logout redirect URIs, each on its own line").fill("https://printer.example/signed-out")
    page.get_by_label("ID token algorithm").select_option("ES256")
    page.get_by_label("Subject type").select_option("pairwise")
    page.get_by_label("Sector identifier URI").fill("http://printer.example/sector.json")
    page.get_by_label("Require a nonce", exact=False).check()
    click(page, "Save changes")
    assert field_error(page, "Sector identifier URI").inner_text().startswith("sector_identifier_uri must be an absolute https URL")
    assert page.get_by_label("ID token algorithm").input_value() == "ES256"  # what was chosen is kept
    page.get_by_label("Sector identifier URI").fill("https://printer.example/sector.json")
    click(page, "Save changes")
    assert page.get_by_role("status").inner_text() == "Saved."
    assert page.get_by_label("Post-logout redirect URIs, each on its own line").input_value() == "https://printer.example/signed-out"
    assert page.get_by_label("Subject type").input_value() == "pairwise"
    assert page.get_by_label("Require a nonce", exact=False).is_checked()
    shoot(page, "console-app-openid")
    page.get_by_label("Redirect URIs, one a line").fill("https://printer.example/cb#top")
    click(page, "Save changes")
    assert field_error(page, "Redirect URIs, one a line").inner_text() == "redirect_uris items may not have a fragment."
    shoot(page, "console-app-edit-error")
    page.goto(f"{base_url}/console/apps/{app_id}")

    # Try it: the URL to the consent page, with a verifier to copy.
    page.get_by_label("Redirect URI", exact=True).select_option(REDIRECT_URI)
    page.get_by_label("write_data", exact=True).uncheck()
    click(page, "Build the authorization URL")
    link = page.get_by_role("link", name="Open the consent page").get_attribute("href")
    query = dict(parse_qsl(urlsplit(link).query))
    assert query["client_id"] == app_id and query["redirect_uri"] == REDIRECT_URI and query["scope"] == "read_profile"
    assert page.locator("#state").inner_text() == query["state"]
    page.get_by_role("button", name="Copy code verifier").click()
    expect(page.locator('button[data-copy="code-verifier"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == page.locator("#code-verifier").inner_text()
    assert len(page.evaluate("navigator.clipboard.readText()")) == 43
    shoot(page, "console-try")
    page.get_by_role("link", name="Back to the app").click()
    page.wait_for_load_state()

    # Revoke the key: it stops working.
    page.get_by_role("button", name=f"Revoke key {key_id}").click()
    page.wait_for_load_state()
    assert page.get_by_role("row", name=key_id).get_by_role("cell").nth(3).inner_text().startswith("Revoked ")
    response = api.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(app_id, key_secret))
    assert response.status_code == 401

    # Disable: asks for the box to be ticked first.
    click(page, "Disable the app")
    assert page.locator("#confirm-error").inner_text() == "Tick the box to confirm: disabling cannot be undone."
    page.get_by_label("I understand").check()
    click(page, "Disable the app")
    assert "Disabled" in page.get_by_role("heading", level=1).inner_text()
    assert page.get_by_role("button", name="Create a key pair").count() == 0
    shoot(page, "console-app-disabled")

    open_console(page)
    row = page.get_by_role("row", name="Photo Printer Pro")
    assert row.get_by_role("cell").nth(1).inner_text() == "confidential"
    assert row.get_by_role("cell").nth(3).inner_text() == "Disabled"
    shoot(page, "console")
    assert blocked == []


def test_the_console_works_without_javascript_and_on_a_phone(
    new_page: Any, base_url: str, api: httpx.Client, shoot: Any
) -> None:
    _, email = new_account(api)
    page = new_page(viewport=PHONE, java_script_enabled=False)
    sign_in(page, base_url, email)
    page.goto(f"{base_url}/console/apps/new")
    fill_app_form(page, "Pocket App", REDIRECT_URI, ("read_profile",))
    page.get_by_label("Public", exact=False).check()
    click(page, "Register the app")
    app_id = page.locator("#app-id").inner_text()
    assert page.locator("#app-key").is_visible()
    assert not page.get_by_role("button", name="Copy app key").is_visible()  # nothing that cannot work
    assert no_horizontal_scroll(page)
    shoot(page, "console-app-created-phone")

    page.goto(f"{base_url}/console/apps/{app_id}")
    click(page, "Create a key pair")
    assert page.locator("#key-secret").inner_text().startswith("gks_")
    assert not page.get_by_role("button", name="Copy key secret").is_visible()
    assert no_horizontal_scroll(page)
    page.goto(f"{base_url}/console/apps/{app_id}")
    assert no_horizontal_scroll(page)
    shoot(page, "console-app-phone")
    click(page, "Build the authorization URL")  # a GET form: no script needed either
    assert page.get_by_role("link", name="Open the consent page").get_attribute("href").startswith(f"{base_url}/oauth2/authorize?")
    assert page.locator("#code-verifier").is_visible()
    assert no_horizontal_scroll(page)
    shoot(page, "console-try-phone")
    page.goto(f"{base_url}/console")
    row = page.get_by_role("row", name="Pocket App")
    assert row.get_by_role("cell").nth(1).inner_text() == "public"
    assert no_horizontal_scroll(page)
    shoot(page, "console-phone")


def test_another_users_app_is_not_found_in_the_browser(
    signed_in_page: tuple[Any, str, str], new_page: Any, base_url: str, api: httpx.Client
) -> None:
    page, _, _ = signed_in_page
    page.goto(f"{base_url}/console/apps/new")
    fill_app_form(page, "Private App", REDIRECT_URI, ("read_profile",))
    click(page, "Register the app")
    app_id = page.locator("#app-id").inner_text()

    _, email = new_account(api)
    stranger = new_page()
    sign_in(stranger, base_url, email)
    response = stranger.goto(f"{base_url}/console/apps/{app_id}")
    assert response.status == 404
    assert "Private App" not in stranger.content()


def test_signed_out_the_console_asks_to_sign_in_and_comes_back(page: Any, api: httpx.Client, base_url: str) -> None:
    _, email = new_account(api)
    page.goto(f"{base_url}/console")
    assert urlsplit(page.url).path == "/signin"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/console"
    assert page.get_by_role("heading", level=1).inner_text() == "Your apps"


def test_a_developer_puts_an_app_under_the_fapi2_profile(
    signed_in_page: tuple[Any, str, str], base_url: str, api: httpx.Client, shoot: Any
) -> None:
    import json

    page, _, _ = signed_in_page
    page.goto(f"{base_url}/console/apps/new")
    fill_app_form(page, "Bank App", REDIRECT_URI, ("read_profile",))
    assert page.get_by_label("Security profile").input_value() == "none"
    assert page.get_by_label("Rotate refresh tokens", exact=False).is_checked()
    # The profile alone: refused next to its field, what was chosen kept.
    page.get_by_label("Security profile").select_option("fapi2")
    click(page, "Register the app")
    assert field_error(page, "Security profile").inner_text().startswith(
        "security_profile fapi2 needs token_endpoint_auth_method private_key_jwt"
    )
    assert page.get_by_label("Security profile").input_value() == "fapi2"
    shoot(page, "console-new-fapi2-error")
    # With signed assertions and a key: registered.
    jwk = {"kty": "EC", "crv": "P-256", "kid": "k1",
           "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    page.locator("#permission-read_profile").check()
    page.get_by_label("Client authentication").select_option("private_key_jwt")
    page.locator("#jwks").fill(json.dumps({"keys": [jwk]}))
    click(page, "Register the app")
    assert page.get_by_role("heading", level=1).inner_text() == "Bank App is registered"
    app_id = page.locator("#app-id").inner_text()
    page.goto(f"{base_url}/console/apps/{app_id}")
    assert page.get_by_label("Security profile").input_value() == "fapi2"
    # Rotation unticked and saved: shown off.
    page.get_by_label("Rotate refresh tokens", exact=False).uncheck()
    click(page, "Save changes")
    assert page.get_by_role("status").inner_text() == "Saved."
    assert not page.get_by_label("Rotate refresh tokens", exact=False).is_checked()
    assert page.get_by_label("Security profile").input_value() == "fapi2"
    shoot(page, "console-app-fapi2")
