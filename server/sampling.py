"""Turn the policy's (mean, std) into actions: the mean, or a clipped Gaussian sample."""

from __future__ import annotations

from typing import Literal

import numpy as np

from swingup import contract

Mode = Literal["mean", "sample"]


def generator(seed: int | None, fallback: np.random.Generator) -> np.random.Generator:
    """A generator of its own for a seeded request; the process's entropy-seeded one otherwise."""
    return fallback if seed is None else np.random.default_rng(seed)


def step_generator(seed: int, step: int) -> np.random.Generator:
    """A seeded session's generator for its step `step`: the noise depends on the seed and the
    step alone, so a session moved to another stream or server goes on with the same sequence
    (~10 us a step, paid by seeded sampling sessions only)."""
    return np.random.default_rng((seed, step))


def actions(mean: np.ndarray, std: np.ndarray, mode: Mode, rng: np.random.Generator) -> np.ndarray:
    """mean, or clip(mean + std * eps, low, high) with eps ~ N(0, 1) drawn from `rng`."""
    if mode == "mean":
        return mean
    eps = rng.standard_normal(mean.shape, dtype=np.float32)
    return np.clip(mean + std * eps, contract.ACTION_LOW, contract.ACTION_HIGH)
