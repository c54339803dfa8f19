"""`grantd prune`: what expired goes (the deny-lists of access tokens included), what a token
family still needs stays, last use survives.

Each test has a database of its own (pruning deletes across the whole database), on SQLite and
on PostgreSQL, and moves the server's clock forward instead of waiting for expiry.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import delete, func, insert, select

from acting_user import developer, new_app
from grantd.api.wire import rfc3339
from grantd.config import Settings
from grantd.core import retention
from grantd.server import create_app
from grantd.store import retention as retention_store
from grantd.store.schema import (
    audit_events, authorization_codes, maintenance, refresh_tokens, revoked_access_tokens, revoked_families, user_sessions,
)
from support.databases import migrate, pg_admin, pg_execute
from support.neucron import Flow
from support.servers import UNTHROTTLED, ServerProcess
from test_cli import Cli
from test_oauth2_security import basic, introspect, post_form, token, tokens_of

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
DAY = 86400
TABLES = {
    "revoked_access_tokens": revoked_access_tokens,
    "revoked_families": revoked_families,
    "refresh_tokens": refresh_tokens,
    "authorization_codes": authorization_codes,
    "user_sessions": user_sessions,
}


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path, secret_key: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The in-process app on a new, migrated database of its own, and a client of it."""
    drop = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'prune.db'}"
    else:
        try:
            admin = await pg_admin()
        except Exception as exc:  # noqa: BLE001 - any failure means: not available here
            pytest.skip(f"PostgreSQL is not reachable: {exc.__class__.__name__}: {exc}")
        name = f"grantd_prune_{secrets.token_hex(6)}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url, drop = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", name
    await migrate(url)
    settings = Settings(
        database_url=url, secret_key=secret_key, data_dir=tmp_path / "data", issuer=ISSUER,
        refresh_token_grace=0,  # any reuse of a rotated refresh token revokes its family
        **UNTHROTTLED,
    )
    application = create_app(settings)
    try:
        async with application.router.lifespan_context(application):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER) as client:
                yield application, client
    finally:
        if drop is not None:
            await pg_execute(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')


async def _counts(ctx: Any) -> dict[str, int]:
    async with ctx.db.read() as conn:
        return {name: (await conn.execute(select(func.count()).select_from(table))).scalar_one() for name, table in TABLES.items()}


def _iat(access_token: str) -> str:
    """When an access token was issued, as the APIs show times."""
    return rfc3339(jwt.decode(access_token, options={"verify_signature": False})["iat"])


async def _last_uses(flow: Flow) -> tuple[str | None, str | None]:
    """(the key's last use as its developer sees it, the grant's as its user sees it)."""
    keys = await flow.client.get(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert keys.status_code == 200, keys.text
    (key,) = [k for k in keys.json()["data"]["keys"] if k["key_id"] == flow.key_id]
    grants = await flow.client.get("/v1/grants", headers={"Authorization": flow.user_token})
    assert grants.status_code == 200, grants.text
    grant = [g["last_used_at"] for g in grants.json()["data"]["grants"] if g["app_id"] == flow.app_id]
    assert len(grant) <= 1
    return key["last_used_at"], grant[0] if grant else None


async def test_prune_deletes_what_expired_and_keeps_what_a_family_needs(fresh: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = fresh
    ctx = app.state.ctx
    flow = await new_app(await developer(client))

    # A code redeemed at the Neucron endpoint (an access token), one redeemed at the standard one
    # (access + refresh token) and rotated once, a code never redeemed, a client_credentials token,
    # revoked (its jti denied until its exp).
    assert (await flow.redeem(await flow.code())).status_code == 200
    family_code = await flow.code()
    first = tokens_of(await token(client, flow, grant_type="authorization_code", code=family_code, redirect_uri=flow.redirect_uri))
    second = tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]))
    await flow.code()
    own = tokens_of(await token(client, flow, grant_type="client_credentials"))
    revoked = await post_form(client, "/oauth2/revoke", {"token": own["access_token"]}, basic(flow.app_id, flow.key_secret))
    assert revoked.status_code == 200, revoked.text
    before = await _counts(ctx)
    assert before == {
        "revoked_access_tokens": 1, "revoked_families": 0, "refresh_tokens": 2, "authorization_codes": 3, "user_sessions": 2,
    }
    newest = (_iat(own["access_token"]), _iat(second["access_token"]))
    assert await _last_uses(flow) == newest

    # Two days on, prune what expired over a day ago: the revoked token's jti (it expired after an
    # hour) and the two codes whose families are dead. The rotated refresh family lives 30 days:
    # its code and both refresh tokens stay, the rotated one included.
    now = ctx.now()
    ctx.now = lambda: now + 2 * DAY
    pruned = await retention.prune(ctx, expired_before=ctx.now() - DAY)
    assert pruned == retention.Pruned(
        revoked_access_tokens=1, refresh_tokens=0, authorization_codes=2, user_sessions=0, audit_events=0
    )
    assert await _counts(ctx) == {
        "revoked_access_tokens": 0, "revoked_families": 0, "refresh_tokens": 2, "authorization_codes": 1, "user_sessions": 2,
    }

    # Back to today. The last use is still shown, and a token issued now is newer.
    del ctx.now
    assert await _last_uses(flow) == newest
    third = tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=second["refresh_token"]))
    assert await _last_uses(flow) == (_iat(third["access_token"]), _iat(third["access_token"]))

    # What was kept still does its work: the rotated refresh token, reused, revokes the live one
    # and denies the family's access tokens.
    reused = await token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert await introspect(client, flow, third["refresh_token"]) == {"active": False}
    assert await introspect(client, flow, third["access_token"]) == {"active": False}
    assert (await _counts(ctx))["revoked_families"] == 1

    # Past the refresh tokens' 30 days, the family goes whole, its deny-list row with it, and so do
    # the expired sessions.
    now = ctx.now()
    ctx.now = lambda: now + 40 * DAY
    pruned = await retention.prune(ctx, expired_before=ctx.now() - DAY)
    assert pruned == retention.Pruned(
        revoked_access_tokens=0, refresh_tokens=3, authorization_codes=1, user_sessions=2, audit_events=0, revoked_families=1
    )
    assert await _counts(ctx) == dict.fromkeys(TABLES, 0)


async def test_a_replayed_code_still_revokes_its_family_after_a_prune(fresh: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = fresh
    ctx = app.state.ctx
    flow = await new_app(await developer(client))
    code = await flow.code()
    body = tokens_of(await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri))

    now = ctx.now()
    ctx.now = lambda: now + 2 * DAY  # the access token expired; the refresh token lives on
    assert (await retention.prune(ctx, expired_before=ctx.now() - DAY)).authorization_codes == 0
    del ctx.now

    again = await flow.redeem(code)
    assert again.status_code == 401 and again.json()["error"] == "invalid_grant", again.text
    assert await introspect(client, flow, body["refresh_token"]) == {"active": False}


async def test_prune_takes_nothing_unexpired_even_when_asked(fresh: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = fresh
    ctx = app.state.ctx
    flow = await new_app(await developer(client))
    body = tokens_of(await token(client, flow, grant_type="client_credentials"))
    await flow.code()
    before = await _counts(ctx)
    pruned = await retention.prune(ctx, expired_before=ctx.now() + 365 * DAY)
    assert pruned == retention.Pruned(0, 0, 0, 0, 0)
    assert await _counts(ctx) == before
    assert (await introspect(client, flow, body["access_token"]))["active"] is True


async def test_audit_events_are_kept_unless_asked_and_their_pruning_is_recorded(fresh: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = fresh
    ctx = app.state.ctx
    flow = await new_app(await developer(client))
    await flow.redeem(await flow.code())

    async def events() -> list[str]:
        async with ctx.db.read() as conn:
            return list((await conn.execute(select(audit_events.c.event).order_by(audit_events.c.id))).scalars().all())

    recorded = await events()
    assert {"signup", "app_created", "key_created", "consent_granted", "code_issued", "code_redeemed"} <= set(recorded)
    now = ctx.now()
    ctx.now = lambda: now + 100 * DAY
    assert (await retention.prune(ctx, expired_before=ctx.now() - DAY)).audit_events == 0
    assert await events() == recorded

    assert (await retention.prune(ctx, audit_before=now - DAY)).audit_events == 0  # none that old: nothing recorded
    assert await events() == recorded

    pruned = await retention.prune(ctx, expired_before=ctx.now() - DAY, audit_before=ctx.now() - 90 * DAY)
    assert pruned.audit_events == len(recorded)
    async with ctx.db.read() as conn:
        (row,) = (await conn.execute(select(audit_events))).all()
    assert (row.event, row.actor, row.occurred_at) == ("audit_pruned", "operator", now + 100 * DAY)
    assert row.detail == '{"before":%d}' % (now + 10 * DAY)


def test_the_prune_command(tmp_path: Path, secret_key: str) -> None:
    cli = Cli(tmp_path, secret_key)
    cli.user("owner@example.com")
    app = cli.app("owner@example.com")
    path = tmp_path / "cli.db"
    with sqlite3.connect(path) as db:  # a revoked token that expired two days ago, one that is live
        for jti, expires_at in (("expired-token", 1), ("live-token", 2**40)):
            db.execute("INSERT INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?)", (jti, expires_at))
        # A DPoP proof's record whose proof could no longer pass its iat check, and one that could.
        for proof_hash, expires_at in (("a" * 64, 1), ("b" * 64, 2**40)):
            db.execute("INSERT INTO dpop_proof_jtis (proof_hash, expires_at) VALUES (?, ?)", (proof_hash, expires_at))
    assert cli.json("prune") == {
        "revoked_access_tokens": 1, "refresh_tokens": 0, "authorization_codes": 0, "user_sessions": 0, "audit_events": 0,
        "pushed_authorization_requests": 0,
        "client_assertion_jtis": 0,
        "device_codes": 0,
        "dpop_proof_jtis": 1,
        "revoked_families": 0,
    }  # fmt: skip
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT proof_hash FROM dpop_proof_jtis").fetchall() == [("b" * 64,)]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT jti FROM revoked_access_tokens").fetchall() == [("live-token",)]

    wrong = cli.run("prune", "--expired-before", "last week")
    assert wrong.returncode == 1
    assert "--expired-before must be an RFC 3339 date-time" in wrong.stderr


async def test_batches_walk_the_whole_table_past_rows_that_stay(
    fresh: tuple[Any, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = fresh
    ctx = app.state.ctx
    now = ctx.now()
    rows = [{"jti": f"token-{n:02d}", "expires_at": now + 3600 if n % 3 else 1} for n in range(20)]
    async with ctx.db.write() as tx:
        await tx.execute(insert(revoked_access_tokens), rows)
    monkeypatch.setattr(retention, "BATCH", 4)  # five batches, most with rows that stay
    assert (await retention.prune(ctx)).revoked_access_tokens == 7
    async with ctx.db.read() as conn:
        left = (await conn.execute(select(revoked_access_tokens.c.jti).order_by(revoked_access_tokens.c.jti))).scalars().all()
    assert left == [row["jti"] for row in rows if row["expires_at"] > now]


async def test_one_caller_takes_each_turn(fresh: tuple[Any, httpx.AsyncClient]) -> None:
    app, _ = fresh
    ctx = app.state.ctx
    now = ctx.now()

    async def claim(at: int) -> bool:
        async with ctx.db.write() as tx:
            return await retention_store.claim(tx, retention.TASK, at, at + 60)

    assert sorted(await asyncio.gather(*(claim(now) for _ in range(8)))) == [False] * 7 + [True]
    assert await claim(now + 59) is False  # not due again before the interval is over
    assert await claim(now + 60) is True

    # The turn's row, deleted by hand, is made again by the next claim.
    async with ctx.db.write() as tx:
        await tx.execute(delete(maintenance))
    assert sorted(await asyncio.gather(*(claim(now) for _ in range(4)))) == [False] * 3 + [True]


def test_a_server_prunes_by_itself_once_per_interval_across_its_workers(
    tmp_path: Path, secret_key: str, server_factory: Callable[..., ServerProcess]
) -> None:
    cli = Cli(tmp_path, secret_key)
    cli.user("owner@example.com")
    app = cli.app("owner@example.com")
    path = tmp_path / "cli.db"
    started = time.monotonic()
    server = server_factory(
        cli.database_url, workers=2, env={"GRANTD_PRUNE_INTERVAL": "2", "GRANTD_AUDIT_RETENTION_DAYS": "1"}
    )
    with sqlite3.connect(path, timeout=10) as db:
        db.executemany(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?)",
            [(f"expired-{n}", 1) for n in range(120)] + [("live", 2**40)],
        )
        old_event = "INSERT INTO audit_events (occurred_at, event, actor, detail) VALUES (?, 'signup', 'operator', '{}')"
        db.execute(old_event, (int(time.time()) - 2 * DAY,))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(path, timeout=10) as db:
            left = [jti for (jti,) in db.execute("SELECT jti FROM revoked_access_tokens")]
        if left == ["live"]:
            break
        time.sleep(0.2)
    assert left == ["live"], server.log()[-3000:]
    time.sleep(4)
    elapsed = time.monotonic() - started
    # Each worker looks every 0.5–1 s; the turns let one of them prune every 2 s at most.
    runs = [line for line in server.log().splitlines() if "pruned expired rows" in line]
    assert 1 <= len(runs) <= elapsed / 2 + 1, (elapsed, runs)
    assert sum("120 revoked_access_tokens" in line for line in runs) == 1, runs
    with sqlite3.connect(path, timeout=10) as db:  # the event older than a day went, recorded once
        events = [event for (event,) in db.execute("SELECT event FROM audit_events WHERE occurred_at < ?", (int(time.time()) - DAY,))]
        pruned = db.execute("SELECT count(*) FROM audit_events WHERE event = 'audit_pruned'").fetchone()[0]
    assert (events, pruned) == ([], 1)
