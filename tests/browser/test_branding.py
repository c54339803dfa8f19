"""An app's branding in a real browser: its logo, colour, theme and links on the sign-in and
consent pages, under the pages' strict Content-Security-Policy, with no violation reported.

Photographs signin-branded.png and consent-branded.png (into docs/screenshots/ by `make screenshots`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from browser.conftest import CLIENT_ORIGIN, Traffic, new_user, register_app, sign_in
from browser.test_security import AttackerSite

LOGO_ORIGIN = "https://brand.example"  # the app's CDN: answered by the browser's route, never the network
LOGO = f"{LOGO_ORIGIN}/logo.svg"
LOGO_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48">
<rect width="48" height="48" rx="10" fill="#7a1fa2"/>
<circle cx="24" cy="24" r="11" fill="none" stroke="#fff" stroke-width="4"/>
<circle cx="24" cy="24" r="4" fill="#fff"/>
</svg>"""
BRANDING = {
    "logo_uri": LOGO,
    "client_uri": "https://photoprinter.example",
    "tos_uri": "https://photoprinter.example/terms",
    "policy_uri": "https://photoprinter.example/privacy",
    "description": "Prints your photos and posts them to you the next day.",
    "accent_color": "#7a1fa2",
    "theme": "light",
}
ACCENT_RGB = "rgb(122, 31, 162)"


def listen_for_violations(page: Any) -> list[str]:
    """Every Content-Security-Policy violation Chromium reports on the console of ``page``."""
    reported: list[str] = []
    page.on("console", lambda message: reported.append(message.text) if "Content Security Policy" in message.text else None)
    return reported


def brand_site(context: Any) -> list[str]:
    """The app's CDN, played by a route: the logo; returns the URLs the browser asked it for."""
    asked: list[str] = []

    def answer(route: Any) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="image/svg+xml", body=LOGO_SVG)

    context.route(f"{LOGO_ORIGIN}/**", answer)
    return asked


def logo_loaded(page: Any) -> bool:
    return page.locator("img.app-logo").evaluate("img => img.complete && img.naturalWidth > 0")


def background_of(page: Any, selector: str) -> str:
    return page.locator(selector).first.evaluate("el => getComputedStyle(el).backgroundColor")


def test_a_branded_sign_in_and_consent_load_with_no_csp_violation(
    page: Any, api: httpx.Client, base_url: str, shoot: Any
) -> None:
    app = register_app(api, name="Photo Printer", owner=new_user(api, "team@photoprinter.example"))
    response = api.patch(f"/v1/apps/{app.app_id}", json=BRANDING, headers={"Authorization": f"Bearer {app.owner.token}"})
    assert response.status_code == 200, response.text
    user = new_user(api, "mae.branded@example.com")
    Traffic(page.context)
    asked = brand_site(page.context)
    violations = listen_for_violations(page)

    page.goto(app.authorize_url(base_url, scope="read_profile write_data"))
    assert page.url.startswith(f"{base_url}/signin?next=")
    page.wait_for_load_state("networkidle")
    assert logo_loaded(page), "the logo did not load"
    assert page.get_by_role("img", name="Photo Printer").is_visible()
    assert page.locator("img.app-logo").bounding_box()["width"] == 48  # fixed by the stylesheet
    assert background_of(page, "button[type=submit]") == ACCENT_RGB
    assert page.get_by_role("link", name="Terms of service").get_attribute("rel") == "noopener noreferrer"
    assert asked == [LOGO]
    shoot(page, "signin-branded")

    sign_in(page, None, user.email)
    assert page.url.startswith(f"{base_url}/oauth2/authorize?")
    page.wait_for_load_state("networkidle")
    assert logo_loaded(page)
    assert page.locator(".app-description").inner_text() == BRANDING["description"]
    assert background_of(page, "button[value=allow]") == ACCENT_RGB
    links = page.locator(".app-links a")
    assert [links.nth(i).inner_text() for i in range(links.count())] == ["Website", "Terms of service", "Privacy policy"]
    assert violations == []
    shoot(page, "consent-branded")

    # Still a working consent page: Allow goes back to the app with a code.
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    assert violations == []


def test_the_violation_listener_hears_a_blocked_image(page: Any, api: httpx.Client, base_url: str) -> None:
    """The check above can fail: an image from an origin the page does not allow is blocked and
    reported (here added by the test itself, as an injected tag would be)."""
    asked = brand_site(page.context)
    violations = listen_for_violations(page)
    page.goto(f"{base_url}/signin")
    page.evaluate(
        """src => new Promise(done => {
            const img = document.createElement("img");
            img.onerror = done; img.onload = done; img.src = src;
            document.body.append(img);
        })""",
        LOGO,
    )
    page.wait_for_timeout(200)
    assert asked == []
    assert any("img-src" in text for text in violations), violations


def test_a_logo_on_a_loopback_host_loads_from_that_origin_alone(page: Any, api: httpx.Client, base_url: str) -> None:
    """http on a loopback host, as redirect URIs allow it: img-src names that one origin
    (``http://127.0.0.1:<port>``), and Chromium loads the logo from it with no violation."""
    site = AttackerSite()  # here, the developer's own machine
    try:
        logo = site.serve("/logo.svg", LOGO_SVG, content_type="image/svg+xml")
        app = register_app(api, name="Local Printer")
        response = api.patch(
            f"/v1/apps/{app.app_id}", json={"logo_uri": logo}, headers={"Authorization": f"Bearer {app.owner.token}"}
        )
        assert response.status_code == 200, response.text
        violations = listen_for_violations(page)
        shown = page.goto(f"{base_url}/signin?" + urlencode({"next": app.authorize_url(base_url)[len(base_url):]}))
        img_src = next(d.split() for d in shown.headers["content-security-policy"].split(";") if "img-src" in d)
        assert img_src == ["img-src", "'self'", logo.rsplit("/", 1)[0]]
        page.wait_for_load_state("networkidle")
        assert logo_loaded(page)
        assert violations == []
    finally:
        site.close()
