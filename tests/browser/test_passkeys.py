"""Passkeys in a real browser: Chromium's virtual authenticator (the DevTools WebAuthn domain)
stands in for a phone or a security key that keeps discoverable credentials and verifies its
user. A passkey is added on the account page, signs its owner in with no password typed, and
once removed signs no one in.

WebAuthn refuses an IP address as the Relying Party ID, so this module's grantd is served and
named ``http://localhost:<port>`` (a secure context to Chromium, as https is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from browser.conftest import follow, new_user, sign_in
from support.servers import ServerProcess, server_on_new_sqlite


@pytest.fixture(scope="module")
def localhost(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    with server_on_new_sqlite(tmp_path_factory, secret_key, "passkeys-server", host="localhost") as server:
        yield server


def authenticator(page: Any) -> tuple[Any, str]:
    """A virtual platform authenticator for ``page``'s browser: it keeps discoverable credentials
    and verifies its user at once (the fingerprint is always right)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def presence(cdp: Any, authenticator_id: str, enabled: bool) -> None:
    """Whether the virtual authenticator answers as if a person touched it, without waiting."""
    cdp.send("WebAuthn.setAutomaticPresenceSimulation", {"authenticatorId": authenticator_id, "enabled": enabled})


def sign_out(page: Any) -> None:
    follow(page, page.get_by_role("button", name="Sign out"))


def test_a_passkey_signs_in_alone_until_removed(
    new_page: Callable[..., Any], localhost: ServerProcess, shoot: Any
) -> None:
    base_url = localhost.base_url
    with httpx.Client(base_url=base_url, timeout=30) as api:
        user = new_user(api)
    page = new_page()
    cdp, authenticator_id = authenticator(page)

    # Added on the account page, under the name given.
    sign_in(page, base_url, user.email)
    page.goto(f"{base_url}/account")
    assert page.locator(".no-passkeys").inner_text() == "You have no passkey yet."
    page.get_by_label("Name of the new passkey").fill("Work laptop")
    follow(page, page.get_by_role("button", name="Add a passkey"))
    assert page.url == f"{base_url}/account?passkey=added#passkeys"
    assert page.locator(".notice").inner_text() == "Your passkey was added. You can sign in with it now."
    assert page.locator(".passkey-name").all_inner_texts() == ["Work laptop"]
    assert "last used never" in page.locator(".passkey").inner_text()
    shoot(page, "passkey-registered")
    kept = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})["credentials"]
    assert len(kept) == 1 and kept[0]["isResidentCredential"] is True  # a discoverable credential
    assert kept[0]["rpId"] == "localhost"

    # Signed out, the sign-in page offers the passkey in the email field (conditional UI): chosen
    # there, it signs in alone, no email, no password typed. (The virtual authenticator chooses at
    # once while it simulates a person's presence; without it, the page waits for the choice.)
    sign_out(page)
    presence(cdp, authenticator_id, False)
    page.goto(f"{base_url}/signin")
    assert page.get_by_label("Email").get_attribute("autocomplete") == "username webauthn"
    assert page.get_by_role("button", name="Use a passkey").is_visible()
    shoot(page, "signin-passkey")
    presence(cdp, authenticator_id, True)
    with page.expect_navigation(url=f"{base_url}/"):
        page.reload()
    assert page.get_by_label("Password", exact=True).count() == 0
    page.goto(f"{base_url}/account")
    assert page.url == f"{base_url}/account"
    assert page.locator(".facts .email").inner_text() == user.email
    assert "last used never" not in page.locator(".passkey").inner_text()

    # Renamed, then removed with the password.
    page.get_by_label("New name for Work laptop").fill("Old laptop")
    follow(page, page.get_by_role("button", name="Rename"))
    assert page.locator(".passkey-name").all_inner_texts() == ["Old laptop"]
    page.get_by_label("Your password, to remove Old laptop").fill("not my password")
    follow(page, page.get_by_role("button", name="Remove Old laptop"))
    assert page.locator(".message").first.inner_text() == "The current password is wrong."
    assert page.locator(".passkey-name").all_inner_texts() == ["Old laptop"]
    page.get_by_label("Your password, to remove Old laptop").fill(user.password)
    follow(page, page.get_by_role("button", name="Remove Old laptop"))
    assert page.locator(".notice").inner_text() == "Your passkey was removed: it no longer signs you in."
    assert page.locator(".passkey").count() == 0

    # The authenticator still offers it; grantd no longer takes it, from the email field's offer
    # or from the button.
    sign_out(page)
    with page.expect_response(f"{base_url}/passkeys/signin") as offered:
        page.goto(f"{base_url}/signin")
    assert offered.value.status == 401
    status = page.locator("#passkey-status")
    status.wait_for(state="visible")
    assert status.inner_text() == "This passkey cannot be used to sign in here."
    with page.expect_response(f"{base_url}/passkeys/signin") as asked:
        page.get_by_role("button", name="Use a passkey").click()
    assert asked.value.status == 401
    status.wait_for(state="visible")
    assert status.inner_text() == "This passkey cannot be used to sign in here."
    assert page.url == f"{base_url}/signin"
    page.goto(f"{base_url}/account")
    assert page.url.startswith(f"{base_url}/signin")  # no session was made
