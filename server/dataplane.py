"""The data plane: validated observations in, actions out, through the batcher and the sampler.

It knows the model, the batcher and the rules of a request, and nothing of protobuf or gRPC:
the servicer converts messages to the arguments here and the results back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server import sampling, validation
from server.batching import Batcher
from server.errors import InvalidRequest
from server.runtime import Runtime
from server.sampling import Mode


class DataPlane:
    def __init__(self, runtime: Runtime, batcher: Batcher) -> None:
        self.runtime = runtime
        self.batcher = batcher
        # Unseeded requests draw from one generator seeded once from OS entropy.
        self._entropy = np.random.default_rng()

    async def act(self, flat_obs: np.ndarray, mode: Mode, seed: int | None) -> np.ndarray:
        """Actions [batch, action_dim] for packed observations; a seed makes sampling repeatable."""
        return await self.act_with(flat_obs, mode, sampling.generator(seed, self._entropy))

    def open_session(self, mode: Mode, seed: int | None) -> Session:
        return Session(self, mode, seed, sampling.generator(seed, self._entropy))

    async def act_with(
        self, flat_obs: np.ndarray, mode: Mode, rng: np.random.Generator
    ) -> np.ndarray:
        obs = validation.observations(flat_obs, self.batcher.max_batch)
        mean, std = await self.batcher.run(obs)
        return validation.finite_actions(sampling.actions(mean, std, mode, rng))


@dataclass
class Session:
    """A control session: mode and seed fixed at the start, one generator for all its steps."""

    plane: DataPlane
    mode: Mode
    seed: int | None
    rng: np.random.Generator
    steps: int = 0

    async def step(self, flat_obs: np.ndarray) -> np.ndarray:
        actions = await self.plane.act_with(flat_obs, self.mode, self.rng)
        self.steps += 1
        return actions

    def check_unchanged(self, mode: Mode | None, seed: int | None) -> None:
        """A later request may repeat the session's mode and seed but not change them."""
        if mode is not None and mode != self.mode:
            raise InvalidRequest(
                f"the session's mode is {self.mode}; a stream cannot change it at step {self.steps}"
            )
        if seed is not None and seed != self.seed:
            raise InvalidRequest(
                f"the session's seed is {self.seed}; a stream cannot change it at step {self.steps}"
            )
