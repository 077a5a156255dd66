"""Serving benchmark: our server beside the floor of gRPC, every figure with its ratio.

Floors: onnxruntime called in-process (batch 1 and a big batch), and a bare grpcio echo server
(`bench.echo_server`) in its own process that answers the same service with the same messages.
Every gRPC row goes through the same client stack (`bench.load`: the generated stub on a sync
channel, callers as threads of one process, or spread over separate processes), and the echo and
our server are measured back to back for each configuration, so that the background load of a
shared machine hits both alike. `bench.overload` sends the echo and ours a burst of cheap calls
past what gRPC holds waiting, and last offers servers of a heavier model twice their capacity.
`run(smoke=True)` is the tiny size `make test` runs.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import load, report_serving, servers
from bench import model as bench_model
from bench.capacity import capacity
from bench.floor import ort_floor
from bench.load import Job, Pool
from bench.overload import burst, overload
from bench.scale import SMOKE, Scale
from bench.servers import Served
from bench.targets import targets_of
from bench.under_load import memory, profile

QUANTILES = np.linspace(0.0, 100.0, 201)
METHODS: tuple[load.Method, ...] = ("unary", "stream")


# --- rows over gRPC -----------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    """What one run shares: the scale, the caller pool, the servers and the rows so far."""

    scale: Scale
    pool: Pool
    running: dict[str, Served]
    targets: dict[str, str]
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def measure(
        self, server: str, method: load.Method = "unary", callers: int = 1, **options: Any
    ) -> dict[str, Any]:
        """One row: `server` alone, in one window (`options` as for `compare`)."""
        return self.compare([server], method, callers, rounds=1, **options)[0]

    def compare(
        self,
        servers_: list[str],
        method: load.Method = "unary",
        callers: int = 1,
        *,
        pendulums: int = 1,
        processes: int = 1,
        duration_s: float | None = None,
        group: str = "",
        client: str = "stub",
        rounds: int | None = None,
        library: str | None = None,
    ) -> list[dict[str, Any]]:
        """A row per server, measured in turn for `rounds` windows that share `duration_s`;
        with `library`, one more row, of that server called through our `PolicyClient`, taken
        in the same turns (group "library").

        Taking the servers in turn, a window each, and pooling each server's windows exposes
        them all alike to a machine whose speed drifts (a shared 2-core VM's does, by 10-30%
        over a minute): a ratio of two rows is then not a ratio of two moments."""
        rounds = rounds or self.scale.rounds
        lanes = [(server, client, group) for server in servers_]
        if library is not None:
            lanes.append((library, "library", "library"))
        job = Job(
            "",
            method,
            callers,
            pendulums=pendulums,
            warmup_s=self.scale.warmup_s,
            duration_s=(duration_s or self.scale.throughput_s) / rounds,
            timeout_s=10.0 if pendulums > 1 else 2.0,
        )
        parts: list[list[load.Outcome]] = [[] for _ in lanes]
        cpu = [[0.0, 0.0] for _ in lanes]  # server's, callers'
        for _ in range(rounds):
            for lane, (server, lane_client, _) in enumerate(lanes):
                server_pids = [self.running[server].pid]
                before = cpu_seconds(server_pids), cpu_seconds(self.pool.pids)
                this = dataclasses.replace(
                    job,
                    target=self.targets[server],
                    client="library" if lane_client == "library" else "stub",
                )
                parts[lane].append(self.pool.run(this, processes))
                cpu[lane][0] += cpu_seconds(server_pids) - before[0]
                cpu[lane][1] += cpu_seconds(self.pool.pids) - before[1]
        used = len(load.split(callers, processes))
        rows = []
        for lane, (server, lane_client, lane_group) in enumerate(lanes):
            outcome = load.Outcome.sequence(parts[lane])
            per_call = 1e6 / max(outcome.answered, 1)
            row = {
                "group": lane_group,
                "server": server,
                "method": method,
                "callers": callers,
                "pendulums": pendulums,
                "processes": used,
                "clients": "threads" if used == 1 else "processes",
                "client": lane_client,
                "rounds": rounds,
                **outcome.summary(pendulums),
                # CPU time per answered call, warm-up included: the cost of a call on each
                # side, which other work on the machine disturbs far less than it does latency.
                "server_cpu_us": cpu[lane][0] * per_call,
                "client_cpu_us": cpu[lane][1] * per_call,
                "quantiles_ms": _quantiles(outcome.latencies),
                # Each window's own p50, in the order taken: windows of one round are
                # neighbours in time, so their ratio is a ratio of one moment.
                "window_p50_ms": [part.percentile_ms(50) for part in parts[lane]],
            }
            self.rows.append(row)
            rows.append(row)
        return rows

    def find(self, **match: Any) -> dict[str, Any] | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in match.items())), None)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children (a server's workers)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def _quantiles(latencies: np.ndarray) -> list[float]:
    if len(latencies) == 0:
        return []
    return [round(float(v) * 1e3, 4) for v in np.percentile(latencies, QUANTILES)]


def latency_rows(bench: Bench, floor: str, ours: list[str]) -> None:
    """One caller, unary and stream, then one caller sending a big batch per call (but not to a
    server whose --max-batch refuses it)."""
    big = bench.scale.big_batch
    for method in METHODS:  # with what our client library adds to the bare stub, in turn
        bench.compare(
            [floor, *ours],
            method,
            duration_s=bench.scale.latency_s,
            group="latency",
            library="ours",
        )
    sized = [s for s in (floor, *ours) if "--max-batch" not in (server_args(s) or [])]
    bench.compare(sized, pendulums=big, duration_s=bench.scale.latency_s, group="big batch")


def window_rows(bench: Bench, servers_: list[str]) -> None:
    """One caller, unary and stream, over many short windows taken in turn: how often a p50
    target holds window by window, for ours and for the echo that also runs the model."""
    scale = bench.scale
    for method in METHODS:
        bench.compare(
            servers_,
            method,
            duration_s=scale.window_rounds * scale.window_s,
            group="windows",
            rounds=scale.window_rounds,
        )


def throughput_rows(bench: Bench, servers_: list[str], callers: tuple[int, ...]) -> None:
    procs = bench.scale.processes
    for n in callers:
        for processes in (1, procs) if n > 1 else (1,):
            bench.compare(servers_, "unary", n, processes=processes, group="throughput")


# --- the run ---------------------------------------------------------------------------------


def server_args(name: str) -> list[str] | None:
    """The flags of one of our server variants by its name; None for an echo."""
    if name.startswith("echo"):
        return None
    if name.startswith("ours-window"):
        return ["--batch-window-us", name.removeprefix("ours-window")]
    variants = {"ours": [], "ours-nobatch": ["--no-batching"], "ours-2workers": ["--workers", "2"]}
    return variants[name]


def _start(model: Path, scale: Scale, source: Path | None) -> dict[str, Served]:
    """Every server of the run, started together (each loads in ~1 s; idle, they cost nothing)."""
    started: dict[str, Served] = {}
    for name in ("echo", "ours", *scale.variants):
        args = server_args(name)
        if args is None:
            kind = name.removeprefix("echo-") if name != "echo" else "aio"
            started[name] = servers.echo(kind, name, model if kind == "model" else None)
        else:
            started[name] = servers.ours(model, *args, name=name, source=source)
    return started


def _stop(running: dict[str, Served], name: str) -> None:
    served = running.pop(name, None)
    if served is not None:
        served.stop()


def run(
    smoke: bool = False,
    *,
    model: Path | None = None,
    scale: Scale | None = None,
    source: Path | None = None,
) -> dict[str, Any]:
    """Measure everything; a JSON-able dict whose `markdown` holds the report's lines.

    `model` defaults to the shipped one (or one of its shape); `source` runs the server from a
    copy of the code elsewhere (an experiment) instead of this checkout."""
    scale = scale or (SMOKE if smoke else Scale())
    began = time.monotonic()
    background_cpu = psutil.cpu_percent(interval=1.0)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="swingup-bench-serving-") as tmp:
        work = Path(tmp)
        if model is None:
            model, model_note = bench_model.actor(work)
        else:
            model_note = f"`{model.name}`"
        floors = ort_floor(model, (1, scale.big_batch), scale.ort_calls)
        running = _start(model, scale, source)
        try:
            targets = {name: served.wait() for name, served in running.items()}
            with Pool(scale.processes) as pool:
                bench = Bench(scale, pool, running, targets)
                result = _measure_all(bench, running, model, scale, work, source)
        finally:
            for served in running.values():
                served.stop()
    result.update(
        smoke=smoke,
        scale=dataclasses.asdict(scale),
        model=model_note,
        floors=floors,
        rows=bench.rows,
        machine_load={
            "cpu_busy_before_percent": background_cpu,
            # Our servers and callers have stopped by now: what is busy is someone else's.
            "cpu_busy_after_percent": psutil.cpu_percent(interval=1.0),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "cores": os.cpu_count(),
        },
        duration_s=time.monotonic() - began,
    )
    result["targets"] = targets_of(result)
    result["markdown"] = report_serving.markdown(result)
    return result


def _measure_all(
    bench: Bench,
    running: dict[str, Served],
    model: Path,
    scale: Scale,
    work: Path,
    source: Path | None,
) -> dict[str, Any]:
    procs = scale.processes
    latency_rows(bench, "echo", ["ours", *scale.variants])
    # The echo + the model too: what running the model alone costs a server.
    floors_and_ours: list[str] = [s for s in ("echo", "echo-model", "ours") if s in running]
    window_rows(bench, floors_and_ours)
    throughput_rows(bench, floors_and_ours, scale.callers)
    bench.compare(
        ["echo", "ours"], "stream", scale.stream_callers, processes=procs, group="stream throughput"
    )
    for n in scale.variant_callers:
        for server in scale.variants:
            bench.measure(server, "unary", n, processes=procs, group="variants")
    for name in scale.variants:
        _stop(running, name)
    caps = {  # the echo and ours back to back for each method: a drifting machine hits both
        f"{server} {method}": capacity(bench.pool, bench.targets[server], method, scale)
        for method in METHODS
        for server in ("echo", "ours")
    }
    shed = burst({name: bench.targets[name] for name in ("echo", "ours")}, scale.burst_calls)
    _stop(running, "echo")
    ours = running["ours"]
    prof = (
        profile(bench.pool, ours, bench.targets["ours"], scale, work) if scale.profile_s else None
    )
    mem = memory(bench.pool, ours, bench.targets["ours"], scale)
    _stop(running, "ours")  # the overload serves a model of its own, on servers of its own
    over = overload(bench.pool, work, scale, source)
    return {"capacity": caps, "memory": mem, "profile": prof, "overload": over, "burst": shed}
