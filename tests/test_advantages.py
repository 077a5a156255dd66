"""GAE, n-step returns and the truncation bootstrap against cases computed by hand."""

from __future__ import annotations

import pytest
import torch

from trainer.advantages import gae


def col(*values: float) -> torch.Tensor:
    """A [T, 1] column: T steps of one environment."""
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)


def flags(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool).reshape(-1, 1)


def test_one_step_is_the_td_error() -> None:
    # r + gamma * V(s') - V(s) = 1 + 0.9 * 2 - 0.5
    adv, target = gae(col(1.0), col(0.5), col(2.0), flags(0), flags(0), gamma=0.9, lam=1.0)
    assert adv.item() == pytest.approx(2.3)
    assert target.item() == pytest.approx(2.8)


def test_lambda_one_gives_the_n_step_return() -> None:
    rewards, values, next_values = col(1.0, 2.0, 3.0), col(0.1, 0.2, 0.3), col(0.2, 0.3, 4.0)
    _, target = gae(
        rewards, values, next_values, flags(0, 0, 0), flags(0, 0, 0), gamma=0.5, lam=1.0
    )
    # G_0 = 1 + .5*2 + .25*3 + .125*V(s_3)
    assert target[0].item() == pytest.approx(1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4.0)
    assert target[2].item() == pytest.approx(3 + 0.5 * 4.0)


def test_gae_mixes_the_td_errors_with_gamma_lambda() -> None:
    rewards, values, next_values = col(1.0, 1.0), col(0.0, 0.5), col(0.5, 1.0)
    adv, _ = gae(rewards, values, next_values, flags(0, 0), flags(0, 0), gamma=0.9, lam=0.8)
    d0, d1 = 1 + 0.9 * 0.5 - 0.0, 1 + 0.9 * 1.0 - 0.5
    assert adv[1].item() == pytest.approx(d1)
    assert adv[0].item() == pytest.approx(d0 + 0.9 * 0.8 * d1)


def test_truncation_bootstraps_from_the_final_state_and_stops_the_chain() -> None:
    # Step 0 hits the time limit: its next value is V(final obs) = 3; step 1 starts a new episode.
    rewards, values, next_values = col(1.0, 1.0), col(0.0, 0.0), col(3.0, 5.0)
    adv, _ = gae(rewards, values, next_values, flags(0, 0), flags(1, 0), gamma=0.9, lam=0.95)
    assert adv[0].item() == pytest.approx(1 + 0.9 * 3.0)  # bootstrapped, nothing from step 1
    assert adv[1].item() == pytest.approx(1 + 0.9 * 5.0)


def test_the_notebook_cuts_the_bootstrap_at_the_time_limit() -> None:
    adv, target = gae(
        col(1.0),
        col(0.5),
        col(3.0),
        flags(0),
        flags(1),
        gamma=0.9,
        lam=1.0,
        cut_bootstrap_at_truncation=True,
    )
    assert target.item() == pytest.approx(1.0)
    assert adv.item() == pytest.approx(0.5)


def test_termination_never_bootstraps() -> None:
    adv, _ = gae(
        col(-1.0, 2.0), col(0.2, 0.0), col(9.0, 1.0), flags(1, 0), flags(0, 0), gamma=0.9, lam=0.9
    )
    assert adv[0].item() == pytest.approx(-1.0 - 0.2)


def test_environments_are_independent_columns() -> None:
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    zeros = torch.zeros(2, 2, dtype=torch.float64)
    no = torch.zeros(2, 2, dtype=torch.bool)
    adv, _ = gae(rewards, zeros, zeros, no, no, gamma=0.5, lam=1.0)
    assert adv[:, 0].tolist() == pytest.approx([1.0, 0.0])
    assert adv[:, 1].tolist() == pytest.approx([0.5, 1.0])
