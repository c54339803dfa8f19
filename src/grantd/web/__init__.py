"""The hosted HTML pages: sign-up, sign-in, sign-out, consent for the standard OAuth 2.0 authorization
code flow, the account and connected apps, and the developer console.

A dialect like ``grantd.api``: it parses the wire (query strings, form posts, cookies),
calls the use cases in ``grantd.core`` and renders an HTML page or a redirect; its errors are
pages (``grantd.web.pages.render_error``). The OAuth rules themselves live in
``grantd.core.authorization``; the routes are declared in ``grantd.routes``.
"""
