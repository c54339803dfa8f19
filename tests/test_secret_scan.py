"""After the whole suite: no secret, password, code or token it created is in any log line or
database column in clear (issue 6).

tests/secret_harvest.py keeps every secret the suite creates or sends and lists the places;
the last test of the run searches them all. The scanner is tested first on planted secrets,
so a clean result means the secrets are absent, not that the search looked nowhere.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest

from grantd.config import Settings
from secret_harvest import (
    HARVEST,
    ROOT,
    Scanner,
    files_to_scan,
    flush_log,
    iter_secrets,
    logged_records_path,
    public_values_sent_as_secrets,
    report,
)
from support.databases import PG_ADMIN_DSN, pg_execute, postgres_available
from support.neucron import PASSWORD, Flow, new_flow

# A run of the whole suite harvests thousands; a floor well below that catches a harvest that broke.
WHOLE_SUITE_FLOOR = 300
WHOLE_SUITE_KIND_FLOORS = {
    "password": 3,
    "user_token": 50,
    "app_key": 50,
    "key_secret": 50,
    "code": 50,
    "access_token": 50,
    "refresh_token": 10,
}


def _harvested(flow: Flow, *values: str) -> None:
    missing = [value[:8] for value in (flow.app_key, flow.key_secret, flow.user_token, *values) if value not in HARVEST.secrets]
    assert not missing, f"the harvest missed secrets of this very test: {missing}"


# ---------------------------------------------------------------- the scanner can fail


async def test_the_scanner_finds_secrets_planted_in_a_log_line_and_a_database_column(flow: Flow) -> None:
    """Planted outside pytest's temporary directory (and removed), so the final scan never meets them."""
    _harvested(flow, PASSWORD)
    tail = flow.key_secret.split("_", 2)[2]
    with tempfile.TemporaryDirectory() as planted:
        root = Path(planted)
        log = root / "server-1.log"
        log.write_text(
            '{"event":"request","path":"/v1/me","level":"info"}\n'
            f'{{"event":"request","query":"password={quote_plus(PASSWORD)}","level":"info"}}\n'
            f'{{"event":"failed","client_secret":"{flow.key_secret}","level":"info"}}\n'
        )
        (root / "clean.log").write_text('{"event":"request","path":"/v1/me","level":"info"}\n')
        database = root / "g.db"
        with sqlite3.connect(database) as conn:
            conn.execute("CREATE TABLE sessions (id TEXT, token TEXT, note TEXT)")
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (flow.user_id, flow.user_token, "a user token in clear"))
            conn.execute("CREATE TABLE app_keys (id TEXT, secret_tail TEXT)")
            conn.execute("INSERT INTO app_keys VALUES (?, ?)", (flow.key_id, tail))  # its random part alone
        clean = root / "clean.db"
        with sqlite3.connect(clean) as conn:
            conn.execute("CREATE TABLE t (id TEXT)")
            conn.execute("INSERT INTO t VALUES (?)", (flow.user_id,))

        databases, logs = files_to_scan([root])
        assert database in databases and clean in databases and set(logs) == {log, root / "clean.log"}
        scanner = Scanner(iter_secrets(), controls={"user_id": flow.user_id})
        findings = [f for path in [*databases, *logs] for f in scanner.scan_file(path)]

    by_place = {(Path(f.place).name, f.kind, f.form) for f in findings}
    assert by_place == {
        ("server-1.log", "password", "form-encoded"),
        ("server-1.log", "key_secret", "plain, random part"),
        ("g.db", "user_token", "plain, random part"),
        ("g.db", "key_secret", "random part"),
    }, findings
    assert str(clean) in scanner.seen["user_id"]  # the clean database was read, and holds no secret
    for finding in findings:  # a report names a secret by its prefix, never in full
        assert flow.key_secret not in str(finding) and flow.user_token not in str(finding) and tail not in str(finding)


@pytest.mark.db
async def test_the_scanner_finds_a_secret_planted_in_a_postgres_column(flow: Flow) -> None:
    reason = await asyncio.to_thread(postgres_available)
    if reason:
        pytest.skip(reason)
    _harvested(flow)
    name = f"grantd_planted_{secrets.token_hex(6)}"  # a throwaway database, not registered for the final scan

    await pg_execute(f'CREATE DATABASE "{name}"')
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}")
        try:
            await conn.execute("CREATE SCHEMA app; CREATE TABLE app.keys (id text, secret bytea, note text)")
            await conn.execute("INSERT INTO app.keys VALUES ($1, $2, 'a key secret as bytea')", flow.key_id, flow.key_secret.encode())
            await conn.execute("CREATE TABLE public.clean (id text)")
            await conn.execute("INSERT INTO public.clean VALUES ($1)", flow.key_id)
        finally:
            await conn.close()
        scanner = Scanner(iter_secrets(), controls={"key_id": flow.key_id})
        findings, rows = await scanner.scan_postgres(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
    finally:
        await pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert rows == {"app.keys": 1, "public.clean": 1}
    assert [(f.place, f.kind, f.form) for f in findings] == [(f"postgres {name} app.keys", "key_secret", "hex")], findings
    assert scanner.seen["key_id"] == {f"postgres {name} app.keys", f"postgres {name} public.clean"}


# ---------------------------------------------------------------- the whole suite


@pytest.mark.db
@pytest.mark.secret_scan_last
async def test_no_secret_the_suite_created_is_in_any_log_line_or_database_column(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    # A flow of its own, so that even alone this test has secrets of every kind to look for.
    flow = await new_flow(client)
    code = await flow.code()
    redeemed = await flow.redeem(code)
    assert redeemed.status_code == 200, redeemed.text
    own_token = await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(flow.app_id, flow.key_secret))
    assert own_token.status_code == 200, own_token.text
    _harvested(flow, PASSWORD, code, redeemed.json()["data"]["access_token"], own_token.json()["access_token"])

    # Every place: the files the suite left (databases, server logs, this process's log, CLI stderr) ...
    flush_log()
    assert HARVEST.base_temp is not None
    databases, logs = files_to_scan([HARVEST.base_temp])
    var_databases, var_logs = files_to_scan([ROOT / "var"], since=HARVEST.started)
    databases, logs = databases + var_databases, logs + var_logs
    harvested = list(iter_secrets())
    scanner = Scanner(harvested, controls={"app_id": flow.app_id})
    findings = [finding for path in [*databases, *logs] for finding in await asyncio.to_thread(scanner.scan_file, path)]
    # ... and every PostgreSQL database the suite created, still there until the session ends.
    tables = rows = 0
    for url in HARVEST.postgres_urls:
        found, read = await scanner.scan_postgres(url)
        findings += found
        tables, rows = tables + len(read), rows + sum(read.values())

    # Positive controls: the scan read the session's database and this process's log.
    seen = scanner.seen["app_id"]
    if settings.database_url.startswith("sqlite"):
        session_db = Path(settings.database_url.split(":///", 1)[1])
        assert str(session_db) in seen or f"{session_db}-wal" in seen, f"the app id is not in the session database: {seen}"
    else:
        name = settings.database_url.rsplit("/", 1)[1]
        assert any(place.startswith(f"postgres {name} ") for place in seen), f"the app id is in no PostgreSQL row: {seen}"
    assert str(logged_records_path()) in seen, "this process's log does not show the requests: wrong file?"

    counts = HARVEST.counts()
    size = sum(p.stat().st_size for p in [*databases, *logs] if p.exists())
    server_logs = [p for p in logs if p.name.startswith("server-")]
    other_logs = len(logs) - len(server_logs)
    report(
        f"{len(harvested)} secrets harvested ({', '.join(f'{kind} {n}' for kind, n in counts.most_common())}; "
        f"first seen in a {', '.join(f'{source} {n}' for source, n in HARVEST.sources().most_common())}); "
        f"{'whole suite' if HARVEST.whole_suite else 'selection: ' + (HARVEST.selection or 'some tests')}; "
        f"{public_values_sent_as_secrets()} values a test sent both as public (a PKCE challenge, a state) and in a "
        "secret's place left out"
    )
    report(
        f"searched {scanner.needles} forms of them in {len(databases)} SQLite files, {len(logs)} log files "
        f"({len(server_logs)} of server processes, {other_logs} others: this process's records, the CLI's stderr, "
        f"resource servers) — {size / 1e6:.1f} MB — "
        f"and {len(HARVEST.postgres_urls)} PostgreSQL databases ({tables} tables, {rows} rows): {len(findings)} found"
    )

    assert not findings, f"{len(findings)} secrets in clear:\n" + "\n".join(str(f) for f in findings[:60])
    if HARVEST.whole_suite:
        assert len(harvested) >= WHOLE_SUITE_FLOOR, counts
        low = {kind: counts[kind] for kind, floor in WHOLE_SUITE_KIND_FLOORS.items() if counts[kind] < floor}
        assert not low, f"the whole suite harvested too few of these kinds: {low}"
        assert len(server_logs) >= 10, "the whole suite starts dozens of server processes: their logs were not found"
