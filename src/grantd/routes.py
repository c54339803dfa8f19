"""Every route of grantd, declared once.

A ``Route`` is a method and a whole path; the handler FastAPI calls; the error dialect its errors
are answered in; whether the hot path answers it ahead of FastAPI, and with which handler
(``grantd.api.hot``); what its success issues and whether it is a probe, for the metrics and
the access log (``grantd.telemetry``); and its OpenAPI documentation. From this table come:

- the FastAPI routes, and so the OpenAPI document (``register``): each route under its whole
  path, which is also its ``route`` label in the metrics and the access log;
- the hot dispatch (``hot_routes``);
- the dialect of every request (``dialects``): the route's own, and for a path no route
  matches a rule drawn from the table (``grantd.api.errors.Dialects``);
- CORS (``grantd.core.cors``): a route marked ``cors`` OPEN or CLIENT answers browsers of other
  origins by that rule, and its path answers a preflight (``OPTIONS``, ``preflights``); every
  route not marked answers none.

The Neucron API is declared once and served twice: under ``/v1`` and at the root.

The table names the handlers and dialects of both ``grantd.api`` and ``grantd.web``, so it
stands above both, where neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response

from grantd.api import (
    admin,
    apps, audit, auth, envelope, grants, hot, neucron, neucron_v2, oauth2, openid, ops, registration, resources, wellknown,
)
from grantd.api import cors as cors_wire
from grantd.api.envelope import Envelope, ErrorBody, error_responses
from grantd.api.errors import Dialect, Dialects
from grantd.api.hot import Handler as HotHandler, HotRoute
from grantd.config import Settings
from grantd.core.cors import CLIENT, OPEN
from grantd.telemetry import NOTED_GRANT
from grantd.web import account, admin_pages, console, console_resources, device, logout, pages, passkeys, second_factor
from grantd.web import routes as web

# The error dialects. NEUCRON is also the shape of the routes of no dialect of their own
# (discovery, operations, the stylesheet) and of FastAPI's own (/docs, /openapi.json).
NEUCRON: Dialect = envelope.render_error  # {"error", "message", "status_code"}
OAUTH2: Dialect = oauth2.render_error  # RFC 6749 §5.2: {"error", "error_description"}
PAGE: Dialect = pages.render_error  # an HTML page
REGISTRATION: Dialect = registration.render_error  # RFC 7591 §3.2.2: {"error", "error_description"}; 401 Bearer


@dataclass(frozen=True, slots=True)
class Route:
    """One route: one method of one whole path."""

    method: str
    path: str
    handler: Callable[..., Awaitable[Response]]
    dialect: Dialect
    hot: HotHandler | None = None  # served ahead of FastAPI by this handler
    issues: str | None = None  # the token a 200 issued: its grant type, or NOTED_GRANT (telemetry)
    probe: bool = False  # logged at debug level (telemetry)
    cors: str | None = None  # OPEN or CLIENT: answered to browsers of other origins (grantd.core.cors)
    # The OpenAPI documentation, as FastAPI takes it (``add_api_route``); a hidden route is not in it.
    summary: str | None = None
    tags: tuple[str, ...] = ()
    response_model: Any = None
    responses: dict[int | str, dict[str, Any]] | None = None
    openapi_extra: dict[str, Any] | None = None
    response_class: type[Response] | None = None
    status_code: int | None = None  # the success status documented, when not 200
    hidden: bool = False


def _neucron(
    method: str,
    path: str,
    handler: Callable[..., Awaitable[Response]],
    data: Any,
    errors: tuple[int, ...] | None,
    summary: str,
    **more: Any,
) -> Route:
    """A route of the Neucron API: its 200 is the envelope around ``data``, its ``errors`` the error body."""
    responses = error_responses(*errors) if errors is not None else None
    return Route(
        method, path, handler, NEUCRON, summary=summary, response_model=Envelope[data], responses=responses, **more
    )


# The OpenAPI tag of the calls of Neucron's SDK 2.x (grantd.api.neucron_v2): flat JSON, no envelope.
NEUCRON_V2 = "Neucron v2"


def _neucron_v2(
    path: str,
    handler: Callable[..., Awaitable[Response]],
    query: list[dict[str, Any]],
    success: dict[str, Any],
    errors: tuple[int, ...],
    summary: str,
    **more: Any,
) -> Route:
    """A call of Neucron v2 (Neucron's SDK 2.x): a GET of ``query`` parameters, its 200 the flat
    JSON ``success`` (the SDK reads the body as it is), its ``errors`` the Neucron error body."""
    return Route(
        "GET", path, handler, NEUCRON,
        summary=summary,
        tags=(NEUCRON_V2,),
        responses={200: {"description": "Success", **_json(success)}, **error_responses(*errors)},
        openapi_extra={"parameters": query},
        **more,
    )


def _flat(
    method: str,
    path: str,
    handler: Callable[..., Awaitable[Response]],
    body: Any,
    errors: dict[int | str, dict[str, Any]],
    summary: str,
) -> Route:
    """An account call of Neucron's v2 SDK: its 200 is ``body`` itself (the SDK does not unwrap an
    envelope), its ``errors`` the Neucron error body."""
    return Route(method, path, handler, NEUCRON, summary=summary, response_model=body, responses=errors)


def _oauth2(
    path: str,
    handler: Callable[..., Awaitable[Response]],
    form: dict[str, Any],
    required: list[str],
    success: dict[str, Any],
    summary: str,
    status: int = 200,
    **more: Any,
) -> Route:
    """An endpoint of standard OAuth 2.0: a POST of ``form`` (client authentication in it or by
    Basic), its ``status`` (200) ``success``, its errors RFC 6749 §5.2 JSON."""
    return Route(
        "POST",
        path,
        handler,
        OAUTH2,
        summary=summary,
        tags=("OAuth 2.0",),
        openapi_extra=oauth2.form_doc(form, required),
        responses={status: success, **oauth2.ERRORS_DOC},
        status_code=status if status != 200 else None,
        **more,
    )


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _tagged(tag: str, *routes: Route) -> tuple[Route, ...]:
    return tuple(replace(route, tags=(*route.tags, tag)) for route in routes)


def _page(method: str, path: str, handler: Callable[..., Awaitable[Response]]) -> Route:
    return Route(method, path, handler, PAGE, hidden=True)


_NEUCRON_API = (
    *_tagged(
        "Auth",
        _neucron(
            "POST", "/auth/signup", auth.signup, auth.UserTokenData, (400, 409, 429), "Create an account and sign in"
        ),
        _neucron(
            "POST", "/auth/login", auth.login, auth.UserTokenData, (400, 401, 429),
            "Sign in: one answer for both SDKs, v1's envelope with v2's top-level `token` (the same "
            "token) and `platforms` beside it",
        ),
        _neucron("POST", "/auth/logout", auth.logout, auth.MessageData, (401,), "Sign out: revoke the user token sent"),
        _flat(
            "POST", "/auth/password/forgot", auth.forgot_password, auth.AccountMessage, error_responses(400, 429),
            "Mail a single-use link to reset the password of the account of `email`, if there is one (Neucron "
            "v2's forgotPassword); the same answer whether or not there is",
        ),
        _flat(
            "GET", "/auth/user/info", auth.user_info, auth.UserInfo, error_responses(401),
            "The user a user token, or an access token issued to an app for the user, stands for (flat)",
        ),
        _flat(
            "PUT", "/auth/user/update", auth.update_user, auth.AccountMessage,
            {
                **error_responses(400, 409, 429),
                401: {
                    "model": ErrorBody,
                    "description": "Missing or bad user token (`invalid_token`); or a new `email` asked from a session "
                    "signed in more than 5 minutes ago (`insufficient_user_authentication`, RFC 9470): sign in again, "
                    "then retry.",
                },
            },
            "Change the signed-in user's profile: any of its fields; an empty string clears one. A new `email` "
            "takes effect when the link sent to it is opened",
        ),
        _flat(
            "PUT", "/auth/user/password", auth.update_password, auth.AccountMessage,
            {
                **error_responses(400),
                401: {
                    "model": ErrorBody,
                    "description": "Missing or bad user token (`invalid_token`), or a session signed in more than "
                    "5 minutes ago (`insufficient_user_authentication`, RFC 9470): sign in again, then retry.",
                },
            },
            "Set a new password without the current one, from a session signed in within 5 minutes; "
            "every other session is signed out",
        ),
        _flat(
            "GET", "/auth/user/export", auth.export_account, auth.AccountExport,
            {
                401: {
                    "model": ErrorBody,
                    "description": "Missing or bad user token (`invalid_token`; an app's access token is not "
                    "one), or a session signed in more than 5 minutes ago (`insufficient_user_authentication`, "
                    "RFC 9470): sign in again, then retry.",
                },
            },
            "Download everything grantd holds about the signed-in account (docs/schemas/account-export.json), "
            "from a session signed in within 5 minutes",
        ),
    ),
    *_tagged(
        "OAuth",
        _neucron(
            "POST", "/oauth/authorize", neucron.authorize, neucron.CodeData, (400, 401),
            "Issue an authorization code for the signed-in user",
            hot=hot.neucron_authorize,
        ),
        _neucron(
            "PATCH", "/oauth/permissions/grant", neucron.grant_permissions, neucron.GrantedData, (400, 401),
            "Add permissions to the signed-in user's grant for an app",
        ),
        _neucron(
            "POST", "/oauth/token", neucron.token, neucron.TokenData, (400, 401, 429),
            "Exchange an authorization code for an access token",
            hot=hot.neucron_token, issues="authorization_code",
        ),
        _neucron(
            "GET", "/oauth/permissions", neucron.permission_catalog, neucron.CatalogData, None, "The permission catalog"
        ),
    ),
    # Neucron v2, as Neucron's SDK 2.x calls it: the same authorization, codes and token rule.
    _neucron_v2(
        "/oauth/authorize", neucron_v2.authorize, neucron_v2.AUTHORIZE_QUERY, neucron_v2.AUTHORIZE_SCHEMA, (400, 401),
        "Check an authorization request; the hosted page to send the user to (sign-in or sign-up, then consent)",
    ),
    _neucron_v2(
        "/oauth/token", neucron_v2.token, neucron_v2.TOKEN_QUERY, neucron_v2.TOKEN_SCHEMA, (400, 401, 429),
        "Exchange an authorization code for an access token (client_id and client_secret in the query)",
        issues="authorization_code",
    ),
    _neucron_v2(
        "/oauth/client-info", neucron_v2.client_info, neucron_v2.CLIENT_INFO_QUERY, neucron_v2.CLIENT_INFO_SCHEMA,
        (400, 404), "What anyone may see of an app before signing in",
    ),
    *_tagged(
        "Apps",
        _neucron("POST", "/apps", apps.create_app, apps.CreatedAppData, (400, 401), "Register an app"),
        _neucron("GET", "/apps", apps.list_apps, apps.AppList, (401,), "Your apps"),
        _neucron("GET", "/apps/{app_id}", apps.get_app, apps.AppData, (401, 404), "One of your apps"),
        _neucron(
            "PATCH", "/apps/{app_id}", apps.update_app, apps.AppData, (400, 401, 404),
            "Change an app's name, redirect URIs, permissions, branding or OpenID Connect settings",
        ),
        _neucron(
            "DELETE", "/apps/{app_id}", apps.disable_app, apps.AppData, (401, 404),
            "Disable an app: its keys and unredeemed codes stop working at once",
        ),
        _neucron(
            "POST", "/apps/{app_id}/keys", apps.create_key, apps.CreatedKeyData, (400, 401, 404),
            "Create an API key pair (the secret is shown once)",
        ),
        _neucron("GET", "/apps/{app_id}/keys", apps.list_keys, apps.KeyList, (401, 404), "The app's keys"),
        _neucron("DELETE", "/apps/{app_id}/keys/{key_id}", apps.revoke_key, apps.KeyData, (401, 404), "Revoke a key"),
    ),
    *_tagged(
        "Grants",
        _neucron("GET", "/grants", grants.list_grants, grants.GrantList, (401,), "Apps you granted access"),
        _neucron(
            "DELETE", "/grants/{app_id}", grants.revoke_grant, grants.RevokedData, (401, 404),
            "End an app's access: revoke every token of the grant",
        ),
    ),
    *_tagged(
        "Registration",
        _neucron(
            "POST", "/registration-tokens", registration.create_token, registration.CreatedInitialAccessTokenData,
            (400, 401), "Create an initial access token: a client registers with it at /oauth2/register (RFC 7591 "
            "§3) as an app of yours (the token is shown once)",
        ),
        _neucron(
            "GET", "/registration-tokens", registration.list_tokens, registration.InitialAccessTokenList, (401,),
            "Your initial access tokens",
        ),
        _neucron(
            "DELETE", "/registration-tokens/{token_id}", registration.revoke_token, registration.InitialAccessTokenData,
            (401, 404), "Revoke an initial access token (the apps it registered stay)",
        ),
    ),
    *_tagged(
        "Audit",
        _neucron(
            "GET", "/audit", audit.list_events, audit.AuditEventList, (400, 401),
            "Audit events about you and the apps you own, newest first",
        ),
    ),
    *_tagged(
        "Resources",
        _neucron(
            "GET", "/resources", resources.list_resources, resources.ResourceList, (401,),
            "The registered resources (RFC 8707) and the permissions each accepts",
        ),
        _neucron(
            "POST", "/resources", resources.create_resource, resources.ResourceData, (400, 401, 403, 409),
            "Register a resource (the operator's: GRANTD_RESOURCE_ADMINS)",
        ),
        _neucron(
            "DELETE", "/resources", resources.delete_resource, resources.DeletedData, (400, 401, 403, 404),
            "Delete a registered resource, named by its uri (the operator's: GRANTD_RESOURCE_ADMINS)",
        ),
    ),
)

# Any account and any app, for the accounts the operator marked as admins (grantd.api.admin).
_ADMIN_API = _tagged(
    "Admin",
    _neucron(
        "GET", "/v1/admin/users", admin.list_users, admin.AdminUserList, (400, 401, 403),
        "Accounts, newest first: filtered by email, creation time and lock, a page at a time",
    ),
    _neucron("GET", "/v1/admin/users/{user_id}", admin.get_user, admin.AdminUserData, (401, 403, 404), "One account"),
    _neucron(
        "POST", "/v1/admin/users/{user_id}/lock", admin.lock_user, admin.AdminUserData, (401, 403, 404),
        "Lock an account: it cannot sign in, and its sessions and tokens end",
    ),
    _neucron(
        "POST", "/v1/admin/users/{user_id}/unlock", admin.unlock_user, admin.AdminUserData, (401, 403, 404),
        "Unlock an account: it can sign in again",
    ),
    _neucron(
        "DELETE", "/v1/admin/users/{user_id}", admin.delete_user, admin.DeletedUser, (400, 401, 403, 404),
        "Delete an account and everything it owns",
    ),
    _neucron(
        "POST", "/v1/admin/users/{user_id}/password-reset", admin.reset_password, admin.ResetSent,
        (401, 403, 404, 429), "Mail the account's owner a link to set a new password",
    ),
    _neucron(
        "GET", "/v1/admin/users/{user_id}/sessions", admin.list_sessions, admin.SessionList, (401, 403, 404),
        "The account's live sessions",
    ),
    _neucron(
        "DELETE", "/v1/admin/users/{user_id}/sessions", admin.revoke_sessions, admin.RevokedSessions,
        (401, 403, 404), "End every session of the account",
    ),
    _neucron(
        "GET", "/v1/admin/apps", admin.list_apps, admin.AdminAppList, (400, 401, 403, 404),
        "Every app, newest first: filtered by owner, name, creation time and state, a page at a time",
    ),
    _neucron("GET", "/v1/admin/apps/{app_id}", admin.get_app, admin.AdminAppData, (401, 403, 404), "Any app"),
    _neucron(
        "POST", "/v1/admin/apps/{app_id}/disable", admin.disable_app, admin.AdminAppData, (401, 403, 404),
        "Disable an app: its keys, codes and tokens stop working at once",
    ),
    _neucron(
        "POST", "/v1/admin/apps/{app_id}/enable", admin.enable_app, admin.AdminAppData, (401, 403, 404),
        "Enable a disabled app again (no token from before comes back)",
    ),
)

_OAUTH2 = (
    _oauth2(
        "/oauth2/token", oauth2.token, oauth2.TOKEN_REQUEST, ["grant_type"], _json(oauth2.TOKEN_SCHEMA),
        "Token endpoint (RFC 6749 §3.2): authorization_code with PKCE, refresh_token, client_credentials, "
        "urn:ietf:params:oauth:grant-type:device_code (RFC 8628)",
        hot=hot.oauth2_token, issues=NOTED_GRANT, cors=CLIENT,
    ),
    _oauth2(
        "/oauth2/revoke", oauth2.revoke, oauth2.TOKEN_PARAMETER, ["token"],
        {"description": "Revoked, or was not the caller's to revoke"},
        "Token revocation (RFC 7009): access or refresh tokens of the calling app",
        response_class=Response,  # the 200 has an empty body (RFC 7009 §2.2), not JSON
        cors=CLIENT,
    ),
    _oauth2(
        "/oauth2/introspect", oauth2.introspect, oauth2.TOKEN_PARAMETER, ["token"], _json(oauth2.INTROSPECTION_SCHEMA),
        "Token introspection (RFC 7662) of the calling app's tokens",
        hot=hot.introspect,
    ),
    _oauth2(
        "/oauth2/par", oauth2.pushed_authorization_request, oauth2.PAR_REQUEST, ["response_type"],
        {"description": "Pushed: the request_uri, single-use", **_json(oauth2.PAR_SCHEMA)},
        "Pushed authorization request (RFC 9126): the request_uri to send to /oauth2/authorize",
        status=201, cors=CLIENT,
    ),
    _oauth2(
        "/oauth2/device_authorization", oauth2.device_authorization, oauth2.DEVICE_AUTHORIZATION_REQUEST, [],
        {"description": "The device code and the user code", **_json(oauth2.DEVICE_AUTHORIZATION_SCHEMA)},
        "Device authorization request (RFC 8628 §3.1): codes for a device that polls /oauth2/token while "
        "a person approves at verification_uri",
        cors=CLIENT,
    ),
    Route(
        "POST", "/oauth2/register", registration.register, REGISTRATION,
        summary="Dynamic client registration (RFC 7591), as GRANTD_DYNAMIC_REGISTRATION allows",
        tags=("OAuth 2.0", "Registration"),
        openapi_extra=registration.BODY_DOC,
        responses={201: {"description": "Registered", **_json(registration.INFORMATION_SCHEMA)}, **registration.ERRORS_DOC},
        status_code=201,
        cors=OPEN,  # bearer-authenticated (an initial access token), never by a cookie
    ),
    Route(
        "GET", "/oauth2/register/{client_id}", registration.read, REGISTRATION,
        summary="Read a registration (RFC 7592 §2.1) with its registration access token",
        tags=("OAuth 2.0", "Registration"),
        responses={200: _json(registration.INFORMATION_SCHEMA), **registration.ERRORS_DOC},
        cors=OPEN,
    ),
    Route(
        "PUT", "/oauth2/register/{client_id}", registration.update, REGISTRATION,
        summary="Replace a registration's metadata (RFC 7592 §2.2) with its registration access token",
        tags=("OAuth 2.0", "Registration"),
        openapi_extra=registration.BODY_DOC,
        responses={200: _json(registration.INFORMATION_SCHEMA), **registration.ERRORS_DOC},
        cors=OPEN,
    ),
    Route(
        "DELETE", "/oauth2/register/{client_id}", registration.delete, REGISTRATION,
        summary="Delete a registration (RFC 7592 §2.3): the app is disabled",
        tags=("OAuth 2.0", "Registration"),
        responses={204: {"description": "Deleted"}, **registration.ERRORS_DOC},
        response_class=Response,
        status_code=204,
        cors=OPEN,
    ),
    Route(
        "GET", "/.well-known/oauth-authorization-server", oauth2.metadata, NEUCRON,
        summary="Authorization server metadata (RFC 8414)",
        tags=("OAuth 2.0", "Discovery"),
        cors=OPEN,
    ),
    *(
        Route(
            method, "/oauth2/userinfo", openid.userinfo, OAUTH2,
            summary="UserInfo (OpenID Connect Core §5.3): the claims of the granted scopes; a bearer access token",
            tags=("OpenID Connect",),
            responses={
                200: _json(openid.USERINFO_SCHEMA),
                400: {"description": "invalid_request: the token sent more than one way, or in the URL; a malformed form"},
                401: {"description": "No access token, or not a live one (RFC 6750 §3.1: WWW-Authenticate)"},
                403: {"description": "insufficient_scope: the token was not granted openid"},
            },
            openapi_extra=openid.USERINFO_FORM if method == "POST" else None,
            cors=CLIENT,  # for the client the access token was issued to
        )
        for method in ("GET", "POST")
    ),
    Route(
        "GET", "/.well-known/openid-configuration", openid.configuration, NEUCRON,
        summary="OpenID Provider metadata (OpenID Connect Discovery 1.0 §4): the RFC 8414 document",
        tags=("OpenID Connect", "Discovery"),
        cors=OPEN,
    ),
)

_PAGES = (
    _page("GET", "/oauth2/authorize", web.authorize_page),
    _page("POST", "/oauth2/authorize", web.authorize_decision),
    _page("GET", "/signin", web.signin_form),
    _page("POST", "/signin", web.signin),
    _page("GET", "/second-factor", second_factor.step_form),
    _page("POST", "/second-factor", second_factor.step),
    _page("POST", "/passkeys/signin/options", passkeys.sign_in_options),
    _page("POST", "/passkeys/signin", passkeys.sign_in),
    _page("GET", "/signup", web.signup_form),
    _page("POST", "/signup", web.signup),
    _page("GET", "/password/forgot", web.forgot_form),
    _page("POST", "/password/forgot", web.forgot),
    _page("GET", "/password/reset", web.reset_form),
    _page("POST", "/password/reset", web.reset),
    _page("GET", "/email/verify", web.verify_email_form),
    _page("POST", "/email/verify", web.verify_email),
    _page("POST", "/signout", web.signout),
    _page("GET", "/device", device.code_form),  # RFC 8628 §3.3: the verification_uri
    _page("POST", "/device", device.code_entered),
    _page("GET", "/device/approve", device.approval_form),
    _page("POST", "/device/approve", device.decision),
    _page("GET", "/oauth2/logout", logout.end_session),  # RP-Initiated Logout 1.0
    _page("POST", "/oauth2/logout", logout.end_session),
    _page("POST", "/oauth2/logout/confirm", logout.confirm),
    _page("GET", "/", web.home),
    Route("GET", "/static/grantd.css", web.stylesheet, NEUCRON, hidden=True),
    Route("GET", "/static/passkeys.js", passkeys.script, NEUCRON, hidden=True),
    Route("GET", "/static/accent/{color}.css", web.accent_stylesheet, NEUCRON, hidden=True),  # an app's accent colour
    _page("GET", "/account", account.account),
    _page("POST", "/account/password", account.change_password),
    _page("POST", "/account/profile", account.update_profile),
    _page("POST", "/account/email", account.change_email),
    _page("POST", "/account/email/verify", account.send_verification),
    _page("GET", "/account/export", account.export_data),
    _page("POST", "/account/export", account.export_data_with_password),
    _page("POST", "/account/delete", account.delete_account),
    _page("GET", "/account/second-factor", second_factor.enrol_form),
    _page("POST", "/account/second-factor", second_factor.enrol_start),
    _page("POST", "/account/second-factor/confirm", second_factor.enrol_confirm),
    _page("POST", "/account/second-factor/remove", second_factor.remove),
    _page("POST", "/account/passkeys/options", passkeys.registration_options),
    _page("POST", "/account/passkeys", passkeys.register),
    _page("POST", "/account/passkeys/{credential_id}/rename", passkeys.rename),
    _page("POST", "/account/passkeys/{credential_id}/remove", passkeys.remove),
    _page("GET", "/account/apps", account.connected_apps),
    _page("POST", "/account/apps/{app_id}/revoke", account.revoke),
    # the developer console; /console/apps/new before /console/apps/{app_id}
    _page("GET", "/console", console.console),
    _page("GET", "/console/apps/new", console.new_app),
    _page("POST", "/console/apps", console.create_app),
    _page("GET", "/console/apps/{app_id}", console.app_page),
    _page("POST", "/console/apps/{app_id}", console.update_app),
    _page("POST", "/console/apps/{app_id}/disable", console.disable_app),
    _page("POST", "/console/apps/{app_id}/keys", console.create_key),
    _page("POST", "/console/apps/{app_id}/keys/{key_id}/revoke", console.revoke_key),
    _page("GET", "/console/apps/{app_id}/try", console.try_app),
    _page("GET", "/console/resources", console_resources.resources_page),
    _page("POST", "/console/resources", console_resources.create_resource),
    _page("POST", "/console/resources/delete", console_resources.delete_resource),
    _page("POST", "/console/registration-tokens", console.create_registration_token),
    _page("POST", "/console/registration-tokens/{token_id}/revoke", console.revoke_registration_token),
    # the admin pages (grantd.web.admin_pages)
    _page("GET", "/admin", admin_pages.users_page),
    _page("GET", "/admin/users/{user_id}", admin_pages.user_page),
    _page("POST", "/admin/users/{user_id}/{action}", admin_pages.user_action),
    _page("GET", "/admin/apps", admin_pages.apps_page),
    _page("POST", "/admin/apps/{app_id}/{action}", admin_pages.app_action),
)

_DISCOVERY_AND_OPERATIONS = (
    Route(
        "GET", "/.well-known/jwks.json", wellknown.jwks, NEUCRON, hot=hot.jwks_document, cors=OPEN,
        summary="Public keys of the token signatures", tags=("Discovery",), response_model=wellknown.JWKS,
    ),
    Route(
        "GET", "/healthz", ops.healthz, NEUCRON, probe=True,
        summary="Liveness: the process answers (the database is not consulted)",
        tags=("Operations",),
        responses={200: _json(ops.STATUS_SCHEMA)},
    ),
    Route(
        "GET", "/readyz", ops.readyz, NEUCRON, probe=True,
        summary="Readiness: database reachable, migrations current, a signing key active",
        tags=("Operations",),
        responses={
            200: {"description": "Ready", **_json(ops.READY_SCHEMA)},
            503: {"description": "Not ready; `checks` says which check failed", **_json(ops.READY_SCHEMA)},
        },
    ),
)

ROUTES: tuple[Route, ...] = (
    *(replace(route, path="/v1" + route.path) for route in _NEUCRON_API),
    *_NEUCRON_API,
    *_ADMIN_API,
    *_OAUTH2,
    *_PAGES,
    *_DISCOVERY_AND_OPERATIONS,
)

# Served only when GRANTD_METRICS_ENABLED is true (else on the metrics port alone, if any).
METRICS = Route("GET", "/metrics", ops.metrics_endpoint, NEUCRON, probe=True, hidden=True)


def served(settings: Settings) -> tuple[Route, ...]:
    """The routes a server with ``settings`` serves, and the preflights of those marked for CORS.
    Dynamic registration answers browsers only when the server offers it."""
    declared = (*ROUTES, METRICS) if settings.metrics_enabled else ROUTES
    if settings.dynamic_registration == "off":
        declared = tuple(
            replace(route, cors=None) if route.path.startswith("/oauth2/register") else route for route in declared
        )
    return (*declared, *preflights(declared))


def preflights(routes: Iterable[Route]) -> tuple[Route, ...]:
    """``OPTIONS`` of every path with a route marked for CORS (``grantd.api.cors.preflight``): the
    CORS preflight a browser sends before a request it may not send unasked (one with
    ``Authorization`` or ``DPoP``, or JSON). Hidden from the OpenAPI document, in the path's dialect."""
    paths: dict[str, tuple[str, list[str], Dialect]] = {}
    for route in routes:
        if route.cors is not None:
            kind, methods, _ = paths.setdefault(route.path, (route.cors, [], route.dialect))
            if kind != route.cors:
                raise ValueError(f"{route.path}: one path, one CORS kind")
            methods.append(route.method)
    return tuple(
        Route("OPTIONS", path, cors_wire.preflight(kind, tuple(methods)), dialect, hidden=True)
        for path, (kind, methods, dialect) in paths.items()
    )


# ---------------------------------------------------------------- what comes from the table


class DeclaredRoute(APIRoute):
    """A FastAPI route made from a declaration: it carries the declared dialect (for the error
    handlers, ``grantd.api.errors.Dialects``), ``issues`` and ``probe`` (for telemetry) and
    ``cors`` (for ``grantd.api.cors.CorsHeaders``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, declared: Route, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.dialect = declared.dialect
        self.issues = declared.issues
        self.probe = declared.probe
        self.cors = declared.cors  # grantd.api.cors.CorsHeaders


def register(app: FastAPI, routes: Iterable[Route]) -> None:
    """Each route as a FastAPI route of ``app``, under its whole path, in the table's order."""
    for route in routes:
        # What the table leaves unsaid is left to FastAPI's defaults.
        documented: dict[str, Any] = {
            name: value
            for name, value in (
                ("summary", route.summary),
                ("response_model", route.response_model),
                ("responses", route.responses),
                ("openapi_extra", route.openapi_extra),
                ("response_class", route.response_class),
                ("status_code", route.status_code),
            )
            if value is not None
        }
        app.router.add_api_route(
            route.path,
            route.handler,
            methods=[route.method],
            tags=list(route.tags),
            include_in_schema=not route.hidden,
            route_class_override=partial(DeclaredRoute, declared=route),  # type: ignore[arg-type]
            **documented,
        )


def hot_routes(routes: Iterable[Route]) -> dict[tuple[str, str], HotRoute]:
    """The hot dispatch: (method, path) → how to serve it, for the routes declared hot."""
    return {
        (route.method, route.path): HotRoute(
            route.path, route.hot, route.method != "GET", route.dialect, route.issues, route.cors
        )
        for route in routes
        if route.hot is not None
    }


def dialects(routes: Iterable[Route]) -> Dialects:
    """Which dialect a request's errors are answered in."""
    return Dialects((route.path, route.dialect) for route in routes)
