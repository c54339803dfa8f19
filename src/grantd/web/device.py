"""The pages of the device authorization grant (RFC 8628 §3.3): where a person types the code a
device shows, signs in if needed, and approves or denies the device's request.

- ``GET /device`` (the ``verification_uri``): the Code page, its field filled in from ``user_code``
  (the ``verification_uri_complete``); nothing is looked up until the person presses Continue.
- ``POST /device``: the code typed. A wrong or expired one shows the Code page again with the
  error; a right one the approval page, after the sign-in page when nobody is signed in (which
  comes back to ``GET /device/approve``).
- ``GET /device/approve?user_code=…``: the approval page of a signed-in person: the app, who
  registered it, what it asks for, and the warning of §5.4 (only continue if you started this on
  your device). ``POST /device/approve``: Approve or Deny, then "You can return to your device".

Every form carries a CSRF token: the Code page's is bound to the pre-session cookie (as the
sign-in page's), the approval page's to the session. Every code typed is looked up under the
user-code rate limit (``core.device.find``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import Response

from grantd.core import device
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import RateLimited
from grantd.forms import read_form
from grantd.web import routes as web
from grantd.web import second_factor, session
from grantd.web.pages import error_page, page, redirect, wait_time

APPROVE = "/device/approve"
_FORGED = (
    "The form was not sent from this site, or it has expired. "
    "Go back, reload the page and try again."
)


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _approve_path(user_code: str) -> str:
    return APPROVE + "?" + urlencode({"user_code": user_code})


async def _code_page(
    ctx: Context, request: Request, user_code: str = "", *, status_code: int = 200, error: str | None = None,
    retry_after: int | None = None,
) -> Response:
    """The Code page: one field, "Code", and Continue; ``error`` shown next to the field."""
    cookie = session.signin_cookie(request)
    response = page(
        "device.html", status_code, user_code=user_code[:64], error=error, csrf_token=session.signin_csrf(ctx, cookie)
    )
    session.set_signin_cookie(ctx, response, cookie)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def _found(ctx: Context, request: Request, typed: str) -> device.Pending | Response:
    """The request the typed code names, or the Code page again saying why not."""
    try:
        return await device.find(ctx, typed, web._address(request))
    except device.UnknownUserCode as exc:
        return await _code_page(ctx, request, typed, status_code=400, error=exc.message)
    except RateLimited as exc:
        return await _code_page(
            ctx, request, typed, status_code=429, retry_after=exc.retry_after,
            error=f"Too many wrong codes were entered. Try again in {wait_time(exc.retry_after)}.",
        )


async def _second_factor_first(ctx: Context, principal: Principal, user_code: str) -> Response | None:
    """Where a session without the second factor GRANTD_REQUIRE_SECOND_FACTOR=all requires goes first."""
    if ctx.settings.require_second_factor != "all":
        return None
    return await second_factor.required(ctx, principal, _approve_path(user_code))


async def _approval_page(ctx: Context, principal: Principal, pending: device.Pending) -> Response:
    first = await _second_factor_first(ctx, principal, pending.user_code)
    if first is not None:
        return first
    describe = ctx.catalog.describe
    branded, img_src = await web._branded(ctx, pending)  # type: ignore[arg-type]  # app_id and app_name are all it reads
    return page(
        "device_approve.html",
        img_src=img_src,
        **branded,
        owner_email=pending.owner_email,
        user_code=pending.user_code,
        requested=[(name, describe(name)) for name in pending.permissions],
        csrf_token=session.session_csrf(ctx, principal),
        signout_next=_approve_path(pending.user_code),
    )


async def code_form(request: Request) -> Response:
    """``GET /device``: the Code page, filled in from ``?user_code=`` when the device showed a link or QR code."""
    params, _, _ = web._query(request)
    return await _code_page(_ctx(request), request, params.get("user_code", ""))


async def code_entered(request: Request) -> Response:
    """``POST /device``: the code typed."""
    ctx = _ctx(request)
    form = await read_form(request)
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=(device.VERIFICATION_PATH, "Enter the code again"))
    typed = form.get("user_code") or ""
    if not typed.strip():
        return await _code_page(ctx, request, status_code=400, error="Enter the code your device shows.")
    found = await _found(ctx, request, typed)
    if isinstance(found, Response):
        return found
    principal = await session.current(ctx, request)
    if principal is None:
        return redirect("/signin?" + urlencode({"next": _approve_path(found.user_code)}))
    return await _approval_page(ctx, principal, found)


async def approval_form(request: Request) -> Response:
    """``GET /device/approve?user_code=…``: where the sign-in page comes back to."""
    ctx = _ctx(request)
    params, _, _ = web._query(request)
    typed = params.get("user_code", "")
    principal = await session.current(ctx, request)
    if principal is None:
        return redirect("/signin?" + urlencode({"next": _approve_path(typed[:64])}))
    found = await _found(ctx, request, typed)
    if isinstance(found, Response):
        return found
    return await _approval_page(ctx, principal, found)


async def decision(request: Request) -> Response:
    """``POST /device/approve``: Approve or Deny."""
    ctx = _ctx(request)
    form = await read_form(request)
    typed = form.get("user_code") or ""
    principal = await session.current(ctx, request)
    if principal is None:
        # The session ended while the page was open: sign in again, then see the same request.
        return redirect("/signin?" + urlencode({"next": _approve_path(typed[:64])}))
    if not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED)
    choice = form.get("decision")
    if choice not in ("approve", "deny"):
        return error_page(400, "The request cannot be handled", "decision must be approve or deny.")
    found = await _found(ctx, request, typed)
    if isinstance(found, Response):
        return found
    first = await _second_factor_first(ctx, principal, found.user_code)
    if first is not None:
        return first
    approved = choice == "approve"
    if not await device.decide(ctx, principal, found, approve=approved, address=web._address(request)):
        return await _code_page(
            ctx, request, status_code=400, error="That code was used already, or it has expired. Start again on your device.",
        )
    return page("device_done.html", approved=approved, app_name=found.app_name)
