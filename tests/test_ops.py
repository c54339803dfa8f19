"""Operations: health and readiness, Prometheus metrics, structured logs without secrets,
`grantd config show`, and a deployment of two processes on one PostgreSQL database.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from grantd import logs
from grantd.config import Settings
from grantd.sdk import TokenVerifier
from grantd.server import create_app
from grantd.store.db import Database
from grantd.store.migrate import upgrade
from grantd.telemetry import RequestTelemetry
from support.neucron import PASSWORD, new_flow, unique_email
from support.servers import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def sample(exposition: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition; 0 when absent."""
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


# ---------------------------------------------------------------- an app of its own, in-process


@pytest.fixture
async def own_app(tmp_path: Path, secret_key: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The app on a fresh SQLite database, metrics on: the readiness tests may break its database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"
    db = Database(url)
    await upgrade(db)
    await db.dispose()
    settings = Settings(
        database_url=url, secret_key=secret_key, data_dir=tmp_path, issuer="http://testserver", metrics_enabled=True
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield application, client


# ---------------------------------------------------------------- health and readiness


async def test_healthz_and_readyz_answer_when_all_is_well(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "writable": "ok", "signing_key": "ok"}}
    assert ready.headers["cache-control"] == "no-store"


async def test_readyz_says_which_check_fails(own_app: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = own_app
    ctx = app.state.ctx

    async with ctx.db.write() as tx:
        (revision,) = (await tx.execute(text("SELECT version_num FROM alembic_version"))).one()
        await tx.execute(text("UPDATE alembic_version SET version_num = 'an_older_revision'"))
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"database": "ok", "migrations": "not_current", "writable": "ok", "signing_key": "ok"},
    }
    async with ctx.db.write() as tx:
        await tx.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    assert (await client.get("/readyz")).status_code == 200

    async with ctx.db.write() as tx:
        await tx.execute(text("UPDATE signing_keys SET retired_at = :t"), {"t": int(time.time()) - 1})
    response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["signing_key"] == "none_active"

    working, ctx.db = ctx.db, Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing")
    try:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": "unreachable", "migrations": "unchecked", "writable": "unchecked", "signing_key": "unchecked"}
        # Liveness does not consult the database.
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await ctx.db.dispose()
        ctx.db = working


async def test_operations_routes_are_in_the_openapi_document_but_metrics_is_not(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/healthz" in paths and "/readyz" in paths and "503" in paths["/readyz"]["get"]["responses"]
    assert "/metrics" not in paths


# ---------------------------------------------------------------- request ids


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    generated = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3 and all(len(r) == 32 and int(r, 16) >= 0 for r in generated)

    for incoming in ("7f3c9a2e-1d2b-4c5d-9e8f-0a1b2c3d4e5f", "lb.42:abc_DEF"):
        assert (await client.get("/healthz", headers={"X-Request-ID": incoming})).headers["x-request-id"] == incoming
    for insane in ("x" * 200, "two words", "a\tb", ""):
        returned = (await client.get("/healthz", headers={"X-Request-ID": insane})).headers["x-request-id"]
        assert returned != insane and len(returned) == 32
    # Errors, from any dialect, carry it too.
    assert (await client.get("/no/such/route")).headers["x-request-id"]
    assert (await client.post("/oauth2/token", data={})).headers["x-request-id"]


async def test_a_crash_gets_a_500_with_its_request_id_and_a_log_record_naming_it(
    own_app: tuple[Any, httpx.AsyncClient],
) -> None:
    app, _ = own_app

    async def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/crash-for-the-test", crash)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    logger = logging.getLogger("grantd")
    logger.addHandler(handler)
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/crash-for-the-test", headers={"X-Request-ID": "crash-42"})
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500 and response.json()["error"] == "server_error"
    assert response.headers["x-request-id"] == "crash-42"
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    (crashed,) = [r for r in records if r["event"].startswith("unhandled error")]
    assert crashed["request_id"] == "crash-42" and "RuntimeError: a bug" in crashed["exception"]


# ---------------------------------------------------------------- metrics


async def test_metrics_are_off_unless_enabled(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 404


async def test_metrics_count_requests_tokens_and_errors(own_app: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = own_app
    before = (await client.get("/metrics")).text

    flow = await new_flow(client)
    for _ in range(2):
        assert (await flow.redeem(await flow.code())).status_code == 200  # Neucron: authorization_code
    code = await flow.code()
    basic = {"Authorization": "Basic " + base64.b64encode(f"{flow.app_id}:{flow.key_secret}".encode()).decode()}
    issued = await client.post(
        "/oauth2/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri}, headers=basic
    )
    assert issued.status_code == 200, issued.text
    refreshed = await client.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": issued.json()["refresh_token"]}, headers=basic
    )
    assert refreshed.status_code == 200, refreshed.text
    for _ in range(3):
        own = await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic)
        assert own.status_code == 200, own.text
    assert (await flow.redeem(code)).status_code == 401  # invalid_grant: the code is spent
    assert (await client.get(f"/v1/apps/{flow.app_id}", headers={"Authorization": "Bearer nonsense"})).status_code == 401

    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("grantd_tokens_issued_total", grant_type="authorization_code") == 3
    assert delta("grantd_tokens_issued_total", grant_type="refresh_token") == 1
    assert delta("grantd_tokens_issued_total", grant_type="client_credentials") == 3
    assert delta("grantd_errors_total", error="invalid_grant") == 1
    assert delta("grantd_errors_total", error="invalid_token") == 1
    assert delta("grantd_http_requests_total", method="POST", route="/oauth/token", status="200") == 2
    assert delta("grantd_http_requests_total", method="POST", route="/oauth/token", status="401") == 1
    assert delta("grantd_http_requests_total", method="GET", route="/v1/apps/{app_id}", status="401") == 1
    assert delta("grantd_http_request_duration_seconds_count", method="POST", route="/oauth2/token") == 5
    assert "grantd_db_pool_checked_out" in after and sample(after, "grantd_db_pool_size") >= 1
    assert "process_cpu_seconds_total" in after
    assert sample(after, "grantd_http_requests_total", route="/v1/apps/" + flow.app_id) == 0, "routes are templates"


async def test_rate_limit_hits_are_counted_by_route() -> None:
    async def limited(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = type("Route", (), {"path": "/v1/auth/login"})()
        await send({"type": "http.response.start", "status": 429, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    from grantd import metrics

    before = metrics.rate_limited.labels("/v1/auth/login")._value.get()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=RequestTelemetry(limited)), base_url="http://t") as c:
        assert (await c.post("/v1/auth/login")).status_code == 429
    assert metrics.rate_limited.labels("/v1/auth/login")._value.get() == before + 1


@pytest.mark.db
def test_metrics_are_summed_over_workers(tmp_path: Path, server_factory: Callable[..., ServerProcess]) -> None:
    metrics_port = free_port()
    server = server_factory(
        f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}",
        workers=2,
        env={"GRANTD_METRICS_ENABLED": "true", "GRANTD_METRICS_PORT": str(metrics_port), "GRANTD_LOG_LEVEL": "debug"},
    )
    requests = 40
    for _ in range(requests):  # a new connection each: the kernel spreads them over the workers
        assert httpx.get(f"{server.base_url}/v1/oauth/permissions", timeout=10).status_code == 200
    labels = {"method": "GET", "route": "/v1/oauth/permissions", "status": "200"}
    for url in [f"{server.base_url}/metrics"] * 4 + [f"http://127.0.0.1:{metrics_port}/metrics"]:
        exposition = httpx.get(url, timeout=10).text
        assert sample(exposition, "grantd_http_requests_total", **labels) == requests, url
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    served_by = {line["pid"] for line in lines if line.get("route") == "/v1/oauth/permissions"}
    assert len(served_by) == 2, f"both workers should have served requests: {served_by}"


@pytest.mark.db
def test_each_worker_listens_on_a_socket_of_its_own(tmp_path: Path, server_factory: Callable[..., ServerProcess]) -> None:
    """With one listening socket shared by the workers, whichever woke first accepted a whole burst of
    keep-alive connections (3 to 1 was measured with two workers) and kept them. Each worker has its
    own (SO_REUSEPORT), so the kernel spreads connections over them; a worker that dies takes only its
    own socket with it, and the supervisor keeps the address."""
    server = server_factory(f"sqlite+aiosqlite:///{tmp_path / 'listen.db'}", workers=2, env={"GRANTD_LOG_LEVEL": "debug"})
    port = int(server.base_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 15
    while _listening(port) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _listening(port) == 2
    served_by: set[int] = set()
    for _ in range(60):  # a new connection each: spread by the hash of its address
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.get("/v1/oauth/permissions").status_code == 200
    for line in server.log().splitlines():
        if line.startswith("{") and json.loads(line).get("route") == "/v1/oauth/permissions":
            served_by.add(json.loads(line)["pid"])
    assert len(served_by) == 2, f"both workers should have accepted connections: {served_by}"


def _listening(port: int) -> int:
    """How many sockets listen on ``port`` (IPv4), from /proc/net/tcp."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[3] == "0A" and int(line.split()[1].rsplit(":", 1)[1], 16) == port)


# ---------------------------------------------------------------- logs


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@pytest.mark.db
async def test_one_json_line_a_request_and_no_secret_in_the_log(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    metrics_port = free_port()
    server = server_factory(f"sqlite+aiosqlite:///{tmp_path / 'logs.db'}", env={"GRANTD_METRICS_PORT": str(metrics_port)})
    secrets_seen: dict[str, str] = {"password": PASSWORD}
    request_ids: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        flow = await new_flow(client)
        secrets_seen |= {"user token": flow.user_token, "developer token": flow.dev_token}
        secrets_seen |= {"app_key": flow.app_key, "key_secret": flow.key_secret}
        login = await client.post("/v1/auth/login", json={"email": unique_email(), "password": "wrong password 123"})
        assert login.status_code == 401
        secrets_seen["wrong password"] = "wrong password 123"

        code = await flow.code(permissions="read_profile,write_data")
        secrets_seen["code"] = code
        response = await flow.redeem(code)
        secrets_seen["access token"] = response.json()["data"]["access_token"]

        basic = (flow.app_id, flow.key_secret)
        code2 = await flow.code(permissions="read_profile")
        secrets_seen["second code"] = code2
        issued = (
            await client.post(
                "/oauth2/token",
                data={"grant_type": "authorization_code", "code": code2, "redirect_uri": flow.redirect_uri},
                auth=basic,
                headers={"X-Request-ID": "trace-the-token-request"},
            )
        ).json()
        secrets_seen |= {"oauth2 access token": issued["access_token"], "refresh token": issued["refresh_token"]}
        request_ids["trace-the-token-request"] = "/oauth2/token"
        refreshed = (
            await client.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}, auth=basic)
        ).json()
        secrets_seen["rotated refresh token"] = refreshed["refresh_token"]
        await client.post("/oauth2/introspect", data={"token": refreshed["access_token"]}, auth=basic)
        await client.post("/oauth2/revoke", data={"token": refreshed["access_token"]}, auth=basic)
        secrets_seen["refreshed access token"] = refreshed["access_token"]

        # The browser's authorization request: its query string (state, PKCE challenge) is never logged.
        _, challenge = pkce_pair()
        state = "state-" + secrets.token_hex(16)
        await client.get(
            "/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": flow.app_id,
                "redirect_uri": flow.redirect_uri,
                "scope": "read_profile",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            headers={"X-Request-ID": "trace-the-authorize-request"},
        )
        request_ids["trace-the-authorize-request"] = "/oauth2/authorize"
        secrets_seen |= {"authorize state": state, "code_challenge": challenge}
        query_secret = secrets.token_hex(16)
        await client.get(f"/v1/oauth/permissions?password={query_secret}", headers={"Authorization": f"Bearer {query_secret}x"})
        secrets_seen |= {"a query string": query_secret}

    assert httpx.get(f"{server.base_url}/metrics", timeout=10).status_code == 404, "off on the public port by default"
    assert "grantd_http_requests_total" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text

    server.stop()
    log = server.log()
    for name, value in secrets_seen.items():
        assert value not in log, f"the {name} is in the server's log"
    assert "Authorization" not in log and "authorization" not in log.lower().replace('"authorization_code"', "")

    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    requests = [r for r in records if r.get("event") == "request" and r.get("logger") == "grantd.access"]
    assert len(requests) >= 15
    for record in requests:
        assert {"method", "path", "route", "status", "duration_ms", "request_id", "timestamp", "level"} <= set(record)
        assert "?" not in record["path"]
    for rid, route in request_ids.items():
        (record,) = [r for r in requests if r["request_id"] == rid]
        assert record["route"] == route


def test_console_lines_on_a_terminal_json_otherwise() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.use_console("auto", Terminal()) and not logs.use_console("auto", io.StringIO())
    assert logs.use_console("console", io.StringIO()) and not logs.use_console("json", Terminal())

    def render(fmt: str, **extra: Any) -> str:
        record = logging.LogRecord("grantd.access", logging.INFO, __file__, 1, "request", None, None)
        record.__dict__.update(extra)
        return logs.formatter(fmt).format(record)

    fields = {"method": "POST", "route": "/oauth2/token", "status": 200, "client_secret": "s3cr3t", "password": "hunter22"}
    as_json = json.loads(render("json", **fields))
    assert as_json["event"] == "request" and as_json["status"] == 200 and as_json["level"] == "info"
    assert as_json["client_secret"] == as_json["password"] == logs.MASK
    console = render("console", **fields)
    assert "request" in console and "/oauth2/token" in console and not console.lstrip().startswith("{")
    assert "s3cr3t" not in console and "hunter22" not in console


def test_a_traceback_is_logged_without_local_variables() -> None:
    def fail(secret_argument: str) -> None:
        raise RuntimeError("boom")

    value = "-".join(("the", "secret", "value"))  # not in the source line a traceback quotes
    try:
        fail(value)
    except RuntimeError:
        record = logging.LogRecord("grantd", logging.ERROR, __file__, 1, "unhandled", None, sys.exc_info())
    line = json.loads(logs.formatter("json").format(record))
    assert "RuntimeError: boom" in line["exception"] and "the-secret-value" not in json.dumps(line)
    assert "the-secret-value" not in logs.formatter("console").format(record)


# ---------------------------------------------------------------- grantd config show


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(32)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GRANTD_")},
        "GRANTD_SECRET_KEY": secret,
        "GRANTD_DATABASE_URL": "postgresql+asyncpg://grantd:db-password-123@db.internal:5432/grantd",
        "GRANTD_METRICS_PORT": "9464",
        "GRANTD_DATA_DIR": str(tmp_path),
    }

    def show(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "grantd", "config", "show", *args], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    as_json = json.loads(show("--json"))
    assert as_json["secret_key"] == "********"
    assert as_json["database_url"] == "postgresql+asyncpg://grantd:********@db.internal:5432/grantd"
    assert as_json["metrics_port"] == 9464 and as_json["metrics_enabled"] is False
    assert set(as_json) == set(Settings.model_fields)
    plain = show()
    assert "GRANTD_SECRET_KEY=********" in plain and "GRANTD_METRICS_PORT=9464" in plain
    for output in (plain, json.dumps(as_json)):
        assert secret not in output and "db-password-123" not in output

    env["GRANTD_PORT"] = "not-a-port"
    result = subprocess.run([sys.executable, "-m", "grantd", "config", "show"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "port" in result.stderr


# ---------------------------------------------------------------- a deployment: two processes, one PostgreSQL


@pytest.mark.db
async def test_a_code_issued_by_one_process_is_redeemed_by_another(
    postgres_url: str, deployment: Callable[..., list[ServerProcess]]
) -> None:
    """Two `grantd serve` processes on different ports share one PostgreSQL database and one
    GRANTD_SECRET_KEY and GRANTD_ISSUER, as behind a load balancer."""
    issuer = "https://auth.example.test"
    first, second = deployment(postgres_url, issuer=issuer)
    for server in (first, second):
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).json()["status"] == "ready"

    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as a, httpx.AsyncClient(
        base_url=second.base_url, timeout=30
    ) as b:
        flow = await new_flow(a)  # the developer, the app, its key and the user: all on the first
        code = await flow.code(permissions="read_profile,write_data")
        flow.client = b
        redeemed = await flow.redeem(code)  # on the second
        assert redeemed.status_code == 200, redeemed.text
        flow.client = a
        # The same request on the first within the grace window: a retry, the same token.
        again = await flow.redeem(code)
        assert again.status_code == 200, again.text
        assert again.json()["data"]["access_token"].split(".")[1] == redeemed.json()["data"]["access_token"].split(".")[1]

    token = redeemed.json()["data"]["access_token"]
    for server in (first, second):
        verifier = TokenVerifier(issuer, jwks_uri=f"{server.base_url}/.well-known/jwks.json")
        access = await verifier.averify(token)
        assert access.user_id == flow.user_id and access.app_id == flow.app_id
        assert access.permissions == ("read_profile", "write_data")


def test_the_deployment_guide_covers_what_operators_need() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for topic in ("GRANTD_SECRET_KEY", "grantd migrate", "signing-keys rotate", "/readyz", "/healthz", "backup", "--workers"):
        assert topic in guide, topic
