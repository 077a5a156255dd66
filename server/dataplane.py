"""The data plane: validated observations in, actions out, through the batcher and the sampler.

It knows the model, the batcher and the rules of a request, and nothing of protobuf or gRPC:
the servicer converts messages to the arguments here and the results back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server import sampling, validation
from server.batching import Batcher
from server.errors import InvalidRequest, Overloaded
from server.runtime import Runtime
from server.sampling import Mode
from swingup import contract


class DataPlane:
    """The current model (swapped by a reload), the batcher, and the rules of a request.

    A request runs on the model that is current when it enters and reports that model's
    version, however soon a reload swaps in another; a session keeps the model it opened with.
    """

    def __init__(self, runtime: Runtime, batcher: Batcher) -> None:
        self.runtime = runtime
        self.batcher = batcher
        # Unseeded requests draw from one generator seeded once from OS entropy.
        self._entropy = np.random.default_rng()
        self.accepted = 0  # requests (calls and stream steps) that reached the batcher
        self.answered = 0  # ...and got their actions

    @property
    def version(self) -> str:
        """The version new requests run on."""
        return self.runtime.version

    def use(self, runtime: Runtime) -> None:
        """Swap in `runtime` for new requests and sessions; those in flight keep theirs."""
        self.runtime = runtime

    async def infer(
        self, flat_obs: np.ndarray, mode: Mode, seed: int | None, deadline: float | None = None
    ) -> Inference:
        """The model's mean and std [batch, action_dim] for packed observations, the actions
        drawn from them, and the version of the model that computed them. A seed makes sampling
        repeatable; `deadline` is in the event loop's time."""
        runtime = self.runtime
        rng = sampling.generator(seed, self._entropy)
        mean, std, actions = await self._outputs(runtime, flat_obs, mode, rng, deadline)
        return Inference(mean, std, actions, runtime.version)

    def open_session(self, mode: Mode, seed: int | None, first_step: int = 0) -> Session:
        """A session on the current model, for its whole life; `first_step` steps were taken
        before, on another stream."""
        if first_step >= contract.MAX_FIRST_STEP:
            raise InvalidRequest(f"first_step {first_step}: must be below 2^63")
        return Session(self, self.runtime, mode, seed, self._entropy, first_step)

    async def _outputs(
        self,
        runtime: Runtime,
        flat_obs: np.ndarray,
        mode: Mode,
        rng: np.random.Generator,
        deadline: float | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """mean, std and actions of one request on `runtime`."""
        obs = validation.observations(flat_obs, self.batcher.max_batch)
        self.accepted += 1
        try:
            mean, std = await self.batcher.run(runtime, obs, deadline)
        except Overloaded:
            self.accepted -= 1  # refused at the door: never accepted
            raise
        actions = validation.finite_actions(sampling.actions(mean, std, mode, rng))
        self.answered += 1
        return mean, std, actions


@dataclass(frozen=True)
class Inference:
    """One request's model outputs and the actions drawn from them, each [batch, action_dim],
    and the version of the model that computed them."""

    mean: np.ndarray
    std: np.ndarray
    actions: np.ndarray
    version: str


@dataclass
class Session:
    """A control session: its model, mode and seed fixed at the start. Its step k draws from
    a generator seeded with (seed, k), or from the process's entropy without a seed."""

    plane: DataPlane
    runtime: Runtime
    mode: Mode
    seed: int | None
    entropy: np.random.Generator
    first_step: int = 0  # steps taken on another stream before this one
    steps: int = 0  # steps answered on this stream

    @property
    def version(self) -> str:
        return self.runtime.version

    @property
    def step_index(self) -> int:
        """The session's number for its next step."""
        return self.first_step + self.steps

    async def step(self, flat_obs: np.ndarray, deadline: float | None = None) -> np.ndarray:
        rng = self.entropy
        if self.seed is not None and self.mode == "sample":
            rng = sampling.step_generator(self.seed, self.step_index)
        outputs = await self.plane._outputs(self.runtime, flat_obs, self.mode, rng, deadline)
        self.steps += 1
        return outputs[2]

    def check_unchanged(
        self, mode: Mode | None, seed: int | None, first_step: int | None = None
    ) -> None:
        """A later request may repeat the session's mode and seed but not change them, and
        may not say where the session started."""
        step = self.step_index
        if first_step is not None:
            raise InvalidRequest(
                f"first_step belongs on a stream's first request, not at step {step}"
            )
        if mode is not None and mode != self.mode:
            raise InvalidRequest(
                f"the session's mode is {self.mode}; a stream cannot change it at step {step}"
            )
        if seed is not None and seed != self.seed:
            raise InvalidRequest(
                f"the session's seed is {self.seed}; a stream cannot change it at step {step}"
            )
