"""The targets grantd's benchmarks are held to, in one place for `make bench` (bench/run.py) and
`make bench-peers` (bench/peers.py).

They are ratios taken within one run (to the raw ASGI floor, to node-oidc-provider, to one
worker), because absolute req/s move with whatever else the machine is doing, plus a few
absolute limits (latency, memory, start-up). Each target says which database it applies to;
a target without a figure for the run's database is not printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A bound on one measured figure: ``value >= bound`` (or ``<=`` when ``at_most``)."""

    bound: float
    at_most: bool = False
    unit: str = ""

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.bound if self.at_most else value >= self.bound

    def verdict(self, value: float | None, valid: bool = True) -> str:
        """MET or NOT MET; "not measured" without a figure; FAILED when the figure's row failed its checks."""
        if value is None or math.isnan(value):
            return "not measured"
        if not valid:
            return "FAILED (the row did not pass its checks)"
        return "MET" if self.met(value) else "NOT MET"

    def __str__(self) -> str:
        if self.at_most and self.bound == 0:
            return f"0{self.unit}"
        return f"{'≤' if self.at_most else '≥'} {self.bound:g}{self.unit}"


# name → {database → target}; the names are the figures bench/run.py and bench/peers.py measure.
TARGETS: dict[str, dict[str, Target]] = {
    # POST /oauth2/token, grant_type=client_credentials, one worker pinned to one CPU
    "client_credentials_x_floor": {"sqlite": Target(0.18, unit="×"), "postgres": Target(0.15, unit="×")},
    "client_credentials_x_oidc_provider": {"sqlite": Target(2.0, unit="×")},
    "client_credentials_p99_ms": {"sqlite": Target(15, at_most=True, unit=" ms")},
    "client_credentials_non_2xx": {"sqlite": Target(0, at_most=True)},
    # Neucron POST /oauth/token, a new code each time
    "neucron_code_x_floor": {"sqlite": Target(0.18, unit="×"), "postgres": Target(0.10, unit="×")},
    # grantd serve --workers 2 (unpinned) against one worker (pinned), client_credentials
    "client_credentials_two_workers_x_one": {"sqlite": Target(1.6, unit="×"), "postgres": Target(1.6, unit="×")},
    # POST /oauth2/introspect of a live token
    "introspect_x_floor": {"sqlite": Target(0.3, unit="×"), "postgres": Target(0.3, unit="×")},
    # peak resident memory (VmHWM) of the largest server process, one worker and two
    "rss_mb_per_worker": {"sqlite": Target(100, at_most=True, unit=" MB"), "postgres": Target(100, at_most=True, unit=" MB")},
    # `grantd serve` started to its first 200
    "cold_start_s": {"sqlite": Target(1.5, at_most=True, unit=" s"), "postgres": Target(1.5, at_most=True, unit=" s")},
}


def target(name: str, db: str) -> Target | None:
    return TARGETS[name].get(db)


def table_row(label: str, measured: float | None, text: str, name: str, db: str, valid: bool = True) -> str | None:
    """``| label | measured | target | verdict |``, or None where the target does not apply to ``db``."""
    goal = target(name, db)
    if goal is None:
        return None
    return f"| {label} | {text if measured is not None and not math.isnan(measured) else '—'} | {goal} | {goal.verdict(measured, valid)} |"
