"""RP-Initiated Logout 1.0: ``/oauth2/logout``, the ``end_session_endpoint``.

An app sends the user here (GET, or a form POST) with ``id_token_hint``, ``client_id``,
``post_logout_redirect_uri`` and ``state`` (§2). The browser session ends, and with it the
OpenID grants bound to it (``accounts.log_out``), so that a later ``prompt=none`` gets
``login_required``.

- A ``post_logout_redirect_uri`` must be one the app registered, exactly (§3.1); otherwise, or
  when the app cannot be told, the user is not sent anywhere but shown a page.
- With an ``id_token_hint`` that grantd issued to the app for the user signed in here, the session
  ends at once: the request comes from that app. Otherwise the request cannot be attributed to the
  app for this user (anyone can link here), and the user is asked to confirm with a "Sign out"
  button (§2: "the OP SHOULD ask the End-User whether to log out").
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.responses import Response

from grantd.core import accounts, openid
from grantd.core.clients import OpenIDSettings
from grantd.core.authorization import with_query
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest
from grantd.forms import parse_query, read_form
from grantd.store import apps as app_store
from grantd.web import session
from grantd.web.pages import error_page, form_target, page, redirect

LOGOUT = "/oauth2/logout"
_FIELDS = ("client_id", "post_logout_redirect_uri", "state")


@dataclass(frozen=True, slots=True)
class _Logout:
    """A logout request, checked: the app (when it can be told), where to send the user after."""

    client_id: str | None
    app_name: str | None
    redirect_uri: str | None  # a registered post-logout redirect URI, exactly as registered
    state: str | None
    hinted_subject: str | None  # the id_token_hint's subject, when one was sent
    audience: openid.Audience | None

    def fields(self) -> list[tuple[str, str]]:
        """What the confirmation form carries to ``/oauth2/logout/confirm``."""
        values = {"client_id": self.client_id, "post_logout_redirect_uri": self.redirect_uri, "state": self.state}
        return [(name, value) for name, value in values.items() if value is not None]


async def _checked(ctx: Context, params: dict[str, str]) -> _Logout:
    """InvalidRequest for anything that must not be followed: shown on a page, never redirected."""
    hint, client_id = params.get("id_token_hint"), params.get("client_id")
    redirect_uri, state = params.get("post_logout_redirect_uri"), params.get("state")
    hinted = None
    if hint is not None:
        claims = openid.verified_id_token(ctx, hint, None)
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if client_id is not None and client_id not in audiences:
            raise InvalidRequest("client_id is not the app the id_token_hint was issued to.")
        client_id = client_id or audiences[0]
        hinted = claims["sub"]
    app = None
    if client_id is not None and "\x00" not in client_id:
        async with ctx.db.read() as conn:
            app = await app_store.live(conn, client_id)
    if client_id is not None and app is None:
        raise InvalidRequest("Unknown client_id, or the app is disabled.")
    audience = None
    if app is not None:
        settings = OpenIDSettings.of(app)
        audience = openid.Audience(app.id, settings, tuple(app_store.redirect_uris_of(app)))
        if redirect_uri is not None and redirect_uri not in settings.post_logout_redirect_uris:
            raise InvalidRequest("post_logout_redirect_uri is not registered for this app.")
    elif redirect_uri is not None:
        raise InvalidRequest("post_logout_redirect_uri needs client_id or id_token_hint, to know the app.")
    return _Logout(client_id, app.name if app else None, redirect_uri, state, hinted, audience)


def _refused(exc: GrantdError) -> Response:
    return error_page(
        400, "This sign-out request cannot be followed", exc.message,
        detail="You have not been signed out, nor sent anywhere. To sign out, use the Sign out button of this site.",
        link=("/", "Go to your account"),
    )


def _after(ctx: Context, logout: _Logout) -> Response:
    """Where the user goes once signed out: the app's post-logout redirect URI (with ``state``),
    else the signed-out page."""
    if logout.redirect_uri is not None:
        return redirect(with_query(logout.redirect_uri, state=logout.state))
    return page("signed_out.html", app_name=logout.app_name)


async def _params(request: Request) -> dict[str, str]:
    if request.method == "POST":
        return await read_form(request)
    return parse_query(request.scope["query_string"])


async def end_session(request: Request) -> Response:
    """``GET|POST /oauth2/logout`` (RP-Initiated Logout 1.0 §2)."""
    ctx: Context = request.app.state.ctx
    try:
        logout = await _checked(ctx, await _params(request))
    except InvalidRequest as exc:
        return _refused(exc)
    principal = await session.current(ctx, request)
    if principal is None:  # nothing to end
        response = _after(ctx, logout)
        if session.SESSION_COOKIE in request.cookies:
            session.clear_session(ctx, response)
        return response
    hinted_here = (
        logout.hinted_subject is not None
        and logout.audience is not None
        and logout.hinted_subject == logout.audience.subject(ctx, principal.user_id)
    )
    if hinted_here:
        await accounts.log_out(ctx, principal)
        response = _after(ctx, logout)
        session.clear_session(ctx, response)
        return response
    return page(
        "logout.html",
        form_action=[form_target(logout.redirect_uri) or ""] if logout.redirect_uri else [],
        app_name=logout.app_name,
        email=await accounts.email_of(ctx, principal),
        hidden=logout.fields(),
        csrf_token=session.session_csrf(ctx, principal),
    )


async def confirm(request: Request) -> Response:
    """``POST /oauth2/logout/confirm``: the user's "Sign out" on the confirmation page."""
    ctx: Context = request.app.state.ctx
    form = await read_form(request)
    try:
        logout = await _checked(ctx, {name: form[name] for name in _FIELDS if name in form})
    except InvalidRequest as exc:
        return _refused(exc)
    principal = await session.current(ctx, request)
    if principal is not None:
        if not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
            return error_page(403, "This form cannot be accepted", "The form was not sent from this site, or it has expired.")
        await accounts.log_out(ctx, principal)
    response = _after(ctx, logout)
    session.clear_session(ctx, response)
    return response
