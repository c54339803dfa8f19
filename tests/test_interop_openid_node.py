"""Interop: Node's openid-client 6 (an OpenID-certified relying party, tests/interop/node/openid.mjs)
against a real `grantd serve`, with the user in headless Chromium on the real pages.

Node plays the app and does everything a relying party does through openid-client: discovery,
the authorization URL with PKCE S256, a nonce and a state, the code grant (the library validates
the callback's state and RFC 9207 iss, and the ID token: signature by the published JWKS, iss,
aud, exp, nonce, auth_time against max_age, at_hash), UserInfo, refresh, the end-session URL.
This test plays the user: for each authorization or logout URL node prints, Chromium opens it,
signs in and consents where the pages ask, and the URL it lands on at the app goes back to node's
stdin. The app's site is a small HTTP server on loopback (an http redirect URI is allowed there,
RFC 8252 §7.3): a Playwright route cannot answer the request that follows a redirect (see
tests/browser/test_journey.py).

What the journey proves (the report's assertions below, in order):

- discovery names the issuer, userinfo and end-session endpoints, and RFC 9207 support;
- code + PKCE + nonce: the ID token the library validated has the nonce, auth_time, at_hash and
  the user's stable sub; UserInfo answers the same sub by GET, by POST with the token in the
  header and in the form body; a refresh returns a new ID token for the same sub;
- a replayed code is refused (invalid_grant), and the tokens of its first redemption end;
- RFC 9126: discovery names the PAR endpoint; ``buildAuthorizationUrlWithPAR`` pushes the request
  and the browser carries only client_id + request_uri; the code it brings back redeems; the same
  URL again lands on grantd's error page, not at the app;
- prompt=none with a session answers without a page, max_age=3600 does not ask again; a callback
  whose iss is wrong or missing is refused by the library before the code is sent;
- response_mode=form_post: Chromium runs the answer page's one script under its CSP and posts
  the answer to the app, where the library reads it from the POST;
- max_age=1 on an older session: the user signs in again, and auth_time moves on;
- prompt=login: the user signs in again (and consents to offline_access);
- logout with id_token_hint and no post_logout_redirect_uri: the signed-out page at once; the
  refresh tokens without offline_access end, the one with it lives on; then prompt=none gets
  login_required, which the library reports as an authorization response error;
- logout with a registered post_logout_redirect_uri and state: back at the app with the state.

The app registers its post_logout_redirect_uri with the rest, in ``POST /v1/apps``.

Skipped where node is absent (like tests/test_interop_node.py) or Chromium is (like tests/browser).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from acting_user import new_app
from support.neucron import PASSWORD, Flow
from support.servers import ServerProcess, assert_clean_logs, serving

NODE_DIR = Path(__file__).parent / "interop" / "node"
CHROMIUM = os.environ.get("GRANTD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions", "--no-first-run"]
TIMEOUT = 60


def _why_skipped() -> str | None:
    if shutil.which("node") is None:
        return "node (Node.js) is not installed on this machine"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium (.ci/run does)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: make install (it is in the test extra)"
    return None


pytestmark = pytest.mark.skipif(_why_skipped() is not None, reason=_why_skipped() or "")


def _require_packages() -> None:
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"the npm package openid-client is not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")


# ---------------------------------------------------------------- the app


class AppSite:
    """The app's site on loopback: answers every GET and POST with a small page, and keeps the
    bodies posted to it (response_mode=form_post)."""

    def __init__(self) -> None:
        self.posted: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                length = int(self.headers.get("Content-Length") or 0)
                site.posted.append(self.rfile.read(length).decode())
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                body = b"<!doctype html><title>app</title><h1>App</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # codes in URLs: not into the test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.redirect_uri = f"{self.origin}/callback"
        self.post_logout_redirect_uri = f"{self.origin}/signed-out"


@pytest.fixture
def app_site() -> Iterator[AppSite]:
    site = AppSite()
    with serving(site.server):
        yield site


async def _with_profile(flow: Flow) -> None:
    """The user's names, for the profile scope's claims."""
    response = await flow.client.put(
        "/auth/user/update", json={"first_name": "Ada", "last_name": "Lovelace"},
        headers={"Authorization": f"Bearer {flow.user_token}"},
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- the user, in Chromium


class User:
    """One person in one Chromium context (one cookie jar), on grantd's pages and the app's site."""

    def __init__(self, context: Any, email: str, app_site: AppSite) -> None:
        self.context, self.email, self.app_site = context, email, app_site
        self.page: Any = None
        self.signed_in_at = 0.0
        self.pages: dict[str, list[str]] = {}  # step: the pages the user answered, in order

    async def start(self) -> None:
        self.page = await self.context.new_page()

    async def authorize(self, step: str, url: str, min_session_age: float) -> dict[str, Any]:
        """Opens ``url``; signs in and allows where asked; the URL landed on at the app (``url``),
        and the form the browser posted there, if it did (``form``)."""
        wait = self.signed_in_at + min_session_age - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        page, seen = self.page, self.pages.setdefault(step, [])
        posts = len(self.app_site.posted)
        await page.goto(url)
        for _ in range(6):
            if page.url.startswith(self.app_site.origin + "/"):
                form = self.app_site.posted[posts:]
                return {"url": page.url, **({"form": form[-1]} if form else {})}
            if await self._posting_itself(page):  # response_mode=form_post: the page's script submits it
                await page.wait_for_url(f"{self.app_site.origin}/**")
                continue
            if await page.locator('form[action="/signin"]').count():
                seen.append("signin")
                await page.get_by_label("Email").fill(self.email)
                await page.get_by_label("Password", exact=True).fill(PASSWORD)
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Sign in").click()
                self.signed_in_at = time.time()
            elif await page.locator('form[action="/oauth2/authorize"]').count():
                seen.append("consent")
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Allow").click()
            else:
                raise AssertionError(f"{step}: neither sign-in, consent nor the app at {page.url}:\n{await page.content()}")
        raise AssertionError(f"{step}: too many pages, at {page.url}")

    async def _posting_itself(self, page: Any) -> bool:
        """Whether the page is the form_post answer: a form to the app, which its script submits."""
        from playwright.async_api import Error as PlaywrightError

        try:
            return await page.locator(f'form[action^="{self.app_site.origin}/"]').count() > 0
        except PlaywrightError:  # the page is already navigating away
            return True

    async def visit(self, step: str, url: str) -> dict[str, Any]:
        """Opens ``url`` (a logout request) and says where the browser landed and what it shows."""
        page = self.page
        response = await page.goto(url)
        cookies = {c["name"] for c in await self.context.cookies(url)}
        return {
            "url": page.url,
            "status": response.status if response is not None else None,
            "heading": (await page.locator("h1").first.text_content() or "").strip(),
            "session_cookie": "grantd_session" in cookies,
        }


async def _json_line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None and process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    if not line:
        await process.wait()
        stderr = (await process.stderr.read()).decode(errors="replace")
        raise AssertionError(f"node exited with {process.returncode} before answering:\n{stderr}")
    return json.loads(line)


async def _journey(environment: dict[str, str], user: User) -> dict[str, Any]:
    """Runs openid.mjs, answering each of its questions as the user; its report."""
    process = await asyncio.create_subprocess_exec(
        "node", "openid.mjs", cwd=NODE_DIR, env=environment,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdin is not None and process.stderr is not None
        while True:
            message = await _json_line(process)
            if "report" in message:
                break
            if message["ask"] == "authorize":
                answer = await user.authorize(message["step"], message["url"], message["min_session_age"])
            else:
                answer = await user.visit(message["step"], message["url"])
            process.stdin.write(json.dumps(answer).encode() + b"\n")
            await process.stdin.drain()
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, (await process.stderr.read()).decode()
        return message["report"]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


# ---------------------------------------------------------------- the test


async def test_openid_client_journey(interop_server: ServerProcess, interop_dev: Flow, app_site: AppSite) -> None:
    _require_packages()
    from playwright.async_api import async_playwright

    issuer = interop_server.base_url
    post_logout_uri = app_site.post_logout_redirect_uri
    flow = await new_app(
        dataclasses.replace(interop_dev, redirect_uri=app_site.redirect_uri),
        client_type="confidential", post_logout_redirect_uris=[post_logout_uri],
    )
    await _with_profile(flow)
    environment = {
        **os.environ,
        "GRANTD_ISSUER": issuer,
        "CLIENT_ID": flow.app_id,
        "CLIENT_SECRET": flow.key_secret,
        "REDIRECT_URI": flow.redirect_uri,
        "POST_LOGOUT_REDIRECT_URI": post_logout_uri,
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(15_000)
            user = User(context, flow.extra["email"], app_site)
            await user.start()
            report = await _journey(environment, user)
        finally:
            await browser.close()
    pages = user.pages
    assert_clean_logs([interop_server])

    # Discovery: the issuer is the server's (the library also refuses a mismatch by itself).
    discovery = report["discovery"]
    assert discovery["issuer"] == issuer and discovery["supports_pkce"] is True
    assert discovery["userinfo_endpoint"] == f"{issuer}/oauth2/userinfo"
    assert discovery["end_session_endpoint"] == f"{issuer}/oauth2/logout"
    assert discovery["authorization_response_iss_parameter_supported"] is True
    assert discovery["pushed_authorization_request_endpoint"] == f"{issuer}/oauth2/par"
    assert discovery["require_pushed_authorization_requests"] is False

    # The first sign-in: the pages, the callback, the ID token the library validated.
    assert pages["first"] == ["signin", "consent"]
    first = report["first"]
    assert first["callback_parameters"] == ["code", "iss", "state"]
    assert first["id_token_header"]["alg"] in discovery["id_token_signing_alg_values_supported"]
    assert first["id_token_header"].get("kid")
    claims = first["id_token_claims"]
    sub = claims["sub"]
    assert sub == flow.user_id  # public subject: the user's id, stable, never the email
    assert claims["iss"] == issuer and claims["aud"] == flow.app_id
    assert claims["nonce"] == first["nonce_sent"]
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]
    assert claims["at_hash"] and claims["amr"] == ["pwd"]
    assert claims["email"] == flow.extra["email"] and claims["name"] == "Ada Lovelace"
    assert first["scope"] == "openid profile email" and first["token_type"] == "bearer"
    assert first["has_refresh_token"] is True

    # UserInfo: the same sub and claims by GET, POST (header) and POST (form body).
    userinfo = report["userinfo"]
    assert userinfo["get"]["sub"] == sub
    assert userinfo["get"]["email"] == flow.extra["email"] and userinfo["get"]["given_name"] == "Ada"
    assert userinfo["post_header"] == {"status": 200, "body": userinfo["get"]}
    assert userinfo["post_form"] == {"status": 200, "body": userinfo["get"]}

    # Refresh: a new ID token for the same person and app, validated by the library.
    refresh = report["refresh"]
    assert "error" not in refresh, refresh
    assert refresh["rotated"] is True and refresh["new_access_token"] is True
    refreshed = refresh["id_token_claims"]
    assert refreshed["sub"] == sub and refreshed["aud"] == flow.app_id and refreshed["iss"] == issuer
    assert refreshed["auth_time"] == claims["auth_time"]  # Core §12.2: the original authentication

    # The replayed code: invalid_grant; what its first redemption produced ends (RFC 6749 §4.1.2).
    assert report["replay"]["error"] == "invalid_grant", report["replay"]
    assert report["replay_after"]["refresh"]["error"] == "invalid_grant", report["replay_after"]
    assert report["replay_after"]["userinfo"] is not None, "the access token outlived the replay of its code"

    # RFC 9126: the library pushed the request; the browser carried client_id + request_uri only,
    # and, with the session and prompt=none, came back with a code the library redeemed.
    assert pages["par"] == []
    assert report["par_url_parameters"] == ["client_id", "request_uri"]
    assert report["par"]["callback_parameters"] == ["code", "iss", "state"]
    assert report["par"]["id_token_claims"]["nonce"] == report["par"]["nonce_sent"]
    assert report["par_sub"] == sub
    # The same URL again: the request_uri is spent; grantd's error page, not the app.
    reused = report["par_reused"]
    assert reused["url"].startswith(f"{issuer}/oauth2/authorize?") and reused["status"] == 400, reused
    assert reused["heading"] == "This request cannot be used", reused

    # prompt=none with the session (and max_age=3600): no page; iss checked by the library.
    assert pages["silent"] == []
    iss_check = report["iss_check"]
    assert iss_check["wrong"]["code"] == "OAUTH_INVALID_RESPONSE", iss_check
    assert iss_check["wrong"]["cause"] == 'unexpected "iss" (issuer) response parameter value', iss_check
    assert iss_check["missing"]["code"] == "OAUTH_INVALID_RESPONSE", iss_check
    assert iss_check["missing"]["cause"] == 'response parameter "iss" (issuer) missing', iss_check
    assert report["silent"]["id_token_claims"]["sub"] == sub
    assert report["silent"]["id_token_claims"]["auth_time"] == claims["auth_time"]  # the same sign-in

    # response_mode=form_post: Chromium posted the answer (the page's script ran under its CSP).
    assert pages["form_post"] == []
    assert report["form_post"] == {"posted": True, "parameters": ["code", "iss", "state"], "sub": sub}

    # max_age=1 on an older session: signed in again (consent remembered); a newer auth_time.
    assert pages["max_age"] == ["signin"]
    max_age_time = report["max_age"]["id_token_claims"]["auth_time"]
    assert max_age_time > claims["auth_time"]

    # prompt=login: signed in again although signed in; offline_access needs the user's consent.
    assert pages["login"] == ["signin", "consent"]
    login = report["login"]
    assert login["id_token_claims"]["auth_time"] >= max_age_time
    assert login["scope"] == "openid profile email offline_access" and login["has_refresh_token"] is True

    # Logout with id_token_hint, no post_logout_redirect_uri: signed out at once, on grantd's page.
    logout = report["logout"]
    assert logout["url_parameters"] == ["client_id", "id_token_hint"]
    assert logout["browser"]["url"].startswith(f"{issuer}/oauth2/logout?")
    assert logout["browser"]["heading"] == "You are signed out"
    assert logout["browser"]["session_cookie"] is False
    # The grants without offline_access end with the browser's sign-ins; the offline one lives on.
    ended = logout["refresh_without_offline_access"]
    assert ended["max_age"] is not None and ended["max_age"]["error"] == "invalid_grant", ended
    assert ended["silent"] is not None and ended["silent"]["error"] == "invalid_grant", ended
    assert logout["refresh_with_offline_access"] is None and logout["offline_refreshed_sub"] == sub

    # prompt=none after the logout: login_required at the redirect URI, as the library reports it.
    assert pages["after"] == []
    after = report["after"]
    assert after["callback_parameters"] == ["error", "error_description", "iss", "state"]
    assert after["error"]["name"] == "AuthorizationResponseError" and after["error"]["error"] == "login_required"

    # Logout back to the app: the registered post_logout_redirect_uri, with the state.
    post_logout = report["post_logout"]
    assert pages["post_logout_signin"] == ["signin"]
    landed = post_logout["browser"]["url"]
    assert landed.split("?")[0] == post_logout_uri and _query(landed) == {"state": post_logout["state"]}
    assert post_logout["browser"]["session_cookie"] is False
    assert post_logout["after"]["error"] == "login_required"
    assert pages["post_logout_after"] == []
