"""Where a hosted sign-in continues: the app of the authorization request that the sign-in
pages' ``next`` leads back to.

The sign-in and sign-up pages show that app's branding, and every page whose form ends a
sign-in (those two, and the second-factor page after the password) lets its form end at the
app's redirect URI: Chrome applies ``form-action`` to every redirect that follows a form's post,
and ``/oauth2/authorize`` may redirect straight on to the app (``form_action``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from grantd.core import authorization, openid, par
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRedirectUri
from grantd.web.pages import form_target

AUTHORIZE = "/oauth2/authorize"


async def target(ctx: Context, params: dict[str, str]) -> authorization.Target:
    """The app and redirect URI of the request. An OpenID request must name its redirect URI
    (Core §3.1.2.1: REQUIRED), even where the app registered only one, which plain OAuth 2.0
    may omit (RFC 6749 §3.1.2.3)."""
    found = await authorization.resolve_target(ctx, params.get("client_id"), params.get("redirect_uri"))
    if "redirect_uri" not in params and openid.is_openid(params.get("scope", "").split(" ")):
        raise InvalidRedirectUri("redirect_uri is required in an OpenID Connect request (scope openid).")
    return found


async def pushed(ctx: Context, params: dict[str, str]) -> par.Opened | None:
    """The pushed request (RFC 9126 §4) a request names by ``client_id`` + ``request_uri``; None for
    a request sent in full. InvalidRequestUri (shown, never redirected) for one that cannot be used."""
    request_uri = params.get("request_uri")
    return None if request_uri is None else await par.open_request(ctx, params.get("client_id"), request_uri)


async def continuing_to(ctx: Context, next_path: str) -> authorization.Target | None:
    """The app (and redirect URI) a sign-in or sign-up continues to, if any."""
    parts = urlsplit(next_path)
    if parts.path != AUTHORIZE:
        return None
    try:
        params = dict(parse_qsl(parts.query))
        opened = await pushed(ctx, params)
        return await target(ctx, opened.params if opened is not None else params)
    except GrantdError:
        return None


def form_action(found: authorization.Target | None) -> list[str]:
    """The ``form-action`` sources, beyond the site's own, of a page whose form ends a sign-in
    that continues to ``found``."""
    return [] if found is None else [form_target(found.redirect_uri) or ""]
