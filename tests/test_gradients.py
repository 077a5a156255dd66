"""The hand-written update equals autograd's, bit for bit: gradients, Adam steps and losses.

The reference below is the update written the usual way (the losses as autograd expressions,
`backward()`, clipping, `torch.optim.Adam.step()`: torch's default for one-transition updates,
as in the notebook, the fused kernel otherwise); both run from the same weights on the same
rollouts for several steps, so Adam's moments and both GroupedAdam fast paths are covered.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer import gradients
from trainer.a2c import A2C, Rollout
from trainer.advantages import gae
from trainer.config import PRESETS, Hyperparams

VARIANTS = {
    "seed": PRESETS["seed"],
    "fast": PRESETS["fast"],
    # Two hidden layers, the true entropy with a weight, mse, exp-softplus std, odd batch shape.
    "other": dataclasses.replace(
        PRESETS["fast"],
        num_envs=3,
        n_steps=5,
        layers=2,
        hidden=32,
        critic_hidden=48,
        std_param="exp_softplus",
        init_std=0.0,
        entropy_weight=0.05,
        normalize_advantage=False,
        max_grad_norm=0.3,
        std_lr_scale=0.5,
    ),
    # The notebook's one-transition update with a learning rate per group that changes.
    "seed-scheduled": dataclasses.replace(
        PRESETS["seed"], lr_schedule="linear", std_lr_scale=0.5, max_grad_norm=0.3
    ),
}


def reference_losses(agent: A2C, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """The update's losses as autograd expressions of the modules' forward."""
    hp = agent.hp
    steps, envs = batch.rewards.shape
    n = steps * envs
    flat_obs = batch.obs.reshape(n, -1)
    values = agent.critic(flat_obs).reshape(steps, envs)
    next_values = agent.critic(batch.next_obs.reshape(n, -1)).reshape(steps, envs)
    advantages, targets = gae(
        batch.rewards * hp.reward_scale,
        values.detach(),
        next_values.detach(),
        batch.terminated,
        batch.truncated,
        hp.gamma,
        hp.gae_lambda,
        hp.cut_bootstrap_at_truncation,
    )
    loss_fn = F.smooth_l1_loss if hp.critic_loss == "smooth_l1" else F.mse_loss
    critic_loss = loss_fn(values, targets)
    mean, std = agent.actor(flat_obs)
    log_prob = gradients.gaussian_log_prob(batch.actions.reshape(n, -1), mean, std).value
    adv = advantages.reshape(-1)
    if hp.normalize_advantage and n > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    if hp.entropy_from_log_prob:
        bonus = hp.entropy_weight * -log_prob
    else:
        bonus = -hp.entropy_weight * gradients.gaussian_entropy(std)
    return critic_loss, (-adv * log_prob + bonus).mean()


def reference_step(agent: A2C, optimizer: torch.optim.Optimizer, batch: Rollout) -> None:
    optimizer.zero_grad(set_to_none=True)
    critic_loss, actor_loss = reference_losses(agent, batch)
    (critic_loss + actor_loss).backward()  # type: ignore[no-untyped-call]
    if agent.hp.max_grad_norm > 0:
        for net in (agent.critic, agent.actor):
            nn.utils.clip_grad_norm_(net.parameters(), agent.hp.max_grad_norm)
    optimizer.step()


def rollout(hp: Hyperparams, seed: int) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    shape = (hp.n_steps, hp.num_envs)
    return Rollout(
        obs=torch.randn(*shape, 3, generator=g),
        actions=torch.randn(*shape, 1, generator=g) * 2,
        rewards=-torch.rand(*shape, generator=g) * 16,
        terminated=torch.rand(*shape, generator=g) < 0.05,
        truncated=torch.rand(*shape, generator=g) < 0.1,
        next_obs=torch.randn(*shape, 3, generator=g),
    )


def params(agent: A2C) -> list[torch.Tensor]:
    return [*agent.actor.parameters(), *agent.critic.parameters()]


@pytest.mark.parametrize("variant", VARIANTS)
def test_update_equals_autograd_bit_for_bit(variant: str) -> None:
    hp = VARIANTS[variant]
    torch.manual_seed(0)
    ours = A2C(hp)
    ref = copy.deepcopy(ours)
    # One transition per update: the notebook's optim.Adam, torch's default; else the fused one.
    assert ours.optimizer.fused == (hp.num_envs * hp.n_steps > 1)
    ref_optimizer = torch.optim.Adam(
        [{"params": g["params"], "lr": g["lr"]} for g in ref.optimizer.param_groups],
        eps=hp.adam_eps,
        fused=ours.optimizer.fused or None,
    )
    for step in range(4):
        batch = rollout(hp, step)
        ours.observe(batch.obs)
        ref.observe(batch.obs)
        ours.set_progress(step / 10)
        ref.set_progress(step / 10)
        for group, ref_group in zip(
            ours.optimizer.param_groups, ref_optimizer.param_groups, strict=True
        ):
            ref_group["lr"] = group["lr"]
        stats = ours.update(batch).stats()
        with torch.no_grad():
            critic_loss, actor_loss = reference_losses(ref, batch)
        assert (stats.critic_loss, stats.actor_loss) == (critic_loss.item(), actor_loss.item())
        reference_step(ref, ref_optimizer, batch)
        for mine, theirs in zip(params(ours), params(ref), strict=True):
            assert mine.grad is not None and theirs.grad is not None
            assert torch.equal(mine.grad, theirs.grad), f"step {step}: gradients differ"
            assert torch.equal(mine, theirs), f"step {step}: parameters differ"


@pytest.mark.parametrize("variant", ["seed", "other"])
def test_the_optimizer_state_survives_a_checkpoint_round_trip(variant: str) -> None:
    """After load_state_dict the fast path steps the loaded moments, not the old ones."""
    hp = VARIANTS[variant]
    torch.manual_seed(0)
    agent = A2C(hp)
    for step in range(2):
        agent.update(rollout(hp, step))
    saved = copy.deepcopy(agent.optimizer.state_dict())
    twin = copy.deepcopy(agent)
    for step in range(2, 4):
        agent.update(rollout(hp, step))
    twin.optimizer.load_state_dict(copy.deepcopy(saved))
    agent.optimizer.load_state_dict(saved)
    agent.actor.load_state_dict(twin.actor.state_dict())
    agent.critic.load_state_dict(twin.critic.state_dict())
    for step in range(2, 4):
        agent.update(rollout(hp, step))
        twin.update(rollout(hp, step))
    for mine, theirs in zip(params(agent), params(twin), strict=True):
        assert torch.equal(mine, theirs)


def test_what_the_update_keeps_is_usable_outside_it() -> None:
    """The update runs in inference mode; the gradients and Adam's state it leaves behind are
    ordinary tensors, so code outside it (a user's, torch's own) can still modify them."""
    hp = VARIANTS["seed"]
    agent = A2C(hp)
    agent.update(rollout(hp, 0))
    agent.update(rollout(hp, 1))
    for param in params(agent):
        assert param.grad is not None
        param.grad.zero_()
    for state in agent.optimizer.state_dict()["state"].values():
        state["exp_avg"].mul_(1.0)
    agent.optimizer.optimizer.step()  # torch's own step, outside inference mode
