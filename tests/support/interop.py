"""A real grantd server's app and user, for a third-party OAuth 2.0 client library (Authlib, oauth4webapi).

The server and its developer are the fixtures ``interop_server`` and ``interop_dev`` (tests/conftest.py).
Here: the scope and the client authentication methods each library is tried with, the app registered
for one of those methods, and the user's side: signing in and consenting on the hosted pages over HTTP.
"""

from __future__ import annotations

import httpx

from acting_user import ActingUser, new_app
from support.neucron import PASSWORD, Flow

SCOPE = "read_profile write_data"
# Each library is tried once for each: two confidential clients, and a public one (PKCE alone).
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


async def app_for(dev: Flow, auth_method: str) -> Flow:
    """A new app of ``dev`` for ``auth_method`` (a public client for "none", else a confidential one), with
    one key; its end user is dev's (``user_id``, and ``extra["email"]`` to sign in with)."""
    return await new_app(dev, client_type="public" if auth_method == "none" else "confidential")


async def consent(flow: Flow, authorization_url: str) -> str:
    """The flow's end user, in a browser of their own, signs in and allows on the hosted pages;
    returns the redirect to ``flow.redirect_uri`` (not fetched)."""
    async with httpx.AsyncClient(timeout=10) as browser:
        return await ActingUser(browser, flow.extra["email"], PASSWORD).authorize(authorization_url, flow.redirect_uri)
