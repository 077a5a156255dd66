"""`swingup-train export --triton-repo`: a model repository Triton loads as it is."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from swingup import contract
from trainer.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("triton") / "run"
    assert (
        main(["train", "--frames", "400", "--num-envs", "4", "--out", str(path), "--no-progress"])
        == 0
    )
    return path


def test_each_export_adds_the_next_version(run_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for _ in range(2):
        assert main(["export", str(run_dir), "--triton-repo", str(repo)]) == 0
    model_dir = repo / "pendulum-a2c"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt"]
    for version in ("1", "2"):
        onnx.checker.check_model(str(model_dir / version / "model.onnx"), full_check=True)


def test_config_is_a_valid_triton_model_config_matching_the_graph(
    run_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    assert main(["export", str(run_dir), "--triton-repo", str(repo), "--model-name", "swing"]) == 0
    text = (repo / "swing" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())  # Triton's own schema
    assert config.name == "swing" and config.backend == "onnxruntime"
    assert config.max_batch_size >= 1024 and config.HasField("dynamic_batching")
    graph = onnx.load(str(repo / "swing" / "1" / "model.onnx")).graph
    assert [i.name for i in config.input] == [i.name for i in graph.input] == [contract.INPUT_NAME]
    assert [o.name for o in config.output] == [o.name for o in graph.output]
    assert list(config.input[0].dims) == [contract.OBS_DIM]
    assert all(list(o.dims) == [contract.ACTION_DIM] for o in config.output)
    fp32 = model_config_pb2.DataType.Value("TYPE_FP32")
    assert all(t.data_type == fp32 for t in [*config.input, *config.output])


def test_bad_model_name_and_out_conflict(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["export", str(run_dir), "--triton-repo", str(tmp_path), "--model-name", "../x"]) == 2
    )
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--triton-repo",
                str(tmp_path),
                "--out",
                str(tmp_path / "a.onnx"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.count("\n") == 2
    assert list(tmp_path.iterdir()) == []
