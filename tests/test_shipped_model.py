"""The shipped default policy, models/pendulum-a2c.onnx: present, within its contract, and good."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from swingup import contract
from swingup.episodes import run_episodes
from trainer.onnx_graph import parity_observations

MODEL = Path(__file__).resolve().parent.parent / contract.SHIPPED_MODEL


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    assert MODEL.is_file(), f"{MODEL} is missing: run `make model`"
    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])


def test_small_and_checked() -> None:
    assert MODEL.stat().st_size < 300_000
    onnx.checker.check_model(str(MODEL), full_check=True)


def test_honours_the_contract(session: ort.InferenceSession) -> None:
    assert [i.name for i in session.get_inputs()] == [contract.INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [contract.MEAN_NAME, contract.STD_NAME]
    meta = session.get_modelmeta().custom_metadata_map
    for key in contract.REQUIRED_META:
        assert key in meta, key
    assert meta[contract.META_PRESET] == "fast"
    assert json.loads(meta[contract.META_HYPERPARAMETERS])["frames"] >= 1_000_000
    for batch in (1, 7, 4096):
        mean, std = session.run(None, {contract.INPUT_NAME: parity_observations(batch, seed=batch)})
        assert mean.shape == std.shape == (batch, 1)
        assert np.all(np.abs(mean) <= contract.ACTION_HIGH) and np.all(std > 0)


def test_swings_up_far_better_than_a_random_policy(session: ort.InferenceSession) -> None:
    def trained(obs: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {contract.INPUT_NAME: obs})[0])

    rng = np.random.default_rng(0)

    def random(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(contract.ACTION_LOW, contract.ACTION_HIGH, (len(obs), 1))

    ours = run_episodes(trained, 20).mean
    baseline = run_episodes(random, 20).mean
    assert baseline < -900
    assert ours > -250 and ours > baseline + 700, (ours, baseline)
    meta = session.get_modelmeta().custom_metadata_map
    assert float(meta[contract.META_EVAL_MEAN]) >= -155  # the figure recorded at export
