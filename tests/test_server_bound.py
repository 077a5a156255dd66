"""The bound onnxruntime calls give exactly what `session.run` gives, never shared buffers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from support import observations

from server.bound import BIND_AFTER, MAX_SHAPES, BoundSession
from server.errors import ModelError
from server.runtime import Runtime, session_options
from swingup import contract

OUTPUTS = [contract.MEAN_NAME, contract.STD_NAME]


def _session(model_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(model_path), session_options(), providers=["CPUExecutionProvider"]
    )


def _bound(session: ort.InferenceSession) -> BoundSession:
    return BoundSession(
        session, contract.INPUT_NAME, OUTPUTS, (contract.OBS_DIM, contract.ACTION_DIM)
    )


def _same(bound: BoundSession, session: ort.InferenceSession, obs: np.ndarray) -> None:
    mean, std = bound.run(obs)
    want_mean, want_std = session.run(OUTPUTS, {contract.INPUT_NAME: obs})
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(std, want_std)


def test_a_size_seen_often_is_bound_and_answers_as_run_does(model_path: Path) -> None:
    session = _session(model_path)
    bound = _bound(session)
    assert bound.enabled
    for call in range(BIND_AFTER + 2):
        assert bound.sizes == ([] if call < BIND_AFTER else [7])
        _same(bound, session, observations(7, seed=call))


def test_past_the_cap_new_sizes_take_run_and_nothing_is_rebound(model_path: Path) -> None:
    session = _session(model_path)
    bound = _bound(session)
    for rows in range(1, MAX_SHAPES + 9):  # sizes 1-72, each often enough to be bound
        for call in range(BIND_AFTER + 1):
            _same(bound, session, observations(rows, seed=100 * rows + call))
    assert bound.sizes == list(range(1, MAX_SHAPES + 1))
    for rows in (1, 70, 700):  # a bound size, and two that are not: all still right
        _same(bound, session, observations(rows, seed=rows))
    assert bound.sizes == list(range(1, MAX_SHAPES + 1))


def test_results_are_fresh_arrays(model_path: Path) -> None:
    bound = _bound(_session(model_path))
    for _ in range(BIND_AFTER):
        bound.run(observations(5))
    assert bound.sizes == [5]
    mean, std = bound.run(observations(5, seed=1))
    kept = mean.copy(), std.copy()
    bound.run(observations(5, seed=2))  # the same batch size: the same buffers
    np.testing.assert_array_equal(mean, kept[0])
    np.testing.assert_array_equal(std, kept[1])


def test_threads_at_once_each_get_their_own_answers(model_path: Path) -> None:
    session = _session(model_path)
    bound = _bound(session)
    wrong: list[int] = []

    def caller(seed: int) -> None:
        for step in range(150):
            obs = observations(1 + (seed + step) % 4, seed=seed * 1000 + step)
            want = session.run(OUTPUTS, {contract.INPUT_NAME: obs})[0]
            if not np.array_equal(bound.run(obs)[0], want):
                wrong.append(step)

    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert bound.sizes == [1, 2, 3, 4]  # the bound path did run


def test_a_model_with_other_than_float_outputs_is_refused(tmp_path: Path) -> None:
    # The bound buffers are float32: a model answering in doubles is refused at load.
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [contract.INPUT_NAME], ["wide"], to=TensorProto.DOUBLE),
            helper.make_node(
                "Split",
                ["wide"],
                OUTPUTS,
                axis=1,
                num_outputs=2,
            ),
        ],
        "doubles",
        [helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.FLOAT, ["b", 3])],
        [helper.make_tensor_value_info(name, TensorProto.DOUBLE, None) for name in OUTPUTS],
    )
    path = tmp_path / "doubles.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(ModelError, match=r"model outputs are tensor\(double\), tensor\(double\)"):
        Runtime.load(path, "cpu")


def test_what_does_not_fit_a_binding_is_refused_as_run_refuses_it(model_path: Path) -> None:
    bound = _bound(_session(model_path))
    for _ in range(BIND_AFTER):
        bound.run(observations(2))
    assert bound.sizes == [2]
    for bad in (
        np.zeros((2, 1), np.float32),  # would broadcast into the [2, 3] buffer
        np.zeros((2, 3), np.float64),  # would be cast
        np.zeros(3, np.float32),
    ):
        with pytest.raises(Exception, match=r"(?i)invalid|rank|dimension|type"):
            bound.run(bad)
