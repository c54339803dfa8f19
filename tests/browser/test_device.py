"""The device authorization grant's pages (RFC 8628 §3.3) in a real browser: the person types the
code a device shows (or opens its link), signs in, reads the approval page and approves or denies,
while the device polls the token endpoint; a wrong code shows the Code page again."""

from __future__ import annotations

from typing import Any

import httpx

from browser.conftest import PHONE, App, follow, new_user, register_app, sign_in
from browser.test_layout import check

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


def start(api: httpx.Client, app: App, scope: str) -> dict[str, Any]:
    """The device's request: its codes."""
    response = api.post("/oauth2/device_authorization", data={"scope": scope}, auth=(app.app_id, app.key_secret))
    assert response.status_code == 200, response.text
    return response.json()


def poll(api: httpx.Client, app: App, device_code: str) -> httpx.Response:
    return api.post("/oauth2/token", data={"grant_type": GRANT_TYPE, "device_code": device_code}, auth=(app.app_id, app.key_secret))


def test_a_person_approves_a_device_by_typing_its_code(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    app = register_app(api, name="Living Room TV", owner=new_user(api, "developers@livingroom.example.com"))
    user = new_user(api)
    device = start(api, app, "read_profile write_data")
    assert poll(api, app, device["device_code"]).json()["error"] == "authorization_pending"

    page.goto(device["verification_uri"])
    assert page.get_by_role("heading", level=1).inner_text() == "Connect a device"
    code = page.get_by_label("Code", exact=True)
    assert code.input_value() == ""
    # Typed as people type it: lower case, a space for the dash.
    code.fill(device["user_code"].lower().replace("-", " "))
    shoot(page, "device-code")
    follow(page, page.get_by_role("button", name="Continue"))

    # Nobody signed in: the sign-in page, then the approval page.
    assert page.url.startswith(f"{base_url}/signin?next=")
    sign_in(page, None, user.email)
    assert page.url.startswith(f"{base_url}/device/approve?")
    assert page.get_by_role("heading", level=1).inner_text() == "Living Room TV on a device wants to access your account"
    assert page.locator(".owner").inner_text() == f"This app is registered by {app.owner.email}."
    warning = page.get_by_role("note").inner_text()
    assert warning.startswith("Only continue if you started this on your device") and device["user_code"] in warning
    assert [" ".join(li.text_content().split()) for li in page.locator("ul.permissions li").all()] == [
        "Read your profile: your user id and email address. read_profile",
        "Create and change data on your behalf. write_data",
    ]
    shoot(page, "device-approve")
    follow(page, page.get_by_role("button", name="Approve"))
    assert page.get_by_role("heading", level=1).inner_text() == "You can return to your device"
    shoot(page, "device-approved")

    tokens = poll(api, app, device["device_code"])
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["scope"] == "read_profile write_data" and tokens.json()["refresh_token"]
    assert app.introspect(api, tokens.json()["access_token"])["active"] is True
    # The device is among the person's connected apps.
    page.goto(f"{base_url}/account/apps")
    assert "Living Room TV" in page.locator("main").inner_text()


def test_a_person_denies_a_device_opened_from_its_link(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    app = register_app(api, name="Smart Fridge")
    user = new_user(api)
    sign_in(page, base_url, user.email)
    device = start(api, app, "read_profile")

    # The device's link fills the code in; signed in already, Continue shows the approval page.
    page.goto(device["verification_uri_complete"])
    assert page.get_by_label("Code", exact=True).input_value() == device["user_code"]
    follow(page, page.get_by_role("button", name="Continue"))
    assert page.get_by_role("heading", level=1).inner_text() == "Smart Fridge on a device wants to access your account"
    follow(page, page.get_by_role("button", name="Deny"))
    assert page.get_by_role("heading", level=1).inner_text() == "Access denied"
    shoot(page, "device-denied")

    answer = poll(api, app, device["device_code"])
    assert answer.status_code == 400 and answer.json()["error"] == "access_denied"
    # Nothing was granted.
    grants = api.get("/v1/grants", headers={"Authorization": f"Bearer {user.token}"}).json()["data"]["grants"]
    assert grants == []


def test_a_wrong_code_shows_the_code_page_again(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    app = register_app(api, name="Printer")
    device = start(api, app, "read_profile")
    page.goto(f"{base_url}/device")
    wrong = "BCDF-GHJK" if device["user_code"] != "BCDF-GHJK" else "BCDF-GHJL"
    page.get_by_label("Code", exact=True).fill(wrong)
    follow(page, page.get_by_role("button", name="Continue"))
    assert page.url == f"{base_url}/device"
    assert page.get_by_role("heading", level=1).inner_text() == "Connect a device"
    code = page.get_by_label("Code", exact=True)
    assert code.input_value() == wrong and code.get_attribute("aria-invalid") == "true"
    assert page.locator(".field .error").inner_text().startswith("That code is not right, or it has expired.")
    shoot(page, "device-code-wrong")
    # Corrected, it goes on.
    code.fill(device["user_code"])
    follow(page, page.get_by_role("button", name="Continue"))
    assert page.url.startswith(f"{base_url}/signin?next=")
    assert poll(api, app, device["device_code"]).json()["error"] == "authorization_pending"


def test_the_device_pages_fit_a_phone_without_script(new_page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    page = new_page(viewport=PHONE, java_script_enabled=False)
    app = register_app(api, name="A Rather Long Application Name For A Small Screen")
    user = new_user(api)
    device = start(api, app, "read_profile write_data manage_notifications")
    page.goto(device["verification_uri_complete"])
    check(page, "the Code page")
    follow(page, page.get_by_role("button", name="Continue"))
    sign_in(page, None, user.email)
    check(page, "the approval page")
    shoot(page, "phone-device-approve")
    follow(page, page.get_by_role("button", name="Approve"))
    check(page, "the page after approving")
    assert poll(api, app, device["device_code"]).status_code == 200
