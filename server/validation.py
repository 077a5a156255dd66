"""Checks on what a client sends, before it reaches the model: each failure names the problem."""

from __future__ import annotations

import math

import numpy as np

from server.errors import InvalidRequest
from swingup import contract


def observations(flat: np.ndarray, max_batch: int) -> np.ndarray:
    """Reshape packed float32 observations to [batch, obs_dim], or say why they are unusable."""
    size = flat.size
    if size == 0:
        raise InvalidRequest("empty batch: obs holds no observations")
    if size % contract.OBS_DIM:
        raise InvalidRequest(
            f"wrong observation width: obs holds {size} values, not a multiple of "
            f"obs_dim {contract.OBS_DIM} (cos theta, sin theta, theta-dot)"
        )
    batch = size // contract.OBS_DIM
    if batch > max_batch:
        raise InvalidRequest(f"oversize batch: {batch} observations, this server takes {max_batch}")
    if not _all_finite(flat):
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise InvalidRequest(
            f"non-finite value {flat[bad]} in observation {bad // contract.OBS_DIM}, "
            f"component {bad % contract.OBS_DIM}"
        )
    return flat.reshape(batch, contract.OBS_DIM)


def finite_actions(actions: np.ndarray) -> np.ndarray:
    """The model's answer, unless an observation far outside the space drove it to inf or nan."""
    if not _all_finite(actions):
        bad = int(np.flatnonzero(~np.isfinite(actions))[0]) // contract.ACTION_DIM
        raise InvalidRequest(
            f"observation {bad} lies so far outside the observation space that the model's "
            "action is not finite"
        )
    return actions


def _all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, in one call for the usual request: a nan or an inf makes
    the dot product of the values with themselves non-finite. Finite values past ~1e19 can
    overflow it too, so only then is each value looked at. (np.vdot is one BLAS call and raises
    no floating-point warnings; isfinite + all is two numpy calls, on every request.)"""
    return math.isfinite(np.vdot(values, values)) or bool(np.isfinite(values).all())
