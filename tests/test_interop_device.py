"""Interop: the device authorization grant (RFC 8628) with Node's openid-client 6
(tests/interop/node/device.mjs) against a real `grantd serve`, the person in headless Chromium.

Node plays the device through openid-client alone: discovery, ``initiateDeviceAuthorization``,
``pollDeviceAuthorizationGrant`` (which waits the interval between polls, and validates the ID
token), ``fetchUserInfo``. This test plays the person: for each request node prints, Chromium opens
its ``verification_uri_complete``, presses Continue, signs in where asked, and, once node has
polled and been told ``authorization_pending``, approves or denies.

What the journey proves:

- the library finds the device authorization endpoint and the grant type in the discovery document;
- approved: the library's polling ends with tokens: the token endpoint answered
  ``authorization_pending`` until the person approved, then 200 once; a refresh token; an ID token
  the library validated, for the person's subject, which UserInfo answers too; the same device
  code polled again is ``invalid_grant``;
- denied: the library's polling ends in the error it reports for ``access_denied``.

Skipped where node or Chromium is absent (like tests/test_interop_openid_node.py).

And Python's requests-oauth2client, a second library no one here wrote, with the person on the
pages over HTTP: ``authorize_device`` at the discovery document's endpoint, ``device_code`` answered
``authorization_pending`` then ``slow_down`` (raised as the library's own exceptions), its
``DeviceAuthorizationPollingJob`` (which honours slow_down's longer interval) ending with a token
once approved, and ``AccessDenied`` once denied.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import requests
from requests_oauth2client import (
    AccessDenied,
    AuthorizationPending,
    ClientSecretBasic,
    DeviceAuthorizationPollingJob,
    OAuth2Client,
    SlowDown,
)

import httpx
from acting_user import new_app
from test_device_grant import decide
from support.neucron import PASSWORD, Flow
from support.servers import ServerProcess, assert_clean_logs

NODE_DIR = Path(__file__).parent / "interop" / "node"
CHROMIUM = os.environ.get("GRANTD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions", "--no-first-run"]
TIMEOUT = 90


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


needs_node_and_chromium = pytest.mark.skipif(_why_skipped() is not None, reason=_why_skipped() or "")


class Person:
    """One person in one Chromium context, on grantd's device pages."""

    def __init__(self, context: Any, email: str) -> None:
        self.context, self.email = context, email
        self.page: Any = None
        self.pages: dict[str, list[str]] = {}  # step: the pages the person answered, in order

    async def open(self, step: str, url: str) -> None:
        """Opens the device's link; Continue, and sign in where asked, up to the approval page."""
        self.page = page = await self.context.new_page()
        seen = self.pages.setdefault(step, [])
        await page.goto(url)
        for _ in range(4):
            if await page.locator('form[action="/device/approve"]').count():
                return
            if await page.locator('form[action="/device"]').count():
                seen.append("code")
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Continue").click()
            elif await page.locator('form[action="/signin"]').count():
                seen.append("signin")
                await page.get_by_label("Email").fill(self.email)
                await page.get_by_label("Password", exact=True).fill(PASSWORD)
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Sign in").click()
            else:
                raise AssertionError(f"{step}: neither the code, sign-in nor approval page at {page.url}")
        raise AssertionError(f"{step}: too many pages, at {page.url}")

    async def decide(self, step: str, decision: str) -> str:
        """Approve or Deny on the approval page; the heading of the page that follows."""
        page = self.page
        self.pages[step].append("approve")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Approve" if decision == "approve" else "Deny").click()
        heading = (await page.locator("h1").first.text_content() or "").strip()
        await page.close()
        return heading


async def _json_line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None and process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    if not line:
        await process.wait()
        stderr = (await process.stderr.read()).decode(errors="replace")
        raise AssertionError(f"node exited with {process.returncode} before answering:\n{stderr}")
    return json.loads(line)


async def _journey(environment: dict[str, str], person: Person) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs device.mjs as the person: for each request it prints, up to the approval page; then,
    once the device has polled and been told authorization_pending, the decision. Its report, and
    for each step what it asked, the headings after the decision and the polls seen before it."""
    process = await asyncio.create_subprocess_exec(
        "node", "device.mjs", cwd=NODE_DIR, env=environment,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    asked: dict[str, Any] = {}
    waiting: dict[str, Any] | None = None  # the request on the approval page, until decided
    try:
        assert process.stderr is not None
        while True:
            message = await _json_line(process)
            if "report" in message:
                break
            if "ask" in message:
                await person.open(message["step"], message["verification_uri_complete"])
                waiting = asked[message["step"]] = {**message, "polls_before": []}
            elif waiting is not None:
                waiting["polls_before"].append(message["polled"])
                if message["polled"] == "authorization_pending":
                    waiting["heading"] = await person.decide(waiting["step"], waiting["ask"])
                    waiting = None
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, (await process.stderr.read()).decode()
        return message["report"], asked
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@needs_node_and_chromium
@pytest.mark.parametrize("client_type", ["public", "confidential"])
async def test_openid_client_device_grant(
    interop_server: ServerProcess, interop_dev: Flow, client_type: str
) -> None:
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"the npm package openid-client is not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")
    from playwright.async_api import async_playwright

    issuer = interop_server.base_url
    flow = await new_app(interop_dev, client_type=client_type)
    environment = {**os.environ, "GRANTD_ISSUER": issuer, "CLIENT_ID": flow.app_id}
    if client_type == "confidential":
        environment["CLIENT_SECRET"] = flow.key_secret
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(15_000)
            person = Person(context, flow.extra["email"])
            report, asked = await _journey(environment, person)
        finally:
            await browser.close()
    assert_clean_logs([interop_server])

    discovery = report["discovery"]
    assert discovery["issuer"] == issuer
    assert discovery["device_authorization_endpoint"] == f"{issuer}/oauth2/device_authorization"
    assert "urn:ietf:params:oauth:grant-type:device_code" in discovery["grant_types_supported"]

    # Approved: the person typed nothing (the link filled the code in), signed in once, approved.
    approve = report["approve"]
    assert asked["approve"]["verification_uri"] == f"{issuer}/device"
    assert asked["approve"]["verification_uri_complete"] == f"{issuer}/device?user_code={approve['user_code']}"
    assert person.pages["approve"] == ["code", "signin", "approve"]
    assert asked["approve"]["heading"] == "You can return to your device"
    assert approve["expires_in"] == 600 and approve["interval"] == 5 and approve["device_code_length"] >= 43
    answers = approve["token_endpoint_answers"]
    assert answers[-1] == {"status": 200, "error": None}, answers
    # The person approved once the device had polled and been told to wait, then it got tokens.
    assert asked["approve"]["polls_before"] == ["authorization_pending"]
    assert len(answers) >= 2 and all(a == {"status": 400, "error": "authorization_pending"} for a in answers[:-1]), answers
    assert approve["token_type"] == "bearer" and approve["scope"] == "openid read_profile"
    assert approve["has_refresh_token"] is True
    claims = approve["id_token_claims"]
    assert claims["sub"] == flow.user_id and claims["aud"] == flow.app_id and claims["iss"] == issuer
    assert approve["userinfo_sub"] == flow.user_id
    assert approve["again"]["error"] == "invalid_grant", approve["again"]

    # Denied: the library reports access_denied, from the token endpoint's answer.
    deny = report["deny"]
    assert person.pages["deny"] == ["code", "approve"]  # signed in already in this browser
    assert asked["deny"]["heading"] == "Access denied"
    assert deny["error"] == "access_denied" and deny["status"] == 400, deny
    assert asked["deny"]["polls_before"] == ["authorization_pending"]
    assert deny["token_endpoint_answers"][-1] == {"status": 400, "error": "access_denied"}


async def test_requests_oauth2client_device_grant(interop_server: ServerProcess, interop_dev: Flow) -> None:
    issuer = interop_server.base_url
    flow = await new_app(interop_dev, client_type="confidential")
    document = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).json()
    # testing: the loopback server is http, which the library would otherwise refuse as an issuer.
    # from_discovery_document reads no device_authorization_endpoint: it is handed the document's.
    client = OAuth2Client.from_discovery_document(
        document, issuer=issuer, auth=ClientSecretBasic(flow.app_id, flow.key_secret), testing=True,
        device_authorization_endpoint=document["device_authorization_endpoint"],
    )
    assert client.device_authorization_endpoint == f"{issuer}/oauth2/device_authorization"

    started = await asyncio.to_thread(client.authorize_device, scope="read_profile write_data")
    assert started.verification_uri == f"{issuer}/device" and started.interval == 5
    with pytest.raises(AuthorizationPending):
        await asyncio.to_thread(client.device_code, started)
    with pytest.raises(SlowDown):  # at once again: sooner than the interval
        await asyncio.to_thread(client.device_code, started)
    async with httpx.AsyncClient(base_url=issuer, timeout=30) as browser:
        done = await decide(browser, started.verification_uri_complete, flow.extra["email"], "approve")
    assert "You can return to your device" in done.text

    def polled() -> Any:
        job = DeviceAuthorizationPollingJob(client, started)  # waits its interval, +5 s on slow_down
        token = None
        while token is None:
            token = job()
        return token

    token = await asyncio.to_thread(polled)
    assert token.scope == "read_profile write_data" and token.refresh_token
    introspected = await asyncio.to_thread(client.introspect_token, token.access_token)
    assert introspected["active"] is True and introspected["sub"] == flow.user_id

    denied = await asyncio.to_thread(client.authorize_device, scope="read_profile")
    async with httpx.AsyncClient(base_url=issuer, timeout=30) as browser:
        done = await decide(browser, denied.verification_uri_complete, flow.extra["email"], "deny")
    assert "Access denied" in done.text
    with pytest.raises(AccessDenied):
        await asyncio.to_thread(client.device_code, denied)
    assert_clean_logs([interop_server])
