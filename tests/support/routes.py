"""Every route of the app, derived from the app itself (its ``routes``), never from a list kept by hand:
a route added to grantd is in every test that walks them (the error tests, the OpenAPI tests).
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from grantd.api.deps import account_holder, current_user
from grantd.api.envelope import Envelope


def api_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    """(method, path, route) of every API route, with router prefixes applied."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were kept as wrappers
        return [(m, r.path, r) for r in app.routes if isinstance(r, APIRoute) for m in sorted(r.methods)]
    return [
        (m, context.path, context.original_route)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        for m in sorted(context.methods)
    ]


def documented_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    """The API routes that /openapi.json documents."""
    return [(m, p, r) for m, p, r in api_routes(app) if r.include_in_schema]


def neucron_paths(app: Any) -> set[str]:
    """The Neucron routes: those served both at the root and under /v1 in the Neucron dialect (a
    page at the root, such as /admin/users/{user_id} beside the admin API's /v1/admin/…, is not one)."""
    from grantd.routes import NEUCRON, ROUTES

    neucron = {route.path for route in ROUTES if route.dialect is NEUCRON}
    paths = {path for _, path, _ in api_routes(app) if path in neucron or "/v1" + path in neucron}
    return {p for p in paths if "/v1" + p in paths and p in neucron} | {"/v1" + p for p in paths if "/v1" + p in paths and p in neucron}


def needs_user(route: APIRoute) -> bool:
    """Whether the route asks for a user's token: ``current_user`` (or ``account_holder``, which also
    takes an access token issued for a user) is among its dependencies, at any depth."""
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if dependency.call in (current_user, account_holder):
            return True
        stack.extend(dependency.dependencies)
    return False


def takes_access_token(route: APIRoute) -> bool:
    """Whether the route also takes an access token an app was issued for a user (``account_holder``:
    ``GET /auth/user/info``, which Neucron's v2 SDK calls with the token of the code exchange)."""
    return any(dependency.call is account_holder for dependency in route.dependant.dependencies)


def flat_success(route: APIRoute) -> bool:
    """Whether the route's 200 is its body itself rather than the envelope (Neucron's v2 SDK calls)."""
    model = route.response_model
    return isinstance(model, type) and not issubclass(model, Envelope)
