"""Operating accounts and apps: the `grantd users …` and `grantd apps …` commands run as real
processes, and the admin API (`/v1/admin`) of a real `grantd serve`, on one SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.neucron import PASSWORD, Flow, assert_error, new_flow, ok, sign_up, unique_email
from support.servers import ServerProcess, start_server
from test_cli import Cli, assert_failed


pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def operated(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str, database_url: str
) -> Iterator[tuple[ServerProcess, Cli]]:
    """One `grantd serve` and the command line, on the same database (SQLite, or PostgreSQL with
    GRANTD_TEST_DB=postgres)."""
    data_dir = tmp_path_factory.mktemp("admin")
    cli = Cli(data_dir, secret_key)
    cli.database_url = cli.env["GRANTD_DATABASE_URL"] = database_url
    server = start_server(database_url, secret_key, data_dir)
    try:
        yield server, cli
    finally:
        server.stop()


@pytest.fixture
def server(operated: tuple[ServerProcess, Cli]) -> ServerProcess:
    return operated[0]


@pytest.fixture
def cli(operated: tuple[ServerProcess, Cli]) -> Cli:
    return operated[1]


@pytest.fixture
async def api(server: ServerProcess) -> Any:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


async def log_in(api: httpx.AsyncClient, email: str) -> httpx.Response:
    return await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})


async def admin_token(api: httpx.AsyncClient, cli: Cli) -> tuple[str, str]:
    """(user_id, user token) of a new account the operator made an admin."""
    email = unique_email()
    user_id, _ = await sign_up(api, email)
    assert cli.json("users", "grant-admin", email)["is_admin"] is True
    return user_id, ok(await log_in(api, email))["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def events_about(cli: Cli, user_id: str) -> list[dict[str, Any]]:
    return [e for e in cli.json("audit", "--since", "1h")["events"] if e["user_id"] == user_id]


async def introspected(flow: Flow, token: str) -> dict[str, Any]:
    response = await flow.client.post("/oauth2/introspect", data={"token": token}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    return response.json()


async def assert_app_refused(flow: Flow, token: str) -> None:
    """The app is disabled: its key no longer authenticates it."""
    response = await flow.client.post("/oauth2/introspect", data={"token": token}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text


async def access_token(flow: Flow) -> str:
    return ok(await flow.redeem(await flow.code()))["access_token"]


# ---------------------------------------------------------------- the command line


async def test_cli_lock_unlock_sessions_and_delete(api: httpx.AsyncClient, cli: Cli) -> None:
    email = unique_email()
    user_id, token = await sign_up(api, email)
    shown = cli.json("users", "show", email)
    assert shown["user_id"] == user_id and shown["locked"] is False and shown["is_admin"] is False

    sessions = cli.json("users", "sessions", email)["sessions"]
    assert len(sessions) == 1

    locked = cli.json("users", "lock", email)
    assert locked["locked"] is True and locked["locked_at"]
    assert_error(await api.get("/v1/auth/user/info", headers=bearer(token)), 401, "invalid_token")
    refused = assert_error(await log_in(api, email), 401, "invalid_grant")
    assert "locked" in refused["message"]
    assert cli.json("users", "sessions", email)["sessions"] == []

    assert cli.json("users", "unlock", email)["locked"] is False
    assert_error(await api.get("/v1/auth/user/info", headers=bearer(token)), 401, "invalid_token")  # stays ended
    new_token = ok(await log_in(api, email))["access_token"]
    assert (await api.get("/v1/auth/user/info", headers=bearer(new_token))).status_code == 200

    assert cli.json("users", "revoke-sessions", email)["sessions_revoked"] == 1
    assert_error(await api.get("/v1/auth/user/info", headers=bearer(new_token)), 401, "invalid_token")

    sent = cli.json("users", "reset-password", email)
    assert sent == {"user_id": user_id, "password_reset_sent": True}

    assert_failed(cli.run("users", "delete", email), "Abort")  # asks, and no answer is no
    assert cli.json("users", "delete", email, "--yes")["deleted"] is True
    assert_failed(cli.run("users", "show", email), "not_found")
    assert_error(await log_in(api, email), 401, "invalid_grant")

    events = [(e["event"], e["actor"]) for e in events_about(cli, user_id)]
    for event in ("user_locked", "user_unlocked", "sessions_revoked", "password_reset_requested", "user_deleted"):
        assert (event, "operator") in events, events


async def test_cli_lists_page_and_filter(api: httpx.AsyncClient, cli: Cli) -> None:
    marker = unique_email().split("@")[0]
    emails = [f"{marker}-{i}@example.org" for i in range(5)]
    for email in emails:
        await sign_up(api, email)
    cli.json("users", "lock", emails[1])

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["users", "list", "--email", marker.upper(), "--limit", "2", *(["--cursor", cursor] if cursor else [])]
        page = cli.json(*args)
        seen += [(user["created_at"], user["user_id"], user["email"]) for user in page["users"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(email for _, _, email in seen) == sorted(emails)  # each once
    assert seen == sorted(seen, reverse=True)  # newest first (then by id: accounts of one second)

    locked = cli.json("users", "list", "--email", marker, "--locked")["users"]
    assert [user["email"] for user in locked] == [emails[1]]
    unlocked = cli.json("users", "list", "--email", marker, "--unlocked")["users"]
    assert emails[1] not in [user["email"] for user in unlocked] and len(unlocked) == 4
    assert cli.json("users", "list", "--email", marker, "--created-before", "2000-01-01T00:00:00Z")["users"] == []
    assert len(cli.json("users", "list", "--email", marker, "--created-after", "1h")["users"]) == 5

    plain = cli.run("users", "list", "--email", marker, "--limit", "1")
    assert plain.returncode == 0 and seen[0][2] in plain.stdout and "next page: --cursor" in plain.stdout
    assert_failed(cli.run("users", "list", "--cursor", "not-a-cursor"), "cursor")


async def test_cli_apps_show_disable_enable(api: httpx.AsyncClient, cli: Cli) -> None:
    flow = await new_flow(api, name="Operated App")
    token = await access_token(flow)
    shown = cli.json("apps", "show", flow.app_id)
    assert shown["name"] == "Operated App" and shown["disabled"] is False and shown["owner_email"].endswith("@example.com")

    listed = cli.json("apps", "list", "--name", "Operated", "--enabled", "--limit", "200")["apps"]
    assert flow.app_id in [app["app_id"] for app in listed]

    assert cli.run("apps", "disable", flow.app_id).returncode == 0
    await assert_app_refused(flow, token)
    assert flow.app_id in [app["app_id"] for app in cli.json("apps", "list", "--disabled", "--name", "Operated", "--limit", "200")["apps"]]

    result = cli.run("apps", "enable", flow.app_id)
    assert result.returncode == 0 and "disabled: False" in result.stdout
    assert cli.json("apps", "show", flow.app_id)["disabled"] is False
    assert (await introspected(flow, token))["active"] is False  # nothing from before comes back
    assert (await introspected(flow, await access_token(flow)))["active"] is True  # the app works again
    events = [(e["event"], e["actor"]) for e in cli.json("audit", "--since", "1h")["events"] if e["app_id"] == flow.app_id]
    assert ("app_disabled", "operator") in events and ("app_enabled", "operator") in events


def test_cli_unknown_account(cli: Cli) -> None:
    for command in ("show", "lock", "unlock", "sessions", "revoke-sessions", "reset-password", "grant-admin"):
        assert_failed(cli.run("users", command, unique_email()), "not_found")
    assert_failed(cli.run("apps", "show", "no-such-app"), "not_found")
    assert_failed(cli.run("apps", "enable", "no-such-app"), "not_found")


# ---------------------------------------------------------------- the admin API


async def test_non_admin_is_refused(api: httpx.AsyncClient, cli: Cli) -> None:
    user_id, token = await sign_up(api)
    routes = [
        ("GET", "/v1/admin/users"), ("GET", f"/v1/admin/users/{user_id}"), ("POST", f"/v1/admin/users/{user_id}/lock"),
        ("POST", f"/v1/admin/users/{user_id}/unlock"), ("DELETE", f"/v1/admin/users/{user_id}"),
        ("POST", f"/v1/admin/users/{user_id}/password-reset"), ("GET", f"/v1/admin/users/{user_id}/sessions"),
        ("DELETE", f"/v1/admin/users/{user_id}/sessions"), ("GET", "/v1/admin/apps"), ("GET", "/v1/admin/apps/x"),
        ("POST", "/v1/admin/apps/x/disable"), ("POST", "/v1/admin/apps/x/enable"),
    ]
    for method, path in routes:
        assert_error(await api.request(method, path, headers=bearer(token)), 403, "forbidden")
        assert_error(await api.request(method, path), 401, "invalid_token")
    assert ok(await api.get(f"/v1/admin/users/{user_id}", headers=bearer((await admin_token(api, cli))[1])))["locked"] is False

    # an admin no longer: refused at once
    email = unique_email()
    await sign_up(api, email)
    cli.json("users", "grant-admin", email)
    admin = ok(await log_in(api, email))["access_token"]
    assert (await api.get("/v1/admin/users", headers=bearer(admin))).status_code == 200
    assert cli.json("users", "revoke-admin", email)["is_admin"] is False
    assert_error(await api.get("/v1/admin/users", headers=bearer(admin)), 403, "forbidden")


async def test_admin_lock_ends_sessions_and_tokens(api: httpx.AsyncClient, cli: Cli) -> None:
    admin_id, admin = await admin_token(api, cli)
    flow = await new_flow(api)
    token = await access_token(flow)
    assert (await introspected(flow, token))["active"] is True

    sessions = ok(await api.get(f"/v1/admin/users/{flow.user_id}/sessions", headers=bearer(admin)))["sessions"]
    assert len(sessions) == 1

    locked = ok(await api.post(f"/v1/admin/users/{flow.user_id}/lock", headers=bearer(admin)))
    assert locked["locked"] is True
    assert (await introspected(flow, token))["active"] is False
    assert_error(await flow.authorize(), 401, "invalid_token")
    user = ok(await api.get(f"/v1/admin/users/{flow.user_id}", headers=bearer(admin)))
    assert_error(await log_in(api, user["email"]), 401, "invalid_grant")
    assert ok(await api.get(f"/v1/admin/users/{flow.user_id}/sessions", headers=bearer(admin)))["sessions"] == []

    assert ok(await api.post(f"/v1/admin/users/{flow.user_id}/unlock", headers=bearer(admin)))["locked"] is False
    assert (await introspected(flow, token))["active"] is False
    flow.user_token = ok(await log_in(api, user["email"]))["access_token"]
    assert (await introspected(flow, await access_token(flow)))["active"] is True

    ended = ok(await api.delete(f"/v1/admin/users/{flow.user_id}/sessions", headers=bearer(admin)))
    assert ended == {"user_id": flow.user_id, "sessions_revoked": 1}
    assert_error(await flow.authorize(), 401, "invalid_token")

    sent = ok(await api.post(f"/v1/admin/users/{flow.user_id}/password-reset", headers=bearer(admin)))
    assert sent["password_reset_sent"] is True

    events = [(e["event"], e["actor"]) for e in events_about(cli, flow.user_id)]
    for event in ("user_locked", "user_unlocked", "sessions_revoked", "password_reset_requested"):
        assert (event, admin_id) in events, events

    assert ok(await api.delete(f"/v1/admin/users/{flow.user_id}", headers=bearer(admin)))["deleted"] is True
    assert_error(await api.get(f"/v1/admin/users/{flow.user_id}", headers=bearer(admin)), 404, "not_found")
    assert ("user_deleted", admin_id) in [(e["event"], e["actor"]) for e in events_about(cli, flow.user_id)]
    assert_error(await api.delete(f"/v1/admin/users/{admin_id}", headers=bearer(admin)), 400, "invalid_request")


async def test_admin_lists_page_and_filter(api: httpx.AsyncClient, cli: Cli) -> None:
    _, admin = await admin_token(api, cli)
    marker = unique_email().split("@")[0]
    ids = [(await sign_up(api, f"{marker}-{i}@example.net"))[0] for i in range(5)]
    ok(await api.post(f"/v1/admin/users/{ids[3]}/lock", headers=bearer(admin)))

    seen: list[str] = []
    params: dict[str, Any] = {"email": marker, "limit": 2}
    while True:
        page = ok(await api.get("/v1/admin/users", params=params, headers=bearer(admin)))
        assert len(page["users"]) <= 2
        seen += [(user["created_at"], user["user_id"]) for user in page["users"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(user_id for _, user_id in seen) == sorted(ids)  # each once
    assert seen == sorted(seen, reverse=True)  # newest first (then by id: accounts of one second)

    locked = ok(await api.get("/v1/admin/users", params={"email": marker, "locked": "true"}, headers=bearer(admin)))
    assert [user["user_id"] for user in locked["users"]] == [ids[3]]
    later = {"email": marker, "created_after": "2999-01-01T00:00:00Z"}
    assert ok(await api.get("/v1/admin/users", params=later, headers=bearer(admin)))["users"] == []
    earlier = {"email": marker, "created_before": "2999-01-01T00:00:00+02:00"}
    assert len(ok(await api.get("/v1/admin/users", params=earlier, headers=bearer(admin)))["users"]) == 5

    for bad in ({"cursor": "%%%"}, {"cursor": "bm90OmE"}, {"limit": 0}, {"limit": 1000}, {"created_after": "yesterday"},
                {"locked": "maybe"}, {"email": "a\x00b"}):
        assert_error(await api.get("/v1/admin/users", params=bad, headers=bearer(admin)), 400, "invalid_request")
    assert_error(await api.get("/v1/admin/users/nobody", headers=bearer(admin)), 404, "not_found")


async def test_admin_apps(api: httpx.AsyncClient, cli: Cli) -> None:
    admin_id, admin = await admin_token(api, cli)
    name = f"Admin Listed {unique_email()[:17]}"
    flow = await new_flow(api, name=name)
    token = await access_token(flow)
    listed = ok(await api.get("/v1/admin/apps", params={"name": name}, headers=bearer(admin)))
    assert [app["app_id"] for app in listed["apps"]] == [flow.app_id]
    assert ok(await api.get("/v1/admin/apps", params={"name": name, "disabled": "true"}, headers=bearer(admin)))["apps"] == []

    disabled = ok(await api.post(f"/v1/admin/apps/{flow.app_id}/disable", headers=bearer(admin)))
    assert disabled["disabled"] is True and disabled["app_id"] == flow.app_id
    await assert_app_refused(flow, token)
    only_disabled = ok(await api.get("/v1/admin/apps", params={"name": name, "disabled": "true"}, headers=bearer(admin)))
    assert [app["app_id"] for app in only_disabled["apps"]] == [flow.app_id]

    enabled = ok(await api.post(f"/v1/admin/apps/{flow.app_id}/enable", headers=bearer(admin)))
    assert enabled["disabled"] is False
    assert (await introspected(flow, token))["active"] is False
    assert ok(await api.get(f"/v1/admin/apps/{flow.app_id}", headers=bearer(admin)))["owner_id"]
    assert_error(await api.get("/v1/admin/apps", params={"owner": unique_email()}, headers=bearer(admin)), 404, "not_found")
    assert_error(await api.get("/v1/admin/apps/nope", headers=bearer(admin)), 404, "not_found")

    events = [(e["event"], e["actor"]) for e in cli.json("audit", "--since", "1h")["events"] if e["app_id"] == flow.app_id]
    assert ("app_disabled", admin_id) in events and ("app_enabled", admin_id) in events


def test_json_output_has_no_secret(cli: Cli) -> None:
    email = unique_email()
    cli.user(email)
    shown = cli.run("users", "show", email, "--json")
    assert PASSWORD not in shown.stdout and "password_hash" not in json.loads(shown.stdout)
