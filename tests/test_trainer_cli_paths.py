"""swingup-train with paths that are wrong: each mistake is one line naming the user's path, found
before the work; damaged checkpoints and run files are named, and older checkpoints stand in."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from support import error_line, exit_code, files_up_to_4_kib

from trainer import checkpoint
from trainer.cli import main

TINY = ["--frames", "640", "--num-envs", "4", "--n-steps", "4", "--no-progress"]
TRAINER = [sys.executable, "-B", "-m", "trainer"]  # -B: no .pyc, a file past the size limit


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("paths") / "run"
    assert main(["train", *TINY, "--out", str(path), "--checkpoint-interval", "320"]) == 0
    return path


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    assert exit_code(main, argv) == code, capsys.readouterr()
    return error_line(capsys)


def test_export_of_a_loose_checkpoint_writes_beside_it(run: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose.pt"
    shutil.copy(checkpoint.latest(run), loose)
    assert main(["export", str(loose)]) == 0
    assert (tmp_path / "loose.onnx").is_file()


def test_export_of_a_run_checkpoint_writes_the_runs_actor(run: Path) -> None:
    assert main(["export", str(checkpoint.latest(run))]) == 0
    assert (run / "actor.onnx").is_file()


@pytest.mark.parametrize("name", [".", ".."])
def test_a_model_name_that_leaves_the_repository_is_refused(
    name: str, tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    err = fails(["export", str(run), "--triton-repo", str(repo), "--model-name", name], capsys)
    assert f"--model-name {name!r}" in err
    assert not repo.exists()


def test_export_paths_are_checked_before_the_export(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "somefile"
    file.write_text("x")
    err = fails(["export", str(run), "--out", f"{file}/m.onnx"], capsys)
    assert f"--out {file}/m.onnx: cannot write there" in err
    err = fails(["export", str(run), "--triton-repo", str(file)], capsys)
    assert f"--triton-repo {file} is not a directory" in err
    err = fails(["export", str(run / "config.json")], capsys)
    assert "export takes a run directory or a .pt checkpoint" in err


def test_evaluate_checks_gif_and_seed_before_the_episodes(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "somefile"
    file.write_text("x")
    assert "is a directory" in fails(["evaluate", str(run), "--gif", str(tmp_path)], capsys)
    assert "cannot write there" in fails(["evaluate", str(run), "--gif", f"{file}/x.gif"], capsys)
    assert "--seed -1" in fails(["evaluate", str(run), "--seed", "-1"], capsys)
    big = ["evaluate", str(run), "--seed", str(2**32 - 1), "--episodes", "2"]
    assert "0..4294967295" in fails(big, capsys)


def test_a_gif_that_fails_after_the_episodes_keeps_the_results(run: Path, tmp_path: Path) -> None:
    gif = tmp_path / "big.gif"
    done = subprocess.run(
        [*TRAINER, "evaluate", str(run), "--episodes", "1", "--gif", str(gif), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=files_up_to_4_kib,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"swingup-train: error: --gif {gif}: File too large\n"
    assert list(tmp_path.iterdir()) == [run]  # no partial GIF, no temporary file
    assert json.loads(done.stdout.splitlines()[-1])["episodes"] == 1


def onnx_model(path: Path, inputs: list[str], outputs: list[str]) -> Path:
    """A tiny graph with the given tensor names (each output the first input)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [inputs[0]], [name]) for name in outputs],
        "foreign",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in outputs],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (["x"], ["action_mean", "action_std"], "takes ['x']"),
        (["obs"], ["action_mean"], "returns ['action_mean']"),
        (["obs"], ["action_mean", "action_std"], "metadata lacks"),
    ],
)
def test_evaluate_applies_the_servers_model_contract(
    inputs: list[str],
    outputs: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = onnx_model(tmp_path / "foreign.onnx", inputs, outputs)
    err = fails(["evaluate", str(model), "--episodes", "1"], capsys)
    assert f"{model} does not follow the model contract" in err and message in err


def test_resume_takes_a_run_directory(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latest = checkpoint.latest(run)
    err = fails(["train", "--resume", str(latest)], capsys)
    assert f"--resume takes a run directory; {latest} is a file" in err


def test_resume_refuses_a_preset(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["train", "--resume", str(run), "--preset", "seed", "--frames", "2000"], capsys)
    assert "only --frames may change (got ['preset'])" in err


def test_resume_of_a_finished_run_says_so(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (run / "config.json").read_text()
    err = fails(["train", "--resume", str(run), "--frames", "100"], capsys)
    assert "has already trained 640 frames (--frames 100 adds none)" in err
    assert "has already trained 640 frames" in fails(["train", "--resume", str(run)], capsys)
    assert (run / "config.json").read_text() == before


def test_resume_with_more_frames_records_them_in_config_json(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", str(run), "--frames", "960", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["hyperparams"]["frames"] == 960 and config["preset"] == "fast"
    assert "note:" not in capsys.readouterr().err  # fast's decay spans fixed frames


def test_resume_says_when_more_frames_stretch_a_whole_run_decay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(path), "--lr-decay-frames", "0"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(path), "--frames", "960", "--no-progress"]) == 0
    # Stopped at 640 of 640 frames: 0.05x; 640 of 960 is 1 - 0.95 * 2/3 = 0.367x.
    (note,) = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert "--frames 960 stretches the decay: it goes on at 0.367x" in note
    assert "where the run stopped at 0.05x" in note


def edit_config(run: Path, **changes: object) -> None:
    record = json.loads((run / "config.json").read_text())
    record["hyperparams"].update(changes)
    (run / "config.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_envs": 8}, "disagree on num_envs (8 against 4)"),
        ({"hidden": 64}, "disagree on hidden (64 against 128)"),
        ({"hidden": "128"}, "hidden is '128', expected an integer"),
        ({"gamma": 7.0}, "--gamma must be a number in (0, 1], got 7.0"),
    ],
)
def test_resume_names_a_config_json_that_does_not_fit(
    changes: dict[str, object], message: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(run, **changes)
    err = fails(["train", "--resume", str(run), "--frames", "960"], capsys)
    assert str(run / "config.json") in err and message in err


def test_resume_names_a_damaged_metrics_csv(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(run / "metrics.csv", "a") as f:
        f.write("garbage,row\n")
    err = fails(["train", "--resume", str(run), "--frames", "960"], capsys)
    assert f"{run / 'metrics.csv'} is damaged" in err


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_latest_checkpoint_falls_back_to_an_older_one(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest, older = checkpoint.list_checkpoints(run)[::-1][:2]
    cut_short(newest)
    for argv in (
        ["evaluate", str(run), "--episodes", "1"],
        ["export", str(run), "--out", str(tmp_path / "a.onnx")],
        ["train", "--resume", str(run), "--frames", "960", "--no-progress"],
    ):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert f"warning: {newest} is damaged or cut short" in err
        assert f"using the older {older.name}" in err


def test_when_no_checkpoint_loads_the_error_names_each(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = checkpoint.list_checkpoints(run)
    assert len(saved) >= 2  # the run's two checkpoints, each named
    for path in saved:
        cut_short(path)
    err = fails(["evaluate", str(run)], capsys)
    assert all(str(path) in err for path in saved)


def test_a_file_that_is_no_checkpoint_says_so(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = fails(["evaluate", str(run / "metrics.csv")], capsys)
    assert "is not a checkpoint" in err and "Weights only" not in err


def test_a_long_torch_message_ends_at_a_sentence() -> None:
    text = "First sentence of the reason. " + "word " * 60
    assert checkpoint._reason(RuntimeError(text)) == "First sentence of the reason"
