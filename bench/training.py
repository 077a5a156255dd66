"""Training benchmark: frames/s of both presets beside the notebook port, and learning curves of
`fast` on three seeds beside Stable-Baselines3's tuned A2C, against training wall-clock seconds.

Evaluations (100 random-start episodes, mean actions) are excluded from the training clock.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import notebook_port, peer_sb3
from trainer.config import PRESETS
from trainer.loop import Trainer


@dataclasses.dataclass
class Scale:
    """How much work one benchmark run does; `smoke` is the tiny size `make test` runs."""

    speed_frames_seed: int = 20_000
    # The seed preset and its floor alternate this many times; the table reports medians (one
    # pass of each on a shared 2-core machine varies by +-10%).
    speed_rounds: int = 3
    speed_frames_fast: int = 400_000
    curve_seeds: tuple[int, ...] = (1, 2, 3)
    budget_s: float = 120.0
    eval_every_s: float = 5.0
    eval_episodes: int = 100
    peer_seeds: tuple[int, ...] = (1,)


SMOKE = Scale(
    speed_frames_seed=300,
    speed_rounds=1,
    speed_frames_fast=3_000,
    curve_seeds=(1,),
    budget_s=0.5,
    eval_every_s=0.25,
    eval_episodes=4,
    peer_seeds=(),
)


def _trainer_fps(preset: str, frames: int, work: Path) -> float:
    hp = dataclasses.replace(PRESETS[preset], frames=frames, checkpoint_interval=10 * frames)
    run_dir = Path(tempfile.mkdtemp(prefix=f"speed-{preset}-", dir=work))
    return Trainer(hp, run_dir).run().frames_per_s


def _curve(seed: int, fps: float, scale: Scale, work: Path) -> dict[str, Any]:
    """Train `fast` for the budget (frames from the measured speed), evaluating as it goes."""
    frames = int(fps * scale.budget_s)
    hp = dataclasses.replace(
        PRESETS["fast"],
        seed=seed,
        frames=max(frames, 1),
        eval_interval=max(int(fps * scale.eval_every_s), 1),
        eval_episodes=scale.eval_episodes,
        checkpoint_interval=10 * frames + 1,
    )
    trainer = Trainer(hp, work / f"curve-{seed}")
    trainer.run()
    points = [(e.train_wall_s, e.eval_mean) for e in trainer.log.evals]
    return {"seed": seed, "frames": trainer.state.frames, "points": points}


def time_to(points: list[tuple[float, float]], threshold: float) -> float | None:
    return next((t for t, r in points if r >= threshold), None)


def run(scale: Scale) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="swingup-bench-") as tmp:
        work = Path(tmp)
        notebook_runs, seed_runs = [], []
        for _ in range(scale.speed_rounds):
            notebook_runs.append(notebook_port.run(scale.speed_frames_seed))
            seed_runs.append(_trainer_fps("seed", scale.speed_frames_seed, work))
        fast_fps = _trainer_fps("fast", scale.speed_frames_fast, work)
        curves = [_curve(seed, fast_fps, scale, work) for seed in scale.curve_seeds]
    peers = []
    if scale.peer_seeds and peer_sb3.available():
        for seed in scale.peer_seeds:
            peer = peer_sb3.run(seed, scale.budget_s, scale.eval_every_s, scale.eval_episodes)
            peers.append(dataclasses.asdict(peer))
    return {
        "notebook_fps": statistics.median(notebook_runs),
        "seed_fps": statistics.median(seed_runs),
        "notebook_fps_runs": notebook_runs,
        "seed_fps_runs": seed_runs,
        "fast_fps": fast_fps,
        "curves": curves,
        "peers": peers,
        "peer_hyperparameters": peer_sb3.ZOO,
        "budget_s": scale.budget_s,
        "eval_episodes": scale.eval_episodes,
    }
