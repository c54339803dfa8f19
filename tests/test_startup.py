"""What a server process imports before it serves: the libraries that only some requests need stay
out of it until such a request comes (bench/README.md, "Start-up and memory per worker")."""

from __future__ import annotations

import subprocess
import sys

# Each is imported where it is needed: a passkey ceremony (webauthn, with pyOpenSSL, pyasn1 and
# cbor2), a jwks_uri or client ID metadata document fetched (httpx, httpcore), a page or a message
# rendered (jinja2), a QR code drawn (segno), a Redis configured (redis), a database of that kind
# (asyncpg, aiosqlite), Alembic and tests (SQLAlchemy's asyncio extension and its ORM).
LAZY = (
    "webauthn", "OpenSSL", "pyasn1", "cbor2", "httpx", "httpcore", "rich", "jinja2", "segno", "redis",
    "asyncpg", "aiosqlite", "jsonschema", "alembic", "sqlalchemy.orm", "sqlalchemy.ext.asyncio",
)


def test_a_server_process_imports_none_of_what_only_some_requests_need() -> None:
    code = (
        "import sys\n"
        "import grantd.cli, grantd.server\n"
        f"print(sorted(m for m in {LAZY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
