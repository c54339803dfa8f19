"""Rate limiting: log-in per account and per address, sign-up per address, token endpoint failures
per address and per key at an address — refused with 429 and Retry-After in each dialect's shape, before the
expensive work, and shared across server processes (database by default, Redis when configured)."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from grantd.config import Settings
from grantd.core import accounts, ratelimit
from grantd.core.errors import RateLimited
from grantd.server import create_app
from grantd.store import ratelimits as store
from grantd.store.db import Database
from support.neucron import PASSWORD, new_flow, unique_email
from support.servers import ServerProcess

REDIS_URL = "redis://127.0.0.1:6379/0"


def _address() -> str:
    """A client address of its own for each use, so that per-address buckets never meet across tests."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def limited_settings(base: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": base.database_url,
        "secret_key": base.secret_key,
        "data_dir": base.data_dir,
        "issuer": base.issuer,
        "rate_limit_login_per_account": 1000,
        "rate_limit_login_per_address": 1000,
        "rate_limit_signup_per_address": 1000,
        "rate_limit_token_failures_per_client": 1000,
        "rate_limit_token_failures_per_address": 1000,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Callable[[str | None], httpx.AsyncClient]]:
    """The app with these settings; yields a factory of clients, each from its own address."""
    application = create_app(settings)
    opened: list[httpx.AsyncClient] = []

    def client(address: str | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=application, client=(address or _address(), 123))
        c = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        opened.append(c)
        return c

    async with application.router.lifespan_context(application):
        try:
            yield client
        finally:
            for c in opened:
                await c.aclose()


async def signup(c: httpx.AsyncClient, email: str) -> None:
    response = await c.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text


def login(c: httpx.AsyncClient, email: str, password: str) -> Any:
    return c.post("/v1/auth/login", json={"email": email, "password": password})


def assert_neucron_429(response: httpx.Response, window: int = 900) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error", "message", "status_code"}
    assert body["error"] == "rate_limited" and body["status_code"] == 429
    retry_after = int(response.headers["Retry-After"])
    # Until the sliding window has room again: within the next window at the latest.
    assert 1 <= retry_after <= 2 * window


class CountingArgon2:
    """Counts argon2 verifications: proof that a refused attempt never reached them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = accounts.verify_password

        async def counting(password_hash: str | None, password: str) -> bool:
            self.calls += 1
            return await real(password_hash, password)

        monkeypatch.setattr(accounts, "verify_password", counting)


# ---------------------------------------------------------------- log-in


async def test_wrong_passwords_lock_the_account_and_the_right_one_is_refused_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(limited_settings(settings, rate_limit_login_per_account=3)) as client:
        c = client(None)
        email = unique_email()
        await signup(c, email)
        argon2 = CountingArgon2(monkeypatch)
        for _ in range(3):
            assert (await login(c, email, "wrong password 1")).status_code == 401
        assert argon2.calls == 3
        assert_neucron_429(await login(c, email, "wrong password 1"))
        assert_neucron_429(await login(c, email, PASSWORD))  # locked: even the right password
        assert_neucron_429(await c.post("/auth/login", json={"email": email.upper(), "password": PASSWORD}))
        assert argon2.calls == 3  # refused before argon2
        # Another account from the same address is not affected.
        other = unique_email()
        await signup(c, other)
        assert (await login(c, other, PASSWORD)).status_code == 200


async def test_successful_log_ins_do_not_use_up_the_budget(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_login_per_account=3)) as client:
        c = client(None)
        email = unique_email()
        await signup(c, email)
        for _ in range(6):
            assert (await login(c, email, PASSWORD)).status_code == 200
        for _ in range(2):
            assert (await login(c, email, "wrong password 1")).status_code == 401
        assert (await login(c, email, PASSWORD)).status_code == 200
        assert (await login(c, email, "wrong password 1")).status_code == 401
        assert_neucron_429(await login(c, email, PASSWORD))


async def test_an_account_is_throttled_whatever_the_address(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_login_per_account=4)) as client:
        email = unique_email()
        await signup(client(None), email)
        for _ in range(4):
            assert (await login(client(None), email, "wrong password 1")).status_code == 401
        for _ in range(3):
            assert_neucron_429(await login(client(None), email, PASSWORD))


async def test_unknown_accounts_are_throttled_the_same(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_login_per_account=2)) as client:
        email = unique_email()  # never signed up
        for _ in range(2):
            assert (await login(client(None), email, "wrong password 1")).status_code == 401
        assert_neucron_429(await login(client(None), email, "wrong password 1"))


async def test_an_address_is_throttled_across_accounts(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_login_per_address=3)) as client:
        attacker = client(_address())
        for _ in range(3):
            assert (await login(attacker, unique_email(), "wrong password 1")).status_code == 401
        assert_neucron_429(await login(attacker, unique_email(), "wrong password 1"))
        # Someone else, elsewhere, signs in as usual.
        email = unique_email()
        bystander = client(_address())
        await signup(bystander, email)
        assert (await login(bystander, email, PASSWORD)).status_code == 200


async def test_the_sign_in_page_shows_a_lock_out(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_login_per_account=2)) as client:
        c = client(None)
        email = unique_email()
        await signup(c, email)

        async def post(password: str) -> httpx.Response:
            page = await c.get("/signin")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert token, page.text
            data = {"csrf_token": token.group(1), "email": email, "password": password, "next": "/"}
            return await c.post("/signin", data=data)

        assert (await post("wrong password 1")).status_code == 401
        assert (await post("wrong password 1")).status_code == 401
        locked = await post(PASSWORD)
        assert locked.status_code == 429
        assert "text/html" in locked.headers["content-type"]
        assert "Too many failed sign-in attempts" in locked.text
        assert int(locked.headers["Retry-After"]) >= 1
        assert "grantd_session" not in locked.headers.get("set-cookie", "")


async def test_a_thousand_wrong_passwords_from_several_addresses_are_throttled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 10
    async with running(limited_settings(settings, rate_limit_login_per_account=limit, rate_limit_login_per_address=50)) as client:
        email = unique_email()
        await signup(client(None), email)
        argon2 = CountingArgon2(monkeypatch)
        attackers = [client(_address()) for _ in range(8)]
        gate = asyncio.Semaphore(50)

        async def attempt(i: int) -> int:
            async with gate:
                response = await login(attackers[i % len(attackers)], email, f"guess {i:04d} !")
                return response.status_code

        started = time.monotonic()
        statuses = Counter(await asyncio.gather(*(attempt(i) for i in range(1000))))
        elapsed = time.monotonic() - started
        # The account budget is taken atomically before argon2: at most `limit` guesses are checked.
        assert statuses[401] <= limit and statuses[429] >= 1000 - limit, statuses
        assert set(statuses) <= {401, 429}, statuses
        assert argon2.calls <= limit
        assert elapsed < 120, f"1,000 throttled attempts took {elapsed:.1f} s"
        assert_neucron_429(await login(client(None), email, PASSWORD))


# ---------------------------------------------------------------- sign-up


async def test_sign_ups_are_limited_per_address(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_signup_per_address=3)) as client:
        c = client(_address())
        for _ in range(3):
            await signup(c, unique_email())
        assert_neucron_429(await c.post("/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD}), 3600)
        # Failed sign-ups count too (each would hash a password).
        assert_neucron_429(await c.post("/v1/auth/signup", json={"email": "not an email", "password": PASSWORD}), 3600)
        await signup(client(_address()), unique_email())


# ---------------------------------------------------------------- token endpoints


def wrong_secret(key_secret: str) -> str:
    """A secret that names the same key but is not its secret."""
    head, _, tail = key_secret.rpartition("_")
    return f"{head}_{'A' if tail[0] != 'A' else 'B'}{tail[1:]}"


async def test_neucron_token_failures_per_key(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_token_failures_per_client=4)) as client:
        c = client(None)
        flow = await new_flow(c)
        code = await flow.code()
        assert (await flow.redeem(code, key_secret=wrong_secret(flow.key_secret))).status_code == 401
        assert (await flow.redeem(code, key_secret=wrong_secret(flow.key_secret))).status_code == 401
        assert (await flow.redeem("no-such-code")).json()["error"] == "invalid_grant"  # invalid_grant counts too
        assert (await flow.redeem("no-such-code")).status_code == 401
        # Over the limit from this address: 429, before the secret or the code is looked at.
        assert_neucron_429(await flow.redeem("no-such-code"), window=60)
        assert_neucron_429(await flow.redeem(code))  # locked on this process: even a good request
        # From another address the key's requests are served: failures here lock nobody out there.
        other = client(None)
        response = await other.post(
            "/oauth/token", json={"token": {"auth_code": code, "key_id": flow.key_id, "key_secret": flow.key_secret}}
        )
        assert response.status_code == 200, response.text
        # Another key of another app is unaffected.
        second = await new_flow(c)
        assert (await second.redeem(await second.code())).status_code == 200


async def test_successful_token_requests_are_not_counted(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_token_failures_per_client=2)) as client:
        flow = await new_flow(client(None))
        for _ in range(4):
            assert (await flow.redeem(await flow.code())).status_code == 200


async def test_oauth2_token_failures_per_client_in_rfc6749_shape(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_token_failures_per_client=3)) as client:
        c = client(None)
        flow = await new_flow(c)
        bad = httpx.BasicAuth(flow.app_id, wrong_secret(flow.key_secret))
        form = {"grant_type": "client_credentials"}
        for _ in range(3):
            response = await c.post("/oauth2/token", data=form, auth=bad)
            assert response.status_code == 401 and response.json()["error"] == "invalid_client"
        response = await c.post("/oauth2/token", data=form, auth=bad)
        assert response.status_code == 429, response.text
        assert response.json()["error"] == "rate_limited" and set(response.json()) == {"error", "error_description"}
        assert 1 <= int(response.headers["Retry-After"]) <= 2 * 60
        # Another address is not refused: the right secret gets its token there.
        served = await client(None).post("/oauth2/token", data=form, auth=(flow.app_id, flow.key_secret))
        assert served.status_code == 200, served.text
        assert response.headers["Cache-Control"] == "no-store"
        # client_secret_post names the same key: limited too.
        post = {**form, "client_id": flow.app_id, "client_secret": flow.key_secret}
        assert (await c.post("/oauth2/token", data=post)).status_code == 429


async def test_token_failures_per_address(settings: Settings) -> None:
    async with running(limited_settings(settings, rate_limit_token_failures_per_address=3)) as client:
        attacker = client(_address())
        for i in range(3):
            body = {"token": {"auth_code": "x", "key_id": f"gk_{i:016x}", "key_secret": "gks_nope"}}
            assert (await attacker.post("/oauth/token", json=body)).status_code == 401
        body = {"token": {"auth_code": "x", "key_id": "gk_ffffffffffffffff", "key_secret": "gks_nope"}}
        assert_neucron_429(await attacker.post("/oauth/token", json=body))
        assert (await attacker.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "x"})).status_code == 429
        flow = await new_flow(client(_address()))
        assert (await flow.redeem(await flow.code())).status_code == 200


def assert_rfc6749_429(response: httpx.Response, window: int = 60) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited" and set(response.json()) == {"error", "error_description"}
    assert 1 <= int(response.headers["Retry-After"]) <= 2 * window  # as in assert_neucron_429
    assert response.headers["Cache-Control"] == "no-store"


async def _app_token(c: httpx.AsyncClient, flow: Any) -> str:
    response = await c.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def _second_key(c: httpx.AsyncClient, flow: Any) -> str:
    """The secret of another key of the same app: a bucket of its own."""
    response = await c.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    return response.json()["data"]["key_secret"]


async def _is_active(c: httpx.AsyncClient, app_id: str, secret: str, token: str) -> bool:
    response = await c.post("/oauth2/introspect", data={"token": token}, auth=(app_id, secret))
    assert response.status_code == 200, response.text
    return response.json()["active"]


async def test_revocation_failures_per_key_and_per_address(settings: Settings) -> None:
    limits = {"rate_limit_token_failures_per_client": 3, "rate_limit_token_failures_per_address": 5}
    async with running(limited_settings(settings, **limits)) as client:
        c = client(_address())
        flow = await new_flow(c)
        token = await _app_token(c, flow)
        spare = await _second_key(c, flow)
        bad = httpx.BasicAuth(flow.app_id, wrong_secret(flow.key_secret))
        for _ in range(3):
            response = await c.post("/oauth2/revoke", data={"token": token}, auth=bad)
            assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
        # Over the limit for this key from this address, with a wrong secret or the right one: 429.
        assert_rfc6749_429(await c.post("/oauth2/revoke", data={"token": token}, auth=bad))
        # From elsewhere the key is not locked: a wrong secret is only wrong.
        elsewhere = await client(_address()).post("/oauth2/revoke", data={"token": token}, auth=bad)
        assert elsewhere.status_code == 401, elsewhere.text
        locked = await c.post("/oauth2/revoke", data={"token": token}, auth=(flow.app_id, flow.key_secret))
        assert_rfc6749_429(locked)
        assert await _is_active(c, flow.app_id, spare, token), "a refused revocation must not revoke"
        # The key's budget is shared with the token endpoint: guessing here used it up there too.
        assert_rfc6749_429(
            await c.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(flow.app_id, flow.key_secret))
        )
        # The app's other key is its own bucket, and revokes as usual.
        assert (await c.post("/oauth2/revoke", data={"token": token}, auth=(flow.app_id, spare))).status_code == 200
        assert not await _is_active(c, flow.app_id, spare, token)

        # Per address: failures naming five different keys lock the address, not the keys.
        attacker = client(_address())
        for _ in range(5):
            guess = httpx.BasicAuth(flow.app_id, f"gks_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")
            assert (await attacker.post("/oauth2/revoke", data={"token": "x"}, auth=guess)).status_code == 401
        assert_rfc6749_429(await attacker.post("/oauth2/revoke", data={"token": "x"}, auth=(flow.app_id, spare)))
        bystander = client(_address())
        other = await new_flow(bystander)
        other_token = await _app_token(bystander, other)
        revoked = await bystander.post("/oauth2/revoke", data={"token": other_token}, auth=(other.app_id, other.key_secret))
        assert revoked.status_code == 200, revoked.text


async def test_introspection_failures_per_key_and_per_address(settings: Settings) -> None:
    limits = {"rate_limit_token_failures_per_client": 3, "rate_limit_token_failures_per_address": 5}
    async with running(limited_settings(settings, **limits)) as client:
        c = client(_address())
        flow = await new_flow(c)
        token = await _app_token(c, flow)
        bad = {"token": token, "client_id": flow.app_id, "client_secret": wrong_secret(flow.key_secret)}  # client_secret_post
        for _ in range(3):
            response = await c.post("/oauth2/introspect", data=bad)
            assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
        assert_rfc6749_429(await c.post("/oauth2/introspect", data=bad))
        # Another address gets its answer with the right secret: the lock is this address's.
        assert await _is_active(client(_address()), flow.app_id, flow.key_secret, token)
        # Locked here: the right secret gets no answer either (Basic names the same key).
        locked = await c.post("/oauth2/introspect", data={"token": token}, auth=(flow.app_id, flow.key_secret))
        assert_rfc6749_429(locked)
        assert "active" not in locked.json()
        spare = await _second_key(c, flow)
        assert await _is_active(c, flow.app_id, spare, token)

        attacker = client(_address())
        for _ in range(5):
            guess = httpx.BasicAuth(flow.app_id, f"gks_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")
            assert (await attacker.post("/oauth2/introspect", data={"token": "x"}, auth=guess)).status_code == 401
        assert_rfc6749_429(await attacker.post("/oauth2/introspect", data={"token": token}, auth=(flow.app_id, spare)))
        # The address's budget covers the token endpoint too.
        assert_rfc6749_429(await attacker.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "x"}))
        bystander = client(_address())
        assert await _is_active(bystander, flow.app_id, spare, token)


# ---------------------------------------------------------------- the counters themselves


async def test_the_upsert_counts_atomically_on_both_databases(any_database_url: str) -> None:
    db = Database(any_database_url)
    key = uuid.uuid4().hex
    try:

        async def add(window_start: int) -> store.Counts:
            async with db.write() as tx:
                return await store.add(tx, key, window_start, 60)

        results = await asyncio.gather(*(add(1000) for _ in range(20)))
        assert sorted(results) == [(n, 0) for n in range(1, 21)]
        # A new window starts again, and the one it ended is now the previous window.
        assert await add(1060) == (1, 20)
        assert await add(1000) == (2, 20)  # a late attempt of the old window counts in the current one
        async with db.write() as tx:
            await store.refund(tx, key, 1060)
        async with db.read() as conn:
            assert await store.counts(conn, [key], 1060, 60) == {key: (1, 20)}
            assert await store.counts(conn, [key], 1120, 60) == {key: (0, 1)}  # read from the next window
            assert await store.counts(conn, [key], 1180, 60) == {}  # two windows on: nothing counts
        assert await add(1200) == (1, 0)  # a whole window passed without attempts: no previous count
    finally:
        await db.dispose()


# ---------------------------------------------------------------- across server processes


def _server_env(**limits: int) -> dict[str, str]:
    env = {
        "GRANTD_RATE_LIMIT_LOGIN_PER_ADDRESS": "100000",
        "GRANTD_RATE_LIMIT_SIGNUP_PER_ADDRESS": "100000",
        "GRANTD_RATE_LIMIT_TOKEN_FAILURES_PER_ADDRESS": "100000",
    }
    env.update({f"GRANTD_{name.upper()}": str(value) for name, value in limits.items()})
    return env


async def _shared_lockout(servers: list[ServerProcess], limit: int) -> None:
    email = unique_email()
    async with httpx.AsyncClient(timeout=30) as c:
        response = await c.post(f"{servers[0].base_url}/v1/auth/signup", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        for i in range(limit):
            server = servers[i % len(servers)]
            response = await c.post(f"{server.base_url}/v1/auth/login", json={"email": email, "password": "wrong password 1"})
            assert response.status_code == 401, (i, response.text)
        for server in servers:  # each process refuses, though it saw only part of the failures
            response = await c.post(f"{server.base_url}/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert_neucron_429(response)


@pytest.mark.db
async def test_limits_are_shared_by_two_processes_on_one_database(
    deployment: Callable[..., list[ServerProcess]], sqlite_url: str
) -> None:
    env = _server_env(rate_limit_login_per_account=5, rate_limit_token_failures_per_client=3)
    servers = deployment(sqlite_url, env=env)
    await _shared_lockout(servers, 5)
    # Token failures too: 3 failures spread over both processes, then both refuse.
    async with httpx.AsyncClient(timeout=30) as c:
        key = f"gk_{secrets.token_hex(8)}"
        body = {"token": {"auth_code": "x", "key_id": key, "key_secret": "gks_nope"}}
        for i in range(3):
            assert (await c.post(f"{servers[i % 2].base_url}/oauth/token", json=body)).status_code == 401
        for server in servers:
            assert_neucron_429(await c.post(f"{server.base_url}/oauth/token", json=body))


def _redis_reason() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: not available here
        return f"Redis does not answer at {REDIS_URL}: {exc.__class__.__name__}: {exc}"
    return None


@pytest.fixture
def redis_prefix() -> Any:
    reason = _redis_reason()
    if reason:
        pytest.skip(reason)
    import redis

    prefix = f"grantd-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    for name in r.scan_iter(match=prefix + "*"):
        r.delete(name)


@pytest.mark.db
async def test_limits_are_shared_by_two_processes_through_redis(
    deployment: Callable[..., list[ServerProcess]], sqlite_url: str, redis_prefix: str
) -> None:
    import redis

    env = {**_server_env(rate_limit_login_per_account=4), "GRANTD_REDIS_URL": REDIS_URL, "GRANTD_REDIS_KEY_PREFIX": redis_prefix}
    servers = deployment(sqlite_url, env=env)
    await _shared_lockout(servers, 4)
    names = list(redis.Redis.from_url(REDIS_URL).scan_iter(match=redis_prefix + "*"))
    assert names, "the counters should be in Redis"
    r = redis.Redis.from_url(REDIS_URL)
    # Every counter expires once the window after its own has passed (sign-up: 3600 s windows,
    # log-in: 900 s): none lives forever.
    assert all(0 < r.ttl(name) <= 2 * 3600 + 1 for name in names)
    assert not any(b"@" in name for name in names)  # bucket names are hashed: no email in clear


async def test_in_process_apps_share_redis_counters(settings: Settings, redis_prefix: str) -> None:
    config = limited_settings(settings, rate_limit_login_per_account=3, redis_url=REDIS_URL, redis_key_prefix=redis_prefix)
    async with running(config) as first, running(config) as second:
        email = unique_email()
        await signup(first(None), email)
        assert (await login(first(None), email, "wrong password 1")).status_code == 401
        assert (await login(second(None), email, "wrong password 1")).status_code == 401
        assert (await login(first(None), email, "wrong password 1")).status_code == 401
        assert_neucron_429(await login(second(None), email, PASSWORD))


async def test_when_redis_fails_the_database_counts(settings: Settings) -> None:
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    async with running(limited_settings(settings, rate_limit_login_per_account=2, redis_url=dead)) as client:
        email = unique_email()
        await signup(client(None), email)
        for _ in range(2):
            assert (await login(client(None), email, "wrong password 1")).status_code == 401
        assert_neucron_429(await login(client(None), email, PASSWORD))


# ---------------------------------------------------------------- a sliding window, across its boundary


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def _limiter_on(database_url: str, redis_prefix: str | None = None) -> AsyncIterator[tuple[ratelimit.RateLimiter, _Clock]]:
    """A limiter counting in the database, or in Redis with ``redis_prefix``, on a clock of the test's."""
    db = Database(database_url)
    backend: Any = ratelimit.DatabaseBackend(db)
    if redis_prefix is not None:
        backend = ratelimit.RedisBackend(REDIS_URL, redis_prefix, backend)
    clock = _Clock(60 * 1_000_000 + 55)  # 55 s into a 60-second window
    run = uuid.uuid4().hex  # this test's own buckets
    limiter = ratelimit.RateLimiter(backend, lambda bucket: f"{bucket}-{run}"[-64:], clock=clock)
    try:
        yield limiter, clock
    finally:
        await limiter.close()
        await db.dispose()


async def _a_limit_holds_across_a_window_boundary(limiter: ratelimit.RateLimiter, clock: _Clock) -> None:
    limit = ratelimit.Limit("login:account:someone", 10, 60)
    for _ in range(10):
        await limiter.hit(limit)
    clock.now += 6  # 1 s into the next window
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(limit)
    # The ten slide out by one every 6 s; with the refused attempt counted too, one more fits once
    # two of them have: 12 s into the window.
    assert refused.value.retry_after == 11
    clock.now += refused.value.retry_after - 1
    with pytest.raises(RateLimited):
        await limiter.hit(limit)
    clock.now += 1 + 6  # the attempt refused just now counts as well: one more of the ten must go
    await limiter.hit(limit)
    clock.now += 120  # two windows on, nothing weighs any more: the whole limit again
    for _ in range(10):
        await limiter.hit(limit)
    with pytest.raises(RateLimited):
        await limiter.hit(limit)


async def _a_marked_bucket_stays_refused_until_the_failures_slide_out(limiter: ratelimit.RateLimiter, clock: _Clock) -> None:
    limit = ratelimit.Limit("token:client:key_0123456789abcdef", 10, 60)
    for _ in range(10):
        await limiter.fail(limit)
    with pytest.raises(RateLimited):
        limiter.check_marked(limit)
    clock.now += 6  # into the next window: the ten failures of the last minute still fill the limit
    with pytest.raises(RateLimited) as refused:
        limiter.check_marked(limit)
    assert refused.value.retry_after == 5  # one of the ten slides out 6 s into the window
    with pytest.raises(RateLimited):
        await limiter.check(limit)  # the shared counts agree
    clock.now += 5
    limiter.check_marked(limit)
    await limiter.check(limit)


async def test_a_limit_holds_across_a_window_boundary(any_database_url: str) -> None:
    """Ten attempts at the end of a window use up a limit of ten per minute: the next window's
    first attempts are refused too (fixed windows let ten more through at once), and room comes
    back as the earlier attempts slide out of the last minute, when Retry-After says."""
    async with _limiter_on(any_database_url) as (limiter, clock):
        await _a_limit_holds_across_a_window_boundary(limiter, clock)


async def test_a_limit_holds_across_a_window_boundary_in_redis(sqlite_url: str, redis_prefix: str) -> None:
    async with _limiter_on(sqlite_url, redis_prefix) as (limiter, clock):
        await _a_limit_holds_across_a_window_boundary(limiter, clock)


async def test_a_marked_bucket_stays_refused_until_the_failures_slide_out(any_database_url: str) -> None:
    """The token endpoints' failures: the one that uses up the limit marks the bucket, and the mark
    lasts until there is room for an attempt again, past the end of the window it was counted in."""
    async with _limiter_on(any_database_url) as (limiter, clock):
        await _a_marked_bucket_stays_refused_until_the_failures_slide_out(limiter, clock)


async def test_a_marked_bucket_stays_refused_until_the_failures_slide_out_in_redis(sqlite_url: str, redis_prefix: str) -> None:
    async with _limiter_on(sqlite_url, redis_prefix) as (limiter, clock):
        await _a_marked_bucket_stays_refused_until_the_failures_slide_out(limiter, clock)
