"""Whole training runs, small: reproducibility, exact resumption, learning, the run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import checkpoint
from trainer.config import PRESETS, Hyperparams
from trainer.loop import Interrupted, Trainer
from trainer.run_log import METRICS_FILE, read_metrics


def small(preset: str, **changes: object) -> Hyperparams:
    base: dict[str, object] = {"frames": 2_000, "log_interval": 200, "checkpoint_interval": 1_000}
    if preset == "fast":
        base.update(num_envs=4, n_steps=5, log_interval=100, checkpoint_interval=500)
    base.update(changes)
    return dataclasses.replace(PRESETS[preset], **base)  # type: ignore[arg-type]


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [
        p.detach().clone()
        for p in [*trainer.agent.actor.parameters(), *trainer.agent.critic.parameters()]
    ]


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_same_seed_same_metrics_bit_for_bit(preset: str, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        trainer = Trainer(small(preset), tmp_path / name)
        trainer.run()
        runs.append(trainer)
    text_a = (tmp_path / "a" / METRICS_FILE).read_bytes()
    assert text_a == (tmp_path / "b" / METRICS_FILE).read_bytes()
    assert len(read_metrics(tmp_path / "a")) >= 10
    for wa, wb in zip(weights(runs[0]), weights(runs[1]), strict=True):
        assert torch.equal(wa, wb)
    # A different seed really is a different run.
    other = Trainer(small(preset, seed=12345), tmp_path / "c")
    other.run()
    assert (tmp_path / "c" / METRICS_FILE).read_bytes() != text_a


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_interrupt_and_resume_equals_an_uninterrupted_run(preset: str, tmp_path: Path) -> None:
    hp = small(preset)
    whole = Trainer(hp, tmp_path / "whole")
    whole.run()

    first = Trainer(hp, tmp_path / "split")

    def stop_midway(frames: int, score: float) -> None:
        # Ctrl-C's handler sets this flag; setting it directly interrupts at the same boundary.
        if first.state.frames >= 700:
            first._stop_requested = True

    first.on_progress = stop_midway
    with pytest.raises(Interrupted) as stopped:
        first.run()
    assert first.state.frames < hp.frames
    resumed = Trainer(hp, tmp_path / "split", resume_from=stopped.value.checkpoint_path)
    resumed.run()

    assert (tmp_path / "split" / METRICS_FILE).read_bytes() == (
        tmp_path / "whole" / METRICS_FILE
    ).read_bytes()
    for wa, wb in zip(weights(whole), weights(resumed), strict=True):
        assert torch.equal(wa, wb)


def test_resume_from_a_periodic_checkpoint_after_a_crash(tmp_path: Path) -> None:
    """A run killed between checkpoints resumes from the last one, as if never stopped."""
    hp = small("fast")
    whole = Trainer(hp, tmp_path / "whole")
    whole.run()

    class Killed(Exception):
        pass

    crashed = Trainer(hp, tmp_path / "crashed")

    def die_after_the_first_checkpoint(frames: int, score: float) -> None:
        if crashed.state.frames >= 1_200:
            raise Killed  # no checkpoint, no flush: what kill -9 leaves behind

    crashed.on_progress = die_after_the_first_checkpoint
    with pytest.raises(Killed):
        crashed.run()
    latest = checkpoint.latest(tmp_path / "crashed")
    assert checkpoint.load(latest)["frames"] == 1_000
    Trainer(hp, tmp_path / "crashed", resume_from=latest).run()
    assert (tmp_path / "crashed" / METRICS_FILE).read_bytes() == (
        tmp_path / "whole" / METRICS_FILE
    ).read_bytes()


def test_checkpoints_load_with_weights_only(tmp_path: Path) -> None:
    Trainer(small("fast"), tmp_path).run()
    paths = checkpoint.list_checkpoints(tmp_path)
    assert 1 <= len(paths) <= 3  # periodic ones are pruned to the last few
    state = torch.load(paths[-1], weights_only=True)
    assert state["frames"] == 2_000
    assert (tmp_path / "training.png").stat().st_size > 1000


def test_a_short_fast_run_improves_the_return(tmp_path: Path) -> None:
    hp = dataclasses.replace(
        PRESETS["fast"], frames=150_000, eval_interval=0, checkpoint_interval=150_000
    )
    trainer = Trainer(hp, tmp_path)
    before = trainer.evaluate_now().eval_mean
    trainer.run()
    after = trainer.evaluate_now().eval_mean
    assert after > before + 150, (before, after)


def pendulum_step(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Pendulum-v1's dynamics (g 10, m 1, l 1, dt 0.05, |u| <= 2, |theta-dot| <= 8)."""
    theta, speed = np.arctan2(obs[..., 1], obs[..., 0]), obs[..., 2]
    u = np.clip(action[..., 0], -2.0, 2.0)
    speed = np.clip(speed + (15.0 * np.sin(theta) + 3.0 * u) * 0.05, -8.0, 8.0)
    theta = theta + speed * 0.05
    return np.stack([np.cos(theta), np.sin(theta), speed], axis=-1)


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_rollouts_pair_each_observation_with_its_action_and_real_next_state(
    preset: str, tmp_path: Path
) -> None:
    """Across the 200-step time limit and the vector env's autoreset: every stored transition
    (obs, action, next_obs) follows the pendulum's physics, so the truncation's next_obs is the
    state the episode stopped in (what its bootstrap needs), never the reset one; and the next
    step starts from a fresh state exactly when an episode ended (no last action paired with a
    first observation)."""
    envs, steps = (1, 1) if preset == "seed" else (3, 50)
    trainer = Trainer(small(preset, num_envs=envs, n_steps=steps), tmp_path)
    parts: dict[str, list[np.ndarray]] = {"obs": [], "actions": [], "next_obs": [], "ended": []}
    for _ in range(250 // steps):
        rollout = trainer._collect()  # buffers are reused: copy them out
        parts["obs"].append(rollout.obs.numpy().copy())
        parts["actions"].append(rollout.actions.numpy().copy())
        parts["next_obs"].append(rollout.next_obs.numpy().copy())
        parts["ended"].append((rollout.terminated | rollout.truncated).numpy().copy())
    obs, actions, next_obs, ended = (np.concatenate(parts[k]) for k in parts)
    assert ended.sum() == envs and ended[199].all()  # the time limit, once per env
    np.testing.assert_allclose(next_obs, pendulum_step(obs, actions), atol=1e-4)
    continues = np.all(obs[1:] == next_obs[:-1], axis=-1)
    assert np.array_equal(continues, ~ended[:-1])
    if preset == "seed":  # the notebook's reset: every episode from the same start
        np.testing.assert_array_equal(obs[200], obs[0])
