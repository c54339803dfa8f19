"""The audit log: each security-relevant event is recorded with who, what, when and from where,
never a secret; a user sees the events about them and their apps, an operator sees all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from sqlalchemy import or_, select, update

from grantd.store.schema import audit_events, refresh_tokens, users
from support.neucron import PASSWORD, Flow, new_flow, sign_up, unique_email

pytestmark = pytest.mark.db

ADDRESS = "127.0.0.1"  # httpx's ASGITransport presents every in-process request from this client address


async def rows_about(app: Any, *, user_ids: tuple[str, ...] = (), app_ids: tuple[str, ...] = ()) -> list[Any]:
    """The audit rows about these users or apps, oldest first."""
    conditions = [audit_events.c.user_id.in_(user_ids), audit_events.c.app_id.in_(app_ids)]
    async with app.state.ctx.db.read() as conn:
        query = select(audit_events).where(or_(*conditions)).order_by(audit_events.c.id)
        return list((await conn.execute(query)).all())


def events(rows: list[Any]) -> list[str]:
    return [row.event for row in rows]


def only(rows: list[Any], event: str) -> Any:
    found = [row for row in rows if row.event == event]
    assert len(found) == 1, (event, events(rows))
    return found[0]


async def get_audit(client: httpx.AsyncClient, token: str, **params: Any) -> httpx.Response:
    return await client.get("/v1/audit", params=params, headers={"Authorization": f"Bearer {token}"})


async def audit_of(client: httpx.AsyncClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = await get_audit(client, token, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "status_code"} and body["status_code"] == 200
    return body["data"]["events"]


async def form_token(client: httpx.AsyncClient, flow: Flow, **form: str) -> httpx.Response:
    return await client.post(
        "/oauth2/token",
        content=urlencode({**form, "client_id": flow.app_id, "client_secret": flow.key_secret}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


# ---------------------------------------------------------------- what is recorded


async def test_a_full_flow_records_who_did_what_from_where(app: Any, client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    email = unique_email()
    user_id, _ = await sign_up(client, email)
    response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    flow.user_id, flow.user_token = user_id, response.json()["data"]["access_token"]
    code = await flow.code(permissions="read_profile")
    assert (await flow.redeem(code)).status_code == 200
    dev = {"Authorization": flow.dev_token}
    assert (await client.patch(f"/v1/apps/{flow.app_id}", json={"name": "Renamed"}, headers=dev)).status_code == 200
    response = await client.delete(f"/v1/grants/{flow.app_id}", headers={"Authorization": flow.user_token})
    assert response.status_code == 200, response.text
    assert (await client.delete(f"/v1/apps/{flow.app_id}/keys/{flow.key_id}", headers=dev)).status_code == 200
    assert (await client.delete(f"/v1/apps/{flow.app_id}", headers=dev)).status_code == 200

    rows = await rows_about(app, user_ids=(user_id,), app_ids=(flow.app_id,))
    created = only(rows, "app_created")
    dev_id = created.actor
    rows = await rows_about(app, user_ids=(user_id, dev_id), app_ids=(flow.app_id,))
    expected = {
        # event: (actor, user_id, app_id, detail)
        "app_created": (dev_id, dev_id, flow.app_id, {"client_type": "confidential", "permissions": ["read_profile", "write_data"]}),
        "key_created": (dev_id, dev_id, flow.app_id, {"key_id": flow.key_id}),
        "login_succeeded": (user_id, user_id, None, None),
        "consent_granted": (user_id, user_id, flow.app_id, {"permissions": ["read_profile"]}),
        "code_issued": (user_id, user_id, flow.app_id, {"permissions": ["read_profile"]}),
        "code_redeemed": (flow.app_id, user_id, flow.app_id, None),
        "app_updated": (dev_id, dev_id, flow.app_id, {"fields": ["name"]}),
        "grant_revoked": (user_id, user_id, flow.app_id, {}),
        "key_revoked": (dev_id, dev_id, flow.app_id, {"key_id": flow.key_id}),
        "app_disabled": (dev_id, dev_id, flow.app_id, {}),
    }
    for event, (actor, uid, app_id, detail) in expected.items():
        row = only(rows, event)
        assert (row.actor, row.user_id, row.app_id, row.address) == (actor, uid, app_id, ADDRESS), event
        if detail is not None:
            assert json.loads(row.detail) == detail, event
    signups = [row for row in rows if row.event == "signup"]
    assert {(row.actor, row.user_id, row.address) for row in signups} == {(dev_id, dev_id, ADDRESS), (user_id, user_id, ADDRESS)}
    redeemed = json.loads(only(rows, "code_redeemed").detail)
    assert set(redeemed) == {"jti", "key_id"} and redeemed["key_id"] == flow.key_id
    login = json.loads(only(rows, "login_succeeded").detail)
    assert set(login) == {"jti"}
    # In the order they happened, each with a time.
    assert events(rows) == [
        "signup",  # the developer
        "app_created",
        "key_created",
        "signup",  # the user
        "login_succeeded",
        "consent_granted",
        "code_issued",
        "code_redeemed",
        "app_updated",
        "grant_revoked",
        "key_revoked",
        "app_disabled",
    ]
    assert all(row.occurred_at > 0 for row in rows)
    assert [row.occurred_at for row in rows] == sorted(row.occurred_at for row in rows)


async def test_consent_is_recorded_once_with_only_the_permissions_added(app: Any, client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    await flow.code(permissions="read_profile")
    await flow.code(permissions="read_profile")  # within the grant: no new consent
    assert (await flow.grant(permissions="read_profile,write_data")).status_code == 200
    rows = await rows_about(app, user_ids=(flow.user_id,))
    consents = [json.loads(row.detail) for row in rows if row.event == "consent_granted"]
    assert consents == [{"permissions": ["read_profile"]}, {"permissions": ["write_data"]}]
    assert events(rows).count("code_issued") == 2


async def test_a_wrong_password_is_a_login_failure(app: Any, client: httpx.AsyncClient) -> None:
    email = unique_email()
    user_id, _ = await sign_up(client, email)
    response = await client.post("/v1/auth/login", json={"email": email, "password": "wrong " + PASSWORD})
    assert response.status_code == 401
    failed = only(await rows_about(app, user_ids=(user_id,)), "login_failed")
    assert (failed.actor, failed.user_id, failed.app_id, failed.address) == ("anonymous", user_id, None, ADDRESS)
    assert json.loads(failed.detail) == {"reason": "wrong_password"}

    # An unknown account is recorded too (for the operator), about no user.
    async with app.state.ctx.db.read() as conn:
        before = (await conn.execute(select(audit_events.c.id).order_by(audit_events.c.id.desc()).limit(1))).scalar()
    response = await client.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert response.status_code == 401
    async with app.state.ctx.db.read() as conn:
        new = (await conn.execute(select(audit_events).where(audit_events.c.id > before))).all()
    unknown = [row for row in new if row.event == "login_failed" and json.loads(row.detail) == {"reason": "unknown_account"}]
    assert unknown and unknown[0].user_id is None and unknown[0].actor == "anonymous"


async def test_a_replayed_code_is_recorded(app: Any, client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    code = await flow.code()
    redeemed = await flow.redeem(code)
    assert redeemed.status_code == 200
    # The same request again within the grace window is a retry, recorded as such.
    assert (await flow.redeem(code)).status_code == 200
    retried = only(await rows_about(app, app_ids=(flow.app_id,)), "code_retried")
    assert (retried.actor, retried.user_id, retried.app_id, retried.address) == (flow.app_id, flow.user_id, flow.app_id, ADDRESS)
    jti = jwt.decode(redeemed.json()["data"]["access_token"], options={"verify_signature": False})["jti"]
    assert json.loads(retried.detail) == {"jti": jti, "key_id": flow.key_id}
    # Another key of the app presenting it is a replay.
    created = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    spare = created.json()["data"]
    assert (await flow.redeem(code, key_id=spare["key_id"], key_secret=spare["key_secret"])).status_code == 401
    rows = await rows_about(app, app_ids=(flow.app_id,))
    replayed = only(rows, "code_replayed")
    assert (replayed.actor, replayed.user_id, replayed.app_id, replayed.address) == (
        flow.app_id, flow.user_id, flow.app_id, ADDRESS,
    )
    assert json.loads(replayed.detail) == {"family_revoked": True, "key_id": spare["key_id"]}
    assert events(rows).count("code_redeemed") == 1


async def test_refresh_token_reuse_beyond_the_grace_window_is_recorded(app: Any, client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    code = await flow.code()
    first = (await form_token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)).json()
    second = await form_token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200, second.text
    rows = await rows_about(app, app_ids=(flow.app_id,))
    assert "refresh_token_reused" not in events(rows)  # a rotation that succeeds is not audited

    ctx = app.state.ctx
    async with ctx.db.write() as tx:
        await tx.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == ctx.hasher.hash(first["refresh_token"]))
            .values(rotated_at=refresh_tokens.c.rotated_at - ctx.settings.refresh_token_grace - 60)
        )
    reused = await form_token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400
    row = only(await rows_about(app, app_ids=(flow.app_id,)), "refresh_token_reused")
    assert (row.actor, row.user_id, row.app_id, row.address) == (flow.app_id, flow.user_id, flow.app_id, ADDRESS)
    assert json.loads(row.detail) == {"family_revoked": True, "key_id": flow.key_id}


# ---------------------------------------------------------------- who sees what


async def test_a_user_sees_their_own_events_and_nobody_elses(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    await flow.redeem(await flow.code())
    mine = await audit_of(client, flow.user_token)
    assert {e["event"] for e in mine} >= {"signup", "consent_granted", "code_issued", "code_redeemed"}
    assert all(e["user_id"] == flow.user_id for e in mine)
    assert [e["id"] for e in mine] == sorted((e["id"] for e in mine), reverse=True)  # newest first
    assert all(e["occurred_at"].endswith("Z") for e in mine)
    issued = next(e for e in mine if e["event"] == "code_issued")
    assert issued["actor"] == flow.user_id and issued["address"] == ADDRESS and issued["app_id"] == flow.app_id

    _, stranger = await sign_up(client)
    theirs = await audit_of(client, stranger)
    assert [e["event"] for e in theirs] == ["signup"]
    assert all(e["user_id"] != flow.user_id and e["app_id"] != flow.app_id for e in theirs)
    # Also at the root, like every Neucron route; and only for a signed-in user.
    response = await client.get("/audit", headers={"Authorization": stranger})
    assert response.status_code == 200 and [e["event"] for e in response.json()["data"]["events"]] == ["signup"]
    assert (await client.get("/v1/audit")).status_code == 401


async def test_a_developer_sees_the_events_of_their_app(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    await flow.redeem(await flow.code())
    seen = await audit_of(client, flow.dev_token)
    kinds = [e["event"] for e in seen]
    for event in ("app_created", "key_created", "consent_granted", "code_issued", "code_redeemed"):
        assert event in kinds, (event, kinds)
    consent = next(e for e in seen if e["event"] == "consent_granted")
    assert consent["user_id"] == flow.user_id and consent["app_id"] == flow.app_id
    assert consent["address"] is None  # another user's client address is not the developer's to see
    redeemed = next(e for e in seen if e["event"] == "code_redeemed")
    assert redeemed["actor"] == flow.app_id and redeemed["address"] == ADDRESS
    # The end user's view does not include the developer's app management.
    assert "app_created" not in [e["event"] for e in await audit_of(client, flow.user_token)]


async def test_since_and_limit(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    await flow.code()
    everything = await audit_of(client, flow.dev_token)
    assert len(everything) >= 4
    assert len(await audit_of(client, flow.dev_token, limit=2)) == 2
    assert await audit_of(client, flow.dev_token, since="2999-01-01T00:00:00Z") == []
    assert len(await audit_of(client, flow.dev_token, since="2000-01-01T00:00:00+02:00")) == len(everything)
    for params in ({"since": "yesterday"}, {"since": "2024-07-09T22:02:52"}, {"limit": 0}, {"limit": 501}):
        response = await get_audit(client, flow.dev_token, **params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"] == "invalid_request"


# ---------------------------------------------------------------- never a secret


async def test_no_secret_appears_in_any_audit_row(app: Any, client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    email = unique_email()
    user_id, signup_token = await sign_up(client, email)
    await client.post("/v1/auth/login", json={"email": email, "password": "not the " + PASSWORD})
    login = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    flow.user_id, flow.user_token = user_id, login.json()["data"]["access_token"]
    code = await flow.code()
    tokens = (await form_token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)).json()
    refreshed = (await form_token(client, flow, grant_type="refresh_token", refresh_token=tokens["refresh_token"])).json()
    await flow.redeem(code)  # a replay

    ctx = app.state.ctx
    secrets = [
        PASSWORD, "not the " + PASSWORD, flow.app_key, flow.key_secret, code, signup_token, flow.user_token,
        flow.dev_token, tokens["access_token"], tokens["refresh_token"], refreshed["access_token"],
        refreshed["refresh_token"],
    ]
    secrets += [ctx.hasher.hash(s) for s in secrets]  # nor their keyed hashes
    async with ctx.db.read() as conn:
        password_hash = (await conn.execute(select(users.c.password_hash).where(users.c.id == user_id))).scalar()
    secrets.append(password_hash)
    secrets += [s.split(".")[2] for s in secrets if s.count(".") == 2]  # nor a JWT's signature alone

    rows = await rows_about(app, user_ids=(user_id,), app_ids=(flow.app_id,))
    assert {"signup", "login_failed", "login_succeeded", "code_issued", "code_redeemed", "code_replayed"} <= set(events(rows))
    for row in rows:
        text = " ".join(str(value) for value in row)
        leaked = [s for s in secrets if s and s in text]
        assert leaked == [], (row.event, leaked)
        assert set(json.loads(row.detail)) <= {"jti", "key_id", "kid", "permissions", "fields", "client_type", "reason", "activates_at", "family_revoked"}


# ---------------------------------------------------------------- the operator's view


def test_operator_sees_every_event_with_grantd_audit(tmp_path: Path, secret_key: str) -> None:
    database = tmp_path / "audit.db"
    env = {
        **os.environ,
        "GRANTD_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "GRANTD_SECRET_KEY": secret_key,
        "GRANTD_DATA_DIR": str(tmp_path),
    }

    def grantd(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "grantd", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result

    email = f"op-{uuid.uuid4().hex[:8]}@example.com"
    user = json.loads(grantd("users", "create", "--email", email, "--password", PASSWORD, "--json").stdout)
    created = json.loads(
        grantd(
            "apps", "create", "--owner", email, "--name", "Ops App", "--redirect-uri", "https://ops.example/cb",
            "--permissions", "read_profile", "--json",
        ).stdout
    )
    key = json.loads(grantd("keys", "create", "--app", created["app_id"], "--json").stdout)
    rotated = json.loads(grantd("signing-keys", "rotate", "--json").stdout)

    output = grantd("audit", "--since", "1h", "--json").stdout
    listed = json.loads(output)["events"]
    by_event = {e["event"]: e for e in listed}
    # One signing_key_rotated per new key: an ES256 and an RS256 one.
    assert [e["event"] for e in listed] == ["signing_key_rotated"] * 2 + ["key_created", "app_created", "signup"]
    assert by_event["signup"]["user_id"] == user["user_id"]
    assert all(e["actor"] == "operator" and e["address"] is None for e in listed)
    assert by_event["app_created"]["app_id"] == created["app_id"]
    assert by_event["key_created"]["detail"] == {"key_id": key["key_id"]}
    rotations = {e["detail"]["algorithm"]: e["detail"] for e in listed if e["event"] == "signing_key_rotated"}
    assert {alg: d["kid"] for alg, d in rotations.items()} == {k["algorithm"]: k["kid"] for k in rotated["keys"]}
    assert {alg for alg in rotations} == {"ES256", "RS256"}
    for secret in (PASSWORD, created["app_key"], key["key_secret"]):
        assert secret not in output

    assert json.loads(grantd("audit", "--since", "2999-01-01T00:00:00Z", "--json").stdout) == {"events": []}
    text = grantd("audit", "--since", "2000-01-01T00:00:00Z").stdout
    assert "signing_key_rotated" in text and "actor=operator" in text
    bad = subprocess.run(
        [sys.executable, "-m", "grantd", "audit", "--since", "soon"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "--since" in bad.stderr
