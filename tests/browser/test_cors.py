"""A single-page app in a real Chromium, on another origin than grantd's: it discovers the server,
registers itself (RFC 7591, as the MCP Inspector does), sends the person through sign-in and
consent, redeems its code with PKCE and a DPoP proof, and reads UserInfo, every call a cross-origin
fetch() by oauth4webapi (tests/interop/node/node_modules, an independent client library) loaded in
the page (tests/browser/spa/). A page of an origin the client did not register reads the metadata
but not the token endpoint's answer, and the code it sent is not spent: the app's page redeems it."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from browser.conftest import launch_server, new_user, sign_in
from support.servers import ServerProcess

HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parent / "interop" / "node" / "node_modules" / "oauth4webapi" / "build" / "index.js"

pytestmark = pytest.mark.skipif(
    not BUNDLE.is_file(), reason=f"{BUNDLE} is missing: make interop-deps installs oauth4webapi"
)


class SiteServer:
    """The app's site: tests/browser/spa/ and oauth4webapi's browser bundle, on 127.0.0.1 (the
    origin its redirect URI names) and, as the same server, localhost (an origin no client has)."""

    def __init__(self) -> None:
        files = {"/app.html", "/callback.html", "/app.js"}

        class Handler(SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                path = urlsplit(path).path
                if path == "/oauth4webapi.js":
                    return str(BUNDLE)
                return str(HERE / "spa" / path.lstrip("/")) if path in files else str(HERE / "spa" / "missing")

            def log_message(self, *args: Any) -> None:
                pass

        Handler.extensions_map = {**Handler.extensions_map, ".js": "text/javascript"}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(HERE / "spa")))
        port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{port}"
        self.stranger = f"http://localhost:{port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def site() -> Iterator[SiteServer]:
    server = SiteServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def grantd(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    with launch_server(tmp_path_factory, secret_key, dynamic_registration="open") as server:
        yield server


def token_requests(server: ServerProcess, expected: int) -> list[tuple[str, int]]:
    """(method, status) of every request to the token endpoint, from the server's access log, once
    it holds ``expected`` of them (it is written just after the answer is sent) or 10 s have passed."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        seen = [(e["method"], e["status"]) for e in lines if e.get("event") == "request" and e.get("path") == "/oauth2/token"]
        if len(seen) >= expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def ready(page: Any) -> Any:
    """The page, once its module (app.js) has defined its functions."""
    page.wait_for_function("() => typeof window.finish === 'function'")
    return page


def authorize(page: Any, authorization_url: str, site_origin: str, email: str | None) -> dict[str, str]:
    """The person signs in (when ``email``) and allows; returns the callback's parameters."""
    page.goto(authorization_url)
    if email is not None:
        sign_in(page, None, email)
    if not page.url.startswith(site_origin):
        page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{site_origin}/callback.html?**")
    ready(page)
    return dict(parse_qsl(urlsplit(page.url).query))


def test_a_single_page_app_on_another_origin_gets_and_uses_its_token(
    new_page: Any, grantd: ServerProcess, site: SiteServer
) -> None:
    issuer = grantd.base_url
    with httpx.Client(base_url=issuer, timeout=30) as api:
        person = new_user(api)
    app = new_page()
    token_answers: list[Any] = []
    app.on("response", lambda r: token_answers.append(r) if r.url == f"{issuer}/oauth2/token" else None)
    app.goto(f"{site.origin}/app.html")
    ready(app)
    started = app.evaluate("issuer => start(issuer)", issuer)
    assert started["redirect_uri"] == f"{site.origin}/callback.html"
    params = authorize(app, started["authorization_url"], site.origin, person.email)
    assert "code" in params and params["iss"] == issuer

    got = app.evaluate("() => finish()")
    assert got["token_type"].lower() == "dpop", got
    assert got["access_token"].count(".") == 2
    assert got["userinfo_sub"] == got["sub"]
    assert [r.status for r in token_answers] == [200]
    assert token_answers[0].headers["access-control-allow-origin"] == site.origin  # as the browser got it
    assert "access-control-allow-credentials" not in token_answers[0].headers

    # A second code, which a page of another origin then tries to redeem with the app's verifier.
    again = app.evaluate("issuer => start(issuer)", issuer)
    assert again["client_id"] == started["client_id"]  # registered once
    params = authorize(app, again["authorization_url"], site.origin, None)
    form = {
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": again["redirect_uri"],
        "code_verifier": again["verifier"], "client_id": again["client_id"],
    }
    stranger = new_page()
    stranger.goto(f"{site.stranger}/app.html")
    ready(stranger)
    tried = stranger.evaluate("([issuer, form]) => redeemWithFetch(issuer, form)", [issuer, form])
    assert tried["origin"] == site.stranger
    assert tried["metadata_issuer"] == issuer  # the metadata is anyone's to read
    assert "status" not in tried and tried["error"].startswith("TypeError"), tried  # the answer is not the page's
    # refused by grantd (its access log), not merely hidden by the browser; the app's preflights were answered
    assert token_requests(grantd, 3) == [("OPTIONS", 204), ("POST", 200), ("POST", 400)]

    # the code is still good, for the app's own page
    got = app.evaluate("() => finish()")
    assert got["token_type"].lower() == "dpop" and got["userinfo_sub"] == got["sub"], got
