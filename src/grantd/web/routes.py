"""The page routes: GET/POST /oauth2/authorize (consent), GET/POST /signin and /signup, POST /signout, GET /;
and the pages' stylesheets: /static/grantd.css, /static/accent/{rgb}.css (an app's accent colour).

Each route parses the wire, calls the use cases of ``grantd.core.authorization`` and
``grantd.core.accounts``, and answers with a page or a 303 redirect. Errors about the
client or its redirect_uri are shown on a page and never redirected (RFC 6749 §4.1.2.1);
every other error of an authorization request goes back to the client's redirect_uri.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from importlib.resources import files
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import Request
from starlette.responses import Response

from grantd.core.amr import PASSWORD_AMR
from grantd.core import accounts, apps, authorization, client_metadata, email_address, openid, par, passkeys, resources
from grantd.core import second_factor
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import (
    Conflict,
    ConsentRequired,
    LoginRequired,
    GrantdError,
    InvalidClient,
    InvalidGrant,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidRequestUri,
    InteractionRequired,
    NotFound,
    RateLimited,
)
from grantd.forms import MAX_PARAMETER_LENGTH, read_form
from grantd.web import second_factor as second_factor_pages, session
from grantd.web.continuing import AUTHORIZE, continuing_to, form_action, pushed as _pushed, target as _target
from grantd.web.pages import (
    PASSKEY_SCRIPTS,
    error_page,
    form_target,
    origin_source,
    page,
    redirect,
    safe_next,
    user_page,
    wait_time,
)

# Form fields of the consent page itself, never carried over from the authorization request.
_PAGE_FIELDS = ("csrf_token", "decision")
_FORGED = (
    "The form was not sent from this site, or it has expired. "
    "Go back, reload the page and try again."
)


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


# ---------------------------------------------------------------- parsing the authorization request


def _query(request: Request) -> tuple[dict[str, str], list[str], str | None]:
    """The query parameters (an empty value counts as absent, RFC 6749 §3.1), the repeated names, and
    what is wrong with the query (every parameter at most once but ``resource``, RFC 8707; none too long)."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    counts = Counter(name for name, _ in pairs)
    repeated = [name for name, count in counts.items() if count > 1 and name not in resources.REPEATABLE]
    too_long = [name for name, value in pairs if len(value) > MAX_PARAMETER_LENGTH]
    # RFC 8707's resource may repeat: its values are joined as one (resources.REPEATED, NUL), so none may hold NUL.
    with_nul = [name for name, value in pairs if name in resources.REPEATABLE and resources.REPEATED in value]
    problem = (
        f"{repeated[0]} is repeated." if repeated else f"{too_long[0]} is too long." if too_long
        else f"{with_nul[0]} must not contain the NUL character (%00)." if with_nul else None
    )
    params: dict[str, str] = {}
    for name, value in pairs:
        if value != "":
            if name in params and name in resources.REPEATABLE:
                params[name] += resources.REPEATED + value
            else:
                params.setdefault(name, value)
    return params, repeated + too_long + with_nul, problem


def _target_error(exc: GrantdError) -> Response:
    return error_page(
        400,
        "This app cannot be authorized",
        exc.message,
        detail="The app sent you here with a request that does not match its registration. "
        "You have not been sent back to it. Contact the app's developer.",
    )


def _validate(ctx: Context, target: authorization.Target, params: dict[str, str]) -> authorization.StandardRequest:
    return par.validate(ctx, target, params)


def _unusable_request_uri(exc: InvalidRequestUri) -> Response:
    return error_page(
        400,
        "This request cannot be used",
        exc.message,
        detail="The app sent you here with a request that expired or was used already. "
        "You have not been sent back to it. Go back to the app and start again.",
    )


def _not_pushed(ctx: Context, target: authorization.Target, pushed: par.Opened | None) -> GrantdError | None:
    """RFC 9126 §6: a request of an app (or a server) that requires pushed requests, not pushed."""
    if pushed is None and authorization.pushed_only(ctx, target.openid):
        return InvalidRequest(
            "This app's authorization requests must be pushed first (RFC 9126): POST them to /oauth2/par, "
            "then send the request_uri here."
        )
    return None


async def _spend(ctx: Context, pushed: par.Opened | None) -> Response | None:
    """Spend the pushed request (if any) an answer is about to go back for, so that it is answered
    once at most; the error page when it was spent meanwhile, else None."""
    if pushed is not None:
        try:
            await par.spend(ctx, pushed)
        except InvalidRequestUri as exc:
            return _unusable_request_uri(exc)
    return None


async def _answered(ctx: Context, pushed: par.Opened | None, answer: authorization.Answer) -> Response:
    """``send_back(answer)``, spending the pushed request it answers."""
    return await _spend(ctx, pushed) or send_back(answer)


async def _back_with_pushed_error(
    ctx: Context, target: authorization.Target, exc: GrantdError, params: dict[str, str], pushed: par.Opened | None
) -> Response:
    return await _answered(
        ctx, pushed, authorization.error_redirect(ctx, target, exc.error, exc.message, params.get("state"), _response_mode(params))
    )


def _response_mode(params: dict[str, str]) -> str:
    """The response mode an error goes back with: the request's, when it is one grantd knows."""
    mode = params.get("response_mode")
    return mode if mode in authorization.RESPONSE_MODES else "query"


def _back_with_error(ctx: Context, target: authorization.Target, exc: GrantdError, params: dict[str, str]) -> Response:
    return send_back(authorization.error_redirect(ctx, target, exc.error, exc.message, params.get("state"), _response_mode(params)))


def send_back(answer: authorization.Answer) -> Response:
    """The answer to the client: a 303 to its redirect URI with the answer in the query, or (the
    form_post response mode) a page whose form the browser posts there at once. The page's only
    script is that one submit, allowed by its hash."""
    if answer.response_mode != "form_post":
        return redirect(answer.url())
    return page(
        "form_post.html",
        form_action=[form_target(answer.redirect_uri) or ""],
        script_src=[FORM_POST_SCRIPT_HASH],
        redirect_uri=answer.redirect_uri,
        params=list(answer.params.items()),
        script=FORM_POST_SCRIPT,
    )


FORM_POST_SCRIPT = "document.forms[0].submit();"
FORM_POST_SCRIPT_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(FORM_POST_SCRIPT.encode()).digest()).decode() + "'"


def _to_signin(next_path: str) -> Response:
    return redirect("/signin?" + urlencode({"next": next_path}))


def _address(request: Request) -> str | None:
    """The TCP peer's address, for the audit log."""
    return request.client.host if request.client else None


def _authorize_path(params: dict[str, str]) -> str:
    carried = [(k, v) for k, v in resources.wire_pairs(params) if k not in _PAGE_FIELDS]
    return AUTHORIZE + ("?" + urlencode(carried) if carried else "")


# ---------------------------------------------------------------- the app's branding

ACCENT_STYLESHEETS = "/static/accent"


async def _branded(ctx: Context, target: authorization.Target) -> tuple[dict[str, object], list[str]]:
    """The values of a page that signs in to, or asks consent for, ``target``'s app: its name and
    branding (``brand``, the ``logo`` shown and the ``accent_stylesheet``); and the ``img-src``
    the page needs for the logo: that one origin.

    The logo is shown only where its origin can be named exactly in the CSP (``core.apps``
    accepts no other logo). The accent colour comes from a same-origin stylesheet whose URL is
    the colour itself (``accent_stylesheet``): the page holds no inline style, and its CSP keeps
    ``style-src 'self'``.
    """
    brand = await apps.branding_of(ctx, target.app_id)
    source = origin_source(brand.logo_uri) if brand.logo_uri else None
    values: dict[str, object] = {
        "app_name": target.app_name,
        "brand": brand,
        "logo": brand.logo_uri if source else None,
        "accent_stylesheet": f"{ACCENT_STYLESHEETS}/{brand.accent_color[1:]}.css" if brand.accent_color else None,
    }
    return values, [source] if source else []


_UNBRANDED: dict[str, object] = {"app_name": None, "brand": None, "logo": None, "accent_stylesheet": None}


async def accent_stylesheet(color: str) -> Response:
    """``GET /static/accent/{rgb or rrggbb}.css``: the custom properties of an accent colour, for
    the pages of an app that chose it. The answer depends on the URL alone: cached for a year."""
    try:
        accent = apps.accent_color("#" + color)
    except InvalidRequest:
        raise NotFound("No such stylesheet.") from None
    css = f":root {{ --app-accent: {accent}; --app-accent-fg: {apps.accent_text_color(accent)}; }}\n"
    return Response(
        css,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
    )


# ---------------------------------------------------------------- consent


async def authorize_page(request: Request) -> Response:
    """A request sent in full, or by ``client_id`` + ``request_uri`` a pushed one (RFC 9126 §4):
    then its stored parameters stand for the query, whose other parameters are ignored. The
    sign-in and consent pages carry the ``request_uri``, not the parameters; it is spent when the
    answer goes back to the client (``_answered``)."""
    ctx = _ctx(request)
    params, faulty, problem = _query(request)
    if problem and ({"client_id", "redirect_uri", "request_uri"} & set(faulty)):
        return _target_error(InvalidRequest(problem))
    try:
        pushed = await _pushed(ctx, params)
    except InvalidRequestUri as exc:
        return _unusable_request_uri(exc)
    if pushed is not None:
        params, problem = pushed.params, None
    try:
        target = await _target(ctx, params)
    except (InvalidClient, InvalidRedirectUri) as exc:
        return _target_error(exc)
    if problem:
        return _back_with_error(ctx, target, InvalidRequest(problem), params)
    refused = _not_pushed(ctx, target, pushed)
    if refused is not None:
        return _back_with_error(ctx, target, refused, params)
    try:
        principal = await session.current(ctx, request)
        if pushed is not None and principal is not None and principal.issued_at >= pushed.created_at:
            # Signed in since the request was pushed: its prompt=login, max_age and id_token_hint are
            # met, as the query carried back from the sign-in page meets them (_after_sign_in).
            params = _after_sign_in(params)
        standard = _validate(ctx, target, params)
        await resources.admit(ctx, standard.resources, standard.permissions)
        hinted = await _hinted_subject(ctx, target, params.get("id_token_hint"))
    except GrantdError as exc:
        return await _back_with_pushed_error(ctx, target, exc, params, pushed)
    if _must_sign_in(ctx, standard, principal, hinted):
        if "none" in standard.prompt:
            return await _back_with_pushed_error(ctx, target, LoginRequired("The user must sign in."), params, pushed)
        next_path = _authorize_path(pushed.carried if pushed is not None else _after_sign_in(params))
        # prompt=create (Initiating User Registration via OpenID Connect 1.0): the sign-up page.
        wanted = "/signup?" if "create" in standard.prompt and principal is None else "/signin?"
        response = redirect(wanted + urlencode({"next": next_path}))
        if principal is None and session.SESSION_COOKIE in request.cookies:
            session.clear_session(ctx, response)
        return response
    assert principal is not None  # else _must_sign_in
    if ctx.settings.require_second_factor == "all":
        required = await second_factor_pages.required(
            ctx, principal, _authorize_path(pushed.carried if pushed is not None else params)
        )
        if required is not None:
            if "none" in standard.prompt:  # Core §3.1.2.6: the second factor needs a page
                return await _back_with_pushed_error(
                    ctx, target, InteractionRequired("The user must sign in with a second factor."), params, pushed
                )
            return required
    missing = await authorization.missing_consent(ctx, principal, standard)
    if missing or "consent" in standard.prompt:
        if "none" in standard.prompt:
            return await _back_with_pushed_error(
                ctx, target, ConsentRequired("The user must consent to this request."), params, pushed
            )
        carried = pushed.carried if pushed is not None else params
        return await _consent_page(ctx, principal, standard, carried, missing or list(standard.permissions))
    return await _approved(ctx, request, principal, standard, pushed)


async def _approved(
    ctx: Context, request: Request, principal: Principal, standard: authorization.StandardRequest, pushed: par.Opened | None
) -> Response:
    """The code, sent back; a pushed request is spent first, so that it issues one code at most."""
    refused = await _spend(ctx, pushed)
    if refused is not None:
        return refused
    return send_back(await authorization.approve(ctx, principal, standard, address=_address(request)))


async def _hinted_subject(ctx: Context, target: authorization.Target, id_token_hint: str | None) -> str | None:
    """The subject of ``id_token_hint`` (OpenID Connect Core §3.1.2.1): an ID token grantd issued to
    this app, expired or not; InvalidRequest for anything else."""
    if id_token_hint is None:
        return None
    return openid.hinted_subject(ctx, id_token_hint, target.app_id)


def _must_sign_in(
    ctx: Context, request: authorization.StandardRequest, principal: Principal | None, hinted: str | None
) -> bool:
    """Whether the user must sign in (again) before the request is answered: no session;
    ``prompt=login`` or ``select_account``; a sign-in older than ``max_age``; or a session of
    another user than ``id_token_hint`` names."""
    if principal is None:
        return True
    if "login" in request.prompt or "select_account" in request.prompt:
        return True
    if request.max_age is not None and ctx.now() - principal.issued_at > request.max_age:
        return True
    return hinted is not None and hinted != request.target.audience().subject(ctx, principal.user_id)


def _after_sign_in(params: dict[str, str]) -> dict[str, str]:
    """The request to come back to once signed in: without what would send the user to sign in
    again however recently they did (``prompt=login``, ``select_account``, ``create``; ``max_age``, which a
    sign-in just now meets, but which a slow round trip could miss by a second), and without
    ``id_token_hint``, which the user has just answered by signing in (kept, it would send someone
    else back to sign in)."""
    after = {name: value for name, value in params.items() if name not in ("id_token_hint", "max_age")}
    prompts = [p for p in after.get("prompt", "").split() if p not in ("login", "select_account", "create")]
    if prompts:
        after["prompt"] = " ".join(prompts)
    else:
        after.pop("prompt", None)
    return after


async def _consent_page(
    ctx: Context,
    principal: Principal,
    standard: authorization.StandardRequest,
    params: dict[str, str],
    missing: list[str],
) -> Response:
    describe = ctx.catalog.describe
    missing_set = set(missing)
    target = standard.target
    branded, img_src = await _branded(ctx, target)
    return page(
        "consent.html",
        form_action=[form_target(target.redirect_uri) or ""],
        img_src=img_src,
        **branded,
        owner_email=target.owner_email,
        # A client ID metadata document's client: its host, which is all that vouches for it.
        client_host=urlsplit(target.app_id).hostname if target.registration == client_metadata.METADATA_DOCUMENT else None,
        redirect_host=urlsplit(target.redirect_uri).netloc or target.redirect_uri,
        requested=[(name, describe(name)) for name in missing],
        granted=[(name, describe(name)) for name in standard.permissions if name not in missing_set],
        resources=standard.resources,  # RFC 8707: where its tokens are for
        hidden=[(k, v) for k, v in resources.wire_pairs(params) if k not in _PAGE_FIELDS],
        csrf_token=session.session_csrf(ctx, principal),
        signout_next=_authorize_path(params),
    )


async def authorize_decision(request: Request) -> Response:
    """``POST /oauth2/authorize``: the consent page's decision; or, without one, an authorization
    request sent by POST, which OpenID Connect Core §3.1.2.1 requires ("MUST support the use of
    the HTTP GET and POST methods").

    A POSTed request is sent on as the same request by GET (303): a browser posting it from the
    app's site sends no SameSite=Lax session cookie with that POST, but does with the top-level GET
    it is redirected to; answered at once, every POSTed request would find the user signed out
    (``prompt=none``: login_required)."""
    ctx = _ctx(request)
    # A malformed form raises; render_error answers with the error page. resource may repeat (RFC 8707).
    form = await read_form(request, resources.REPEATABLE)
    if not any(name in form for name in _PAGE_FIELDS):
        return redirect(_authorize_path(form))
    principal = await session.current(ctx, request)
    if principal is not None and not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED)
    try:
        pushed = await _pushed(ctx, form)
    except InvalidRequestUri as exc:
        return _unusable_request_uri(exc)
    params = pushed.params if pushed is not None else form
    try:
        target = await _target(ctx, params)
    except (InvalidClient, InvalidRedirectUri) as exc:
        return _target_error(exc)
    if principal is None:
        # The session ended while the page was open: sign in again, then see the same request.
        return _to_signin(_authorize_path(pushed.carried if pushed is not None else form))
    refused = _not_pushed(ctx, target, pushed)
    if refused is not None:
        return _back_with_error(ctx, target, refused, params)
    try:
        standard = _validate(ctx, target, params)
        await resources.admit(ctx, standard.resources, standard.permissions)
    except GrantdError as exc:
        return await _back_with_pushed_error(ctx, target, exc, params, pushed)
    decision = form.get("decision")
    if decision == "allow":
        return await _approved(ctx, request, principal, standard, pushed)
    if decision == "deny":
        return await _answered(ctx, pushed, authorization.error_redirect(
            ctx, target, "access_denied", "The user denied the request.", standard.state, standard.response_mode
        ))
    return error_page(400, "The request cannot be handled", "decision must be allow or deny.")


# ---------------------------------------------------------------- sign-in and sign-out


def _with_next(path: str, next_path: str) -> str:
    return path if next_path == "/" else path + "?" + urlencode({"next": next_path})


async def _signin_page(
    ctx: Context,
    request: Request,
    next_path: str,
    *,
    status_code: int = 200,
    message: str | None = None,
    email: str = "",
) -> Response:
    return await _entry_page(
        ctx, request, next_path, "signin.html", status_code,
        message=message, email=email, signup_url=_with_next("/signup", next_path),
        **(PASSKEY_SCRIPTS if passkeys.available(ctx) else {}), passkeys=passkeys.available(ctx),
    )


async def _entry_page(
    ctx: Context, request: Request, next_path: str, template: str, status_code: int, **fields: object
) -> Response:
    """The sign-in or sign-up page: its CSRF token bound to the pre-session cookie, and the app the
    person is on the way to, if any, with its branding.

    After signing in the browser follows /oauth2/authorize, which may redirect straight on to
    the client: the form's form-action must allow that origin too.
    """
    cookie = session.signin_cookie(request)
    target = await continuing_to(ctx, next_path)
    branded, img_src = _UNBRANDED, []
    if target is not None:
        branded, img_src = await _branded(ctx, target)
    response = page(
        template,
        status_code,
        form_action=form_action(target),
        img_src=img_src,
        next=next_path,
        csrf_token=session.signin_csrf(ctx, cookie),
        **branded,
        **fields,
    )
    session.set_signin_cookie(ctx, response, cookie)
    return response


async def signin_form(request: Request) -> Response:
    params, _, _ = _query(request)
    next_path = safe_next(params.get("next"))
    ctx = _ctx(request)
    return await _signin_page(ctx, request, next_path, email=await _login_hint(ctx, next_path))


async def _login_hint(ctx: Context, next_path: str) -> str:
    """The email an app suggested the user sign in with (OpenID Connect's ``login_hint``), when the
    sign-in continues to an authorization request (sent in full, or pushed): the email field
    starts with it."""
    parts = urlsplit(next_path)
    if parts.path != AUTHORIZE:
        return ""
    params = dict(parse_qsl(parts.query))
    try:
        pushed = await _pushed(ctx, params)
    except GrantdError:
        return ""
    hint = (pushed.params if pushed is not None else params).get("login_hint", "")
    return hint[:320] if "@" in hint else ""


async def signin(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)  # a malformed form raises; render_error answers with the error page
    next_path = safe_next(form.get("next"))
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=(_with_next("/signin", next_path), "Sign in"))
    email, password = form.get("email"), form.get("password")
    shown_email = (email or "")[:320]
    if not email or not password:
        return await _signin_page(
            ctx, request, next_path, status_code=400, message="Enter your email and password.", email=shown_email
        )
    try:
        user = await accounts.check_password(ctx, email, password, address=_address(request))
    except RateLimited as exc:
        locked = await _signin_page(
            ctx, request, next_path, status_code=429, email=shown_email,
            message=f"Too many failed sign-in attempts. Sign-in is locked for {wait_time(exc.retry_after)}; "
            "try again later.",
        )
        locked.headers["Retry-After"] = str(exc.retry_after)
        return locked
    except InvalidGrant:
        return await _signin_page(
            ctx, request, next_path, status_code=401, message="Wrong email or password.", email=shown_email
        )
    except GrantdError as exc:
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return await _signin_page(ctx, request, next_path, status_code=status, message=exc.message, email=shown_email)
    if await second_factor.asked_after_password(ctx, user.id):
        return second_factor_pages.ask(ctx, user.id, next_path)  # no session before the second factor
    token = await accounts.start_session(ctx, user.id, PASSWORD_AMR, address=_address(request))
    return await _signed_in(ctx, request, token, next_path)


async def _signed_in(
    ctx: Context, request: Request, token: accounts.UserToken, next_path: str, *, notify: bool = True
) -> Response:
    """The answer once a session is made: on to ``next_path``, or first to set up a second
    factor where the operator requires one. The browser is remembered for the account, and a
    sign-in (``notify``; a sign-up is not one) from a browser it had not seen sends a notice."""
    await _replace_session(ctx, request, token)
    principal = Principal(token.user_id, token.jti, ctx.now())
    response = await second_factor_pages.required(ctx, principal, next_path) or redirect(next_path)
    session.set_session(ctx, response, token)
    await session.signed_in_from_here(ctx, request, response, token.user_id, notify=notify)
    return response


async def _replace_session(ctx: Context, request: Request, token: accounts.UserToken) -> None:
    """The browser's session, if it had one, gives way to the one just made (accounts.replace_session)."""
    previous = await session.current(ctx, request)
    if previous is not None and previous.jti != token.jti:
        await accounts.replace_session(ctx, previous, token)


# ---------------------------------------------------------------- sign-up


def _sentence(message: str) -> str:
    """A core message ("password is too weak: …") as the start of a sentence on a page."""
    return message[:1].upper() + message[1:]


async def _signup_page(
    ctx: Context,
    request: Request,
    next_path: str,
    *,
    status_code: int = 200,
    message: str | None = None,
    email: str = "",
    errors: dict[str, str] | None = None,
    taken: bool = False,
) -> Response:
    return await _entry_page(
        ctx, request, next_path, "signup.html", status_code,
        message=message,
        email=email,
        errors=errors or {},
        taken=taken,
        password_hint=accounts.password_rule(ctx.settings.password_min_length),
        signin_url=_with_next("/signin", next_path),
    )


async def signup_form(request: Request) -> Response:
    params, _, _ = _query(request)
    return await _signup_page(_ctx(request), request, safe_next(params.get("next")))


async def signup(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)  # a malformed form raises; render_error answers with the error page
    next_path = safe_next(form.get("next"))
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=(_with_next("/signup", next_path), "Create an account"))
    email, password = form.get("email") or "", form.get("password") or ""
    shown_email = email[:320]
    errors = {}
    if not email:
        errors["email"] = "Enter your email address."
    if not password:
        errors["password"] = "Choose a password."
    if errors:
        return await _signup_page(ctx, request, next_path, status_code=400, email=shown_email, errors=errors)
    try:
        token = await accounts.sign_up(ctx, email, password, address=_address(request))
    except RateLimited as exc:
        locked = await _signup_page(
            ctx, request, next_path, status_code=429, email=shown_email,
            message=f"Too many accounts were created from your network. Try again in {wait_time(exc.retry_after)}.",
        )
        locked.headers["Retry-After"] = str(exc.retry_after)
        return locked
    except Conflict as exc:
        return await _signup_page(
            ctx, request, next_path, status_code=409, email=shown_email, errors={"email": exc.message}, taken=True
        )
    except InvalidRequest as exc:
        field = exc.field if exc.field in ("email", "password") else None
        return await _signup_page(
            ctx, request, next_path, status_code=400, email=shown_email,
            errors={field: _sentence(exc.message)} if field else None,
            message=None if field else _sentence(exc.message),
        )
    except GrantdError as exc:
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return await _signup_page(ctx, request, next_path, status_code=status, email=shown_email, message=exc.message)
    return await _signed_in(ctx, request, token, next_path, notify=False)


async def signout(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)  # a malformed form raises; render_error answers with the error page
    principal = await session.current(ctx, request)
    if principal is not None:
        if not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
            return error_page(403, "This form cannot be accepted", _FORGED)
        await accounts.log_out(ctx, principal)
    response = redirect(safe_next(form.get("next")))
    session.clear_session(ctx, response)
    return response


async def home(request: Request) -> Response:
    ctx = _ctx(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return page("home.html", signed_in=False)
    return user_page(ctx, principal, "home.html", "home", signed_in=True, email=await accounts.email_of(ctx, principal))


# ---------------------------------------------------------------- the stylesheet

_STYLESHEET = (files("grantd.web") / "static" / "grantd.css").read_bytes()


async def stylesheet() -> Response:
    return Response(
        _STYLESHEET,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# ---------------------------------------------------------------- forgotten password

_LINK_UNUSABLE = (
    "This password-reset link cannot be used: it was used already, or it expired. Request a new one."
)


async def _forgot_page(
    ctx: Context, request: Request, *, status_code: int = 200, **fields: object
) -> Response:
    fields.setdefault("email", "")
    fields.setdefault("errors", {})
    fields.setdefault("message", None)
    fields.setdefault("sent", None)
    return await _entry_page(ctx, request, "/", "forgot.html", status_code, **fields)


async def forgot_form(request: Request) -> Response:
    return await _forgot_page(_ctx(request), request)


async def forgot(request: Request) -> Response:
    """The same answer whether or not the address has an account (``accounts.request_password_reset``)."""
    ctx = _ctx(request)
    form = await read_form(request)
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=("/password/forgot", "Forgot password"))
    email = form.get("email") or ""
    shown_email = email[:320]
    if not email:
        return await _forgot_page(ctx, request, status_code=400, errors={"email": "Enter your email address."})
    try:
        await accounts.request_password_reset(ctx, email, address=_address(request))
    except RateLimited as exc:
        locked = await _forgot_page(
            ctx, request, status_code=429, email=shown_email,
            message=f"Too many password-reset requests. Try again in {wait_time(exc.retry_after)}.",
        )
        locked.headers["Retry-After"] = str(exc.retry_after)
        return locked
    except InvalidRequest as exc:
        return await _forgot_page(ctx, request, status_code=400, email=shown_email, errors={"email": _sentence(exc.message)})
    return await _forgot_page(ctx, request, sent=accounts.RESET_REQUESTED)


async def _reset_page(ctx: Context, request: Request, token: str, *, status_code: int = 200, **fields: object) -> Response:
    fields.setdefault("errors", {})
    fields.setdefault("message", None)
    return await _entry_page(
        ctx, request, "/", "reset.html", status_code, token=token,
        password_hint=accounts.password_rule(ctx.settings.password_min_length), **fields,
    )


def _unusable_link() -> Response:
    return error_page(400, "This link cannot be used", _LINK_UNUSABLE, link=("/password/forgot", "Request a new link"))


async def reset_form(request: Request) -> Response:
    ctx = _ctx(request)
    params, _, _ = _query(request)
    token = params.get("token") or ""
    if not token or len(token) > 128 or not await accounts.reset_token_is_live(ctx, token):
        return _unusable_link()
    return await _reset_page(ctx, request, token)


async def reset(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)
    token = (form.get("token") or "")[:128]
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=("/password/forgot", "Forgot password"))
    password = form.get("password") or ""
    if not token:
        return _unusable_link()
    if not password:
        return await _reset_page(ctx, request, token, status_code=400, errors={"password": "Choose a password."})
    try:
        await accounts.reset_password(ctx, token, password, address=_address(request))
    except InvalidGrant:
        return _unusable_link()
    except InvalidRequest as exc:
        return await _reset_page(ctx, request, token, status_code=400, errors={"password": _sentence(exc.message)})
    return await _signin_page(ctx, request, "/", message="Your password was changed. Sign in with the new one.")


# ---------------------------------------------------------------- email verification


def _unusable_email_link() -> Response:
    return error_page(
        400, "This link cannot be used", email_address.UNUSABLE,
        detail="Signed in, you can have a new one sent from your account page.", link=("/account", "Your account"),
    )


async def verify_email_form(request: Request) -> Response:
    """``GET /email/verify?token=…``, the link of a message: what it proves, and a button. Opening
    it spends nothing (a mail scanner may fetch it); the button's POST does."""
    ctx = _ctx(request)
    params, _, _ = _query(request)
    token = params.get("token") or ""
    found = await email_address.link_of(ctx, token) if token and len(token) <= 128 else None
    if found is None:
        return _unusable_email_link()
    return await _entry_page(
        ctx, request, "/", "email_verify.html", 200, token=token, email=found.email, is_change=found.is_change
    )


async def verify_email(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED)
    token = (form.get("token") or "")[:128]
    if not token:
        return _unusable_email_link()
    try:
        proven = await email_address.confirm(ctx, token, address=_address(request))
    except InvalidGrant:
        return _unusable_email_link()
    except Conflict as exc:
        return error_page(409, "This address cannot become yours", exc.message, link=("/account", "Your account"))
    return page("email_verified.html", email=proven.email, is_change=proven.is_change)
