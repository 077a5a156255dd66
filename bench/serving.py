"""Serving benchmark: our server beside the floor of gRPC, every figure with its ratio.

Floors: onnxruntime called in-process (batch 1 and a big batch), and a bare grpcio echo server
(`bench.echo_server`) in its own process that answers the same service with the same messages.
Every gRPC row goes through the same client stack (`bench.load`: the generated stub on a sync
channel, callers as threads of one process, or spread over separate processes), and the echo and
our server are measured back to back for each configuration, so that the background load of a
shared machine hits both alike. `run(smoke=True)` is the tiny size `make test` runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import load, pyspy, report_serving, servers
from bench import model as bench_model
from bench.load import Job, Pool
from bench.servers import Served
from swingup import contract

CONTROL_HZ = 20.0  # Pendulum-v1's dt is 0.05 s: one action per pendulum every 50 ms
DEADLINE_MS = 1e3 / CONTROL_HZ
QUANTILES = np.linspace(0.0, 100.0, 201)
METHODS: tuple[load.Method, ...] = ("unary", "stream")


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much one run measures; every load is bounded by these counts and seconds."""

    latency_s: float = 3.0  # each one-caller latency row
    throughput_s: float = 2.0  # each many-caller row
    warmup_s: float = 0.5
    # Servers compared in a row (the echo and ours) are taken in turn this many times, a window
    # each, and their windows pooled: see Bench.compare.
    rounds: int = 3
    callers: tuple[int, ...] = (1, 16, 64, 256)
    processes: int = 2  # caller processes: one per core did best here (see the report)
    big_batch: int = 1024
    ort_calls: int = 3000
    capacity_probe_s: float = 4.0
    capacity_warmup_s: float = 1.0
    capacity_budget_s: float = 35.0  # per server and method
    capacity_start: int = 64
    capacity_limit: int = 4096
    memory_s: float = 60.0
    memory_callers: int = 64
    profile_s: float = 8.0  # 0: no py-spy profile
    # Servers beside the echo and ours: names understood by `server_args` and `_start`.
    variants: tuple[str, ...] = (
        "echo-sync",
        "echo-model",
        "ours-nobatch",
        "ours-2workers",
        "ours-window500",
    )
    variant_callers: tuple[int, ...] = (64, 256)
    stream_callers: int = 64


SMOKE = Scale(
    rounds=2,  # two, so that the smoke run takes the servers in turn as a full run does
    latency_s=0.3,
    throughput_s=0.3,
    warmup_s=0.1,
    callers=(1, 4),
    big_batch=64,
    ort_calls=50,
    capacity_probe_s=0.3,
    capacity_warmup_s=0.1,
    capacity_budget_s=1.0,
    capacity_start=2,
    capacity_limit=4,
    memory_s=1.0,
    memory_callers=2,
    profile_s=0.0,
    variants=("echo-model", "ours-nobatch"),
    variant_callers=(4,),
    stream_callers=4,
)


# --- the in-process floor ---------------------------------------------------------------------


def ort_floor(model: Path, batches: tuple[int, ...], calls: int) -> list[dict[str, Any]]:
    """onnxruntime's own time per call, with its default options and with ours."""
    import onnxruntime as ort

    def ours() -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    rows = []
    for name, options in (("default", ort.SessionOptions()), ("1 thread, no spinning", ours())):
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for batch in batches:
            obs = np.array(load.observations(batch, 0), dtype=np.float32).reshape(batch, -1)
            n = max(10, calls if batch == 1 else calls // 10)
            for _ in range(min(n, 50)):
                session.run(None, {contract.INPUT_NAME: obs})
            times = np.empty(n)
            for i in range(n):
                start = time.perf_counter()
                session.run(None, {contract.INPUT_NAME: obs})
                times[i] = time.perf_counter() - start
            rows.append(
                {
                    "options": name,
                    "batch": batch,
                    "p50_us": float(np.median(times) * 1e6),
                    "p99_us": float(np.percentile(times, 99) * 1e6),
                    "actions_per_s": batch / float(np.mean(times)),
                }
            )
    return rows


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


def throughput_rows(bench: Bench, servers_: list[str], callers: tuple[int, ...]) -> None:
    procs = bench.scale.processes
    for n in callers:
        for processes in (1, procs) if n > 1 else (1,):
            bench.compare(servers_, "unary", n, processes=processes, group="throughput")


# --- real-time capacity -----------------------------------------------------------------------


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


# --- memory and profile -----------------------------------------------------------------------


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
        "growth_mib": _growth(samples, scale.memory_s),
        "edge_s": _edge_s(scale.memory_s),
        "slope_mib_per_min": slope,
        "samples": [(round(t, 2), round(m, 2)) for t, m in samples],
    }


def _edge_s(duration_s: float) -> float:
    return min(10.0, duration_s / 4)


def _growth(samples: list[tuple[float, float]], duration_s: float) -> float:
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
                result = _measure_all(bench, running, model, scale, work)
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
    bench: Bench, running: dict[str, Served], model: Path, scale: Scale, work: Path
) -> dict[str, Any]:
    procs = scale.processes
    latency_rows(bench, "echo", ["ours", *scale.variants])
    throughput_rows(bench, ["echo", "ours"], scale.callers)
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
    _stop(running, "echo")
    ours = running["ours"]
    prof = (
        profile(bench.pool, ours, bench.targets["ours"], scale, work) if scale.profile_s else None
    )
    mem = memory(bench.pool, ours, bench.targets["ours"], scale)
    return {"capacity": caps, "memory": mem, "profile": prof}


# --- targets ----------------------------------------------------------------------------------


def targets_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 5: our figure, its floor, the ratio, the bound and whether it holds."""
    rows = result["rows"]

    def row(**match: Any) -> dict[str, Any] | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)

    out: list[dict[str, Any]] = []

    def add(name: str, ours: float, floor: float, bound: float, lower_is_better: bool) -> None:
        ratio = ours / floor if floor and not math.isnan(floor) else math.nan
        met = ratio <= bound if lower_is_better else ratio >= bound
        out.append(
            {
                "target": name,
                "ours": ours,
                "floor": floor,
                "ratio": ratio,
                "bound": bound,
                "lower_is_better": lower_is_better,
                "met": bool(met),
            }
        )

    for method, name in (("unary", "Act p50"), ("stream", "StreamAct step p50")):
        ours, echo = (row(group="latency", server=s, method=method) for s in ("ours", "echo"))
        if ours and echo:
            add(f"{name} (ms) <= 1.2x echo", ours["p50_ms"], echo["p50_ms"], 1.2, True)
    procs = result["scale"]["processes"]
    ours64 = row(group="throughput", server="ours", callers=64, processes=procs)
    echo64 = row(group="throughput", server="echo", callers=64, processes=procs)
    if ours64 and echo64:
        add(
            "64 callers, calls/s >= 0.8x echo",
            ours64["calls_per_s"],
            echo64["calls_per_s"],
            0.8,
            False,
        )
    big = row(group="big batch", server="ours")
    if big:
        out.append(
            {
                "target": f"{big['pendulums']} pendulums per call, actions/s >= 1 000 000",
                "ours": big["actions_per_s"],
                "floor": 1e6,
                "ratio": big["actions_per_s"] / 1e6,
                "bound": 1.0,
                "lower_is_better": False,
                "met": big["actions_per_s"] >= 1e6,
            }
        )
    caps = result.get("capacity", {})
    for method in ("unary", "stream"):
        ours_cap, echo_cap = caps.get(f"ours {method}"), caps.get(f"echo {method}")
        if ours_cap and echo_cap:
            add(
                f"real-time pendulums ({method}) >= 0.8x echo",
                ours_cap["pendulums"],
                echo_cap["pendulums"],
                0.8,
                False,
            )
    mem = result.get("memory")
    if mem:
        # "Must not grow": within 2% (or 4 MiB) of where the run started.
        tolerance = max(4.0, 0.02 * mem["start_mib"])
        out.append(
            {
                "target": f"RSS growth over {mem['duration_s']:.0f} s (MiB) <= {tolerance:.1f}",
                "ours": mem["growth_mib"],
                "floor": mem["start_mib"],
                "ratio": mem["end_mib"] / mem["start_mib"],
                "bound": tolerance,
                "lower_is_better": True,
                "met": mem["growth_mib"] <= tolerance,
            }
        )
    return out
