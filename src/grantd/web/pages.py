"""Rendering the hosted pages: Jinja2 templates (autoescaped), security headers, redirects."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from grantd.core.accounts import Principal
from grantd.core.apps import HOSTNAME
from grantd.core.context import Context
from grantd.core.errors import GrantdError
from grantd.web import session

if TYPE_CHECKING:
    from jinja2 import Environment

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}
# A page with passkeys runs /static/passkeys.js, which calls the page's own JSON endpoints.
PASSKEY_SCRIPTS = {"script_src": ["'self'"], "connect_src": ["'self'"]}
_CSP = (
    "default-src 'none'; style-src 'self'; img-src {img}; frame-ancestors 'none'; base-uri 'none'; form-action {form}"
)
_SCRIPT_SRC = "; script-src {scripts}"
_CONNECT_SRC = "; connect-src {sources}"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def when(timestamp: int | None) -> str:
    """A Unix time as a person reads it, in UTC: ``9 Jul 2024, 22:02 UTC``."""
    if timestamp is None:
        return "never"
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def iso(timestamp: int) -> str:
    """The machine-readable form for ``<time datetime=...>``."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_time(seconds: int) -> str:
    """``retry_after`` seconds as words: "45 seconds", "15 minutes", "1 hour"."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    if minutes < 90:
        return f"{minutes} minutes"
    hours = -(-minutes // 60)
    return f"{hours} hour{'s' if hours != 1 else ''}"


@functools.cache
def templates() -> Environment:
    """The pages' templates, made when the first page is rendered: a process that serves only the
    APIs never imports Jinja2 (imported with grantd, ~2 MB a process)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("grantd.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = when
    environment.filters["iso"] = iso
    return environment


def _origin(uri: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of ``uri`` in lower case; None when it cannot be read."""
    try:
        parts = urlsplit(uri)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or ""), parts.port
    except ValueError:
        return None
    return (scheme, host, port) if _SCHEME.match(scheme) else None


def origin_source(uri: str) -> str | None:
    """The CSP source of the one origin of an http(s) ``uri``, ``scheme://host[:port]``; None when
    it cannot be written so (another scheme, no host, an IPv6 literal)."""
    origin = _origin(uri)
    if origin is None:
        return None
    scheme, host, port = origin
    if scheme not in ("http", "https") or HOSTNAME.fullmatch(host) is None:
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def form_target(uri: str) -> str | None:
    """The CSP source that lets a form post end in a redirect to ``uri``; None when none can be written.

    Chrome applies ``form-action`` to every redirect that follows a form submission, so a
    page whose form ends at the client's redirect_uri must allow that origin.
    """
    origin = _origin(uri)
    if origin is None:
        return None
    scheme, host, _ = origin
    if scheme not in ("http", "https"):
        return f"{scheme}:"  # a native app's private-use scheme
    # an IPv6 literal cannot be written as a CSP host: the scheme alone
    return origin_source(uri) or (f"{scheme}:" if host else None)


def security_headers(
    form_action: Iterable[str] = (),
    img_src: Iterable[str] = (),
    script_src: Iterable[str] = (),
    connect_src: Iterable[str] = (),
) -> dict[str, str]:
    """The pages' headers. ``form_action``, ``img_src``: the sources a page allows beyond its own
    origin; ``script_src``: the only scripts it may run, ``connect_src``: the only places its
    scripts may send requests to (none of either without: ``default-src 'none'``)."""

    def sources(more: Iterable[str]) -> str:
        return " ".join(["'self'", *dict.fromkeys(s for s in more if s)])

    csp = _CSP.format(img=sources(img_src), form=sources(form_action))
    scripts = " ".join(dict.fromkeys(s for s in script_src if s))
    if scripts:
        csp += _SCRIPT_SRC.format(scripts=scripts)
    connects = " ".join(dict.fromkeys(s for s in connect_src if s))
    if connects:
        csp += _CONNECT_SRC.format(sources=connects)
    return {
        **NO_STORE,
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
    }


def page(
    template: str,
    status_code: int = 200,
    *,
    form_action: Iterable[str] = (),
    img_src: Iterable[str] = (),
    script_src: Iterable[str] = (),
    connect_src: Iterable[str] = (),
    **values: Any,
) -> HTMLResponse:
    html = templates().get_template(template).render(**values)
    return HTMLResponse(html, status_code, headers=security_headers(form_action, img_src, script_src, connect_src))


def nav(csrf_token: str, active: str) -> dict[str, str]:
    """The signed-in navigation of base.html: ``active`` is one of home, apps, console, account."""
    return {"csrf_token": csrf_token, "active": active}


def user_page(
    ctx: Context,
    principal: Principal,
    template: str,
    active: str,
    status_code: int = 200,
    *,
    form_action: Iterable[str] = (),
    **values: Any,
) -> HTMLResponse:
    """A page of a signed-in user: the navigation (with its sign-out form) and ``csrf_token`` for
    the page's own forms (check it with ``session.check_session_csrf``)."""
    csrf_token = session.session_csrf(ctx, principal)
    return page(template, status_code, form_action=form_action, nav=nav(csrf_token, active), csrf_token=csrf_token, **values)


def to_signin(request: Request) -> RedirectResponse:
    """To the sign-in page, coming back to this page (its path and query) afterwards."""
    query = request.url.query
    back = safe_next(request.url.path + (f"?{query}" if query else ""))
    return redirect("/signin" if back == "/" else "/signin?" + urlencode({"next": back}))


def error_page(status_code: int, title: str, message: str, **values: Any) -> HTMLResponse:
    values.setdefault("link", None)
    values.setdefault("detail", None)
    return page("error.html", status_code, title=title, message=message, **values)


def redirect(url: str) -> RedirectResponse:
    """303 See Other: the browser follows it with a GET, whatever the method was."""
    return RedirectResponse(url, 303, headers=NO_STORE)


def render_error(exc: GrantdError) -> HTMLResponse:
    """The pages' error dialect: an error raised on a page's route (a wrong method, a body too large,
    a bug), or under a folder of pages, as a page."""
    status = exc.status_code if 400 <= exc.status_code < 500 or exc.status_code == 503 else 500
    if status == 503:
        page = error_page(503, "Temporarily unavailable", "The service cannot answer right now. Try again in a few seconds.")
        page.headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
        return page
    if status == 500:
        return error_page(500, "Something went wrong", "The server failed to handle the request. Try again later.")
    return error_page(status, "The request cannot be handled", exc.message)


def safe_next(value: str | None) -> str:
    """A same-site relative path to go to after signing in or out; "/" for anything else.

    Refused: absolute and scheme-relative URLs (``//host``), backslashes (browsers read
    ``/\\host`` as ``//host``) and any white space or control character (browsers drop
    tabs and newlines, so ``/\\t/host`` would become ``//host``).
    """
    if not value or len(value) > 4096 or not value.startswith("/"):
        return "/"
    if value.startswith("//") or "\\" in value or any(ch <= " " or ch == "\x7f" for ch in value):
        return "/"
    return value
