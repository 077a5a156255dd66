"""The blocking client: `PolicyClient(target).act(obs)`, stream sessions, model info, health."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from types import TracebackType

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import wire
from client.errors import PolicyError
from client.wire import Mode
from swingup import contract
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc


class PolicyClient:
    """A channel to a policy server. `timeout` is each call's deadline in seconds (None: none).

    UNAVAILABLE is retried with backoff by gRPC itself (see `wire.RETRY_POLICY`); any other
    failure raises `PolicyError` carrying the status code and the server's message.
    """

    def __init__(self, target: str, timeout: float | None = 5.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=wire.channel_options())
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def act(self, obs: np.ndarray, mode: Mode = "mean", seed: int | None = None) -> np.ndarray:
        """Actions float32 [B, 1] for observations [B, 3]; `seed` makes sampling repeatable."""
        request = wire.act_request(obs, mode, seed)
        try:
            reply = self._stub.Act(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise PolicyError.from_rpc(exc) from None
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def stream(
        self, mode: Mode = "mean", seed: int | None = None, timeout: float | None = None
    ) -> PolicyStream:
        """Open a control session (StreamAct). `timeout` bounds the whole session (default none)."""
        return PolicyStream(self._stub, mode, seed, timeout)

    def info(self) -> pb.ModelInfo:
        try:
            return self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise PolicyError.from_rpc(exc) from None

    def health(self, service: str = "") -> str:
        """The server's health status name ("SERVING", "NOT_SERVING", ...) for `service`."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = self._health.Check(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise PolicyError.from_rpc(exc) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_ready(self, timeout: float) -> None:
        """Block until the channel is connected, or raise PolicyError(UNAVAILABLE)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise PolicyError(
                grpc.StatusCode.UNAVAILABLE, f"no server at {self.target} after {timeout:g} s"
            ) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PolicyStream:
    """One StreamAct session: `act(obs)` sends a batch and waits for its actions."""

    def __init__(
        self,
        stub: policy_pb2_grpc.PolicyServiceStub,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
    ) -> None:
        wire.mode_value(mode)  # refuse a bad mode now, not at the first step
        self.mode = mode
        self.seed = seed
        self.steps = 0
        self._requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
        self._replies: Iterator[pb.StreamActResponse] = iter(
            stub.StreamAct(iter(self._requests.get, None), timeout=timeout)
        )
        self._open = True

    def act(self, obs: np.ndarray) -> np.ndarray:
        if not self._open:
            raise PolicyError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")
        if self.steps == 0:
            request = wire.first_stream_request(obs, self.mode, self.seed)
        else:
            request = wire.next_stream_request(obs)
        self._requests.put(request)
        try:
            reply = next(self._replies)
        except grpc.RpcError as exc:
            self._open = False
            raise PolicyError.from_rpc(exc) from None
        except StopIteration:
            self._open = False
            raise PolicyError(grpc.StatusCode.UNKNOWN, "the server ended the stream") from None
        self.steps += 1
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def close(self) -> None:
        """End the session and wait for the server to finish it."""
        if not self._open:
            return
        self._open = False
        self._requests.put(None)
        try:
            for _ in self._replies:
                pass
        except grpc.RpcError as exc:
            raise PolicyError.from_rpc(exc) from None

    def __enter__(self) -> PolicyStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
