"""The developer console's page of the registered resources (RFC 8707): ``/console/resources``.

Everyone signed in sees the list (the resources this server issues tokens for under
``GRANTD_RESOURCE_POLICY=registered``, and the permissions each accepts); the users
``GRANTD_RESOURCE_ADMINS`` names also see the form that registers one and a Delete button on each.
The rules are ``grantd.core.resources``', the same behind ``/v1/resources`` and ``grantd resources``.

- ``GET  /console/resources``          the list, and the form for an admin
- ``POST /console/resources``          register one (a refused field shown next to it, status 400)
- ``POST /console/resources/delete``   delete the one named by ``uri``
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from grantd.core import resources
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import Forbidden, GrantdError, NotFound
from grantd.web.console import _catalog, _posted, _render, _signed_in
from grantd.web.pages import error_page, redirect

PAGE = "/console/resources"


async def _page(
    ctx: Context, principal: Principal, status_code: int = 200, *, form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    return _render(
        "console_resources.html", principal, ctx, status_code,
        resources=await resources.list_all(ctx),
        may_manage=resources.may_manage(ctx, principal.user_id),
        policy=resources.policy(ctx),
        catalog=_catalog(ctx),
        form=form or {"uri": "", "permissions": [], "description": ""},
        errors=errors or {},
    )


def _refused(exc: Forbidden) -> Response:
    return error_page(403, "Only the operator registers resources", exc.message, link=(PAGE, "Resources"))


async def resources_page(request: Request) -> Response:
    principal = await _signed_in(request)
    if isinstance(principal, Response):
        return principal
    return await _page(request.app.state.ctx, principal)


async def create_resource(request: Request) -> Response:
    posted = await _posted(request, PAGE)
    if isinstance(posted, Response):
        return posted
    principal, form = posted
    ctx: Context = request.app.state.ctx
    values = {
        "uri": (form.one("uri") or "").strip(),
        "permissions": form.all("permissions"),
        "description": form.one("description") or "",
    }
    try:
        await resources.create(
            ctx, values["uri"], ",".join(values["permissions"]), values["description"], user_id=principal.user_id,
            address=request.client.host if request.client else None,
        )
    except Forbidden as exc:
        return _refused(exc)
    except GrantdError as exc:
        if exc.status_code >= 500:
            raise
        field = getattr(exc, "field", None) or ("permissions" if exc.error == "invalid_scope" else "form")
        if not values["permissions"] and field == "form" and exc.error == "invalid_request":
            field = "permissions"
        return await _page(ctx, principal, 400, form=values, errors={field: exc.message})
    return redirect(PAGE)


async def delete_resource(request: Request) -> Response:
    posted = await _posted(request, PAGE)
    if isinstance(posted, Response):
        return posted
    principal, form = posted
    ctx: Context = request.app.state.ctx
    try:
        await resources.delete(
            ctx, form.one("uri") or "", user_id=principal.user_id, address=request.client.host if request.client else None
        )
    except Forbidden as exc:
        return _refused(exc)
    except NotFound as exc:
        return error_page(404, "Resource not found", exc.message, link=(PAGE, "Resources"))
    return redirect(PAGE)
