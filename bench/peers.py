"""grantd beside other OAuth 2.0 servers in one run: `make bench-peers` (BENCH_DB=postgres for PostgreSQL).

Runs the shared peers harness (`run_all.sh` in PEERS_DIR, by default ../shared/peers beside
the repository): node-oidc-provider and the raw ASGI floor (or the peers named in PEERS), each
pinned like `make bench` (server on CPU 0, wrk on CPU 1, 32 connections, 3 s warm-up, 10 s
measured), then `grantd serve` (one worker) through the harness's extra-peer hook (TARGET_*),
under the same conditions, on the same request: client_credentials with client_secret_basic.

grantd runs on a fresh database seeded as bench/run.py seeds it (an app, a key that may use
client_credentials); on PostgreSQL that database is created on BENCH_PG_ADMIN's server and
dropped afterwards. The harness checks a 200 carrying an ``access_token`` before measuring
each server; this script also checks that the token grantd returned verifies against grantd's
published keys. The floor is measured once more right after grantd (a second, floor-only run of
the harness), and grantd's ratio to the floor is taken to the mean of the two.

On a machine whose load moves, one server's 10 s can fall in a quiet moment and the next one's in
a busy one. BENCH_ROUNDS=N runs the harness N times over (floor, node-oidc-provider, grantd;
then the floor once more) and judges the targets on the median of the rounds' ratios, so that a
burst of other work spoils one round's ratio rather than the result.

Writes the harness's table, grantd's ratio to node-oidc-provider and to the floor (from the same
run) and the targets beside them to bench/results/peers-latest.md, and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from run import ROOT, database, free_port, grantd_env, seed, verify_access_token
from targets import table_row

HERE = Path(__file__).resolve().parent
SCOPE = "read_profile"  # a permission of the app bench/run.py seeds
GRANTD_ROW = "grantd"
FLOOR_ROW = "baseline-uvicorn"
OIDC_PROVIDER_ROW = "oidc-provider"


@dataclass
class PeerRow:
    """One line of the harness's TSV: name, description, req/s, p50, p99, non-2xx, socket errors, requests."""

    name: str
    what: str
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int | None
    socket_errors: int | None
    requests: int | None

    @classmethod
    def parse(cls, line: str) -> PeerRow:
        name, what, rps, p50, p99, non_2xx, sock, requests = (line.rstrip("\n").split("\t") + [""] * 8)[:8]

        def number(text: str, kind: type) -> float | int | None:
            try:
                return kind(text)
            except ValueError:  # FAILED, "-"
                return None

        return cls(name, what, number(rps, float), number(p50, float), number(p99, float), number(non_2xx, int),
                   number(sock, int), number(requests, int))

    @property
    def ok(self) -> bool:
        return bool(self.rps) and self.non_2xx == 0 and self.socket_errors == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default=os.environ.get("BENCH_DB", "sqlite"))
    parser.add_argument("--peers-dir", type=Path, default=Path(os.environ.get("PEERS_DIR") or ROOT.parent / "shared" / "peers"),
                        help="the shared peers harness (its run_all.sh)")
    parser.add_argument("--peers", default=os.environ.get("PEERS", f"{FLOOR_ROW} {OIDC_PROVIDER_ROW}"),
                        help=f"the harness's peers measured before grantd (the ratios need {FLOOR_ROW} and {OIDC_PROVIDER_ROW})")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results" / "peers",
                        help="where the harness writes each run's table, TSV, wrk output and server logs")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "peers-latest.md")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "1")),
                        help="runs of the harness one after the other; the targets are judged on the median round")
    parser.add_argument("--no-floor-after", dest="floor_after", action="store_false",
                        help=f"do not measure {FLOOR_ROW} again after grantd")
    args = parser.parse_args()

    harness = args.peers_dir / "run_all.sh"
    if not harness.is_file():
        raise SystemExit(f"no peers harness at {harness}; set PEERS_DIR")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="grantd-bench-peers-"))
    database_url, drop = database(args.db, workdir)
    try:
        from grantd.config import Settings

        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        secret_key = secrets.token_urlsafe(32)
        settings = Settings(database_url=database_url, secret_key=secret_key, data_dir=workdir, issuer=issuer)
        print(f"seeding a fresh {args.db} database …", flush=True)
        seeded = asyncio.run(seed(settings, 0, workdir))
        basic = "Basic " + base64.b64encode(f"{seeded.app_id}:{seeded.key_secret}".encode()).decode()
        env = {
            **os.environ,
            # grantd's settings reach `grantd serve` through the harness's environment, not its command line
            # (which the harness prints).
            **grantd_env(database_url, secret_key, workdir, issuer),
            "PYTHONPATH": str(ROOT / "src"),
            "RESULTS_DIR": str(args.results_dir),
            "PEERS": args.peers,
            "TARGET_NAME": GRANTD_ROW,
            "TARGET_DIR": str(ROOT),
            "TARGET_URL": f"{issuer}/oauth2/token",
            "TARGET_AUTH": basic,
            "TARGET_BODY": f"grant_type=client_credentials&scope={SCOPE}",
            "TARGET_CMD": f"{sys.executable} -m grantd serve --no-migrate --workers 1 --port {port}",
        }
        started = time.time()
        rounds: list[Round] = []
        for number in range(1, max(1, args.rounds) + 1):
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}", file=sys.stderr, flush=True)
            tsv, harness_log = run_harness(harness, env, args.results_dir)
            rows = {row.name: row for row in read_tsv(tsv)}
            rounds.append(Round(tsv, rows, check_token(harness_log, seeded.jwks, issuer)))
        floor_after = None
        if args.floor_after and FLOOR_ROW in args.peers.split():
            # The floor once more, right after grantd: a machine whose load moved during the run shows
            # as two different floors, and the ratio is taken to their mean.
            only_floor = {k: v for k, v in env.items() if not k.startswith("TARGET_")} | {"PEERS": FLOOR_ROW}
            after_tsv, _ = run_harness(harness, only_floor, args.results_dir)
            floor_after = {row.name: row for row in read_tsv(after_tsv)}.get(FLOOR_ROW)
        # Each round's floor: its own, and the next one measured (the next round's, or the one after the last).
        for this, following in zip(rounds, [*(r.rows.get(FLOOR_ROW) for r in rounds[1:]), floor_after]):
            this.floor_after = following
    finally:
        if drop:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = render(args, rounds, started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"written to {args.output}; the harness's files in {args.results_dir} "
          f"({', '.join(r.tsv.stem for r in rounds)}.*)")


def knob(name: str, default: str) -> str:
    """One of the harness's settings, as the harness reads it from the environment."""
    return os.environ.get(name) or default


def read_tsv(tsv: Path) -> list[PeerRow]:
    return [PeerRow.parse(line) for line in tsv.read_text().splitlines() if line.strip()]


@dataclass
class Round:
    """One run of the harness: its rows by name, whether grantd's token verified, the floor measured next."""

    tsv: Path
    rows: dict[str, PeerRow]
    checked: str
    floor_after: PeerRow | None = None

    @property
    def grantd(self) -> PeerRow | None:
        return self.rows.get(GRANTD_ROW)

    @property
    def valid(self) -> bool:
        return bool(self.grantd and self.grantd.ok and self.checked.startswith("ok"))

    @property
    def floors(self) -> list[float]:
        return [f.rps for f in (self.rows.get(FLOOR_ROW), self.floor_after) if f is not None and f.ok and f.rps]

    @property
    def floor_rps(self) -> float:
        return sum(self.floors) / len(self.floors) if self.floors else math.nan

    def x(self, rps: float | None) -> float:
        """grantd's req/s ÷ ``rps``."""
        grantd = self.grantd
        return grantd.rps / rps if grantd is not None and grantd.rps and rps and not math.isnan(rps) else math.nan

    @property
    def x_oidc(self) -> float:
        oidc = self.rows.get(OIDC_PROVIDER_ROW)
        return self.x(oidc.rps if oidc is not None and oidc.ok else None)

    @property
    def x_floor(self) -> float:
        return self.x(self.floor_rps)


def median(values: list[float]) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def run_harness(harness: Path, env: dict[str, str], results_dir: Path) -> tuple[Path, str]:
    """One run of the harness: its TSV (one line per server) and its log. The log (its stderr) is
    shown as it comes; its table goes to its own files, not to the screen twice."""
    before = set(results_dir.glob("*.tsv"))
    log: list[str] = []
    with subprocess.Popen(["bash", str(harness)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as process:
        assert process.stderr is not None
        for line in process.stderr:
            sys.stderr.write(line)
            log.append(line)
    if process.returncode != 0:
        raise SystemExit(f"the peers harness failed (exit {process.returncode})")
    runs = sorted(set(results_dir.glob("*.tsv")) - before)
    if not runs:
        raise SystemExit(f"the peers harness wrote no table into {results_dir}")
    return runs[-1], "".join(log)


def check_token(harness_log: str, jwks: dict, issuer: str) -> str:
    """'ok …' when the token the harness got from grantd first verifies against grantd's keys."""
    found = re.findall(rf"== {GRANTD_ROW}: .*?verified 200; token = (\S+)", harness_log, re.S)
    if not found:
        return "no token from grantd in the harness's log"
    try:
        claims = verify_access_token(found[-1], jwks, issuer)
    except Exception as exc:  # noqa: BLE001 - the report says why
        return f"the token did not verify: {exc.__class__.__name__}: {exc}"
    return f"ok: token for {claims['sub'][:8]}…, scope {claims.get('scope')!r}, verifies"


def render(args: argparse.Namespace, rounds: list[Round], started: float) -> str:
    last = rounds[-1]
    table = last.tsv.with_suffix(".table.md")
    several = len(rounds) > 1
    lines = [
        f"# grantd beside its peers ({args.db})",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} by the peers harness "
        f"({args.peers_dir}), {len(rounds)} run{'s' if several else ''} of it: each server pinned to CPU "
        f"{knob('SERVER_CPUS', '0')}, wrk to CPU {knob('LOAD_CPUS', '1')} (one thread), {knob('CONNS', '32')} connections, "
        f"{knob('WARMUP', '3')} s warm-up, {knob('DURATION', '10')} s measured (×{knob('REPEATS', '1')}, the median "
        f"repeat kept), `POST` client_credentials with client_secret_basic. grantd: `grantd serve --workers 1` on a fresh {args.db} database, body "
        f"`grant_type=client_credentials&scope={SCOPE}`.",
        "",
        *(["The harness's table of the last round:", ""] if several else []),
        table.read_text().strip() if table.exists() else "(the harness wrote no table)",
        "",
    ]
    for number, r in enumerate(rounds, 1):
        first = r.rows.get(FLOOR_ROW)
        floors = ", ".join(
            f"{label} {f.rps:,.0f}" for label, f in (("first", first), ("after grantd", r.floor_after)) if f is not None and f.rps
        )
        lines.append(
            f"- {'Round ' + str(number) + ': ' if several else ''}grantd's token: {r.checked}. "
            f"Floor ({FLOOR_ROW}) req/s: {floors or 'not measured'}; grantd's ratio is to "
            f"{'their mean' if len(r.floors) > 1 else 'it'}, {r.floor_rps:,.0f} req/s."
        )
    if several:
        lines += ["", "| round | floor req/s | node-oidc-provider req/s | grantd req/s | grantd p99 ms | "
                  "× node-oidc-provider | × floor |", "|---|---:|---:|---:|---:|---:|---:|"]
        for number, r in enumerate(rounds, 1):
            oidc, grantd = r.rows.get(OIDC_PROVIDER_ROW), r.grantd

            def rps(row: PeerRow | None) -> str:
                return f"{row.rps:,.0f}" if row is not None and row.rps else "FAILED"

            lines.append(f"| {number} | {r.floor_rps:,.0f} | {rps(oidc)} | {rps(grantd)} | "
                         f"{grantd.p99_ms if grantd and grantd.p99_ms is not None else '—'} | {r.x_oidc:.2f} | {r.x_floor:.3f} |")
    valid = all(r.valid for r in rounds)
    x_oidc, x_floor = median([r.x_oidc for r in rounds]), median([r.x_floor for r in rounds])
    p99 = median([r.grantd.p99_ms for r in rounds if r.grantd and r.grantd.p99_ms is not None])
    non_2xx = [r.grantd.non_2xx for r in rounds if r.grantd and r.grantd.non_2xx is not None]
    of = " (median of the rounds)" if several else ""
    lines += [
        "",
        f"Targets ({args.db}; {len(rounds)} run{'s' if several else ''} of the harness):",
        "",
        "| figure | measured | target | result |",
        "|---|---:|---|---|",
    ]
    figures = [
        (f"grantd ÷ node-oidc-provider, req/s{of}", x_oidc, f"{x_oidc:.2f}×", "client_credentials_x_oidc_provider", valid),
        (f"grantd ÷ the floor (raw ASGI on uvicorn), req/s{of}", x_floor, f"{x_floor:.3f}×", "client_credentials_x_floor", valid),
        (f"grantd p99{of}", p99, f"{p99:.1f} ms", "client_credentials_p99_ms", True),
        ("grantd non-2xx" + (" (all rounds)" if several else ""), float(sum(non_2xx)) if non_2xx else math.nan,
         str(sum(non_2xx)), "client_credentials_non_2xx", True),
    ]
    for label, value, text, name, ok in figures:
        line = table_row(label, value, text, name, args.db, ok)
        if line is None:  # no target on this database: the figure still counts
            line = f"| {label} | {'—' if math.isnan(value) else text} | — | — |"
        lines.append(line)
    failed = [str(n) for n, r in enumerate(rounds, 1) if not r.valid]
    if failed:
        lines += ["", f"grantd's row FAILED, had errors, or its token did not verify in round(s) {', '.join(failed)}; "
                  f"see the harness's server logs in {args.results_dir}."]
    lines += ["", "Reproduce: `make bench-peers` (or `BENCH_DB=postgres make bench-peers`; `BENCH_ROUNDS=3` for three rounds).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
