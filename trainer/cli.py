"""`swingup-train` (also `python -m trainer`): train, evaluate and export."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import swingup
from swingup import atomic
from swingup.cli import EXIT_INTERRUPTED, Handler, UsageError, run
from swingup.episodes import run_episodes
from trainer import checkpoint
from trainer.config import EvaluateConfig, ExportConfig, Hyperparams, TrainConfig
from trainer.onnx_graph import ExportError, ExportResult

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"


def emit_json(payload: dict[str, Any]) -> None:
    """The machine-readable result: exactly one JSON object on the last line of stdout."""
    print(json.dumps(payload, separators=(",", ":")))


# -- train -------------------------------------------------------------------------------------


def problems(hp: Hyperparams) -> list[str]:
    """Hyperparameter values no run can use."""
    found = []
    for name in ("frames", "num_envs", "n_steps", "hidden", "layers", "eval_episodes"):
        if getattr(hp, name) <= 0:
            found.append(f"--{name.replace('_', '-')} must be positive, got {getattr(hp, name)}")
    for name in ("actor_lr", "critic_lr", "reward_scale"):
        value = getattr(hp, name)
        if not (math.isfinite(value) and value > 0):
            found.append(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if not 0.0 < hp.gamma <= 1.0:
        found.append(f"--gamma must be in (0, 1], got {hp.gamma}")
    if not 0.0 <= hp.gae_lambda <= 1.0:
        found.append(f"--gae-lambda must be in [0, 1], got {hp.gae_lambda}")
    for name in (
        "log_interval",
        "checkpoint_interval",
        "eval_interval",
        "max_grad_norm",
        "min_std",
        "init_std",
    ):
        if getattr(hp, name) < 0:
            found.append(f"--{name.replace('_', '-')} must not be negative")
    return found


def _new_run(cfg: TrainConfig) -> tuple[Hyperparams, Path, str]:
    hp = cfg.resolve()
    found = problems(hp)
    if found:
        raise UsageError(found[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out or f"runs/{cfg.preset}-{hp.seed}-{stamp}")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(
            f"{run_dir} is not empty (it may hold another run); choose another --out or --resume it"
        )
    record = {
        "preset": cfg.preset,
        "hyperparams": hp.to_dict(),
        "swingup_version": swingup.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_text(run_dir / CONFIG_FILE, json.dumps(record, indent=2) + "\n")
    return hp, run_dir, cfg.preset


def _resumed_run(cfg: TrainConfig) -> tuple[Hyperparams, Path, str, Path]:
    run_dir = Path(str(cfg.resume))
    if cfg.out is not None:
        raise UsageError(
            "--out and --resume cannot be combined: --resume continues the run in place"
        )
    extra = set(cfg.overrides()) - {"frames"}
    if extra:
        raise UsageError(
            f"--resume keeps the run's settings; only --frames may change (got {sorted(extra)})"
        )
    try:
        record = json.loads((run_dir / CONFIG_FILE).read_text())
        hp = Hyperparams.from_dict(record["hyperparams"])
    except FileNotFoundError:
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG_FILE})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{run_dir / CONFIG_FILE} is damaged or foreign: {exc}") from None
    if cfg.frames is not None:
        hp = dataclasses.replace(hp, frames=cfg.frames)
        if cfg.frames <= 0:
            raise UsageError(f"--frames must be positive, got {cfg.frames}")
    try:
        latest = checkpoint.latest(run_dir)
        checkpoint.load(latest)
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    return hp, run_dir, str(record.get("preset", "custom")), latest


def train(cfg: TrainConfig) -> int:
    from trainer.loop import Interrupted, Trainer

    if cfg.resume is not None:
        hp, run_dir, preset, resume_from = _resumed_run(cfg)
    else:
        hp, run_dir, preset = _new_run(cfg)
        resume_from = None
    bar = _progress_bar(cfg.progress, hp.frames)
    trainer = Trainer(
        hp,
        run_dir,
        resume_from=resume_from,
        preset=preset,
        on_progress=bar.step if bar else None,
        on_checkpoint=_print_checkpoint if cfg.log_checkpoints else None,
    )
    if bar is not None:
        bar.start(trainer.state.frames)
    try:
        result = trainer.run()
    except Interrupted as stop:
        if bar is not None:
            bar.close()
        print(
            f"interrupted: wrote {stop.checkpoint_path}; "
            f"continue with: swingup-train train --resume {run_dir}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if bar is not None:
        bar.close()
    final = trainer.evaluate_now()
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
    from trainer.policies import as_policy, load_mean_std

    if cfg.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {cfg.episodes}")
    try:
        mean_std = load_mean_std(Path(cfg.path))
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    gif = Path(cfg.gif) if cfg.gif else None
    report = run_episodes(
        as_policy(mean_std, cfg.sample, cfg.seed), cfg.episodes, seed=cfg.seed, gif=gif
    )
    mode = "sampled" if cfg.sample else "mean"
    print(
        f"{cfg.path}: {report.mean:.1f} ± {report.std:.1f} over {len(report.returns)} random-start "
        f"episodes ({mode} actions, seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1})"
        + (f"; GIF {gif}" if gif else "")
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
    return 0


# -- export ------------------------------------------------------------------------------------


def export(cfg: ExportConfig) -> int:
    from trainer.export import export as export_model

    out = Path(cfg.out) if cfg.out else None
    if out is not None and out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the .onnx file")
    if cfg.triton_repo is not None and out is not None:
        raise UsageError("--out and --triton-repo cannot be combined")
    if cfg.triton_repo is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.model_name):
        raise UsageError(f"--model-name {cfg.model_name!r}: use letters, digits, '-', '_' and '.'")
    try:
        if cfg.triton_repo is None:
            result = export_model(Path(cfg.source), out)
        else:
            result = _export_to_triton(Path(cfg.source), Path(cfg.triton_repo), cfg.model_name)
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except ExportError as exc:
        raise UsageError(f"export failed, nothing written: {exc}") from None
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


def _export_to_triton(source: Path, repo: Path, name: str) -> ExportResult:
    """Export and check beside the repository, then add the file as the model's next version."""
    import tempfile

    from trainer.export import export as export_model
    from trainer.triton_repo import add_version

    with tempfile.TemporaryDirectory(prefix="swingup-export-") as tmp:
        checked = export_model(source, Path(tmp) / "model.onnx")
        path = add_version(repo, checked.path.read_bytes(), name)
    return dataclasses.replace(checked, path=path)


COMMANDS: dict[str, tuple[type, Handler, str]] = {
    "train": (TrainConfig, train, "train an A2C actor and critic on Pendulum-v1"),
    "evaluate": (EvaluateConfig, evaluate, "mean and std of the return over random-start episodes"),
    "export": (ExportConfig, export, "export a run's actor to a checked ONNX model"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run("swingup-train", __doc__ or "", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
