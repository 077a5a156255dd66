"""Drive Pendulum-v1 episodes with any batched policy: the trainer's evaluation and the client's
controllers both run pendulums through this one loop.

A policy is a function from observations [n, 3] float32 to actions [n, 1]; it may be a torch
actor, an onnxruntime session or a remote server. Episode i of a run starts from `seed + i`, so a
result names its start states exactly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swingup import atomic, contract

Policy = Callable[[np.ndarray], np.ndarray]

# Evaluation seeds live far from the small seeds training uses, so they are never start states
# that training has seen.
EVAL_SEED = 1_000_000


@dataclass
class EpisodeReport:
    """What a run of episodes did: returns in episode order and the time spent in the policy."""

    returns: list[float] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    policy_latencies_s: list[float] = field(default_factory=list)
    # Why the GIF could not be written (after every episode ran: the returns stand).
    gif_error: str | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else float("nan")


def _quiet_pygame() -> None:
    # Rendering to an array needs no display; tell SDL so instead of letting it look for one.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def run_episodes(
    policy: Policy,
    episodes: int,
    *,
    pendulums: int | None = None,
    seed: int = EVAL_SEED,
    gif: Path | None = None,
    on_returns: Callable[[list[float]], None] | None = None,
) -> EpisodeReport:
    """Run `episodes` episodes on `pendulums` environments stepped in lockstep.

    Every step asks `policy` once for the actions of all running pendulums. With `gif`, the first
    episode of pendulum 0 is rendered to an animated GIF. `on_returns` hears each round's returns
    as it ends, so a caller can show them before a later round fails.
    """
    import gymnasium as gym

    width = min(pendulums or episodes, episodes)
    if gif is not None:
        _quiet_pygame()
    envs = [
        gym.make(contract.ENV_ID, render_mode="rgb_array" if gif is not None and i == 0 else None)
        for i in range(width)
    ]
    report = EpisodeReport()
    frames: list[np.ndarray] = []
    start = time.perf_counter()
    try:
        for first in range(0, episodes, width):
            batch = list(range(first, min(first + width, episodes)))
            obs = np.stack([envs[k].reset(seed=seed + ep)[0] for k, ep in enumerate(batch)]).astype(
                np.float32
            )
            record = gif is not None and first == 0
            returns = _run_round(
                policy,
                [envs[k] for k in range(len(batch))],
                obs,
                report,
                frames if record else None,
            )
            report.returns.extend(returns)
            if on_returns is not None:
                on_returns(returns)
    finally:
        for env in envs:
            env.close()
    report.wall_s = time.perf_counter() - start
    if gif is not None and frames:
        try:
            write_gif(gif, frames)
        except OSError as exc:  # checked before the run; the disk can still say no
            report.gif_error = exc.strerror or str(exc)
    return report


def _run_round(
    policy: Policy,
    envs: list[object],
    obs: np.ndarray,
    report: EpisodeReport,
    frames: list[np.ndarray] | None,
) -> list[float]:
    """Step every env until each episode ends; return their returns."""
    returns = np.zeros(len(envs))
    running = np.ones(len(envs), dtype=bool)
    if frames is not None:
        frames.append(envs[0].render())  # type: ignore[attr-defined]
    while running.any():
        t0 = time.perf_counter()
        actions = np.asarray(policy(obs), dtype=np.float32).reshape(len(envs), contract.ACTION_DIM)
        report.policy_latencies_s.append(time.perf_counter() - t0)
        for k, env in enumerate(envs):
            if not running[k]:
                continue
            next_obs, reward, terminated, truncated, _ = env.step(actions[k])  # type: ignore[attr-defined]
            returns[k] += float(reward)
            obs[k] = next_obs
            report.steps += 1
            running[k] = not (terminated or truncated)
            if frames is not None and k == 0 and running[k]:
                frames.append(env.render())  # type: ignore[attr-defined]
    return [float(r) for r in returns]


def write_gif(path: Path, frames: list[np.ndarray], fps: int = 20) -> None:
    """Write RGB frames as an animated GIF at the environment's real-time rate, atomically."""
    from PIL import Image

    images = [Image.fromarray(f).resize((250, 250)) for f in frames]

    def save(tmp: Path) -> None:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(1000 / fps),
            loop=0,
        )

    atomic.write_with(path, save)
