"""A code is redeemed at most once, even under 50 concurrent requests spread over two server processes.

Both processes share one database (SQLite file or PostgreSQL), so the guarantee can only come
from the database itself. The 50 identical requests are one redemption and its retries: each gets
the one token it issued (never a 5xx, never a second token); a replayed code — presented by
another key of the app — revokes the token it issued (RFC 6749 §4.1.2), and answers a clean 401
invalid_grant.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from grantd.store.db import Database
from grantd.store.schema import authorization_codes
from support.neucron import Flow, new_flow
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
LIMITS = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
ERROR_KEYS = {"error", "message", "status_code"}


def _token_body(flow: Flow, code: str) -> dict[str, Any]:
    return {"token": {"auth_code": code, "key_id": flow.key_id, "key_secret": flow.key_secret}}


async def _redeem_all(servers: list[ServerProcess], flow: Flow, codes: list[str]) -> Results:
    """POST /oauth/token once per code, all at once, alternating between the servers."""

    async def redeem(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/oauth/token", json=_token_body(flow, codes[i]))

    results, _ = await all_at_once(servers, len(codes), redeem)
    return results


def _describe(results: Results, servers: list[ServerProcess]) -> str:
    return describe(results, servers, expected=lambda status: status < 500)


async def _verify_access_token(token: str, servers: list[ServerProcess], flow: Flow) -> dict:
    """The token verifies against the JWKS of every process (they share keys); returns its claims.

    ``iss`` and ``aud`` are the deployment's GRANTD_ISSUER: the first server's base URL.
    """
    issuer = servers[0]
    claims = await verify_on_every_server(token, servers, issuer.base_url)

    assert claims["iss"] == issuer.base_url
    assert claims["sub"] == flow.user_id
    assert claims["user_id"] == flow.user_id
    assert claims["client_id"] == flow.app_id
    assert claims["aud"] == issuer.base_url  # the audience defaults to the issuer
    assert isinstance(claims["permissions"], list) and claims["permissions"] == ["read_profile"]
    assert claims["scope"] == "read_profile"
    assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int) and claims["exp"] > claims["iat"]
    assert isinstance(claims["jti"], str) and claims["jti"]
    return claims


async def test_one_code_fifty_concurrent_redemptions_on_two_processes(
    any_database_url: str, deployment: Callable[..., list[ServerProcess]]
) -> None:
    servers = deployment(any_database_url)
    async with httpx.AsyncClient(base_url=servers[0].base_url, timeout=TIMEOUT) as client:
        flow = await new_flow(client)
        code = await flow.code()

    results = await _redeem_all(servers, flow, [code] * CONCURRENCY)
    detail = _describe(results, servers)

    assert all(r.status_code == 200 for _, r in results), detail
    assert {s.base_url for s, _ in results} == {s.base_url for s in servers}  # both processes took part
    jtis = set()
    for _, response in results:
        body = response.json()
        assert set(body) == {"data", "status_code"} and body["status_code"] == 200, body
        jtis.add(jwt.decode(body["data"]["access_token"], options={"verify_signature": False})["jti"])
    assert len(jtis) == 1, detail  # one redemption; the others were its retries
    token = results[0][1].json()["data"]["access_token"]
    claims = await _verify_access_token(token, servers, flow)
    assert jtis == {claims["jti"]}

    # Presented again by another key of the app: a replay, refused, which revokes what the code issued.
    async with httpx.AsyncClient(base_url=servers[1].base_url, timeout=TIMEOUT) as client:
        created = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
        assert created.status_code == 200, created.text
        spare = created.json()["data"]
        replay = await client.post(
            "/oauth/token", json={"token": {"auth_code": code, "key_id": spare["key_id"], "key_secret": spare["key_secret"]}}
        )
    assert replay.status_code == 401, replay.text
    body = replay.json()
    assert set(body) == ERROR_KEYS and body["error"] == "invalid_grant" and body["status_code"] == 401, body
    assert isinstance(body["message"], str) and body["message"] and "access_token" not in replay.text

    # The token is revoked, on both processes, and the code issued exactly one: its row names the
    # one access token its redemption issued.
    jti = claims["jti"]
    for server in servers:
        assert await _introspect(server, flow.app_id, spare["key_secret"], token) == {"active": False}
    db = Database(any_database_url)
    try:
        async with db.read() as conn:
            code_rows = (
                await conn.execute(select(authorization_codes).where(authorization_codes.c.app_id == flow.app_id))
            ).all()
    finally:
        await db.dispose()
    assert len(code_rows) == 1, code_rows
    (code_row,) = code_rows
    assert code_row.redeemed_at is not None and code_row.access_jti == jti and code_row.key_id == flow.key_id

    # And once more, by the key that redeemed it: what it issued is revoked, so no retry either.
    async with httpx.AsyncClient(base_url=servers[1].base_url, timeout=TIMEOUT) as client:
        again = await client.post("/oauth/token", json=_token_body(flow, code))
    assert again.status_code == 401, again.text
    assert again.json()["error"] == "invalid_grant"
    assert_clean_logs(servers)


async def test_fifty_different_codes_concurrently_on_two_processes_all_succeed(
    any_database_url: str, deployment: Callable[..., list[ServerProcess]]
) -> None:
    servers = deployment(any_database_url)
    async with httpx.AsyncClient(base_url=servers[0].base_url, timeout=TIMEOUT) as client:
        flow = await new_flow(client)
        await flow.code()  # records consent once, so the concurrent authorizations below only issue codes

    # Issue the codes concurrently as well, half on each process: authorize is a write too.
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=TIMEOUT, limits=LIMITS) for s in servers]
    try:
        responses = await asyncio.gather(
            *(
                clients[i % 2].post(
                    "/oauth/authorize",
                    json={"token": flow.params()},
                    headers={"Authorization": f"Bearer {flow.user_token}"},
                )
                for i in range(CONCURRENCY)
            )
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert [r.status_code for r in responses] == [200] * CONCURRENCY, Counter(
        f"{r.status_code} {r.text[:200]}" for r in responses
    )
    codes = [r.json()["data"]["code"] for r in responses]
    assert len(set(codes)) == CONCURRENCY

    results = await _redeem_all(servers, flow, codes)
    detail = _describe(results, servers)
    assert [r.status_code for _, r in results] == [200] * CONCURRENCY, detail

    tokens = [r.json()["data"]["access_token"] for _, r in results]
    jtis = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens]
    assert len(set(jtis)) == CONCURRENCY
    assert results[0][0] is not results[1][0]
    await _verify_access_token(tokens[0], servers, flow)  # issued by the first process
    await _verify_access_token(tokens[1], servers, flow)  # issued by the second

    # Each code was spent once, by the redemption that issued the token acknowledged for it, and
    # every token is active on both processes: none was revoked although its code was used once.
    db = Database(any_database_url)
    try:
        async with db.read() as conn:
            spent = (
                await conn.execute(
                    select(authorization_codes.c.access_jti).where(
                        authorization_codes.c.app_id == flow.app_id, authorization_codes.c.redeemed_at.isnot(None)
                    )
                )
            ).scalars().all()
    finally:
        await db.dispose()
    assert sorted(jti for jti in spent if jti is not None) == sorted(jtis)
    for server in servers:
        for token in tokens:
            assert (await _introspect(server, flow.app_id, flow.key_secret, token))["active"] is True
    assert_clean_logs(servers)


async def _introspect(server: ServerProcess, app_id: str, key_secret: str, token: str) -> dict[str, Any]:
    """What ``server``'s /oauth2/introspect says of ``token`` to the app (authenticated by ``key_secret``)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        response = await client.post("/oauth2/introspect", data={"token": token}, auth=(app_id, key_secret))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
