"""The developer console: a signed-in user's apps and keys, as server-rendered pages.

Every action calls the use cases of ``grantd.core.apps``, the same ones behind the Neucron
``/v1/apps`` API: the rules (what a name, a redirect URI or a permission list may be, who
owns what) live there. This module only reads forms, checks the session and its CSRF
token, and renders pages: a refused field is shown next to that field, with status 400.

- ``GET  /console``                                   the user's apps
- ``GET  /console/apps/new``, ``POST /console/apps``   register an app (its app_key shown once)
- ``GET  /console/apps/{id}``, ``POST`` the same       the app; edit its name, redirect URIs, permissions, branding,
                                                      OpenID Connect settings
- ``POST /console/apps/{id}/keys``                     create a key pair (its secret shown once)
- ``POST /console/apps/{id}/keys/{key_id}/revoke``     revoke a key
- ``POST /console/apps/{id}/disable``                  disable the app
- ``GET  /console/apps/{id}/try``                      an authorization URL for the app, with PKCE
- ``POST /console/registration-tokens``                create an initial access token (shown once) for
                                                      dynamic registration (``grantd.core.registration``)
- ``POST /console/registration-tokens/{id}/revoke``    revoke one

The routes are declared in ``grantd.routes``. Another user's app is answered like a missing one: 404.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from starlette.responses import Response

from grantd.core import apps, registration
from grantd.core import trial as trial_requests
from grantd.core.accounts import Principal
from grantd.core.clients import CLIENT_TYPES, CONFIDENTIAL, PUBLIC
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest, NotFound
from grantd.web import second_factor, session
from grantd.web.pages import error_page, redirect, safe_next, to_signin, user_page
from grantd.web.routes import AUTHORIZE

CONSOLE = "/console"
_FORM = "application/x-www-form-urlencoded"
_MAX_ID_LENGTH = 64
_FORGED = (
    "The form was not sent from this site, or it has expired. "
    "Go back, reload the page and try again."
)
CLIENT_TYPE_LABELS = {
    CONFIDENTIAL: "Confidential: a server that keeps a key secret",
    PUBLIC: "Public: a browser or native app that cannot keep a secret (PKCE required)",
}

# The copy buttons: hidden until this script shows them, so the page works without it. The
# page's Content-Security-Policy allows this one script by its hash, and no other.
COPY_SCRIPT = """
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.hidden = false;
  button.addEventListener("click", () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    navigator.clipboard.writeText(text).then(
      () => { button.textContent = "Copied"; },
      () => { button.textContent = "Copy failed: select the text and copy it"; },
    );
  });
}
"""
_COPY_SCRIPT_SOURCE = "'sha256-{}'".format(
    base64.b64encode(hashlib.sha256(COPY_SCRIPT.encode()).digest()).decode()
)


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _address(request: Request) -> str | None:
    """The TCP peer's address, for the audit log."""
    return request.client.host if request.client else None


# ---------------------------------------------------------------- reading requests


@dataclass
class Form:
    """A form body whose fields may repeat (checkboxes); each value as sent."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def one(self, name: str) -> str | None:
        values = self.all(name)
        if len(values) > 1:
            raise InvalidRequest(f"{name} is repeated.")
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise InvalidRequest(f"The body must be {_FORM}.")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The body is not valid form encoding.") from None
    if any("\x00" in name or "\x00" in value for name, value in pairs):  # PostgreSQL text cannot hold U+0000
        raise InvalidRequest("The body must not contain the NUL character (%00).")
    return Form(pairs)


def _lines(value: str | None) -> list[str]:
    """The redirect URIs of a text area, one a line; blank lines ignored."""
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def _known_id(value: str) -> bool:
    """Whether a path segment can name an app or key at all (else: 404 without asking the database)."""
    return 0 < len(value) <= _MAX_ID_LENGTH and value.isprintable()


# ---------------------------------------------------------------- rendering


def _render(
    template: str, principal: Principal, ctx: Context, status_code: int = 200, *, script: bool = False, **values: Any
) -> Response:
    response = user_page(
        ctx, principal, template, "console", status_code, copy_script=COPY_SCRIPT if script else None, **values
    )
    if script:
        response.headers["Content-Security-Policy"] += f"; script-src {_COPY_SCRIPT_SOURCE}"
    return response


def _catalog(ctx: Context) -> list[tuple[str, str]]:
    return sorted(ctx.catalog.descriptions.items())


def _openid_form(settings: apps.OpenIDSettings) -> dict[str, Any]:
    """The OpenID Connect settings as the form shows them: the URIs one a line, no None."""
    return {
        **asdict(settings),
        "post_logout_redirect_uris": "\n".join(settings.post_logout_redirect_uris),
        "sector_identifier_uri": settings.sector_identifier_uri or "",
        "token_endpoint_auth_method": settings.token_endpoint_auth_method or "",
        "jwks": json.dumps(json.loads(settings.jwks), indent=2) if settings.jwks else "",
        "jwks_uri": settings.jwks_uri or "",
    }


def _app_form(app: apps.App | None = None) -> dict[str, Any]:
    """The values of the app form: the app's own, or the defaults of a new app."""
    if app is None:
        return {
            "name": "", "redirect_uris": "", "permissions": [], "client_type": CONFIDENTIAL,
            **dict.fromkeys(apps.BRANDING_FIELDS, ""),
            **_openid_form(apps.OpenIDSettings()),
        }
    return {
        "name": app.name,
        "redirect_uris": "\n".join(app.redirect_uris),
        "permissions": app.permissions.split(","),
        "client_type": app.client_type,
        **{name: value or "" for name, value in asdict(app.branding).items()},
        **_openid_form(app.openid),
    }


_CHECKBOXES = ("require_nonce", "require_pushed_authorization_requests", "dpop_bound_access_tokens", "refresh_token_rotation")


def _posted_app_form(form: Form) -> dict[str, Any]:
    return {
        "name": form.one("name") or "",
        "redirect_uris": form.one("redirect_uris") or "",
        "permissions": form.all("permissions"),
        "client_type": form.one("client_type") or "",
        **{name: form.one(name) or "" for name in apps.BRANDING_FIELDS},
        **{name: form.one(name) or "" for name in apps.OPENID_FIELDS if name not in _CHECKBOXES},
        # checkboxes: absent when not ticked
        **{name: form.one(name) == "yes" for name in _CHECKBOXES},
    }


def _brand(values: dict[str, Any]) -> dict[str, str]:
    """The branding settings of a posted form: each as typed (empty: not set, or removed)."""
    return {name: values[name] for name in apps.BRANDING_FIELDS}


def _openid(values: dict[str, Any]) -> dict[str, Any]:
    """The OpenID Connect settings of a posted form, each as typed (empty: the default). The form
    holds them all, so a setting left empty or unticked is set back to its default."""
    return {name: values[name] for name in apps.OPENID_FIELDS} | {
        "post_logout_redirect_uris": _lines(values["post_logout_redirect_uris"]),
    }


def _field_errors(exc: GrantdError) -> dict[str, str]:
    """Each refused field's message; a refusal naming no field is shown at the top of the form."""
    return apps.field_errors(exc) or {"form": exc.message}


def _not_found() -> Response:
    return error_page(404, "App not found", "There is no such app among yours.", link=(CONSOLE, "Your apps"))


def _forged() -> Response:
    return error_page(403, "This form cannot be accepted", _FORGED, link=(CONSOLE, "Your apps"))


async def _app_page(
    ctx: Context,
    principal: Principal,
    app: apps.App,
    status_code: int = 200,
    *,
    edit: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    trial: dict[str, Any] | None = None,
    notice: str | None = None,
) -> Response:
    keys = await apps.list_keys(ctx, principal.user_id, app.app_id)
    return _render(
        "console_app.html",
        principal,
        ctx,
        status_code,
        app=app,
        keys=keys,
        form=edit or _app_form(app),
        errors=errors or {},
        trial=trial or {"redirect_uri": app.redirect_uris[0], "scope": app.permissions.split(",")},
        catalog=_catalog(ctx),
        notice=notice,
    )


# ---------------------------------------------------------------- the session


async def _signed_in(request: Request, back_to: str | None = None) -> Principal | Response:
    """The signed-in user, or a redirect to sign in and come back: to this page, or to ``back_to``
    (a form's POST comes back to the page the form is on)."""
    ctx = _ctx(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return to_signin(request) if back_to is None else redirect("/signin?" + urlencode({"next": back_to}))
    if ctx.settings.require_second_factor != "off":  # GRANTD_REQUIRE_SECOND_FACTOR: all, or developers
        query = request.url.query
        here = back_to or request.url.path + (f"?{query}" if query else "")
        required = await second_factor.required(ctx, principal, safe_next(here), console=True)
        if required is not None:
            return required
    return principal


async def _posted(request: Request, back_to: str) -> tuple[Principal, Form] | Response:
    """The user and the form of a POST whose CSRF token checks out; else the page to answer with."""
    principal = await _signed_in(request, back_to)
    if isinstance(principal, Response):
        return principal
    form = await read_form(request)
    if not session.check_session_csrf(_ctx(request), principal, form.one("csrf_token")):
        return _forged()
    return principal, form


def _app_path(app_id: str) -> str:
    return f"{CONSOLE}/apps/{app_id}"


# ---------------------------------------------------------------- the list and creation


async def console(request: Request) -> Response:
    principal = await _signed_in(request)
    if isinstance(principal, Response):
        return principal
    ctx = _ctx(request)
    offered = ctx.settings.dynamic_registration != "off"
    return _render(
        "console.html", principal, ctx, apps=await apps.list_owned(ctx, principal.user_id),
        registration_offered=offered,
        registration_tokens=await registration.list_initial_access_tokens(ctx, principal.user_id) if offered else [],
    )


def _new_app_page(
    ctx: Context, principal: Principal, status_code: int = 200, *, form: dict[str, Any], errors: dict[str, str]
) -> Response:
    return _render(
        "console_new.html",
        principal,
        ctx,
        status_code,
        form=form,
        errors=errors,
        catalog=_catalog(ctx),
        client_types=[(name, CLIENT_TYPE_LABELS.get(name, name)) for name in CLIENT_TYPES],
    )


async def new_app(request: Request) -> Response:
    principal = await _signed_in(request)
    if isinstance(principal, Response):
        return principal
    return _new_app_page(_ctx(request), principal, form=_app_form(), errors={})


async def create_app(request: Request) -> Response:
    posted = await _posted(request, f"{CONSOLE}/apps/new")
    if isinstance(posted, Response):
        return posted
    principal, form = posted
    ctx = _ctx(request)
    values = _posted_app_form(form)
    try:
        created = await apps.create(
            ctx,
            principal.user_id,
            values["name"],
            _lines(values["redirect_uris"]),
            ",".join(values["permissions"]),
            values["client_type"],
            brand=_brand(values),
            openid=_openid(values),
            address=_address(request),
        )
    except GrantdError as exc:
        if exc.status_code >= 500:
            raise
        return _new_app_page(ctx, principal, 400, form=values, errors=_field_errors(exc))
    # The app_key is shown here once, as POST /v1/apps returns it once: no redirect, nothing stored.
    return _render("console_created.html", principal, ctx, script=True, app=created.app, app_key=created.app_key)


# ---------------------------------------------------------------- one app


async def _posted_to_app(request: Request, app_id: str) -> tuple[Principal, Form, apps.App] | Response:
    """A checked POST about one of the user's own apps: the user, the form and the app; else the
    page to answer with (another user's app, or none, is a 404)."""
    posted = await _posted(request, _app_path(app_id))
    if isinstance(posted, Response):
        return posted
    principal, form = posted
    app = await _owned(request, principal, app_id)
    if app is None:
        return _not_found()
    return principal, form, app


async def _owned(request: Request, principal: Principal, app_id: str) -> apps.App | None:
    if not _known_id(app_id):
        return None
    try:
        return await apps.get_owned(_ctx(request), principal.user_id, app_id)
    except NotFound:
        return None


async def app_page(request: Request, app_id: str) -> Response:
    principal = await _signed_in(request)
    if isinstance(principal, Response):
        return principal
    app = await _owned(request, principal, app_id)
    if app is None:
        return _not_found()
    notice = "Saved." if request.query_params.get("saved") == "1" else None
    return await _app_page(_ctx(request), principal, app, notice=notice)


async def update_app(request: Request, app_id: str) -> Response:
    posted = await _posted_to_app(request, app_id)
    if isinstance(posted, Response):
        return posted
    principal, form, app = posted
    ctx = _ctx(request)
    values = _posted_app_form(form)
    values["client_type"] = app.client_type  # not editable: a client's type is fixed at registration
    try:
        await apps.update(
            ctx,
            principal.user_id,
            app_id,
            name=values["name"],
            uris=_lines(values["redirect_uris"]),
            permissions=",".join(values["permissions"]),
            brand=_brand(values),
            openid=_openid(values),
            address=_address(request),
        )
    except NotFound:
        return _not_found()
    except GrantdError as exc:
        if exc.status_code >= 500:
            raise
        return await _app_page(ctx, principal, app, 400, edit=values, errors=_field_errors(exc))
    return redirect(_app_path(app_id) + "?saved=1")


async def disable_app(request: Request, app_id: str) -> Response:
    posted = await _posted_to_app(request, app_id)
    if isinstance(posted, Response):
        return posted
    principal, form, app = posted
    ctx = _ctx(request)
    if form.one("confirm") != "yes":
        errors = {"confirm": "Tick the box to confirm: disabling cannot be undone."}
        return await _app_page(ctx, principal, app, 400, errors=errors)
    try:
        await apps.disable(ctx, principal.user_id, app_id, address=_address(request))
    except NotFound:
        return _not_found()
    return redirect(_app_path(app_id))


# ---------------------------------------------------------------- keys


async def create_key(request: Request, app_id: str) -> Response:
    posted = await _posted_to_app(request, app_id)
    if isinstance(posted, Response):
        return posted
    principal, _, app = posted
    ctx = _ctx(request)
    try:
        key = await apps.create_key(ctx, principal.user_id, app_id, address=_address(request))
    except NotFound:
        return _not_found()
    except GrantdError as exc:
        if exc.status_code >= 500:
            raise
        return await _app_page(ctx, principal, app, 400, errors={"keys": exc.message})
    # The secret is shown here once and never again: nothing keeps it but this response.
    return _render("console_key.html", principal, ctx, script=True, app=app, key=key)


async def revoke_key(request: Request, app_id: str, key_id: str) -> Response:
    posted = await _posted(request, _app_path(app_id))
    if isinstance(posted, Response):
        return posted
    principal, _ = posted
    ctx = _ctx(request)
    if not _known_id(app_id) or not _known_id(key_id):
        return _not_found()
    try:
        await apps.revoke_key(ctx, principal.user_id, app_id, key_id, address=_address(request))
    except NotFound as exc:
        return error_page(404, "Not found", exc.message, link=(CONSOLE, "Your apps"))
    return redirect(_app_path(app_id))


# ---------------------------------------------------------------- try it


async def try_app(request: Request, app_id: str) -> Response:
    principal = await _signed_in(request)
    if isinstance(principal, Response):
        return principal
    ctx = _ctx(request)
    app = await _owned(request, principal, app_id)
    if app is None:
        return _not_found()
    query = Form(parse_qsl(request.url.query, keep_blank_values=True))
    redirect_uri, scopes = query.one("redirect_uri") or None, query.all("scope")
    scope = " ".join(scopes) or None
    try:
        trial = await trial_requests.trial_request(ctx, principal.user_id, app_id, redirect_uri, scope)
    except NotFound:
        return _not_found()
    except GrantdError as exc:
        if exc.status_code >= 500:
            raise
        if not apps.field_errors(exc):
            return error_page(400, "This app cannot be tried", exc.message, link=(_app_path(app_id), "Back to the app"))
        errors = {f"try_{name}": message for name, message in apps.field_errors(exc).items()}
        asked = {"redirect_uri": redirect_uri, "scope": scopes}
        return await _app_page(ctx, principal, app, 400, errors=errors, trial=asked)
    authorize_url = ctx.settings.issuer.rstrip("/") + AUTHORIZE + "?" + urlencode(trial.query())
    return _render(
        "console_try.html",
        principal,
        ctx,
        script=True,
        app=app,
        trial=trial,
        authorize_url=authorize_url,
        token_url=ctx.settings.issuer.rstrip("/") + "/oauth2/token",
    )


# ---------------------------------------------------------------- initial access tokens (dynamic registration)


async def create_registration_token(request: Request) -> Response:
    posted = await _posted(request, CONSOLE)
    if isinstance(posted, Response):
        return posted
    principal, _ = posted
    ctx = _ctx(request)
    created = await registration.create_initial_access_token(ctx, principal.user_id, address=_address(request))
    # The token is shown here once and never again: nothing keeps it but this response.
    return _render(
        "console_registration_token.html", principal, ctx, script=True, created=created,
        registration_endpoint=registration.endpoint(ctx),
    )


async def revoke_registration_token(request: Request, token_id: str) -> Response:
    posted = await _posted(request, CONSOLE)
    if isinstance(posted, Response):
        return posted
    principal, _ = posted
    if not _known_id(token_id):
        return _not_found()
    try:
        await registration.revoke_initial_access_token(_ctx(request), principal.user_id, token_id, address=_address(request))
    except NotFound as exc:
        return error_page(404, "Not found", exc.message, link=(CONSOLE, "Your apps"))
    return redirect(CONSOLE)
