"""swingup-train before training starts: every mistake is caught before anything is written, an
interrupt at any point is one line and exit 130, and no failed start leaves a dead-end directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import INTERRUPT_AT_IMPORT, error_line, exit_code

from trainer.cli import main

TINY = ["--frames", "64", "--num-envs", "2", "--n-steps", "2", "--no-progress"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed must be an integer in 0..4294967295, got -1"),
        (["--seed", "99999999999"], "--seed must be an integer in 0..4294967295"),
        (["--init-std", "0.3"], "--init-std 0.3 is not reachable with --std-param softplus"),
        (["--preset", "seed", "--init-std", "0.5"], "not reachable with --std-param exp_softplus"),
        (["--critic-hidden", "-3"], "--critic-hidden must be an integer in 0..4096, got -3"),
        (["--critic-layers", "-1"], "--critic-layers must be an integer in 0..8, got -1"),
        (["--adam-eps", "-1"], "--adam-eps must be a positive number, got -1.0"),
        (["--adam-eps", "0"], "--adam-eps must be a positive number, got 0.0"),
        (["--min-std", "nan"], "--min-std must be a number >= 0, got nan"),
        (["--lr-end-scale", "nan"], "--lr-end-scale must be a number in [0, 1], got nan"),
        (["--lr-end-scale", "-2"], "--lr-end-scale must be a number in [0, 1], got -2.0"),
        (["--entropy-weight", "nan"], "--entropy-weight must be a number >= 0, got nan"),
        (["--std-lr-scale", "nan"], "--std-lr-scale must be a number >= 0, got nan"),
        (["--std-lr-scale", "-1"], "--std-lr-scale must be a number >= 0, got -1.0"),
        (["--hidden", "1099511627776"], "--hidden must be positive and at most 4096"),
        (["--lr-decay-frames", "-100"], "--lr-decay-frames must be an integer in 0.."),
        (["--max-grad-norm", "nan"], "--max-grad-norm must be a number >= 0, got nan"),
        (["--init-std", "nan"], "--init-std must be a number >= 0, got nan"),
        (["--gamma", "nan"], "--gamma must be a number in (0, 1], got nan"),
        (["--log-interval", "-1"], "--log-interval must be an integer in 0.."),
    ],
)
def test_every_hyperparameter_is_checked_before_the_run_directory_exists(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert exit_code(main, ["train", *TINY, *flags, "--out", str(out)]) == 2
    assert message in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("out", ["/proc/run", "{file}/sub"])
def test_an_unwritable_out_is_one_line(
    out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "somefile"
    file.write_text("x")
    path = out.format(file=file)
    assert exit_code(main, ["train", *TINY, "--out", path]) == 2
    err = error_line(capsys)
    assert f"--out {path}: cannot write a run there" in err and ".tmp" not in err


def test_out_naming_a_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "somefile"
    file.write_text("mine")
    assert exit_code(main, ["train", *TINY, "--out", str(file)]) == 2
    assert f"--out {file} is a file" in error_line(capsys)
    assert file.read_text() == "mine"


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(tmp_path: Path) -> None:
    """kill -9 while starting leaves config.json alone: --out may take the directory again."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"preset": "fast", "hyperparams": {}}))
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["hyperparams"]["frames"] == 64


def test_a_foreign_config_json_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text('{"not": "ours"}')
    assert exit_code(main, ["train", *TINY, "--out", str(tmp_path)]) == 2
    assert "not empty" in error_line(capsys)
    assert (tmp_path / "config.json").read_text() == '{"not": "ours"}'


@pytest.mark.parametrize("module", ["json", "torch", "gymnasium"])
@pytest.mark.parametrize("given", ["new", "empty"])
def test_ctrl_c_while_starting_is_one_line_130_and_leaves_no_dead_end(
    module: str, given: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    if given == "empty":
        out.mkdir()
    argv = [sys.executable, "-c", INTERRUPT_AT_IMPORT, module, "trainer.cli", "train", *TINY]
    argv += ["--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "swingup-train: interrupted"
    # Nothing to resume, so nothing is left: a new directory is gone, a given one is empty again.
    assert not out.exists() if given == "new" else list(out.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["train", "--frames", "0"], ["export", "--out", "x"]]
)
def test_help_and_usage_errors_do_not_import_torch(argv: list[str]) -> None:
    """They answer at once: torch and onnxruntime load only when a command runs."""
    code = (
        "import sys\nfrom trainer.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted({'torch', 'onnxruntime', 'gymnasium'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--resume", ""],
        ["train", "--resume", "none"],
        ["train", "--out", ""],
        ["train", "--out", "None"],
        ["evaluate", ""],
        ["evaluate", "run", "--gif", ""],
        ["export", "run", "--out", "none"],
        ["export", "run", "--triton-repo", ""],
    ],
)
def test_an_empty_or_none_path_given_explicitly_is_a_usage_error(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not None, the flag left out: `--resume ""` must not quietly start a new run."""
    monkeypatch.chdir(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "trainer", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "expected a path" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no run started


def test_train_help_states_the_presets_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(main, ["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: None]" not in text
    assert "[default: preset's: seed 100000, fast 3000000]" in text
    assert "linear decay to lr-end-scale" in text and "rounded up to a multiple" in text
    assert "(0: only at the end and at Ctrl-C)" in text and "(0: one row, at the end)" in text
    assert "must exceed --min-std" in text
