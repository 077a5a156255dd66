"""`swingup.v1.PolicyService`: protobuf in, numpy to the data plane, protobuf out. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

import swingup
from server import errors
from server.dataplane import DataPlane
from server.errors import DeadlineExpired, InvalidRequest
from server.sampling import Mode
from swingup import contract
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name

_MODES: dict[int, Mode] = {
    pb.MODE_UNSPECIFIED: "mean",
    pb.MODE_MEAN: "mean",
    pb.MODE_SAMPLE: "sample",
}

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
T = TypeVar("T")


@dataclass(frozen=True)
class Malformed:
    """A request whose bytes did not parse as the message its method takes."""

    message: str
    reason: str


def _parser(message: type[M]) -> Callable[[bytes], M | Malformed]:
    """Parse requests without raising: gRPC would answer a raising parser with UNKNOWN."""

    def parse(data: bytes) -> M | Malformed:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(message.DESCRIPTOR.full_name, str(exc).split(": ")[-1])

    return parse


def _parsed(request: M | Malformed) -> M:
    if isinstance(request, Malformed):
        raise InvalidRequest(f"malformed request: not a {request.message} ({request.reason})")
    return request


def _mode(value: int) -> Mode:
    try:
        return _MODES[value]
    except KeyError:
        raise InvalidRequest(f"unknown mode {value}: use MODE_MEAN or MODE_SAMPLE") from None


def _obs(values: Any) -> np.ndarray:
    # np.array reads a protobuf repeated float in one step (~2 us for any size under upb).
    return np.array(values, dtype=np.float32)


def deadline_of(context: Context) -> float | None:
    """The call's deadline in the event loop's time, if the client set one."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, plane: DataPlane, workers: int = 1, idle_timeout_s: float = 30.0) -> None:
        self.plane = plane
        self.workers = workers
        self.idle_timeout_s = idle_timeout_s

    @errors.unary
    async def Act(self, request: pb.ActRequest | Malformed, context: Context) -> pb.ActResponse:
        request = _parsed(request)
        seed = request.seed if request.HasField("seed") else None
        result = await self.plane.infer(
            _obs(request.obs), _mode(request.mode), seed, deadline_of(context)
        )
        return pb.ActResponse(
            actions=result.actions.ravel().tolist(),
            batch_size=len(result.actions),
            model_version=result.version,
        )

    @errors.unary  # a streaming call that writes with context.write(): see _within_idle
    async def StreamAct(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.StreamActRequest | Malformed], context: Context
    ) -> None:
        # The session keeps the model it opened with for its whole life: every reply of one
        # stream names one version. A controller picks up a new version with a new stream.
        session = None
        requests = aiter(request_iterator)
        while True:
            try:
                item = await self._within_idle(anext(requests), "waiting for the next request")
            except StopAsyncIteration:
                return
            request = _parsed(item)
            seed = request.seed if request.HasField("seed") else None
            if session is None:
                session = self.plane.open_session(_mode(request.mode), seed)
            else:
                mode = None if request.mode == pb.MODE_UNSPECIFIED else _mode(request.mode)
                session.check_unchanged(mode, seed)
            step = session.steps
            actions = await session.step(_obs(request.obs), deadline_of(context))
            reply = pb.StreamActResponse(
                actions=actions.ravel().tolist(),
                batch_size=len(actions),
                model_version=session.version,
                step=step,
            )
            await self._within_idle(context.write(reply), "waiting for the client to read")

    async def _within_idle(self, step: Awaitable[T], doing: str) -> T:
        """`step`, unless the client leaves the stream idle longer than the limit: a silent
        client, or one that stops reading its replies, cannot hold a stream forever."""
        try:
            return await asyncio.wait_for(step, self.idle_timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExpired(
                f"stream idle for {self.idle_timeout_s:g} s {doing}: closed by the server"
            ) from None

    @errors.unary
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest | Malformed, context: Context
    ) -> pb.ModelInfo:
        _parsed(request)
        return _model_info(self.plane, self.workers)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """The generated add_PolicyServiceServicer_to_server, with parsers that do not raise."""
        handlers = {
            "Act": grpc.unary_unary_rpc_method_handler(
                self.Act,
                request_deserializer=_parser(pb.ActRequest),
                response_serializer=pb.ActResponse.SerializeToString,
            ),
            "StreamAct": grpc.stream_stream_rpc_method_handler(
                self.StreamAct,
                request_deserializer=_parser(pb.StreamActRequest),
                response_serializer=pb.StreamActResponse.SerializeToString,
            ),
            "GetModelInfo": grpc.unary_unary_rpc_method_handler(
                self.GetModelInfo,
                request_deserializer=_parser(pb.GetModelInfoRequest),
                response_serializer=pb.ModelInfo.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        # Registered methods skip gRPC's per-call lookup by name (grpc-stubs predates them).
        server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]


def _model_info(plane: DataPlane, workers: int) -> pb.ModelInfo:
    runtime = plane.runtime
    return pb.ModelInfo(
        obs_shape=[contract.OBS_DIM],
        action_shape=[contract.ACTION_DIM],
        obs_low=contract.OBS_LOW,
        obs_high=contract.OBS_HIGH,
        action_low=contract.ACTION_LOW,
        action_high=contract.ACTION_HIGH,
        model_version=runtime.version,
        metadata=runtime.metadata,
        execution_provider=runtime.provider,
        providers=runtime.providers,
        batching=pb.BatchingSettings(
            max_batch=plane.batcher.max_batch,
            window_us=round(plane.batcher.window_s * 1e6),
            workers=workers,
        ),
        server_version=swingup.__version__,
    )
