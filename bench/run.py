"""grantd's token-endpoint benchmark: `make bench` (BENCH_DB=postgres for PostgreSQL).

One run measures grantd and a floor (a raw ASGI app returning fixed JSON, served the
same way) on the same machine, so the ratios stand while absolute numbers move:

- the server under test is pinned to CPU 0, wrk to CPU 1, 32 keep-alive connections;
- grantd runs on a fresh database, seeded in-process with a developer, an app, a key,
  and enough codes and refresh tokens that every request spends a new one;
- every row checks that its last 200 carried a real token (verified against the JWKS),
  and a row with any non-2xx response or socket error is marked failed;
- afterwards `grantd serve --workers 2`, unpinned, repeats the two headline rows;
- the SDK's side: grantd.sdk.TokenVerifier, pinned to CPU 1, verifies tokens the server issued
  (bench/verifier.py), against the bare ES256 signature check as its floor;
- every target of bench/targets.py the run measured is printed beside its figure, MET or NOT MET.

Writes the table to bench/results/latest.md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from targets import table_row, target

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REDIRECT_URI = "https://bench.example/callback"
# Distinct tokens the SDK verifier benchmark cycles through.
VERIFIER_TOKENS = 500
PASSWORD = "bench password 1"


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    cold_start_s: float

    def pids(self) -> list[int]:
        """The server's process and its children (uvicorn workers)."""
        result = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [self.process.pid, *(int(p) for p in result.stdout.split())]

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the process, or of its largest worker."""
        return self._memory_mb("VmHWM")

    def rss_mb(self) -> float:
        """Resident memory now (VmRSS) of the process, or of its largest worker."""
        return self._memory_mb("VmRSS")

    def _memory_mb(self, field: str) -> float:
        values = []
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(field + r":\s+(\d+) kB", status)
            if match:
                values.append(int(match.group(1)) / 1024)
        return max(values) if values else float("nan")

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the server's processes have used so far."""
        return _cpu_seconds_of(self.pids())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# Every server started, so that a run that fails midway stops them too (each runs in a session of its own).
_STARTED: list[Server] = []


def start(name: str, argv: list[str], env: dict[str, str], base_url: str, probe: str, log: Path) -> Server:
    """Start a server and wait for its first 200 on ``probe``; the time that took is its cold start."""
    started = time.perf_counter()
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    while time.perf_counter() - started < 60:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited early; see {log}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base_url + probe, timeout=1).status_code == 200:
                server = Server(name, process, base_url, time.perf_counter() - started)
                _STARTED.append(server)
                return server
        except httpx.HTTPError:
            time.sleep(0.01)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"{name} did not answer within 60 s; see {log}")


def wait_for_workers(port: int, workers: int, settle: float = 5.0) -> None:
    """Give every worker time to listen before wrk opens its keep-alive connections: the first 200
    comes from the first worker up, and a worker not yet listening when wrk connects would get none
    of them. Where each worker listens on a socket of its own, waits until ``workers`` sockets
    listen on the port; otherwise (one shared socket) for ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        if listening_sockets(port) >= workers:
            time.sleep(0.2)
            return
        time.sleep(0.05)


def listening_sockets(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                count += 1
    return count


# ---------------------------------------------------------------- seeding


def grantd_env(database_url: str, secret_key: str, workdir: Path, issuer: str) -> dict[str, str]:
    """The environment `grantd serve` runs with in a benchmark."""
    return {
        "GRANTD_DATABASE_URL": database_url,
        "GRANTD_SECRET_KEY": secret_key,
        "GRANTD_DATA_DIR": str(workdir),
        "GRANTD_ISSUER": issuer,
        "GRANTD_LOG_LEVEL": "warning",
        # Nothing the run issues expires within it; a prune's walk of the tables (at most once an
        # hour in a server) would only add noise to a long run's rows.
        "GRANTD_PRUNE_INTERVAL": "0",
    }


@dataclass
class Seed:
    app_id: str
    key_id: str
    key_secret: str
    app_key: str
    user_token: str
    access_token: str
    codes_file: Path
    refresh_file: Path
    jwks: dict[str, Any]  # the published signing keys, to verify the tokens the server issues


async def seed(settings: Any, count: int, workdir: Path) -> Seed:
    """A developer, an app, a key, a consenting user, and ``count`` fresh codes and refresh tokens."""
    from sqlalchemy import insert

    from grantd.core import accounts, apps, authorization, signing_keys
    from grantd.core.client_auth import KeyPair
    from grantd.core.grants import client_credentials
    from grantd.core.context import Context
    from grantd.store.migrate import upgrade
    from grantd.store.schema import authorization_codes, refresh_tokens

    ctx = Context.from_settings(settings)
    try:
        await upgrade(ctx.db)
        await signing_keys.ensure_active(ctx)
        await signing_keys.load(ctx)
        developer = await accounts.create_user(ctx, "developer@bench.example", PASSWORD)
        created = await apps.create(ctx, developer, "Bench", [REDIRECT_URI], "read_profile,write_data")
        app_id = created.app.app_id
        key = await apps.create_key(ctx, developer, app_id)
        user = await accounts.sign_up(ctx, "user@bench.example", PASSWORD)
        principal = await accounts.authenticate(ctx, user.access_token)
        request = authorization.AuthorizationRequest(app_id, created.app_key, "s", REDIRECT_URI, "read_profile")
        await authorization.grant_permissions(ctx, principal, request)
        access_token = (await client_credentials.token_request(ctx, KeyPair(key.key_id, key.key_secret), {}, None)).access_token
        jwks = json.loads(ctx.signing.jwks_document)

        now = ctx.now()
        codes = [secrets.token_urlsafe(32) for _ in range(count)]
        refresh = [secrets.token_urlsafe(32) for _ in range(count)]
        code_rows = [
            {
                "code_hash": ctx.hasher.hash(code),
                "app_id": app_id,
                "user_id": user.user_id,
                "redirect_uri": REDIRECT_URI,
                "permissions": "read_profile",
                "state": "s",
                "created_at": now,
                "expires_at": now + 3600,
            }
            for code in codes
        ]
        refresh_rows = [
            {
                "token_hash": ctx.hasher.hash(token),
                "code_hash": ctx.hasher.hash(f"bench family {i}"),
                "app_id": app_id,
                "user_id": user.user_id,
                "scope": "read_profile",
                "access_jti": str(uuid.uuid4()),
                "issued_at": now,
                "expires_at": now + 86400,
            }
            for i, token in enumerate(refresh)
        ]
        for table, rows in ((authorization_codes, code_rows), (refresh_tokens, refresh_rows)):
            for start in range(0, len(rows), 10_000):
                async with ctx.db.write() as tx:
                    await tx.execute(insert(table), rows[start : start + 10_000])
    finally:
        await ctx.close()
    codes_file, refresh_file = workdir / "codes.txt", workdir / "refresh.txt"
    codes_file.write_text("\n".join(codes) + "\n")
    refresh_file.write_text("\n".join(refresh) + "\n")
    return Seed(
        app_id, key.key_id, key.key_secret, created.app_key, user.access_token, access_token, codes_file, refresh_file, jwks
    )


# ---------------------------------------------------------------- measuring


@dataclass
class Row:
    name: str
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    checked: str = ""
    per: float = 1.0  # requests per counted operation (the full flow is two)
    floor_rps: float = 0.0  # the floor measured just before this row
    cpu_us: float = float("nan")  # the server's CPU time (all its processes) per request
    db_cpu_us: float = float("nan")  # PostgreSQL's CPU time (all its processes) per request, on PostgreSQL
    wrk_cpus: float = float("nan")  # the CPUs wrk kept busy during the row (its CPU time / the row's length)
    notes: list[str] = field(default_factory=list)
    key: str = ""  # the row's name in --only: neucron_code, client_credentials, …

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.non_2xx == 0 and self.socket_errors == 0 and self.checked.startswith("ok")

    @property
    def ops(self) -> float:
        return self.rps / self.per


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(base_url: str, script: str, env: dict[str, str], duration: int, connections: int, cpu: str | None) -> Row:
    last = Path(tempfile.mkstemp(suffix=".json")[1])
    argv = pinned(
        cpu,
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s", "-s", str(HERE / "lua" / script), base_url],
    )
    result = subprocess.run(argv, env={**os.environ, **env, "BENCH_LAST": str(last)}, capture_output=True, text=True)
    out = result.stdout
    row = Row(name="")
    if result.returncode != 0:
        row.notes.append(f"wrk failed: {result.stderr.strip()[:200]}")
        return row
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        row.rps = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        row.requests = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        row.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        row.socket_errors = sum(int(g) for g in m.groups())
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
            setattr(row, attr, _ms(m.group(1), m.group(2)))
    row.notes.append(last.read_text())
    last.unlink()
    return row


def verify_access_token(token: str, jwks: dict[str, Any], issuer: str) -> dict[str, Any]:
    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
    header = jwt.get_unverified_header(token)
    return jwt.decode(token, keys[header["kid"]], algorithms=["ES256"], audience=issuer, issuer=issuer)


def check(kind: str, body: str, jwks: dict[str, Any], issuer: str) -> str:
    """'ok …' when the last 200 of a row carried what it should; why not otherwise."""
    if not body:
        return "no 200 seen"
    try:
        data = json.loads(body)
        if kind == "neucron":
            claims = verify_access_token(data["data"]["access_token"], jwks, issuer)
            return f"ok: token of user {claims['user_id'][:8]}… verifies"
        if kind == "oauth2":
            claims = verify_access_token(data["access_token"], jwks, issuer)
            return f"ok: token for {claims['sub'][:8]}… verifies"
        if kind == "refresh":
            verify_access_token(data["access_token"], jwks, issuer)
            return "ok: token verifies, new refresh token" if data.get("refresh_token") else "no refresh_token"
        if kind == "introspect":
            return "ok: active" if data.get("active") is True else f"not active: {body[:80]}"
        if kind == "jwks":
            return f"ok: {len(data['keys'])} key(s)" if data.get("keys") else "no keys"
        if kind == "floor":
            return "ok: fixed body"
    except Exception as exc:  # noqa: BLE001 - a bench row reports, it does not crash
        return f"check failed: {exc.__class__.__name__}: {exc}"
    return "unknown kind"


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "10")))
    parser.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", "32")))
    parser.add_argument("--db", choices=["sqlite", "postgres"], default=os.environ.get("BENCH_DB", "sqlite"))
    parser.add_argument("--max-rps", type=int, default=int(os.environ.get("BENCH_MAX_RPS", "15000")),
                        help="codes and refresh tokens are seeded for this rate over the run")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.md")
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""), metavar="ROWS",
                        help="comma-separated rows to run: neucron_code, client_credentials, refresh, flow, introspect, jwks, verifier")
    parser.add_argument("--py-spy", type=Path, default=os.environ.get("BENCH_PY_SPY") or None, metavar="DIR",
                        help="sample the server with py-spy during each row; raw profiles and a "
                             "summary go to DIR (the sampler takes CPU: use it to see where time goes, not for the table)")
    args = parser.parse_args()

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; `make bench` installs it")
    workdir = Path(tempfile.mkdtemp(prefix="grantd-bench-"))
    log = workdir / "server.log"
    database_url, drop = database(args.db, workdir)
    secret_key = secrets.token_urlsafe(32)
    from grantd.config import Settings

    issuer_port = free_port()
    # The issuer is fixed before the server starts; the server then binds that port.
    issuer = f"http://127.0.0.1:{issuer_port}"
    settings = Settings(database_url=database_url, secret_key=secret_key, data_dir=workdir, issuer=issuer)
    count = args.max_rps * (args.duration + 3)
    print(f"seeding {count} codes and {count} refresh tokens into {args.db} …", flush=True)
    seeded = asyncio.run(seed(settings, count, workdir))

    env = {**os.environ, **grantd_env(database_url, secret_key, workdir, issuer)}
    rows: list[Row] = []
    try:
        floor_port = free_port()
        floor_server = start(
            "floor",
            pinned("0", [sys.executable, "-m", "uvicorn", "floor:app", "--port", str(floor_port), "--loop", "uvloop",
                         "--http", "httptools", "--no-access-log", "--log-level", "warning", "--app-dir", str(HERE)]),
            env, f"http://127.0.0.1:{floor_port}", "/", log,
        )
        # The floor runs on the same CPU and is measured again right before every grantd row, so
        # that each ratio compares two figures taken moments apart on a machine whose load moves.
        def floor() -> Row:
            return measure_floor(floor_server, args)

        grantd_argv = [sys.executable, "-m", "grantd", "serve", "--no-migrate", "--port", str(issuer_port)]
        server = start("grantd", pinned("0", grantd_argv), env, issuer, "/.well-known/jwks.json", log)
        jwks = httpx.get(issuer + "/.well-known/jwks.json").json()
        only = tuple(args.only.split(",")) if args.only else None
        rows = measure_grantd(server, seeded, jwks, issuer, args, cpu="1", floor=floor, only=only)
        verifier = measure_verifier(issuer, seeded, args, workdir) if not only or "verifier" in only else None
        memory = (server.rss_mb(), server.peak_rss_mb())
        cold = server.cold_start_s
        server.stop()

        two_only = tuple(r for r in ("neucron_code", "client_credentials") if not only or r in only)
        two_rows: list[Row] = []
        memory_two = (float("nan"), float("nan"))
        if two_only:
            two = start("grantd --workers 2", grantd_argv + ["--workers", "2"], env, issuer, "/.well-known/jwks.json", log)
            wait_for_workers(issuer_port, 2)
            two_rows = measure_grantd(two, seeded, jwks, issuer, args, cpu=None, only=two_only)
            memory_two = (two.rss_mb(), two.peak_rss_mb())
            two.stop()
        floor_server.stop()
    finally:
        for started in _STARTED:  # those a failure left running
            started.stop()
        if drop:
            drop()
        # The database and the seeded codes are a few hundred MB a run: only the server log stays.
        for path in workdir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path != log:
                path.unlink()
    report = render(args, rows, two_rows, memory, memory_two, cold, verifier)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"written to {args.output}; server log in {log}")


def measure_verifier(issuer: str, seeded: Seed, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Tokens the server issues (client_credentials), then bench/verifier.py on one CPU: tokens/s by mode."""
    tokens_file = workdir / "access-tokens.txt"
    with httpx.Client(base_url=issuer, auth=(seeded.app_id, seeded.key_secret)) as client:
        tokens = [
            client.post("/oauth2/token", data={"grant_type": "client_credentials"}).raise_for_status().json()["access_token"]
            for _ in range(VERIFIER_TOKENS)
        ]
    tokens_file.write_text("\n".join(tokens) + "\n")
    seconds = str(max(1, args.duration // 2))
    argv = pinned("1", [sys.executable, str(HERE / "verifier.py"), "--issuer", issuer, "--tokens", str(tokens_file),
                        "--seconds", seconds])
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if result.returncode != 0:
        raise SystemExit(f"bench/verifier.py failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def _cpu_seconds_of(pids: list[int]) -> float:
    """CPU time (user and system) the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """The CPU time of this machine's PostgreSQL processes (backends included) so far."""
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    return _cpu_seconds_of([int(pid) for pid in found])


def _children_cpu_seconds() -> float:
    """CPU time of this script's finished child processes (wrk, once a row is done)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_floor(server: Server, args: argparse.Namespace) -> Row:
    duration = max(2, args.duration // 2)
    row = wrk(server.base_url, "fixed.lua", {"BENCH_METHOD": "POST", "BENCH_PATH": "/", "BENCH_BODY": "{}",
                                              "BENCH_CONTENT_TYPE": "application/json"}, duration, args.connections, "1")
    row.name = "floor: raw ASGI, fixed JSON"
    row.checked = check("floor", row.notes.pop(), {}, "")
    return row


def measure_grantd(
    server: Server, seeded: Seed, jwks: dict[str, Any], issuer: str, args: argparse.Namespace, cpu: str | None,
    only: tuple[str, ...] | None = None, floor: Any = None,
) -> list[Row]:
    basic = "Basic " + base64.b64encode(f"{seeded.app_id}:{seeded.key_secret}".encode()).decode()
    form = "application/x-www-form-urlencoded"
    authorize_body = json.dumps({"token": {"app_id": seeded.app_id, "app_key": seeded.app_key, "state": "s",
                                           "redirect_uri": REDIRECT_URI, "permissions": "read_profile"}})
    cases: list[tuple[str, str, str, str, dict[str, str], float]] = [
        ("neucron_code", "1. Neucron POST /oauth/token (new code each)", "neucron", "lines.lua", {
            "BENCH_LINES": str(seeded.codes_file), "BENCH_PATH": "/oauth/token", "BENCH_CONTENT_TYPE": "application/json",
            "BENCH_TEMPLATE": '{"token":{"auth_code":"%s","key_id":"' + seeded.key_id + '","key_secret":"' + seeded.key_secret + '"}}',
        }, 1.0),
        ("client_credentials", "2. POST /oauth2/token client_credentials", "oauth2", "fixed.lua", {
            "BENCH_METHOD": "POST", "BENCH_PATH": "/oauth2/token", "BENCH_CONTENT_TYPE": form, "BENCH_AUTH": basic,
            "BENCH_BODY": "grant_type=client_credentials",
        }, 1.0),
        ("refresh", "3. POST /oauth2/token refresh_token rotation", "refresh", "lines.lua", {
            "BENCH_LINES": str(seeded.refresh_file), "BENCH_PATH": "/oauth2/token", "BENCH_CONTENT_TYPE": form,
            "BENCH_AUTH": basic, "BENCH_TEMPLATE": "grant_type=refresh_token&refresh_token=%s",
        }, 1.0),
        ("flow", "4. full Neucron flow (authorize + token), flows/s", "neucron", "flow.lua", {
            "BENCH_USER_TOKEN": seeded.user_token, "BENCH_AUTHORIZE_BODY": authorize_body,
            "BENCH_KEY_ID": seeded.key_id, "BENCH_KEY_SECRET": seeded.key_secret,
        }, 2.0),
        ("introspect", "5. POST /oauth2/introspect", "introspect", "fixed.lua", {
            "BENCH_METHOD": "POST", "BENCH_PATH": "/oauth2/introspect", "BENCH_CONTENT_TYPE": form, "BENCH_AUTH": basic,
            "BENCH_BODY": f"token={seeded.access_token}",
        }, 1.0),
        ("jwks", "6. GET /.well-known/jwks.json", "jwks", "fixed.lua", {
            "BENCH_METHOD": "GET", "BENCH_PATH": "/.well-known/jwks.json", "BENCH_BODY": "",
        }, 1.0),
    ]
    rows = []
    for key, name, kind, script, env, per in cases:
        if only and key not in only:
            continue
        floor_row = floor() if floor is not None else None
        spy_key = key if cpu is not None else f"{key}-workers"
        spy = sample(server, spy_key, args) if args.py_spy else None
        db_before = postgres_cpu_seconds() if args.db == "postgres" else None
        cpu_before, wrk_before = server.cpu_seconds(), _children_cpu_seconds()
        row = wrk(server.base_url, script, env, args.duration, args.connections, cpu)
        if row.requests:
            row.cpu_us = (server.cpu_seconds() - cpu_before) / row.requests * 1e6
            row.wrk_cpus = (_children_cpu_seconds() - wrk_before) / args.duration
            if db_before is not None:
                row.db_cpu_us = (postgres_cpu_seconds() - db_before) / row.requests * 1e6
        if spy is not None:
            spy.wait()
            print(summarize(args.py_spy / f"{spy_key}.txt", name), flush=True)
        row.name, row.per, row.key = name, per, key
        row.checked = check(kind, row.notes.pop(), jwks, issuer)
        if floor_row is not None:
            row.floor_rps = floor_row.rps if floor_row.ok else 0.0
        rows.append(row)
        if script == "lines.lua":
            _spend(Path(env["BENCH_LINES"]), row.requests)
    return rows


def sample(server: Server, key: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (and its workers) for the row's duration, less two seconds."""
    args.py_spy.mkdir(parents=True, exist_ok=True)
    out = args.py_spy / f"{key}.txt"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [py_spy, "record", "--pid", str(server.process.pid), "--duration", str(max(1, args.duration - 2)),
            "--rate", "250", "--nonblocking", "--subprocesses", "--format", "raw", "--output", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return spy


def summarize(raw: Path, name: str, top: int = 25) -> str:
    """The functions py-spy saw most, by own samples and with what they call."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    if not raw.exists():
        return f"{name}: py-spy wrote nothing (is it installed, and may it read other processes?)"
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    lines = [f"## {name}: {total} samples ({raw})", "own:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in sorted(own.items(), key=lambda i: -i[1])[:top]]
    lines.append("with callees:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in sorted(inclusive.items(), key=lambda i: -i[1])[:top]]
    return "\n".join(lines)


def _spend(path: Path, used: int) -> None:
    """Drop the lines a run used (wrk takes them from the front), so the next run starts on fresh ones."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[used + 64 :]) + "\n")


def database(kind: str, workdir: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'bench.db'}", None
    import asyncpg

    name = f"grantd_bench_{secrets.token_hex(4)}"
    admin = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", lambda: asyncio.run(
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    )


def _cpu_text(row: Row) -> str:
    if math.isnan(row.db_cpu_us):
        return f"{row.cpu_us:.0f}"
    return f"{row.cpu_us:.0f} (+ {row.db_cpu_us:.0f} PostgreSQL)"


def render(
    args: argparse.Namespace,
    rows: list[Row],
    two: list[Row],
    memory: tuple[float, float],
    memory_two: tuple[float, float],
    cold: float,
    verifier: dict[str, float] | None = None,
) -> str:
    floors = sorted(r.floor_rps for r in rows if r.floor_rps)
    median_floor = floors[len(floors) // 2] if floors else float("nan")
    lines = [
        f"# grantd benchmark ({args.db}, {args.connections} connections, {args.duration} s a row)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs; "
        "server pinned to CPU 0, wrk to CPU 1 (the two-worker rows are unpinned). The floor (a raw ASGI "
        "app returning fixed JSON, served the same way) is measured right before each row; "
        "\"× floor\" divides the row by that measurement.",
        "",
        "| row | req/s | ops/s | p50 ms | p99 ms | non-2xx | server CPU µs/req | floor req/s | × floor | target | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    one_worker = [(row, FLOOR_TARGETS.get(row.key)) for row in rows]
    for row, goal_name in [*one_worker, *[(_renamed(r, " — 2 workers, unpinned"), None) for r in two]]:
        ratio = f"{row.rps / row.floor_rps:.3f}" if row.floor_rps else "—"
        floor_text = f"{row.floor_rps:,.0f}" if row.floor_rps else "—"
        status = row.checked if row.ok else f"FAILED ({row.checked}; socket errors {row.socket_errors})"
        goal = target(goal_name, args.db) if goal_name else None
        goal_text = f"{goal} {goal.verdict(_x_floor(row), row.ok)}" if goal else ""
        lines.append(
            f"| {row.name} | {row.rps:,.0f} | {row.ops:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
            f"{row.non_2xx} | {_cpu_text(row)} | {floor_text} | {ratio} | {goal_text} | {status} |"
        )
    by_name = {r.name: r for r in rows}
    lines += [
        "",
        f"- Floor, median of the rows' measurements: {median_floor:,.0f} req/s (from {floors[0]:,.0f} to {floors[-1]:,.0f})."
        if floors else "- Floor: not measured.",
        f"- Server memory after the runs: {memory[0]:.0f} MB resident (peak {memory[1]:.0f} MB) with one worker; "
        f"{memory_two[0]:.0f} MB (peak {memory_two[1]:.0f} MB) per worker with two.",
        f"- Cold start to first 200: {cold:.2f} s.",
    ]
    for two_row in two:
        one = by_name.get(two_row.name)
        if one and one.rps:
            lines.append(
                f"- {two_row.name.split('. ', 1)[-1]}: 2 workers = {two_row.rps / one.rps:.2f} × one worker; "
                f"the workers kept {two_row.rps * two_row.cpu_us / 1e6:.2f} CPUs busy and wrk {two_row.wrk_cpus:.2f} "
                f"(one worker: {one.rps * one.cpu_us / 1e6:.2f}, at {one.cpu_us:.0f} µs a request; two: {two_row.cpu_us:.0f} µs)."
            )
    if verifier:
        floor_rate = verifier["floor"]
        lines += [
            "",
            f"SDK verifier (`grantd.sdk.TokenVerifier`, one thread pinned to CPU 1, {VERIFIER_TOKENS} tokens the "
            "server issued); the floor is the ES256 signature check alone (`cryptography`, same key and tokens):",
            "",
            "| mode | tokens/s | × floor |",
            "|---|---:|---:|",
        ]
        for key, label in (
            ("floor", "floor: ES256 signature check only"),
            ("verify_new", "verify(), a token not seen before (every check, signature included)"),
            ("verify_again", "verify(), a token verified before (signature remembered, the rest checked)"),
            ("averify_again", "await averify(), a token verified before"),
        ):
            lines.append(f"| {label} | {verifier[key]:,.0f} | {verifier[key] / floor_rate:.2f} |")
    lines += ["", *targets_table(args.db, rows, two, memory, memory_two, cold)]
    lines += ["", "Reproduce: `make bench` (or `BENCH_DB=postgres make bench`).", ""]
    return "\n".join(lines)


# The rows whose ratio to the floor has a target (bench/targets.py), and the target's label.
FLOOR_TARGETS = {
    "neucron_code": "neucron_code_x_floor",
    "client_credentials": "client_credentials_x_floor",
    "introspect": "introspect_x_floor",
}
FLOOR_TARGET_LABELS = {
    "neucron_code": "1. Neucron code redemption × floor",
    "client_credentials": "2. client_credentials × floor",
    "introspect": "5. introspection × floor",
}


def _x_floor(row: Row | None) -> float:
    return row.rps / row.floor_rps if row is not None and row.floor_rps else float("nan")


def targets_table(
    db: str, rows: list[Row], two: list[Row], memory: tuple[float, float], memory_two: tuple[float, float], cold: float
) -> list[str]:
    """Every target of bench/targets.py that this run measures, with what it measured and MET or NOT MET."""
    one_by_key, two_by_key = {r.key: r for r in rows}, {r.key: r for r in two}
    nan = float("nan")
    cc, cc_two = one_by_key.get("client_credentials"), two_by_key.get("client_credentials")
    scaling = cc_two.rps / cc.rps if cc and cc_two and cc.rps else nan
    peaks = [m for m in (memory[1], memory_two[1]) if not math.isnan(m)]
    figures: list[tuple[str, float, str, str, bool]] = []  # label, value, value as text, target name, row passed
    for key, name in FLOOR_TARGETS.items():
        row = one_by_key.get(key)
        value = _x_floor(row)
        figures.append((FLOOR_TARGET_LABELS[key], value, f"{value:.3f}", name, bool(row and row.ok)))
    figures += [
        ("2. client_credentials p99", cc.p99_ms if cc else nan, f"{cc.p99_ms:.1f} ms" if cc else "", "client_credentials_p99_ms", True),
        ("2. client_credentials non-2xx", float(cc.non_2xx) if cc else nan, str(cc.non_2xx) if cc else "",
         "client_credentials_non_2xx", True),
        ("2. client_credentials, `--workers 2` (unpinned) ÷ one worker (pinned)", scaling, f"{scaling:.2f}×",
         "client_credentials_two_workers_x_one", bool(cc and cc_two and cc.ok and cc_two.ok)),
        ("peak resident memory of a worker (one worker / two)", max(peaks) if peaks else nan,
         " / ".join(f"{m:.0f} MB" for m in (memory[1], memory_two[1])), "rss_mb_per_worker", True),
        ("cold start to the first 200", cold, f"{cold:.2f} s", "cold_start_s", True),
    ]
    lines = [f"Targets ({db}; × node-oidc-provider is measured by `make bench-peers`):", "",
             "| figure | measured | target | result |", "|---|---:|---|---|"]
    for label, value, text, name, valid in figures:
        line = table_row(label, value, text, name, db, valid)
        if line is not None:
            lines.append(line)
    return lines


def _renamed(row: Row, suffix: str) -> Row:
    copy = Row(**{**row.__dict__})
    copy.name = row.name + suffix
    return copy


if __name__ == "__main__":
    main()
