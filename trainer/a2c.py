"""Advantage actor-critic (Mnih et al., 2016): acting and the update, nothing else.

With the `seed` preset (one environment, one step, smooth-L1, the -log_prob term) `update` is the
notebook's `update_model` on a batch of one:
    target    = r + gamma * V(s') * (1 - done)
    critic    = smooth_l1(V(s), target.detach())
    advantage = (target - V(s)).detach()
    actor     = -advantage * log_prob + entropy_weight * (-log_prob)
The `fast` preset runs the same update on [n_steps, num_envs] batches with GAE advantages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swingup import contract
from trainer.advantages import gae
from trainer.config import Hyperparams
from trainer.networks import build_actor, build_critic
from trainer.normalization import RunningMeanStd

LOG_SQRT_2PI = 0.5 * float(np.log(2.0 * np.pi))


@dataclass
class Rollout:
    """n_steps x num_envs transitions. `next_obs` is the real next state (final obs at an end)."""

    obs: torch.Tensor  # [T, N, obs_dim]
    actions: torch.Tensor  # [T, N, action_dim], as sampled (before clipping)
    rewards: torch.Tensor  # [T, N]
    terminated: torch.Tensor  # [T, N] bool
    truncated: torch.Tensor  # [T, N] bool
    next_obs: torch.Tensor  # [T, N, obs_dim]


@dataclass
class UpdateStats:
    actor_loss: float
    critic_loss: float
    entropy: float
    std: float


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(actions | mean, std) summed over the action dimension (torch's Normal, unrolled)."""
    var = std**2
    per_dim = -((actions - mean) ** 2) / (2 * var) - torch.log(std) - LOG_SQRT_2PI
    return per_dim.sum(dim=-1)


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    return (0.5 + LOG_SQRT_2PI + torch.log(std)).sum(dim=-1)


class A2C:
    """The actor, the critic, their optimisers and the observation statistics."""

    def __init__(self, hp: Hyperparams) -> None:
        self.hp = hp
        self.actor = build_actor(hp)
        self.critic = build_critic(hp)
        std_head = list(self.actor.log_std_layer.parameters())
        std_ids = {id(p) for p in std_head}
        rest = [p for p in self.actor.parameters() if id(p) not in std_ids]
        # One Adam with a group per learning rate: Adam is per parameter, so this is the
        # notebook's two optimisers exactly, in one fused kernel call instead of a dozen small ops
        # per parameter (most of the cost of the seed preset's one-transition updates).
        self.base_lrs = (hp.actor_lr, hp.actor_lr * hp.std_lr_scale, hp.critic_lr)
        params = [rest, std_head, list(self.critic.parameters())]
        self.optimizer = torch.optim.Adam(
            [{"params": p, "lr": lr} for p, lr in zip(params, self.base_lrs, strict=True)],
            eps=hp.adam_eps,
            fused=True,
        )
        self.obs_rms = RunningMeanStd(contract.OBS_DIM)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Sample actions from N(mean, std) (unclipped; the caller clips what the env gets)."""
        mean, std = self.actor(obs)
        return torch.normal(mean, std)

    def observe(self, obs: torch.Tensor) -> None:
        """Fold a rollout's observations into the running statistics the networks normalise with."""
        if not self.hp.normalize_obs:
            return
        self.obs_rms.update(obs.reshape(-1, contract.OBS_DIM).double())
        mean, std = self.obs_rms.mean.float(), self.obs_rms.std().float()
        for net in (self.actor, self.critic):
            net.normalizer.obs_mean.copy_(mean)
            net.normalizer.obs_std.copy_(std)

    def lr_scale(self, fraction_done: float) -> float:
        """The learning-rate multiplier at this point of the run."""
        hp = self.hp
        if hp.lr_schedule != "linear":
            return 1.0
        if hp.lr_decay_frames > 0:
            fraction_done = fraction_done * hp.frames / hp.lr_decay_frames
        fraction_done = min(max(fraction_done, 0.0), 1.0)
        return 1.0 - (1.0 - hp.lr_end_scale) * fraction_done

    def set_progress(self, fraction_done: float) -> None:
        """Apply the learning-rate schedule at this point of the run."""
        scale = self.lr_scale(fraction_done)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * scale

    def update(self, batch: Rollout) -> UpdateStats:
        hp = self.hp
        steps, envs = batch.rewards.shape
        flat_obs = batch.obs.reshape(steps * envs, -1)
        both = self.critic(torch.cat([flat_obs, batch.next_obs.reshape(steps * envs, -1)]))
        values = both[: steps * envs].reshape(steps, envs)
        next_values = both[steps * envs :].reshape(steps, envs).detach()
        advantages, targets = gae(
            batch.rewards * hp.reward_scale,
            values.detach(),
            next_values,
            batch.terminated,
            batch.truncated,
            hp.gamma,
            hp.gae_lambda,
            hp.cut_bootstrap_at_truncation,
        )
        loss_fn = F.smooth_l1_loss if hp.critic_loss == "smooth_l1" else F.mse_loss
        critic_loss = loss_fn(values, targets)

        mean, std = self.actor(flat_obs)
        log_prob = gaussian_log_prob(batch.actions.reshape(steps * envs, -1), mean, std)
        adv = advantages.reshape(-1)
        if hp.normalize_advantage and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if hp.entropy_from_log_prob:
            bonus = hp.entropy_weight * -log_prob
        else:
            bonus = -hp.entropy_weight * gaussian_entropy(std)
        actor_loss = (-adv * log_prob + bonus).mean()
        self._step(critic_loss, actor_loss)
        with torch.no_grad():  # statistics only: no autograd bookkeeping
            stats = torch.stack(
                [actor_loss, critic_loss, gaussian_entropy(std).mean(), std.mean()]
            ).tolist()
        return UpdateStats(*stats)

    def _step(self, critic_loss: torch.Tensor, actor_loss: torch.Tensor) -> None:
        """One backward pass for both losses, then each network's own clipping and step.

        The networks share no parameters and the advantages are detached, so the gradients are
        exactly those of two separate passes (the notebook's critic-then-actor order), for half
        the autograd overhead.
        """
        self.optimizer.zero_grad(set_to_none=True)
        (critic_loss + actor_loss).backward()  # type: ignore[no-untyped-call]
        if self.hp.max_grad_norm > 0:
            for net in (self.critic, self.actor):
                nn.utils.clip_grad_norm_(net.parameters(), self.hp.max_grad_norm)
        self.optimizer.step()
