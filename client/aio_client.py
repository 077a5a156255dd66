"""The asyncio client: the same calls as `PolicyClient`, awaited, on a `grpc.aio` channel."""

from __future__ import annotations

import asyncio
from types import TracebackType

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import wire
from client.errors import PolicyError
from client.session import StreamSession
from client.wire import Credentials, Mode
from swingup import contract
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc


class AsyncPolicyClient:
    """`async with AsyncPolicyClient(target) as client: await client.act(obs)`."""

    def __init__(
        self, target: str, timeout: float | None = 5.0, credentials: Credentials | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.credentials = credentials or Credentials()
        options = wire.channel_options()
        if self.credentials.secure:
            channel_credentials = self.credentials.channel_credentials()
            self._channel = grpc.aio.secure_channel(target, channel_credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._metadata = self.credentials.metadata()
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _error(self, exc: grpc.RpcError) -> PolicyError:
        error = PolicyError.from_rpc(exc)
        extra = wire.hint(error.code, error.details, self.credentials)
        return PolicyError(error.code, error.details + extra) if extra else error

    async def act(
        self, obs: np.ndarray, mode: Mode = "mean", seed: int | None = None
    ) -> np.ndarray:
        request = wire.act_request(obs, mode, seed)
        try:
            reply = await self._stub.Act(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return wire.actions_of(reply.actions, len(request.obs) // contract.OBS_DIM)

    def stream(
        self,
        mode: Mode = "mean",
        seed: int | None = None,
        timeout: float | None = None,
        reopen: bool = True,
    ) -> AsyncPolicyStream:
        """Open a control session (StreamAct). `timeout` bounds the whole session (default
        none); `reopen` moves it to a new stream when its server goes away (see PolicyStream)."""
        return AsyncPolicyStream(self, mode, seed, timeout, reopen)

    async def info(self) -> pb.ModelInfo:
        try:
            return await self._stub.GetModelInfo(
                pb.GetModelInfoRequest(), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    async def health(self, service: str = "") -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = await self._health.Check(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def close(self) -> None:
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
    to a new stream when its server goes away (see StreamSession)."""

    def __init__(
        self,
        client: AsyncPolicyClient,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
        reopen: bool = True,
    ) -> None:
        super().__init__(mode, seed, timeout, reopen)
        self._client = client
        self._call = self._start()

    def _start(self) -> grpc.aio.StreamStreamCall[pb.StreamActRequest, pb.StreamActResponse]:
        client = self._client
        return client._stub.StreamAct(None, timeout=self._timeout(), metadata=client._metadata)

    async def act(self, obs: np.ndarray) -> np.ndarray:
        self._check_open()
        reopens = 0
        while True:
            request = self._request(obs)
            reply = await self._exchange(request)
            if isinstance(reply, pb.StreamActResponse):
                return self._answered(reply, request)
            self._failed(reply, reopens)
            reopens += 1
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
        return PolicyError(code, details + wire.hint(code, details, self._client.credentials))

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            await self._call.done_writing()
            while isinstance(await self._call.read(), pb.StreamActResponse):
                pass
        except grpc.RpcError as exc:
            raise self._client._error(exc) from None

    async def __aenter__(self) -> AsyncPolicyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
