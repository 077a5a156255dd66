"""The seed preset's update on one transition is the notebook's update_model, term by term."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from bench import notebook_port
from trainer.a2c import A2C, Rollout
from trainer.config import PRESETS
from trainer.loop import Trainer


def notebook_update(
    actor: torch.nn.Module,
    critic: torch.nn.Module,
    state: torch.Tensor,
    action: torch.Tensor,
    next_state: torch.Tensor,
    reward: float,
    done: bool,
) -> tuple[float, float]:
    """The notebook's A2CAgent.update_model, transcribed (with its optimisers and order)."""
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=1e-4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    mu, std = actor(state)
    log_prob = Normal(mu, std).log_prob(action).sum(dim=-1)  # type: ignore[no-untyped-call]
    mask = 1 - int(done)
    pred_value = critic(state)
    targ_value = reward + 0.9 * critic(next_state) * mask
    value_loss = F.smooth_l1_loss(pred_value, targ_value.detach())
    critic_optimizer.zero_grad()
    value_loss.backward()  # type: ignore[no-untyped-call]
    critic_optimizer.step()
    advantage = (targ_value - pred_value).detach()
    policy_loss = -advantage * log_prob
    policy_loss += 1e-2 * -log_prob
    actor_optimizer.zero_grad()
    policy_loss.sum().backward()  # type: ignore[no-untyped-call]
    actor_optimizer.step()
    return float(policy_loss.detach().sum()), float(value_loss.detach())


@pytest.mark.parametrize("done", [False, True])
def test_one_transition_matches_the_notebook(done: bool) -> None:
    torch.manual_seed(777)
    hp = PRESETS["seed"]
    agent = A2C(hp)
    actor, critic = copy.deepcopy(agent.actor), copy.deepcopy(agent.critic)

    state = torch.tensor([[0.6, -0.8, 1.5]])
    next_state = torch.tensor([[0.5, -0.86, 2.0]])
    action = agent.act(state)
    reward = -4.2
    rollout = Rollout(
        obs=state.reshape(1, 1, 3),
        actions=action.reshape(1, 1, 1),
        rewards=torch.tensor([[reward]]),
        terminated=torch.tensor([[False]]),
        truncated=torch.tensor([[done]]),  # Pendulum only truncates; the notebook cuts there
        next_obs=next_state.reshape(1, 1, 3),
    )
    stats = agent.update(rollout).stats()
    policy_loss, value_loss = notebook_update(
        actor, critic, state, action, next_state, reward, done
    )

    assert stats.critic_loss == pytest.approx(value_loss, rel=1e-5)
    assert stats.actor_loss == pytest.approx(policy_loss, rel=1e-5)
    for ours, theirs in zip(
        [*agent.actor.parameters(), *agent.critic.parameters()],
        [*actor.parameters(), *critic.parameters()],
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_seed_preset_is_the_notebook_configuration() -> None:
    hp = PRESETS["seed"]
    assert (hp.frames, hp.seed, hp.gamma, hp.entropy_weight) == (100_000, 777, 0.9, 1e-2)
    assert (hp.actor_lr, hp.critic_lr, hp.num_envs, hp.n_steps) == (1e-4, 1e-3, 1, 1)
    assert hp.entropy_from_log_prob and hp.cut_bootstrap_at_truncation and hp.fixed_start
    assert (hp.critic_loss, hp.std_param, hp.hidden, hp.layers) == (
        "smooth_l1",
        "exp_softplus",
        128,
        1,
    )
    assert not (hp.normalize_obs or hp.normalize_advantage) and hp.max_grad_norm == 0


def test_notebook_initialisation() -> None:
    torch.manual_seed(0)
    agent = A2C(dataclasses.replace(PRESETS["seed"]))
    for layer in (agent.actor.mu_layer, agent.actor.log_std_layer, agent.critic.out):
        assert float(layer.weight.detach().abs().max()) <= 3e-3
        assert float(layer.bias.detach().abs().max()) <= 3e-3
    # std = exp(softplus(x)) > 1 everywhere: the notebook's very noisy policy.
    _, std = agent.actor(torch.randn(64, 3))
    assert bool((std > 1).all())


def test_the_seed_preset_is_the_notebook_port_bit_for_bit(tmp_path: Path) -> None:
    """The whole loop against bench/notebook_port.py (the notebook pasted into a script, torch's
    own modules, Normal, autograd and Adam): same seed, the same weights and episode returns to
    the last bit, over five episodes and so five time limits."""
    frames = 1_000
    port = notebook_port.train(frames, seed=777)
    hp = dataclasses.replace(PRESETS["seed"], frames=frames, checkpoint_interval=0)
    trainer = Trainer(hp, tmp_path)
    trainer.run()
    assert trainer.state.episodes == len(port.returns) == 5
    assert list(trainer.state.recent_returns) == port.returns
    ours = [*trainer.agent.actor.parameters(), *trainer.agent.critic.parameters()]
    theirs = [*port.actor.parameters(), *port.critic.parameters()]
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference), float((mine - reference).abs().max())
