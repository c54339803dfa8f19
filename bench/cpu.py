"""Where a token request's time goes: grantd's ASGI app driven in-process, without sockets.

    .venv/bin/python bench/cpu.py [neucron|client_credentials|refresh|introspect|authorize|jwks] [--requests N] [--profile | --cprofile]

Seeds a fresh SQLite database as `bench/run.py` does, then sends N requests through the
whole ASGI application (every middleware, the hot routes, the database, the signature) from
32 concurrent tasks, and prints the CPU time per request (``time.process_time``, which a
busy machine disturbs far less than wall-clock throughput). With ``--profile`` it prints
pyinstrument's profile of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import REDIRECT_URI, postgres_cpu_seconds, seed  # noqa: E402

CONCURRENCY = 32


def _request(kind: str, seeded: Any, codes: list[str], refresh: list[str]) -> tuple[str, str, bytes, list[tuple[bytes, bytes]]]:
    basic = b"Basic " + base64.b64encode(f"{seeded.app_id}:{seeded.key_secret}".encode())
    form = [(b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", basic)]
    if kind == "neucron":
        body = ('{"token":{"auth_code":"%s","key_id":"%s","key_secret":"%s"}}' % (codes.pop(), seeded.key_id, seeded.key_secret)).encode()
        return "POST", "/oauth/token", body, [(b"content-type", b"application/json")]
    if kind == "client_credentials":
        return "POST", "/oauth2/token", b"grant_type=client_credentials", form
    if kind == "refresh":
        return "POST", "/oauth2/token", f"grant_type=refresh_token&refresh_token={refresh.pop()}".encode(), form
    if kind == "introspect":
        return "POST", "/oauth2/introspect", f"token={seeded.access_token}".encode(), form
    if kind == "authorize":
        body = json.dumps({"token": {"app_id": seeded.app_id, "app_key": seeded.app_key, "state": "s",
                                     "redirect_uri": REDIRECT_URI, "permissions": "read_profile"}}).encode()
        return "POST", "/oauth/authorize", body, [
            (b"content-type", b"application/json"), (b"authorization", f"Bearer {seeded.user_token}".encode())
        ]
    if kind == "jwks":
        return "GET", "/.well-known/jwks.json", b"", []
    raise SystemExit(f"unknown kind {kind}")


async def _call(app: Any, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", nargs="?", default="neucron")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="pyinstrument's call tree of the run")
    parser.add_argument("--access-log", action="store_true", help="log each request, as at log level info (make bench runs at warning)")
    parser.add_argument("--cprofile", action="store_true", help="cProfile's flat list, by own time")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="grantd-profile-"))
    os.environ.update(
        {
            "GRANTD_DATA_DIR": str(workdir / "var"),
            "GRANTD_LOG_FORMAT": "json",
            "GRANTD_RATE_LIMIT_ENABLED": "false",
        }
    )
    from grantd.config import Settings
    from grantd.server import create_app

    settings = Settings()
    seeded = await seed(settings, args.requests + 100, workdir)
    codes = seeded.codes_file.read_text().split()
    refresh = seeded.refresh_file.read_text().split()
    app = create_app(settings)
    # Logging as `make bench` runs grantd (level warning: no access line), or with --access-log as
    # `grantd serve` logs by default (one JSON line a request), into /dev/null.
    import logging.config

    from grantd import logs

    config = logs.config("info" if args.access_log else "warning", "json")
    for handler in config.get("handlers", {}).values():
        if "stream" in handler:
            handler["stream"] = open(os.devnull, "w")
    logging.config.dictConfig(config)
    async with app.router.lifespan_context(app):
        requests = [_request(args.kind, seeded, codes, refresh) for _ in range(args.requests)]
        for method, path, body, headers in requests[:50]:  # warm up
            await _call(app, method, path, body, headers)
        requests = requests[50:]
        queue = iter(requests)
        statuses: dict[int, int] = {}

        async def worker() -> None:
            for method, path, body, headers in queue:
                status = await _call(app, method, path, body, headers)
                statuses[status] = statuses.get(status, 0) + 1

        profiler = None
        flat = None
        if args.cprofile:
            import cProfile

            flat = cProfile.Profile()
            flat.enable()
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled")
            profiler.start()
        on_postgres = not settings.resolved_database_url.startswith("sqlite")
        postgres = postgres_cpu_seconds() if on_postgres else 0.0
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        postgres = postgres_cpu_seconds() - postgres if on_postgres else 0.0
        if flat is not None:
            import pstats

            flat.disable()
            pstats.Stats(flat).sort_stats("tottime").print_stats(45)
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    n = len(requests)
    also = f" (+ {postgres / n * 1e6:.0f} µs of PostgreSQL's)" if postgres else ""
    print(f"{args.kind}: {n} requests, statuses {statuses}, {cpu / n * 1e6:.0f} µs CPU{also} and {wall / n * 1e6:.0f} µs wall each")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
