"""The blocking client: `PolicyClient(target).act(obs)`, stream sessions, model info, health."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import wire
from client.errors import PolicyError
from client.session import StreamSession
from client.wire import Credentials, Mode
from swingup.v1 import admin_pb2, admin_pb2_grpc, policy_pb2_grpc
from swingup.v1 import policy_pb2 as pb

R = TypeVar("R")


class PolicyClient:
    """A channel to a policy server. `timeout` is each call's deadline in seconds (None: none).

    UNAVAILABLE is retried with backoff by gRPC itself (see `wire.RETRY_POLICY`); any other
    failure raises `PolicyError` carrying the status code and the server's message.
    `credentials` choose TLS, a client certificate and a bearer token (default: plaintext).
    """

    def __init__(
        self, target: str, timeout: float | None = 5.0, credentials: Credentials | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.credentials = credentials or Credentials()
        options = wire.channel_options()
        if self.credentials.secure:
            channel_credentials = self.credentials.channel_credentials()
            self._channel = grpc.secure_channel(target, channel_credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = self.credentials.metadata()
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def _error(self, exc: grpc.RpcError) -> PolicyError:
        error = PolicyError.from_rpc(exc)
        extra = wire.hint(error.code, error.details, self.credentials)
        return PolicyError(error.code, error.details + extra) if extra else error

    def act(self, obs: np.ndarray, mode: Mode = "mean", seed: int | None = None) -> np.ndarray:
        """Actions float32 [B, 1] for observations [B, 3]; `seed` makes sampling repeatable."""
        request = wire.act_request(obs, mode, seed)
        try:
            reply = self._stub.Act(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return wire.actions_of(reply.actions, len(obs))

    def stream(
        self,
        mode: Mode = "mean",
        seed: int | None = None,
        timeout: float | None = None,
        reopen: bool = True,
    ) -> PolicyStream:
        """Open a control session (StreamAct). `timeout` bounds the whole session (default
        none); `reopen` moves it to a new stream when its server goes away (see PolicyStream)."""
        return PolicyStream(self, mode, seed, timeout, reopen)

    def _unary(self, method: Callable[..., R], request: object) -> R:
        """One call with this client's deadline and metadata; gRPC errors become PolicyError.
        (Act inlines the same steps: it is the hot path.)"""
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def info(self) -> pb.ModelInfo:
        return self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest())

    def reload_model(self) -> admin_pb2.ReloadModelResponse:
        """AdminService.ReloadModel: swap in the highest valid version now."""
        return self._unary(self._admin.ReloadModel, admin_pb2.ReloadModelRequest())

    def list_versions(self) -> admin_pb2.ListVersionsResponse:
        """AdminService.ListVersions: the versions on disk and the state of each."""
        return self._unary(self._admin.ListVersions, admin_pb2.ListVersionsRequest())

    def health(self, service: str = "") -> str:
        """The server's health status name ("SERVING", "NOT_SERVING", ...) for `service`."""
        request = health_pb2.HealthCheckRequest(service=service)
        reply = self._unary(self._health.Check, request)
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


class PolicyStream(StreamSession):
    """One StreamAct session: `act(obs)` sends a batch and waits for its actions. It moves to a
    new stream when its server goes away (see StreamSession)."""

    def __init__(
        self,
        client: PolicyClient,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
        reopen: bool = True,
    ) -> None:
        super().__init__(mode, seed, timeout, reopen)
        self._client = client
        self._requests, self._replies = self._start()

    def _start(
        self,
    ) -> tuple[queue.SimpleQueue[pb.StreamActRequest | None], Iterator[pb.StreamActResponse]]:
        requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
        replies = self._client._stub.StreamAct(
            iter(requests.get, None), timeout=self._timeout(), metadata=self._client._metadata
        )
        return requests, iter(replies)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self._check_open()
        reopens = 0
        while True:
            request = self._request(obs)
            self._requests.put(request)
            try:
                return self._answered(next(self._replies), request)
            except grpc.RpcError as exc:
                error = self._client._error(exc)
            except StopIteration:
                error = PolicyError(grpc.StatusCode.UNKNOWN, "the server ended the stream")
            self._requests.put(None)  # ends the failed stream's request thread
            self._failed(error, reopens)
            reopens += 1
            self._requests, self._replies = self._start()

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
            raise self._client._error(exc) from None

    def __enter__(self) -> PolicyStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
