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
    runs = len(result.get("seed_fps_runs", [1]))
    lines += [
        f"Frames/s are medians of {runs} alternating runs of the port and the seed preset.",
        "",
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


# What profiles of the seed preset showed (cProfile, py-spy, the torch profiler; 2026-11-24 and
# 2026-11-30) and what was done about it.
SEED_PROFILE = [
    "The seed preset updates after every frame on a batch of one, so its speed is PyTorch's",
    "per-call overhead, not arithmetic. With autograd, per frame: the backward of both losses",
    "about 245 us, the optimiser step about 55 us (plus about 100 us of `Optimizer.step`",
    "bookkeeping), the loss terms about 150 us, the small forward passes about 75 us. Done, every",
    "step checked to leave the results bit-identical (`tests/test_seed_update.py` runs the",
    "notebook port beside the preset; `tests/test_gradients.py` compares with autograd and",
    "`torch.optim.Adam`): the update's gradients written out by hand with autograd's own formulas",
    "and aten backward kernels, in inference mode (`trainer/gradients.py`); Adam's default",
    "for-each arithmetic called on lists gathered once (`trainer/adam.py`; its fused kernel is",
    "faster but rounds otherwise than the notebook's Adam); gradients written into persistent",
    "buffers; loss values and other statistics computed when a metrics row is written instead of",
    "every update; forward passes without a module call per layer; one backward for both losses",
    "and one Adam with a parameter group per learning rate; numpy rollout",
    "buffers shared with the tensors. Together about 2.3x the notebook port (from about 1.1x).",
    "What is left is about 110 small tensor ops per frame at 1-3 us each, the vector environment",
    "(about 40 us) and Python; more would need a compiled update.",
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
