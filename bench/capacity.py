"""Real-time capacity: how many pendulums, each a caller at its control rate, a server keeps
within one control period."""

from __future__ import annotations

import time
from typing import Any

from bench import load
from bench.load import Job, Pool
from bench.scale import Scale

CONTROL_HZ = 20.0  # Pendulum-v1's dt is 0.05 s: one action per pendulum every 50 ms
DEADLINE_MS = 1e3 / CONTROL_HZ


def capacity(pool: Pool, target: str, method: load.Method, scale: Scale) -> dict[str, Any]:
    """The most pendulums, each a caller at 20 Hz, served with p99 under one control period, no
    failed call and every tick sent: doubling from `capacity_start`, then bisection, within the
    time budget and `capacity_limit` callers."""
    deadline = time.monotonic() + scale.capacity_budget_s
    probes: list[dict[str, Any]] = []

    def fits(callers: int) -> bool | None:
        cost = scale.capacity_warmup_s + scale.capacity_probe_s + load.SETUP_S + 0.004 * callers
        if time.monotonic() + cost + 1.0 > deadline and probes:
            return None  # out of time: the search stops with what it knows
        job = Job(
            target,
            method,
            callers,
            rate_hz=CONTROL_HZ,
            warmup_s=scale.capacity_warmup_s,
            duration_s=scale.capacity_probe_s,
            timeout_s=1.0,
        )
        outcome = pool.run(job)
        expected = callers * CONTROL_HZ * scale.capacity_probe_s
        sent = len(outcome.latencies) + outcome.errors
        p99 = outcome.percentile_ms(99)
        ok = outcome.errors == 0 and p99 < DEADLINE_MS and sent >= 0.95 * expected
        probes.append(
            {
                "callers": callers,
                "ok": ok,
                "p50_ms": outcome.percentile_ms(50),
                "p99_ms": p99,
                "errors": outcome.errors,
                "sent_fraction": sent / expected,
            }
        )
        return ok

    good, bad = 0, None
    n = scale.capacity_start
    bound = "limit"
    while n <= scale.capacity_limit:
        verdict = fits(n)
        if verdict is None:
            bound = "time"
            break
        if not verdict:
            bad = n
            break
        good, n = n, n * 2
    while bad is not None and bad - good > max(1, good // 16):
        mid = (good + bad) // 2
        verdict = fits(mid)
        if verdict is None:
            bound = "time"
            break
        good, bad = (mid, bad) if verdict else (good, mid)
    if bad is not None and bound != "time":
        bound = "search"
    return {"pendulums": good, "first_failing": bad, "bounded_by": bound, "probes": probes}
