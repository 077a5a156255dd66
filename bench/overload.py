"""Overload: what our server does when offered twice what it can serve, with its queue bounded
(`--max-queue`) and with a bound no load here reaches.

The queue is where requests wait when the model is what saturates, as on a real inference
server. With the shipped actor a call of 1024 observations spends a tenth of its time in the
model: at twice its rate gRPC and the caller (one process, sharing the machine) would be what is
measured. So this section serves `bench.model.heavy` (two 1024-unit layers, as
tests/test_server_faults.py does) and compares every figure with that model's own time per call,
in process.

For the bounded server: its closed-loop capacity (2 callers through `bench.load`: one batch runs
while the next forms, so the one model thread never idles). Then, for each server in turn, calls
sent open loop at twice that rate for `overload_s`, whatever the answers (grpc.aio, one channel
in this process), each call's status and latency kept, and, once every one of them has ended,
RECOVERY_CALLS calls one after another. Both servers are offered the same rate. Every load here
is a fixed count of calls, each with a deadline, on loopback: it stops by itself.

`burst`, run earlier on the echo and our server of the shipped actor: one-pendulum calls all
sent at once, more than gRPC core holds waiting for a server to take them, so that both shed
some (CANCELLED); the echo's count is the floor of ours.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from bench import load, servers
from bench import model as bench_model
from bench.floor import ort_floor
from bench.load import Job, Pool
from bench.scale import Scale
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc

if TYPE_CHECKING:
    Stub = policy_pb2_grpc.PolicyServiceAsyncStub

RECOVERY_CALLS = 5
WARMUP_CALLS = 3  # per server, before its overload: a fresh server binds a size on its 3rd call
CAPACITY_CALLERS = 2
UNBOUNDED = 2**31 - 1  # --max-queue in observations: ~2 million requests of 1024
FLOOR_OPTIONS = "1 thread, no spinning"  # the session options the server runs the model with
REFUSED = grpc.StatusCode.RESOURCE_EXHAUSTED.name
BURST_TIMEOUT_S = 60.0  # far past what a burst takes here: every call ends answered or shed
NO_RETRIES = [("grpc.enable_retries", 0)]  # a refusal is what is measured, not a retry of it


@dataclasses.dataclass(frozen=True)
class Call:
    start_s: float  # since the overload's first call was sent
    code: str  # its gRPC status's name
    latency_s: float  # until the answer or the refusal arrived


def overload(pool: Pool, work: Path, scale: Scale, source: Path | None = None) -> dict[str, Any]:
    """The model's time, the bounded server's capacity, then both servers at twice that."""
    rows = scale.overload_pendulums
    model = bench_model.heavy(work, scale.overload_hidden)
    floors = ort_floor(model, (rows,), scale.overload_ort_calls)
    model_s = next(f["p50_us"] for f in floors if f["options"] == FLOOR_OPTIONS) / 1e6
    request = pb.ActRequest(obs=load.observations(rows, 0))
    capacity: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name, queue in (("bounded", scale.overload_queue), ("unbounded", UNBOUNDED)):
        served = servers.ours(model, "--max-queue", str(queue), name=f"ours-{name}", source=source)
        with served:
            target = served.wait()
            if not capacity:
                capacity = closed_loop_capacity(pool, target, scale)
            rate = 2 * capacity["calls_per_s"]
            runs[name] = {"max_queue": queue, **episode(target, request, rate, scale)}
    return {
        "hidden": scale.overload_hidden,
        "pendulums": rows,
        "duration_s": scale.overload_s,
        "model_floors": floors,
        "model_ms": model_s * 1e3,
        "capacity": capacity,
        "runs": runs,
    }


def burst(targets: dict[str, str], calls: int) -> dict[str, Any]:
    """`calls` one-pendulum `Act` calls sent at once to each server, then one more: past ~1 000
    calls waiting for a server to take them, gRPC core sheds new ones (CANCELLED) before any
    handler sees them. The echo, with nothing of ours, is the floor of what is shed."""
    request = pb.ActRequest(obs=load.observations(1, 0))
    found = {}
    for name, target in targets.items():
        sent, after = asyncio.run(_burst(target, request, calls))
        shed = sum(c.code == grpc.StatusCode.CANCELLED.name for c in sent)
        found[name] = {**summary(sent), "shed": shed, "next_call": after.code}
    return {"calls": calls, "servers": found}


async def _burst(target: str, request: pb.ActRequest, calls: int) -> tuple[list[Call], Call]:
    async with _warmed(target, request, BURST_TIMEOUT_S) as stub:
        begin = time.monotonic()
        sent = await asyncio.gather(
            *(_call(stub, request, BURST_TIMEOUT_S, begin) for _ in range(calls))
        )
        return list(sent), await _call(stub, request, BURST_TIMEOUT_S, begin)


def closed_loop_capacity(pool: Pool, target: str, scale: Scale) -> dict[str, Any]:
    """Calls per second answered to callers that call again as soon as answered."""
    job = Job(
        target,
        "unary",
        CAPACITY_CALLERS,
        pendulums=scale.overload_pendulums,
        warmup_s=scale.warmup_s,
        duration_s=scale.overload_capacity_s,
        timeout_s=30.0,
    )
    outcome = pool.run(job)
    if outcome.completed == 0:
        raise RuntimeError(f"the capacity load answered nothing: {outcome.error_samples[:1]}")
    return {"callers": CAPACITY_CALLERS, **outcome.summary(scale.overload_pendulums)}


def episode(target: str, request: pb.ActRequest, rate: float, scale: Scale) -> dict[str, Any]:
    """`rate` calls a second for `overload_s`, then the recovery calls: what each one got."""
    count = max(1, round(rate * scale.overload_s))
    # Long enough that no call of an unbounded queue's backlog (at most ~overload_s of work)
    # meets its deadline: a deadline would be a third outcome, and not the server's choice.
    timeout_s = 10.0 + 4 * scale.overload_s
    calls, drain_s, recovery = asyncio.run(_drive(target, request, rate, count, timeout_s))
    last_start = max(c.start_s for c in calls)
    last_end = max(c.start_s + c.latency_s for c in calls)
    answered = sum(c.code == "OK" for c in calls)
    return {
        "offered_per_s": rate,
        "sent_per_s": (count - 1) / last_start if last_start > 0 else rate,
        "timeout_s": timeout_s,
        **summary(calls),
        "answered_per_s": answered / last_end,
        "drain_s": drain_s,  # from the last call sent to the last call ended
        "recovery": [{"code": c.code, "latency_ms": c.latency_s * 1e3} for c in recovery],
        "recovered": all(c.code == "OK" for c in recovery),
        "calls": [
            [round(c.start_s, 4), c.code, round(c.latency_s * 1e3, 3)]
            for c in sorted(calls, key=lambda c: c.start_s)
        ],
    }


def summary(calls: list[Call]) -> dict[str, Any]:
    """Counts and latency quantiles of the answered and of the refused calls."""
    answered = [c.latency_s for c in calls if c.code == "OK"]
    refused = [c.latency_s for c in calls if c.code == REFUSED]
    other = collections.Counter(c.code for c in calls if c.code not in ("OK", REFUSED))
    return {
        "sent": len(calls),
        "answered": len(answered),
        "answered_p50_ms": _ms(answered, 50),
        "answered_p99_ms": _ms(answered, 99),
        "answered_max_ms": _ms(answered, 100),
        "refused": len(refused),
        "refused_p50_ms": _ms(refused, 50),
        "refused_p99_ms": _ms(refused, 99),
        "other": dict(other),
    }


def _ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1e3) if latencies else math.nan


@contextlib.asynccontextmanager
async def _warmed(target: str, request: pb.ActRequest, timeout_s: float) -> AsyncIterator[Stub]:
    """A stub on a fresh channel without retries, once the server answered WARMUP_CALLS."""
    async with grpc.aio.insecure_channel(target, options=NO_RETRIES) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        for _ in range(WARMUP_CALLS):
            await stub.Act(request, timeout=timeout_s)
        yield stub


async def _drive(
    target: str, request: pb.ActRequest, rate: float, count: int, timeout_s: float
) -> tuple[list[Call], float, list[Call]]:
    async with _warmed(target, request, timeout_s) as stub:
        begin = time.monotonic()
        sending = []
        for k in range(count):
            # Paced on the clock, not on answers: a late answer delays no later call.
            delay = begin + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sending.append(asyncio.ensure_future(_call(stub, request, timeout_s, begin)))
        sent = time.monotonic()
        calls = list(await asyncio.gather(*sending))
        drain_s = time.monotonic() - sent
        recovery = [await _call(stub, request, timeout_s, begin) for _ in range(RECOVERY_CALLS)]
    return calls, drain_s, recovery


async def _call(stub: Stub, request: pb.ActRequest, timeout_s: float, begin: float) -> Call:
    start = time.monotonic()
    try:
        await stub.Act(request, timeout=timeout_s)
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    return Call(start - begin, code, time.monotonic() - start)
