"""The serving section of docs/benchmarks.md: its text (built when the benchmark runs, kept in
the JSON) and its plots (drawn from the JSON when the page is rendered)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.numbers import figure, num, ratio
from bench.report import machine_lines
from bench.report_overload import burst_lines, overload_lines
from bench.report_windows import window_ratios, windows_lines, within
from bench.serving_findings import FINDINGS
from bench.targets import targets_of

LATENCY_PNG = "serving-latency.png"
THROUGHPUT_PNG = "serving-throughput.png"
MEMORY_PNG = "serving-memory.png"
OVERLOAD_PNG = "serving-overload.png"
WINDOWS_PNG = "serving-windows.png"

NAMES = {
    "echo": "bare grpcio echo, aio (floor)",
    "echo-sync": "bare grpcio echo, sync thread pool",
    "echo-model": "bare grpcio echo + onnxruntime `run` (the model, nothing else of ours)",
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
    lines += markdown(result)  # from the figures, so a change of the report applies to them
    lines += FINDINGS
    drawn = [
        (serving_plots.latency, LATENCY_PNG, "latency distributions"),
        (serving_plots.windows, WINDOWS_PNG, "one-caller p50 over the echo's, window by window"),
        (serving_plots.throughput, THROUGHPUT_PNG, "throughput against callers"),
        (serving_plots.memory, MEMORY_PNG, "server RSS over the load run"),
        (serving_plots.overload, OVERLOAD_PNG, "latency of each call through the overload"),
    ]
    for draw, png, alt in drawn:
        if draw(result, out_dir / png):
            lines += [f"![{alt}]({png})", ""]
    return lines


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
    lines += _model_share(rows)
    lines += windows_lines(result)
    lines += _throughput(rows, scale["callers"], procs)
    lines += _variants(rows, procs)
    lines += _big_batch(result, rows)
    lines += _capacity(result)
    lines += overload_lines(result)
    lines += burst_lines(result)
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
        "`PolicyClient`, big-batch, throughput and stream rows), and each server's windows are "
        "pooled, so that a "
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
        "| target | ours | floor | ratio | holds | the echo + the model, for comparison |",
        "|---|---:|---:|---:|:---:|---|",
    ]
    held = _windows_held(result["rows"])
    for t in targets_of(result):  # from the figures, so a re-rendered report reads them anew
        floor = t.get("floor_text") or figure(t["floor"])
        model = "" if t.get("model_ratio") is None else f"{num(t['model_ratio'])}x"
        if t.get("method") in held:
            model += f"; {held[t['method']]}"
        lines.append(
            f"| {t['target']} | {figure(t['ours'])} | {floor} | {num(t['ratio'])}x | "
            f"{'yes' if t['met'] else '**no**'} | {model} |"
        )
    return [*lines, ""]


def _windows_held(rows: list[dict[str, Any]]) -> dict[str | None, str]:
    """For each one-caller p50 target, by its method: in how many of the short windows it held
    for ours and for the echo + the model (see report_windows)."""
    held: dict[str | None, str] = {}
    for method in ("unary", "stream"):
        ratios = window_ratios(rows, method)
        if "ours" in ratios and "echo-model" in ratios:
            held[method] = (
                f"short windows within the bound: {within(ratios['echo-model'])}, "
                f"ours {within(ratios['ours'])}"
            )
    return held


def _floors(result: dict[str, Any]) -> list[str]:
    lines = [
        "### Floor: onnxruntime in-process",
        "",
        "| session options | batch | p50 (us) | p99 (us) | actions/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in result["floors"]:
        lines.append(
            f"| {f['options']} | {f['batch']} | {num(f['p50_us'], 1)} | {num(f['p99_us'], 1)} | "
            f"{num(f['actions_per_s'], 0)} |"
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
                f"| {who} | {call} | {num(row['p50_ms'], 3)} | "
                f"{num(row['p99_ms'], 3)} | {ratio(row['p50_ms'], _of(echo, 'p50_ms'))} | "
                f"{ratio(row['p99_ms'], _of(echo, 'p99_ms'))} | {num(row['server_cpu_us'], 0)} | "
                f"{ratio(row['server_cpu_us'], _of(echo, 'server_cpu_us'))} |"
            )
    return [*lines, ""]


def _model_share(rows: list[dict[str, Any]]) -> list[str]:
    """The gap to the echo split in two: what running the model costs a bare server, and what
    our code adds to that (the "echo + model" rows; none in results from before them)."""
    lines = [
        "**The model's share of the gap**, from the rows above (the echo + the model is the "
        "echo that also runs the actor through onnxruntime, with nothing else of ours):",
        "",
    ]
    for method, call in (("unary", "`Act`"), ("stream", "`StreamAct` step")):
        echo, model, ours = (
            _find(rows, group="latency", server=server, method=method)
            for server in ("echo", "echo-model", "ours")
        )
        if echo is None or model is None or ours is None:
            return []
        lines.append(
            f"- {call}: p50 of the echo + the model {ratio(model['p50_ms'], echo['p50_ms'])} "
            f"the echo's, ours {ratio(ours['p50_ms'], model['p50_ms'])} the echo + the "
            f"model's. Server CPU a call: echo {num(echo['server_cpu_us'], 0)} us, echo + the "
            f"model {num(model['server_cpu_us'], 0)} us, ours {num(ours['server_cpu_us'], 0)} us."
        )
    return [*lines, ""]


def _throughput(rows: list[dict[str, Any]], callers: list[int], procs: int) -> list[str]:
    lines = [
        "### Throughput against callers (closed loop, one pendulum per `Act`)",
        "",
        "| callers | clients | echo calls/s | ours calls/s | ours / echo | echo + the model "
        "calls/s (/ echo) | echo p99 (ms) | ours p99 (ms) | server CPU/call echo, ours (us) | "
        "client CPU/call (us) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in callers:
        for p in (1, procs) if n > 1 else (1,):
            echo = _find(rows, group="throughput", server="echo", callers=n, processes=p)
            ours = _find(rows, group="throughput", server="ours", callers=n, processes=p)
            if not echo or not ours:
                continue
            model = _find(rows, group="throughput", server="echo-model", callers=n, processes=p)
            with_model = "-"
            if model:
                rate = model["calls_per_s"]
                with_model = f"{num(rate, 0)} ({ratio(rate, echo['calls_per_s'])})"
            lines.append(
                f"| {n} | {ours['clients']} | {num(echo['calls_per_s'], 0)} | "
                f"{num(ours['calls_per_s'], 0)} | {ratio(ours['calls_per_s'], echo['calls_per_s'])}"
                f" | {with_model} | {num(echo['p99_ms'])} | {num(ours['p99_ms'])} | "
                f"{num(echo['server_cpu_us'], 0)}, {num(ours['server_cpu_us'], 0)} "
                f"({ratio(ours['server_cpu_us'], echo['server_cpu_us'])}) | "
                f"{num(ours['client_cpu_us'], 0)} |"
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
            f"{num(row['calls_per_s'], 0)} | "
            f"{ratio(row['calls_per_s'], _of(echo, 'calls_per_s'))} | "
            f"{num(row['p50_ms'])} | {num(row['p99_ms'])} | {row['errors']} | "
            f"{num(row['server_cpu_us'], 0)} | "
            f"{ratio(row['server_cpu_us'], _of(echo, 'server_cpu_us'))} |"
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
            f"| {name_of(row['server'])} | {num(row['calls_per_s'], 0)} | "
            f"{num(row['actions_per_s'], 0)} | "
            f"{ratio(row['actions_per_s'], _of(echo, 'actions_per_s'))} | "
            f"{num(row['p50_ms'], 3)} | {num(row['p99_ms'], 3)} |"
        )
    for f in ort:
        lines.append(
            f"| onnxruntime in-process ({f['options']}) | - | {num(f['actions_per_s'], 0)} | - | "
            f"{num(f['p50_us'] / 1e3, 3)} | {num(f['p99_us'] / 1e3, 3)} |"
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
            f"{p['callers']}: {num(p['p99_ms'], 1)}{'' if p['ok'] else ' x'}" for p in cap["probes"]
        )
        lines.append(
            f"| {name_of(server)} | {method} | {cap['pendulums']} | "
            f"{ratio(cap['pendulums'], _of(echo, 'pendulums'))} | "
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
        f"{num(mem['start_mib'], 1)} MiB, end {num(mem['end_mib'], 1)} MiB, max "
        f"{num(mem['max_mib'], 1)} MiB; growth {num(mem['growth_mib'], 1)} MiB "
        f"({_growth_rule(mem)}; fitted slope {num(mem['slope_mib_per_min'], 2)} MiB/min).",
        "",
    ]


def _growth_rule(mem: dict[str, Any]) -> str:
    edge = mem.get("edge_s")
    if edge is None:  # results written before the medians
        return "last sample less first"
    return f"median of the last {edge:.0f} s less median of the first {edge:.0f} s"


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
        f"{num(prof['calls_per_s_while_sampled'], 0)} calls/s while sampled. Each sample is "
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
