"""An app's branding: its rules (core.apps), the v2 client-info shape, /v1/apps and the developer
console. The hosted pages that show it: test_branded_pages.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from grantd.core import apps
from grantd.core.errors import InvalidRequest
from support.neucron import assert_error, ok, sign_up
from test_console import Developer, csrf_of, dev, field_error, post_form, text_of, texts  # noqa: F401 - dev: a fixture

pytestmark = pytest.mark.db

LOGO = "https://cdn.photoprinter.example:8443/brand/logo.svg?v=2"
LOGO_ORIGIN = "https://cdn.photoprinter.example:8443"
BRAND = {
    "logo_uri": LOGO,
    "client_uri": "https://photoprinter.example",
    "tos_uri": "https://photoprinter.example/terms",
    "policy_uri": "https://photoprinter.example/privacy#cookies",
    "description": "Prints your photos & posts them <the next day>.",
    "domain": "photoprinter.example",
    "accent_color": "#7a1fa2",
    "theme": "dark",
}
EMPTY = dict.fromkeys(apps.BRANDING_FIELDS)

# Each rule, refused: (setting, value, the start of the message). The first three are attempts
# at injecting CSS or script into the pages.
REFUSED = [
    ("accent_color", "red;}body{display:none", "accent_color must be a colour written #rgb or #rrggbb"),
    ("logo_uri", "javascript:alert(1)", "logo_uri must be an absolute https URL"),
    ("logo_uri", 'https://cdn.example/logo.png" onerror="alert(1)', "logo_uri may not contain white space"),
    ("logo_uri", "https://cdn.example/<script>.png", "logo_uri may not contain white space"),
    ("logo_uri", "data:image/svg+xml,<svg/>", "logo_uri may not contain white space"),
    ("logo_uri", "data:image/png;base64,AAAA", "logo_uri must be an absolute https URL"),
    ("logo_uri", "//cdn.example/logo.png", "logo_uri must be an absolute https URL"),
    ("logo_uri", "/logo.png", "logo_uri must be an absolute https URL"),
    ("logo_uri", "https:///logo.png", "logo_uri must be an absolute https URL"),
    ("logo_uri", "https://[::1]/logo.png", "logo_uri's host must be a DNS name or an IPv4 address"),
    ("logo_uri", "https://cdn_1.example/logo.png", "logo_uri's host must be a DNS name or an IPv4 address"),
    ("logo_uri", "https://cdn.example:99999/logo.png", "logo_uri is not a valid URL"),
    ("logo_uri", "https://" + "a" * 2040 + ".example", "logo_uri must be at most 2048 characters"),
    ("client_uri", "http://photoprinter.example", "client_uri must be an absolute https URL"),
    ("client_uri", "https://user:pw@photoprinter.example", "client_uri may not carry user information"),
    ("client_uri", "https://photoprinter.example/a b", "client_uri may not contain white space"),
    ("tos_uri", "https://photoprinter.example/\tterms", "tos_uri may not contain white space"),
    ("tos_uri", "ftp://photoprinter.example/terms", "tos_uri must be an absolute https URL"),
    ("policy_uri", "https://photoprinter.example/privacé", "policy_uri may not contain white space"),
    ("policy_uri", "https://photoprinter.example/\\privacy", "policy_uri may not contain white space"),
    ("description", "two\nlines", "description must be at most 500 printable characters"),
    ("description", "right-to-left \u202e override", "description must be at most 500 printable characters"),
    ("description", "x" * 501, "description must be at most 500 printable characters"),
    ("domain", "https://photoprinter.example", "domain must be a host name"),
    ("domain", "photoprinter.example:443", "domain must be a host name"),
    ("domain", "photo printer.example", "domain must be a host name"),
    ("domain", "-photoprinter.example", "domain must be a host name"),
    ("domain", "a" * 64 + ".example", "domain must be a host name"),
    ("accent_color", "#12345", "accent_color must be a colour written #rgb or #rrggbb"),
    ("accent_color", "0b5cad", "accent_color must be a colour written #rgb or #rrggbb"),
    ("accent_color", "#0b5cad;x", "accent_color must be a colour written #rgb or #rrggbb"),
    ("accent_color", "#0b5cadff", "accent_color must be a colour written #rgb or #rrggbb"),
    ("accent_color", "var(--x)", "accent_color must be a colour written #rgb or #rrggbb"),
    ("theme", "blue", "theme must be one of: light, dark."),
    ("theme", "Dark", "theme must be one of: light, dark."),
]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csp(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers["content-security-policy"]
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


async def create_app(client: httpx.AsyncClient, token: str, **fields: Any) -> httpx.Response:
    body = {"name": "Photo Printer", "redirect_uris": ["https://app.example.com/callback"], "permissions": "read_profile", **fields}
    return await client.post("/v1/apps", json=body, headers=auth(token))


# ---------------------------------------------------------------- the rules, in core.apps


@pytest.mark.parametrize(("setting", "value", "message"), REFUSED)
def test_each_rule_refuses_with_its_field(setting: str, value: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        apps.check_branding({setting: value})
    assert refused.value.field == setting
    assert refused.value.message.startswith(message), refused.value.message
    assert apps.field_errors(refused.value) == {setting: refused.value.message}


def test_every_bad_setting_is_named_at_once() -> None:
    with pytest.raises(InvalidRequest) as refused:
        apps.check_branding({**BRAND, "tos_uri": "javascript:x", "accent_color": "red", "theme": "blue"})
    assert list(apps.field_errors(refused.value)) == ["tos_uri", "accent_color", "theme"]
    assert refused.value.field == "tos_uri"


@pytest.mark.parametrize(
    ("setting", "given", "stored"),
    [
        ("logo_uri", LOGO, LOGO),
        ("logo_uri", "  https://cdn.example/l.png  ", "https://cdn.example/l.png"),
        ("logo_uri", "HTTPS://CDN.Example/L.png", "HTTPS://CDN.Example/L.png"),
        ("logo_uri", "https://203.0.113.7/l.png", "https://203.0.113.7/l.png"),
        # http on a loopback host, as redirect URIs allow it (a developer's own machine)
        ("logo_uri", "http://localhost:3000/l.png", "http://localhost:3000/l.png"),
        ("logo_uri", "http://127.0.0.1:3000/l.png", "http://127.0.0.1:3000/l.png"),
        ("client_uri", "http://[::1]:3000/", "http://[::1]:3000/"),
        ("policy_uri", "https://photoprinter.example/privacy#cookies", "https://photoprinter.example/privacy#cookies"),
        ("tos_uri", "https://photoprinter.example/" + "t" * 2000, "https://photoprinter.example/" + "t" * 2000),
        ("description", "  Prints your photos é ünïcode & <tags>  ", "Prints your photos é ünïcode & <tags>"),
        ("description", "x" * 500, "x" * 500),
        ("domain", "Photo-Printer.Example", "photo-printer.example"),
        ("accent_color", "#ABC", "#abc"),
        ("accent_color", "#0B5cAd", "#0b5cad"),
        ("theme", "light", "light"),
        ("theme", "dark", "dark"),
        ("theme", "", None),  # empty: not set (or removed)
        ("description", "   ", None),
    ],
)
def test_good_values_are_stored_trimmed_and_normalised(setting: str, given: str, stored: str | None) -> None:
    assert apps.check_branding({setting: given}) == {setting: stored}


def test_a_setting_not_given_is_left_alone() -> None:
    assert apps.check_branding({"theme": None, "domain": "a.example"}) == {"domain": "a.example"}
    with pytest.raises(ValueError):
        apps.check_branding({"logo_url": "https://x.example/l.png"})


def test_branding_in_the_client_info_shape() -> None:
    """``branding`` answers what the v2 ``GET /oauth/client-info`` carries of an app (Neucron SDK
    2.2.3): every key set is there, none that is not set (absent, never null)."""
    assert apps.branding(apps.Branding(**BRAND)) == {
        "app_icon": LOGO,
        "app_domain": "photoprinter.example",
        "description": BRAND["description"],
        "website_url": "https://photoprinter.example",
        "terms_and_conditions": "https://photoprinter.example/terms",
        "privacy_policy": "https://photoprinter.example/privacy#cookies",
        "branding": {"accent_color": "#7a1fa2", "theme": "dark", "logo_url": LOGO},
    }
    assert apps.branding(apps.Branding()) == {}
    assert apps.branding(apps.Branding(theme="light")) == {"branding": {"theme": "light"}}
    assert apps.branding(apps.Branding(tos_uri="https://a.example/t")) == {"terms_and_conditions": "https://a.example/t"}


async def test_branding_of_a_stored_row_and_an_app(app: Any, client: httpx.AsyncClient) -> None:
    """The v2 dialect hands ``branding`` a row of ``apps`` as the store reads it."""
    from grantd.store import apps as store

    _, token = await sign_up(client)
    app_id = ok(await create_app(client, token, **BRAND))["app_id"]
    ctx = app.state.ctx
    async with ctx.db.read() as conn:
        row = await store.live(conn, app_id)
    expected = apps.branding(apps.Branding(**BRAND))
    assert apps.branding(row) == expected
    assert apps.branding(await apps.get_owned(ctx, None, app_id)) == expected
    app_id = ok(await create_app(client, token))["app_id"]
    async with ctx.db.read() as conn:
        assert apps.branding(await store.live(conn, app_id)) == {}


@pytest.mark.parametrize(
    ("color", "text"),
    [("#ffffff", "#000000"), ("#000", "#ffffff"), ("#0b5cad", "#ffffff"), ("#ffeb3b", "#000000"), ("#7a1fa2", "#ffffff")],
)
def test_button_text_reads_on_the_accent_colour(color: str, text: str) -> None:
    assert apps.accent_text_color(color) == text


# ---------------------------------------------------------------- /v1/apps


async def test_create_read_list_update_and_remove(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    created = ok(await create_app(client, token, **BRAND))
    assert {k: created[k] for k in BRAND} == BRAND
    app_id = created["app_id"]
    assert {k: v for k, v in ok(await client.get(f"/v1/apps/{app_id}", headers=auth(token))).items() if k in BRAND} == BRAND
    [listed] = ok(await client.get("/v1/apps", headers=auth(token)))["apps"]
    assert {k: listed[k] for k in BRAND} == BRAND

    # PATCH: absent or null leaves a setting; a value changes it (normalised); "" removes it.
    patch = {"accent_color": "#ABC", "theme": "", "logo_uri": None, "description": ""}
    patched = ok(await client.patch(f"/v1/apps/{app_id}", json=patch, headers=auth(token)))
    assert {k: patched[k] for k in BRAND} == {**BRAND, "accent_color": "#abc", "theme": None, "description": None}
    again = ok(await client.get(f"/v1/apps/{app_id}", headers=auth(token)))
    assert {k: again[k] for k in BRAND} == {k: patched[k] for k in BRAND}

    # Not set: null in the v1 answers.
    plain = ok(await create_app(client, token))
    assert {k: plain[k] for k in BRAND} == EMPTY


@pytest.mark.parametrize(("setting", "value", "message"), REFUSED)
async def test_the_api_refuses_each_bad_value(client: httpx.AsyncClient, setting: str, value: str, message: str) -> None:
    _, token = await sign_up(client)
    body = assert_error(await create_app(client, token, **{setting: value}), 400, "invalid_request")
    assert body["message"].startswith(setting), body
    if len(value) <= {"logo_uri": 2048, "description": 500, "domain": 253}.get(setting, 2048):
        assert body["message"].startswith(message), body  # the rule's own words (else the wire's length cap)
    assert ok(await client.get("/v1/apps", headers=auth(token)))["apps"] == []  # nothing registered

    app_id = ok(await create_app(client, token, **BRAND))["app_id"]
    response = await client.patch(f"/v1/apps/{app_id}", json={setting: value, "name": "Renamed"}, headers=auth(token))
    assert assert_error(response, 400, "invalid_request")["message"] == body["message"]
    unchanged = ok(await client.get(f"/v1/apps/{app_id}", headers=auth(token)))
    assert unchanged["name"] == "Photo Printer" and {k: unchanged[k] for k in BRAND} == BRAND


async def test_a_setting_of_the_wrong_type_is_refused(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    body = assert_error(await create_app(client, token, theme=1), 400, "invalid_request")
    assert body["message"] == "theme must be a string."


async def test_audit_names_the_changed_settings_and_never_their_values(client: httpx.AsyncClient) -> None:
    _, token = await sign_up(client)
    app_id = ok(await create_app(client, token, **BRAND))["app_id"]
    changes = {"logo_uri": "https://other.example/secret-path/l.png", "theme": "dark", "domain": "", "name": "Photo Printer"}
    ok(await client.patch(f"/v1/apps/{app_id}", json=changes, headers=auth(token)))
    events = ok(await client.get("/v1/audit", headers=auth(token)))["events"]
    updated = [e for e in events if e["event"] == "app_updated" and e["app_id"] == app_id]
    # theme and name were given as they were: not changed, not recorded
    assert [e["detail"] for e in updated] == [{"fields": ["domain", "logo_uri"]}]
    created = next(e for e in events if e["event"] == "app_created" and e["app_id"] == app_id)
    assert "secret-path" not in str(events) and "photoprinter" not in str(created["detail"])


async def test_openapi_documents_the_settings(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model in ("AppCreate", "AppUpdate", "AppData"):
        properties = schemas[model]["properties"]
        assert set(apps.BRANDING_FIELDS) <= set(properties), model
    create = schemas["AppCreate"]["properties"]
    assert "https" in str(create["logo_uri"]) and "#rrggbb" in str(create["accent_color"])
    assert "light or dark" in str(create["theme"])


# ---------------------------------------------------------------- the developer console


async def registered_with(dev: Developer, **settings: str) -> httpx.Response:
    form = await dev.page("/console/apps/new")
    data = {"csrf_token": csrf_of(form), "name": "Photo Printer", "redirect_uris": "https://app.example.com/callback",
            "permissions": "read_profile", "client_type": "confidential", **settings}
    return await dev.post("/console/apps", data)


def edit_form(page: httpx.Response, app_id: str, leave_out: Any = ()) -> list[tuple[str, str]]:
    """What the app page's settings form posts (its text area too), but for ``leave_out``."""
    data = post_form(page, f"/console/apps/{app_id}") + [("redirect_uris", text_of(page, "redirect_uris"))]
    return [(k, v) for k, v in data if k not in leave_out]


def console_settings(response: httpx.Response) -> dict[str, str]:
    """The branding settings the app page's form holds."""
    parsed = texts(response.text)
    values = {name: parsed.attrs[name].get("value", "") for name in apps.BRANDING_FIELDS if name != "theme"}
    checked = [a["value"] for a in parsed.attrs.values() if a.get("name") == "theme" and "checked" in a]
    return {**values, "theme": checked[0] if checked else "?"}


async def test_the_console_registers_shows_and_edits_the_branding(dev: Developer, client: httpx.AsyncClient) -> None:
    new = await dev.page("/console/apps/new")
    for control in (*[n for n in apps.BRANDING_FIELDS if n != "theme"], "theme-browser", "theme-light", "theme-dark"):
        assert f'<label for="{control}">' in new.text, control
    created = await registered_with(dev, **BRAND)
    assert created.status_code == 200, created.text
    app_id = text_of(created, "app-id")
    page = await dev.page(f"/console/apps/{app_id}")
    assert console_settings(page) == BRAND

    data = edit_form(page, app_id, BRAND)
    data += [*{**BRAND, "accent_color": "#FFF", "theme": "light", "tos_uri": "", "description": "Now in colour."}.items()]
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 303, response.text
    saved = await dev.page(response.headers["location"])
    assert console_settings(saved) == {**BRAND, "accent_color": "#fff", "theme": "light", "tos_uri": "", "description": "Now in colour."}

    # The theme back to the browser's choice.
    data = edit_form(saved, app_id, ["theme"]) + [("theme", "")]
    assert (await dev.post(f"/console/apps/{app_id}", data)).status_code == 303
    assert console_settings(await dev.page(f"/console/apps/{app_id}"))["theme"] == ""


@pytest.mark.parametrize(("setting", "value", "message"), REFUSED)
async def test_the_console_shows_each_refusal_next_to_its_field(
    dev: Developer, setting: str, value: str, message: str
) -> None:
    response = await registered_with(dev, **{setting: value})
    assert response.status_code == 400, response.text
    shown = text_of(response, "theme-error") if setting == "theme" else field_error(response, setting)
    assert shown.startswith(message), shown
    assert response.text.count('class="error"') == 1
    if setting != "theme":
        assert texts(response.text).attrs[setting]["value"] == value  # what was typed is kept
    assert "You have no apps yet" in (await dev.page("/console")).text


async def test_a_refused_console_edit_changes_nothing(dev: Developer) -> None:
    app_id = text_of(await registered_with(dev, **BRAND), "app-id")
    page = await dev.page(f"/console/apps/{app_id}")
    data = edit_form(page, app_id, ("logo_uri", "accent_color"))
    data += [("logo_uri", "javascript:alert(1)"), ("accent_color", "red;}body{display:none")]
    response = await dev.post(f"/console/apps/{app_id}", data)
    assert response.status_code == 400
    assert field_error(response, "logo_uri").startswith("logo_uri must be an absolute https URL")
    assert field_error(response, "accent_color").startswith("accent_color must be a colour")
    assert response.text.count('class="error"') == 2
    assert console_settings(await dev.page(f"/console/apps/{app_id}")) == BRAND
