"""A person's profile and the account calls of Neucron's v2 SDK: the profile's rules, the log-in
answer both SDKs read, ``GET /auth/user/info`` with a user token or an app's access token,
``PUT /auth/user/update``, ``PUT /auth/user/password`` from a fresh session only, the audit
event, and the account page's profile form.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from sqlalchemy import select

from grantd.core import profile
from grantd.core.errors import InvalidRequest
from grantd.store import users as user_store
from grantd.store.db import Database
from grantd.store.schema import audit_events
from support.neucron import PASSWORD, Flow, assert_error, sign_up, unique_email
from test_pages import ISSUER, assert_page_headers, assert_redirect, form, sign_in

V2_SDK = {"X-Neucron-SDK": "neucron-ts-sdk/2.2.3"}
PREFIXES = ("/v1", "")
PROFILE_KEYS = {
    "id", "email", "first_name", "last_name", "full_name", "user_name", "avatar", "phone_number", "language",
    "is_email_verified", "is_phone_verified", "platform",
}


def unique_user_name() -> str:
    return "u." + uuid.uuid4().hex[:20]


async def info(client: httpx.AsyncClient, token: str, prefix: str = "/v1") -> httpx.Response:
    return await client.get(prefix + "/auth/user/info", headers={"Authorization": token, **V2_SDK})


async def update(client: httpx.AsyncClient, token: str, body: Any, prefix: str = "/v1") -> httpx.Response:
    return await client.put(prefix + "/auth/user/update", json=body, headers={"Authorization": token, **V2_SDK})


async def new_password(client: httpx.AsyncClient, token: str, password: str, prefix: str = "/v1") -> httpx.Response:
    return await client.put(
        prefix + "/auth/user/password", json={"new_password": password}, headers={"Authorization": token, **V2_SDK}
    )


def flat(response: httpx.Response) -> dict[str, Any]:
    """A v2 success: 200, JSON, no envelope, no null anywhere."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "data" not in body and "status_code" not in body, body
    assert None not in body.values(), body
    return body


# ---------------------------------------------------------------- the rules (no database)


REFUSED = [
    ("first_name", "x" * 101),
    ("first_name", "Ada\x00"),
    ("first_name", "Ada\nLovelace"),
    ("last_name", "Love\u202elace"),  # a right-to-left override
    ("last_name", "y" * 101),
    ("last_name", "\x1b[31mred"),
    ("user_name", "ab"),
    ("user_name", "a" * 33),
    ("user_name", "ada lovelace"),
    ("user_name", "ada@home"),
    ("user_name", "adä"),
    ("user_name", "ada\t"),
    ("avatar", "http://images.example.com/a.png"),
    ("avatar", "javascript:alert(1)"),
    ("avatar", "data:image/png;base64,AAAA"),
    ("avatar", "https://user:pass@images.example.com/a.png"),
    ("avatar", "https://user@images.example.com/a.png"),
    ("avatar", "https://images.example.com/a b.png"),
    ("avatar", "https://images.example.com/" + "a" * 2030),
    ("avatar", "//images.example.com/a.png"),
    ("avatar", "/a.png"),
    ("avatar", "https:///a.png"),
    ("avatar", "https://images.example.com:99999/a.png"),
    ("avatar", "https://imagés.example.com/a.png"),
    ("avatar", "https://images.example.com/a.png\"onerror=\"x"),
    ("avatar", "HTTPS://images.example.com/a.png"),
    ("avatar", "https://images.example.com\\@evil.example/a.png"),
    ("phone_number", "4155550123"),
    ("phone_number", "+123456"),
    ("phone_number", "+1234567890123456"),
    ("phone_number", "+1 415 555 0123 ext 9"),
    ("phone_number", "+٤١٥٥٥٥٠١٢٣"),  # digits, but not ASCII ones
    ("language", "english"),
    ("language", "EN"),
    ("language", "e"),
    ("language", "en-"),
    ("language", "en_US"),
    ("language", "en-" + "a" * 9),
    ("language", "en-" + "-".join(["abcd"] * 8)),  # the shape, but longer than 35
]


@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_every_rule_is_refused_naming_its_field(field: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        profile.validate({field: value})
    assert refused.value.field == field
    assert refused.value.message.startswith(field), refused.value.message


def test_valid_values_are_normalized() -> None:
    assert profile.validate(
        {
            "first_name": "  Ada ",
            "last_name": "Lovelace-Byron d\u2019Este",
            "user_name": "Ada.L_1-x",
            "avatar": "https://images.example.com:8443/a.png?size=64#top",
            "phone_number": "+1 (415) 555-01.23",
            "language": "pt-BR",
            "unknown": "ignored",
            "email": "ignored@example.com",
        }
    ) == {
        "first_name": "Ada",
        "last_name": "Lovelace-Byron d\u2019Este",
        "user_name": "Ada.L_1-x",
        "avatar": "https://images.example.com:8443/a.png?size=64#top",
        "phone_number": "+14155550123",
        "language": "pt-BR",
    }
    # An empty value clears a field; None leaves it as it is.
    assert profile.validate({"first_name": "", "last_name": "   ", "language": None}) == {
        "first_name": None,
        "last_name": None,
    }
    assert profile.validate({"first_name": "\u00c5sa \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u4e2d\u6587"})
    assert profile.validate({"language": "sgn-BE-FR", "user_name": "abc"})["language"] == "sgn-BE-FR"
    with pytest.raises(InvalidRequest) as refused:
        profile.validate({"first_name": 3})
    assert refused.value.field == "first_name"


_SHAPES = {
    "user_name": re.compile(r"[A-Za-z0-9._-]{3,32}"),
    "phone_number": re.compile(r"\+[0-9]{7,15}"),
    "language": re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*"),
}


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(profile.FIELDS),
    st.one_of(
        st.text(max_size=120),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCZ0189._-+:/@ \t\n\x00\u202e()", max_size=60),
        st.from_regex(r"https://[a-z]{1,10}\.example\.com/[ -~]{0,30}", fullmatch=True),
    ),
)
def test_validate_accepts_only_what_its_rules_allow(field: str, value: str) -> None:
    """Whatever is sent: a value within the field's rules, or InvalidRequest naming the field."""
    try:
        valid = profile.validate({field: value})
    except InvalidRequest as exc:
        assert exc.field == field
        return
    result = valid[field]
    if result is None:
        assert value.strip() == ""
        return
    assert result == result.strip() and result
    assert all(ord(ch) >= 0x20 and ord(ch) != 0x7F and not 0x80 <= ord(ch) < 0xA0 for ch in result)
    assert "\u202e" not in result
    if field in _SHAPES:
        assert _SHAPES[field].fullmatch(result), result
    if field in ("first_name", "last_name"):
        assert len(result) <= profile.NAME_MAX
    if field == "language":
        assert len(result) <= profile.LANGUAGE_MAX
    if field == "avatar":
        assert result.startswith("https://") and len(result) <= profile.AVATAR_MAX
        assert result.isascii() and not any(ch.isspace() for ch in result)
        assert "@" not in result.split("/")[2]


# ---------------------------------------------------------------- log-in: both SDKs


@pytest.mark.db
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_login_answers_both_sdks(client: httpx.AsyncClient, prefix: str) -> None:
    email = unique_email()
    user_id, _ = await sign_up(client, email)
    # Neucron's v2 SDK: the envelope's keys, as v1 has them, and top-level token and platforms beside them.
    response = await client.post(prefix + "/auth/login", json={"email": email, "password": PASSWORD}, headers=V2_SDK)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert set(body) == {"data", "status_code", "token", "platforms"}, body
    assert body["status_code"] == 200
    assert set(body["data"]) == {"user_id", "access_token", "expires_at"}
    assert body["data"]["user_id"] == user_id
    assert body["token"] == body["data"]["access_token"]
    assert body["platforms"] == []
    # The token is a user token: it reads the user, bare (as the v2 SDK sends it) or as Bearer.
    assert flat(await info(client, body["token"], prefix))["id"] == user_id
    # A v1 client (no X-Neucron-SDK) gets the same body: v1's envelope is all of it that v1 reads.
    response = await client.post(prefix + "/auth/login", json={"email": email, "password": PASSWORD})
    v1 = response.json()
    assert set(v1) == {"data", "status_code", "token", "platforms"}, response.text
    assert v1["status_code"] == 200 and set(v1["data"]) == {"user_id", "access_token", "expires_at"}
    assert v1["data"]["user_id"] == user_id and v1["token"] == v1["data"]["access_token"]
    # Wrong credentials: the same error body for both.
    wrong = await client.post(prefix + "/auth/login", json={"email": email, "password": "nope " + PASSWORD}, headers=V2_SDK)
    assert_error(wrong, 401, "invalid_grant")


# ---------------------------------------------------------------- user info


@pytest.mark.db
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_user_info_with_a_session_token(client: httpx.AsyncClient, prefix: str) -> None:
    email = unique_email()
    user_id, token = await sign_up(client, email)
    for authorization in (token, f"Bearer {token}", f"bearer {token}"):
        body = flat(await info(client, authorization, prefix))
        # A new account: no profile yet, so only what is always there.
        assert body == {
            "id": user_id, "email": email, "is_email_verified": False, "is_phone_verified": False, "platform": []
        }
        assert "no-store" in (await info(client, authorization, prefix)).headers["cache-control"]
    assert_error(await client.get(prefix + "/auth/user/info"), 401, "invalid_token")
    assert_error(await info(client, token + "x", prefix), 401, "invalid_token")
    await client.post("/v1/auth/logout", headers={"Authorization": token})
    assert_error(await info(client, token, prefix), 401, "invalid_token")


async def _access_token(flow: Flow) -> str:
    response = await flow.redeem(await flow.code())
    assert response.status_code == 200, response.text
    return response.json()["data"]["access_token"]


@pytest.mark.db
async def test_user_info_with_an_apps_access_token(client: httpx.AsyncClient, flow: Flow) -> None:
    """What the v2 SDK does right after the code exchange: the app's new access token reads its user."""
    user_name = unique_user_name()
    assert (await update(client, flow.user_token, {"user_name": user_name})).status_code == 200
    token = await _access_token(flow)
    for authorization in (token, f"Bearer {token}"):
        body = flat(await info(client, authorization))
        assert body["id"] == flow.user_id and body["user_name"] == user_name
    # Only the user's own token may change the user: an app's token may not.
    assert_error(await update(client, token, {"first_name": "Mallory"}), 401, "invalid_token")
    assert_error(await new_password(client, token, "an app's new passphrase"), 401, "invalid_token")

    # Revoked (RFC 7009): refused.
    revoked = await _access_token(flow)
    response = await client.post("/oauth2/revoke", data={"token": revoked}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    assert_error(await info(client, revoked), 401, "invalid_token")
    # The app disabled: every token of it refused.
    assert flat(await info(client, token))["id"] == flow.user_id
    response = await client.delete(f"/v1/apps/{flow.app_id}", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    assert_error(await info(client, token), 401, "invalid_token")


@pytest.mark.db
async def test_user_info_refuses_an_apps_own_token_and_an_expired_one(
    client: httpx.AsyncClient, flow: Flow, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(flow.app_id, flow.key_secret)
    )
    assert response.status_code == 200, response.text
    app_token = response.json()["access_token"]
    assert_error(await info(client, app_token), 401, "invalid_token")
    assert_error(await info(client, f"Bearer {app_token}"), 401, "invalid_token")

    token = await _access_token(flow)
    ctx = app.state.ctx
    later = ctx.now() + ctx.settings.access_token_ttl + 1
    monkeypatch.setattr(ctx, "now", lambda: later)
    assert_error(await info(client, token), 401, "invalid_token")


# ---------------------------------------------------------------- update


@pytest.mark.db
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_update_then_info(client: httpx.AsyncClient, prefix: str) -> None:
    email = unique_email()
    user_id, token = await sign_up(client, email)
    user_name = unique_user_name()
    changes = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "user_name": user_name,
        "avatar": "https://images.example.com/ada.png",
        "phone_number": "+44 20 7946 0958",
        "language": "en-GB",
        # What grantd does not hold is ignored, not stored.
        "country_code": "GB",
        "is_email_verified": True,
        "address": {"city": "London"},
    }
    response = await update(client, token, changes, prefix)
    body = flat(response)
    assert set(body) == {"message"} and body["message"]
    assert flat(await info(client, token, prefix)) == {
        "id": user_id,
        "email": email,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "full_name": "Ada Lovelace",
        "user_name": user_name,
        "avatar": "https://images.example.com/ada.png",
        "phone_number": "+442079460958",
        "language": "en-GB",
        "is_email_verified": False,
        "is_phone_verified": False,
        "platform": [],
    }
    assert set(flat(await info(client, token, prefix))) == PROFILE_KEYS
    # Partial: only what is sent changes; "" clears, null leaves as is.
    flat(await update(client, token, {"last_name": "", "avatar": None, "language": "pt-BR"}, prefix))
    body = flat(await info(client, token, prefix))
    assert "last_name" not in body and body["full_name"] == "Ada" and body["language"] == "pt-BR"
    assert body["avatar"] == "https://images.example.com/ada.png"
    # Nothing to change: still a 200.
    flat(await update(client, token, {}, prefix))
    flat(await update(client, token, {"first_name": "Ada"}, prefix))


@pytest.mark.db
async def test_update_refuses_each_rule_in_the_error_body(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    for field, value in REFUSED:
        if "\x00" in value:
            continue  # refused before the rules, by the wire (NUL cannot reach PostgreSQL)
        body = assert_error(await update(client, token, {field: value}), 400, "invalid_request")
        assert field in body["message"], (field, value, body)
    for body in ({"first_name": 3}, {"user_name": ["a"]}, [], "x", {"first_name": "Ada\x00"}):
        assert_error(await update(client, token, body), 400, "invalid_request")
    # Nothing was written by any of them.
    assert set(flat(await info(client, token))) == {"id", "email", "is_email_verified", "is_phone_verified", "platform"}
    assert_error(await update(client, "", {"first_name": "Ada"}), 401, "invalid_token")


@pytest.mark.db
async def test_a_taken_user_name_is_a_conflict_whatever_its_case(client: httpx.AsyncClient) -> None:
    user_name = unique_user_name()
    _, first = await sign_up(client)
    _, second = await sign_up(client)
    flat(await update(client, first, {"user_name": user_name}))
    for taken in (user_name, user_name.upper(), user_name.capitalize()):
        assert_error(await update(client, second, {"user_name": taken, "first_name": "Eve"}), 409, "conflict")
    # The refused change wrote nothing, not even the other field.
    assert "first_name" not in flat(await info(client, second))
    # Its owner may change its case; once released, another may take it.
    flat(await update(client, first, {"user_name": user_name.upper()}))
    assert flat(await info(client, first))["user_name"] == user_name.upper()
    flat(await update(client, first, {"user_name": ""}))
    flat(await update(client, second, {"user_name": user_name}))
    assert flat(await info(client, second))["user_name"] == user_name


@pytest.mark.db
async def test_a_profile_change_is_audited_with_field_names_only(app: Any, client: httpx.AsyncClient) -> None:
    user_id, token = await sign_up(client)
    secret_ish = {"first_name": "Zebulon", "phone_number": "+15550001111", "language": "fr"}
    flat(await update(client, token, secret_ish))
    flat(await update(client, token, {"first_name": "Zebulon"}))  # no change: no event
    async with app.state.ctx.db.read() as conn:
        rows = (
            await conn.execute(
                select(audit_events).where(audit_events.c.user_id == user_id, audit_events.c.event == "profile_updated")
            )
        ).all()
    assert len(rows) == 1, rows
    assert json.loads(rows[0].detail) == {"fields": ["first_name", "language", "phone_number"]}
    assert rows[0].actor == user_id
    for value in secret_ish.values():
        assert value not in repr(tuple(rows[0]))
    events = (await client.get("/v1/audit", headers={"Authorization": token})).json()["data"]["events"]
    assert [e["detail"] for e in events if e["event"] == "profile_updated"] == [
        {"fields": ["first_name", "language", "phone_number"]}
    ]


@pytest.mark.db
async def test_updated_at_moves_with_every_change(app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, token = await sign_up(client)
    ctx = app.state.ctx

    async def updated_at() -> int:
        async with ctx.db.read() as conn:
            return (await user_store.by_id(conn, user_id)).updated_at

    created = await updated_at()
    assert abs(created - time.time()) < 60
    later = created + 1000
    monkeypatch.setattr(ctx, "now", lambda: later)
    flat(await update(client, token, {"first_name": "Ada"}))
    assert await updated_at() == later
    monkeypatch.setattr(ctx, "now", lambda: later + 5)
    flat(await update(client, token, {"first_name": "Ada"}))  # unchanged: not touched
    assert await updated_at() == later


# ---------------------------------------------------------------- the store, on both databases


@pytest.mark.db
async def test_user_names_are_unique_whatever_their_case_in_the_store(any_database_url: str) -> None:
    db = Database(any_database_url)
    ids = [str(uuid.uuid4()) for _ in range(2)]
    user_name = unique_user_name()
    try:
        async with db.write() as tx:
            for user_id in ids:
                assert await user_store.insert_user(
                    tx, user_id=user_id, email=f"{user_id}@example.com", password_hash="x", now=1
                )
        async with db.write() as tx:
            assert await user_store.set_profile(tx, ids[0], {"user_name": user_name, "first_name": "A"}, 2)
            assert not await user_store.set_profile(tx, ids[1], {"user_name": user_name.upper()}, 3)
            # The failed write left the transaction usable (a savepoint), and wrote nothing.
            assert await user_store.set_profile(tx, ids[1], {"user_name": user_name + "2"}, 4)
        async with db.read() as conn:
            first, second = [await user_store.by_id(conn, user_id) for user_id in ids]
        assert (first.user_name, first.user_name_key, first.first_name, first.updated_at) == (
            user_name, user_name.lower(), "A", 2
        )
        assert (second.user_name, second.updated_at) == (user_name + "2", 4)
        async with db.write() as tx:  # cleared: the key goes with it, and two NULLs do not collide
            assert await user_store.set_profile(tx, ids[0], {"user_name": None}, 5)
            assert await user_store.set_profile(tx, ids[1], {"user_name": None}, 5)
        async with db.read() as conn:
            assert (await user_store.by_id(conn, ids[0])).user_name_key is None
    finally:
        await db.dispose()


# ---------------------------------------------------------------- password without the current one


@pytest.mark.db
async def test_password_from_a_fresh_session_ends_the_others(client: httpx.AsyncClient) -> None:
    email = unique_email()
    _, other = await sign_up(client, email)
    login = await client.post("/auth/login", json={"email": email, "password": PASSWORD}, headers=V2_SDK)
    fresh = login.json()["token"]
    for weak in ("short", "password123", email):
        assert_error(await new_password(client, fresh, weak), 400, "invalid_request")
    response = await new_password(client, fresh, "another good passphrase")
    assert set(flat(response)) == {"message"}
    assert "no-store" in response.headers["cache-control"]
    # This session stays; every other one is ended.
    assert flat(await info(client, fresh))["email"] == email
    assert_error(await info(client, other), 401, "invalid_token")
    assert_error(
        await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}), 401, "invalid_grant"
    )
    response = await client.post("/v1/auth/login", json={"email": email, "password": "another good passphrase"})
    assert response.status_code == 200, response.text


@pytest.mark.db
async def test_password_from_a_stale_session_is_refused(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = unique_email()
    _, token = await sign_up(client, email)
    _, other = await sign_up(client)
    ctx = app.state.ctx
    signed_in = ctx.now()
    monkeypatch.setattr(ctx, "now", lambda: signed_in + 5 * 60 + 1)
    body = assert_error(await new_password(client, token, "another good passphrase"), 401, "insufficient_user_authentication")
    assert "Sign in again" in body["message"]
    # Nothing changed: the old password works, the session lives.
    monkeypatch.undo()
    assert (await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 200
    assert flat(await info(client, token))["email"] == email
    # Within the five minutes: accepted.
    monkeypatch.setattr(ctx, "now", lambda: signed_in + 5 * 60 - 1)
    flat(await new_password(client, token, "another good passphrase"))
    monkeypatch.undo()
    assert flat(await info(client, other))  # another user's session is not touched


# ---------------------------------------------------------------- the account page


@pytest.fixture
async def browser(app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as b:
        yield b


@pytest.mark.db
async def test_account_page_profile_form(browser: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    email = unique_email()
    _, token = await sign_up(client, email)
    await sign_in(browser, email)
    page = await browser.get("/account")
    assert page.status_code == 200
    assert_page_headers(page)
    edit = form(page, "/account/profile")
    assert set(profile.FIELDS) <= {name for name, _ in edit.inputs}
    user_name = unique_user_name()
    good = {
        "first_name": "Ada", "last_name": "Lovelace", "user_name": user_name,
        "avatar": "https://images.example.com/ada.png", "phone_number": "+14155550123", "language": "en",
    }
    # Forged (no or another token): refused, nothing written.
    for data in (edit.data(csrf_token=None, **good), edit.data(csrf_token="A" * 43, **good)):
        response = await browser.post("/account/profile", data=data)
        assert response.status_code == 403
        assert_page_headers(response)
    assert "first_name" not in flat(await info(client, token))
    # Each refusal: a 400 page, the message next to its field, what was typed kept.
    for field, value in REFUSED:
        if "\x00" in value:
            continue
        response = await browser.post("/account/profile", data=edit.data(**{**good, field: value}))
        assert response.status_code == 400, (field, value, response.text)
        assert_page_headers(response)
        assert f'id="{field}-error"' in response.text, (field, value)
        assert f'id="{field}" name="{field}"' in response.text
        kept = "last_name" if field == "first_name" else "first_name"
        assert dict(form(response, "/account/profile").inputs)[kept] == good[kept]
    assert "first_name" not in flat(await info(client, token))
    # Saved.
    assert assert_redirect(await browser.post("/account/profile", data=edit.data(**good))) == "/account?saved=1"
    page = await browser.get("/account?saved=1")
    assert "Your profile was saved." in page.text
    assert {k: v for k, v in form(page, "/account/profile").inputs if k in good} == good
    # The picture is shown as its address, never loaded: no <img>, and the CSP still allows only 'self'.
    assert "https://images.example.com/ada.png" in page.text and "<img" not in page.text
    assert "img-src 'self';" in page.headers["content-security-policy"]
    assert flat(await info(client, token))["user_name"] == user_name
    # A user name another account holds: 409, next to the field.
    _, other = await sign_up(client)
    taken = unique_user_name()
    flat(await update(client, other, {"user_name": taken}))
    response = await browser.post("/account/profile", data=edit.data(**{**good, "user_name": taken.upper()}))
    assert response.status_code == 409 and 'id="user_name-error"' in response.text
    # Markup typed into a name is text on the page.
    response = await browser.post("/account/profile", data=edit.data(**{**good, "first_name": "<b>Ada</b>"}))
    assert assert_redirect(response) == "/account?saved=1"
    page = await browser.get("/account")
    assert "&lt;b&gt;Ada&lt;/b&gt;" in page.text and "<b>Ada</b>" not in page.text
    # Without a session: to the sign-in page.
    async with httpx.AsyncClient(transport=browser._transport, base_url=ISSUER) as stranger:
        response = await stranger.post("/account/profile", data=edit.data(**good))
        assert assert_redirect(response).startswith("/signin?")
