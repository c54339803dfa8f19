"""The admin pages in a real browser: an admin filters the account list, locks an account, and
disables and enables an app; an account that is not an admin is refused. The account list is
photographed (admin-users.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from browser.conftest import follow, new_account, new_user, register_app, sign_in
from support.neucron import PASSWORD, unique_email
from support.servers import ServerProcess
from test_cli import Cli


def operator(live_server: ServerProcess, secret_key: str, tmp_path: Path) -> Cli:
    """The command line on the live server's database (its file sits beside its log)."""
    cli = Cli(tmp_path, secret_key)
    cli.database_url = f"sqlite+aiosqlite:///{live_server.log_path.parent / 'grantd.db'}"
    cli.env["GRANTD_DATABASE_URL"] = cli.database_url
    return cli


def test_an_admin_finds_and_locks_an_account(
    page: Any, api: httpx.Client, base_url: str, live_server: ServerProcess, secret_key: str,
    tmp_path: Path, shoot: Any,
) -> None:
    from playwright.sync_api import expect

    _, admin_email = new_account(api)
    assert operator(live_server, secret_key, tmp_path).json("users", "grant-admin", admin_email)["is_admin"] is True
    marker = unique_email().split("@")[0]
    targets = [new_account(api, f"{marker}-{name}@example.com")[1] for name in ("ada", "bob", "cy")]

    sign_in(page, base_url, admin_email)
    page.goto(f"{base_url}/admin")
    assert page.get_by_role("heading", level=1).inner_text() == "Accounts"
    page.get_by_label("Email contains").fill(marker)
    follow(page, page.get_by_role("button", name="Filter"))
    rows = page.locator("table.users tbody tr")
    expect(rows).to_have_count(3)
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == sorted(targets)
    shoot(page, "admin-users")

    follow(page, page.get_by_role("link", name=targets[1]))
    assert page.get_by_role("heading", level=1).inner_text() == targets[1]
    follow(page, page.get_by_role("button", name="Lock"))
    expect(page.locator("#status")).to_contain_text("Locked")
    refused = api.post("/v1/auth/login", json={"email": targets[1], "password": PASSWORD})
    assert refused.status_code == 401 and "locked" in refused.json()["message"]

    page.goto(f"{base_url}/admin?" + f"email={marker}&locked=yes")
    expect(rows).to_have_count(1)
    assert rows.locator("td:first-child").inner_text() == targets[1]

    follow(page, page.get_by_role("link", name=targets[1]))
    follow(page, page.get_by_role("button", name="Unlock"))
    expect(page.locator("#status")).to_have_text("Active")
    assert api.post("/v1/auth/login", json={"email": targets[1], "password": PASSWORD}).status_code == 200


def test_an_admin_disables_and_enables_an_app(
    page: Any, api: httpx.Client, base_url: str, live_server: ServerProcess, secret_key: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    _, admin_email = new_account(api)
    operator(live_server, secret_key, tmp_path).json("users", "grant-admin", admin_email)
    developer = new_user(api)
    app = register_app(api, owner=developer)

    sign_in(page, base_url, admin_email)
    page.goto(f"{base_url}/admin/apps?owner={developer.email}")
    row = page.locator("table.apps tbody tr")
    expect(row).to_have_count(1)
    follow(page, row.get_by_role("button", name="Disable"))
    page.goto(f"{base_url}/admin/apps?owner={developer.email}&disabled=yes")
    row = page.locator("table.apps tbody tr")
    expect(row).to_contain_text("Disabled")
    assert api.get(f"/v1/apps/{app.app_id}", headers={"Authorization": f"Bearer {developer.token}"}).json()["data"]["disabled"]
    follow(page, row.get_by_role("button", name="Enable"))
    assert not api.get(f"/v1/apps/{app.app_id}", headers={"Authorization": f"Bearer {developer.token}"}).json()["data"]["disabled"]


def test_an_account_that_is_not_an_admin_is_refused(
    page: Any, api: httpx.Client, base_url: str
) -> None:
    user_id, email = new_account(api)
    sign_in(page, base_url, email)
    for path in ("/admin", f"/admin/users/{user_id}", "/admin/apps"):
        response = page.goto(f"{base_url}{path}")
        assert response.status == 403, path
        assert page.get_by_role("heading", level=1).inner_text() == "Admins only"
    # a forged POST, with the page's own CSRF token, changes nothing either
    page.goto(f"{base_url}/account")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(f"{base_url}/admin/users/{user_id}/lock", form={"csrf_token": token})
    assert answer.status == 403
    assert api.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200


def test_signed_out_goes_to_sign_in(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/admin")
    assert page.url.startswith(f"{base_url}/signin")
