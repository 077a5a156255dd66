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

import torch
import torch.nn.functional as F
from torch import nn

from swingup import contract
from trainer import gradients
from trainer.adam import GroupedAdam
from trainer.advantages import gae
from trainer.config import Hyperparams
from trainer.networks import build_actor, build_critic
from trainer.normalization import RunningMeanStd


@dataclass
class Rollout:
    """n_steps x num_envs transitions. `next_obs` is the real next state (final obs at an end)."""

    obs: torch.Tensor  # [T, N, obs_dim]
    actions: torch.Tensor  # [T, N, action_dim], as sampled (before clipping)
    rewards: torch.Tensor  # [T, N]
    terminated: torch.Tensor  # [T, N] bool
    truncated: torch.Tensor  # [T, N] bool
    next_obs: torch.Tensor  # [T, N, obs_dim]


@dataclass(frozen=True)
class UpdateStats:
    actor_loss: float
    critic_loss: float
    entropy: float
    std: float

    def stats(self) -> UpdateStats:
        return self


@dataclass(frozen=True)
class UpdateRecord:
    """The tensors an update's statistics come from, kept until they are logged.

    Computing the loss values, entropy and std when a metrics row is written (every
    log_interval frames) instead of in every update keeps a dozen small tensor ops, a sizeable
    share of a one-transition update, out of the seed preset's per-frame cost; the numbers are
    the same, computed by the same ops from the same tensors.
    """

    hp: Hyperparams
    values: torch.Tensor
    targets: torch.Tensor
    neg_adv: torch.Tensor
    log_prob: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def stats(self) -> UpdateStats:
        hp = self.hp
        loss_fn = F.smooth_l1_loss if hp.critic_loss == "smooth_l1" else F.mse_loss
        critic_loss = loss_fn(self.values, self.targets)
        entropy = gradients.gaussian_entropy(self.std)
        if hp.entropy_from_log_prob:
            bonus = hp.entropy_weight * -self.log_prob
        else:
            bonus = -hp.entropy_weight * entropy
        actor_loss = (self.neg_adv * self.log_prob + bonus).mean()
        numbers = torch.stack([actor_loss, critic_loss, entropy.mean(), self.std.mean()])
        return UpdateStats(*numbers.tolist())


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
        # notebook's two optimisers exactly, in a few list-wide kernel calls instead of a dozen
        # small ops per parameter (most of the cost of the seed preset's one-transition updates).
        # Updates on one transition (the notebook's schedule) keep the arithmetic of the
        # notebook's optim.Adam, torch's default; batched ones use the fused kernel, which rounds
        # differently in the last bits and keeps the fast preset's runs (and the shipped model)
        # reproducible as they were.
        self.base_lrs = (hp.actor_lr, hp.actor_lr * hp.std_lr_scale, hp.critic_lr)
        groups = [rest, std_head, list(self.critic.parameters())]
        fused = hp.num_envs * hp.n_steps > 1
        self.optimizer = GroupedAdam(groups, self.base_lrs, hp.adam_eps, fused=fused)
        self.obs_rms = RunningMeanStd(contract.OBS_DIM)
        self._per_sample: dict[int, torch.Tensor] = {}

    @torch.inference_mode()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Sample actions from N(mean, std) (unclipped; the caller clips what the env gets)."""
        mean, std = self.actor.forward(obs)  # forward itself: no module-call hooks per frame
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

    def set_progress(self, fraction_done: float) -> None:
        """Apply the learning-rate schedule at this point of the run."""
        scale = self.hp.lr_scale(fraction_done)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * scale

    @torch.inference_mode()
    def update(self, batch: Rollout) -> UpdateRecord:
        """One gradient step of both networks on a rollout, gradients written out by hand
        (trainer/gradients.py: autograd's arithmetic at a fraction of its per-op overhead)."""
        hp = self.hp
        steps, envs = batch.rewards.shape
        n = steps * envs
        flat_obs = batch.obs.reshape(n, -1)
        # V(s) and V(s') in two passes, as the notebook computes them: one pass over both
        # stacked rounds differently for small batches (a matrix product of two rows is not
        # two vector products), so the seed preset would leave the notebook's numbers.
        critic_acts = self.critic.activations(flat_obs)
        values = self.critic.value(critic_acts[-1]).reshape(steps, envs)
        next_values = self.critic.value(self.critic.activations(batch.next_obs.reshape(n, -1))[-1])
        advantages, targets = gae(
            batch.rewards * hp.reward_scale,
            values,
            next_values.reshape(steps, envs),
            batch.terminated,
            batch.truncated,
            hp.gamma,
            hp.gae_lambda,
            hp.cut_bootstrap_at_truncation,
        )
        grad_values = gradients.critic_loss_grad(hp.critic_loss, values, targets)
        # The bootstrap values V(s') get no gradient: only the V(s) pass is differentiated.
        gradients.critic_backward(self.critic, critic_acts, grad_values.reshape(n, 1))

        actor_acts = self.actor.activations(flat_obs)
        heads = self.actor.heads(actor_acts[-1])
        log_prob = gradients.gaussian_log_prob(batch.actions.reshape(n, -1), heads.mean, heads.std)
        adv = advantages.reshape(-1)
        if hp.normalize_advantage and n > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        neg_adv = -adv
        grad_mean, grad_std = self._actor_loss_grads(neg_adv, log_prob)
        gradients.actor_backward(self.actor, actor_acts, heads, grad_mean, grad_std)
        self._step()
        return UpdateRecord(hp, values, targets, neg_adv, log_prob.value, heads.std)

    def _actor_loss_grads(
        self, neg_adv: torch.Tensor, lp: gradients.GaussianLogProb
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """d/d(mean), d/d(std) of mean(-advantage * log_prob + bonus), as autograd computes them.

        The bonus is the entropy's (-entropy_weight * H), or with the notebook's quirk
        entropy_weight * -log_prob (UpdateRecord.stats computes the loss itself).
        """
        hp = self.hp
        per_sample = self._mean_grad(neg_adv.numel())
        grad_log_prob = per_sample * neg_adv
        if hp.entropy_from_log_prob:
            grad_log_prob = grad_log_prob + -(per_sample * hp.entropy_weight)
            return gradients.gaussian_log_prob_backward(lp, grad_log_prob)
        grad_entropy = (per_sample * -hp.entropy_weight).unsqueeze(-1)
        return gradients.gaussian_log_prob_backward(lp, grad_log_prob, grad_entropy)

    def _mean_grad(self, n: int) -> torch.Tensor:
        """d mean(x) / d x for n terms, as autograd computes it (made once per batch size)."""
        if n not in self._per_sample:
            self._per_sample[n] = torch.ones(n) / n
        return self._per_sample[n]

    def _step(self) -> None:
        """Each network's own clipping, then one Adam step of both."""
        if self.hp.max_grad_norm > 0:
            for net in (self.critic, self.actor):
                nn.utils.clip_grad_norm_(net.parameters(), self.hp.max_grad_norm)
        self.optimizer.step()
