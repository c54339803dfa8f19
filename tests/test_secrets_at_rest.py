"""Secrets are stored only as hashes and never logged: grep the database and the server log for them.

A real server process runs the whole flow (sign up, create an app and a key, authorize, redeem,
log in again, plus a few failures), is stopped, and then every byte it left behind is searched:
on SQLite the database file and its -wal/-shm files (raw bytes, free pages included); on
PostgreSQL every row of every table, as text; and in both cases the server's log, written at
debug level. Positive controls (public ids that must be there) prove each search reads the
right place, so the test can fail.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from grantd.store.db import Database
from support.servers import ServerProcess

pytestmark = pytest.mark.db

TIMEOUT = httpx.Timeout(60.0)
REDIRECT_URI = "https://app.example.com/callback"


@dataclass
class Secrets:
    """What one run of the flow handed out: secrets (must not be stored or logged) and public ids (must be)."""

    secret: dict[str, str] = field(default_factory=dict)
    public: dict[str, str] = field(default_factory=dict)

    def needles(self) -> dict[str, list[bytes]]:
        """For each secret, the byte strings that betray it: the whole secret and its random part alone.

        The random part matters because some secrets embed public data (a key secret carries its
        key id, a JWT its header and claims); a store that kept only the random tail would still leak.
        The lowercase hex of each is included, which is how PostgreSQL renders a bytea as text.
        """
        found: dict[str, list[bytes]] = {}
        for name, value in self.secret.items():
            parts = {value}
            if name == "app_key":
                parts.add(value.removeprefix("gak_"))
            elif name == "key_secret":
                key_hex = self.public["key_id"].removeprefix("key_")
                prefix = f"gks_{key_hex}_"
                assert value.startswith(prefix), value
                parts.add(value[len(prefix):])
            elif value.count(".") == 2:  # a JWT: its signature alone identifies it
                parts.add(value.rsplit(".", 1)[1])
            for part in list(parts):
                assert len(part) >= 16, (name, part)  # long enough that a chance match is impossible
            byte_forms = [p.encode() for p in parts]
            byte_forms += [p.encode().hex().encode() for p in parts]
            found[name] = byte_forms
        return found


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()["data"]


async def _exercise(server: ServerProcess) -> Secrets:
    """The whole flow over HTTP, keeping every secret the server hands out or is sent."""
    s = Secrets()
    email = f"rest-{uuid.uuid4().hex[:12]}@example.com"
    s.secret["password"] = "pw-" + secrets.token_urlsafe(24)
    s.secret["wrong_password"] = "wrong-pw-" + secrets.token_urlsafe(24)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        data = _ok(await client.post("/v1/auth/signup", json={"email": email, "password": s.secret["password"]}))
        s.public["user_id"] = data["user_id"]
        s.secret["signup_user_token"] = user_token = data["access_token"]
        auth = {"Authorization": f"Bearer {user_token}"}

        data = _ok(
            await client.post(
                "/v1/apps",
                json={"name": "Rest App", "redirect_uris": [REDIRECT_URI], "permissions": "read_profile,write_data"},
                headers=auth,
            )
        )
        s.public["app_id"], s.secret["app_key"] = data["app_id"], data["app_key"]

        data = _ok(await client.post(f"/v1/apps/{s.public['app_id']}/keys", headers=auth))
        s.public["key_id"], s.secret["key_secret"] = data["key_id"], data["key_secret"]

        params = {
            "app_id": s.public["app_id"],
            "app_key": s.secret["app_key"],
            "state": "state-at-rest",
            "redirect_uri": REDIRECT_URI,
            "permissions": "read_profile,write_data",
        }
        data = _ok(await client.post("/oauth/authorize", json={"token": params}, headers=auth))
        s.secret["code"] = data["code"]

        token_body = {
            "token": {"auth_code": s.secret["code"], "key_id": s.public["key_id"], "key_secret": s.secret["key_secret"]}
        }
        data = _ok(await client.post("/oauth/token", json=token_body))
        s.secret["access_token"] = data["access_token"]
        if data.get("refresh_token"):  # extra fields are allowed; a refresh token is a secret too
            s.secret["refresh_token"] = data["refresh_token"]

        data = _ok(await client.post("/v1/auth/login", json={"email": email, "password": s.secret["password"]}))
        s.secret["login_user_token"] = data["access_token"]

        # A retry of the redemption answers the same token again (another code path).
        assert _ok(await client.post("/oauth/token", json=token_body))["access_token"].split(".")[1] == (
            s.secret["access_token"].split(".")[1]
        )
        # Failures take other code paths (error rendering, logging): they must not leak either. A
        # replay: the code presented by another key of the app.
        data = _ok(await client.post(f"/v1/apps/{s.public['app_id']}/keys", headers=auth))
        s.public["spare_key_id"], s.secret["spare_key_secret"] = data["key_id"], data["key_secret"]
        spare = {"token": {**token_body["token"], "key_id": data["key_id"], "key_secret": data["key_secret"]}}
        replay = await client.post("/oauth/token", json=spare)
        assert replay.status_code == 401 and replay.json()["error"] == "invalid_grant", replay.text
        wrong = await client.post("/v1/auth/login", json={"email": email, "password": s.secret["wrong_password"]})
        assert wrong.status_code == 401, wrong.text
        bad_key = await client.post(
            "/oauth/token",
            json={"token": {**token_body["token"], "key_secret": s.secret["key_secret"][:-4] + "AAAA"}},
        )
        assert bad_key.status_code == 401 and bad_key.json()["error"] == "invalid_client", bad_key.text
    s.public["email"] = email
    return s


def _leaks(haystack: bytes, found: dict[str, list[bytes]]) -> list[str]:
    return [name for name, forms in found.items() if any(form in haystack for form in forms)]


def _check_log(server: ServerProcess, s: Secrets) -> None:
    log = server.log_path.read_bytes()
    # Positive control: the access log names the key-creation path, which carries the app id.
    assert s.public["app_id"].encode() in log, "the server log does not show the requests: wrong file?"
    assert b"/oauth/token" in log
    leaked = _leaks(log, s.needles())
    assert not leaked, f"secrets in the server log {server.log_path}: {leaked}"


async def test_sqlite_file_and_log_hold_no_secret(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    db_path = tmp_path / "g.db"
    server = server_factory(f"sqlite+aiosqlite:///{db_path}", env={"GRANTD_LOG_LEVEL": "debug"})
    s = await _exercise(server)
    server.stop()  # the last connection closes: the WAL is checkpointed into the main file
    assert server.process.returncode is not None

    files = [p for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")) if p.exists()]
    stored = b"".join(p.read_bytes() for p in files)
    assert db_path.stat().st_size > 0
    # Positive controls: public identifiers are in the database, so this is the right file.
    for name in ("app_id", "key_id", "user_id", "email"):
        assert s.public[name].encode() in stored, f"{name} not found in {[str(p) for p in files]}: wrong file?"

    leaked = _leaks(stored, s.needles())
    assert not leaked, f"secrets stored in {[str(p) for p in files]}: {leaked}"
    _check_log(server, s)

    # Anything else the server wrote next to them (it has its own data dir here) must be clean too.
    for other in tmp_path.rglob("*"):
        if other.is_file():
            assert not _leaks(other.read_bytes(), s.needles()), f"secrets in {other}"


async def test_postgres_rows_and_log_hold_no_secret(postgres_url: str, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(postgres_url, env={"GRANTD_LOG_LEVEL": "debug"})
    s = await _exercise(server)
    server.stop()

    db = Database(postgres_url)
    try:
        async with db.read() as conn:
            tables = (
                await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
                    )
                )
            ).scalars().all()
            assert {"users", "apps", "app_keys", "authorization_codes", "refresh_tokens", "revoked_access_tokens", "user_sessions"} <= set(tables)
            rows: dict[str, list[str]] = {}
            for table in tables:
                quoted = '"' + table.replace('"', '""') + '"'
                rows[table] = list((await conn.execute(text(f"SELECT t::text FROM {quoted} t"))).scalars().all())
    finally:
        await db.dispose()

    stored = "\n".join(row for table_rows in rows.values() for row in table_rows).encode()
    # Positive controls: the public ids are in the rows searched.
    for name in ("app_id", "key_id", "user_id", "email"):
        assert s.public[name].encode() in stored, f"{name} not found in any row: the search reads the wrong place"
    assert any(s.public["key_id"] in row for row in rows["app_keys"])

    found = s.needles()
    leaked = {
        table: names for table, table_rows in rows.items() if (names := _leaks("\n".join(table_rows).encode(), found))
    }
    assert not leaked, f"secrets stored in PostgreSQL rows: {leaked}"
    _check_log(server, s)
