"""The operator's command line, run as real processes, and what it creates used over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.neucron import PASSWORD, Flow, ok, unique_email
from support.servers import ServerProcess

REDIRECT = "https://cli.example.com/callback"
REDIRECT_2 = "http://127.0.0.1:3000/cb"


class Cli:
    """`python -m grantd ...` against one fresh SQLite database."""

    def __init__(self, tmp_path: Path, secret_key: str) -> None:
        self.database_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("GRANTD_")}
        self.env = {
            **inherited,
            "GRANTD_DATABASE_URL": self.database_url,
            "GRANTD_SECRET_KEY": secret_key,
            "GRANTD_DATA_DIR": str(tmp_path),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "grantd", *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    def json(self, *args: str) -> dict[str, Any]:
        result = self.run(*args, "--json")
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def user(self, email: str) -> dict[str, Any]:
        return self.json("users", "create", "--email", email, "--password", PASSWORD)

    def app(self, owner: str, permissions: str = "read_profile,write_data") -> dict[str, Any]:
        return self.json(
            "apps", "create", "--owner", owner, "--name", "CLI App",
            "--redirect-uri", REDIRECT, "--redirect-uri", REDIRECT_2,
            "--permissions", permissions,
        )  # fmt: skip


@pytest.fixture
def cli(tmp_path: Path, secret_key: str) -> Cli:
    cli = Cli(tmp_path, secret_key)
    result = cli.run("migrate")
    assert result.returncode == 0, result.stderr
    return cli


def assert_failed(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert result.stderr.strip(), "no message on stderr"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_migrate_is_repeatable(tmp_path: Path, secret_key: str) -> None:
    cli = Cli(tmp_path, secret_key)
    for _ in range(2):
        result = cli.run("migrate")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert (tmp_path / "cli.db").is_file()
    assert secret_key not in result.stdout + result.stderr


def test_users_create(cli: Cli) -> None:
    email = unique_email()
    data = cli.json("users", "create", "--email", email.upper(), "--password", PASSWORD)
    assert set(data) == {"user_id", "email"}
    assert data["email"] == email
    assert data["user_id"]
    assert PASSWORD not in json.dumps(data)


def test_apps_create(cli: Cli) -> None:
    owner = unique_email()
    cli.user(owner)
    data = cli.app(owner)
    assert {"app_id", "app_key", "name", "redirect_uris", "permissions"} <= set(data)
    assert data["name"] == "CLI App"
    assert data["redirect_uris"] == [REDIRECT, REDIRECT_2]
    assert data["permissions"] == "read_profile,write_data"


def test_keys_create(cli: Cli) -> None:
    owner = unique_email()
    cli.user(owner)
    app = cli.app(owner)
    first = cli.json("keys", "create", "--app", app["app_id"])
    second = cli.json("keys", "create", "--app", app["app_id"])
    for key in (first, second):
        assert {"key_id", "key_secret"} <= set(key)
    assert first["key_id"] != second["key_id"] and first["key_secret"] != second["key_secret"]


def test_plain_output_without_json(cli: Cli) -> None:
    email = unique_email()
    result = cli.run("users", "create", "--email", email, "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert email in result.stdout and "user_id" in result.stdout


def test_errors_exit_non_zero_without_traceback(cli: Cli) -> None:
    owner = unique_email()
    cli.user(owner)
    app = cli.app(owner)

    unknown_owner = unique_email()
    result = cli.run(
        "apps", "create", "--owner", unknown_owner, "--name", "X", "--redirect-uri", REDIRECT, "--permissions", "read_profile", "--json"
    )
    assert_failed(result, unknown_owner)
    assert result.stdout.strip() == ""

    assert_failed(cli.run("keys", "create", "--app", "no-such-app", "--json"), "not_found")

    result = cli.run(
        "apps", "create", "--owner", owner, "--name", "X", "--redirect-uri", REDIRECT, "--permissions", "read_profile,fly_rockets"
    )
    assert_failed(result, "fly_rockets")

    result = cli.run(
        "apps", "create", "--owner", owner, "--name", "X", "--redirect-uri", "http://example.com/cb", "--permissions", "read_profile"
    )
    assert_failed(result, "redirect")

    assert_failed(cli.run("users", "create", "--email", owner, "--password", PASSWORD), "conflict")
    assert_failed(cli.run("users", "create", "--email", "not-an-email", "--password", PASSWORD), "email")
    assert_failed(cli.run("users", "create", "--email", unique_email(), "--password", "short"), "password")

    # A near miss of a real app id is unknown, too.
    assert_failed(cli.run("keys", "create", "--app", app["app_id"] + "x"), "not_found")


def test_cli_created_user_app_and_key_work_over_http(
    cli: Cli, server_factory: Callable[..., ServerProcess]
) -> None:
    developer, end_user = unique_email(), unique_email()
    cli.user(developer)
    user = cli.user(end_user)
    app = cli.app(developer)
    key = cli.json("keys", "create", "--app", app["app_id"])

    server = server_factory(cli.database_url)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        # The CLI's users can log in.
        login = ok(client.post("/v1/auth/login", json={"email": end_user, "password": PASSWORD}))
        assert login["user_id"] == user["user_id"]
        dev = ok(client.post("/v1/auth/login", json={"email": developer.upper(), "password": PASSWORD}))

        # The developer sees the CLI's app as their own; the API and the CLI print the same fields.
        listed = ok(client.get("/v1/apps", headers={"Authorization": dev["access_token"]}))["apps"]
        assert [a["app_id"] for a in listed] == [app["app_id"]]
        api_app = ok(
            client.post(
                "/v1/apps",
                json={"name": "API App", "redirect_uris": [REDIRECT], "permissions": "read_profile"},
                headers={"Authorization": dev["access_token"]},
            )
        )
        assert set(api_app) == set(app)
        api_key = ok(client.post(f"/v1/apps/{api_app['app_id']}/keys", headers={"Authorization": dev["access_token"]}))
        assert set(api_key) == set(key)

        # The CLI's app and key complete the flow.
        flow = Flow(
            client,  # type: ignore[arg-type]
            user_token=login["access_token"],
            user_id=login["user_id"],
            app_id=app["app_id"],
            app_key=app["app_key"],
            key_id=key["key_id"],
            key_secret=key["key_secret"],
            redirect_uri=REDIRECT_2,
        )
        authorized = ok(
            client.post(
                "/oauth/authorize",
                json={"token": flow.params(permissions="read_profile,write_data")},
                headers={"Authorization": f"Bearer {flow.user_token}"},
            )
        )
        assert authorized["user_id"] == user["user_id"]
        body = {"auth_code": authorized["code"], "key_id": flow.key_id, "key_secret": flow.key_secret}
        token = ok(client.post("/v1/oauth/token", json={"token": body}))

        import jwt

        header = jwt.get_unverified_header(token["access_token"])
        jwks = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())
        signing_key = next(k for k in jwks.keys if k.key_id == header["kid"])
        claims = jwt.decode(
            token["access_token"], signing_key.key, algorithms=["ES256"], audience=server.base_url, issuer=server.base_url
        )
        assert claims["sub"] == user["user_id"]
        assert claims["client_id"] == app["app_id"]
        assert claims["permissions"] == ["read_profile", "write_data"]

    # Secrets the CLI printed are not in the server's log.
    log = server.log()
    for secret in (app["app_key"], key["key_secret"], PASSWORD):
        assert secret not in log


def catalog(server: ServerProcess) -> dict[str, str]:
    response = httpx.get(f"{server.base_url}/v1/oauth/permissions", timeout=10)
    return {p["name"]: p["description"] for p in ok(response)["permissions"]}


def can_register(server: ServerProcess, permissions: str) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        signup = ok(client.post("/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD}))
        return client.post(
            "/v1/apps",
            json={"name": "Invoices", "redirect_uris": [REDIRECT], "permissions": permissions},
            headers={"Authorization": signup["access_token"]},
        )


def test_permission_catalog_from_environment(tmp_path: Path, server_factory: Callable[..., ServerProcess]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    server = server_factory(url, env={"GRANTD_PERMISSIONS": '{"read_invoices":"Read your invoices"}'})
    assert catalog(server) == {"read_invoices": "Read your invoices"}
    assert ok(can_register(server, "read_invoices"))["permissions"] == "read_invoices"
    response = can_register(server, "read_profile")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_permission_catalog_from_config_file(tmp_path: Path, server_factory: Callable[..., ServerProcess]) -> None:
    config = tmp_path / "grantd.toml"
    config.write_text(
        '[permissions]\n'
        'read_invoices = "Read your invoices"\n'
        '"pay:invoices" = "Pay invoices on your behalf"\n'
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'toml.db'}"
    server = server_factory(url, env={"GRANTD_CONFIG_FILE": str(config)})
    assert catalog(server) == {"read_invoices": "Read your invoices", "pay:invoices": "Pay invoices on your behalf"}
    assert ok(can_register(server, "read_invoices,pay:invoices"))["permissions"] == "read_invoices,pay:invoices"
    response = can_register(server, "write_data")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_environment_overrides_config_file(tmp_path: Path, server_factory: Callable[..., ServerProcess]) -> None:
    config = tmp_path / "grantd.toml"
    config.write_text('[permissions]\nread_invoices = "Read your invoices"\n')
    url = f"sqlite+aiosqlite:///{tmp_path / 'both.db'}"
    server = server_factory(
        url, env={"GRANTD_CONFIG_FILE": str(config), "GRANTD_PERMISSIONS": '{"send_mail":"Send mail as you"}'}
    )
    assert catalog(server) == {"send_mail": "Send mail as you"}


def test_forwarded_allow_ips_names_addresses_or_networks(tmp_path: Path, secret_key: str) -> None:
    """A proxy entry uvicorn could not read as an address would trust nobody without a word: refused."""
    cli = Cli(tmp_path, secret_key)
    cli.env["GRANTD_FORWARDED_ALLOW_IPS"] = " 10.0.0.5, 10.1.0.0/16 ,::1"
    assert cli.json("config", "show")["forwarded_allow_ips"] == "10.0.0.5,10.1.0.0/16,::1"
    for wrong in ("10.1.0.1/16", "lb.internal", "*,10.0.0.5"):
        cli.env["GRANTD_FORWARDED_ALLOW_IPS"] = wrong
        assert_failed(cli.run("config", "show"), "forwarded_allow_ips", repr(wrong.split(",")[0]))
