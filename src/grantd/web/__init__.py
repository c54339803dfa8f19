"""The hosted HTML pages: sign-up, sign-in, sign-out, consent for the standard OAuth 2.0 authorization
code flow, the account and connected apps.

A dialect like ``grantd.api``: it parses the wire (query strings, form posts, cookies),
calls the use cases in ``grantd.core`` and renders an HTML page or a redirect. The OAuth
rules themselves live in ``grantd.core.authorization``.
"""

from __future__ import annotations

from grantd.web import account
from grantd.web.pages import is_page, render_error
from grantd.web.routes import router

router.include_router(account.router)

__all__ = ["is_page", "render_error", "router"]
