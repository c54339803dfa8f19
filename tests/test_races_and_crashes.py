"""Races and crashes against real server processes, on SQLite and on PostgreSQL.

Races: one refresh token is used 50 times at once, the requests split over two server processes
of one deployment (one database, one issuer). With the default grace window every duplicate gets
the one successor; with GRANTD_REFRESH_TOKEN_GRACE=0 exactly one request wins and the reuse revokes
the whole family. Either way: no 5xx, only RFC 6749 errors, and the database is consistent after.

Crash: the server is killed with SIGKILL in the middle of a concurrent load of sign-ups, app
creations and token issues, then restarted on the same database. Everything it acknowledged with
a 200 is still there, and the restarted server serves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from sqlalchemy import select

from grantd.store.db import Database
from grantd.store.schema import authorization_codes, refresh_tokens
from support.neucron import PASSWORD, Flow, new_flow, sign_up
from support.servers import (
    TIMEOUT,
    Results,
    ServerProcess,
    all_at_once,
    assert_clean_logs,
    describe,
    verify_on_every_server,
)

pytestmark = pytest.mark.db

CONCURRENCY = 50
OAUTH_ERROR_KEYS = {"error", "error_description"}


# ---------------------------------------------------------------- helpers


async def _oauth2_token(client: httpx.AsyncClient, flow: Flow, **form: str) -> httpx.Response:
    """POST /oauth2/token as the flow's confidential app, client_secret_post."""
    body = {**form, "client_id": flow.app_id, "client_secret": flow.key_secret}
    return await client.post(
        "/oauth2/token", content=urlencode(body), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


def _tokens(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer", body
    assert isinstance(body["access_token"], str) and isinstance(body["refresh_token"], str), body
    return body


def _assert_invalid_grant(response: httpx.Response) -> None:
    """RFC 6749 §5.2: 400, JSON of exactly error and error_description, not cached."""
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("cache-control") == "no-store", response.headers
    body = response.json()
    assert set(body) == OAUTH_ERROR_KEYS, body
    assert body["error"] == "invalid_grant", body
    assert isinstance(body["error_description"], str) and body["error_description"], body
    assert "access_token" not in response.text and "refresh_token\"" not in response.text


def _jti(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["jti"]


async def _first_tokens(server: ServerProcess) -> tuple[Flow, dict[str, Any]]:
    """A confidential app, a user's consent, and the tokens of one code: an access and a refresh token."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        flow = await new_flow(client)
        code = await flow.code()
        first = _tokens(
            await _oauth2_token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)
        )
    flow.client = None  # type: ignore[assignment]  # closed: never use it again
    return flow, first


async def _refresh_all(servers: list[ServerProcess], flow: Flow, refresh_token: str) -> tuple[Results, float]:
    """POST the same refresh token CONCURRENCY times at once, alternating between the servers."""

    async def refresh(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await _oauth2_token(client, flow, grant_type="refresh_token", refresh_token=refresh_token)

    return await all_at_once(servers, CONCURRENCY, refresh, warm_up=10, timeout=120)


def _describe(results: Results, servers: list[ServerProcess]) -> str:
    return describe(results, servers, expected=lambda status: status in (200, 400))


async def _family(database_url: str, first_jti: str) -> tuple[Any, list[Any]]:
    """(the refresh token row issued beside ``first_jti``, every refresh row of its family)."""
    db = Database(database_url)
    try:
        async with db.read() as conn:
            parent = (
                await conn.execute(select(refresh_tokens).where(refresh_tokens.c.access_jti == first_jti))
            ).one()
            family = (
                await conn.execute(
                    select(refresh_tokens)
                    .where(refresh_tokens.c.code_hash == parent.code_hash)
                    .order_by(refresh_tokens.c.issued_at)
                )
            ).all()
    finally:
        await db.dispose()
    return parent, list(family)


async def _introspect(server: ServerProcess, flow: Flow, token: str) -> dict[str, Any]:
    """What ``server``'s /oauth2/introspect says of ``token`` to ``flow``'s app."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        response = await client.post("/oauth2/introspect", data={"token": token}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- races


async def test_one_refresh_token_fifty_concurrent_uses_within_the_grace_window(
    any_database_url: str, deployment: Callable[..., list[ServerProcess]]
) -> None:
    """Default grace window (5 s): every duplicate gets the one successor and the same access token."""
    servers = deployment(any_database_url)
    flow, first = await _first_tokens(servers[0])
    first_jti = _jti(first["access_token"])

    results, elapsed = await _refresh_all(servers, flow, first["refresh_token"])
    detail = _describe(results, servers) + f"\nelapsed={elapsed:.2f}s"
    print(f"{CONCURRENCY} refreshes over two processes in {elapsed:.2f}s: {detail.splitlines()[0]}")
    assert {s.base_url for s, _ in results} == {s.base_url for s in servers}  # both processes took part
    assert all(r.status_code in (200, 400) for _, r in results), detail
    for _, response in results:
        if response.status_code == 400:
            _assert_invalid_grant(response)
    winners = [_tokens(r) for _, r in results if r.status_code == 200]
    # The 50 requests all arrive well inside the 5 s window, so every one is the grace-window result;
    # a refusal here would have revoked the family (checked below as well).
    assert elapsed < 5, detail
    assert len(winners) == CONCURRENCY, detail

    successor = winners[0]["refresh_token"]
    successor_jti = _jti(winners[0]["access_token"])
    assert successor != first["refresh_token"] and successor_jti != first_jti
    assert {w["refresh_token"] for w in winners} == {successor}, detail
    assert {_jti(w["access_token"]) for w in winners} == {successor_jti}, detail
    # Every copy verifies against the deployment's JWKS, with the deployment's issuer.
    for winner in (winners[0], winners[1], winners[-1]):
        claims = await verify_on_every_server(winner["access_token"], servers, servers[0].base_url)
        assert claims["sub"] == flow.user_id and claims["client_id"] == flow.app_id
        assert claims["jti"] == successor_jti

    # The database: the parent rotated once, one successor, beside it the one access token of the refresh.
    parent, family = await _family(any_database_url, first_jti)
    assert parent.rotated_at is not None and parent.revoked_at is None, parent
    children = [row for row in family if row.token_hash != parent.token_hash]
    assert len(family) == 2 and len(children) == 1, family
    child = children[0]
    assert child.issued_at >= parent.issued_at
    assert child.access_jti == successor_jti
    assert child.rotated_at is None and child.revoked_at is None, child
    assert child.app_id == parent.app_id == flow.app_id and child.user_id == parent.user_id == flow.user_id
    # Both access tokens (the code's and the refresh's) are active on both processes.
    for server in servers:
        for access_token in (first["access_token"], winners[0]["access_token"], winners[-1]["access_token"]):
            assert (await _introspect(server, flow, access_token))["active"] is True

    # The successor works once more, on either process, and rotates as usual.
    async with httpx.AsyncClient(base_url=servers[1].base_url, timeout=TIMEOUT) as client:
        third = _tokens(await _oauth2_token(client, flow, grant_type="refresh_token", refresh_token=successor))
    assert third["refresh_token"] not in (successor, first["refresh_token"])
    assert _jti(third["access_token"]) not in (first_jti, successor_jti)
    _, family = await _family(any_database_url, first_jti)
    assert len(family) == 3
    assert_clean_logs(servers)


async def test_one_refresh_token_fifty_concurrent_uses_without_a_grace_window(
    any_database_url: str, deployment: Callable[..., list[ServerProcess]]
) -> None:
    """GRANTD_REFRESH_TOKEN_GRACE=0: exactly one winner; the reuse revokes the whole family."""
    servers = deployment(any_database_url, env={"GRANTD_REFRESH_TOKEN_GRACE": "0"})
    flow, first = await _first_tokens(servers[0])
    first_jti = _jti(first["access_token"])

    results, elapsed = await _refresh_all(servers, flow, first["refresh_token"])
    detail = _describe(results, servers) + f"\nelapsed={elapsed:.2f}s"
    print(f"{CONCURRENCY} refreshes over two processes in {elapsed:.2f}s: {detail.splitlines()[0]}")
    assert {s.base_url for s, _ in results} == {s.base_url for s in servers}
    assert all(r.status_code in (200, 400) for _, r in results), detail
    winners = [_tokens(r) for _, r in results if r.status_code == 200]
    losers = [r for _, r in results if r.status_code != 200]
    assert len(winners) == 1 and len(losers) == CONCURRENCY - 1, detail
    for response in losers:
        _assert_invalid_grant(response)
    successor = winners[0]["refresh_token"]
    successor_jti = _jti(winners[0]["access_token"])
    await verify_on_every_server(winners[0]["access_token"], servers, servers[0].base_url)

    # The database: one successor only, and the whole family (successor included) revoked.
    parent, family = await _family(any_database_url, first_jti)
    assert parent.rotated_at is not None, parent
    children = [row for row in family if row.token_hash != parent.token_hash]
    assert len(family) == 2 and len(children) == 1, family
    assert children[0].access_jti == successor_jti
    assert all(row.revoked_at is not None for row in family), family
    # Every access token of the family is inactive, on both processes.
    for server in servers:
        for access_token in (first["access_token"], winners[0]["access_token"]):
            assert await _introspect(server, flow, access_token) == {"active": False}

    # The successor no longer works, on either process.
    for server in servers:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
            _assert_invalid_grant(
                await _oauth2_token(client, flow, grant_type="refresh_token", refresh_token=successor)
            )
    _, family_after = await _family(any_database_url, first_jti)
    assert len(family_after) == 2, family_after
    assert_clean_logs(servers)


# ---------------------------------------------------------------- crash


@dataclass
class Acknowledged:
    """What the server answered 200 to before it was killed."""

    signups: list[tuple[str, str]] = field(default_factory=list)  # (email, user_id)
    apps: list[str] = field(default_factory=list)  # app_id, owned by the developer
    tokens: list[tuple[str, str]] = field(default_factory=list)  # (jti, access token)
    transport_errors: int = 0
    unexpected: list[str] = field(default_factory=list)  # any non-200 answer


WORKERS = 20
KILL_AFTER = 1.0  # the earliest kill: the load has been running at least this long
MIN_ACKED = 3  # ... and at least this many of each kind were acknowledged
KILL_AT_LATEST = 10.0  # on a slow machine, kill by then regardless (the test then says what was acked)
LOAD_SECONDS = 15.0  # the workers' own bound; they stop sooner, at their first error after the kill
MAX_ITERATIONS_PER_WORKER = 300


async def _load_and_kill(server: ServerProcess, flow: Flow, dev_token: str) -> tuple[Acknowledged, float]:
    """WORKERS concurrent workers of sign-ups, app creations and token issues, bounded by count and
    time; the server's process group is sent SIGKILL while they run, once at least KILL_AFTER seconds
    have passed and MIN_ACKED of each kind were acknowledged (at KILL_AT_LATEST regardless).
    Returns what was acknowledged, and when the kill came."""
    acked = Acknowledged()
    killed = asyncio.Event()
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=httpx.Timeout(10.0), limits=limits) as http:
        began = time.monotonic()
        deadline = began + LOAD_SECONDS

        async def signup() -> None:
            email = f"crash-{uuid.uuid4().hex[:16]}@example.com"
            r = await http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
            if r.status_code == 200:
                acked.signups.append((email, r.json()["data"]["user_id"]))
            else:
                acked.unexpected.append(f"signup {r.status_code} {r.text[:200]}")

        async def create_app() -> None:
            body = {"name": f"Crash {uuid.uuid4().hex[:8]}", "redirect_uris": [flow.redirect_uri], "permissions": "read_profile"}
            r = await http.post("/v1/apps", json=body, headers={"Authorization": dev_token})
            if r.status_code == 200:
                acked.apps.append(r.json()["data"]["app_id"])
            else:
                acked.unexpected.append(f"app {r.status_code} {r.text[:200]}")

        async def issue_token() -> None:
            r = await http.post(
                "/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": f"Bearer {flow.user_token}"}
            )
            if r.status_code != 200:
                acked.unexpected.append(f"authorize {r.status_code} {r.text[:200]}")
                return
            code = r.json()["data"]["code"]
            r = await http.post(
                "/oauth/token", json={"token": {"auth_code": code, "key_id": flow.key_id, "key_secret": flow.key_secret}}
            )
            if r.status_code == 200:
                token = r.json()["data"]["access_token"]
                acked.tokens.append((_jti(token), token))
            else:
                acked.unexpected.append(f"token {r.status_code} {r.text[:200]}")

        operations = (signup, create_app, issue_token)

        async def worker(i: int) -> None:
            for n in range(MAX_ITERATIONS_PER_WORKER):
                if time.monotonic() >= deadline:
                    return
                try:
                    await operations[(i + n) % len(operations)]()
                except httpx.TransportError:
                    # The server is gone (killed mid-request, or refused after): nothing acknowledged.
                    acked.transport_errors += 1
                    if killed.is_set():
                        return
                    raise

        async def killer() -> float:
            while time.monotonic() - began < KILL_AT_LATEST:
                await asyncio.sleep(0.02)
                enough = min(len(acked.signups), len(acked.apps), len(acked.tokens)) >= MIN_ACKED
                if enough and time.monotonic() - began >= KILL_AFTER:
                    break
            # The whole process group (start_new_session=True): the serve process and any worker.
            os.killpg(server.process.pid, signal.SIGKILL)
            killed.set()
            return time.monotonic() - began

        kill_task = asyncio.ensure_future(killer())
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(WORKERS))), timeout=LOAD_SECONDS + 30)
        killed_at = await kill_task
    server.process.wait(timeout=15)
    return acked, killed_at


async def test_kill_9_under_load_loses_nothing_acknowledged(
    any_database_url: str, server_factory  # type: ignore[no-untyped-def]
) -> None:
    """SIGKILL in the middle of a load; everything answered 200 survives the restart.

    On SQLite the database runs in WAL mode with synchronous=NORMAL: a committed transaction is in
    the WAL file (written, not necessarily fsynced) before the 200 is sent, so it survives the death
    of the process, which is what this test proves. It does not, and cannot, prove durability across
    an operating-system crash or power loss, where NORMAL may lose the last transactions.
    On PostgreSQL the commit is flushed by the database server, which is not killed.
    """
    server = server_factory(any_database_url)
    issuer = server.base_url
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        flow = await new_flow(client)
        await flow.code()  # consent recorded once: the load's authorizations only issue codes
        _, dev_token = await sign_up(client)

    acked, killed_at = await _load_and_kill(server, flow, dev_token)
    assert server.process.poll() is not None
    summary = (
        f"killed at {killed_at:.2f}s; acknowledged: {len(acked.signups)} sign-ups, {len(acked.apps)} apps, "
        f"{len(acked.tokens)} tokens; {acked.transport_errors} requests cut off"
    )
    print(summary)
    assert not acked.unexpected, f"{summary}\n" + "\n".join(acked.unexpected[:10])
    # The kill really fell in the middle of the load: work was acknowledged before it, and cut off by it.
    assert acked.signups and acked.apps and acked.tokens, summary
    assert acked.transport_errors >= 1, summary
    assert KILL_AFTER <= killed_at < LOAD_SECONDS, summary  # the workers were still running

    # Restart on the same database, with the same secret key and issuer.
    restarted = server_factory(any_database_url, env={"GRANTD_ISSUER": issuer})
    async with httpx.AsyncClient(base_url=restarted.base_url, timeout=TIMEOUT) as client:
        # Every acknowledged sign-up can log in, as the same user.
        sem = asyncio.Semaphore(10)

        async def login(email: str, user_id: str) -> None:
            async with sem:
                r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, (email, r.status_code, r.text)
            assert r.json()["data"]["user_id"] == user_id

        await asyncio.wait_for(asyncio.gather(*(login(e, u) for e, u in acked.signups)), timeout=120)

        # Every acknowledged app is listed by its owner.
        r = await client.get("/v1/apps", headers={"Authorization": dev_token})
        assert r.status_code == 200, r.text
        listed = {a["app_id"] for a in r.json()["data"]["apps"]}
        missing = set(acked.apps) - listed
        assert not missing, f"{len(missing)} acknowledged apps are lost: {sorted(missing)[:5]}"

    # Every acknowledged token's code is spent, by the redemption that issued it (its jti on the
    # code's row), and the token verifies against the restarted server's JWKS and introspects active.
    jtis = [jti for jti, _ in acked.tokens]
    db = Database(any_database_url)
    try:
        async with db.read() as conn:
            spent = set(
                (
                    await conn.execute(
                        select(authorization_codes.c.access_jti).where(
                            authorization_codes.c.access_jti.in_(jtis), authorization_codes.c.redeemed_at.isnot(None)
                        )
                    )
                ).scalars().all()
            )
    finally:
        await db.dispose()
    assert spent == set(jtis), f"lost redemptions: {sorted(set(jtis) - spent)[:5]}"
    for jti, token in acked.tokens:
        claims = await verify_on_every_server(token, [restarted], issuer)
        assert claims["jti"] == jti and claims["sub"] == flow.user_id and claims["client_id"] == flow.app_id
        state = await _introspect(restarted, flow, token)
        assert state["active"] is True and state["jti"] == jti, state

    # The restarted server serves: a fresh full flow, end to end.
    async with httpx.AsyncClient(base_url=restarted.base_url, timeout=TIMEOUT) as client:
        fresh = await new_flow(client)
        code = await fresh.code()
        r = await fresh.redeem(code)
        assert r.status_code == 200, r.text
        claims = await verify_on_every_server(r.json()["data"]["access_token"], [restarted], issuer)
        assert claims["sub"] == fresh.user_id and claims["client_id"] == fresh.app_id
    assert_clean_logs([server, restarted])  # no error before the kill either
