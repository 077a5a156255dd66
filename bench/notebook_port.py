"""The floor of the seed preset: a plain port of the notebook's loop to gymnasium Pendulum-v1.

Deliberately unoptimised and independent of `trainer/`: it is what a user gets by pasting the
notebook into a script, so the ratio against it is what our code adds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal


def _init_uniformly(layer: nn.Linear, init_w: float = 3e-3) -> None:
    layer.weight.data.uniform_(-init_w, init_w)
    layer.bias.data.uniform_(-init_w, init_w)


class _Actor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(3, 128)
        self.mu_layer = nn.Linear(128, 1)
        self.log_std_layer = nn.Linear(128, 1)
        _init_uniformly(self.mu_layer)
        _init_uniformly(self.log_std_layer)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, Normal]:
        x = F.relu(self.hidden1(state))
        mu = torch.tanh(self.mu_layer(x)) * 2
        std = torch.exp(F.softplus(self.log_std_layer(x)))
        dist = Normal(mu, std)  # type: ignore[no-untyped-call]
        return dist.sample(), dist  # type: ignore[no-untyped-call]


class _Critic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(3, 128)
        self.out = nn.Linear(128, 1)
        _init_uniformly(self.out)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        value: torch.Tensor = self.out(F.relu(self.hidden1(state)))
        return value


@dataclass
class PortRun:
    """What a run of the port leaves: its networks, its episodes' returns and its speed."""

    actor: nn.Module
    critic: nn.Module
    returns: list[float] = field(default_factory=list)
    frames_per_s: float = 0.0


def train(frames: int, seed: int = 777) -> PortRun:
    """Train for `frames` frames the notebook's way (tests/test_seed_update.py holds the seed
    preset to these numbers, bit for bit)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    env = gym.make("Pendulum-v1")
    actor, critic = _Actor(), _Critic()
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=1e-4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    result = PortRun(actor, critic)
    state, _ = env.reset(seed=seed)
    score = 0.0
    start = time.perf_counter()
    for _ in range(frames):
        state_t = torch.FloatTensor(state)
        action, dist = actor(state_t)
        log_prob = dist.log_prob(action).sum(dim=-1)
        next_state, reward, terminated, truncated, _ = env.step(action.clamp(-2.0, 2.0).numpy())
        done = terminated or truncated
        mask = 1 - done
        pred_value = critic(state_t)
        targ_value = reward + 0.9 * critic(torch.FloatTensor(next_state)) * mask
        value_loss = F.smooth_l1_loss(pred_value, targ_value.detach())
        critic_optimizer.zero_grad()
        value_loss.backward()  # type: ignore[no-untyped-call]
        critic_optimizer.step()
        advantage = (targ_value - pred_value).detach()
        policy_loss = -advantage * log_prob + 1e-2 * -log_prob
        actor_optimizer.zero_grad()
        policy_loss.backward()  # type: ignore[no-untyped-call]
        actor_optimizer.step()
        state = next_state
        score += float(reward)
        if done:
            state, _ = env.reset(seed=seed)
            result.returns.append(score)
            score = 0.0
    result.frames_per_s = frames / (time.perf_counter() - start)
    return result


def run(frames: int, seed: int = 777) -> float:
    """Train for `frames` frames the notebook's way; return frames per second."""
    return train(frames, seed).frames_per_s


if __name__ == "__main__":
    print(f"{run(5000):.0f} frames/s", np.__name__)
