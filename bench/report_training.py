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
    lines += SEED_PROFILE
    return lines


# What a profile of the seed preset showed (cProfile and per-part CPU timers, 2026-11-24), and
# what was done about it. Kept beside the table because the 2x target is not met.
SEED_PROFILE = [
    "The seed preset updates after every frame on a batch of one, so its speed is the per-call",
    "overhead of PyTorch, not arithmetic. Profiled per frame (CPU time): the autograd backward of",
    "both losses about 245 us, the optimiser step about 55 us, the three small forward passes",
    "about 75 us, the loss terms about 150 us, collecting the step (action, environment, buffers)",
    "about 75 us. Done: one backward for both losses and one fused Adam with a parameter group",
    "per network and learning rate (bit-identical results), no normalisation ops when it is off,",
    "numpy rollout buffers shared with the tensors instead of per-step conversions, statistics",
    "without autograd. That took it from about 0.8x to about 1.1x the notebook port measured in",
    "the same run; the 2x target needs the update without autograd's per-op cost (hand-written",
    "gradients or a compiled update), which is not done.",
    "",
]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Left: the whole run; right: the last few percent that separate good policies from great.
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, (low, high) in zip(axes, ((-1500, -100), (-200, -145)), strict=True):
        for curve in result["curves"]:
            if curve["points"]:
                t, r = zip(*curve["points"], strict=True)
                ax.plot(t, r, "-o", markersize=3, label=f"swingup fast, seed {curve['seed']}")
        for peer in result["peers"]:
            if peer["points"]:
                t, r = zip(*peer["points"], strict=True)
                ax.plot(t, r, "--s", markersize=3, label=f"SB3 A2C (zoo), seed {peer['seed']}")
        for level, style in ((-155, "--"), (-165, ":"), (-175, "-.")):
            ax.axhline(level, color="grey", linestyle=style, linewidth=1)
        ax.set_xlabel("training wall-clock (s), evaluation excluded")
        ax.set_ylabel("mean return, 100 random starts")
        ax.set_ylim(low, high)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    axes[1].set_title("zoomed: lines at -155, -165, -175")
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
