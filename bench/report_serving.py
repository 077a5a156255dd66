"""The serving section of docs/benchmarks.md: its text (built when the benchmark runs, kept in
the JSON) and its plots (drawn from the JSON when the page is rendered)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.report import machine_lines

LATENCY_PNG = "serving-latency.png"
THROUGHPUT_PNG = "serving-throughput.png"
MEMORY_PNG = "serving-memory.png"

NAMES = {
    "echo": "bare grpcio echo, aio (floor)",
    "echo-sync": "bare grpcio echo, sync thread pool",
    "ours": "swingup-serve",
    "ours-nobatch": "swingup-serve --no-batching (batching off)",
    "ours-2workers": "swingup-serve --workers 2",
}


def name_of(server: str) -> str:
    if server.startswith("ours-window"):
        return f"swingup-serve --batch-window-us {server.removeprefix('ours-window')}"
    return NAMES.get(server, server)


def render(result: dict[str, Any], out_dir: Path) -> list[str]:
    from bench import serving_plots

    lines = ["## Serving", ""]
    lines += machine_lines(result["machine"])
    lines += result.get("markdown", [])
    lines += FINDINGS
    drawn = [
        (serving_plots.latency, LATENCY_PNG, "latency distributions"),
        (serving_plots.throughput, THROUGHPUT_PNG, "throughput against callers"),
        (serving_plots.memory, MEMORY_PNG, "server RSS over the load run"),
    ]
    for draw, png, alt in drawn:
        if draw(result, out_dir / png):
            lines += [f"![{alt}]({png})", ""]
    return lines


# What profiles and timers inside the server showed (2026-11-24 and 2026-11-30), and what was
# done about it. Kept beside the measured sections: they say why the figures are what they are.
FINDINGS = [
    "### What dominated, and what was done",
    "",
    "- py-spy (above): gRPC's core and cygrpc with the asyncio loop take most of the busy time;",
    "  our Python 3-6%.",
    "- Timed inside the server (perf_counter around each part, 12 000 one-pendulum `Act` calls,",
    "  2026-11-30): our handler takes about 95 us a call. onnxruntime about 45 us of it: its first",
    "  call after gRPC's work runs from cold caches (a second call right after takes 12 us).",
    "  Checking the observations about 17 us, parsing 11, the actions 7, the reply 6, the batcher",
    "  7. A lone request does run inline (the loop's ready queue was empty for 4 000 of 4 000",
    "  requests); taking the stream idle limit out changed nothing measurable.",
    "- Done: onnxruntime with one intra-op thread and no spinning (the defaults cost 2.2x CPU at",
    "  1024 rows); aio kept over the sync server; one re-armed idle timer per stream instead of",
    "  two `wait_for` per step; a lone request runs inline without a loop pass; `np.fromiter` for",
    "  small protobuf fields; the model's output names given once; finiteness checked in one BLAS",
    "  call; error statuses set rather than aborted, so the metrics have seen a call before its",
    "  client sees the error.",
    "- Done on 2026-11-30: a lone request runs inline up to an estimated 2 ms (not only 100 us),",
    "  skipping the model thread's hand-off: for 1024 pendulums per call, timed inside the",
    "  server, the model step took 205-257 us instead of 355-411 us, the handler 264-328 us",
    "  instead of 420-486 us; client p50 0.97 against 1.06 ms.",
    "- Done on 2026-11-30 (second session): the exported graph is laid out for onnxruntime",
    "  (`trainer/onnx_graph.py`, `ServedActor`): the observation normaliser folded into the",
    "  first layer, both heads one MatMul, constants shaped [1, 1]. onnxruntime's own profiler",
    "  showed the Sub, Div, Mul and Add of the trained module's graph at 12-15 us each over 1024",
    "  rows (a [batch, 1] tensor broadcast against a 0-d constant runs element by element) and",
    "  the two one-column heads at 40-51 us. One call over 1024 observations: ~95 us instead of",
    "  ~180 us; served end to end, 1.03 ms instead of 1.17 ms a call (A/B, same run, same",
    "  weights); one observation: unchanged (~8 us warm, 20-25 us from cold caches).",
    "- Tried and dropped on 2026-11-30: a load-adaptive batching window (hold the flush 100 us,",
    "  300 us or 1 ms once the last batch held two or more requests) gave 0.76-0.81x the echo at",
    "  64 callers against 0.80x without: py-spy showed the loop idle ~21% of the time at 64",
    "  callers, so a window only delays. A synchronous server (13-16% faster for one caller in",
    "  an A/B) was unstable at 64 callers. Two intra-op threads for big batches: slower (204",
    "  against 173 us at 1024 rows, timed alone in a loop).",
    "- Done on 2026-11-30 (second session): a reply with more than 64 actions fills its",
    "  repeated float field from the packed wire encoding (`server/wire.py`, `packed_floats`):",
    "  1024 actions ~13 us against ~38 us from cold caches, the bytes identical.",
    "- Timed inside the server again (perf_counter per part, 3 000 one-pendulum `Act` calls):",
    "  parsing 6-8 us, observation checks 6-8, the batcher 4-6 around onnxruntime's 35-48, the",
    "  actions 2-4, the reply 5-7; a thread-by-thread CPU count shows the whole difference to the",
    "  echo on the loop thread (+94 us a call), none on gRPC's threads. Tried and not kept, each",
    "  within the noise or under 5 us: onnxruntime IOBinding onto buffers bound once (-4 us),",
    "  no memory pattern / no CPU arena, gc.freeze() and a higher gen-0 threshold. Pinning the",
    "  loop thread to a core saves ~40 us of CPU a call, for the echo as much as for us: a",
    "  deployment choice, not a difference between them.",
    "- What is left at 64 callers is gRPC's: in a py-spy profile of the loop thread (all samples,",
    "  idle included) cygrpc and asyncio take 64%, waiting in epoll 21%, all of our code with",
    "  onnxruntime 15%.",
    "",
]


def _f(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None, floor: float | None) -> str:
    if not value or not floor or math.isnan(value) or math.isnan(floor):
        return "-"
    return f"{value / floor:.2f}x"


def _of(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else float(row[key])


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def markdown(result: dict[str, Any]) -> list[str]:
    """The section's text, from a result of `bench.serving.run`."""
    rows: list[dict[str, Any]] = result["rows"]
    scale = result["scale"]
    procs = scale["processes"]
    lines = _preamble(result)
    lines += _targets(result)
    lines += _floors(result)
    lines += _latency(rows)
    lines += _throughput(rows, scale["callers"], procs)
    lines += _variants(rows, procs)
    lines += _big_batch(result, rows)
    lines += _capacity(result)
    lines += _memory(result)
    lines += _profile(result)
    return lines


def _preamble(result: dict[str, Any]) -> list[str]:
    busy = result["machine_load"]
    la0, la1 = busy["loadavg_start"][0], busy["loadavg_end"][0]
    after = busy.get("cpu_busy_after_percent", 0.0)
    lines = [
        f"Served: {result['model']}. "
        + (
            "**Smoke size** (checks the harness; the figures mean nothing). "
            if result["smoke"]
            else ""
        )
        + f"Run took {result['duration_s']:.0f} s.",
        "",
        "Every gRPC figure below comes through the same client stack: the generated "
        "`PolicyServiceStub` on a synchronous `grpc` channel, one channel (and TCP connection) "
        'per caller, a caller per thread; "threads" rows run all callers in one process, '
        f'"processes" rows spread them over {result["scale"]["processes"]} processes. The '
        "echo (`bench/echo_server.py`) answers the same `swingup.v1.PolicyService` methods with "
        "the same messages and nothing of ours. Each configuration is measured on the echo and "
        f"on our server in turn, {result['scale'].get('rounds', 1)} windows each (the latency, "
        "big-batch, throughput and stream rows), and each server's windows are pooled, so that a "
        "machine whose speed drifts weighs on both alike; ratios are ours / floor. Server (and "
        "client) CPU per call "
        "is the process's user + system CPU time over the whole load, warm-up included, divided "
        "by the calls answered: the cost we own, and the figure other work on a shared machine "
        "disturbs least.",
        "",
        f"Machine load: {busy['cpu_busy_before_percent']:.0f}% of the CPU was busy with other "
        f"work in the second before the run and {after:.0f}% in the second after it; 1-minute "
        f"load average {la0:.2f} at the start and {la1:.2f} at the end, on {busy['cores']} cores "
        "(client and server share them).",
        "",
    ]
    if max(busy["cpu_busy_before_percent"], after) > 10 or la0 > 1.0:
        lines += [
            "> **The machine was shared with other work during this run**: absolute figures are "
            "noisy and low; the ratios, measured back to back under the same load, are the "
            "meaningful part.",
            "",
        ]
    return lines


def _targets(result: dict[str, Any]) -> list[str]:
    lines = [
        "### Targets (issue 5)",
        "",
        "| target | ours | floor | ratio | holds |",
        "|---|---:|---:|---:|:---:|",
    ]
    for t in result["targets"]:
        lines.append(
            f"| {t['target']} | {_f(t['ours'])} | {_f(t['floor'])} | {_f(t['ratio'])}x | "
            f"{'yes' if t['met'] else '**no**'} |"
        )
    return [*lines, ""]


def _floors(result: dict[str, Any]) -> list[str]:
    lines = [
        "### Floor: onnxruntime in-process",
        "",
        "| session options | batch | p50 (us) | p99 (us) | actions/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in result["floors"]:
        lines.append(
            f"| {f['options']} | {f['batch']} | {_f(f['p50_us'], 1)} | {_f(f['p99_us'], 1)} | "
            f"{_f(f['actions_per_s'], 0)} |"
        )
    return [*lines, ""]


def _latency(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Latency at one caller (one pendulum per call)",
        "",
        "| server | call | p50 (ms) | p99 (ms) | p50 / echo | p99 / echo | server CPU/call (us) "
        "| / echo |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, call in (("unary", "`Act`"), ("stream", "`StreamAct` step")):
        echo = _find(rows, group="latency", server="echo", method=method)
        for row in rows:
            if row["method"] != method or row["callers"] != 1 or row["pendulums"] != 1:
                continue
            if row["group"] not in ("latency", "library"):
                continue
            who = name_of(row["server"])
            if row.get("client") == "library":
                who += ", called through `PolicyClient` (not the bare stub)"
            lines.append(
                f"| {who} | {call} | {_f(row['p50_ms'], 3)} | "
                f"{_f(row['p99_ms'], 3)} | {_ratio(row['p50_ms'], _of(echo, 'p50_ms'))} | "
                f"{_ratio(row['p99_ms'], _of(echo, 'p99_ms'))} | {_f(row['server_cpu_us'], 0)} | "
                f"{_ratio(row['server_cpu_us'], _of(echo, 'server_cpu_us'))} |"
            )
    return [*lines, ""]


def _throughput(rows: list[dict[str, Any]], callers: list[int], procs: int) -> list[str]:
    lines = [
        "### Throughput against callers (closed loop, one pendulum per `Act`)",
        "",
        "| callers | clients | echo calls/s | ours calls/s | ours / echo | echo p99 (ms) | "
        "ours p99 (ms) | server CPU/call echo, ours (us) | client CPU/call (us) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in callers:
        for p in (1, procs) if n > 1 else (1,):
            echo = _find(rows, group="throughput", server="echo", callers=n, processes=p)
            ours = _find(rows, group="throughput", server="ours", callers=n, processes=p)
            if not echo or not ours:
                continue
            lines.append(
                f"| {n} | {ours['clients']} | {_f(echo['calls_per_s'], 0)} | "
                f"{_f(ours['calls_per_s'], 0)} | {_ratio(ours['calls_per_s'], echo['calls_per_s'])}"
                f" | {_f(echo['p99_ms'])} | {_f(ours['p99_ms'])} | "
                f"{_f(echo['server_cpu_us'], 0)}, {_f(ours['server_cpu_us'], 0)} "
                f"({_ratio(ours['server_cpu_us'], echo['server_cpu_us'])}) | "
                f"{_f(ours['client_cpu_us'], 0)} |"
            )
    return [*lines, ""]


def _variants(rows: list[dict[str, Any]], procs: int) -> list[str]:
    lines = [
        f"### Variants under load ({procs} caller processes)",
        "",
        "| server | call | callers | calls/s | / echo | p50 (ms) | p99 (ms) | errors | "
        "server CPU/call (us) | / echo |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["group"] not in ("variants", "stream throughput") or row["callers"] == 1:
            continue
        echo = _find(
            rows,
            server="echo",
            method=row["method"],
            callers=row["callers"],
            processes=row["processes"],
            pendulums=1,
        )
        lines.append(
            f"| {name_of(row['server'])} | {row['method']} | {row['callers']} | "
            f"{_f(row['calls_per_s'], 0)} | "
            f"{_ratio(row['calls_per_s'], _of(echo, 'calls_per_s'))} | "
            f"{_f(row['p50_ms'])} | {_f(row['p99_ms'])} | {row['errors']} | "
            f"{_f(row['server_cpu_us'], 0)} | "
            f"{_ratio(row['server_cpu_us'], _of(echo, 'server_cpu_us'))} |"
        )
    return [*lines, ""]


def _big_batch(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    big = [r for r in rows if r["group"] == "big batch"]
    if not big:
        return []
    echo = _find(rows, group="big batch", server="echo")
    ort = [f for f in result["floors"] if f["batch"] == big[0]["pendulums"]]
    lines = [
        f"### One caller, {big[0]['pendulums']} pendulums per `Act`",
        "",
        "| server | calls/s | actions/s | / echo | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in big:
        lines.append(
            f"| {name_of(row['server'])} | {_f(row['calls_per_s'], 0)} | "
            f"{_f(row['actions_per_s'], 0)} | "
            f"{_ratio(row['actions_per_s'], _of(echo, 'actions_per_s'))} | "
            f"{_f(row['p50_ms'], 3)} | {_f(row['p99_ms'], 3)} |"
        )
    for f in ort:
        lines.append(
            f"| onnxruntime in-process ({f['options']}) | - | {_f(f['actions_per_s'], 0)} | - | "
            f"{_f(f['p50_us'] / 1e3, 3)} | {_f(f['p99_us'] / 1e3, 3)} |"
        )
    return [*lines, ""]


def _capacity(result: dict[str, Any]) -> list[str]:
    caps = result.get("capacity") or {}
    if not caps:
        return []
    lines = [
        "### Real-time capacity",
        "",
        "Independent pendulums, each a caller at 20 Hz (Pendulum-v1's dt), phases spread over "
        "the period: the most served with p99 under 50 ms, no failed call and at least 95% of "
        "ticks sent. Doubling, then bisection, bounded in time.",
        "",
        "| server | call | pendulums | / echo | first failing | bounded by | "
        "probes (callers: p99 ms) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for key, cap in caps.items():
        server, method = key.split(" ")
        echo = caps.get(f"echo {method}")
        probes = ", ".join(
            f"{p['callers']}: {_f(p['p99_ms'], 1)}{'' if p['ok'] else ' x'}" for p in cap["probes"]
        )
        lines.append(
            f"| {name_of(server)} | {method} | {cap['pendulums']} | "
            f"{_ratio(cap['pendulums'], _of(echo, 'pendulums'))} | "
            f"{cap['first_failing'] or '-'} | {cap['bounded_by']} | {probes} |"
        )
    return [*lines, "(x: the probe failed)", ""]


def _memory(result: dict[str, Any]) -> list[str]:
    mem = result.get("memory")
    if not mem:
        return []
    return [
        "### Memory",
        "",
        f"Server RSS through {mem['duration_s']:.0f} s of {mem['callers']} closed-loop `Act` "
        f"callers ({mem['calls']:,} calls, {mem['errors']} errors): start "
        f"{_f(mem['start_mib'], 1)} MiB, end {_f(mem['end_mib'], 1)} MiB, max "
        f"{_f(mem['max_mib'], 1)} MiB; growth {_f(mem['growth_mib'], 1)} MiB "
        f"(fitted slope {_f(mem['slope_mib_per_min'], 2)} MiB/min).",
        "",
    ]


def _profile(result: dict[str, Any]) -> list[str]:
    prof = result.get("profile")
    if prof is None:
        return []
    if "note" in prof:
        return ["### Profile", "", f"Not profiled: {prof['note']}.", ""]
    lines = [
        "### Profile (py-spy, 64 closed-loop callers)",
        "",
        f"py-spy `--native` at 200 Hz over our server: {prof['samples']} busy samples, "
        f"{prof['busy_cores']:.2f} cores busy on average (waits in epoll/futex excluded), "
        f"{_f(prof['calls_per_s_while_sampled'], 0)} calls/s while sampled. Each sample is "
        "charged to its innermost frame's category:",
        "",
        "| where | share of busy samples |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {share:.1%} |" for name, share in prof["categories"]]
    lines += [
        "",
        "Our functions, inclusive (the share of busy samples with the function on the stack):",
        "",
        "| function | inclusive share |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {share:.1%} |" for name, share in prof["ours_inclusive"]]
    return [*lines, ""]
