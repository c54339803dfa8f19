"""What a server process imports before it serves: the libraries that only some requests need stay
out of it until such a request comes (bench/README.md, "Start-up and memory per worker")."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from support.servers import free_port, wait_until_answers

# Each is imported where it is needed: a passkey ceremony (webauthn, with pyOpenSSL, pyasn1 and
# cbor2), a jwks_uri or client ID metadata document fetched (httpx, httpcore), a page or a message
# rendered (jinja2), a QR code drawn (segno), a Redis configured (redis), a database of that kind
# (asyncpg and SQLAlchemy's PostgreSQL dialect, aiosqlite), Alembic and tests (SQLAlchemy's asyncio
# extension and its ORM).
LAZY = (
    "webauthn", "OpenSSL", "pyasn1", "cbor2", "httpx", "httpcore", "rich", "jinja2", "segno", "redis",
    "asyncpg", "sqlalchemy.dialects.postgresql", "aiosqlite", "jsonschema", "alembic", "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
)
# What only a server on PostgreSQL needs: its driver, and SQLAlchemy's dialect, whose import brings
# every PostgreSQL driver module SQLAlchemy has (~2 MB).
POSTGRESQL = ("asyncpg", "sqlalchemy.dialects.postgresql")


def test_a_server_process_imports_none_of_what_only_some_requests_need() -> None:
    code = (
        "import sys\n"
        "import grantd.cli, grantd.server\n"
        f"print(sorted(m for m in {LAZY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_a_server_on_sqlite_never_imports_what_only_postgresql_needs(tmp_path: Path) -> None:
    """A real `grantd serve` on a new SQLite file, from its start (the migration runs in a child
    process of its own) through a few requests to its shutdown."""
    code = (
        "import atexit, runpy, signal, sys\n"
        # uvicorn, having shut down on SIGTERM, raises it again: exit then, through atexit.
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"atexit.register(lambda: print('loaded:', sorted(m for m in {POSTGRESQL!r} if m in sys.modules), flush=True))\n"
        "sys.argv = ['grantd', 'serve', '--port', sys.argv[1]]\n"
        "runpy.run_module('grantd', run_name='__main__', alter_sys=True)\n"
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    environment = {
        **os.environ,
        "GRANTD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'grantd.db'}",
        "GRANTD_SECRET_KEY": secrets.token_urlsafe(32),
        "GRANTD_DATA_DIR": str(tmp_path),
        "GRANTD_ISSUER": base_url,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(port)], stdout=log, stderr=subprocess.STDOUT, env=environment,
            start_new_session=True,
        )
    try:
        wait_until_answers(f"{base_url}/.well-known/jwks.json", process, log_path, seconds=30, what="grantd serve")
        assert httpx.get(f"{base_url}/readyz").status_code == 200
        assert httpx.get(f"{base_url}/.well-known/openid-configuration").status_code == 200
        refused = httpx.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials"}, auth=("nobody", "x"))
        assert refused.status_code == 401, refused.text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "loaded: []" in log_path.read_text(), log_path.read_text()
