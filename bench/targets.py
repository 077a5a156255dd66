"""The targets of issue 5, read from a serving run's rows: each figure, its floor, the ratio and
whether it holds."""

from __future__ import annotations

import math
from typing import Any


def targets_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 5: our figure, its floor, the ratio, the bound and whether it holds."""
    rows = result["rows"]

    def row(**match: Any) -> dict[str, Any] | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)

    out: list[dict[str, Any]] = []

    def add(
        name: str, ours: float, floor: float, bound: float, lower_is_better: bool, **more: Any
    ) -> None:
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
                **more,
            }
        )

    for method, name in (("unary", "Act p50"), ("stream", "StreamAct step p50")):
        ours, echo, model = (
            row(group="latency", server=s, method=method) for s in ("ours", "echo", "echo-model")
        )
        if ours and echo:
            add(
                f"{name} (ms) <= 1.2x echo",
                ours["p50_ms"],
                echo["p50_ms"],
                1.2,
                True,
                method=method,  # of one caller: report_windows reads its windows
                model_ratio=model["p50_ms"] / echo["p50_ms"] if model else None,
            )
    procs = result["scale"]["processes"]
    ours64 = row(group="throughput", server="ours", callers=64, processes=procs)
    echo64 = row(group="throughput", server="echo", callers=64, processes=procs)
    model64 = row(group="throughput", server="echo-model", callers=64, processes=procs)
    if ours64 and echo64:
        add(
            "64 callers, calls/s >= 0.8x echo",
            ours64["calls_per_s"],
            echo64["calls_per_s"],
            0.8,
            False,
            model_ratio=model64["calls_per_s"] / echo64["calls_per_s"] if model64 else None,
        )
    big = row(group="big batch", server="ours")
    if big:
        out.append(
            {
                "target": f"{big['pendulums']} pendulums per call, actions/s >= 1 000 000",
                "ours": big["actions_per_s"],
                "floor": 1e6,
                "floor_text": "(the bound)",
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
                "floor_text": f"(start {mem['start_mib']:.1f} MiB)",
                "ratio": mem["end_mib"] / mem["start_mib"],
                "bound": tolerance,
                "lower_is_better": True,
                "met": mem["growth_mib"] <= tolerance,
            }
        )
    return out
