"""A database that refuses connections: every dialect answers 503 ``temporarily_unavailable`` with
``Retry-After`` in its own shape (RFC 6749 JSON, the Neucron error body, a page), the hot routes
too; the outage is logged once, not once per request; and the first request after the database
answers again succeeds and logs that it is over. (Stopping, freezing and filling a real database
under load is the fault-injection suite's, tests/faults/.)"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantd.config import Settings
from grantd.server import create_app
from grantd.store.db import Database
from grantd.store.migrate import upgrade
from support.neucron import new_flow
from support.servers import free_port


@pytest.fixture
async def app(tmp_path: Path, secret_key: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unavailable.db'}"
    db = Database(url)
    await upgrade(db)
    await db.dispose()
    settings = Settings(database_url=url, secret_key=secret_key, data_dir=tmp_path, issuer="http://testserver")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield application, client


def _retry_after(response: httpx.Response) -> int:
    assert response.status_code == 503, response.text
    value = response.headers.get("retry-after", "")
    assert value.isdigit() and int(value) >= 1, response.headers
    return int(value)


async def test_every_dialect_answers_503_with_retry_after(app: tuple[Any, httpx.AsyncClient], caplog: pytest.LogCaptureFixture) -> None:
    application, client = app
    ctx = application.state.ctx
    flow = await new_flow(client)
    form = await client.get("/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None

    working, ctx.db = ctx.db, Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing", timeout=1.0)
    caplog.set_level(logging.INFO, logger="grantd")
    try:
        # RFC 6749 §5.2 JSON, on a hot route.
        token = await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(flow.app_id, flow.key_secret)
        )
        _retry_after(token)
        assert token.json()["error"] == "temporarily_unavailable" and set(token.json()) == {"error", "error_description"}
        assert token.headers["cache-control"] == "no-store"

        # The Neucron error body: on a hot route (redeem) and on a FastAPI one.
        for response in (
            await client.post("/oauth/token", json={"token": {"auth_code": "x" * 43, "key_id": flow.key_id, "key_secret": flow.key_secret}}),
            await client.get("/v1/apps", headers={"Authorization": flow.dev_token}),
            await client.post("/v1/auth/login", json={"email": "someone@example.com", "password": "a password"}),
        ):
            _retry_after(response)
            body = response.json()
            assert body == {"error": "temporarily_unavailable", "message": body["message"], "status_code": 503}, body
            assert "Try again" in body["message"]

        # A page: the sign-in form posted.
        page = await client.post(
            "/signin", data={"email": "someone@example.com", "password": "a password", "csrf_token": csrf.group(1)}
        )
        _retry_after(page)
        assert page.headers["content-type"].startswith("text/html") and "Temporarily unavailable" in page.text

        # Not ready, saying why.
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "unreachable"
    finally:
        broken, ctx.db = ctx.db, working
        await broken.dispose()

    outages = [r for r in caplog.records if r.getMessage().startswith("the database is unavailable")]
    assert len(outages) == 1, [r.getMessage() for r in outages]  # one line for six refused requests
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert broken.availability.down_since is not None


async def test_the_outage_ends_with_the_first_block_that_succeeds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On SQLite: a write that fails with SQLite's "disk full" is DatabaseUnavailable and opens the
    outage; the next committed write closes it, with one line each."""
    import sqlite3

    from sqlalchemy import text

    from grantd.store.availability import DatabaseUnavailable

    url = f"sqlite+aiosqlite:///{tmp_path / 'full.db'}"
    db = Database(url)
    caplog.set_level(logging.INFO, logger="grantd")
    try:
        async with db.write() as tx:
            await tx.execute(text("CREATE TABLE t (x INTEGER)"))
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL, as sqlite3 sets it
        for _ in range(3):
            with pytest.raises(DatabaseUnavailable) as refused:
                async with db.write() as tx:
                    await tx.execute(text("INSERT INTO t VALUES (1)"))
                    raise full
            assert refused.value.reason == "disk_full"
        assert db.availability.down_since is not None
        async with db.write() as tx:
            await tx.execute(text("INSERT INTO t VALUES (2)"))
        assert db.availability.down_since is None
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT x FROM t"))).scalars().all() == [2]  # the refused ones rolled back
    finally:
        await db.dispose()
    lines = [r.getMessage() for r in caplog.records if r.name == "grantd.database"]
    assert len(lines) == 2 and lines[0].startswith("the database is unavailable (disk_full)"), lines
    assert lines[1].startswith("the database answers again"), lines
