"""`swingup-train` (also `python -m trainer`): train, evaluate and export."""

from __future__ import annotations

import sys

from swingup.interrupts import exit_on_interrupt

# Ctrl-C while the program is still importing is an interrupt like any other, not a traceback.
with exit_on_interrupt("swingup-train"):
    import dataclasses
    import json
    import re
    import tempfile
    import time
    from collections.abc import Sequence
    from pathlib import Path
    from typing import TYPE_CHECKING, Any

    from swingup import atomic
    from swingup.cli import Failed, Handler, UsageError, run
    from trainer import checkpoint, run_plan
    from trainer.config import (
        MAX_SEED,
        EvaluateConfig,
        ExportConfig,
        Hyperparams,
        TrainConfig,
    )
    from trainer.run_plan import CONFIG_FILE

# Only light modules above: torch, onnxruntime and gymnasium take over a second to import, so the
# commands import them when they run, and --help and usage errors answer at once.
if TYPE_CHECKING:
    from trainer.onnx_graph import ExportResult

EVAL_FILE = "eval.json"


def emit_json(payload: dict[str, Any]) -> None:
    """The machine-readable result: exactly one JSON object on the last line of stdout."""
    print(json.dumps(payload, separators=(",", ":")))


# -- train -------------------------------------------------------------------------------------


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_can_write(path: Path, what: str) -> None:
    """Fail before the work rather than after it: `path` must be a file that can be created."""
    problem = atomic.unwritable(path)
    if problem:
        said = problem.startswith("cannot write")  # "cannot write in /proc (...)"
        raise UsageError(f"{what} {path}: {problem if said else f'cannot write there ({problem})'}")


def train(cfg: TrainConfig) -> int:
    if cfg.resume is not None:
        plan = run_plan.resumed(cfg)
        if plan.note:
            print(f"swingup-train: note: {plan.note}", file=sys.stderr)
        # config.json records what runs: a new --frames too (atomically, like every write).
        atomic.write_text(plan.run_dir / CONFIG_FILE, json.dumps(plan.record, indent=2) + "\n")
        return _train(cfg, plan)
    plan = run_plan.new(cfg)
    existed = plan.run_dir.is_dir()
    try:
        run_plan.start(plan)
        return _train(cfg, plan)
    except BaseException:  # an error or Ctrl-C before the first checkpoint: leave no dead end
        run_plan.discard_unstarted(plan.run_dir, existed)
        raise


def _train(cfg: TrainConfig, plan: run_plan.RunPlan) -> int:
    from trainer.loop import Interrupted, Trainer

    hp, run_dir, preset, resume_from = plan.hp, plan.run_dir, plan.preset, plan.resume_from
    _say_rounding(hp)
    bar = _progress_bar(cfg.progress, hp.frames)
    try:
        trainer = Trainer(
            hp,
            run_dir,
            resume_from=resume_from,
            preset=preset,
            on_progress=bar.step if bar else None,
            on_checkpoint=_print_checkpoint if cfg.log_checkpoints else None,
        )
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        if resume_from is None:
            raise
        # The checks above compare what they can; a checkpoint that still does not fit (its
        # tensors' shapes, its environments' state) is named rather than shown as a traceback.
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UsageError(f"{resume_from} does not fit {run_dir / CONFIG_FILE}: {reason}") from None
    if bar is not None:
        bar.start(trainer.state.frames)
    try:
        result = trainer.run(evaluate=True)
    except Interrupted as stop:
        if bar is not None:
            bar.close()
        print(
            f"swingup-train: interrupted: wrote {stop.checkpoint_path}; "
            f"continue with: swingup-train train --resume {run_dir}",
            file=sys.stderr,
        )
        return 128 + stop.signum  # the shell's code for a death by that signal: 130, 143
    if bar is not None:
        bar.close()
    final = result.evaluation
    assert final is not None  # run(evaluate=True)
    evaluation = {
        "episodes": final.episodes,
        "mean": final.eval_mean,
        "std": final.eval_std,
        "frame": final.frame,
    }
    atomic.write_text(run_dir / EVAL_FILE, json.dumps(evaluation, indent=2) + "\n")
    print(
        f"trained {result.frames} frames in {result.wall_s:.1f}s "
        f"({result.frames_per_s:.0f} frames/s); evaluation over {final.episodes} random starts: "
        f"{final.eval_mean:.1f} ± {final.eval_std:.1f}; "
        f"run directory {run_dir}"
    )
    if cfg.json:
        emit_json(
            {
                "run_dir": str(run_dir),
                "preset": preset,
                "frames": result.frames,
                "seed": hp.seed,
                "wall_s": result.wall_s,
                "frames_per_s": result.frames_per_s,
                "eval_mean": final.eval_mean,
                "eval_std": final.eval_std,
            }
        )
    return 0


def _say_rounding(hp: Hyperparams) -> None:
    """Updates take num_envs x n_steps frames each, so a run ends on a multiple of that."""
    per_update = hp.num_envs * hp.n_steps
    if hp.frames % per_update:
        rounded = -(-hp.frames // per_update) * per_update
        print(
            f"swingup-train: training {rounded} frames: --frames {hp.frames} rounded up to a "
            f"multiple of num-envs x n-steps ({per_update})",
            file=sys.stderr,
        )


def _print_checkpoint(path: Path) -> None:
    print(f"checkpoint {path}", file=sys.stderr, flush=True)


REDRAW_S = 0.1


class _Bar:
    """tqdm with frames/s and the recent training score; only tqdm knows about the terminal."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            unit="frame",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            disable=None,  # no bar when stderr is not a terminal (CI logs, pipes)
        )
        self._pending = 0
        self._drawn_at = time.monotonic()

    def start(self, done: int) -> None:
        self._bar.update(done)
        self._bar.reset(total=self._bar.total)
        self._bar.update(done)

    def step(self, frames: int, score: float) -> None:
        """Called after every update; redraws at most every REDRAW_S. (The seed preset updates
        ~2000 times a second: tqdm's bookkeeping per call would be a measurable share of that.)"""
        self._pending += frames
        now = time.monotonic()
        if now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        self._bar.update(self._pending)
        self._pending = 0
        if score == score:
            self._bar.set_postfix(score=f"{score:.1f}", refresh=False)

    def close(self) -> None:
        self._bar.update(self._pending)
        self._bar.close()


def _progress_bar(enabled: bool, total: int) -> _Bar | None:
    return _Bar(total) if enabled else None


# -- evaluate ----------------------------------------------------------------------------------


def evaluate(cfg: EvaluateConfig) -> int:
    if cfg.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {cfg.episodes}")
    if not 0 <= cfg.seed <= MAX_SEED - (cfg.episodes - 1):
        raise UsageError(
            f"--seed {cfg.seed}: episode seeds run from --seed to --seed + --episodes - 1, "
            f"which must lie in 0..{MAX_SEED}"
        )
    gif = Path(cfg.gif) if cfg.gif else None
    if gif is not None:
        check_can_write(gif, "--gif")  # before the episodes, not after them
    from swingup.episodes import run_episodes
    from trainer.policies import as_policy, load_mean_std

    try:
        mean_std = load_mean_std(Path(cfg.path))
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    report = run_episodes(
        as_policy(mean_std, cfg.sample, cfg.seed), cfg.episodes, seed=cfg.seed, gif=gif
    )
    mode = "sampled" if cfg.sample else "mean"
    print(
        f"{cfg.path}: {report.mean:.1f} ± {report.std:.1f} over {len(report.returns)} random-start "
        f"episodes ({mode} actions, seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1})"
        + (f"; GIF {gif}" if gif and report.gif_error is None else "")
    )
    if cfg.json:
        emit_json(
            {
                "episodes": len(report.returns),
                "mean": report.mean,
                "std": report.std,
                "returns": report.returns,
            }
        )
    if report.gif_error is not None:  # the figures above stand; the GIF alone is lost
        raise Failed(f"--gif {gif}: {report.gif_error}")
    return 0


# -- export ------------------------------------------------------------------------------------


def export(cfg: ExportConfig) -> int:
    source = Path(cfg.source)
    if source.is_file() and source.suffix != ".pt":
        raise UsageError(f"export takes a run directory or a .pt checkpoint, not {source}")
    out = Path(cfg.out) if cfg.out else None
    if out is not None and out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the .onnx file")
    if cfg.triton_repo is not None and out is not None:
        raise UsageError("--out and --triton-repo cannot be combined")
    if cfg.triton_repo is not None:
        _check_triton_target(Path(cfg.triton_repo), cfg.model_name)
    from trainer.export import default_output
    from trainer.export import export as export_model
    from trainer.onnx_graph import ExportError

    if cfg.triton_repo is None:
        check_can_write(out or default_output(source), "--out" if out else "the default output")

    try:
        if cfg.triton_repo is None:
            result = export_model(source, out)
        else:
            result = _export_to_triton(source, Path(cfg.triton_repo), cfg.model_name)
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except ExportError as exc:
        raise UsageError(f"export failed, nothing written: {exc}") from None
    except OSError as exc:  # the checks above passed, then the disk said no (full, removed)
        where = out or cfg.triton_repo or default_output(source)
        raise Failed(f"export failed, nothing written to {where}: {_why(exc)}") from None
    print(
        f"exported {result.path} (opset {result.opset}, "
        f"max |onnxruntime - torch| {result.max_abs_diff:.2e})"
    )
    if cfg.json:
        emit_json(
            {
                "path": str(result.path),
                "sha256": result.sha256,
                "max_abs_diff": result.max_abs_diff,
                "opset": result.opset,
            }
        )
    return 0


def _check_triton_target(repo: Path, name: str) -> None:
    # The name is a directory inside the repository: "." or ".." would write outside the model's.
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise UsageError(
            f"--model-name {name!r}: use letters, digits, '-', '_' and '.' (not '.' or '..')"
        )
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"--triton-repo {repo} is not a directory")
    check_can_write(repo / name / "config.pbtxt", "--triton-repo")


def _export_to_triton(source: Path, repo: Path, name: str) -> ExportResult:
    """Export and check beside the repository, then add the file as the model's next version."""
    from trainer.export import export as export_model
    from trainer.triton_repo import add_version

    with tempfile.TemporaryDirectory(prefix="swingup-export-") as tmp:
        checked = export_model(source, Path(tmp) / "model.onnx")
        path = add_version(repo, checked.path.read_bytes(), name)
    return dataclasses.replace(checked, path=path)


COMMANDS: dict[str, tuple[type, Handler, str]] = {
    "train": (
        TrainConfig,
        train,
        "train an A2C actor and critic on Pendulum-v1",
    ),
    "evaluate": (
        EvaluateConfig,
        evaluate,
        "mean and std of the return over random-start episodes",
    ),
    "export": (
        ExportConfig,
        export,
        "export a run's actor to a checked ONNX model",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run("swingup-train", __doc__ or "", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
