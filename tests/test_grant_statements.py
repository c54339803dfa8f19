"""The hot grants' writes, on the database the session runs on (SQLite, or PostgreSQL with
GRANTD_TEST_DB=postgres), through grantd's own functions and a real database.

On PostgreSQL a code redemption reads the code, checks it in Python, then spends it (recording
the access token's jti and key on it) and writes the refresh token and the audit row in one
statement (``store.codes.spend_and_issue``); a refresh rotation likewise
(``store.tokens.rotate_and_issue``). On SQLite both run in one write transaction. Either way: a
code is spent at most once, a failed check spends nothing, and what a redemption writes is
written together or not at all. Access tokens have no row: they are judged as introspection
judges them (``_active``).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from grantd.core import access_token as access_tokens
from grantd.core import audit
from grantd.core.introspection import access_is_live
from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import ClientSecret, KeyPair
from grantd.core.clients import Client
from grantd.core.grants import authorization_code, refresh_token
from grantd.core.errors import InvalidGrant, InvalidScope
from grantd.crypto.secrets import s256
from grantd.store import codes as code_store
from grantd.store import grants as grant_store
from grantd.store import tokens as token_store
from grantd.store.schema import audit_events, authorization_codes, refresh_tokens
from support.neucron import new_flow

pytestmark = pytest.mark.db

REDIRECT_URI = "https://app.example.com/callback"


async def _setup(app: Any, client: httpx.AsyncClient) -> tuple[Any, Client, str, KeyPair]:
    """The context, the app's client, its user, and the app's key pair to authenticate with."""
    flow = await new_flow(client)
    return app.state.ctx, Client(flow.app_id, flow.key_id), flow.user_id, KeyPair(flow.key_id, flow.key_secret)


def _code_rows(ctx: Any, code: str, who: Client, user_id: str, challenge: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    now = ctx.now()
    row = {
        "code_hash": ctx.hasher.hash(code), "app_id": who.app_id, "user_id": user_id, "redirect_uri": REDIRECT_URI,
        "permissions": "read_profile,write_data", "state": "s", "code_challenge": challenge, "created_at": now,
        "expires_at": now + 60,
        # OpenID Connect (migration 0012): a code of a plain OAuth request has none of them
        "nonce": None, "auth_time": None, "session_jti": None, "dpop_jkt": None, "resources": None,
        "redirect_uri_included": True,  # migration 0017: the request named its redirect_uri
        "amr": None,  # migration 0022: signed in with a password alone
    }
    event = audit.entry(ctx, "code_issued", actor=user_id, user_id=user_id, app_id=who.app_id, now=now, permissions=["read_profile"])
    return row, event


async def _new_code(ctx: Any, who: Client, user_id: str, challenge: str | None = None) -> str:
    code = secrets.token_urlsafe(32)
    async with ctx.db.write() as tx:
        await code_store.insert_code(tx, *_code_rows(ctx, code, who, user_id, challenge))
    return code


async def _rows(ctx: Any, query: Any) -> list[Any]:
    async with ctx.db.read() as conn:
        return list((await conn.execute(query)).all())


async def _count(ctx: Any, table: Any, *conditions: Any) -> int:
    return (await _rows(ctx, select(func.count()).select_from(table).where(*conditions)))[0][0]


def _jti(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["jti"]


async def _active(ctx: Any, token: str) -> bool:
    """Whether the access token verifies and is live, judged as introspection judges it."""
    claims = access_tokens.claims_of(ctx, token)
    assert claims is not None
    async with ctx.db.read() as conn:
        state = await token_store.access_token_state(conn, claims)
    return access_is_live(claims, state, ctx.now())


async def _code(ctx: Any, code_hash: str) -> Any:
    """The code's row: when it was spent, and the access token (jti, key) its redemption issued."""
    [row] = await _rows(ctx, select(authorization_codes).where(authorization_codes.c.code_hash == code_hash))
    return row


async def test_a_redemption_writes_its_tokens_and_audit_row_together(app: Any, client: httpx.AsyncClient) -> None:
    ctx, who, user_id, auth = await _setup(app, client)
    code = await _new_code(ctx, who, user_id)
    issued = await authorization_code.redeem(ctx, auth, code, redirect_uri=REDIRECT_URI, with_refresh_token=True, address="192.0.2.7")
    jti = _jti(issued.access_token)
    code_hash = ctx.hasher.hash(code)

    token = access_tokens.claims_of(ctx, issued.access_token)
    assert token is not None
    assert (token["jti"], token["client_id"], token["user_id"], token["key_id"], token["scope"], token["family"]) == (
        jti, who.app_id, user_id, who.key_id, "read_profile write_data", code_hash
    )
    assert token["exp"] - token["iat"] == ctx.settings.access_token_ttl and await _active(ctx, issued.access_token)
    [refresh] = await _rows(ctx, select(refresh_tokens).where(refresh_tokens.c.code_hash == code_hash))
    assert refresh.token_hash == ctx.hasher.hash(issued.refresh_token)
    assert (refresh.access_jti, refresh.user_id, refresh.scope) == (jti, user_id, "read_profile write_data")
    [event] = await _rows(ctx, select(audit_events).where(audit_events.c.event == "code_redeemed", audit_events.c.user_id == user_id))
    assert (event.actor, event.app_id, event.address, event.occurred_at) == (who.app_id, who.app_id, "192.0.2.7", token["iat"])
    assert jti in event.detail and who.key_id in event.detail
    spent = await _code(ctx, code_hash)
    assert (spent.redeemed_at, spent.access_jti, spent.key_id) == (token["iat"], jti, who.key_id)


@pytest.mark.parametrize("bad", ["verifier", "redirect_uri"])
async def test_a_failed_check_leaves_the_code_unspent(app: Any, client: httpx.AsyncClient, bad: str) -> None:
    ctx, who, user_id, auth = await _setup(app, client)
    verifier = secrets.token_urlsafe(48)
    code = await _new_code(ctx, who, user_id, challenge=s256(verifier))
    code_hash = ctx.hasher.hash(code)
    wrong = {"code_verifier": secrets.token_urlsafe(48)} if bad == "verifier" else {
        "code_verifier": verifier, "redirect_uri": "https://evil.example.com/callback"
    }
    with pytest.raises(InvalidGrant):
        await authorization_code.redeem(ctx, auth, code, with_refresh_token=True, **wrong)

    [row] = await _rows(ctx, select(authorization_codes.c.redeemed_at).where(authorization_codes.c.code_hash == code_hash))
    assert row.redeemed_at is None
    assert (await _code(ctx, code_hash)).access_jti is None
    assert await _count(ctx, refresh_tokens, refresh_tokens.c.code_hash == code_hash) == 0
    assert await _count(ctx, audit_events, audit_events.c.user_id == user_id, audit_events.c.event.like("code_re%")) == 0
    # Not a replay either: the right verifier still redeems it, and its token stays live.
    issued = await authorization_code.redeem(ctx, auth, code, code_verifier=verifier, redirect_uri=REDIRECT_URI)
    assert (await _code(ctx, code_hash)).access_jti == _jti(issued.access_token)
    assert await _active(ctx, issued.access_token)


async def test_concurrent_redemptions_of_one_code_issue_one_token(app: Any, client: httpx.AsyncClient) -> None:
    """Twenty identical requests at once: one spends the code, the others are retries answered with
    the same tokens; nothing is written twice and nothing is revoked."""
    ctx, who, user_id, auth = await _setup(app, client)
    code = await _new_code(ctx, who, user_id)
    code_hash = ctx.hasher.hash(code)
    results = await asyncio.gather(
        *(authorization_code.redeem(ctx, auth, code, with_refresh_token=True) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, IssuedToken) for r in results), results
    assert len({_jti(r.access_token) for r in results}) == 1
    assert len({r.refresh_token for r in results}) == 1
    assert (await _code(ctx, code_hash)).access_jti == _jti(results[0].access_token)
    assert await _count(ctx, refresh_tokens, refresh_tokens.c.code_hash == code_hash) == 1
    of_user = audit_events.c.user_id == user_id
    assert await _count(ctx, audit_events, of_user, audit_events.c.event == "code_redeemed") == 1
    assert await _count(ctx, audit_events, of_user, audit_events.c.event == "code_retried") == 19
    assert await _count(ctx, audit_events, of_user, audit_events.c.event == "code_replayed") == 0
    assert all([await _active(ctx, r.access_token) for r in results])


async def test_concurrent_redemptions_by_two_keys_of_one_code_issue_one_token_and_revoke_it(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Ten requests with each of two keys of the app at once: one spends the code; a request with
    the other key is a replay, which revokes the token, so at most the retries that came first got it."""
    flow = await new_flow(client)
    ctx, who = app.state.ctx, Client(flow.app_id, flow.key_id)
    created = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert created.status_code == 200, created.text
    other = KeyPair(created.json()["data"]["key_id"], created.json()["data"]["key_secret"])
    code = await _new_code(ctx, who, flow.user_id)
    code_hash = ctx.hasher.hash(code)
    keys = [KeyPair(flow.key_id, flow.key_secret), other] * 10
    results = await asyncio.gather(*(authorization_code.redeem(ctx, key, code) for key in keys), return_exceptions=True)
    won = [r for r in results if isinstance(r, IssuedToken)]
    assert won and len({_jti(r.access_token) for r in won}) == 1, results
    assert all(isinstance(r, InvalidGrant) for r in results if not isinstance(r, IssuedToken)), results
    assert len(won) <= 10
    assert (await _code(ctx, code_hash)).access_jti == _jti(won[0].access_token)
    of_user = audit_events.c.user_id == flow.user_id
    assert await _count(ctx, audit_events, of_user, audit_events.c.event == "code_replayed") >= 10
    assert not any([await _active(ctx, r.access_token) for r in won])


async def test_the_one_statement_spends_a_code_once(app: Any, client: httpx.AsyncClient) -> None:
    """PostgreSQL: the statement itself, run by two connections at once on one code."""
    ctx, who, user_id, auth = await _setup(app, client)
    if ctx.db.is_sqlite:
        pytest.skip("the one-statement redemption is PostgreSQL's")
    code = await _new_code(ctx, who, user_id)
    code_hash, now = ctx.hasher.hash(code), ctx.now()

    jtis = [f"00000000-0000-7000-8000-{secrets.token_hex(6)}" for _ in range(10)]

    async def spend(n: int) -> bool:
        jti = jtis[n]
        access = {"jti": jti, "app_id": who.app_id, "user_id": user_id, "key_id": who.key_id, "code_hash": code_hash,
                  "scope": "read_profile", "issued_at": now, "expires_at": now + 60, "dpop_jkt": None, "audience": None}
        event = audit.entry(ctx, "code_redeemed", actor=who.app_id, user_id=user_id, app_id=who.app_id, now=now, jti=jti)
        async with ctx.db.autocommit() as conn:
            return await code_store.spend_and_issue(conn, code_hash, who.app_id, now, access=access, refresh=None, audit=event)

    spent = await asyncio.gather(*(spend(n) for n in range(8)))
    assert sorted(spent) == [False] * 7 + [True]
    winner = jtis[spent.index(True)]
    assert (await _code(ctx, code_hash)).access_jti == winner
    assert await _count(ctx, audit_events, audit_events.c.user_id == user_id, audit_events.c.event == "code_redeemed") == 1
    # Spent: once more writes nothing.
    assert await spend(9) is False
    assert (await _code(ctx, code_hash)).access_jti == winner


async def test_a_refresh_scope_beyond_the_grant_leaves_the_token_unrotated(app: Any, client: httpx.AsyncClient) -> None:
    ctx, who, user_id, auth = await _setup(app, client)
    code = await _new_code(ctx, who, user_id)
    first = await authorization_code.redeem(ctx, auth, code, with_refresh_token=True)
    token_hash = ctx.hasher.hash(first.refresh_token)
    code_hash = ctx.hasher.hash(code)
    with pytest.raises(InvalidScope):
        await refresh_token.refresh(ctx, auth, first.refresh_token, "read_profile admin")
    [row] = await _rows(ctx, select(refresh_tokens.c.rotated_at).where(refresh_tokens.c.token_hash == token_hash))
    assert row.rotated_at is None

    rotated = await refresh_token.refresh(ctx, auth, first.refresh_token, "read_profile")
    assert rotated.scope == "read_profile"
    [successor] = await _rows(ctx, select(refresh_tokens).where(refresh_tokens.c.token_hash == ctx.hasher.hash(rotated.refresh_token)))
    assert (successor.scope, successor.access_jti, successor.code_hash) == ("read_profile write_data", _jti(rotated.access_token), code_hash)
    access = access_tokens.claims_of(ctx, rotated.access_token)
    assert access is not None and (access["scope"], access["family"], access["user_id"]) == ("read_profile", code_hash, user_id)
    assert await _active(ctx, rotated.access_token)


async def test_the_one_statement_rotates_a_refresh_token_once(app: Any, client: httpx.AsyncClient) -> None:
    """PostgreSQL: the rotation statement itself, run by several connections at once on one token."""
    ctx, who, user_id, auth = await _setup(app, client)
    if ctx.db.is_sqlite:
        pytest.skip("the one-statement rotation is PostgreSQL's")
    code = await _new_code(ctx, who, user_id)
    first = await authorization_code.redeem(ctx, auth, code, with_refresh_token=True)
    token_hash, code_hash, now = ctx.hasher.hash(first.refresh_token), ctx.hasher.hash(code), ctx.now()

    async def rotate(n: int) -> bool:
        jti = f"00000000-0000-7000-8000-{secrets.token_hex(6)}"
        successor = {"token_hash": secrets.token_hex(32), "code_hash": code_hash, "app_id": who.app_id,
                     "user_id": user_id, "scope": "read_profile", "access_jti": jti, "issued_at": now, "expires_at": now + 60,
                     "auth_time": None, "session_jti": None,  # OpenID Connect (migration 0012): not an OpenID grant
                     "dpop_jkt": None,  # DPoP (migration 0015): a bearer token
                     "resources": None,  # RFC 8707 (migration 0019): bound to no resource
                     "key_id": who.key_id,  # migration 0017: the key that authenticated the rotation
                     "amr": None}  # migration 0022: signed in with a password alone
        async with ctx.db.autocommit() as conn:
            return await token_store.rotate_and_issue(conn, token_hash, who.app_id, now, code_hash, refresh=successor)

    assert sorted(await asyncio.gather(*(rotate(n) for n in range(8)))) == [False] * 7 + [True]
    assert await _count(ctx, refresh_tokens, refresh_tokens.c.code_hash == code_hash) == 2


async def test_the_neucron_request_verifies_the_key_before_the_code(app: Any, client: httpx.AsyncClient) -> None:
    """The Neucron key pair (on PostgreSQL the key and the code in one read): a wrong or
    unknown key is refused without spending the code; then the right key redeems it once."""
    from grantd.core.errors import InvalidClient

    flow = await new_flow(client)
    ctx, who = app.state.ctx, Client(flow.app_id, flow.key_id)
    code = await _new_code(ctx, who, flow.user_id)
    code_hash = ctx.hasher.hash(code)
    for key_id, secret in ((flow.key_id, flow.key_secret[:-4] + "AAAA"), ("nokey" + flow.key_id[5:], flow.key_secret)):
        with pytest.raises(InvalidClient):
            await authorization_code.redeem(ctx, KeyPair(key_id, secret), code)
    [row] = await _rows(ctx, select(authorization_codes.c.redeemed_at).where(authorization_codes.c.code_hash == code_hash))
    assert row.redeemed_at is None
    issued = await authorization_code.redeem(ctx, KeyPair(flow.key_id, flow.key_secret), code, address="192.0.2.9")
    token = await _code(ctx, code_hash)
    assert (token.access_jti, token.key_id) == (_jti(issued.access_token), flow.key_id)
    assert await _active(ctx, issued.access_token)
    # Unknown code with the right key: invalid_grant, nothing written.
    with pytest.raises(InvalidGrant):
        await authorization_code.redeem(ctx, KeyPair(flow.key_id, flow.key_secret), secrets.token_urlsafe(32))
    # The same request again within the grace window: a retry, answered with the same token.
    again = await authorization_code.redeem(ctx, KeyPair(flow.key_id, flow.key_secret), code)
    assert _jti(again.access_token) == _jti(issued.access_token)
    # Replayed after it: refused, and the family it issued is revoked.
    redeemed_at = token.redeemed_at
    ctx.now = lambda: redeemed_at + ctx.settings.code_retry_grace + 1  # type: ignore[method-assign]
    try:
        with pytest.raises(InvalidGrant):
            await authorization_code.redeem(ctx, KeyPair(flow.key_id, flow.key_secret), code)
    finally:
        del ctx.now
    assert not await _active(ctx, issued.access_token)


async def test_the_refresh_request_verifies_the_key_before_the_token(app: Any, client: httpx.AsyncClient) -> None:
    """A client secret at the refresh grant (on PostgreSQL the key and the refresh token in one read): a wrong
    secret, or a client_id of another app, is refused without rotating; the right one rotates."""
    from grantd.core.errors import InvalidClient

    flow = await new_flow(client)
    ctx, who = app.state.ctx, Client(flow.app_id, flow.key_id)
    first = await authorization_code.redeem(ctx, KeyPair(flow.key_id, flow.key_secret), await _new_code(ctx, who, flow.user_id), with_refresh_token=True)
    token_hash = ctx.hasher.hash(first.refresh_token)
    for client_id, secret in ((None, flow.key_secret[:-4] + "AAAA"), ("another-app", flow.key_secret), (None, "nokey")):
        with pytest.raises(InvalidClient):
            await refresh_token.refresh(ctx, ClientSecret(client_id, secret), first.refresh_token)
    [row] = await _rows(ctx, select(refresh_tokens.c.rotated_at).where(refresh_tokens.c.token_hash == token_hash))
    assert row.rotated_at is None
    rotated = await refresh_token.refresh(ctx, ClientSecret(flow.app_id, flow.key_secret), first.refresh_token, "read_profile")
    assert rotated.scope == "read_profile"
    [row] = await _rows(ctx, select(refresh_tokens.c.rotated_at).where(refresh_tokens.c.token_hash == token_hash))
    assert row.rotated_at is not None
    with pytest.raises(InvalidGrant):
        await refresh_token.refresh(ctx, ClientSecret(None, flow.key_secret), secrets.token_urlsafe(32))


async def test_the_code_grant_verifies_the_key_before_the_code(app: Any, client: httpx.AsyncClient) -> None:
    """A client secret at the authorization_code grant (the OAuth 2.0 authorization_code grant; on PostgreSQL the key
    and the code in one read): a wrong secret, a client_id of another app or a wrong PKCE verifier
    is refused without spending the code; then the right request redeems it, with a refresh token."""
    from grantd.core.errors import InvalidClient

    flow = await new_flow(client)
    ctx, who = app.state.ctx, Client(flow.app_id, flow.key_id)
    verifier = secrets.token_urlsafe(48)
    code = await _new_code(ctx, who, flow.user_id, challenge=s256(verifier))
    code_hash = ctx.hasher.hash(code)
    for client_id, secret in ((None, flow.key_secret[:-4] + "AAAA"), ("another-app", flow.key_secret), (None, "nokey")):
        with pytest.raises(InvalidClient):
            await authorization_code.redeem(ctx, ClientSecret(client_id, secret), code, code_verifier=verifier)
    with pytest.raises(InvalidGrant):
        await authorization_code.redeem(ctx, ClientSecret(flow.app_id, flow.key_secret), code, code_verifier=secrets.token_urlsafe(48))
    [row] = await _rows(ctx, select(authorization_codes.c.redeemed_at).where(authorization_codes.c.code_hash == code_hash))
    assert row.redeemed_at is None

    issued = await authorization_code.redeem(ctx, ClientSecret(flow.app_id, flow.key_secret), code, code_verifier=verifier, redirect_uri=REDIRECT_URI, with_refresh_token=True
    )
    token = access_tokens.claims_of(ctx, issued.access_token)
    assert token is not None
    assert (token["jti"], token["key_id"], token["user_id"]) == (_jti(issued.access_token), flow.key_id, flow.user_id)
    assert await _active(ctx, issued.access_token)
    [refresh] = await _rows(ctx, select(refresh_tokens.c.token_hash).where(refresh_tokens.c.code_hash == code_hash))
    assert refresh.token_hash == ctx.hasher.hash(issued.refresh_token)
    with pytest.raises(InvalidGrant):  # replayed: refused, and the family revoked
        await authorization_code.redeem(ctx, ClientSecret(None, flow.key_secret), code, code_verifier=verifier)
    assert not await _active(ctx, issued.access_token)


async def test_a_new_code_is_written_with_its_audit_row(app: Any, client: httpx.AsyncClient) -> None:
    """The code and its code_issued row are one write (on PostgreSQL one statement in autocommit,
    run again when its connection is found dead): the same code written twice fails, whole, and
    leaves one code and one audit row."""
    ctx, who, user_id, auth = await _setup(app, client)
    code = secrets.token_urlsafe(32)
    row, event = _code_rows(ctx, code, who, user_id)
    event["detail"] = f'{{"marker":"{code[:12]}"}}'  # to find this row among the app's others
    async with ctx.db.write_one() as tx:
        await code_store.insert_code(tx, row, event)
    with pytest.raises(IntegrityError):
        async with ctx.db.write_one() as tx:
            await code_store.insert_code(tx, row, event)
    assert await _count(ctx, authorization_codes, authorization_codes.c.code_hash == row["code_hash"]) == 1
    assert await _count(ctx, audit_events, audit_events.c.detail == event["detail"]) == 1


async def test_a_code_issued_while_granted_needs_the_grant(app: Any, client: httpx.AsyncClient) -> None:
    """An authorization checks the user's grant, then writes the code only while the grant still
    exists: for a user with no grant to the app (one revoked in between), nothing is written."""
    ctx, who, user_id, auth = await _setup(app, client)  # new_flow's user has not authorized the app
    for granted in (False, True):
        if granted:
            async with ctx.db.write() as tx:
                await grant_store.insert_if_absent(
                    tx, grant_id=str(uuid.uuid4()), user_id=user_id, app_id=who.app_id, permissions="read_profile", now=1
                )
        code = secrets.token_urlsafe(32)
        row, event = _code_rows(ctx, code, who, user_id)
        event["detail"] = f'{{"marker":"{code[:12]}"}}'
        async with ctx.db.write_one() as tx:
            assert await code_store.insert_code(tx, row, event, while_granted=True) is granted
        assert await _count(ctx, authorization_codes, authorization_codes.c.code_hash == row["code_hash"]) == granted
        assert await _count(ctx, audit_events, audit_events.c.detail == event["detail"]) == granted
