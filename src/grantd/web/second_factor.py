"""The second factor on the hosted pages: the sign-in step after the password, and setting up an
authenticator app on the account page.

Sign-in: a right password for an account whose sign-in asks for a second factor
(``second_factor.asked_after_password``: the person set up an authenticator app, or the operator
requires a second factor; a passkey alone does not make the password sign-in two-step) makes no
session. The browser gets a short-lived signed pending state instead (the cookie
``grantd_pending_sign_in``, ``second_factor.pending_sign_in``: it opens nothing else) and is sent
to ``GET /second-factor``, which offers every method the person has (``second_factor.methods_of``):
"Use a passkey" (the page carries the options of ``navigator.credentials.get`` for their
passkeys, bound to this pending sign-in; ``/static/passkeys.js`` posts the passkey's answer back
as ``credential``) and the code of an authenticator app or a recovery code. The session is made when ``POST /second-factor`` brings
a code that ``second_factor.verify`` accepts or a passkey answer that ``passkeys.second_step``
accepts, and records how the person signed in (``amr``), which the ID tokens of its codes carry.

When the operator requires a second factor (``GRANTD_REQUIRE_SECOND_FACTOR``: ``all``, or
``developers`` for the developer console), a person without one is sent to set one up first
(``required``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import Response

from grantd.core import accounts, passkeys, second_factor
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant, InvalidRequest, RateLimited
from grantd.forms import read_form
from grantd.web import continuing, session
from grantd.web.pages import PASSKEY_SCRIPTS, error_page, page, redirect, safe_next, to_signin, user_page, wait_time

PENDING_COOKIE = "grantd_pending_sign_in"
ENROL = "/account/second-factor"
STEP = "/second-factor"
CODE_MAX = 64
NO_PASSKEY_ANSWER = "Your browser sent no passkey. Press “Use a passkey” and follow your browser’s prompt."
_FORGED = "The form was not sent from this site, or it has expired. Go back, reload the page and try again."


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _with_next(path: str, next_path: str) -> str:
    return path if next_path == "/" else path + "?" + urlencode({"next": next_path})


# ---------------------------------------------------------------- the operator's requirement


async def required(ctx: Context, principal: Principal, next_path: str, *, console: bool = False) -> Response | None:
    """Where a session without a second factor must go first, when the operator requires one
    here (``all``; ``developers`` on the console): to set one up, or, for a person who has one
    but signed this session in without it, to sign in again. None when the session may go on."""
    setting = ctx.settings.require_second_factor
    if setting == "off" or (setting == "developers" and not console) or second_factor.MFA in principal.amr:
        return None
    # Under a requirement the password sign-in asks for every method the person has
    # (second_factor.asked_after_password), so signing in again meets it.
    if await second_factor.methods_of(ctx, principal.user_id):
        return redirect(_with_next("/signin", next_path))
    return redirect(_with_next(ENROL, next_path))


# ---------------------------------------------------------------- sign-in: the step after the password


def _pending_flags(ctx: Context) -> str:
    secure = "; Secure" if ctx.settings.issuer.startswith("https://") else ""
    return f"Path={STEP}; HttpOnly; SameSite=Lax{secure}"


def ask(ctx: Context, user_id: str, next_path: str) -> Response:
    """The answer to a right password of an account with a second factor: to the second step,
    with the pending state (no session yet)."""
    response = redirect(_with_next(STEP, next_path))
    response.headers.append(
        "set-cookie",
        f"{PENDING_COOKIE}={second_factor.pending_sign_in(ctx, user_id)}; Max-Age={second_factor.PENDING_TTL}; "
        f"{_pending_flags(ctx)}",
    )
    return response


async def _step_page(
    ctx: Context, request: Request, pending: second_factor.Pending, methods: tuple[str, ...], next_path: str, *,
    status_code: int = 200, message: str | None = None,
) -> Response:
    """The second step: "Use a passkey" (with a new challenge for this pending sign-in) when the
    person has one, the code field when they have an authenticator app. Its forms end the
    sign-in, so they may end at the app it continues to, as the sign-in page's."""
    cookie = session.signin_cookie(request)
    with_passkey = second_factor.PASSKEY in methods
    response = page(
        "signin_second_factor.html", status_code,
        form_action=continuing.form_action(await continuing.continuing_to(ctx, next_path)),
        next=next_path, csrf_token=session.signin_csrf(ctx, cookie),
        message=message, restart=_with_next("/signin", next_path), totp=second_factor.TOTP in methods,
        passkey_options=await passkeys.second_step_options(ctx, pending) if with_passkey else None,
        **(PASSKEY_SCRIPTS if with_passkey else {}),
    )
    session.set_signin_cookie(ctx, response, cookie)
    return response


async def _pending(ctx: Context, request: Request) -> tuple[second_factor.Pending, tuple[str, ...]] | None:
    """The browser's live pending sign-in and the second factors its person has; None without
    one, or when they have none left (removed meanwhile): the password again."""
    pending = second_factor.pending(ctx, request.cookies.get(PENDING_COOKIE))
    if pending is None:
        return None
    methods = await second_factor.methods_of(ctx, pending.user_id)
    return (pending, methods) if methods else None


async def step_form(request: Request) -> Response:
    ctx = _ctx(request)
    next_path = safe_next(request.query_params.get("next"))
    found = await _pending(ctx, request)
    if found is None:
        return redirect(_with_next("/signin", next_path))
    return await _step_page(ctx, request, *found, next_path)


async def step(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=(_with_next("/signin", next_path), "Sign in"))
    found = await _pending(ctx, request)
    if found is None:  # expired (or never there): the password again
        return redirect(_with_next("/signin", next_path))
    pending, methods = found
    address = _address(request)
    try:
        if "credential" in form:  # the passkey form
            credential = form.get("credential") or ""
            if not credential.strip() or second_factor.PASSKEY not in methods:
                return await _step_page(ctx, request, pending, methods, next_path, status_code=400, message=NO_PASSKEY_ANSWER)
            amr = await passkeys.second_step(ctx, pending, credential, address=address)
        else:
            code = (form.get("code") or "")[:CODE_MAX]
            if not code.strip():
                message = "Enter the code from your authenticator app."
                return await _step_page(ctx, request, pending, methods, next_path, status_code=400, message=message)
            amr = second_factor.amr_of(await second_factor.verify(ctx, pending.user_id, code, address=address))
    except RateLimited as exc:
        locked = await _step_page(
            ctx, request, pending, methods, next_path, status_code=429,
            message=f"Too many wrong attempts. Sign-in is locked for {wait_time(exc.retry_after)}; try again later.",
        )
        locked.headers["Retry-After"] = str(exc.retry_after)
        return locked
    except (InvalidGrant, InvalidRequest) as exc:
        status_code = 401 if isinstance(exc, InvalidGrant) else 400
        return await _step_page(ctx, request, pending, methods, next_path, status_code=status_code, message=exc.message)
    token = await accounts.start_session(ctx, pending.user_id, amr, address=address)
    previous = await session.current(ctx, request)
    if previous is not None and previous.jti != token.jti:
        await accounts.replace_session(ctx, previous, token)
    response = redirect(next_path)
    response.headers.append("set-cookie", f"{PENDING_COOKIE}=; Max-Age=0; {_pending_flags(ctx)}")
    session.set_session(ctx, response, token)
    await session.signed_in_from_here(ctx, request, response, pending.user_id)  # the sign-in completes here
    return response


# ---------------------------------------------------------------- the account page: an authenticator app


def _qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code: drawn by the page itself, no request anywhere."""
    import segno  # only when setting up an authenticator app: imported with grantd, ~0.7 MB a process

    return segno.make(uri, error="m").svg_inline(scale=5, dark="#000", light="#fff", title="QR code of the secret")


async def _enrol_page(
    ctx: Context, principal: Principal, next_path: str, *, status_code: int = 200, **values: object
) -> Response:
    email = await accounts.email_of(ctx, principal)
    methods = await second_factor.methods_of(ctx, principal.user_id)
    asked = await second_factor.asked_after_password(ctx, principal.user_id)
    enrolled = second_factor.TOTP in methods
    enrolment = None if enrolled else await second_factor.pending_enrolment(ctx, principal.user_id, email)
    values.setdefault("recovery_codes", None)
    values.setdefault("errors", {})
    values.setdefault("notice", None)
    return user_page(
        ctx, principal, "second_factor.html", "account", status_code,
        enrolled=enrolled,
        passkey=second_factor.PASSKEY in methods,
        passkey_asked=second_factor.PASSKEY in asked,
        passkeys_available=passkeys.available(ctx),
        recovery_left=await second_factor.recovery_codes_left(ctx, principal.user_id) if enrolled else 0,
        enrolment=enrolment,
        qr=_qr_svg(enrolment.uri) if enrolment else None,
        required=ctx.settings.require_second_factor != "off",
        next=next_path,
        **values,
    )


async def _posted(request: Request) -> tuple[Context, Principal, dict[str, str], str] | Response:
    ctx = _ctx(request)
    form = await read_form(request)
    principal = await session.current(ctx, request)
    next_path = safe_next(form.get("next"))
    if principal is None:
        return redirect(_with_next("/signin", _with_next(ENROL, next_path)))
    if not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=(ENROL, "Two-step sign-in"))
    return ctx, principal, form, next_path


async def enrol_form(request: Request) -> Response:
    ctx = _ctx(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return to_signin(request)
    notice = "Your authenticator app was removed." if request.query_params.get("removed") == "1" else None
    return await _enrol_page(ctx, principal, safe_next(request.query_params.get("next")), notice=notice)


async def enrol_start(request: Request) -> Response:
    """"Set up an authenticator app": a new secret, shown with its QR code until confirmed."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    ctx, principal, _, next_path = posted
    try:
        await second_factor.start_enrolment(ctx, principal.user_id, await accounts.email_of(ctx, principal))
    except InvalidRequest as exc:
        return await _enrol_page(ctx, principal, next_path, status_code=409, notice=exc.message)
    return redirect(_with_next(ENROL, next_path))


async def enrol_confirm(request: Request) -> Response:
    """The first code from the app: the app is set up, the recovery codes shown once, and the
    session becomes one signed in with both factors (it has just proven the second)."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    ctx, principal, form, next_path = posted
    code = (form.get("code") or "")[:CODE_MAX]
    address = _address(request)
    try:
        codes = await second_factor.confirm_enrolment(ctx, principal.user_id, code, address=address)
    except RateLimited as exc:
        limited = await _enrol_page(
            ctx, principal, next_path, status_code=429, errors={"code": f"Too many wrong codes. Try again in {wait_time(exc.retry_after)}."}
        )
        limited.headers["Retry-After"] = str(exc.retry_after)
        return limited
    except InvalidGrant as exc:
        return await _enrol_page(ctx, principal, next_path, status_code=400, errors={"code": exc.message})
    except InvalidRequest as exc:
        return await _enrol_page(ctx, principal, next_path, status_code=400, notice=exc.message)
    amr = second_factor.amr_of((second_factor.OTP,))
    token = await accounts.start_session(ctx, principal.user_id, amr, address=address)
    await accounts.replace_session(ctx, principal, token)
    signed_in_now = await accounts.authenticate(ctx, token.access_token)
    response = await _enrol_page(ctx, signed_in_now, next_path, recovery_codes=codes)
    response.headers["Cache-Control"] = "no-store"
    session.set_session(ctx, response, token)
    return response


async def remove(request: Request) -> Response:
    """Remove the authenticator app: the current password proves who asks."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    ctx, principal, form, next_path = posted
    password = form.get("current_password") or ""
    if not password:
        return await _enrol_page(ctx, principal, next_path, status_code=400, errors={"current_password": "Enter your current password."})
    try:
        await accounts.verify_current_password(ctx, principal, password, address=_address(request))
    except RateLimited as exc:
        limited = await _enrol_page(
            ctx, principal, next_path, status_code=429,
            errors={"current_password": f"Too many wrong passwords. Try again in {wait_time(exc.retry_after)}."},
        )
        limited.headers["Retry-After"] = str(exc.retry_after)
        return limited
    except InvalidGrant as exc:
        return await _enrol_page(ctx, principal, next_path, status_code=400, errors={"current_password": exc.message})
    await second_factor.remove(ctx, principal.user_id, address=_address(request))
    return redirect(ENROL + "?removed=1")
