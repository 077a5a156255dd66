"""The end of a run: its final evaluation is recorded once, and SIGTERM stops it like Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from support import signalled_after_first_checkpoint

from trainer.cli import main
from trainer.run_log import read_evals

TINY = ["--frames", "640", "--num-envs", "4", "--n-steps", "4", "--no-progress"]


def test_the_final_evaluation_is_in_evals_csv_without_eval_interval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--eval-episodes", "3"]) == 0
    evals = read_evals(run)
    final = json.loads((run / "eval.json").read_text())
    assert [e.frame for e in evals] == [640] and final["frame"] == 640
    assert evals[0].eval_mean == final["mean"] and evals[0].episodes == 3


def test_an_interval_evaluation_at_the_last_frame_is_not_run_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", *TINY, "--out", str(run), "--eval-interval", "320", "--eval-episodes", "3"]
    assert main(argv) == 0
    assert [e.frame for e in read_evals(run)] == [320, 640]
    assert json.loads((run / "eval.json").read_text())["mean"] == read_evals(run)[-1].eval_mean


def test_sigterm_checkpoints_and_exits_143(tmp_path: Path) -> None:
    """Docker, Kubernetes and Slurm send SIGTERM before they kill: the run stops as at Ctrl-C."""
    run = tmp_path / "run"
    code, err = signalled_after_first_checkpoint(run, signal.SIGTERM)
    assert code == 143, err
    assert f"continue with: swingup-train train --resume {run}" in err and "Traceback" not in err
    saved = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert 200 <= saved["frames"] < 1_000_000


def test_a_budget_off_the_update_size_is_rounded_up_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--frames", "100", "--num-envs", "4", "--n-steps", "4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == (
        "swingup-train: training 112 frames: --frames 100 rounded up to a multiple of "
        "num-envs x n-steps (16)"
    )
    assert json.loads(out.splitlines()[-1])["frames"] == 112
