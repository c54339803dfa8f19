"""User enumeration by timing: a wrong password for an existing email and any password for an
unknown email take the same time, because log_in runs argon2 in both cases (a dummy hash for the
unknown email; core/accounts.py and crypto/passwords.py).

Measured through HTTP (POST /v1/auth/login on the in-process app), interleaved so that load on
the machine falls on both series alike; the medians must agree within a generous factor.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from grantd.config import Settings
from grantd.server import create_app
from support.neucron import PASSWORD, sign_up, unique_email


pytestmark = pytest.mark.db

SAMPLES = 15
LOW, HIGH = 0.67, 1.5  # allowed ratio of the medians (existing / unknown)


@pytest.fixture
async def timing_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own on the session's database, with log-in limits high enough for the
    measurement (the limiter still runs on every attempt), called from an address of its own."""
    application = create_app(
        settings.model_copy(update={"rate_limit_login_per_account": 10_000, "rate_limit_login_per_address": 10_000})
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=(f"203.0.113.{secrets.randbelow(250) + 1}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def _timed_login(client: httpx.AsyncClient, email: str, password: str) -> float:
    start = time.perf_counter()
    response = await client.post("/v1/auth/login", json={"email": email, "password": password})
    elapsed = time.perf_counter() - start
    assert response.status_code == 401, response.text
    return elapsed


async def test_a_wrong_password_and_an_unknown_email_take_the_same_time(timing_client: httpx.AsyncClient) -> None:
    email = unique_email()
    await sign_up(timing_client, email)
    wrong = PASSWORD + " but wrong"
    for _ in range(2):  # warm-up: connections, caches, the dummy hash
        await _timed_login(timing_client, email, wrong)
        await _timed_login(timing_client, unique_email(), wrong)

    existing: list[float] = []
    unknown: list[float] = []
    for i in range(SAMPLES):
        pair = [("existing", email), ("unknown", unique_email())]
        for kind, address in pair if i % 2 == 0 else reversed(pair):
            (existing if kind == "existing" else unknown).append(await _timed_login(timing_client, address, wrong))

    ratio = statistics.median(existing) / statistics.median(unknown)
    assert LOW <= ratio <= HIGH, (
        f"median wrong-password log-in {statistics.median(existing) * 1000:.1f} ms vs unknown-email "
        f"{statistics.median(unknown) * 1000:.1f} ms (ratio {ratio:.2f}): the timing tells them apart"
    )
