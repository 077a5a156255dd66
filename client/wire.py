"""The messages a client sends and reads: observations packed into requests, actions read back
from replies, modes and seeds checked on the way."""

from __future__ import annotations

import operator
from typing import Any, Literal

import numpy as np

from swingup import contract
from swingup.v1 import policy_pb2 as pb

Mode = Literal["mean", "sample"]

_ITERATE_BELOW = 96  # values: past this, np.array reads a repeated field faster than iterating
_MODES: dict[str, pb.Mode.ValueType] = {"mean": pb.MODE_MEAN, "sample": pb.MODE_SAMPLE}


def mode_value(mode: Mode) -> pb.Mode.ValueType:
    try:
        return _MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be 'mean' or 'sample', not {mode!r}") from None


def packed_obs(obs: np.ndarray) -> list[float]:
    """Observations [batch, obs_dim] as the flat list a repeated float field takes."""
    array = np.asarray(obs, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != contract.OBS_DIM:
        raise ValueError(f"obs must be [batch, {contract.OBS_DIM}], got shape {array.shape}")
    values: list[float] = array.ravel().tolist()
    return values


def actions_of(values: Any, batch: int) -> np.ndarray:
    """A reply's packed actions as float32 [batch, action_dim]."""
    count = batch * contract.ACTION_DIM
    if count <= _ITERATE_BELOW and len(values) == count:
        # np.array on a protobuf repeated field costs ~40 us of CPU right after a gRPC call
        # (measured; ~2 us on its own); iterating a small one costs a few.
        return np.fromiter(values, np.float32, count).reshape(batch, contract.ACTION_DIM)
    return np.array(values, dtype=np.float32).reshape(batch, contract.ACTION_DIM)


# The proto's seeds are uint64: the one bound of a seed, for the library and `--seed` alike.
MAX_SEED = 2**64 - 1


def seed_problem(seed: int) -> str | None:
    """Why `seed` is no seed (nothing when it is one): protobuf's own error for one outside
    uint64 says only 'Value out of range'."""
    if not 0 <= seed <= MAX_SEED:
        return "must be between 0 and 2**64 - 1"
    return None


def checked_first_step(first_step: int) -> int:
    """`first_step` as an int; ValueError naming it unless it is a whole number a session may
    start at (the server's bound). A float would pass a range check here and fail inside
    protobuf at the session's first step."""
    try:
        step = operator.index(first_step)
    except TypeError:
        step = -1
    if not 0 <= step < contract.MAX_FIRST_STEP:
        raise ValueError(f"first_step {first_step!r}: must be between 0 and 2**63 - 1")
    return step


def check_seed(seed: int | None) -> None:
    """ValueError naming the seed unless it is None or one (`seed_problem`)."""
    problem = None if seed is None else seed_problem(seed)
    if problem:
        raise ValueError(f"seed {seed}: {problem}")


def act_request(obs: np.ndarray, mode: Mode, seed: int | None) -> pb.ActRequest:
    check_seed(seed)
    return pb.ActRequest(obs=packed_obs(obs), mode=mode_value(mode), seed=seed)


def first_stream_request(
    obs: np.ndarray, mode: Mode, seed: int | None, first_step: int = 0
) -> pb.StreamActRequest:
    """A stream's first request: the session's mode and seed, and (for a session moved from
    another stream) the steps it took there."""
    return pb.StreamActRequest(
        obs=packed_obs(obs), mode=mode_value(mode), seed=seed, first_step=first_step or None
    )


def next_stream_request(obs: np.ndarray) -> pb.StreamActRequest:
    return pb.StreamActRequest(obs=packed_obs(obs))
