"""The serving benchmark's plots, drawn from its JSON: each returns False when it has no data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report_serving import name_of
from bench.report_windows import BOUND, CALLS, window_ratios
from swingup import atomic

# The servers drawn in the one-caller panel.
ONE_CALLER = ("echo", "echo-model", "ours", "echo-sync")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    _pyplot().close(fig)


def latency(result: dict[str, Any], path: Path) -> bool:
    """Latency CDFs: one caller (unary and stream), and 64 callers in processes."""
    rows = [r for r in result["rows"] if r["quantiles_ms"]]
    one = [r for r in rows if r["callers"] == 1 and r["pendulums"] == 1]
    one = [r for r in one if r["group"] == "latency" and r["server"] in ONE_CALLER]
    procs = result["scale"]["processes"]
    many = [r for r in rows if r["callers"] == 64 and r["processes"] == procs]
    if not one:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, subset, title in (
        (axes[0], one, "one caller"),
        (axes[1], many, f"64 callers, {procs} processes"),
    ):
        for row in subset:
            q = row["quantiles_ms"]
            fractions = [i / (len(q) - 1) for i in range(len(q))]
            style = "--" if row["server"].startswith("echo") else "-"
            ax.plot(q, fractions, style, label=f"{name_of(row['server'])}, {row['method']}")
        ax.set_xscale("log")
        ax.set_xlabel("latency per call or stream step (ms, log)")
        ax.set_ylabel("fraction of calls")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if subset:
            ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    return True


def windows(result: dict[str, Any], path: Path) -> bool:
    """Each window's one-caller p50 over the echo's, round by round, beside the target."""
    ratios = {method: window_ratios(result["rows"], method) for method, _ in CALLS}
    if not any(ratios.values()):
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CALLS), figsize=(12, 4), sharey=True)
    for ax, (method, call) in zip(axes, CALLS, strict=True):
        for server, series in ratios[method].items():
            style = "--o" if server.startswith("echo") else "-o"
            rounds = range(1, len(series) + 1)
            ax.plot(rounds, series, style, markersize=4, label=name_of(server))
        ax.axhline(BOUND, color="grey", linestyle=":", label=f"target, {BOUND}x")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("round (the servers in turn, a window each)")
        ax.set_title(f"one caller, {call.replace('`', '')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("window p50 / the echo's in the same round")
    _save(fig, path)
    return True


def throughput(result: dict[str, Any], path: Path) -> bool:
    """Calls/s against the number of closed-loop single-pendulum callers."""
    rows = [r for r in result["rows"] if r["method"] == "unary" and r["pendulums"] == 1]
    rows = [r for r in rows if r["group"] in ("throughput", "variants")]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    # A server's calls/s by callers; a throughput row (taken in turn with the echo's) over a
    # variants row of the same server and callers (taken alone).
    rates: dict[tuple[str, str], dict[int, float]] = {}
    for row in sorted(rows, key=lambda r: r["group"] == "throughput"):
        rates.setdefault((row["server"], row["clients"]), {})[row["callers"]] = row["calls_per_s"]
    series = {key: list(by_callers.items()) for key, by_callers in rates.items()}
    for (server, clients), points in sorted(series.items()):
        lone = [p for p in series.get((server, "threads"), []) if p[0] == 1]
        if clients == "processes" and points and lone:  # one caller is the same either way
            points = lone + points
        points.sort()
        x, y = zip(*points, strict=True)
        style = "--o" if server.startswith("echo") else "-o"
        ax.plot(x, y, style, markersize=4, label=f"{name_of(server)} ({clients})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent callers (one pendulum each, closed loop)")
    ax.set_ylabel("calls/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def memory(result: dict[str, Any], path: Path) -> bool:
    mem = result.get("memory")
    if not mem or not mem["samples"]:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t, rss = zip(*mem["samples"], strict=True)
    ax.plot(t, rss, "-")
    ax.set_xlabel("seconds into the load run")
    ax.set_ylabel("server RSS (MiB)")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


# How an overload call ended, and its marker: answered, refused by the bounded queue, or else.
_OUTCOMES = (("answered", "o"), ("refused", "x"), ("other status", "s"))
_LABELS = {"OK": "answered", "RESOURCE_EXHAUSTED": "refused"}


def overload(result: dict[str, Any], path: Path) -> bool:
    """Each overload call's latency against when it was sent, answered and refused apart."""
    over = result.get("overload")
    if not over or not over["runs"]:
        return False
    plt = _pyplot()
    runs = over["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(12, 4), sharey=True, squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items(), strict=True):
        groups: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in _OUTCOMES}
        for t, code, ms in run["calls"]:
            groups[_LABELS.get(code, "other status")].append((t, ms))
        for label, style in _OUTCOMES:
            if groups[label]:
                t, ms = zip(*groups[label], strict=True)
                ax.plot(t, ms, style, markersize=3, label=f"{label} ({len(groups[label])})")
        ax.axhline(over["model_ms"], color="grey", linestyle="--", label="model, in process")
        ax.set_yscale("log")
        ax.set_xlabel("seconds into the overload (when the call was sent)")
        ax.set_title(f"{name} queue, {run['offered_per_s']:.0f} calls/s offered")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("latency (ms, log)")
    _save(fig, path)
    return True
