"""The asyncio client: the same calls as `PolicyClient`, awaited, on a `grpc.aio` channel."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import channel, hints, wire
from client.client_base import ClientBase
from client.credentials import Credentials
from client.errors import PolicyError
from client.session import CLIENT_TIMEOUT, Default, StreamSession
from client.wire import Mode
from swingup import contract
from swingup.v1 import admin_pb2, admin_pb2_grpc, policy_pb2_grpc
from swingup.v1 import policy_pb2 as pb

R = TypeVar("R")


class AsyncPolicyClient(ClientBase):
    """`async with AsyncPolicyClient(target) as client: await client.act(obs)`: the calls of
    `PolicyClient`, awaited, with the same deadlines, retries and errors."""

    def __init__(
        self,
        target: str,
        timeout: float | None = 5.0,
        credentials: Credentials | None = None,
        keepalive_s: float | None = channel.KEEPALIVE_S,
    ) -> None:
        options = channel.channel_options(keepalive_s)  # first: a bad value leaves nothing open
        super().__init__(target, timeout, credentials)
        if self.credentials.secure:
            channel_credentials = self.credentials.channel_credentials()
            self._channel = grpc.aio.secure_channel(target, channel_credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    async def act(
        self, obs: np.ndarray, mode: Mode = "mean", seed: int | None = None
    ) -> np.ndarray:
        request = wire.act_request(obs, mode, seed)
        try:
            reply = await self._stub.Act(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except grpc.aio.UsageError:  # gRPC's word for a closed channel
            self._check_open()
            raise
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def stream(
        self,
        mode: Mode = "mean",
        seed: int | None = None,
        timeout: float | None = None,
        reopen: bool = True,
        step_timeout: float | Default | None = CLIENT_TIMEOUT,
        first_step: int = 0,
    ) -> AsyncPolicyStream:
        """Open a control session (StreamAct). `timeout` bounds the whole session (default
        none); `step_timeout` each step, from its request to its reply, on every stream it is
        sent on together (default: the client's `timeout`; None: none); `reopen` moves it to
        a new stream when its server goes away (see StreamSession); `first_step` goes on with
        a session that ended after that many steps (its `steps`), such as one whose step ran
        out of time: its replies are numbered, and a seeded session's noise drawn, from there."""
        step = self._step_timeout(step_timeout)
        return AsyncPolicyStream(self, mode, seed, timeout, reopen, step, first_step)

    async def _unary(self, method: Callable[..., Awaitable[R]], request: object) -> R:
        """One call with this client's deadline and metadata; gRPC errors become PolicyError."""
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except grpc.aio.UsageError:  # gRPC's word for a closed channel
            self._check_open()
            raise

    async def info(self) -> pb.ModelInfo:
        return await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest())

    async def reload_model(self) -> admin_pb2.ReloadModelResponse:
        """AdminService.ReloadModel: swap in the highest valid version now."""
        return await self._unary(self._admin.ReloadModel, admin_pb2.ReloadModelRequest())

    async def list_versions(self) -> admin_pb2.ListVersionsResponse:
        """AdminService.ListVersions: the versions on disk and the state of each."""
        return await self._unary(self._admin.ListVersions, admin_pb2.ListVersionsRequest())

    async def health(self, service: str = "") -> str:
        """The server's health status name ("SERVING", "NOT_SERVING", ...) for `service`."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = await self._unary(self._health.Check, request)
        except PolicyError as exc:
            raise hints.health_error(exc, service) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the channel is connected, or raise PolicyError(UNAVAILABLE)."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise PolicyError(
                grpc.StatusCode.UNAVAILABLE, f"no server at {self.target} after {timeout:g} s"
            ) from None

    async def close(self) -> None:
        self._closed = True
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncPolicyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncPolicyStream(StreamSession):
    """One StreamAct session: `await act(obs)` writes a batch and reads its actions. It moves
    to a new stream when its server goes away (see StreamSession). One task at a time may
    step it; a step cancelled from outside ends the session."""

    def __init__(
        self,
        client: AsyncPolicyClient,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
        reopen: bool = True,
        step_timeout: float | None = None,
        first_step: int = 0,
    ) -> None:
        super().__init__(mode, seed, timeout, reopen, step_timeout, first_step)
        self._client = client
        self._busy = False
        self._expired = False  # the step timer fired: the stream is over
        self._call = self._start()

    def _start(self) -> grpc.aio.StreamStreamCall[pb.StreamActRequest, pb.StreamActResponse]:
        client = self._client
        client._check_open()
        return client._stub.StreamAct(None, timeout=self._timeout(), metadata=client._metadata)

    async def act(self, obs: np.ndarray) -> np.ndarray:
        self._check_open()
        if self._busy:
            raise RuntimeError("an AsyncPolicyStream serves one task at a time: a step is waiting")
        self._busy = True
        try:
            return await self._step(obs)
        except (PolicyError, ValueError):
            raise  # the session's own verdict, or a bad observation (nothing was sent)
        except asyncio.CancelledError:
            if self._open:  # this task was cancelled mid-step: the call goes with it
                self.cancel()
                raise
            # close() or cancel() from another task cancelled the call under this step.
            raise PolicyError(grpc.StatusCode.CANCELLED, "the stream was closed") from None
        except BaseException:
            # Cancelled (or failed) while the reply was awaited: the call is mid-step, and its
            # late reply would answer the next step. End it.
            self.cancel()
            raise
        finally:
            self._busy = False

    async def _deadlined(
        self, work: Coroutine[Any, Any, R], expired: Callable[[], PolicyError]
    ) -> R:
        """`await work`, cancelled past the step deadline (then PolicyError `expired()`).

        The task is cancelled, not only the call: grpc.aio's write and done_writing wait for
        the call to start, and a call cancelled before it started never wakes them.
        """
        if self.step_timeout is None:
            return await work
        task = asyncio.current_task()
        assert task is not None
        timer = asyncio.get_running_loop().call_later(self.step_timeout, self._expire, task)
        try:
            return await work
        except asyncio.CancelledError:
            if not self._expired:
                raise
            if sys.version_info >= (3, 11):
                task.uncancel()  # our cancellation, not the caller's: it ends here
            self._open = False
            raise expired() from None
        finally:
            timer.cancel()

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired = True
        self._call.cancel()
        task.cancel()

    async def _step(self, obs: np.ndarray) -> np.ndarray:
        return await self._deadlined(self._send(obs), self._step_expired)

    async def _send(self, obs: np.ndarray) -> np.ndarray:
        """The step, on as many streams as it takes (under one deadline: `_step`)."""
        while True:
            request = self._request(obs)
            reply = await self._exchange(request)
            if isinstance(reply, pb.StreamActResponse):
                return self._answered(reply, request)
            self._failed(reply)
            self._call = self._start()

    async def _exchange(self, request: pb.StreamActRequest) -> pb.StreamActResponse | PolicyError:
        """The step's reply, or why the stream failed."""
        try:
            await self._call.write(request)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.INTERNAL:
                # A write racing the end of the call: grpc.aio puts its own INTERNAL in place
                # of the server's status. The step did not go out; the stream is gone.
                return PolicyError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the stream ended as a step was sent ({exc.details()})",
                )
            return self._client._error(exc)
        except asyncio.InvalidStateError:  # a write after the server ended the stream
            return await self._ended()
        try:
            reply = await self._call.read()
        except grpc.RpcError as exc:
            return self._client._error(exc)
        return reply if isinstance(reply, pb.StreamActResponse) else await self._ended()

    async def _ended(self) -> PolicyError:
        """Why the server ended the stream without being asked: its status."""
        code = await self._call.code()
        if code == grpc.StatusCode.OK:
            return PolicyError(grpc.StatusCode.UNKNOWN, "the server ended the stream")
        details = await self._call.details() or ""
        return self._client._worded(code, details, None)

    async def close(self) -> None:
        """End the session and wait for the server to finish it (at most the step deadline).
        While another task's step waits: end the session now, as `cancel()`."""
        if not self._open:
            return
        if self._busy:
            self.cancel()
            return
        self._open = False
        try:
            await self._deadlined(self._drain(), self._close_expired)
        except grpc.RpcError as exc:
            raise self._client._error(exc) from None

    async def _drain(self) -> None:
        await self._call.done_writing()
        while isinstance(await self._call.read(), pb.StreamActResponse):
            pass

    def cancel(self) -> None:
        """End the session now, without waiting for the server."""
        self._open = False
        self._call.cancel()

    async def __aenter__(self) -> AsyncPolicyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.close()
        else:  # the caller's exception is what to report: no waiting, no second error
            self.cancel()
