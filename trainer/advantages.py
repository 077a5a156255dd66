"""Advantages and value targets for a rollout: n-step returns with GAE (Schulman et al., 2016).

Every step stores V(s') of its own next observation (the final observation when the episode
ended), so a time-limit truncation is bootstrapped with the value of the state it stopped in, as
Stable-Baselines3 does, while a real termination is not.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
    cut_bootstrap_at_truncation: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages, value targets), each shaped like `rewards`: [n_steps, num_envs].

    delta_t = r_t + gamma * V(s'_t) * (1 - end_t) - V(s_t), where end_t is a termination, or with
    `cut_bootstrap_at_truncation` (the notebook's done) any episode end.
    A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}; the chain never crosses an episode end.
    """
    ongoing = (~(terminated | truncated)).to(rewards.dtype)
    bootstrap = ongoing if cut_bootstrap_at_truncation else (~terminated).to(rewards.dtype)
    deltas = rewards + gamma * next_values * bootstrap - values
    if rewards.shape[0] == 1:  # one step: the TD error itself (the seed preset, every frame)
        return deltas, deltas + values
    advantages = torch.empty_like(rewards)
    carry = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        carry = deltas[t] + gamma * lam * ongoing[t] * carry
        advantages[t] = carry
    return advantages, advantages + values
