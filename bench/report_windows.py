"""The window-by-window part of the serving section: how often the one-caller p50 targets hold
over many short windows, for ours and for the echo that also runs the model."""

from __future__ import annotations

import statistics
from typing import Any

from bench.numbers import num

BOUND = 1.2  # issue 5: `Act` and `StreamAct` step p50 at most 1.2x the echo's
CALLS = (("unary", "`Act`"), ("stream", "`StreamAct` step"))
COMPARED = ("echo-model", "ours")


def window_ratios(rows: list[dict[str, Any]], method: str) -> dict[str, list[float]]:
    """Each compared server's p50 over the echo's, window by window (a round's windows are
    neighbours in time; a window without calls has no p50 and is left out); empty when the
    run has no such rows."""
    found = {
        r["server"]: r["window_p50_ms"]
        for r in rows
        if r["group"] == "windows" and r["method"] == method and "window_p50_ms" in r
    }
    echo = found.get("echo")
    if not echo:
        return {}
    return {
        server: [w / e for w, e in zip(found[server], echo, strict=True) if e > 0 and w > 0]
        for server in COMPARED
        if server in found
    }


def within(ratios: list[float]) -> str:
    """How many of the windows held the bound: "n of m"."""
    return f"{sum(r <= BOUND for r in ratios)} of {len(ratios)}"


def windows_lines(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    scale = result["scale"]
    if not any(r["group"] == "windows" for r in rows):  # results from before the section
        return []
    lines = [
        "### Window by window: how often the one-caller targets hold",
        "",
        f"One caller, one pendulum per call, {scale['window_rounds']} rounds of "
        f"{num(scale['window_s'], 1)} s windows (after {num(scale['warmup_s'], 1)} s of warm-up "
        "each), the echo, the echo + the model and ours in turn in every round; each window's "
        "p50 over the echo's in the same round. The echo + the model runs the actor through a "
        "plain `InferenceSession.run` and nothing else: what any server of this model pays.",
        "",
        f"| call | server | median | min | max | windows at or under {BOUND}x |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method, call in CALLS:
        for server, ratios in window_ratios(rows, method).items():
            if not ratios:
                continue
            who = "echo + the model" if server == "echo-model" else "swingup-serve"
            lines.append(
                f"| {call} | {who} | {statistics.median(ratios):.2f}x | {min(ratios):.2f}x | "
                f"{max(ratios):.2f}x | {within(ratios)} |"
            )
    return [*lines, ""]
