"""Request checks and sampling, below gRPC: each bad request names its problem."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from server import sampling, validation
from server.batching import Batcher
from server.dataplane import DataPlane
from server.errors import InvalidRequest
from server.runtime import Runtime


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "empty batch"),
        ([0.0] * 4, "wrong observation width: obs holds 4 values, not a multiple of obs_dim 3"),
        ([1.0, 0.0, 0.0, 1.0, 0.0, float("nan")], "non-finite value nan in observation 1, comp"),
        ([1.0, float("-inf"), 0.0], "non-finite value -inf in observation 0, component 1"),
        ([0.0] * 15, "oversize batch: 5 observations, this server takes 4"),
    ],
)
def test_bad_observations_are_named(values: list[float], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validation.observations(np.array(values, dtype=np.float32), max_batch=4)


def test_good_observations_become_rows() -> None:
    flat = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(validation.observations(flat, 4), flat.reshape(4, 3))


def test_huge_finite_observations_are_not_mistaken_for_non_finite_ones() -> None:
    """The finiteness check sums first; a sum that overflows must not refuse finite values."""
    flat = np.full(6, 3e38, dtype=np.float32)
    np.testing.assert_array_equal(validation.observations(flat, 4), flat.reshape(2, 3))
    flat[4] = -np.inf
    with pytest.raises(InvalidRequest, match="non-finite value -inf in observation 1, component 1"):
        validation.observations(flat, 4)


def test_non_finite_actions_name_their_observation() -> None:
    actions = np.array([[0.5], [np.nan], [np.inf]], dtype=np.float32)
    with pytest.raises(InvalidRequest, match="observation 1 lies so far outside"):
        validation.finite_actions(actions)
    np.testing.assert_array_equal(validation.finite_actions(actions[:1]), actions[:1])


def test_mean_mode_is_the_mean() -> None:
    mean = np.array([[0.5], [-1.0]], dtype=np.float32)
    std = np.ones_like(mean)
    rng = np.random.default_rng(0)
    assert sampling.actions(mean, std, "mean", rng) is mean


def test_samples_are_clipped_to_the_action_bounds() -> None:
    mean = np.full((10_000, 1), 1.5, dtype=np.float32)
    actions = sampling.actions(mean, np.full_like(mean, 3.0), "sample", np.random.default_rng(0))
    assert actions.min() == -2.0 and actions.max() == 2.0
    assert 0.3 < np.mean(actions == 2.0) < 0.6  # P(1.5 + 3 eps > 2) = P(eps > 1/6) = 0.43


def test_a_seed_gives_its_own_generator_and_none_the_shared_one() -> None:
    shared = np.random.default_rng()
    assert sampling.generator(None, shared) is shared
    first, second = sampling.generator(7, shared), sampling.generator(7, shared)
    assert first is not shared
    assert first.standard_normal() == second.standard_normal()


def test_a_session_refuses_a_change_of_mode_or_seed_and_a_late_first_step(model_path: Path) -> None:
    runtime = Runtime.load(model_path, "cpu")
    plane = DataPlane(runtime, Batcher(max_batch=8))
    session = plane.open_session("sample", 5)
    session.check_unchanged(None, None)
    session.check_unchanged("sample", 5)
    with pytest.raises(InvalidRequest, match="the session's mode is sample"):
        session.check_unchanged("mean", None)
    with pytest.raises(InvalidRequest, match="the session's seed is 5"):
        session.check_unchanged(None, 6)
    with pytest.raises(InvalidRequest, match="first_step belongs on a stream's first request"):
        session.check_unchanged(None, None, 0)


def test_oversize_requests_are_refused_before_the_batcher(model_path: Path) -> None:
    runtime = Runtime.load(model_path, "cpu")
    plane = DataPlane(runtime, Batcher(max_batch=8))
    with pytest.raises(InvalidRequest, match="oversize batch: 9 observations"):
        asyncio.run(plane.infer(np.zeros(27, dtype=np.float32), "mean", None))
    assert plane.batcher.calls == 0
