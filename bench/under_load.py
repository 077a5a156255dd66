"""What a server does under a long closed-loop load: its memory over time, and where its CPU
goes (py-spy)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import load, pyspy
from bench.load import Job, Pool
from bench.scale import Scale
from bench.servers import Served


def _in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    return thread, result


def memory(pool: Pool, served: Served, target: str, scale: Scale) -> dict[str, Any]:
    """The server's RSS, sampled twice a second through a closed-loop load of `memory_s`."""
    process = psutil.Process(served.pid)
    job = Job(
        target, "unary", scale.memory_callers, warmup_s=scale.warmup_s, duration_s=scale.memory_s
    )
    start = time.monotonic()
    window = start + load.SETUP_S + 0.004 * job.callers + job.warmup_s
    thread, result = _in_background(lambda: pool.run(job))
    samples: list[tuple[float, float]] = []
    while thread.is_alive():
        now = time.monotonic()
        if now >= window:
            samples.append((now - window, process.memory_info().rss / 2**20))
        thread.join(0.5)
    if not result:
        raise RuntimeError("the memory load failed")
    outcome: load.Outcome = result[0]
    rss = [mib for _, mib in samples] or [math.nan]
    slope = (
        float(np.polyfit([t for t, _ in samples], rss, 1)[0] * 60) if len(samples) > 2 else math.nan
    )
    return {
        "duration_s": scale.memory_s,
        "callers": scale.memory_callers,
        "calls": len(outcome.latencies),
        "errors": outcome.errors,
        "start_mib": rss[0],
        "end_mib": rss[-1],
        "max_mib": max(rss),
        "growth_mib": rss_growth(samples, scale.memory_s),
        "edge_s": _edge_s(scale.memory_s),
        "slope_mib_per_min": slope,
        "samples": [(round(t, 2), round(m, 2)) for t, m in samples],
    }


def _edge_s(duration_s: float) -> float:
    return min(10.0, duration_s / 4)


def rss_growth(samples: list[tuple[float, float]], duration_s: float) -> float:
    """RSS at the end less RSS at the start, each the median of the samples in the first or
    last `_edge_s`. A single sample is noise here: the server's RSS moves by up to 1 MiB from
    one half-second sample to the next, so last-minus-first fell either side of zero."""
    if not samples:
        return math.nan
    edge, end = _edge_s(duration_s), samples[-1][0]
    first = [mib for t, mib in samples if t <= samples[0][0] + edge]
    last = [mib for t, mib in samples if t >= end - edge]
    return float(np.median(last) - np.median(first))


def profile(pool: Pool, served: Served, target: str, scale: Scale, work: Path) -> dict[str, Any]:
    """py-spy over our server under 64 closed-loop callers; a note instead when it cannot run."""
    if pyspy.available() is None:
        return {"note": "py-spy is not installed (it comes with the bench extra)"}
    job = Job(target, "unary", 64, warmup_s=1.0, duration_s=scale.profile_s + 2.0)
    thread, result = _in_background(lambda: pool.run(job))
    time.sleep(load.SETUP_S + 0.3 + 1.5)
    rate = 200
    raw = pyspy.record(served.pid, scale.profile_s, work / "pyspy.txt", rate)
    thread.join()
    if raw is None:
        return {"note": "py-spy could not attach to the server (it needs ptrace rights)"}
    summary = pyspy.summarize(raw, scale.profile_s, rate)
    summary["calls_per_s_while_sampled"] = result[0].calls_per_s if result else math.nan
    return summary
