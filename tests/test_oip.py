"""The Open Inference Protocol (KServe v2) service, called by Triton's own client, tritonclient."""

from __future__ import annotations

import hashlib
import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import Reference, health_of, observations, scrape, until_stopped, value
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import swingup
from client import PolicyClient
from client.localserver import LocalServer
from swingup import contract

MODEL = "pendulum-a2c"  # the server's default --model-name
OIP_SERVICE = "inference.GRPCInferenceService"
OUTPUTS = ["action_mean", "action_std", "action"]


@pytest.fixture(scope="module")
def oip(target: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(target)
    yield client
    client.close()


def obs_input(obs: np.ndarray, name: str = "obs", datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(obs.shape), datatype)
    tensor.set_data_from_numpy(obs)
    return tensor


def infer(oip: triton.InferenceServerClient, obs: np.ndarray, **kwargs: Any) -> triton.InferResult:
    return oip.infer(MODEL, [obs_input(obs)], client_timeout=10, **kwargs)


def model_version(model_path: Path) -> str:
    return hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]


def test_the_server_is_live_ready_and_names_itself(oip: triton.InferenceServerClient) -> None:
    assert oip.is_server_live() and oip.is_server_ready()
    metadata = oip.get_server_metadata()
    assert (metadata.name, metadata.version, list(metadata.extensions)) == (
        "swingup",
        swingup.__version__,
        [],
    )


def test_the_model_is_ready_under_its_name_and_version(
    oip: triton.InferenceServerClient, model_path: Path
) -> None:
    assert oip.is_model_ready(MODEL)
    assert oip.is_model_ready(MODEL, model_version(model_path))
    # As Triton answers: an unknown model or version is not ready, and that is no error.
    assert not oip.is_model_ready("cartpole")
    assert not oip.is_model_ready(MODEL, "7")


def test_model_metadata_describes_the_tensors(
    oip: triton.InferenceServerClient, model_path: Path
) -> None:
    metadata = oip.get_model_metadata(MODEL)
    assert metadata.name == MODEL and list(metadata.versions) == [model_version(model_path)]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("obs", "FP32", [-1, contract.OBS_DIM])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        (name, "FP32", [-1, contract.ACTION_DIM]) for name in OUTPUTS
    ]


@pytest.mark.parametrize("batch", [1, 1024])
def test_infer_equals_onnxruntime(
    oip: triton.InferenceServerClient, reference: Reference, model_path: Path, batch: int
) -> None:
    obs = observations(batch, seed=batch)
    result = infer(oip, obs, request_id=f"r{batch}")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        MODEL,
        model_version(model_path),
        f"r{batch}",
    )
    assert [o.name for o in response.outputs] == OUTPUTS  # none requested: all of them
    assert len(response.raw_output_contents) == 3  # raw, as Triton answers
    mean, std = reference(obs)
    for name, expected in [("action_mean", mean), ("action_std", std), ("action", mean)]:
        got = result.as_numpy(name)
        assert got is not None and got.shape == (batch, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_only_the_requested_outputs_come_back_in_their_order(
    oip: triton.InferenceServerClient, reference: Reference
) -> None:
    obs = observations(5)
    wanted = [triton.InferRequestedOutput("action"), triton.InferRequestedOutput("action_std")]
    result = infer(oip, obs, outputs=wanted)
    assert [o.name for o in result.get_response().outputs] == ["action", "action_std"]
    assert result.as_numpy("action_mean") is None
    np.testing.assert_allclose(result.as_numpy("action_std"), reference(obs)[1], atol=1e-6)


def test_seeded_sampling_is_reproducible_and_the_policy_services_own(
    oip: triton.InferenceServerClient, client: PolicyClient, reference: Reference
) -> None:
    obs = observations(64)
    sample = {"mode": "sample", "seed": 7}
    first = infer(oip, obs, parameters=sample)
    action = first.as_numpy("action")
    assert action is not None and np.all(np.abs(action) <= contract.ACTION_HIGH)
    np.testing.assert_array_equal(action, infer(oip, obs, parameters=sample).as_numpy("action"))
    other = infer(oip, obs, parameters={"mode": "sample", "seed": 8}).as_numpy("action")
    assert not np.array_equal(action, other)
    # One data plane: the same seed draws the same noise through either API.
    np.testing.assert_array_equal(action, client.act(obs, mode="sample", seed=7))
    np.testing.assert_allclose(first.as_numpy("action_mean"), reference(obs)[0], atol=1e-6)
    mean_mode = infer(oip, obs, parameters={"mode": "mean"}).as_numpy("action")
    np.testing.assert_allclose(mean_mode, reference(obs)[0], atol=1e-6)


def test_typed_fp32_contents_are_accepted(target: str, reference: Reference) -> None:
    obs = observations(4)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="obs", datatype="FP32", shape=[4, 3]).contents.fp32_contents.extend(
        obs.ravel().tolist()
    )
    with grpc.insecure_channel(target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=10
        )
    mean = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 1)
    np.testing.assert_allclose(mean, reference(obs)[0], atol=1e-6)


def test_a_stream_answers_in_order_and_refuses_bad_requests_in_band(
    oip: triton.InferenceServerClient, reference: Reference
) -> None:
    answers: queue.Queue[tuple[triton.InferResult | None, InferenceServerException | None]]
    answers = queue.Queue()
    batches = [1, 7, 256, 3, 64, 2]
    oip.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, batch in enumerate(batches):
            obs = observations(batch, seed=i)
            if i == 3:  # a bad request mid-stream
                oip.async_stream_infer(MODEL, [obs_input(obs[:, :2])], request_id="bad")
            oip.async_stream_infer(MODEL, [obs_input(obs)], request_id=str(i))
        received = [answers.get(timeout=10) for _ in range(len(batches) + 1)]
    finally:
        oip.stop_stream()
    bad_result, bad_error = received.pop(3)
    assert bad_result is None and bad_error is not None
    assert "must have shape [batch, 3], not [3, 2]" in str(bad_error.message())
    for i, (batch, (result, error)) in enumerate(zip(batches, received, strict=True)):
        assert error is None and result is not None
        assert result.get_response().id == str(i)
        np.testing.assert_allclose(
            result.as_numpy("action_mean"), reference(observations(batch, seed=i))[0], atol=1e-6
        )


def _input(shape: list[int], datatype: str = "FP32", name: str = "obs") -> triton.InferInput:
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32}[datatype]
    return obs_input(np.zeros(shape, dtype=dtype), name, datatype)


def _declared(shape: list[int]) -> triton.InferInput:
    """Data for [2, 3] declared as `shape`: tritonclient checks only what set_data sees."""
    tensor = _input([2, 3])
    tensor.set_shape(shape)
    return tensor


BAD_INPUTS = [
    (lambda: _input([2, 4]), "must have shape [batch, 3], not [2, 4]"),
    (lambda: _input([6]), "not [6]"),
    (lambda: _input([1, 2, 3]), "not [1, 2, 3]"),
    (lambda: _declared([-1, 3]), "not [-1, 3]"),
    (lambda: _declared([3, 3]), "takes 36 bytes of raw_input_contents, not 24"),
    (lambda: _input([2, 3], "FP64"), "must be FP32, not FP64"),
    (lambda: _input([2, 3], "INT32"), "must be FP32, not INT32"),
    (lambda: _input([2, 3], name="observation"), "takes one input, 'obs'"),
    (lambda: _input([0, 3]), "empty batch"),
    (lambda: _input([4097, 3]), "oversize batch: 4097 observations"),
    (lambda: obs_input(np.full((1, 3), np.nan, np.float32)), "non-finite value nan"),
]


@pytest.mark.parametrize(("make", "message"), BAD_INPUTS)
def test_bad_inputs_are_invalid_argument(
    oip: triton.InferenceServerClient, target: str, make: Any, message: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        oip.infer(MODEL, [make()], client_timeout=10)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in str(raised.value.message())
    assert health_of(target, OIP_SERVICE) == "SERVING"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parameters": {"mode": "fast"}}, 'mode must be the string "mean" or "sample"'),
        ({"parameters": {"mode": 1}}, "not int64_param 1"),
        ({"parameters": {"seed": -1}}, "seed must be a non-negative integer"),
        ({"parameters": {"seed": "7"}}, "not string_param '7'"),
        ({"outputs": [triton.InferRequestedOutput("value")]}, "unknown output 'value'"),
        ({"outputs": [triton.InferRequestedOutput("action", 3)]}, "no classification output"),
    ],
)
def test_bad_parameters_and_outputs_are_invalid_argument(
    oip: triton.InferenceServerClient, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        infer(oip, observations(2), **kwargs)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in str(raised.value.message())


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("cartpole", "", "unknown model 'cartpole': this server serves 'pendulum-a2c'"),
        (MODEL, "7", "model 'pendulum-a2c' has no version '7'"),
    ],
)
def test_unknown_models_and_versions_are_not_found(
    oip: triton.InferenceServerClient, target: str, name: str, version: str, message: str
) -> None:
    for method in ("metadata", "infer"):
        with pytest.raises(InferenceServerException) as raised:
            if method == "metadata":
                oip.get_model_metadata(name, version)
            else:
                oip.infer(name, [_input([1, 3])], model_version=version, client_timeout=10)
        assert raised.value.status() == "StatusCode.NOT_FOUND"
        assert message in str(raised.value.message())
    assert health_of(target, OIP_SERVICE) == "SERVING"


def test_bytes_that_are_not_a_request_are_invalid_argument(own_server: LocalServer) -> None:
    assert own_server.target is not None
    mark = len(own_server.lines)
    with grpc.insecure_channel(own_server.target) as channel:
        for method in ("ServerLive", "ModelMetadata", "ModelInfer"):
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(f"/{OIP_SERVICE}/{method}", None, None)(
                    b"\xff\xff\xff", timeout=10
                )
            assert isinstance(raised.value, grpc.Call)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "malformed request: not a valid inference." in (raised.value.details() or "")
    # Nothing in the log, no traceback: read once the server has exited, so nothing is late.
    assert until_stopped(own_server, mark) == []


def test_a_malformed_stream_request_is_refused_in_band(target: str) -> None:
    path = f"/{OIP_SERVICE}/ModelStreamInfer"
    with grpc.insecure_channel(target) as channel:
        stream = channel.stream_stream(path, None, service_pb2.ModelStreamInferResponse.FromString)
        bad = service_pb2.ModelInferRequest(id="req-7", model_name=MODEL)  # no input
        malformed, refused = list(stream(iter([b"\xff\xff\xff", bad.SerializeToString()]), 10))
    assert "malformed request: not a valid inference.ModelInferRequest" in malformed.error_message
    assert malformed.infer_response.id == ""  # there is no id to read in bytes that do not parse
    # A refusal names its request, as Triton's do: many may be in flight.
    assert refused.error_message and refused.infer_response.id == "req-7"
    assert refused.infer_response.model_name == MODEL


def test_the_repository_and_statistics_calls_are_unimplemented(
    oip: triton.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        oip.get_model_config(MODEL)
    assert raised.value.status() == "StatusCode.UNIMPLEMENTED"


def test_health_and_reflection_know_the_service(target: str) -> None:
    assert health_of(target, OIP_SERVICE) == "SERVING"
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=OIP_SERVICE),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    assert OIP_SERVICE in {service.name for service in listed.list_services_response.service}
    assert described.file_descriptor_response.file_descriptor_proto  # what grpcurl needs


TOKEN = "oip-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server with a model name of its own, bearer tokens, metrics and a short idle limit."""
    tokens = tmp_path_factory.mktemp("oip") / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    args = ["--model", str(model_path), "--auth-token-file", str(tokens), "--metrics-port", "0"]
    env = {**os.environ, "SWINGUP_MODEL_NAME": "swing", "SWINGUP_IDLE_TIMEOUT_S": "1"}
    with LocalServer([*args], env=env) as server:
        server.wait_listening()
        yield server
        assert server.stop() == 0, server.lines[-5:]


@pytest.fixture(scope="module")
def guarded_oip(guarded: LocalServer) -> Iterator[triton.InferenceServerClient]:
    assert guarded.target is not None
    client = triton.InferenceServerClient(guarded.target)
    yield client
    client.close()


def test_the_model_name_is_configurable(guarded_oip: triton.InferenceServerClient) -> None:
    assert guarded_oip.is_model_ready("swing", headers=AUTH)
    assert not guarded_oip.is_model_ready(MODEL, headers=AUTH)
    result = guarded_oip.infer("swing", [_input([1, 3])], headers=AUTH, client_timeout=10)
    assert result.get_response().model_name == "swing"


def test_calls_need_a_token_and_are_counted(
    guarded: LocalServer, guarded_oip: triton.InferenceServerClient
) -> None:
    for call in ("live", "infer"):
        with pytest.raises(InferenceServerException) as raised:
            if call == "live":
                guarded_oip.is_server_live()
            else:
                guarded_oip.infer("swing", [_input([1, 3])], client_timeout=10)
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
    guarded_oip.infer("swing", [_input([2, 3])], headers=AUTH, client_timeout=10)
    samples = scrape(guarded)
    infer, live = f"/{OIP_SERVICE}/ModelInfer", f"/{OIP_SERVICE}/ServerLive"
    calls = "swingup_grpc_calls_total"
    assert value(samples, calls, method=infer, code="OK") >= 1
    assert value(samples, calls, method=infer, code="UNAUTHENTICATED") >= 1
    assert value(samples, calls, method=live, code="UNAUTHENTICATED") >= 1


def test_an_idle_stream_is_closed(guarded_oip: triton.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[triton.InferResult | None, InferenceServerException | None]]
    answers = queue.Queue()
    guarded_oip.start_stream(lambda result, error: answers.put((result, error)), headers=AUTH)
    try:
        guarded_oip.async_stream_infer("swing", [_input([1, 3])], request_id="only")
        result, error = answers.get(timeout=10)
        assert error is None and result is not None and result.get_response().id == "only"
        result, error = answers.get(timeout=10)  # the server closes the stream after 1 s
    finally:
        guarded_oip.stop_stream()
    assert result is None and error is not None
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "stream idle for 1 s waiting for the next request" in str(error.message())


# The published protocol (KServe's open_inference_grpc.proto, Triton's grpc_service.proto) fixes
# these numbers on the wire; a tritonclient upgrade must not move them.
WIRE_FIELDS = {
    "ModelInferRequest": dict(
        model_name=1, model_version=2, id=3, parameters=4, inputs=5, outputs=6, raw_input_contents=7
    ),
    "ModelInferRequest.InferInputTensor": dict(
        name=1, datatype=2, shape=3, parameters=4, contents=5
    ),
    "ModelInferResponse": dict(
        model_name=1, model_version=2, id=3, parameters=4, outputs=5, raw_output_contents=6
    ),
    "ModelInferResponse.InferOutputTensor": dict(
        name=1, datatype=2, shape=3, parameters=4, contents=5
    ),
    "InferParameter": dict(bool_param=1, int64_param=2, string_param=3),
    "InferTensorContents": dict(fp32_contents=6),
    "ModelMetadataResponse": dict(name=1, versions=2, platform=3, inputs=4, outputs=5),
    "ModelMetadataResponse.TensorMetadata": dict(name=1, datatype=2, shape=3),
    "ServerMetadataResponse": dict(name=1, version=2, extensions=3),
    "ModelReadyRequest": dict(name=1, version=2),
    "ModelStreamInferResponse": dict(error_message=1, infer_response=2),
}


@pytest.mark.parametrize("message", sorted(WIRE_FIELDS))
def test_the_stubs_keep_the_published_field_numbers(message: str) -> None:
    descriptor = service_pb2.DESCRIPTOR.message_types_by_name[message.split(".")[0]]
    for nested in message.split(".")[1:]:
        descriptor = descriptor.nested_types_by_name[nested]
    assert {name: descriptor.fields_by_name[name].number for name in WIRE_FIELDS[message]} == (
        WIRE_FIELDS[message]
    )
