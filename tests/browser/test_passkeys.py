"""Passkeys in a real browser: Chromium's virtual authenticator (the DevTools WebAuthn domain)
stands in for a phone or a security key that keeps discoverable credentials and verifies its
user. A passkey is added on the account page, signs its owner in with no password typed, and
once removed signs no one in; it leaves the password sign-in as it was (the password alone still
signs in). Where the operator requires a second factor, a passkey is the second step after a
password (an OpenID Connect sign-in whose ID token says so); another account's passkey is refused
there.

WebAuthn refuses an IP address as the Relying Party ID, so this module's grantd is served and
named ``http://localhost:<port>`` (a secure context to Chromium, as https is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest

from browser.conftest import CLIENT_ORIGIN, Traffic, callback_params, follow, new_user, register_app, sign_in
from browser.test_layout import check
from support.servers import ServerProcess, server_on_new_sqlite


@pytest.fixture(scope="module")
def localhost(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    with server_on_new_sqlite(tmp_path_factory, secret_key, "passkeys-server", host="localhost") as server:
        yield server


@pytest.fixture(scope="module")
def localhost_required(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    """As ``localhost``, where the operator requires a second factor of every account."""
    env = {"GRANTD_REQUIRE_SECOND_FACTOR": "all"}
    with server_on_new_sqlite(tmp_path_factory, secret_key, "passkeys-required", host="localhost", env=env) as server:
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


def add_passkey(page: Any, base_url: str, name: str) -> None:
    page.goto(f"{base_url}/account")
    page.get_by_label("Name of the new passkey").fill(name)
    follow(page, page.get_by_role("button", name="Add a passkey"))
    assert page.url == f"{base_url}/account?passkey=added#passkeys"


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

    # A way to sign in without the password, not a second step: with no authenticator app and
    # no second factor required, the password alone still signs in.
    assert page.locator(".second-factor-status").inner_text().startswith("Off")
    sign_out(page)
    presence(cdp, authenticator_id, False)
    sign_in(page, base_url, user.email)
    assert not page.url.startswith(f"{base_url}/second-factor")
    assert any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    page.goto(f"{base_url}/account")
    assert page.url == f"{base_url}/account"

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


def test_after_a_password_a_passkey_is_the_second_step(
    new_page: Callable[..., Any], localhost_required: ServerProcess, shoot: Any
) -> None:
    base_url = localhost_required.base_url
    with httpx.Client(base_url=base_url, timeout=30) as api:
        user, someone_else = new_user(api), new_user(api)
        app = register_app(api, name="Photo Printer")
    page = new_page()
    Traffic(page.context)
    cdp, authenticator_id = authenticator(page)
    sign_in(page, base_url, user.email)  # the password alone: sent to set up a second factor
    assert page.url.startswith(f"{base_url}/account/second-factor")
    add_passkey(page, base_url, "Phone")
    assert "one of your passkeys" in page.locator(".second-factor-status").inner_text()
    sign_out(page)

    # An app's OpenID Connect request; the person types the password (the email field's passkey
    # offer waits, no presence simulated), then the second step asks for the passkey.
    presence(cdp, authenticator_id, False)
    page.goto(app.authorize_url(base_url, scope="openid", nonce="n-2fa"))
    sign_in(page, None, user.email)
    assert page.url.startswith(f"{base_url}/second-factor?next=")
    assert not any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    assert page.get_by_role("heading", level=1).inner_text() == "Two-step sign-in"
    assert page.locator(".lead").inner_text() == "Use one of your passkeys to finish signing in."
    use = page.get_by_role("button", name="Use a passkey")
    assert use.is_visible() and page.get_by_label("Code", exact=True).count() == 0
    check(page, "the second-factor page with a passkey")
    shoot(page, "passkey-second-factor")
    presence(cdp, authenticator_id, True)
    follow(page, use)
    assert page.get_by_role("heading", level=1).inner_text() == "Photo Printer wants to access your account"
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    with httpx.Client(base_url=base_url, timeout=30) as api:
        tokens = app.redeem(api, callback_params(page.url)["code"]).json()
        jwks = jwt.PyJWKSet.from_dict(api.get("/.well-known/jwks.json").json())
    id_token = tokens["id_token"]
    claims = jwt.decode(
        id_token, jwks[jwt.get_unverified_header(id_token)["kid"]], algorithms=["ES256", "RS256"],
        audience=app.app_id, issuer=base_url,
    )
    assert claims["sub"] == user.user_id and claims["nonce"] == "n-2fa"
    assert claims["amr"] == ["pwd", "hwk", "user", "mfa"]

    # Signed in again later, with the app allowed already: the passkey's answer leads straight
    # back to the app (the step's form may end at the app's site: Chromium applies form-action
    # to the redirects after a form's post). Playwright does not route a redirect to the app's
    # site, which does not exist: the browser's request for it is the proof.
    page.goto(f"{base_url}/account")
    sign_out(page)
    presence(cdp, authenticator_id, False)
    page.goto(app.authorize_url(base_url, scope="openid", nonce="n-again"))
    sign_in(page, None, user.email)
    presence(cdp, authenticator_id, True)
    with page.expect_request(lambda request: request.url.startswith(f"{CLIENT_ORIGIN}/callback?")) as sent_back:
        page.get_by_role("button", name="Use a passkey").click()
    assert callback_params(sent_back.value.url)["state"] == "st-1"

    # Someone who knows the password but holds another account's passkey: the page names only
    # this account's passkeys; made to ask for any (the options edited), the browser answers with
    # the other account's, and grantd refuses it.
    intruder = new_page()
    cdp, authenticator_id = authenticator(intruder)
    sign_in(intruder, base_url, someone_else.email)
    add_passkey(intruder, base_url, "Their laptop")
    sign_out(intruder)
    presence(cdp, authenticator_id, False)
    sign_in(intruder, base_url, user.email)
    assert intruder.url.startswith(f"{base_url}/second-factor")
    intruder.locator("#passkey-second-step").evaluate(
        "form => { const o = JSON.parse(form.dataset.options); o.allowCredentials = []; form.dataset.options = JSON.stringify(o); }"
    )
    presence(cdp, authenticator_id, True)
    with intruder.expect_response(f"{base_url}/second-factor") as answered:
        follow(intruder, intruder.get_by_role("button", name="Use a passkey"))
    assert answered.value.status == 401
    assert intruder.get_by_role("alert").first.inner_text() == "This passkey cannot be used to sign in here."
    assert not any(c["name"] == "grantd_session" for c in intruder.context.cookies(base_url))
    intruder.goto(f"{base_url}/account")
    assert intruder.url.startswith(f"{base_url}/signin")  # no session was made
