"""Clickjacking, CSRF and open redirects, tried from a real browser.

The attacker's pages are served by a small HTTP server of the test's own, on another port of
the loopback address: reached as ``http://127.0.0.1:<port>`` it is another origin of the same
site (the browser sends grantd's SameSite=Lax cookies along, so only grantd's own defences stand
in the way); reached as ``http://localhost:<port>`` it is another site.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from browser.conftest import CLIENT_ORIGIN, Traffic, follow, new_user, register_app, sign_in

FORGED_HOST = "https://evil.example"


class AttackerSite:
    """Serves what is put in ``pages`` by path (HTML unless said otherwise); every other path is a 404.
    (tests/browser/test_branding.py plays a developer's own machine with it.)"""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, str]] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                body, content_type = site.pages.get(self.path, (None, "text/html; charset=utf-8"))
                data = (body or "not found").encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(
        self, path: str, body: str, *, host: str = "127.0.0.1", content_type: str = "text/html; charset=utf-8"
    ) -> str:
        """Put ``body`` at ``path``; its URL on ``host`` (127.0.0.1: same site as grantd; localhost: another)."""
        self.pages[path] = (body, content_type)
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def attacker() -> Iterator[AttackerSite]:
    site = AttackerSite()
    yield site
    site.close()


@pytest.fixture
def victim(page: Any, api: httpx.Client, base_url: str) -> Any:
    """A signed-in user (API token in ``page.user``) and an app they have not granted (``page.app``)."""
    page.user = new_user(api)
    page.app = register_app(api, name="Photo Printer")
    page.traffic = Traffic(page.context)
    page.context.route(f"{FORGED_HOST}/**", lambda route: route.abort())
    sign_in(page, base_url, page.user.email)
    return page


def grants_of(api: httpx.Client, user: Any) -> list[Any]:
    response = api.get("/v1/grants", headers={"Authorization": f"Bearer {user.token}"})
    assert response.status_code == 200, response.text
    return response.json()["data"]["grants"]


def test_the_consent_page_refuses_to_render_in_a_frame(
    victim: Any, attacker: AttackerSite, base_url: str, shoot: Any
) -> None:
    page, app = victim, victim.app
    consent_url = app.authorize_url(base_url)
    # Top level, the page shows its Allow button: the test below can tell a blocked frame from a page.
    page.goto(consent_url)
    assert page.get_by_role("button", name="Allow").is_visible()

    evil = attacker.serve(
        "/prize",
        "<!doctype html><title>Win a prize</title><h1>Click the button to win</h1>"
        f'<iframe id="victim" src="{html.escape(consent_url)}" width="600" height="500"></iframe>',
    )
    with page.expect_response(lambda r: r.url == consent_url) as answered:
        page.goto(evil)
    response = answered.value
    assert response.status == 200  # grantd answered, with its session cookie sent along ...
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    page.wait_for_load_state("load")
    frame = next(f for f in page.frames if f is not page.main_frame)
    # ... and the browser rendered none of it: no app name, no Allow button in the frame.
    assert frame.url != consent_url
    assert "Photo Printer" not in frame.content()
    assert frame.locator("button").count() == 0
    shoot(page, "clickjacking-blocked")


@pytest.mark.parametrize("kind", ["same-site", "cross-site"])
def test_a_cross_site_post_to_allow_is_refused(
    victim: Any, attacker: AttackerSite, api: httpx.Client, base_url: str, shoot: Any, kind: str
) -> None:
    page, app = victim, victim.app
    fields = {
        "response_type": "code",
        "client_id": app.app_id,
        "redirect_uri": app.redirect_uri,
        "scope": "read_profile write_data",
        "state": "attacker",
        "decision": "allow",
        "csrf_token": "A" * 43,  # the attacker cannot read the real one
    }
    inputs = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items())
    evil = attacker.serve(
        f"/allow-{kind}",
        f'<!doctype html><form id="f" method="post" action="{base_url}/oauth2/authorize">{inputs}</form>'
        "<script>document.getElementById('f').submit()</script>",
        host="127.0.0.1" if kind == "same-site" else "localhost",
    )
    with page.expect_response(lambda r: r.url == f"{base_url}/oauth2/authorize" and r.request.method == "POST") as posted:
        page.goto(evil)
    page.wait_for_load_state("load")
    if kind == "same-site":
        # The cookie came along; the CSRF token did not match it.
        assert posted.value.status == 403
        assert page.get_by_role("heading", level=1).inner_text() == "This form cannot be accepted"
        shoot(page, "csrf-refused")
    else:
        # SameSite=Lax: no session cookie on a cross-site POST, so the browser is asked to sign in.
        assert posted.value.status == 303
        assert page.url.startswith(f"{base_url}/signin?next=")
    assert page.traffic.to(CLIENT_ORIGIN) == [], "the app's redirect_uri was reached"
    assert grants_of(api, page.user) == []


def test_a_forged_redirect_uri_never_leaves_the_site(victim: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    page, app = victim, victim.app
    # A link with a redirect_uri the app never registered: an error page on grantd, nothing sent on.
    page.goto(app.authorize_url(base_url, redirect_uri=f"{FORGED_HOST}/steal"))
    assert page.url.startswith(f"{base_url}/oauth2/authorize?")
    assert page.get_by_role("heading", level=1).inner_text() == "This app cannot be authorized"
    assert page.get_by_role("alert").inner_text() == "redirect_uri is not registered for this app."
    shoot(page, "forged-redirect-uri")

    # The real consent page, its hidden redirect_uri changed in the page before Allow is pressed.
    page.goto(app.authorize_url(base_url))
    page.locator('input[name="redirect_uri"]').evaluate(f"input => input.value = '{FORGED_HOST}/steal'")
    follow(page, page.get_by_role("button", name="Allow"))
    assert page.url == f"{base_url}/oauth2/authorize"
    assert page.get_by_role("heading", level=1).inner_text() == "This app cannot be authorized"

    # A sign-in link whose next points off the site lands on grantd's home page.
    page.context.clear_cookies()
    page.goto(f"{base_url}/signin?next=//evil.example/steal")
    sign_in(page, None, page.user.email)
    assert page.url == f"{base_url}/"

    assert page.traffic.to(FORGED_HOST) == [], "the forged host was requested"
    assert page.traffic.to(CLIENT_ORIGIN) == []
    assert all(url.startswith(base_url) for url in page.traffic.urls), page.traffic.urls
    assert grants_of(api, page.user) == []
