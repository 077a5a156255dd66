"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe v2) as Triton speaks it.

It serves beside `swingup.v1.PolicyService` on the same port so that tritonclient, perf_analyzer
and other KServe v2 clients can call the policy. Like the PolicyService servicer it converts
protobuf <-> numpy and nothing else: the data plane validates, batches and samples. The messages
are tritonclient's generated code for Triton's grpc_service.proto, not a copy of our own.

The model has one name (`--model-name`), its version is the served model's, its input is `obs`
FP32 [-1, 3] and its outputs are `action_mean`, `action_std` and `action`, each FP32 [-1, 1]:
`action` is the mean, or a sample when the request's parameters say `mode` "sample" (with an
optional `seed`). Outputs travel in `raw_output_contents`, as Triton answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

import swingup
from server import errors
from server.dataplane import DataPlane
from server.drain import InFlight
from server.errors import InvalidRequest, ServingError, UnknownModel
from server.sampling import Mode
from server.streams import Leaving, StreamGuard
from server.wire import (
    Context,
    Malformed,
    bidi,
    deadline_of,
    parsed,
    register,
    unary,
)
from swingup import contract

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "swingup"
PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by onnxruntime
FP32 = "FP32"
ACTION_NAME = "action"
OUTPUTS = (contract.MEAN_NAME, contract.STD_NAME, ACTION_NAME)
MODE_PARAMETER = "mode"
SEED_PARAMETER = "seed"
_MODES: tuple[Mode, ...] = ("mean", "sample")
_WIRE_FP32 = np.dtype("<f4")  # the protocol's raw tensors are little-endian, row-major

Message = Any  # tritonclient ships no type stubs for its generated messages


class OipServicer:
    """The seven calls of the protocol's core and streaming extension; the rest are UNIMPLEMENTED
    (the model repository, shared memory and statistics belong to Triton, not to this server)."""

    def __init__(
        self,
        plane: DataPlane,
        model_name: str,
        idle_timeout_s: float = 30.0,
        leaving: Leaving | None = None,
    ) -> None:
        self.plane = plane
        self.model_name = model_name
        self.idle_timeout_s = idle_timeout_s
        self.leaving = leaving or Leaving()

    @errors.unary
    async def ServerLive(self, request: Message | Malformed, context: Context) -> Message:
        parsed(request)
        return pb.ServerLiveResponse(live=True)

    @errors.unary
    async def ServerReady(self, request: Message | Malformed, context: Context) -> Message:
        parsed(request)  # the model is loaded before the port opens
        return pb.ServerReadyResponse(ready=True)

    @errors.unary
    async def ServerMetadata(self, request: Message | Malformed, context: Context) -> Message:
        parsed(request)
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=swingup.__version__, extensions=[]
        )

    @errors.unary
    async def ModelReady(self, request: Message | Malformed, context: Context) -> Message:
        request = parsed(request)
        # As Triton answers: a model this server does not serve is not ready, not an error.
        try:
            self._version(request.name, request.version)
        except UnknownModel:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @errors.unary
    async def ModelMetadata(self, request: Message | Malformed, context: Context) -> Message:
        request = parsed(request)
        version = self._version(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self.model_name,
            versions=[version],
            platform=PLATFORM,
            inputs=[tensor(name=contract.INPUT_NAME, datatype=FP32, shape=[-1, contract.OBS_DIM])],
            outputs=[
                tensor(name=name, datatype=FP32, shape=[-1, contract.ACTION_DIM])
                for name in OUTPUTS
            ],
        )

    @errors.unary
    async def ModelInfer(self, request: Message | Malformed, context: Context) -> Message:
        return await self._infer(parsed(request), deadline_of(context))

    @errors.unary  # a streaming call that writes with context.write(), as StreamAct is
    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Message | Malformed], context: Context
    ) -> None:
        # Triton's streaming extension: requests are independent and answered in order; one
        # the server refuses is answered in-band with `error_message` and the stream goes on.
        # A client idle past --idle-timeout-s loses the stream, and so does every client once
        # the lame duck begins, as on the PolicyService (server.streams).
        deadline = deadline_of(context)  # of the whole call: the same for every request
        guard = StreamGuard(self.idle_timeout_s, self.leaving)
        try:
            async for item in guard.requests(request_iterator):
                try:
                    response = await self._infer(parsed(item), deadline)
                except ServingError as exc:
                    reply = _stream_error(item, exc)
                else:
                    reply = pb.ModelStreamInferResponse(infer_response=response)
                await guard.write(context, reply)
        finally:
            guard.close()

    async def _infer(self, request: Message, deadline: float | None) -> Message:
        # No await between this check and the data plane's choice of model: a reload cannot
        # slip in, so a request for the current version runs on it.
        self._version(request.model_name, request.model_version)
        obs = _observations(request)
        names = _requested_outputs(request)
        mode, seed = _mode(request.parameters), _seed(request.parameters)
        result = await self.plane.infer(obs, mode, seed, deadline)
        tensors = {
            contract.MEAN_NAME: result.mean,
            contract.STD_NAME: result.std,
            ACTION_NAME: result.actions,
        }
        response = pb.ModelInferResponse(
            model_name=self.model_name, model_version=result.version, id=request.id
        )
        for name in names:
            array = tensors[name]
            response.outputs.add(name=name, datatype=FP32, shape=array.shape)
            response.raw_output_contents.append(array.astype(_WIRE_FP32, copy=False).tobytes())
        return response

    def _version(self, name: str, version: str) -> str:
        """The served version, if `name` and `version` (empty: any) ask for it."""
        current = self.plane.version
        if name != self.model_name:
            raise UnknownModel(f"unknown model {name!r}: this server serves {self.model_name!r}")
        if version not in ("", current):
            raise UnknownModel(
                f"model {name!r} has no version {version!r}: this server serves version {current!r}"
            )
        return current

    def add_to_server(self, server: grpc.aio.Server, in_flight: InFlight) -> None:
        """tritonclient's add_GRPCInferenceServiceServicer_to_server for the calls served here,
        with the PolicyService's parsers, which answer a malformed request INVALID_ARGUMENT."""
        handlers = {
            "ServerLive": unary(self.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": unary(
                self.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
            ),
            "ModelReady": unary(self.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ModelMetadata": unary(
                self.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
            ),
            "ModelInfer": unary(self.ModelInfer, pb.ModelInferRequest, pb.ModelInferResponse),
            "ModelStreamInfer": bidi(
                self.ModelStreamInfer, pb.ModelInferRequest, pb.ModelStreamInferResponse
            ),
        }
        register(server, SERVICE_NAME, handlers, in_flight)


def _observations(request: Message) -> np.ndarray:
    """The packed float32 observations of the request's one input, `obs` FP32 [batch, 3]."""
    names = [tensor.name for tensor in request.inputs]
    if names != [contract.INPUT_NAME]:
        raise InvalidRequest(
            f"the model takes one input, {contract.INPUT_NAME!r}; the request has {names}"
        )
    tensor = request.inputs[0]
    if tensor.datatype != FP32:
        raise InvalidRequest(
            f"input {contract.INPUT_NAME} must be {FP32}, not {tensor.datatype or 'no datatype'}"
        )
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[0] < 0 or shape[1] != contract.OBS_DIM:
        raise InvalidRequest(
            f"input {contract.INPUT_NAME} must have shape [batch, {contract.OBS_DIM}], not {shape}"
        )
    count = shape[0] * contract.OBS_DIM
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
            raise InvalidRequest(
                "give the input either in raw_input_contents (one entry) or in contents, not both"
            )
        raw = request.raw_input_contents[0]
        if len(raw) != count * _WIRE_FP32.itemsize:
            raise InvalidRequest(
                f"input {contract.INPUT_NAME} of shape {shape} takes "
                f"{count * _WIRE_FP32.itemsize} bytes of raw_input_contents, not {len(raw)}"
            )
        return np.frombuffer(raw, dtype=_WIRE_FP32).astype(np.float32, copy=False)
    filled = [field.name for field, _ in tensor.contents.ListFields()]
    if set(filled) - {"fp32_contents"}:
        raise InvalidRequest(
            f"input {contract.INPUT_NAME} is {FP32}: its values belong in contents.fp32_contents, "
            f"not {', '.join(filled)}"
        )
    values = tensor.contents.fp32_contents
    if len(values) != count:
        raise InvalidRequest(
            f"input {contract.INPUT_NAME} of shape {shape} takes {count} values; "
            f"contents.fp32_contents holds {len(values)}"
        )
    # np.array reads a protobuf repeated float in one step, as the PolicyService servicer does.
    return np.array(values, dtype=np.float32)


def _requested_outputs(request: Message) -> list[str]:
    """The outputs to return, in the order asked; all of them if none is named."""
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise InvalidRequest(
                f"unknown output {output.name!r}: the model's outputs are {', '.join(OUTPUTS)}"
            )
        if "classification" in output.parameters:
            raise InvalidRequest("this model has no classification output")
    return [output.name for output in request.outputs] or list(OUTPUTS)


def _describe(parameter: Message) -> str:
    kind = parameter.WhichOneof("parameter_choice")
    return "no value" if kind is None else f"{kind} {getattr(parameter, kind)!r}"


def _mode(parameters: Mapping[str, Message]) -> Mode:
    if MODE_PARAMETER not in parameters:
        return "mean"
    parameter = parameters[MODE_PARAMETER]
    value = parameter.string_param
    if parameter.WhichOneof("parameter_choice") != "string_param" or value not in _MODES:
        raise InvalidRequest(
            f'parameter {MODE_PARAMETER} must be the string "mean" or "sample", '
            f"not {_describe(parameter)}"
        )
    return cast(Mode, value)


def _seed(parameters: Mapping[str, Message]) -> int | None:
    if SEED_PARAMETER not in parameters:
        return None
    parameter = parameters[SEED_PARAMETER]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param") or getattr(parameter, kind) < 0:
        raise InvalidRequest(
            f"parameter {SEED_PARAMETER} must be a non-negative integer (int64_param or "
            f"uint64_param), not {_describe(parameter)}"
        )
    seed: int = getattr(parameter, kind)
    return seed


def _stream_error(item: Message | Malformed, exc: ServingError) -> Message:
    """An in-band refusal; it carries the request's id (as Triton's does), so a client with
    many requests in flight can tell which one failed."""
    reply = pb.ModelStreamInferResponse(error_message=str(exc))
    if not isinstance(item, Malformed):
        reply.infer_response.id = item.id
        reply.infer_response.model_name = item.model_name
        reply.infer_response.model_version = item.model_version
    return reply
