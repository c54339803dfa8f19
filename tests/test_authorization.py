"""The Neucron flow: consent, incremental consent, codes, the token endpoint, and the access token."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from grantd.store.schema import authorization_codes
from support.neucron import Flow, assert_error, new_flow, ok, sign_up

pytestmark = pytest.mark.db

# key_id and family: what can end the token (the key that obtained it, the code it descends from).
ACCESS_CLAIMS = {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "user_id", "permissions", "key_id", "family"}


async def jwks(client: httpx.AsyncClient) -> jwt.PyJWKSet:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return jwt.PyJWKSet.from_dict(response.json())


async def verify_access_token(client: httpx.AsyncClient, token: str, audience: str, issuer: str) -> dict[str, Any]:
    """Verify as a resource server would: only with the published keys."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    assert header.get("kid")
    keys = {key.key_id: key for key in (await jwks(client)).keys}
    key: jwt.PyJWK = keys[header["kid"]]
    assert key.algorithm_name == "ES256"
    return jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
    )


async def introspected(flow: Flow, token: str) -> dict[str, Any]:
    """What /oauth2/introspect says of ``token`` to ``flow``'s app."""
    response = await flow.client.post("/oauth2/introspect", data={"token": token}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def jti_of(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["jti"]


# ---------------------------------------------------------------- consent


async def test_first_authorize_records_consent(flow: Flow) -> None:
    data = ok(await flow.authorize(permissions="read_profile,write_data"))
    assert data["code"] and data["user_id"] == flow.user_id
    # Within the grant: no new consent needed, for the whole grant or any part of it.
    for permissions in ("read_profile,write_data", "write_data", "read_profile", "write_data,read_profile"):
        ok(await flow.authorize(permissions=permissions))


async def test_beyond_the_grant_needs_consent(flow: Flow) -> None:
    ok(await flow.authorize(permissions="read_profile"))
    message = assert_error(await flow.authorize(permissions="read_profile,write_data"), 400, "consent_required")["message"]
    assert "write_data" in message
    assert "read_profile" not in message
    # The refused request changed nothing: it is refused again.
    assert_error(await flow.authorize(permissions="write_data"), 400, "consent_required")
    ok(await flow.authorize(permissions="read_profile"))


async def test_grant_adds_permissions(flow: Flow) -> None:
    ok(await flow.authorize(permissions="read_profile"))
    response = await flow.grant(permissions="write_data")
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"message": "Permissions granted successfully."}, "status_code": 200}
    code = ok(await flow.authorize(permissions="read_profile,write_data"))["code"]
    claims = jwt.decode(ok(await flow.redeem(code))["access_token"], options={"verify_signature": False})
    assert claims["permissions"] == ["read_profile", "write_data"]
    # Granting again what is granted changes nothing.
    assert (await flow.grant(permissions="read_profile,write_data")).json()["data"] == {
        "message": "Permissions granted successfully."
    }
    ok(await flow.authorize(permissions="write_data"))


async def test_grant_creates_the_grant_when_there_is_none(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client, permissions="read_profile,write_data,manage_notifications")
    response = await flow.grant(permissions="read_profile,manage_notifications")
    assert response.json() == {"data": {"message": "Permissions granted successfully."}, "status_code": 200}
    ok(await flow.authorize(permissions="manage_notifications,read_profile"))
    message = assert_error(await flow.authorize(permissions="write_data"), 400, "consent_required")["message"]
    assert "write_data" in message


async def test_grants_are_per_user_and_per_app(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    ok(await flow.authorize(permissions="read_profile"))
    # Another user of the same app starts afresh: their first request records their own grant.
    other_user = Flow(**{**flow.__dict__})
    other_user.user_id, other_user.user_token = await sign_up(client)
    ok(await other_user.authorize(permissions="read_profile,write_data"))
    assert_error(await flow.authorize(permissions="write_data"), 400, "consent_required")
    # The same user with another app also starts afresh.
    other_app = await new_flow(client)
    other_app.user_id, other_app.user_token = flow.user_id, flow.user_token
    ok(await other_app.authorize(permissions="write_data"))


async def test_grant_runs_the_same_checks_as_authorize(flow: Flow) -> None:
    assert_error(await flow.grant(app_key="wrong"), 401, "invalid_client")
    assert_error(await flow.grant(app_id="00000000-0000-4000-8000-000000000000"), 401, "invalid_client")
    assert_error(await flow.grant(redirect_uri="https://app.example.com/other"), 400, "invalid_redirect_uri")
    assert "manage_notifications" in assert_error(await flow.grant(permissions="manage_notifications"), 400, "invalid_scope")["message"]
    assert "nope" in assert_error(await flow.grant(permissions="read_profile,nope"), 400, "invalid_scope")["message"]
    assert_error(await flow.grant(permissions="read_profile,,write_data"), 400, "invalid_request")
    response = await flow.client.patch("/oauth/permissions/grant", json={"permissions": flow.params()})
    assert_error(response, 401, "invalid_token")
    response = await flow.client.patch(
        "/oauth/permissions/grant", json={"token": flow.params()}, headers={"Authorization": flow.user_token}
    )
    assert "permissions" in assert_error(response, 400, "invalid_request")["message"]
    # None of these created a grant: the first authorize still records consent for what it asks.
    ok(await flow.authorize(permissions="read_profile,write_data"))


async def test_authorize_checks(flow: Flow) -> None:
    assert_error(await flow.authorize(app_key="wrong"), 401, "invalid_client")
    assert_error(await flow.authorize(app_key=flow.key_secret), 401, "invalid_client")
    assert_error(await flow.authorize(app_id="00000000-0000-4000-8000-000000000000"), 401, "invalid_client")
    for uri in ("https://app.example.com/callback/", "https://APP.example.com/callback", "https://app.example.com/callback?x=1"):
        assert_error(await flow.authorize(redirect_uri=uri), 400, "invalid_redirect_uri")
    assert "manage_notifications" in assert_error(await flow.authorize(permissions="manage_notifications"), 400, "invalid_scope")["message"]
    assert "nope" in assert_error(await flow.authorize(permissions="nope"), 400, "invalid_scope")["message"]
    # None of the refused requests recorded consent.
    ok(await flow.authorize(permissions="read_profile,write_data"))


async def test_authorize_accepts_the_permissions_wrapper(flow: Flow) -> None:
    response = await flow.client.post(
        "/oauth/authorize", json={"permissions": flow.params()}, headers={"Authorization": flow.user_token}
    )
    data = ok(response)
    assert data["user_id"] == flow.user_id
    ok(await flow.redeem(data["code"]))


# ---------------------------------------------------------------- codes


async def test_code_response(flow: Flow) -> None:
    response = await flow.authorize(state="xyz 1&2=3/é")
    data = ok(response)
    assert {"code", "user_id", "redirect_url"} <= set(data)
    assert data["user_id"] == flow.user_id
    assert len(data["code"]) >= 32
    url = urlsplit(data["redirect_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == flow.redirect_uri
    assert parse_qs(url.query) == {"code": [data["code"]], "state": ["xyz 1&2=3/é"]}
    assert data["redirect_url"] == flow.redirect_uri + "?" + urlencode({"code": data["code"], "state": "xyz 1&2=3/é"})
    assert "no-store" in response.headers.get("cache-control", "")


@pytest.mark.parametrize(
    "registered",
    [
        "https://app.example.com/cb?tenant=acme",
        "https://app.example.com/cb?tenant=acme&next=/home&flag",
        "https://app.example.com/cb?q=a%20b&r=c+d",
    ],
)
async def test_redirect_url_keeps_the_registered_query(client: httpx.AsyncClient, registered: str) -> None:
    flow = await new_flow(client, redirect_uris=[registered])
    flow.redirect_uri = registered
    data = ok(await flow.authorize(state="s-1"))
    added = urlencode({"code": data["code"], "state": "s-1"})
    assert data["redirect_url"] == f"{registered}&{added}"
    ok(await flow.redeem(data["code"]))


async def test_codes_are_single_use_and_reuse_revokes_the_token(flow: Flow, app: Any) -> None:
    code = await flow.code()
    first = ok(await flow.redeem(code))
    jti = jti_of(first["access_token"])
    state = await introspected(flow, first["access_token"])
    assert state["active"] is True and state["jti"] == jti
    assert state["user_id"] == flow.user_id and state["client_id"] == flow.app_id

    # The same request again within the grace window: a retry, the same token, nothing revoked.
    again = ok(await flow.redeem(code))["access_token"]
    assert jti_of(again) == jti
    assert (await introspected(flow, first["access_token"]))["active"] is True
    # Presented by another key of the app: a replay, which revokes the token; then by either key.
    created = await flow.client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    spare = created.json()["data"]
    assert_error(await flow.redeem(code, key_id=spare["key_id"], key_secret=spare["key_secret"]), 401, "invalid_grant")
    assert await introspected(flow, first["access_token"]) == {"active": False}
    assert await introspected(flow, again) == {"active": False}
    assert_error(await flow.redeem(code), 401, "invalid_grant")


async def test_another_apps_code_is_refused_and_revokes_nothing(client: httpx.AsyncClient, app: Any) -> None:
    owner = await new_flow(client)
    other = await new_flow(client)
    code = await owner.code()
    assert_error(await other.redeem(code), 401, "invalid_grant")
    token = ok(await owner.redeem(code))["access_token"]
    # Another app presenting the used code neither succeeds nor revokes the owner's token.
    assert_error(await other.redeem(code), 401, "invalid_grant")
    assert (await introspected(owner, token))["active"] is True


async def test_unknown_code_is_refused(flow: Flow) -> None:
    assert_error(await flow.redeem("not-a-code"), 401, "invalid_grant")


async def test_expired_code_is_refused(flow: Flow, app: Any) -> None:
    code = await flow.code()
    live = await flow.code()
    ctx = app.state.ctx
    async with ctx.db.write() as tx:
        await tx.execute(
            update(authorization_codes)
            .where(authorization_codes.c.code_hash == ctx.hasher.hash(code))
            .values(expires_at=ctx.now() - 1)
        )
    assert_error(await flow.redeem(code), 401, "invalid_grant")
    ok(await flow.redeem(live))
    assert_error(await flow.redeem(code), 401, "invalid_grant")


async def test_codes_expire_after_five_minutes(flow: Flow, app: Any) -> None:
    before = int(time.time())
    code = await flow.code()
    ctx = app.state.ctx
    async with ctx.db.read() as conn:
        row = (
            await conn.execute(
                select(authorization_codes).where(authorization_codes.c.code_hash == ctx.hasher.hash(code))
            )
        ).first()
    assert row.user_id == flow.user_id and row.app_id == flow.app_id
    assert row.redirect_uri == flow.redirect_uri and row.state == "state-123"
    assert before + 300 <= row.expires_at <= int(time.time()) + 300


# ---------------------------------------------------------------- the access token


async def test_access_token(flow: Flow, settings: Any) -> None:
    ok(await flow.grant(permissions="read_profile,write_data"))
    code = await flow.code(permissions=" write_data , read_profile ")
    before = int(time.time())
    response = await flow.redeem(code)
    after = int(time.time())
    data = ok(response)
    assert response.headers.get("cache-control") == "no-store"
    assert data["token_type"] == "Bearer"
    assert isinstance(data["expires_in"], int) and data["expires_in"] > 0

    claims = await verify_access_token(flow.client, data["access_token"], settings.audience, settings.issuer)
    assert set(claims) == ACCESS_CLAIMS
    assert claims["sub"] == claims["user_id"] == flow.user_id
    assert claims["client_id"] == flow.app_id
    assert claims["key_id"] == flow.key_id
    assert claims["aud"] == settings.audience
    assert claims["iss"] == settings.issuer
    assert claims["permissions"] == ["write_data", "read_profile"]
    assert claims["scope"] == "write_data read_profile"
    assert data["scope"] == claims["scope"]
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == data["expires_in"]


async def test_token_carries_what_was_authorized_not_the_whole_grant(flow: Flow, settings: Any) -> None:
    ok(await flow.authorize(permissions="read_profile,write_data"))
    data = ok(await flow.redeem(await flow.code(permissions="read_profile")))
    claims = await verify_access_token(flow.client, data["access_token"], settings.audience, settings.issuer)
    assert claims["permissions"] == ["read_profile"]
    assert claims["scope"] == "read_profile"


async def test_every_token_has_its_own_jti(flow: Flow) -> None:
    jtis = {jti_of(ok(await flow.redeem(await flow.code()))["access_token"]) for _ in range(3)}
    assert len(jtis) == 3


async def test_tampered_token_fails_verification(flow: Flow, settings: Any) -> None:
    token = ok(await flow.redeem(await flow.code()))["access_token"]
    header, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"read_profile"', b'"write_data"')
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        await verify_access_token(flow.client, f"{header}.{forged}.{signature}", settings.audience, settings.issuer)


async def test_app_access_token_cannot_authorize(flow: Flow) -> None:
    access_token = ok(await flow.redeem(await flow.code()))["access_token"]
    for header in (f"Bearer {access_token}", access_token):
        response = await flow.client.post(
            "/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": header}
        )
        assert_error(response, 401, "invalid_token")
        response = await flow.client.patch(
            "/oauth/permissions/grant", json={"permissions": flow.params()}, headers={"Authorization": header}
        )
        assert_error(response, 401, "invalid_token")
    # Nor can it manage apps.
    assert_error(await flow.client.get("/v1/apps", headers={"Authorization": access_token}), 401, "invalid_token")


async def test_authorize_needs_a_live_user_token(flow: Flow) -> None:
    async def authorize(headers: dict[str, str]) -> httpx.Response:
        return await flow.client.post("/oauth/authorize", json={"token": flow.params()}, headers=headers)

    assert_error(await authorize({}), 401, "invalid_token")
    assert_error(await authorize({"Authorization": "Bearer"}), 401, "invalid_token")
    assert_error(await authorize({"Authorization": "Bearer a.b.c"}), 401, "invalid_token")
    ok(await authorize({"Authorization": flow.user_token}))
    ok(await flow.client.post("/v1/auth/logout", headers={"Authorization": flow.user_token}))
    assert_error(await authorize({"Authorization": f"Bearer {flow.user_token}"}), 401, "invalid_token")


@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_flow_under_v1_and_root(flow: Flow, prefix: str) -> None:
    headers = {"Authorization": f"Bearer {flow.user_token}"}
    data = ok(await flow.client.post(f"{prefix}/oauth/authorize", json={"token": flow.params()}, headers=headers))
    grant = await flow.client.patch(
        f"{prefix}/oauth/permissions/grant", json={"permissions": flow.params(permissions="write_data")}, headers=headers
    )
    assert ok(grant) == {"message": "Permissions granted successfully."}
    body = {"auth_code": data["code"], "key_id": flow.key_id, "key_secret": flow.key_secret}
    token = ok(await flow.client.post(f"{prefix}/oauth/token", json={"token": body}))
    assert token["access_token"] and token["token_type"] == "Bearer"
