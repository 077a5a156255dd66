"""Training environments: gymnasium.vector Pendulum-v1, and their state for exact resumption.

The vector env autoresets in the same step (gymnasium's SAME_STEP mode), so each step's
`infos["final_obs"]` holds the observation an episode ended in, which the truncation bootstrap
needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from swingup import contract


class FixedStart(gym.Wrapper[Any, Any, Any, Any]):
    """The notebook's reset: every episode starts from the state of one fixed seed."""

    def __init__(self, env: gym.Env[Any, Any], start_seed: int) -> None:
        super().__init__(env)
        self.start_seed = start_seed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return self.env.reset(seed=self.start_seed, options=options)


def make_vector_env(num_envs: int, seed: int, fixed_start: bool) -> gym.vector.SyncVectorEnv:
    def factory(index: int) -> Callable[[], gym.Env[Any, Any]]:
        def make() -> gym.Env[Any, Any]:
            env: gym.Env[Any, Any] = gym.make(contract.ENV_ID)
            if fixed_start:
                env = FixedStart(env, seed + index)
            return env

        return make

    return gym.vector.SyncVectorEnv(
        [factory(i) for i in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def _time_limit(env: gym.Env[Any, Any]) -> Any:
    layer: Any = env
    while not isinstance(layer, gym.wrappers.TimeLimit):
        layer = layer.env
    return layer


def get_state(envs: gym.vector.SyncVectorEnv) -> list[dict[str, Any]]:
    """Physics, step counter and RNG of every sub-environment, as plain Python values."""
    states = []
    for env in envs.envs:
        core = env.unwrapped
        states.append(
            {
                "physics": [float(x) for x in core.state],  # type: ignore[attr-defined]
                "elapsed": int(_time_limit(env)._elapsed_steps),
                "rng": core.np_random.bit_generator.state,
            }
        )
    return states


def set_state(envs: gym.vector.SyncVectorEnv, states: list[dict[str, Any]]) -> None:
    """Restore what `get_state` captured; the envs must have been reset once before."""
    if len(states) != len(envs.envs):
        raise ValueError(
            f"checkpoint holds {len(states)} environments, config has {len(envs.envs)}"
        )
    for env, state in zip(envs.envs, states, strict=True):
        core = env.unwrapped
        core.state = np.array(state["physics"], dtype=np.float64)  # type: ignore[attr-defined]
        _time_limit(env)._elapsed_steps = state["elapsed"]
        core.np_random.bit_generator.state = state["rng"]
