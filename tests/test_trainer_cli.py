"""swingup-train from the command line: JSON results, and each user mistake as one line, exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import error_line, exit_code, signalled_after_first_checkpoint

from trainer.cli import main

TINY = ["--frames", "640", "--num-envs", "4", "--n-steps", "4", "--no-progress"]


def last_json(out: str) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return parsed


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--out", str(path), "--checkpoint-interval", "320"]) == 0
    return path


def test_train_writes_the_run_directory(run_dir: Path) -> None:
    for name in ("config.json", "metrics.csv", "training.png", "eval.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == "fast" and config["hyperparams"]["num_envs"] == 4
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 100


def test_train_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "train",
                "--preset",
                "seed",
                "--frames",
                "300",
                "--no-progress",
                "--json",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    summary = last_json(capsys.readouterr().out)
    assert set(summary) == {
        "run_dir",
        "preset",
        "frames",
        "seed",
        "wall_s",
        "frames_per_s",
        "eval_mean",
        "eval_std",
    }
    assert summary["preset"] == "seed" and summary["seed"] == 777 and summary["frames"] == 300


def test_evaluate_json(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(run_dir), "--episodes", "3", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["episodes"] == 3 and len(result["returns"]) == 3  # type: ignore[arg-type]
    assert set(result) == {"episodes", "mean", "std", "returns"}


def test_evaluate_gif_and_sampling(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gif = tmp_path / "episode.gif"
    assert (
        main(["evaluate", str(run_dir), "--episodes", "2", "--sample", "--gif", str(gif), "--json"])
        == 0
    )
    sampled = last_json(capsys.readouterr().out)
    assert gif.read_bytes()[:6] == b"GIF89a"
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["returns"] != sampled["returns"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "foo"], "invalid choice: 'foo'"),
        (["train", "--frames", "0"], "--frames must be positive"),
        (["train", "--frames", "-5"], "--frames must be positive"),
        (["train", "--gamma", "1.5"], "--gamma"),
        (["train", "--frames", "ten"], "invalid int value"),
        (["evaluate", "/nonexistent/run"], "no such run directory or checkpoint"),
        (["evaluate", "/nonexistent/model.onnx"], "no such model"),
        (["evaluate", "any.onnx", "--episodes", "0"], "--episodes must be positive"),
        (["export", "/nonexistent/run"], "no such run directory or checkpoint"),
        (["train", "--resume", "/nonexistent/run"], "not a run directory"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(main, argv) == 2
    assert message in error_line(capsys)


def test_an_occupied_run_directory_is_never_overwritten(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (run_dir / "metrics.csv").read_bytes()
    assert main(["train", *TINY, "--out", str(run_dir)]) == 2
    assert "not empty" in error_line(capsys)
    assert (run_dir / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "foreign", "empty"])
def test_damaged_checkpoints_are_refused_and_outputs_kept(
    damage: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        bad.write_bytes(b"")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous model")
    for argv in (["export", str(bad), "--out", str(out)], ["evaluate", str(bad)]):
        assert main(argv) == 2
        assert str(bad) in error_line(capsys)
    assert out.read_bytes() == b"the previous model"


def test_resume_refuses_changed_settings(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(run_dir), "--gamma", "0.5"]) == 2
    assert "only --frames may change" in error_line(capsys)


def test_ctrl_c_checkpoints_exits_130_and_resume_finishes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, err = signalled_after_first_checkpoint(run, signal.SIGINT)
    assert code == 130, err
    assert "--resume" in err and "Traceback" not in err
    saved = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert 200 <= saved["frames"] < 1_000_000
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "train",
            "--resume",
            str(run),
            "--frames",
            str(saved["frames"] + 200),
            "--no-progress",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["frames"] == saved["frames"] + 200


def resume_argv(run: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer",
        "train",
        "--resume",
        str(run),
        "--no-progress",
        "--json",
    ]


def test_kill_9_mid_run_then_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "trainer", "train", "--frames", "10000000", "--out", str(run)]
    argv += ["--num-envs", "4", "--n-steps", "4", "--checkpoint-interval", "1600"]
    argv += ["--no-progress", "--log-checkpoints"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = 0
        for line in proc.stderr:  # let two checkpoints land, then kill without warning
            seen += line.startswith("checkpoint")
            if seen == 2:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert seen == 2, "the run ended before its second checkpoint"
    assert proc.returncode == -signal.SIGKILL
    saved = sorted((run / "checkpoints").glob("frame-*.pt"))
    assert saved, "no checkpoint survived"
    frames = [torch.load(p, weights_only=True)["frames"] for p in saved]  # none is corrupt
    last = max(frames)
    assert last >= 3200
    resumed = subprocess.run(
        [*resume_argv(run), "--frames", str(last + 1600)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed.stdout)["frames"] == last + 1600
    metrics = (run / "metrics.csv").read_text().splitlines()
    frames_logged = [int(row.split(",")[0]) for row in metrics[1:]]
    assert frames_logged == sorted(set(frames_logged)), "rows repeated or out of order after resume"
    assert frames_logged[-1] == last + 1600
