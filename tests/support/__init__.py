"""Plain helpers shared by the test modules: no fixtures (those are in tests/conftest.py), no tests.

Each module is named by what it helps with:

- ``neucron``: the Neucron dialect from a client's side: accounts, ``Flow`` (an app, its key and a user), the answers' shapes.
- ``databases``: PostgreSQL's admin connection, creating and dropping databases, migrating one.
- ``servers``: real `grantd serve` processes, alone or two as one deployment, and what is asked of them.
- ``dpop``: DPoP from a client's side: a key pair, its thumbprint and proofs; a code redeemed with a proof.
- ``interop``: a real server's app and user for a third-party OAuth 2.0 client library.
- ``routes``: every route of the app, derived from the app itself.
- ``resolver``: test host names (``*.rebind.test``) resolving to the addresses a test chooses.

Their asserts are rewritten by pytest as the tests' own are (conftest registers the package).
"""
