"""What the blocking and the asyncio stream sessions share: a control session's state and its
rules for moving to a new stream when its server goes away. No I/O: `PolicyStream` and
`AsyncPolicyStream` do the calls.
"""

from __future__ import annotations

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


def reopenable(mode: Mode, seed: int | None) -> bool:
    """Whether a session may move to a new stream without its caller seeing a difference: its
    actions must not depend on which stream computed them. Mean actions do not; sampling
    without a seed promises no sequence; a seeded sampling session would start its sequence
    again, so it is not reopened."""
    return mode == "mean" or seed is None


def may_reopen(
    code: grpc.StatusCode, mode: Mode, seed: int | None, reopen: bool, reopens: int
) -> bool:
    """Whether a session whose stream failed with `code` moves to a new one, `reopens` new
    streams into this step: only when the server or the connection went away (UNAVAILABLE)."""
    return (
        reopen
        and code == grpc.StatusCode.UNAVAILABLE
        and reopenable(mode, seed)
        and reopens < MAX_REOPENS
    )


def session_error(error: PolicyError, mode: Mode, seed: int | None, reopen: bool) -> PolicyError:
    """The error a session raises: for a seeded sampling session that lost its stream, with why
    it was not moved to a new one."""
    if error.code != grpc.StatusCode.UNAVAILABLE or not reopen or reopenable(mode, seed):
        return error
    return PolicyError(
        error.code,
        f"{error.details} (a seeded sampling stream is not reopened: a new stream would start "
        "its random sequence again; open a new stream to go on)",
    )


class StreamSession:
    """A StreamAct session's state: mode and seed, steps answered, the streams opened for it.

    When its stream fails with UNAVAILABLE (a replica stopping, in its lame duck; a lost
    connection) the session opens a new stream on the channel, which picks a serving replica,
    and sends the step again, up to MAX_REOPENS times a step; `reopened` counts the new
    streams. Only where that is invisible (`reopenable`): a seeded sampling session raises
    PolicyError instead. `reopen=False` turns it off. `timeout` bounds the whole session,
    however many streams it takes.
    """

    def __init__(self, mode: Mode, seed: int | None, timeout: float | None, reopen: bool) -> None:
        wire.mode_value(mode)  # refuse a bad mode now, not at the first step
        self.mode = mode
        self.seed = seed
        self.steps = 0
        self.reopened = 0
        self.model_version = ""  # of the last reply: one stream keeps its model for its life
        self._reopen = reopen
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._call_steps = 0  # steps answered on the current stream
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise PolicyError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")

    def _timeout(self) -> float | None:
        """What is left of the session's deadline, for a new stream."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _request(self, obs: np.ndarray) -> pb.StreamActRequest:
        """The step's request: the first on a stream names the mode and seed."""
        if self._call_steps == 0:
            return wire.first_stream_request(obs, self.mode, self.seed)
        return wire.next_stream_request(obs)

    def _answered(self, reply: pb.StreamActResponse, request: pb.StreamActRequest) -> np.ndarray:
        self.steps += 1
        self._call_steps += 1
        self.model_version = reply.model_version
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def _failed(self, error: PolicyError, reopens: int) -> None:
        """The stream failed: raise the session's error, or count the new stream the caller
        is to open."""
        if not may_reopen(error.code, self.mode, self.seed, self._reopen, reopens):
            self._open = False
            raise session_error(error, self.mode, self.seed, self._reopen)
        self._call_steps = 0
        self.reopened += 1
