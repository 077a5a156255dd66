"""The exported ONNX model: contract, checker, parity with torch, metadata, atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from swingup import contract
from trainer import checkpoint
from trainer.cli import main
from trainer.networks import Actor
from trainer.onnx_graph import ExportError, export_actor, parity_observations
from trainer.policies import actor_from_state


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "run"
    argv = [
        "train",
        "--frames",
        "2000",
        "--num-envs",
        "4",
        "--n-steps",
        "5",
        "--out",
        str(path),
        "--no-progress",
    ]
    assert main(argv) == 0
    return path


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> Path:
    assert main(["export", str(run_dir)]) == 0
    return run_dir / "actor.onnx"


def test_graph_contract_and_checker(exported: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [contract.INPUT_NAME]
    assert [o.name for o in model.graph.output] == [contract.MEAN_NAME, contract.STD_NAME]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 3  # dynamic batch, 3 observations
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_parity_with_torch_at_each_batch_size(exported: Path, run_dir: Path, batch: int) -> None:
    actor = actor_from_state(checkpoint.load(checkpoint.latest(run_dir)))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    obs = parity_observations(batch, seed=batch)
    mean, std = session.run(None, {contract.INPUT_NAME: obs})
    with torch.no_grad():
        mean_t, std_t = actor(torch.from_numpy(obs))
    assert mean.shape == (batch, 1) and std.shape == (batch, 1)
    np.testing.assert_allclose(mean, mean_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(std, std_t.numpy(), atol=1e-5)
    assert np.all(np.abs(mean) <= 2.0) and np.all(std > 0)


def test_parity_observations_cover_the_space() -> None:
    obs = parity_observations()
    assert len(obs) >= 10_000
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    assert theta.min() < -3.1 and theta.max() > 3.1
    assert obs[:, 2].min() <= -8.5 and obs[:, 2].max() >= 8.5


def test_metadata_round_trips(exported: Path, run_dir: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    session_meta = ort.InferenceSession(str(exported)).get_modelmeta().custom_metadata_map
    assert session_meta == meta
    assert meta[contract.META_FORMAT_VERSION] == contract.FORMAT_VERSION
    assert json.loads(meta[contract.META_OBS_SHAPE]) == [3]
    assert json.loads(meta[contract.META_ACTION_SHAPE]) == [1]
    assert (
        float(meta[contract.META_ACTION_LOW]) == -2.0
        and float(meta[contract.META_ACTION_HIGH]) == 2.0
    )
    assert json.loads(meta[contract.META_OBS_HIGH]) == [1.0, 1.0, 8.0]
    assert meta[contract.META_PRESET] == "fast"
    config = json.loads((run_dir / "config.json").read_text())
    assert json.loads(meta[contract.META_HYPERPARAMETERS]) == config["hyperparams"]
    assert int(meta[contract.META_FRAMES]) == 2000
    assert int(meta[contract.META_EVAL_EPISODES]) == 100
    assert float(meta[contract.META_EVAL_MEAN]) < 0 and float(meta[contract.META_EVAL_STD]) >= 0
    assert meta[contract.META_CHECKPOINT_SHA256] == checkpoint.sha256(checkpoint.latest(run_dir))
    for key in (contract.META_CREATED, contract.META_VERSION):
        assert meta[key]


def test_export_json(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.onnx"
    assert main(["export", str(run_dir), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"path", "sha256", "max_abs_diff", "opset"}
    assert result["path"] == str(out) and result["opset"] >= 17
    assert 0 <= result["max_abs_diff"] <= 1e-5
    import hashlib

    assert result["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_missing_checkpoint_fails_and_keeps_the_old_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert main(["export", str(empty_run), "--out", str(out)]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert out.read_bytes() == b"old"


def test_a_failed_parity_check_writes_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parity is part of export: an actor whose graph disagrees with torch is refused."""
    actor = actor_from_state(checkpoint.load(checkpoint.latest(run_dir)))
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    import trainer.onnx_graph as graph

    monkeypatch.setattr(graph, "PARITY_TOLERANCE", -1.0)  # no real graph can pass this
    with pytest.raises(ExportError, match="differs from torch"):
        export_actor(actor, out, {})
    assert out.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_the_served_graph_is_the_lean_one(exported: Path) -> None:
    """The normaliser folded into the first layer, both heads one MatMul, and no 0-d constant
    broadcast against [batch, 1] (onnxruntime's slow path): see ServedActor."""
    model = onnx.load(str(exported))
    ops = [node.op_type for node in model.graph.node]
    assert "Sub" not in ops and "Div" not in ops
    assert ops.count("MatMul") == 1 and ops.count("Gemm") == 1  # one hidden layer, one head
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    elementwise = [n for n in model.graph.node if n.op_type in ("Mul", "Add") and n.output[0]]
    assert elementwise  # the std head's: the check below has nodes to look at
    for node in elementwise:
        for name in node.input:
            assert shapes.get(name, [1, 1]) != [], f"{node.op_type} by a 0-d {name}"


@pytest.mark.parametrize(
    "layers,std_param,normalize",
    [(2, "exp_softplus", True), (1, "softplus", False), (3, "softplus", True)],
)
def test_parity_of_other_actor_shapes(
    tmp_path: Path, layers: int, std_param: str, normalize: bool
) -> None:
    """Folding the normaliser and merging the heads keep the actor's function for any shape."""
    torch.manual_seed(layers)
    actor = Actor(hidden=32, layers=layers, std_param=std_param, normalize_obs=normalize)  # type: ignore[arg-type]
    with torch.no_grad():
        actor.normalizer.obs_mean.copy_(torch.tensor([0.1, -0.2, 0.5]))
        actor.normalizer.obs_std.copy_(torch.tensor([0.7, 0.6, 3.0]))
        for param in actor.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    result = export_actor(actor, tmp_path / "actor.onnx", {})
    assert result.max_abs_diff <= 1e-5
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    obs = parity_observations(257, seed=layers)
    mean, std = session.run(None, {contract.INPUT_NAME: obs})
    with torch.no_grad():
        mean_t, std_t = actor(torch.from_numpy(obs))
    np.testing.assert_allclose(mean, mean_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(std, std_t.numpy(), atol=1e-5)
