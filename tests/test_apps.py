"""A developer's apps and keys: ownership, validation, disabling, key rotation, the catalog."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support.neucron import Flow, assert_error, new_flow, ok, sign_up


pytestmark = pytest.mark.db

REDIRECT = "https://app.example.com/callback"
APP_FIELDS = {"app_id", "app_key", "name", "redirect_uris", "permissions"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def strings_in(value: Any) -> list[str]:
    """Every string anywhere in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def assert_no_secret(value: Any, secret: str) -> None:
    for text in strings_in(value):
        assert secret not in text, f"secret leaked in {text!r}"


async def create_app(client: httpx.AsyncClient, token: str, **fields: Any) -> httpx.Response:
    body = {"name": "My App", "redirect_uris": [REDIRECT], "permissions": "read_profile,write_data", **fields}
    return await client.post("/v1/apps", json=body, headers=auth(token))


async def redeem_ok(flow: Flow, key_id: str, key_secret: str) -> dict[str, Any]:
    response = await flow.redeem(await flow.code(), key_id=key_id, key_secret=key_secret)
    return ok(response)


# ---------------------------------------------------------------- apps


async def test_create_returns_the_app_with_its_key(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    uris = [REDIRECT, "http://127.0.0.1:3000/cb", "com.example.app:/cb"]
    response = await create_app(client, token, name="Invoices", redirect_uris=uris)
    data = ok(response)
    assert APP_FIELDS <= set(data)
    assert data["name"] == "Invoices"
    assert data["redirect_uris"] == uris
    assert data["permissions"] == "read_profile,write_data"
    assert data["app_id"] and data["app_key"] and data["app_key"] != data["app_id"]
    assert "no-store" in response.headers.get("cache-control", "")


async def test_app_key_is_shown_only_at_creation(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    created = ok(await create_app(client, token))
    app_key = created["app_key"]

    one = ok(await client.get(f"/v1/apps/{created['app_id']}", headers=auth(token)))
    assert "app_key" not in one
    assert one["app_id"] == created["app_id"]
    assert {k: one[k] for k in ("name", "redirect_uris", "permissions")} == {
        k: created[k] for k in ("name", "redirect_uris", "permissions")
    }
    listing = ok(await client.get("/v1/apps", headers=auth(token)))
    assert [a["app_id"] for a in listing["apps"]] == [created["app_id"]]
    assert all("app_key" not in a for a in listing["apps"])
    patched = ok(await client.patch(f"/v1/apps/{created['app_id']}", json={"name": "Renamed"}, headers=auth(token)))
    assert "app_key" not in patched
    for value in (one, listing, patched):
        assert_no_secret(value, app_key)


async def test_list_shows_only_the_callers_apps(client: httpx.AsyncClient) -> None:
    _, alice = await sign_up(client)
    _, bob = await sign_up(client)
    alice_apps = [ok(await create_app(client, alice, name=f"Alice {i}"))["app_id"] for i in range(2)]
    bob_app = ok(await create_app(client, bob, name="Bob"))["app_id"]

    listed = [a["app_id"] for a in ok(await client.get("/v1/apps", headers=auth(alice)))["apps"]]
    assert sorted(listed) == sorted(alice_apps)
    listed = [a["app_id"] for a in ok(await client.get("/v1/apps", headers=auth(bob)))["apps"]]
    assert listed == [bob_app]
    _, carol = await sign_up(client)
    assert ok(await client.get("/v1/apps", headers=auth(carol)))["apps"] == []


async def test_another_user_gets_404(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    _, stranger = await sign_up(client)
    base = f"/v1/apps/{flow.app_id}"
    assert_error(await client.get(base, headers=auth(stranger)), 404, "not_found")
    assert_error(await client.patch(base, json={"name": "Mine now"}, headers=auth(stranger)), 404, "not_found")
    assert_error(await client.delete(base, headers=auth(stranger)), 404, "not_found")
    assert_error(await client.get(f"{base}/keys", headers=auth(stranger)), 404, "not_found")
    assert_error(await client.post(f"{base}/keys", headers=auth(stranger)), 404, "not_found")
    assert_error(await client.delete(f"{base}/keys/{flow.key_id}", headers=auth(stranger)), 404, "not_found")
    # Nothing changed: the owner still sees the app as it was, and its key still works.
    data = ok(await client.get(base, headers=auth(flow.dev_token)))
    assert data["name"] == "Test App"
    await redeem_ok(flow, flow.key_id, flow.key_secret)
    # An unknown app is a 404 too.
    assert_error(await client.get("/v1/apps/no-such-app", headers=auth(flow.dev_token)), 404, "not_found")


async def test_apps_need_a_user_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/apps"), 401, "invalid_token")
    assert_error(await client.post("/v1/apps", json={"name": "x"}), 401, "invalid_token")


async def test_patch_changes_name_redirect_uris_and_permissions(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    base, headers = f"/v1/apps/{flow.app_id}", auth(flow.dev_token)

    data = ok(await client.patch(base, json={"name": "Renamed"}, headers=headers))
    assert data["name"] == "Renamed"
    assert data["redirect_uris"] == [flow.redirect_uri]

    new_uris = ["https://new.example.com/cb", "http://127.0.0.1:3000/cb", "com.example.app:/cb"]
    data = ok(await client.patch(base, json={"redirect_uris": new_uris}, headers=headers))
    assert data["redirect_uris"] == new_uris
    assert data["name"] == "Renamed"
    assert_error(await flow.authorize(), 400, "invalid_redirect_uri")
    for uri in new_uris:
        assert (await flow.authorize(redirect_uri=uri)).status_code == 200

    data = ok(await client.patch(base, json={"permissions": "read_profile"}, headers=headers))
    assert data["permissions"] == "read_profile"
    body = assert_error(await flow.authorize(redirect_uri=new_uris[0], permissions="write_data"), 400, "invalid_scope")
    assert "write_data" in body["message"]

    data = ok(await client.patch(base, json={"permissions": "read_profile,manage_notifications"}, headers=headers))
    assert data["permissions"] == "read_profile,manage_notifications"
    persisted = ok(await client.get(base, headers=headers))
    assert persisted["name"] == "Renamed"
    assert persisted["redirect_uris"] == new_uris
    assert persisted["permissions"] == "read_profile,manage_notifications"


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/cb",
        "javascript:alert(1)",
        "https://x/cb#frag",
        "",
        "https://user:pass@x/cb",
        "https:///cb",
        "https://x/c b",
        "data:text/html,hi",
    ],
)
async def test_bad_redirect_uris_are_refused(client: httpx.AsyncClient, uri: str) -> None:
    flow = await new_flow(client)
    headers = auth(flow.dev_token)
    assert_error(await create_app(client, flow.dev_token, redirect_uris=[uri]), 400, "invalid_request")
    assert_error(await create_app(client, flow.dev_token, redirect_uris=[REDIRECT, uri]), 400, "invalid_request")
    response = await client.patch(f"/v1/apps/{flow.app_id}", json={"redirect_uris": [uri]}, headers=headers)
    assert_error(response, 400, "invalid_request")
    assert ok(await client.get(f"/v1/apps/{flow.app_id}", headers=headers))["redirect_uris"] == [flow.redirect_uri]


@pytest.mark.parametrize("uri", ["http://127.0.0.1:3000/cb", "http://localhost/cb", "com.example.app:/cb", "https://x/cb?a=1"])
async def test_good_redirect_uris_are_accepted(client: httpx.AsyncClient, uri: str) -> None:
    _, token = await sign_up(client)
    data = ok(await create_app(client, token, redirect_uris=[uri]))
    assert data["redirect_uris"] == [uri]
    data = ok(await client.patch(f"/v1/apps/{data['app_id']}", json={"redirect_uris": [uri, REDIRECT]}, headers=auth(token)))
    assert data["redirect_uris"] == [uri, REDIRECT]


async def test_empty_redirect_uri_list_is_refused(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    assert_error(await create_app(client, flow.dev_token, redirect_uris=[]), 400, "invalid_request")
    response = await client.patch(f"/v1/apps/{flow.app_id}", json={"redirect_uris": []}, headers=auth(flow.dev_token))
    assert_error(response, 400, "invalid_request")


async def test_permission_validation(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    base, headers = f"/v1/apps/{flow.app_id}", auth(flow.dev_token)
    body = assert_error(await create_app(client, flow.dev_token, permissions="read_profile,fly_rockets"), 400, "invalid_scope")
    assert "fly_rockets" in body["message"]
    body = assert_error(await client.patch(base, json={"permissions": "fly_rockets"}, headers=headers), 400, "invalid_scope")
    assert "fly_rockets" in body["message"]
    for bad in ("", "read_profile,,write_data", " , "):
        assert_error(await client.patch(base, json={"permissions": bad}, headers=headers), 400, "invalid_request")
    # Trimmed and folded.
    data = ok(await client.patch(base, json={"permissions": " write_data , read_profile,write_data"}, headers=headers))
    assert data["permissions"] == "write_data,read_profile"
    # A wrong type names the field.
    body = assert_error(await client.patch(base, json={"permissions": ["read_profile"]}, headers=headers), 400, "invalid_request")
    assert "permissions" in body["message"]
    body = assert_error(await client.patch(base, json={"name": ""}, headers=headers), 400, "invalid_request")


async def test_rfc7591_names_register_an_app(client: httpx.AsyncClient) -> None:
    """client_name, scope and application_type, as a registration endpoint takes them."""
    _, token = await sign_up(client)
    body = {
        "client_name": "Photo Printer",
        "redirect_uris": ["com.example.printer:/callback", REDIRECT],
        "scope": "openid profile read_profile write_data",
        "application_type": "native",
    }
    created = ok(await client.post("/v1/apps", json=body, headers=auth(token)))
    assert created["name"] == "Photo Printer"
    assert created["redirect_uris"] == body["redirect_uris"]
    assert created["permissions"] == "read_profile,write_data"  # openid and profile: every app's
    assert created["application_type"] == "native"
    assert ok(await client.get(f"/v1/apps/{created['app_id']}", headers=auth(token)))["application_type"] == "native"

    # Only OpenID Connect's standard scopes: every permission of the catalog, as at registration.
    every = ok(await client.get("/v1/oauth/permissions"))["permissions"]
    plain = ok(await client.post("/v1/apps", json={**body, "scope": "openid", "application_type": None}, headers=auth(token)))
    assert plain["permissions"].split(",") == [p["name"] for p in every]
    assert plain["application_type"] == "web"

    # PATCH takes them too.
    patched = ok(await client.patch(
        f"/v1/apps/{created['app_id']}", json={"client_name": "Printer", "scope": "read_profile"}, headers=auth(token)
    ))
    assert (patched["name"], patched["permissions"]) == ("Printer", "read_profile")


async def test_both_names_of_a_setting_must_agree(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    same = ok(await create_app(client, token, client_name="My App", scope="write_data read_profile"))
    assert (same["name"], same["permissions"]) == ("My App", "read_profile,write_data")
    for fields in ({"client_name": "Other"}, {"scope": "read_profile"}):
        body = assert_error(await create_app(client, token, **fields), 400, "invalid_request")
        assert next(iter(fields)) in body["message"], body
        patch = {"name": "A", "client_name": "B"} if "client_name" in fields else {"permissions": "write_data", "scope": "read_profile"}
        assert_error(await client.patch(f"/v1/apps/{same['app_id']}", json=patch, headers=auth(token)), 400, "invalid_request")
    assert [a["app_id"] for a in ok(await client.get("/v1/apps", headers=auth(token)))["apps"]] == [same["app_id"]]
    unchanged = ok(await client.get(f"/v1/apps/{same['app_id']}", headers=auth(token)))
    assert (unchanged["name"], unchanged["permissions"]) == ("My App", "read_profile,write_data")

    body = assert_error(await create_app(client, token, permissions=None, scope="fly_rockets"), 400, "invalid_scope")
    assert "fly_rockets" in body["message"]
    for missing in ("name", "permissions"):
        body = assert_error(await create_app(client, token, **{missing: None}), 400, "invalid_request")
        assert missing in body["message"]
    # application_type: the registration endpoint's rule.
    body = assert_error(await create_app(client, token, application_type="desktop"), 400, "invalid_request")
    assert "application_type" in body["message"]
    body = assert_error(
        await create_app(client, token, application_type="web", redirect_uris=["com.example.app:/cb"]), 400, "invalid_request"
    )
    assert "native" in body["message"]


async def test_delete_disables_the_app(client: httpx.AsyncClient) -> None:
    flow = await new_flow(client)
    pending_code = await flow.code()
    redeemed_before = ok(await flow.redeem(await flow.code()))
    assert redeemed_before["access_token"]

    data = ok(await client.delete(f"/v1/apps/{flow.app_id}", headers=auth(flow.dev_token)))
    assert data["app_id"] == flow.app_id
    assert data["disabled"] is True

    # Its key no longer authenticates, and its unredeemed code cannot be redeemed.
    assert_error(await flow.redeem(pending_code), 401, "invalid_client")
    # No other app's key can redeem it either.
    other = await new_flow(client)
    assert_error(await other.redeem(pending_code), 401, "invalid_grant")
    # The app cannot be authorized any more.
    assert_error(await flow.authorize(), 401, "invalid_client")
    assert_error(await flow.grant(), 401, "invalid_client")
    # Nor can it hold new keys.
    assert (await client.post(f"/v1/apps/{flow.app_id}/keys", headers=auth(flow.dev_token))).status_code == 400
    # Deleting again is harmless; the owner still sees it, disabled.
    ok(await client.delete(f"/v1/apps/{flow.app_id}", headers=auth(flow.dev_token)))
    assert ok(await client.get(f"/v1/apps/{flow.app_id}", headers=auth(flow.dev_token)))["disabled"] is True


async def test_delete_leaves_other_apps_alone(client: httpx.AsyncClient) -> None:
    first = await new_flow(client)
    second = await new_flow(client)
    ok(await client.delete(f"/v1/apps/{first.app_id}", headers=auth(first.dev_token)))
    await redeem_ok(second, second.key_id, second.key_secret)


# ---------------------------------------------------------------- keys


async def create_key(flow: Flow) -> dict[str, Any]:
    response = await flow.client.post(f"/v1/apps/{flow.app_id}/keys", headers=auth(flow.dev_token))
    data = ok(response)
    assert {"key_id", "key_secret"} <= set(data)
    assert "no-store" in response.headers.get("cache-control", "")
    return data


async def list_keys(flow: Flow) -> list[dict[str, Any]]:
    return ok(await flow.client.get(f"/v1/apps/{flow.app_id}/keys", headers=auth(flow.dev_token)))["keys"]


async def test_several_live_keys_all_work(flow: Flow) -> None:
    second, third = await create_key(flow), await create_key(flow)
    assert len({flow.key_id, second["key_id"], third["key_id"]}) == 3
    assert len({flow.key_secret, second["key_secret"], third["key_secret"]}) == 3
    for key_id, key_secret in ((flow.key_id, flow.key_secret), (second["key_id"], second["key_secret"]), (third["key_id"], third["key_secret"])):
        assert (await redeem_ok(flow, key_id, key_secret))["access_token"]


async def test_key_secret_must_match_its_key(flow: Flow) -> None:
    second = await create_key(flow)
    code = await flow.code()
    assert_error(await flow.redeem(code, key_secret=second["key_secret"]), 401, "invalid_client")
    assert_error(await flow.redeem(code, key_secret=flow.key_secret + "x"), 401, "invalid_client")
    assert_error(await flow.redeem(code, key_id="key_0000000000000000"), 401, "invalid_client")
    # The code survived the failed attempts.
    ok(await flow.redeem(code))


async def test_list_keys_shows_no_secrets_and_last_use(flow: Flow) -> None:
    second = await create_key(flow)
    keys = await list_keys(flow)
    assert sorted(k["key_id"] for k in keys) == sorted([flow.key_id, second["key_id"]])
    for key in keys:
        assert "key_secret" not in key
        assert key["last_used_at"] is None
    for secret in (flow.key_secret, second["key_secret"], flow.app_key):
        assert_no_secret(keys, secret)

    await redeem_ok(flow, flow.key_id, flow.key_secret)
    listing = ok(await flow.client.get(f"/v1/apps/{flow.app_id}/keys", headers=auth(flow.dev_token)))
    by_id = {k["key_id"]: k for k in listing["keys"]}
    assert isinstance(by_id[flow.key_id]["last_used_at"], str) and by_id[flow.key_id]["last_used_at"].endswith("Z")
    assert by_id[second["key_id"]]["last_used_at"] is None
    for secret in (flow.key_secret, second["key_secret"], flow.app_key):
        assert_no_secret(listing, secret)


async def test_deleting_a_key_revokes_only_that_key(flow: Flow) -> None:
    second = await create_key(flow)
    pending = await flow.code()
    data = ok(await flow.client.delete(f"/v1/apps/{flow.app_id}/keys/{flow.key_id}", headers=auth(flow.dev_token)))
    assert data["key_id"] == flow.key_id
    assert "key_secret" not in data
    assert_no_secret(data, flow.key_secret)

    assert_error(await flow.redeem(pending), 401, "invalid_client")
    # The code was not spent by the refused attempt: the other key redeems it.
    ok(await flow.redeem(pending, key_id=second["key_id"], key_secret=second["key_secret"]))
    await redeem_ok(flow, second["key_id"], second["key_secret"])

    keys = {k["key_id"]: k for k in await list_keys(flow)}
    assert keys[flow.key_id]["revoked"] is True and keys[flow.key_id]["revoked_at"]
    assert keys[second["key_id"]]["revoked"] is False
    # Deleting it again changes nothing and is not an error.
    again = ok(await flow.client.delete(f"/v1/apps/{flow.app_id}/keys/{flow.key_id}", headers=auth(flow.dev_token)))
    assert again["revoked_at"] == data["revoked_at"]


async def test_unknown_key_is_404(flow: Flow, client: httpx.AsyncClient) -> None:
    headers = auth(flow.dev_token)
    assert_error(await client.delete(f"/v1/apps/{flow.app_id}/keys/key_0000000000000000", headers=headers), 404, "not_found")
    # A key of another app is unknown here too, and stays live.
    other = await new_flow(client)
    assert_error(await client.delete(f"/v1/apps/{flow.app_id}/keys/{other.key_id}", headers=headers), 404, "not_found")
    await redeem_ok(other, other.key_id, other.key_secret)


# ---------------------------------------------------------------- catalog and routes


@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_permission_catalog(client: httpx.AsyncClient, prefix: str) -> None:
    data = ok(await client.get(f"{prefix}/oauth/permissions"))
    catalog = {p["name"]: p["description"] for p in data["permissions"]}
    assert set(catalog) == {"read_profile", "write_data", "manage_notifications"}
    assert all(isinstance(text, str) and text.strip() for text in catalog.values())
    assert all(set(p) == {"name", "description"} for p in data["permissions"])


@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_app_routes_under_v1_and_root(client: httpx.AsyncClient, prefix: str) -> None:
    _, token = await sign_up(client)
    headers = {"Authorization": token}  # bare, as Neucron's clients send it
    body = {"name": "Routes", "redirect_uris": [REDIRECT], "permissions": "read_profile"}
    created = ok(await client.post(f"{prefix}/apps", json=body, headers=headers))
    app_id = created["app_id"]
    assert [a["app_id"] for a in ok(await client.get(f"{prefix}/apps", headers=headers))["apps"]] == [app_id]
    assert ok(await client.get(f"{prefix}/apps/{app_id}", headers=headers))["name"] == "Routes"
    assert ok(await client.patch(f"{prefix}/apps/{app_id}", json={"name": "R2"}, headers=headers))["name"] == "R2"
    key = ok(await client.post(f"{prefix}/apps/{app_id}/keys", headers=headers))
    assert [k["key_id"] for k in ok(await client.get(f"{prefix}/apps/{app_id}/keys", headers=headers))["keys"]] == [key["key_id"]]
    ok(await client.delete(f"{prefix}/apps/{app_id}/keys/{key['key_id']}", headers=headers))
    assert ok(await client.delete(f"{prefix}/apps/{app_id}", headers=headers))["disabled"] is True


# ---------------------------------------------------------------- OpenID Connect settings
# Named as OpenID Connect Dynamic Client Registration 1.0 §2 names them; read by the OpenID
# Connect flow through App.openid (core.apps.OpenIDSettings).

OPENID = {
    "post_logout_redirect_uris": ["https://app.example.com/signed-out", "http://127.0.0.1:3000/bye", "com.example.app:/out"],
    "id_token_signed_response_alg": "ES256",
    "subject_type": "pairwise",
    "sector_identifier_uri": "https://sector.example.com/redirects.json",
    "require_nonce": True,
    "require_pushed_authorization_requests": True,
    "dpop_bound_access_tokens": True,
}
OPENID_DEFAULTS = {
    "post_logout_redirect_uris": [],
    "id_token_signed_response_alg": "RS256",
    "subject_type": "public",
    "sector_identifier_uri": None,
    "require_nonce": False,
    "require_pushed_authorization_requests": False,
    "dpop_bound_access_tokens": False,
}
TWO_HOSTS = [REDIRECT, "https://other.example.com/callback"]
SECTOR_REQUIRED = "sector_identifier_uri is required when subject_type is pairwise and the redirect_uris are on more than one host"

# Each rule, refused: (setting, value, the start of the message).
OPENID_REFUSED: list[tuple[str, Any, str]] = [
    ("post_logout_redirect_uris", ["http://app.example.com/bye"], "http post_logout_redirect_uris are allowed only on a loopback host"),
    ("post_logout_redirect_uris", ["https://app.example.com/bye#x"], "post_logout_redirect_uris items may not have a fragment."),
    ("post_logout_redirect_uris", ["javascript:alert(1)"], "post_logout_redirect_uris item must be https"),
    ("post_logout_redirect_uris", ["https://u:p@app.example.com/"], "post_logout_redirect_uris items may not carry user information."),
    ("post_logout_redirect_uris", ["https://app.example.com/a b"], "post_logout_redirect_uris items may not contain white space"),
    ("post_logout_redirect_uris", [REDIRECT, ""], "post_logout_redirect_uris items must be 1 to 2000 characters."),
    ("post_logout_redirect_uris", [f"https://app.example.com/{i}" for i in range(21)], "post_logout_redirect_uris has too many items"),
    ("id_token_signed_response_alg", "HS256", "id_token_signed_response_alg must be one of: RS256, ES256."),
    ("id_token_signed_response_alg", "none", "id_token_signed_response_alg must be one of: RS256, ES256."),
    ("id_token_signed_response_alg", "rs256", "id_token_signed_response_alg must be one of: RS256, ES256."),
    ("subject_type", "private", "subject_type must be one of: public, pairwise."),
    ("sector_identifier_uri", "http://sector.example.com/s.json", "sector_identifier_uri must be an absolute https URL"),
    ("sector_identifier_uri", "sector.example.com", "sector_identifier_uri must be an absolute https URL"),
    ("sector_identifier_uri", "https://sector.example.com/<s>", "sector_identifier_uri may not contain white space"),
    ("sector_identifier_uri", "https://u:p@sector.example.com/", "sector_identifier_uri may not carry user information."),
    ("require_nonce", "yes", "require_nonce must be true or false."),
    ("require_nonce", 1, "require_nonce must be true or false."),
    ("require_pushed_authorization_requests", "yes", "require_pushed_authorization_requests must be true or false."),
    ("dpop_bound_access_tokens", "yes", "dpop_bound_access_tokens must be true or false."),
]


def openid_of(data: dict[str, Any]) -> dict[str, Any]:
    return {name: data[name] for name in OPENID_DEFAULTS}


async def test_openid_settings_round_trip(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    created = ok(await create_app(client, token, redirect_uris=TWO_HOSTS, **OPENID))
    assert openid_of(created) == OPENID
    app_id, base = created["app_id"], f"/v1/apps/{created['app_id']}"
    assert openid_of(ok(await client.get(base, headers=auth(token)))) == OPENID
    [listed] = ok(await client.get("/v1/apps", headers=auth(token)))["apps"]
    assert openid_of(listed) == OPENID

    # PATCH: absent or null leaves a setting; a value changes it.
    patch = {"id_token_signed_response_alg": "RS256", "post_logout_redirect_uris": ["https://app.example.com/bye"],
             "subject_type": None, "require_nonce": None}
    patched = ok(await client.patch(base, json=patch, headers=auth(token)))
    expected = {**OPENID, "id_token_signed_response_alg": "RS256", "post_logout_redirect_uris": ["https://app.example.com/bye"]}
    assert openid_of(patched) == expected
    assert openid_of(ok(await client.get(base, headers=auth(token)))) == expected

    # "", [] and false set each back to its default (the sector first: pairwise needs it on two hosts).
    assert_error(await client.patch(base, json={"sector_identifier_uri": ""}, headers=auth(token)), 400, "invalid_request")
    clear = {"post_logout_redirect_uris": [], "id_token_signed_response_alg": "", "subject_type": "",
             "sector_identifier_uri": "", "require_nonce": False, "require_pushed_authorization_requests": False,
             "dpop_bound_access_tokens": False}
    assert openid_of(ok(await client.patch(base, json=clear, headers=auth(token)))) == OPENID_DEFAULTS
    assert openid_of(ok(await client.get(base, headers=auth(token)))) == OPENID_DEFAULTS

    # Not given at registration: the defaults.
    assert openid_of(ok(await create_app(client, token))) == OPENID_DEFAULTS
    assert app_id


async def test_openid_settings_reach_the_app_the_flow_reads(app: Any, client: httpx.AsyncClient) -> None:
    """What the OpenID Connect flow reads (core.apps.App.openid, OpenIDSettings.of a stored row) is what was sent."""
    from grantd.core import apps
    from grantd.store import apps as store

    _, token = await sign_up(client)
    app_id = ok(await create_app(client, token, redirect_uris=TWO_HOSTS, **OPENID))["app_id"]
    ctx = app.state.ctx
    settings = (await apps.get_owned(ctx, None, app_id)).openid
    assert settings == apps.OpenIDSettings(**{**OPENID, "post_logout_redirect_uris": tuple(OPENID["post_logout_redirect_uris"])})
    async with ctx.db.read() as conn:
        assert apps.OpenIDSettings.of(await store.live(conn, app_id)) == settings
    assert settings.sector(TWO_HOSTS) == "sector.example.com"
    # A default is stored as NULL (the migration's meaning of NULL), whether given or not.
    plain = ok(await create_app(client, token, id_token_signed_response_alg="RS256", subject_type="public", require_nonce=False))
    async with ctx.db.read() as conn:
        row = await store.live(conn, plain["app_id"])
    assert {name: getattr(row, name) for name in apps.OPENID_FIELDS} == dict.fromkeys(apps.OPENID_FIELDS)
    assert apps.OpenIDSettings.of(row).sector([REDIRECT]) == "app.example.com"


@pytest.mark.parametrize(("setting", "value", "message"), OPENID_REFUSED)
async def test_each_bad_openid_setting_is_refused_by_name(
    client: httpx.AsyncClient, setting: str, value: Any, message: str
) -> None:
    _, token = await sign_up(client)
    body = assert_error(await create_app(client, token, **{setting: value}), 400, "invalid_request")
    assert body["message"].startswith(message), body
    assert ok(await client.get("/v1/apps", headers=auth(token)))["apps"] == []  # nothing registered

    created = ok(await create_app(client, token, redirect_uris=TWO_HOSTS, **OPENID))
    response = await client.patch(f"/v1/apps/{created['app_id']}", json={setting: value, "name": "Renamed"}, headers=auth(token))
    assert assert_error(response, 400, "invalid_request")["message"] == body["message"]
    unchanged = ok(await client.get(f"/v1/apps/{created['app_id']}", headers=auth(token)))
    assert unchanged["name"] == "My App" and openid_of(unchanged) == OPENID


async def test_pairwise_on_several_hosts_needs_a_sector_identifier_uri(client: httpx.AsyncClient) -> None:
    """OpenID Connect Core 1.0 §8.1: the redirect URIs' one host is the sector, else the sector_identifier_uri's."""
    _, token = await sign_up(client)
    body = assert_error(await create_app(client, token, redirect_uris=TWO_HOSTS, subject_type="pairwise"), 400, "invalid_request")
    assert body["message"].startswith(SECTOR_REQUIRED)
    # A private-use scheme's URI has no host: it counts as one of its own.
    native = [REDIRECT, "com.example.app:/cb"]
    assert_error(await create_app(client, token, redirect_uris=native, subject_type="pairwise"), 400, "invalid_request")
    # One host (in any case, on any path or port): no sector_identifier_uri needed.
    one_host = [REDIRECT, "https://APP.example.com:8443/other"]
    app_id = ok(await create_app(client, token, redirect_uris=one_host, subject_type="pairwise"))["app_id"]
    base, headers = f"/v1/apps/{app_id}", auth(token)

    # What the app will have counts: a redirect URI on another host needs the sector too ...
    body = assert_error(await client.patch(base, json={"redirect_uris": TWO_HOSTS}, headers=headers), 400, "invalid_request")
    assert body["message"].startswith(SECTOR_REQUIRED)
    assert ok(await client.get(base, headers=headers))["redirect_uris"] == one_host
    # ... and given with it, both are saved; then it cannot be removed while pairwise on two hosts.
    sector = "https://sector.example.com/s.json"
    both = ok(await client.patch(base, json={"redirect_uris": TWO_HOSTS, "sector_identifier_uri": sector}, headers=headers))
    assert both["redirect_uris"] == TWO_HOSTS and both["sector_identifier_uri"] == sector
    assert_error(await client.patch(base, json={"sector_identifier_uri": ""}, headers=headers), 400, "invalid_request")
    # Public subjects need no sector.
    public = ok(await client.patch(base, json={"subject_type": "public", "sector_identifier_uri": ""}, headers=headers))
    assert openid_of(public)["subject_type"] == "public" and public["sector_identifier_uri"] is None
    assert ok(await create_app(client, token, redirect_uris=TWO_HOSTS, subject_type="public"))


async def test_openid_settings_of_the_wrong_type_are_refused(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    cases = {
        "post_logout_redirect_uris": ("https://app.example.com/bye", "post_logout_redirect_uris must be a list."),
        "id_token_signed_response_alg": (256, "id_token_signed_response_alg must be a string."),
        "subject_type": (["public"], "subject_type must be a string."),
        "sector_identifier_uri": (True, "sector_identifier_uri must be a string."),
        "require_nonce": ("true", "require_nonce must be true or false."),
    }
    for setting, (value, message) in cases.items():
        body = assert_error(await create_app(client, token, **{setting: value}), 400, "invalid_request")
        assert body["message"] == message, setting


async def test_the_audit_names_the_openid_settings_that_changed(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    app_id = ok(await create_app(client, token))["app_id"]
    base, headers = f"/v1/apps/{app_id}", auth(token)
    # Given as they already are (the defaults, spelled out or empty): nothing changes, nothing is audited.
    same = {"id_token_signed_response_alg": "RS256", "subject_type": "", "require_nonce": False, "post_logout_redirect_uris": []}
    ok(await client.patch(base, json=same, headers=headers))
    changes = {"post_logout_redirect_uris": ["https://app.example.com/secret-bye"], "require_nonce": True, "subject_type": "public"}
    ok(await client.patch(base, json=changes, headers=headers))
    ok(await client.patch(base, json={"require_nonce": False, "id_token_signed_response_alg": "ES256"}, headers=headers))
    events = ok(await client.get("/v1/audit", headers=headers))["events"]
    updated = [e["detail"] for e in events if e["event"] == "app_updated" and e["app_id"] == app_id]
    assert sorted(updated, key=str) == sorted(
        [{"fields": ["post_logout_redirect_uris", "require_nonce"]}, {"fields": ["id_token_signed_response_alg", "require_nonce"]}],
        key=str,
    )
    assert "secret-bye" not in str(events)


async def test_openapi_documents_the_openid_settings(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model in ("AppCreate", "AppUpdate", "AppData", "CreatedAppData"):
        assert set(OPENID_DEFAULTS) <= set(schemas[model]["properties"]), model
    create = schemas["AppCreate"]["properties"]
    assert "RS256" in str(create["id_token_signed_response_alg"]) and "pairwise" in str(create["subject_type"])
    assert "not fetched" in str(create["sector_identifier_uri"])
    required = set(schemas["AppData"].get("required", ()))
    assert {"post_logout_redirect_uris", "id_token_signed_response_alg", "subject_type", "require_nonce"} <= required


def test_the_openid_rules_normalise_and_name_every_bad_field() -> None:
    from grantd.core import apps
    from grantd.core.errors import InvalidRequest

    uris = ["https://app.example.com/bye", "https://app.example.com/bye", "http://localhost:3000/bye"]
    assert apps.check_openid({"post_logout_redirect_uris": uris, "subject_type": " pairwise ", "require_nonce": True}) == {
        "post_logout_redirect_uris": ("https://app.example.com/bye", "http://localhost:3000/bye"),  # once each, in order
        "subject_type": "pairwise",
        "require_nonce": True,
    }
    assert apps.check_openid({"subject_type": None, "sector_identifier_uri": "  "}) == {"sector_identifier_uri": None}
    with pytest.raises(ValueError):
        apps.check_openid({"userinfo_signed_response_alg": "RS256"})
    with pytest.raises(InvalidRequest) as refused:
        apps.check_openid(
            {"id_token_signed_response_alg": "HS256", "subject_type": "pairwise", "require_nonce": "yes"}, TWO_HOSTS
        )
    assert list(apps.field_errors(refused.value)) == ["id_token_signed_response_alg", "require_nonce", "sector_identifier_uri"]
    assert refused.value.field == "id_token_signed_response_alg"
    assert apps.redirect_hosts([REDIRECT, "https://App.Example.com:8443/x", "com.example.app:/cb"]) == {
        "app.example.com", "com.example.app",
    }
