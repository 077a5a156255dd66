"""The training loop: collect n_steps x num_envs frames, update, log, checkpoint, repeat.

Everything the loop carries between iterations is in `LoopState` and in the checkpoint, so a run
resumed from any checkpoint ends with the same metrics as one that never stopped.
"""

from __future__ import annotations

import math
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from swingup import contract
from swingup.episodes import EVAL_SEED, run_episodes
from trainer import checkpoint, envs
from trainer.a2c import A2C, Rollout, UpdateRecord, UpdateStats
from trainer.config import Hyperparams
from trainer.policies import as_policy, torch_mean_std
from trainer.run_log import EvalRow, MetricsRow, RunLog, read_evals, read_metrics

KEEP_CHECKPOINTS = 3
# Updates keep their statistics' tensors until a metrics row is written; past this many they
# are turned into numbers, so that a long log interval cannot pile up tensors without bound.
PENDING_TENSORS_LIMIT = 4096


# Ctrl-C, and what Docker, Kubernetes and Slurm send before they kill: both stop at a checkpoint.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived; a checkpoint was written."""

    def __init__(self, checkpoint_path: Path, signum: int = signal.SIGINT) -> None:
        super().__init__(str(checkpoint_path))
        self.checkpoint_path = checkpoint_path
        self.signum = signum


@dataclass
class LoopState:
    """What the loop carries from one iteration to the next (besides networks and envs)."""

    frames: int = 0
    episodes: int = 0
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    episode_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Updates since the last metrics row (restored from a checkpoint as numbers).
    pending: list[UpdateRecord | UpdateStats] = field(default_factory=list)
    train_wall_s: float = 0.0


class RolloutBuffers:
    """One rollout's worth of numpy arrays, viewed as the tensors of a `Rollout`."""

    def __init__(self, steps: int, envs: int) -> None:
        self.obs = np.zeros((steps, envs, contract.OBS_DIM), np.float32)
        self.actions = np.zeros((steps, envs, contract.ACTION_DIM), np.float32)
        self.rewards = np.zeros((steps, envs), np.float32)
        self.terminated = np.zeros((steps, envs), bool)
        self.truncated = np.zeros((steps, envs), bool)
        self.next_obs = np.zeros((steps, envs, contract.OBS_DIM), np.float32)
        self._rollout = Rollout(
            *(
                torch.from_numpy(a)
                for a in (
                    self.obs,
                    self.actions,
                    self.rewards,
                    self.terminated,
                    self.truncated,
                    self.next_obs,
                )
            )
        )

    def as_rollout(self) -> Rollout:
        return self._rollout


@dataclass
class TrainResult:
    run_dir: Path
    frames: int
    wall_s: float
    frames_per_s: float
    final_checkpoint: Path
    evaluation: EvalRow | None = None  # the final one, when run(evaluate=True)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    # One thread: the networks are tiny, so threads only add hand-offs, and results stay exact.
    torch.set_num_threads(1)


class Trainer:
    def __init__(
        self,
        hp: Hyperparams,
        run_dir: Path,
        resume_from: Path | None = None,
        on_progress: Callable[[int, float], None] | None = None,
        preset: str = "custom",
        on_checkpoint: Callable[[Path], None] | None = None,
    ) -> None:
        self.hp = hp
        self.preset = preset
        self.on_checkpoint = on_checkpoint
        self.run_dir = run_dir
        self.on_progress = on_progress
        _seed_everything(hp.seed)
        self.agent = A2C(hp)
        self.envs = envs.make_vector_env(hp.num_envs, hp.seed, hp.fixed_start)
        first_obs, _ = self.envs.reset(seed=hp.seed)
        self.obs: np.ndarray = np.asarray(first_obs, dtype=np.float32)
        self._buffers = RolloutBuffers(hp.n_steps, hp.num_envs)
        self.state = LoopState(episode_returns=np.zeros(hp.num_envs))
        metrics: list[MetricsRow] = []
        evals: list[EvalRow] = []
        if resume_from is not None:
            saved = checkpoint.load(resume_from)
            self._restore(saved)
            metrics = [m for m in read_metrics(run_dir) if m.frame <= self.state.frames]
            evals = [e for e in read_evals(run_dir) if e.frame <= self.state.frames]
        self.log = RunLog(run_dir, metrics, evals)
        self._stop_requested = False
        self._stop_signal: int = signal.SIGINT

    # -- the loop -------------------------------------------------------------------------------

    def run(self, evaluate: bool = False) -> TrainResult:
        """Train to hp.frames. With `evaluate`, end with an evaluation recorded in evals.csv and
        the plot (reusing one an eval interval ran at the last frame)."""
        hp = self.hp
        per_update = hp.num_envs * hp.n_steps
        with self._sigint_requests_stop():
            while self.state.frames < hp.frames:
                started = time.perf_counter()
                self.agent.set_progress(self.state.frames / hp.frames)
                rollout = self._collect()
                self.agent.observe(rollout.obs)
                self.state.pending.append(self.agent.update(rollout))
                if len(self.state.pending) % PENDING_TENSORS_LIMIT == 0:
                    self.state.pending = [p.stats() for p in self.state.pending]
                self.state.frames += per_update
                self.state.train_wall_s += time.perf_counter() - started
                self._after_update(per_update)
                if self._stop_requested:
                    path = self._save_checkpoint()
                    self.log.flush()
                    raise Interrupted(path, self._stop_signal)
        if self.state.pending:  # the last partial interval still gets its row
            self._log_row()
        final = self._save_checkpoint()
        evaluation = self._final_evaluation() if evaluate else None
        self.log.flush()
        self.log.close()
        wall = self.state.train_wall_s
        return TrainResult(
            run_dir=self.run_dir,
            frames=self.state.frames,
            wall_s=wall,
            frames_per_s=self.state.frames / wall if wall > 0 else 0.0,
            final_checkpoint=final,
            evaluation=evaluation,
        )

    def _final_evaluation(self) -> EvalRow:
        evals = self.log.evals
        if evals and evals[-1].frame == self.state.frames:
            return evals[-1]  # an eval interval ended here: the same policy, the same episodes
        return self.evaluate_now()

    def _collect(self) -> Rollout:
        """Step every env n_steps times. Writes go to numpy buffers allocated once and shared
        with the returned tensors (no per-step tensor conversions: the seed preset collects a
        rollout per frame); the rollout is consumed by the update before the next one."""
        buf = self._buffers
        for t in range(self.hp.n_steps):
            buf.obs[t] = self.obs
            actions = self.agent.act(torch.from_numpy(self.obs)).numpy()
            buf.actions[t] = actions
            next_obs, rewards, terminated, truncated, infos = self.envs.step(
                np.clip(actions, contract.ACTION_LOW, contract.ACTION_HIGH)
            )
            buf.rewards[t] = rewards
            buf.terminated[t] = terminated
            buf.truncated[t] = truncated
            buf.next_obs[t] = next_obs
            ended = terminated | truncated
            if ended.any():  # the real next state of an ended episode, not the reset one
                for i in np.flatnonzero(ended):
                    buf.next_obs[t, i] = infos["final_obs"][i]
            self._count_episodes(rewards, ended)
            self.obs = next_obs
        return buf.as_rollout()

    def _count_episodes(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        self.state.episode_returns += rewards
        for i in np.flatnonzero(ended):
            self.state.recent_returns.append(float(self.state.episode_returns[i]))
            self.state.episode_returns[i] = 0.0
            self.state.episodes += 1

    def _after_update(self, per_update: int) -> None:
        hp, frames = self.hp, self.state.frames
        if self._crossed(hp.log_interval, per_update):
            self._log_row()
        if hp.eval_interval > 0 and self._crossed(hp.eval_interval, per_update):
            self.evaluate_now()
        if self._crossed(hp.checkpoint_interval, per_update) and frames < hp.frames:
            self._save_checkpoint()
            self.log.flush(plot=False)
        if self.on_progress is not None:
            self.on_progress(per_update, self._score())

    def _crossed(self, interval: int, per_update: int) -> bool:
        """Whether the last update crossed a multiple of `interval` frames."""
        return (
            interval > 0
            and self.state.frames // interval != (self.state.frames - per_update) // interval
        )

    def _score(self) -> float:
        recent = self.state.recent_returns
        return float(np.mean(recent)) if recent else math.nan

    def _log_row(self) -> None:
        pending = [p.stats() for p in self.state.pending]
        lr_scale = self.agent.optimizer.param_groups[0]["lr"] / self.hp.actor_lr
        self.log.add_metrics(
            MetricsRow(
                frame=self.state.frames,
                episodes=self.state.episodes,
                score=self._score(),
                actor_loss=float(np.mean([s.actor_loss for s in pending])),
                critic_loss=float(np.mean([s.critic_loss for s in pending])),
                entropy=float(np.mean([s.entropy for s in pending])),
                std=float(np.mean([s.std for s in pending])),
                lr_scale=float(lr_scale),
            )
        )
        self.state.pending = []

    def evaluate_now(self) -> EvalRow:
        """Evaluate the mean-action policy on random starts; its time is not training time."""
        policy = as_policy(torch_mean_std(self.agent.actor), sample=False, seed=0)
        report = run_episodes(policy, self.hp.eval_episodes, seed=EVAL_SEED)
        row = EvalRow(
            frame=self.state.frames,
            train_wall_s=self.state.train_wall_s,
            eval_mean=report.mean,
            eval_std=report.std,
            episodes=len(report.returns),
        )
        self.log.add_eval(row)
        return row

    # -- checkpoints ----------------------------------------------------------------------------

    def _save_checkpoint(self) -> Path:
        path = checkpoint.checkpoint_path(self.run_dir, self.state.frames)
        checkpoint.save(path, self._snapshot())
        checkpoint.prune(self.run_dir, KEEP_CHECKPOINTS)
        if self.on_checkpoint is not None:
            self.on_checkpoint(path)
        return path

    def _snapshot(self) -> dict[str, Any]:
        s = self.state
        return {
            "preset": self.preset,
            "hyperparams": self.hp.to_dict(),
            "frames": s.frames,
            "episodes": s.episodes,
            "recent_returns": list(s.recent_returns),
            "episode_returns": s.episode_returns.tolist(),
            "pending": [vars(p.stats()) for p in s.pending],
            "train_wall_s": s.train_wall_s,
            "actor": self.agent.actor.state_dict(),
            "critic": self.agent.critic.state_dict(),
            "optimizer": self.agent.optimizer.state_dict(),
            "obs_rms": self.agent.obs_rms.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "obs": torch.from_numpy(self.obs.copy()),
            "envs": envs.get_state(self.envs),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.agent.actor.load_state_dict(saved["actor"])
        self.agent.critic.load_state_dict(saved["critic"])
        self.agent.optimizer.load_state_dict(saved["optimizer"])
        self.agent.obs_rms.load_state_dict(saved["obs_rms"])
        torch.set_rng_state(saved["torch_rng"])
        self.obs = saved["obs"].numpy().astype(np.float32, copy=True)
        envs.set_state(self.envs, saved["envs"])
        s = self.state
        s.frames = int(saved["frames"])
        s.episodes = int(saved["episodes"])
        s.recent_returns.extend(float(r) for r in saved["recent_returns"])
        s.episode_returns = np.array(saved["episode_returns"], dtype=np.float64)
        s.pending = [UpdateStats(**p) for p in saved["pending"]]
        s.train_wall_s = float(saved["train_wall_s"])

    @contextmanager
    def _sigint_requests_stop(self) -> Iterator[None]:
        """Ctrl-C or SIGTERM finishes the current update, writes a checkpoint and stops."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            self._stop_requested = True
            self._stop_signal = signum

        try:
            previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
