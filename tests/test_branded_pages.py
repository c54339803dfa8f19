"""The hosted pages of an app with a branding: sign-in, sign-up and consent show its logo, colour,
theme and links, without letting the app break them or widen their Content-Security-Policy beyond
the logo's one origin."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from support.neucron import ok, sign_up, unique_email
from test_branding import BRAND, LOGO, LOGO_ORIGIN, auth, create_app, csp
from test_pages import Client, browser, consent_page, form, new_client, sign_in  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.db


@pytest.fixture
async def branded(client: httpx.AsyncClient) -> Client:
    return await new_client(client, "confidential", name="Photo Printer <&>", **BRAND)


def assert_no_inline_style(response: httpx.Response) -> None:
    assert "style=" not in response.text and "<style" not in response.text and "<script" not in response.text
    assert csp(response)["style-src"] == ["'self'"] and "script-src" not in csp(response)


def assert_branded(response: httpx.Response, oauth: Client) -> None:
    assert response.status_code == 200, response.text
    policy = csp(response)
    assert policy["img-src"] == ["'self'", LOGO_ORIGIN]  # the logo's one origin, nothing wider
    assert_no_inline_style(response)
    logo = re.findall(r"<img [^>]*>", response.text)
    assert logo == [
        f'<img class="app-logo" src="{LOGO.replace("&", "&amp;")}" alt="Photo Printer &lt;&amp;&gt;" '
        'width="48" height="48" referrerpolicy="no-referrer">'
    ]
    assert '<link rel="stylesheet" href="/static/accent/7a1fa2.css">' in response.text
    assert '<body class="theme-dark">' in response.text
    links = re.findall(r'<a href="([^"]+)" rel="noopener noreferrer" target="_blank">([^<]+)</a>', response.text)
    assert links == [
        ("https://photoprinter.example", "Website"),
        ("https://photoprinter.example/terms", "Terms of service"),
        ("https://photoprinter.example/privacy#cookies", "Privacy policy"),
    ]
    assert 'class="app-links"' in response.text


async def test_sign_in_sign_up_and_consent_show_the_branding(
    browser: httpx.AsyncClient, branded: Client, client: httpx.AsyncClient
) -> None:
    path = branded.authorize_path()
    to_signin = await browser.get(path)
    assert to_signin.status_code == 303
    signin = await browser.get(to_signin.headers["location"])
    assert_branded(signin, branded)
    assert "to continue to <strong>Photo Printer &lt;&amp;&gt;</strong>" in signin.text
    signup = await browser.get("/signup", params={"next": path})
    assert_branded(signup, branded)

    email = unique_email()
    await sign_up(client, email)
    response = await sign_in(browser, email, path)
    assert response.status_code == 303 and response.headers["location"] == path
    consent = await consent_page(browser, path)
    assert_branded(consent, branded)
    assert '<p class="app-description">Prints your photos &amp; posts them &lt;the next day&gt;.</p>' in consent.text
    # The domain is the developer's word, not verified: the pages do not show it.
    assert "photoprinter.example" not in re.sub(r"<[^>]*>", "", consent.text)
    form(consent, "/oauth2/authorize")  # the decision form is still there, and works
    allowed = await browser.post("/oauth2/authorize", data=form(consent, "/oauth2/authorize").data(decision="allow"))
    assert allowed.status_code == 303 and allowed.headers["location"].startswith(branded.redirect_uri + "?code=")


async def test_the_logo_origin_is_allowed_on_those_pages_only(
    browser: httpx.AsyncClient, branded: Client, client: httpx.AsyncClient
) -> None:
    plain = await new_client(client, "confidential")
    email = unique_email()
    await sign_up(client, email)
    pages = [
        await browser.get("/signin"),
        await browser.get("/signup"),
        await browser.get("/signin", params={"next": plain.authorize_path()}),
        await browser.get("/signin", params={"next": "/console"}),
        # an unknown client: no app, no branding
        await browser.get("/signin", params={"next": "/oauth2/authorize?client_id=nope"}),
        await browser.get("/oauth2/authorize?client_id=nope"),
    ]
    await sign_in(browser, email)
    pages += [await browser.get("/"), await browser.get("/console"), await browser.get("/account"),
              await consent_page(browser, plain.authorize_path())]
    for page in pages:
        assert csp(page)["img-src"] == ["'self'"], page.text
        assert "<img" not in page.text and "/static/accent/" not in page.text and "theme-" not in page.text
        assert_no_inline_style(page)
    assert_branded(await consent_page(browser, branded.authorize_path()), branded)


async def test_a_loopback_logo_is_allowed_by_its_origin(browser: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    oauth = await new_client(client, "public", logo_uri="http://127.0.0.1:8765/logo.png", accent_color="#FFF")
    signin = await browser.get("/signin", params={"next": oauth.authorize_path()})
    assert csp(signin)["img-src"] == ["'self'", "http://127.0.0.1:8765"]
    assert 'src="http://127.0.0.1:8765/logo.png"' in signin.text
    assert '<link rel="stylesheet" href="/static/accent/fff.css">' in signin.text
    assert "<body>" in signin.text  # no theme chosen: the browser's


async def test_a_disabled_app_shows_nothing(browser: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    owner_email = unique_email()
    _, token = await sign_up(client, owner_email)
    app_id = ok(await create_app(client, token, **BRAND))["app_id"]
    ok(await client.delete(f"/v1/apps/{app_id}", headers=auth(token)))
    query = urlencode({"response_type": "code", "client_id": app_id, "redirect_uri": "https://app.example.com/callback"})
    signin = await browser.get("/signin", params={"next": f"/oauth2/authorize?{query}"})
    assert csp(signin)["img-src"] == ["'self'"] and "<img" not in signin.text


@pytest.mark.parametrize(
    ("color", "css"),
    [("7a1fa2", "--app-accent: #7a1fa2; --app-accent-fg: #ffffff;"), ("FE0", "--app-accent: #fe0; --app-accent-fg: #000000;")],
)
async def test_the_accent_stylesheet(browser: httpx.AsyncClient, color: str, css: str) -> None:
    response = await browser.get(f"/static/accent/{color}.css")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in response.headers["cache-control"]
    assert response.text == f":root {{ {css} }}\n"


@pytest.mark.parametrize(
    "color", ["red", "12345", "1234567", "zzzzzz", "7a1fa2%3B%7Dbody%7Bdisplay:none", "%237a1fa2", "7a1fa2%0a", ""]
)
async def test_no_other_accent_stylesheet(browser: httpx.AsyncClient, color: str) -> None:
    response = await browser.get(f"/static/accent/{color}.css")
    assert response.status_code == 404
    assert "text/css" not in response.headers["content-type"]
