"""What the blocking and the asyncio stream sessions share: a control session's state and its
rules for moving to a new stream when its server goes away. No I/O: `PolicyStream` and
`AsyncPolicyStream` do the calls.
"""

from __future__ import annotations

import enum
import time

import grpc
import numpy as np

from client import channel, wire
from client.errors import PolicyError
from client.wire import Mode
from swingup import contract
from swingup.v1 import policy_pb2 as pb

# A stream that fails with UNAVAILABLE is reopened and its step sent again up to this many times
# a step; the new call's own attempts are retried by gRPC (channel.RETRY_POLICY).
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
    """A StreamAct session's state: mode and seed, its steps (from `first_step`), the streams
    opened for it.

    When its stream fails with UNAVAILABLE (a replica stopping, in its lame duck; a lost
    connection) the session opens a new stream on the channel, which picks a serving replica,
    and sends the step again, up to MAX_REOPENS times a step; `reopened` counts the new
    streams. The new stream's first request carries the session's step count, so its replies
    (a seeded session's noise too) go on as if nothing happened. `reopen=False` turns it off.
    `timeout` bounds the whole session, however many streams it takes; `step_timeout` bounds
    each step from its first request to its reply, however many streams it is sent on (as a
    unary call's deadline bounds all its attempts), so a caller hears of a late step within
    `step_timeout` (a deadline per stream would let one take 1 + MAX_REOPENS times it). A step
    past it ends the session: with DEADLINE_EXCEEDED when its server froze (that server did
    not go away, so the step is not sent again), with the UNAVAILABLE that moved it when it
    was sent again and no stream answered in time since (`_step_expired`).
    """

    def __init__(
        self,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
        reopen: bool,
        step_timeout: float | None = None,
        first_step: int = 0,
    ) -> None:
        wire.mode_value(mode)  # refuse a bad mode, seed or step now, not at the first step
        wire.check_seed(seed)
        channel.check_timeout("timeout", timeout)
        channel.check_timeout("step_timeout", step_timeout)
        self.mode = mode
        self.seed = seed
        # The session's steps, on every stream: its next step is numbered this.
        self.steps = wire.checked_first_step(first_step)
        self.reopened = 0
        self.model_version = ""  # of the last reply: one stream keeps its model for its life
        self._reopen = reopen
        self.step_timeout = step_timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._call_steps = 0  # steps answered on the current stream
        self._moved_by: list[PolicyError] = []  # why the step under way left each stream
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise PolicyError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")

    def _timeout(self) -> float | None:
        """What is left of the session's deadline, for a new stream."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _step_expired(self) -> PolicyError:
        """The session's end, a step's deadline passed: DEADLINE_EXCEEDED when its server froze
        under it. A step that was sent again, and got no reply in time since, fails with the
        error that moved it, as it would had its reopens run out first: an absent server, a
        TLS mismatch or a restarting fleet is UNAVAILABLE with its hint, whichever came first."""
        self._open = False
        late = f"no reply to step {self.steps + 1} within {self.step_timeout:g} s"
        if not self._moved_by:
            return PolicyError(grpc.StatusCode.DEADLINE_EXCEEDED, late)
        cause, streams = self._moved_by[-1], len(self._moved_by) + 1
        return PolicyError(cause.code, f"{cause.details}; {late}, on {streams} streams")

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
        self._moved_by.clear()
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def _failed(self, error: PolicyError) -> None:
        """The stream failed: raise the session's error, or count the new stream the caller
        is to open."""
        if not (self._open and may_reopen(error.code, self._reopen, len(self._moved_by))):
            self._open = False
            raise error
        self._call_steps = 0
        self.reopened += 1
        self._moved_by.append(error)
