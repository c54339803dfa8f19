"""User accounts: sign-up, log-in, log-out, and the user token they hand out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from support.neucron import PASSWORD, assert_error, ok, sign_up, unique_email


pytestmark = pytest.mark.db

USER_CLAIMS = {"iss", "sub", "user_id", "jti", "iat", "nbf", "exp"}
THIRTY_DAYS = 30 * 86400


async def verified_claims(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """The token's claims, its signature checked against the published JWKS."""
    jwks = jwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["ES256"], options={"verify_aud": False})


def rfc3339_to_epoch(value: str) -> int:
    assert value.endswith("Z"), value
    parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return int(parsed.timestamp())


async def assert_token_works(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/v1/apps", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


async def assert_token_refused(client: httpx.AsyncClient, token: str) -> None:
    assert_error(await client.get("/v1/apps", headers={"Authorization": f"Bearer {token}"}), 401, "invalid_token")


def assert_token_envelope(response: httpx.Response) -> dict[str, Any]:
    """v1's token envelope (``ok``: a log-in's answer carries v2's keys beside it)."""
    data = ok(response)
    assert set(data) == {"user_id", "access_token", "expires_at"}, data
    assert all(isinstance(v, str) and v for v in data.values())
    assert "no-store" in response.headers.get("cache-control", "")
    return data


async def test_signup_envelope_and_user_token(client: httpx.AsyncClient, settings) -> None:  # type: ignore[no-untyped-def]
    before = int(time.time())
    response = await client.post("/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD})
    after = int(time.time())
    data = assert_token_envelope(response)

    header = jwt.get_unverified_header(data["access_token"])
    assert header["alg"] == "ES256" and header.get("kid")
    claims = await verified_claims(client, data["access_token"])
    assert set(claims) == USER_CLAIMS
    assert claims["sub"] == claims["user_id"] == data["user_id"]
    assert claims["iss"] == settings.issuer
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == THIRTY_DAYS
    assert rfc3339_to_epoch(data["expires_at"]) == claims["exp"]
    await assert_token_works(client, data["access_token"])


async def test_login_returns_the_same_fields(client: httpx.AsyncClient) -> None:
    email = unique_email()
    user_id, signup_token = await sign_up(client, email)
    response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    data = assert_token_envelope(response)
    assert data["user_id"] == user_id
    assert data["access_token"] != signup_token
    claims = await verified_claims(client, data["access_token"])
    assert set(claims) == USER_CLAIMS
    assert claims["sub"] == claims["user_id"] == user_id
    assert rfc3339_to_epoch(data["expires_at"]) == claims["exp"]
    assert abs(claims["exp"] - time.time() - THIRTY_DAYS) < 60
    await assert_token_works(client, data["access_token"])


async def test_emails_are_case_insensitive(client: httpx.AsyncClient) -> None:
    local = unique_email().split("@")[0]
    user_id, _ = await sign_up(client, f"{local.upper()}@Example.COM")
    for email in (f"{local}@example.com", f"{local.upper()}@EXAMPLE.com", f"{local.capitalize()}@example.Com"):
        response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert assert_token_envelope(response)["user_id"] == user_id
    # The same address in another case is taken.
    response = await client.post("/v1/auth/signup", json={"email": f"{local}@example.com", "password": PASSWORD})
    assert_error(response, 409, "conflict")


async def test_login_with_wrong_credentials(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await sign_up(client, email)
    response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD + "x"})
    assert_error(response, 401, "invalid_grant")
    unknown = await client.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert_error(unknown, 401, "invalid_grant")
    assert unknown.json()["message"] == response.json()["message"], "the answer must not tell which accounts exist"


async def test_signup_refuses_taken_email_and_bad_input(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await sign_up(client, email)
    assert_error(await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}), 409, "conflict")
    assert_error(
        await client.post("/v1/auth/signup", json={"email": "not-an-email", "password": PASSWORD}), 400, "invalid_request"
    )
    assert_error(
        await client.post("/v1/auth/signup", json={"email": unique_email(), "password": "short"}), 400, "invalid_request"
    )


async def test_logout_revokes_only_that_token(client: httpx.AsyncClient) -> None:
    email = unique_email()
    _, first = await sign_up(client, email)
    second = assert_token_envelope(
        await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    )["access_token"]

    response = await client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {first}"})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"data", "status_code"}

    await assert_token_refused(client, first)
    await assert_token_works(client, second)
    # Logging out again with the revoked token is refused, too.
    assert_error(await client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {first}"}), 401, "invalid_token")


async def test_logout_with_a_bare_token(client: httpx.AsyncClient) -> None:
    """Neucron's clients send the token without the Bearer prefix."""
    _, token = await sign_up(client)
    await assert_token_works(client, token)
    response = await client.post("/auth/logout", headers={"Authorization": token})
    assert response.status_code == 200, response.text
    await assert_token_refused(client, token)


async def test_logout_without_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/auth/logout"), 401, "invalid_token")
    assert_error(await client.post("/v1/auth/logout", headers={"Authorization": "Bearer nonsense"}), 401, "invalid_token")


@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_auth_routes_under_v1_and_root(client: httpx.AsyncClient, prefix: str) -> None:
    email = unique_email()
    data = assert_token_envelope(await client.post(f"{prefix}/auth/signup", json={"email": email, "password": PASSWORD}))
    login = assert_token_envelope(await client.post(f"{prefix}/auth/login", json={"email": email, "password": PASSWORD}))
    assert login["user_id"] == data["user_id"]
    response = await client.post(f"{prefix}/auth/logout", headers={"Authorization": login["access_token"]})
    assert response.status_code == 200, response.text
    await assert_token_refused(client, login["access_token"])
    await assert_token_works(client, data["access_token"])


async def test_password_change_ends_only_the_users_other_sessions(app: Any, client: httpx.AsyncClient) -> None:
    from grantd.core import accounts
    from grantd.core.errors import InvalidGrant, InvalidRequest

    ctx = app.state.ctx
    email = unique_email()
    await sign_up(client, email)
    sessions = []
    for _ in range(3):
        response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        sessions.append(response.json()["data"]["access_token"])
    _, bystander = await sign_up(client)
    this = await accounts.authenticate(ctx, sessions[0])

    with pytest.raises(InvalidGrant):
        await accounts.change_password(ctx, this, "wrong", "a new good passphrase")
    with pytest.raises(InvalidRequest) as weak:
        await accounts.change_password(ctx, this, PASSWORD, "qwerty123")
    assert weak.value.field == "password"
    for token in sessions:  # refused changes end nothing
        assert (await client.get("/v1/grants", headers={"Authorization": token})).status_code == 200

    assert await accounts.change_password(ctx, this, PASSWORD, "a new good passphrase") == 3  # two logins, the sign-up
    assert (await client.get("/v1/grants", headers={"Authorization": sessions[0]})).status_code == 200
    for token in sessions[1:]:
        assert (await client.get("/v1/grants", headers={"Authorization": token})).status_code == 401
    assert (await client.get("/v1/grants", headers={"Authorization": bystander})).status_code == 200
    assert (await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
    login = await client.post("/v1/auth/login", json={"email": email, "password": "a new good passphrase"})
    assert login.status_code == 200
    events = (await client.get("/v1/audit", headers={"Authorization": sessions[0]})).json()["data"]["events"]
    assert [e["event"] for e in events].count("password_changed") == 1
