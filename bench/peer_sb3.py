"""The peer: Stable-Baselines3 A2C with rl-baselines3-zoo's tuned Pendulum-v1 hyperparameters.

Evaluated exactly like ours: mean actions on the same 100 random-start episodes, evaluation time
excluded from the training clock. Needs the optional `bench` extra (stable-baselines3).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from swingup.episodes import EVAL_SEED, run_episodes

# rl-baselines3-zoo, hyperparams/a2c.yml, Pendulum-v1.
ZOO: dict[str, Any] = {
    "n_envs": 8,
    "n_steps": 8,
    "gamma": 0.9,
    "gae_lambda": 0.9,
    "ent_coef": 0.0,
    "vf_coef": 0.4,
    "max_grad_norm": 0.5,
    "learning_rate": 7e-4,  # linear schedule to 0 over n_timesteps
    "use_sde": True,
    "normalize_advantage": False,
    "policy_kwargs": {"log_std_init": -2, "ortho_init": False},
    "n_timesteps": 1_000_000,
}


@dataclass
class PeerCurve:
    seed: int
    points: list[tuple[float, float]] = field(default_factory=list)  # (train seconds, eval mean)
    frames_per_s: float = 0.0
    error: str = ""


def available() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def run(seed: int, budget_s: float, eval_every_s: float, episodes: int = 100) -> PeerCurve:
    """Train the zoo's A2C for `budget_s` seconds of training time, evaluating on the way."""
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=ZOO["n_envs"], seed=seed), gamma=0.9)
    total = int(ZOO["n_timesteps"])
    lr0 = float(ZOO["learning_rate"])
    # A deep copy: SB3 writes classes into policy_kwargs, and ZOO is reported as JSON.
    kwargs: dict[str, Any] = copy.deepcopy(
        {k: v for k, v in ZOO.items() if k not in ("n_envs", "n_timesteps", "learning_rate")}
    )
    model = A2C(
        "MlpPolicy", venv, learning_rate=lambda p: p * lr0, seed=seed, device="cpu", **kwargs
    )
    curve = PeerCurve(seed=seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        normed = venv.normalize_obs(obs)
        actions, _ = model.predict(normed, deterministic=True)
        return np.asarray(actions, dtype=np.float32)

    class Clock(BaseCallback):  # type: ignore[misc]  # Any when the bench extra is absent
        def __init__(self) -> None:
            super().__init__()
            self.train_s = 0.0
            self.last = time.perf_counter()
            self.next_eval = eval_every_s

        def _on_step(self) -> bool:
            now = time.perf_counter()
            self.train_s += now - self.last
            if self.train_s >= self.next_eval:
                self.next_eval += eval_every_s
                report = run_episodes(policy, episodes, seed=EVAL_SEED)
                curve.points.append((self.train_s, report.mean))
            self.last = time.perf_counter()  # evaluation time is not training time
            return self.train_s < budget_s

    clock = Clock()
    model.learn(total_timesteps=total, callback=clock)
    curve.frames_per_s = model.num_timesteps / max(clock.train_s, 1e-9)
    return curve
