"""The fixtures: a migrated database (SQLite, or PostgreSQL with GRANTD_TEST_DB=postgres), the app
in-process over httpx, a Neucron flow on it, and real server processes (alone, two as one deployment,
one for a third-party client library). The plain helpers they use are in tests/support/.

PostgreSQL is expected on 127.0.0.1:5432 (user postgres, trust auth, database test);
where it does not answer, the tests that need it are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# The helper modules' asserts report their values, as the tests' own do.
pytest.register_assert_rewrite("secret_harvest", "acting_user", "support")
import secret_harvest  # noqa: E402
from acting_user import developer
from grantd.config import Settings
from grantd.server import create_app
from support.databases import migrate, pg_execute, postgres_available
from support.neucron import Flow, new_flow
from support.servers import UNTHROTTLED, ServerProcess, server_on_new_sqlite, start_server

# The whole-suite secret scan: harvests every secret the suite creates or sends (see its docstring);
# tests/test_secret_scan.py searches every database and log for them after every other test.
pytest_plugins = ["secret_harvest"]

FAULTS = Path(__file__).parent / "faults"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fault-injection suite (tests/faults/, marker ``faults``) runs only when asked for with
    ``-m faults`` (``make test-faults``): not in ``make test`` or ``make test-db``, which would run it
    again, without an ``-m`` that would make the whole run a selection (see the secret scan)."""
    if collection_path == FAULTS and "faults" not in (config.option.markexpr or ""):
        return True
    return None


# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated; dropped afterwards."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"grantd_test_{secrets.token_hex(6)}"
    asyncio.run(pg_execute(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    secret_harvest.HARVEST.postgres_urls.append(url)  # scanned by the last test, before the drop below
    asyncio.run(migrate(url))
    yield url
    asyncio.run(pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "grantd.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(migrate(url))
    return url


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
    async with httpx.AsyncClient(base_url=interop_server.base_url, timeout=10) as http:
        yield await developer(http)
