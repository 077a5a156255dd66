"""What the blocking and the asyncio stream sessions share: a control session's state and its
rules for moving to a new stream when its server goes away. No I/O: `PolicyStream` and
`AsyncPolicyStream` do the calls.
"""

from __future__ import annotations

import enum
import time

import grpc
import numpy as np

from client import wire
from client.errors import PolicyError
from client.wire import Mode
from swingup import contract
from swingup.v1 import policy_pb2 as pb

# A stream that fails with UNAVAILABLE is reopened and its step sent again up to this many times
# a step; the new call's own attempts are retried by gRPC (wire.RETRY_POLICY).
MAX_REOPENS = 3


class Default(enum.Enum):
    """`stream(step_timeout=CLIENT_TIMEOUT)`: a step's deadline is the client's `timeout`."""

    CLIENT_TIMEOUT = "the client's timeout"


CLIENT_TIMEOUT = Default.CLIENT_TIMEOUT


def may_reopen(code: grpc.StatusCode, reopen: bool, reopens: int) -> bool:
    """Whether a session whose stream failed with `code` moves to a new one, `reopens` new
    streams into this step: only when the server or the connection went away (UNAVAILABLE).
    Nothing a session's caller sees depends on which stream computes a step: mean actions do
    not, and a seeded session's noise depends on its seed and step alone (the new stream's
    first request says where the session is), so any session may move."""
    return reopen and code == grpc.StatusCode.UNAVAILABLE and reopens < MAX_REOPENS


class StreamSession:
    """A StreamAct session's state: mode and seed, steps answered, the streams opened for it.

    When its stream fails with UNAVAILABLE (a replica stopping, in its lame duck; a lost
    connection) the session opens a new stream on the channel, which picks a serving replica,
    and sends the step again, up to MAX_REOPENS times a step; `reopened` counts the new
    streams. The new stream's first request carries the session's step count, so its replies
    (a seeded session's noise too) go on as if nothing happened. `reopen=False` turns it off.
    `timeout` bounds the whole session, however many streams it takes; `step_timeout` bounds
    each step on each stream, from its request to its reply (as a unary call's deadline bounds
    its attempts, so a step that is sent again has it anew), and a step past it fails the
    session with DEADLINE_EXCEEDED: a frozen server did not go away, so it is not reopened.
    """

    def __init__(
        self,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
        reopen: bool,
        step_timeout: float | None = None,
    ) -> None:
        wire.mode_value(mode)  # refuse a bad mode or seed now, not at the first step
        wire.check_seed(seed)
        wire.check_timeout("timeout", timeout)
        wire.check_timeout("step_timeout", step_timeout)
        self.mode = mode
        self.seed = seed
        self.steps = 0
        self.reopened = 0
        self.model_version = ""  # of the last reply: one stream keeps its model for its life
        self._reopen = reopen
        self.step_timeout = step_timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._call_steps = 0  # steps answered on the current stream
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise PolicyError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")

    def _timeout(self) -> float | None:
        """What is left of the session's deadline, for a new stream."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _step_expired(self) -> PolicyError:
        return PolicyError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no reply to step {self.steps + 1} within {self.step_timeout:g} s",
        )

    def _close_expired(self) -> PolicyError:
        return PolicyError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the server did not end the stream within {self.step_timeout:g} s",
        )

    def _request(self, obs: np.ndarray) -> pb.StreamActRequest:
        """The step's request: the first on a stream names the mode and seed."""
        if self._call_steps == 0:
            return wire.first_stream_request(obs, self.mode, self.seed, self.steps)
        return wire.next_stream_request(obs)

    def _answered(self, reply: pb.StreamActResponse, request: pb.StreamActRequest) -> np.ndarray:
        self.steps += 1
        self._call_steps += 1
        self.model_version = reply.model_version
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def _failed(self, error: PolicyError, reopens: int) -> None:
        """The stream failed: raise the session's error, or count the new stream the caller
        is to open."""
        if not may_reopen(error.code, self._reopen, reopens):
            self._open = False
            raise error
        self._call_steps = 0
        self.reopened += 1
