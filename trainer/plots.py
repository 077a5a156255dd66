"""The notebook's three panels (score, actor loss, critic loss), written as a PNG."""

from __future__ import annotations

from pathlib import Path

from swingup import atomic
from trainer.run_log import EvalRow, MetricsRow


def plot_training(path: Path, metrics: list[MetricsRow], evals: list[EvalRow]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [m.frame for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.5))
    last = next((m.score for m in reversed(metrics) if m.score == m.score), float("nan"))
    # A single row draws no line: mark the points so that a short run's plot is not blank.
    marker = "o" if len(metrics) == 1 else None
    axes[0].plot(
        frames,
        [m.score for m in metrics],
        marker=marker,
        label="training score (last 10 episodes)",
    )
    if evals:
        axes[0].plot(
            [e.frame for e in evals],
            [e.eval_mean for e in evals],
            "o-",
            label=f"evaluation ({evals[-1].episodes} random starts, mean action)",
        )
    score = f"{last:.1f}" if last == last else "none yet (no episode has ended)"
    axes[0].set_title(f"frame {frames[-1]}. score: {score}")
    axes[0].set_xlabel("frames")
    axes[0].set_ylabel("return")
    axes[0].legend(loc="lower right")
    for ax, name in ((axes[1], "actor_loss"), (axes[2], "critic_loss")):
        ax.plot(frames, [getattr(m, name) for m in metrics], marker=marker)
        ax.set_title(name)
        ax.set_xlabel("frames")
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
