"""The overload part of the serving section: twice capacity with the queue bounded and not."""

from __future__ import annotations

from typing import Any

from bench.numbers import num, ratio


def overload_lines(result: dict[str, Any]) -> list[str]:
    over = result.get("overload")
    if not over:  # results from before the section
        return []
    model_ms, cap = over["model_ms"], over["capacity"]
    rows, runs = over["pendulums"], over["runs"]
    floor_per_s = 1e3 / model_ms
    rate = next(iter(runs.values()))["offered_per_s"]
    lines = [
        "### Overload: twice capacity, the queue bounded and not",
        "",
        f"An actor of two {over['hidden']}-unit hidden layers (`bench.model.heavy`, as the "
        "overload test serves), so that the model, not gRPC, is what saturates and the "
        "batcher's queue is where requests wait, as on a real inference server (the shipped "
        "actor's call over 1024 observations is a tenth of what the call costs around it: "
        "there gRPC and the caller, which shares the machine, would be what is measured). "
        f"{rows} pendulums per `Act`. Floor: the model's own "
        f"time per call of {rows} observations in process (onnxruntime with the server's "
        f"options, 1 thread, no spinning), p50 {num(model_ms, 1)} ms, so at most "
        f"{num(floor_per_s, 1)} calls/s.",
        "",
        f"Closed-loop capacity ({cap['callers']} callers, `bench.load`): "
        f"**{num(cap['calls_per_s'], 1)} calls/s** ({ratio(cap['calls_per_s'], floor_per_s)} "
        f"the floor's), p50 {num(cap['p50_ms'], 1)} ms, {cap['errors']} errors. Then calls "
        f"sent open loop at twice that, {num(rate, 1)} calls/s for {num(over['duration_s'], 0)} "
        "s, whatever the answers (grpc.aio, one channel, no retries), to each server in turn; "
        "once every call has ended, "
        f"{len(next(iter(runs.values()))['recovery'])} calls one after another (recovery). "
        "Ratios are to the model's time per call.",
        "",
        "| queue | sent/s | sent | answered | answered/s | / capacity | answered p50 (ms) | "
        "p99 (ms) | p50 / model | p99 / model | refused | refused p50 (ms) | p99 (ms) | "
        "other statuses | drain (s) | next calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, run in runs.items():
        queue = (
            f"bounded, --max-queue {run['max_queue']:,} ({run['max_queue'] // rows} calls)"
            if name == "bounded"
            else f"unbounded, --max-queue {run['max_queue']:,}"
        )
        other = ", ".join(f"{code} {n}" for code, n in run["other"].items()) or "none"
        lines.append(
            f"| {queue} | {num(run['sent_per_s'], 1)} | {run['sent']} | {run['answered']} | "
            f"{num(run['answered_per_s'], 1)} | "
            f"{ratio(run['answered_per_s'], cap['calls_per_s'])} | "
            f"{num(run['answered_p50_ms'], 1)} | {num(run['answered_p99_ms'], 1)} | "
            f"{ratio(run['answered_p50_ms'], model_ms)} | "
            f"{ratio(run['answered_p99_ms'], model_ms)} | {run['refused']} | "
            f"{num(run['refused_p50_ms'], 2)} | {num(run['refused_p99_ms'], 2)} | {other} | "
            f"{num(run['drain_s'], 2)} | {_recovery(run, model_ms)} |"
        )
    return [
        *lines,
        "",
        "Drain: from the last call sent to the last call ended. A bounded queue caps how long "
        "an answered call waits (about the queue's worth of model calls) and refuses the rest "
        "at once; without a bound nothing is refused and every answer waits behind the whole "
        "backlog, which grows for as long as the overload lasts.",
        "",
    ]


def _recovery(run: dict[str, Any], model_ms: float) -> str:
    calls = run["recovery"]
    answered = [c["latency_ms"] for c in calls if c["code"] == "OK"]
    if not answered:
        return f"0/{len(calls)} answered"
    worst = max(answered)
    return (
        f"{len(answered)}/{len(calls)} answered, slowest {num(worst, 1)} ms "
        f"({ratio(worst, model_ms)})"
    )


def burst_lines(result: dict[str, Any]) -> list[str]:
    found = result.get("burst")
    if not found:  # results from before the burst
        return []
    servers = found["servers"]
    echo = servers["echo"]
    lines = [
        "### A burst past gRPC's intake",
        "",
        f"{found['calls']:,} one-pendulum `Act` calls sent at once on one channel (grpc.aio, no "
        "retries), then one more, to the echo (the floor) and to ours (the shipped actor). "
        "Cheap calls wait in gRPC core until the server's loop takes them, one at a time, "
        "before any code of ours sees them; past about 1 000 waiting gRPC sheds new calls "
        "at random (all past 3 000), as CANCELLED with no message (`PolicyClient` adds that "
        "the server is overloaded). Ratios are to the echo.",
        "",
        "| server | answered | shed (CANCELLED) | / echo's | other statuses | answered p50 (ms) | "
        "p99 (ms) | p50 / echo's | next call |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for name, row in servers.items():
        other = {code: n for code, n in row["other"].items() if code != "CANCELLED"}
        other_text = ", ".join(f"{code} {n}" for code, n in other.items()) or "none"
        if row["refused"]:
            other_text += f"; RESOURCE_EXHAUSTED {row['refused']}"
        lines.append(
            f"| {name} | {row['answered']:,} | {row['shed']:,} | "
            f"{ratio(row['shed'], echo['shed'])} | {other_text} | "
            f"{num(row['answered_p50_ms'], 1)} | {num(row['answered_p99_ms'], 1)} | "
            f"{ratio(row['answered_p50_ms'], echo['answered_p50_ms'])} | {row['next_call']} |"
        )
    return [*lines, ""]
