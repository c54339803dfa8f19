"""Shared fixtures: a migrated database (SQLite, or PostgreSQL with GRANTD_TEST_DB=postgres),
the app in-process over httpx, real server processes, and helpers for the Neucron flow.

PostgreSQL is expected on 127.0.0.1:5432 (user postgres, trust auth, database test);
where it does not answer, the tests that need it are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.register_assert_rewrite("secret_harvest")
import secret_harvest  # noqa: E402
from grantd.config import Settings
from grantd.server import create_app
from grantd.store.db import Database
from grantd.store.migrate import upgrade
from support.servers import UNTHROTTLED, ServerProcess, server_on_new_sqlite, start_server

# The whole-suite secret scan: harvests every secret the suite creates or sends (see its docstring);
# tests/test_secret_scan.py searches every database and log for them after every other test.
pytest_plugins = ["secret_harvest"]

PG_ADMIN_DSN = os.environ.get("GRANTD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "correct horse battery"


# ---------------------------------------------------------------- databases


async def _pg_admin():  # type: ignore[no-untyped-def]
    import asyncpg

    return await asyncpg.connect(PG_ADMIN_DSN, timeout=3)


def _postgres_available() -> str | None:
    """None when PostgreSQL answers; the reason it does not otherwise."""

    async def probe() -> None:
        conn = await _pg_admin()
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # noqa: BLE001 - any failure means: not available here
        return f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc.__class__.__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated; dropped afterwards."""
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"grantd_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await _pg_admin()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    secret_harvest.HARVEST.postgres_urls.append(url)  # scanned by the last test, before the drop below
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "grantd.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(_migrate(url))
    return url


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    """The database of the in-process app: SQLite, or PostgreSQL when GRANTD_TEST_DB=postgres."""
    if os.environ.get("GRANTD_TEST_DB", "sqlite") == "postgres":
        return request.getfixturevalue("postgres_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture(params=["sqlite", "postgres"])
def any_database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both databases (PostgreSQL skipped where absent)."""
    return request.getfixturevalue(f"{request.param}_url")


# ---------------------------------------------------------------- the app in-process


@pytest.fixture(scope="session")
def secret_key() -> str:
    key = secrets.token_urlsafe(32)
    secret_harvest.HARVEST.keep("master_secret", key, "fixture: the session's GRANTD_SECRET_KEY")
    return key


@pytest.fixture(scope="session")
def settings(database_url: str, secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=secret_key,
        data_dir=tmp_path_factory.mktemp("data"),
        issuer="http://testserver",
        **UNTHROTTLED,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


# ---------------------------------------------------------------- the Neucron flow


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Flow:
    """One developer with one app and key, and one end user, ready to authorize."""

    client: httpx.AsyncClient
    user_token: str = ""
    user_id: str = ""
    dev_token: str = ""
    app_id: str = ""
    app_key: str = ""
    key_id: str = ""
    key_secret: str = ""
    redirect_uri: str = "https://app.example.com/callback"
    app_permissions: str = "read_profile,write_data"
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self, **overrides: Any) -> dict[str, Any]:
        params = {
            "app_id": self.app_id,
            "app_key": self.app_key,
            "state": "state-123",
            "redirect_uri": self.redirect_uri,
            "permissions": "read_profile",
        }
        params.update(overrides)
        return params

    async def authorize(self, **overrides: Any) -> httpx.Response:
        return await self.client.post(
            "/oauth/authorize", json={"token": self.params(**overrides)}, headers={"Authorization": f"Bearer {self.user_token}"}
        )

    async def grant(self, **overrides: Any) -> httpx.Response:
        return await self.client.patch(
            "/oauth/permissions/grant",
            json={"permissions": self.params(**overrides)},
            headers={"Authorization": f"Bearer {self.user_token}"},
        )

    async def code(self, **overrides: Any) -> str:
        response = await self.authorize(**overrides)
        assert response.status_code == 200, response.text
        return response.json()["data"]["code"]

    async def redeem(self, code: str, **overrides: Any) -> httpx.Response:
        body = {"auth_code": code, "key_id": self.key_id, "key_secret": self.key_secret}
        body.update(overrides)
        return await self.client.post("/oauth/token", json={"token": body})


async def sign_up(client: httpx.AsyncClient, email: str | None = None) -> tuple[str, str]:
    """(user_id, user token) of a new account."""
    response = await client.post("/v1/auth/signup", json={"email": email or unique_email(), "password": PASSWORD})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data["user_id"], data["access_token"]


async def new_flow(client: httpx.AsyncClient, **app_fields: Any) -> Flow:
    flow = Flow(client)
    _, flow.dev_token = await sign_up(client)
    flow.user_id, flow.user_token = await sign_up(client)
    body = {"name": "Test App", "redirect_uris": [flow.redirect_uri], "permissions": flow.app_permissions}
    body.update(app_fields)
    response = await client.post("/v1/apps", json=body, headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    app_data = response.json()["data"]
    flow.app_id, flow.app_key = app_data["app_id"], app_data["app_key"]
    response = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    key = response.json()["data"]
    flow.key_id, flow.key_secret = key["key_id"], key["key_secret"]
    return flow


@pytest.fixture
async def flow(client: httpx.AsyncClient) -> Flow:
    return await new_flow(client)


# ---------------------------------------------------------------- real server processes


@pytest.fixture
def server_factory(secret_key: str, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real `grantd serve` processes; all are stopped after the test."""
    started: list[ServerProcess] = []

    def factory(database_url: str, **kwargs: Any) -> ServerProcess:
        server = start_server(database_url, secret_key, tmp_path, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def deployment(server_factory: Callable[..., ServerProcess]) -> Callable[..., list[ServerProcess]]:
    """Start ``processes`` real `grantd serve` processes of one deployment: one database, one secret
    key and one issuer, ``issuer`` or else the first one's base URL; stopped after the test.

    One after the other: each migrates on start, and the later ones find the schema and the signing
    key in place. They share GRANTD_ISSUER, or a user token from one is (rightly) refused by another.
    """

    def start(
        database_url: str, *, env: dict[str, str] | None = None, issuer: str | None = None, processes: int = 2
    ) -> list[ServerProcess]:
        servers: list[ServerProcess] = []
        if issuer is None:
            servers.append(server_factory(database_url, env=env))
            issuer = servers[0].base_url
        while len(servers) < processes:
            servers.append(server_factory(database_url, env={**(env or {}), "GRANTD_ISSUER": issuer}))
        return servers

    return start


# ---------------------------------------------------------------- a real server for a third-party client library


@pytest.fixture(scope="module")
def interop_server(
    request: pytest.FixtureRequest, secret_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real `grantd serve` for the test module, on a new SQLite file (serve migrates it).

    GRANTD_ISSUER is its base URL. Each test registers its own apps and users on it.
    """
    name = request.module.__name__.removeprefix("test_").replace("_", "-")  # test_interop_node: interop-node
    with server_on_new_sqlite(tmp_path_factory, secret_key, name) as server:
        yield server


@pytest.fixture(scope="module")
async def interop_dev(interop_server: ServerProcess) -> AsyncIterator[Flow]:
    """A developer on ``interop_server`` registering each test's apps, and the end user who signs in on the pages."""
    from acting_user import developer  # acting_user imports this module's Flow helpers

    async with httpx.AsyncClient(base_url=interop_server.base_url, timeout=10) as http:
        yield await developer(http)
