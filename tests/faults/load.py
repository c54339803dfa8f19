"""A modest load on a real `grantd serve` while a test breaks what it depends on: a few clients
looping over client_credentials at /oauth2/token, the Neucron authorize-then-redeem pair, and
log-ins (right and wrong passwords). Every answer is kept with when it was sent and how long it
took, and every token a 200 acknowledged, so a test can check what clients saw and then that the
database spent each acknowledged code exactly once, by the redemption whose token was acknowledged
(access tokens are self-contained: they have no row to keep)."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from sqlalchemy import select

from grantd.config import Settings
from grantd.crypto.secrets import SecretHasher
from grantd.store.db import Database
from grantd.store.schema import authorization_codes
from support.neucron import PASSWORD, Flow, new_flow, unique_email

# A request that has had no answer after this long is a hang, whatever the server's bounds.
CLIENT_TIMEOUT = 60.0


@dataclass
class Answer:
    kind: str  # client_credentials, authorize, redeem, login
    sent: float  # time.monotonic() when sent
    seconds: float
    status: int  # 0: no HTTP answer (the connection failed)
    body: Any
    headers: httpx.Headers | None


@dataclass
class Load:
    """The answers of one run, and the tokens and codes acknowledged with 200."""

    answers: list[Answer] = field(default_factory=list)
    jtis: list[str] = field(default_factory=list)  # of every 200 token answer
    redeemed: list[str] = field(default_factory=list)  # codes whose redemption answered 200
    jti_of_code: dict[str, str] = field(default_factory=dict)  # the jti each of them answered

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.sent < end]


@dataclass
class Target:
    base_url: str
    flow: Flow
    email: str


async def prepare(base_url: str) -> Target:
    """A developer with an app and a key, a user who has consented, and an account to log in to."""
    client = httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT)
    flow = await new_flow(client)
    assert (await flow.authorize()).status_code == 200  # first consent
    email = unique_email()
    signed_up = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert signed_up.status_code == 200, signed_up.text
    return Target(base_url, flow, email)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def _timed(load: Load, kind: str, request: Any) -> httpx.Response | None:
    sent = time.monotonic()
    try:
        response = await request
    except httpx.HTTPError as exc:
        load.answers.append(Answer(kind, sent, time.monotonic() - sent, 0, repr(exc), None))
        return None
    load.answers.append(Answer(kind, sent, time.monotonic() - sent, response.status_code, _body(response), response.headers))
    return response


async def run(target: Target, stop: asyncio.Event, load: Load, *, clients: int = 2, pause: float = 0.05) -> None:
    """``clients`` clients of each kind, until ``stop`` is set."""
    flow = target.flow
    basic = "Basic " + base64.b64encode(f"{flow.app_id}:{flow.key_secret}".encode()).decode()

    async def credentials(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await _timed(load, "client_credentials", client.post(
                "/oauth2/token", data={"grant_type": "client_credentials", "scope": "read_profile"},
                headers={"Authorization": basic},
            ))
            if response is not None and response.status_code == 200:
                load.jtis.append(jwt.decode(response.json()["access_token"], options={"verify_signature": False})["jti"])
            await asyncio.sleep(pause)

    async def code_flow(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await _timed(load, "authorize", client.post(
                "/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": f"Bearer {flow.user_token}"},
            ))
            if response is not None and response.status_code == 200:
                code = response.json()["data"]["code"]
                redeemed = await _timed(load, "redeem", client.post(
                    "/oauth/token", json={"token": {"auth_code": code, "key_id": flow.key_id, "key_secret": flow.key_secret}},
                ))
                if redeemed is not None and redeemed.status_code == 200:
                    token = redeemed.json()["data"]["access_token"]
                    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
                    load.jtis.append(jti)
                    load.redeemed.append(code)
                    load.jti_of_code[code] = jti
            await asyncio.sleep(pause)

    async def logins(client: httpx.AsyncClient, wrong: bool) -> None:
        while not stop.is_set():
            password = "not the password" if wrong else PASSWORD
            await _timed(load, "login", client.post("/v1/auth/login", json={"email": target.email, "password": password}))
            await asyncio.sleep(pause * 4)

    async with httpx.AsyncClient(base_url=target.base_url, timeout=CLIENT_TIMEOUT) as client:
        workers = []
        for i in range(clients):
            workers += [credentials(client), code_flow(client), logins(client, wrong=i % 2 == 1)]
        await asyncio.gather(*workers)


def assert_unavailable_shape(answer: Answer) -> None:
    """A 503 in its dialect's shape, with Retry-After: RFC 6749 JSON at /oauth2/token, the Neucron
    error body elsewhere."""
    assert answer.status == 503, answer
    assert answer.headers is not None and answer.headers.get("retry-after", "").isdigit(), answer
    assert int(answer.headers["retry-after"]) >= 1
    body = answer.body
    assert isinstance(body, dict), answer
    assert body["error"] == "temporarily_unavailable", answer
    if answer.kind == "client_credentials":
        assert set(body) == {"error", "error_description"}, body
    else:
        assert set(body) == {"error", "message", "status_code"} and body["status_code"] == 503, body


async def assert_acknowledged_exactly_once(database_url: str, secret_key: str, load: Load) -> None:
    """No jti was answered twice; every code redeemed with 200 is spent, once, by the redemption
    that answered: the code's row names the access token acknowledged for it (``access_jti``)."""
    assert len(set(load.jtis)) == len(load.jtis), "a jti was answered twice"
    hasher = SecretHasher(Settings(secret_key=secret_key, database_url=database_url).master_secret)
    expected = {hasher.hash(code): load.jti_of_code[code] for code in load.redeemed}
    db = Database(database_url)
    try:
        async with db.read() as conn:
            hashes = sorted(expected)
            for i in range(0, len(hashes), 500):
                chunk = hashes[i : i + 500]
                spent = dict(
                    (await conn.execute(
                        select(authorization_codes.c.code_hash, authorization_codes.c.access_jti)
                        .where(authorization_codes.c.code_hash.in_(chunk), authorization_codes.c.redeemed_at.isnot(None))
                    )).all()
                )
                assert set(spent) == set(chunk), "a code acknowledged as redeemed is not marked redeemed"
                wrong = [h for h in chunk if spent[h] != expected[h]]
                assert not wrong, f"{len(wrong)} codes were spent by another redemption than the one acknowledged"
    finally:
        await db.dispose()
