"""The onnxruntime layer: provider choice, the model contract check, predictions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from support import TEST_METADATA, Reference, observations

from server.errors import ModelError
from server.models import Reloader
from server.runtime import (
    CPU,
    CUDA,
    Runtime,
    check_metadata,
    choose_providers,
    confirm_providers,
)
from swingup import contract
from swingup.model_contract import parse_numbers

AZURE = "AzureExecutionProvider"


def test_cpu_is_cpu_whatever_is_available() -> None:
    assert choose_providers("cpu", [CUDA, CPU]) == ([CPU], "")


def test_auto_prefers_cuda_when_onnxruntime_has_it() -> None:
    assert choose_providers("auto", [CUDA, CPU]) == ([CUDA, CPU], "")


def test_auto_without_a_cuda_provider_serves_on_cpu_and_says_so() -> None:
    providers, note = choose_providers("auto", [AZURE, CPU])
    assert providers == [CPU]
    assert "CPU" in note and "CUDA" in note


def test_cuda_without_a_cuda_provider_is_refused_with_the_remedy() -> None:
    with pytest.raises(ModelError, match=r"no CUDAExecutionProvider.*onnxruntime-gpu"):
        choose_providers("cuda", [AZURE, CPU])


def test_cuda_that_silently_fell_back_to_cpu_is_refused() -> None:
    # onnxruntime-gpu without a usable GPU returns a session running on CPU, without an error.
    with pytest.raises(ModelError, match=r"failed to load.*fell back to CPUExecutionProvider"):
        confirm_providers("cuda", [CUDA, CPU], [CPU])


def test_auto_that_fell_back_to_cpu_serves_with_a_note() -> None:
    note = confirm_providers("auto", [CUDA, CPU], [CPU])
    assert note.startswith("device auto:") and "fell back to CPUExecutionProvider" in note


def test_a_session_that_got_what_it_asked_for_needs_no_note() -> None:
    assert confirm_providers("cuda", [CUDA, CPU], [CUDA, CPU]) == ""
    assert confirm_providers("cpu", [CPU], [CPU]) == ""


@pytest.mark.parametrize(
    ("text", "numbers"),
    [("[3]", (3.0,)), ("3", (3.0,)), ("-2.0", (-2.0,)), ("[-1, -1, -8]", (-1.0, -1.0, -8.0))],
)
def test_metadata_numbers(text: str, numbers: tuple[float, ...]) -> None:
    assert parse_numbers(text) == numbers


def test_the_trainers_metadata_is_accepted() -> None:
    check_metadata(dict(TEST_METADATA))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (contract.META_FORMAT_VERSION, "2", "format version '2'"),
        (contract.META_OBS_SHAPE, "[4]", "swingup.obs_shape='\\[4\\]'"),
        (contract.META_ACTION_SHAPE, "[2]", "swingup.action_shape"),
        (contract.META_ACTION_HIGH, "1.0", "swingup.action_high='1.0'"),
        (contract.META_ACTION_LOW, "low", "not a number"),
    ],
)
def test_metadata_off_contract_is_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        check_metadata({**TEST_METADATA, key: value})


def test_metadata_without_required_keys_is_refused() -> None:
    metadata = dict(TEST_METADATA)
    del metadata[contract.META_OBS_SHAPE]
    with pytest.raises(ModelError, match=r"lacks swingup.obs_shape: not a Swingup export"):
        check_metadata(metadata)


def test_loaded_model_predicts_what_onnxruntime_does(
    model_path: Path, reference: Reference
) -> None:
    runtime = Runtime.load(model_path, "cpu")
    obs = observations(300)
    for got, want in zip(runtime.predict(obs), reference(obs), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert runtime.provider == CPU
    assert runtime.version == hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    assert runtime.metadata[contract.META_PRESET] == "test"


def test_every_version_loads_with_the_threads_asked_for(
    model_path: Path, reference: Reference
) -> None:
    reloader = Reloader(model_path, "cpu", on_swap=lambda runtime: None, threads=2)
    runtime = reloader.load_first()
    assert runtime.session.get_session_options().intra_op_num_threads == 2
    obs = observations(1024)  # a batch big enough for onnxruntime to split it
    for got, want in zip(runtime.predict(obs), reference(obs), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert Runtime.load(model_path, "cpu").session.get_session_options().intra_op_num_threads == 1


def _rewrite(source: Path, out: Path, metadata: dict[str, str]) -> Path:
    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(out))
    return out


def test_loading_checks_the_files_metadata(model_path: Path, tmp_path: Path) -> None:
    foreign = _rewrite(model_path, tmp_path / "foreign.onnx", {"author": "someone"})
    with pytest.raises(ModelError, match=r"lacks swingup.format_version"):
        Runtime.load(foreign, "cpu")


def test_missing_and_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        Runtime.load(tmp_path / "absent.onnx", "cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"cannot load .*junk.onnx as an ONNX model"):
        Runtime.load(junk, "cpu")


def test_a_model_that_cannot_run_on_the_smoke_batch_is_refused(tmp_path: Path) -> None:
    # It passes every check of its graph and metadata, and onnxruntime raises only when it
    # runs: the refusal must still be a ModelError (a traceback at start, INTERNAL on reload).
    h, f = onnx.helper, onnx.TensorProto.FLOAT
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["obs", "w"], ["product"]),
            h.make_node("Reshape", ["product", "five"], ["action_mean"]),
            h.make_node("Add", ["action_mean", "one"], ["action_std"]),
        ],
        "runs-only-on-five",
        [h.make_tensor_value_info("obs", f, ["batch", 3])],
        [
            h.make_tensor_value_info("action_mean", f, ["batch", 1]),
            h.make_tensor_value_info("action_std", f, ["batch", 1]),
        ],
        [
            h.make_tensor("w", f, [3, 1], [0.1, 0.1, 0.1]),
            h.make_tensor("five", onnx.TensorProto.INT64, [2], [5, 1]),
            h.make_tensor("one", f, [1], [1.0]),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    h.set_model_props(model, TEST_METADATA)
    path = tmp_path / "five.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="failed its smoke inference"):
        Runtime.load(path, "cpu")
    fixed = onnx.load(str(path))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, str(path))
    with pytest.raises(ModelError, match="fixed batch size of 1"):
        Runtime.load(path, "cpu")
