"""The training section of docs/benchmarks.md and its learning-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import machine_lines
from bench.training import time_to
from swingup import atomic

CURVE_PNG = "training-curves.png"


def _fmt_time(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def render(result: dict[str, Any], out_dir: Path) -> list[str]:
    plot(result, out_dir / CURVE_PNG)
    nb = result["notebook_fps"]
    lines = ["## Training", ""]
    lines += machine_lines(result["machine"])
    lines += [
        "| what | frames/s | ratio to the notebook port |",
        "|---|---:|---:|",
        f"| plain port of the notebook loop (floor) | {nb:,.0f} | 1.00x |",
        f"| `--preset seed` (same arithmetic) | {result['seed_fps']:,.0f} | "
        f"{result['seed_fps'] / nb:.2f}x |",
        f"| `--preset fast` (vectorised) | {result['fast_fps']:,.0f} | "
        f"{result['fast_fps'] / nb:.2f}x |",
        "",
        f"Learning curves of `fast`, {result['eval_episodes']} random-start evaluation episodes "
        f"(mean actions), budget {result['budget_s']:.0f} s of training time:",
        "",
        "| run | time to -170 | time to -165 | best | worst after reaching -165 | last |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"swingup fast, seed {c['seed']}", c["points"]) for c in result["curves"]]
    rows += [(f"SB3 A2C (zoo), seed {p['seed']}", p["points"]) for p in result["peers"]]
    for name, points in rows:
        if not points:
            continue
        t165 = time_to(points, -165)
        after = [r for t, r in points if t165 is not None and t >= t165]
        worst = f"{min(after):.1f}" if after else "-"
        lines.append(
            f"| {name} | {_fmt_time(time_to(points, -170))} | {_fmt_time(t165)} | "
            f"{max(r for _, r in points):.1f} | {worst} | {points[-1][1]:.1f} |"
        )
    lines += ["", f"![learning curves]({CURVE_PNG})", ""]
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for curve in result["curves"]:
        t, r = zip(*curve["points"], strict=True) if curve["points"] else ((), ())
        ax.plot(t, r, "-o", markersize=3, label=f"swingup fast, seed {curve['seed']}")
    for peer in result["peers"]:
        if peer["points"]:
            t, r = zip(*peer["points"], strict=True)
            ax.plot(t, r, "--s", markersize=3, label=f"SB3 A2C (zoo), seed {peer['seed']}")
    for level, style in ((-165, ":"), (-175, "-.")):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1)
    ax.set_xlabel("training wall-clock (s), evaluation excluded")
    ax.set_ylabel("mean return, 100 random starts")
    ax.set_ylim(-1500, -100)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
