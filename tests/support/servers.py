"""Real `grantd serve` processes: starting one, one on a SQLite file of its own, and what the tests
ask of several processes of one deployment (one database, one secret key, one issuer).

The fixtures built on these (``server_factory``, ``deployment``, ``interop_server``) are in
tests/conftest.py; the browser tests' server is in tests/browser/conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest

# Every in-process request comes from one client address, and so does every request to a real
# server process: the shared app and servers get limits no test reaches by accident. The rate
# limits themselves are tested in test_ratelimit.py, with apps and servers of their own.
UNTHROTTLED: dict[str, int] = {
    "rate_limit_login_per_account": 1_000_000,
    "rate_limit_login_per_address": 1_000_000,
    "rate_limit_signup_per_address": 1_000_000,
    "rate_limit_token_failures_per_client": 1_000_000,
    "rate_limit_token_failures_per_address": 1_000_000,
}
# What a request to a real server may take, loaded by a test's concurrent requests on two cores.
TIMEOUT = httpx.Timeout(60.0)
# Signs in a server's log that it failed where no test expects it to.
FAILURE_SIGNS = ("Traceback", "database is locked", "unhandled error")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until_answers(url: str, process: subprocess.Popen[Any], log_path: Path, *, seconds: float, what: str) -> None:
    """Returns once a GET of ``url`` answers 200; raises RuntimeError, with the process's log, if the
    process exits first or ``seconds`` pass (the process is then left running: the caller stops it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {seconds:g} s:\n{log_path.read_text(errors='replace')}")


def start_server(
    database_url: str,
    secret_key: str,
    data_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> ServerProcess:
    """`grantd serve` in its own process on a free port; returns once it answers. ``host``: the
    name in its base URL and issuer (``localhost`` where an IP address will not do: a WebAuthn RP ID)."""
    port = free_port()
    base_url = f"http://{host}:{port}"
    log_path = data_dir / f"server-{port}.log"
    environment = {
        **os.environ,
        "GRANTD_DATABASE_URL": database_url,
        "GRANTD_SECRET_KEY": secret_key,
        "GRANTD_DATA_DIR": str(data_dir),
        "GRANTD_ISSUER": base_url,
        **{f"GRANTD_{name.upper()}": str(value) for name, value in UNTHROTTLED.items()},
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "grantd", "serve", "--port", str(port), "--workers", str(workers)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    server = ServerProcess(base_url, log_path, process)
    try:
        wait_until_answers(f"{base_url}/.well-known/jwks.json", process, log_path, seconds=30, what="grantd serve")
    except RuntimeError:
        server.stop(signal.SIGKILL)
        raise
    return server


@contextmanager
def server_on_new_sqlite(
    tmp_path_factory: pytest.TempPathFactory,
    secret_key: str,
    name: str,
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[ServerProcess]:
    """One real `grantd serve` on a new SQLite file (serve migrates it) in a new directory named after
    ``name``; GRANTD_ISSUER is its base URL. Stopped on leaving the block."""
    data_dir = tmp_path_factory.mktemp(name)
    server = start_server(f"sqlite+aiosqlite:///{data_dir / 'grantd.db'}", secret_key, data_dir, env=env, host=host)
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- several processes of one deployment


def assert_clean_logs(servers: list[ServerProcess]) -> None:
    """No server logged a traceback, a locked database or an unhandled error."""
    for server in servers:
        log = server.log()
        for sign in FAILURE_SIGNS:
            assert sign not in log, f"{sign!r} in the log of {server.base_url}:\n{log[-4000:]}"


async def verify_on_every_server(token: str, servers: list[ServerProcess], issuer: str) -> dict[str, Any]:
    """The access token (an ES256 ``at+jwt`` naming its key) verifies against the JWKS of every given
    process, for ``issuer`` as both issuer and audience; returns its claims."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256", header
    assert header["typ"] == "at+jwt", header
    assert isinstance(header.get("kid"), str) and header["kid"], header

    claims: dict[str, Any] = {}
    for server in servers:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
            response = await client.get("/.well-known/jwks.json")
        assert response.status_code == 200, response.text
        key_set = jwt.PyJWKSet.from_dict(response.json())
        key = next((k for k in key_set.keys if k.key_id == header["kid"]), None)
        assert key is not None, f"kid {header['kid']} is not in the JWKS of {server.base_url}: {response.text}"
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["ES256"],
            audience=issuer,
            issuer=issuer,
            options={"require": ["iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"]},
        )
    return claims


Results = list[tuple[ServerProcess, httpx.Response]]


async def all_at_once(
    servers: list[ServerProcess],
    count: int,
    send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    *,
    warm_up: int = 1,
    timeout: float | None = None,
) -> tuple[Results, float]:
    """``send(client, i)`` for i in range(count), all released at one moment, alternating between the
    servers (request i goes to servers[i % len(servers)]); returns (server, response) in order, and the
    seconds from the release to the last answer.

    Each client first opens ``warm_up`` connections, so that the requests themselves start as close
    together as possible; ``timeout`` bounds the wait for all the answers."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=TIMEOUT, limits=limits) for s in servers]
    try:
        await asyncio.gather(*(c.get("/.well-known/jwks.json") for c in clients for _ in range(warm_up)))
        start = asyncio.Event()

        async def one(i: int) -> tuple[ServerProcess, httpx.Response]:
            await start.wait()
            index = i % len(servers)
            return servers[index], await send(clients[index], i)

        tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
        await asyncio.sleep(0)
        began = time.monotonic()
        start.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=timeout)
        return results, time.monotonic() - began
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def describe(results: Results, servers: list[ServerProcess], expected: Callable[[int], bool]) -> str:
    """The statuses counted; where any is not ``expected``, the first five such answers and the servers' logs."""
    statuses = Counter(r.status_code for _, r in results)
    bad = [f"{s.base_url} {r.status_code} {r.text[:300]}" for s, r in results if not expected(r.status_code)]
    logs = "\n".join(f"--- {s.base_url}\n{s.log()[-4000:]}" for s in servers) if bad else ""
    return f"statuses={dict(statuses)}\n" + "\n".join(bad[:5]) + logs


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """A small HTTP server of a test (an app's site: its callback, its post-logout page) serving
    on a thread of its own until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
