"""The run directory of `swingup-train train`: a new run or a resumed one planned and checked
before anything is written, created with its config.json, and removed again when the run stops
before its first checkpoint (nothing in it could be resumed, and it would block --out)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import swingup
from swingup import atomic
from swingup.cli import UsageError
from trainer import checkpoint
from trainer.config import Hyperparams, TrainConfig, problems

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What `train` will do: a new run (`record` is its config.json) or a resumed one."""

    hp: Hyperparams
    run_dir: Path
    preset: str
    resume_from: Path | None = None
    record: dict[str, Any] | None = None
    note: str | None = None  # what a resume changes that the user should hear of


# A run directory that holds only these, and no checkpoint, is a run that stopped before its
# first checkpoint (kill -9 while starting): nothing in it can be resumed, so --out may reuse it.
UNSTARTED_ENTRIES = {CONFIG_FILE, "tb"}


def new(cfg: TrainConfig) -> RunPlan:
    """Check everything before anything is written: a mistake leaves no directory behind."""
    hp = cfg.resolve()
    found = problems(hp)
    if found:
        raise UsageError(found[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out or f"runs/{cfg.preset_name}-{hp.seed}-{stamp}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file; name a new or empty directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not _unstarted(run_dir):
        raise UsageError(
            f"{run_dir} is not empty (it may hold another run); choose another --out or --resume it"
        )
    record = {
        "preset": cfg.preset_name,
        "hyperparams": hp.to_dict(),
        "swingup_version": swingup.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return RunPlan(hp, run_dir, cfg.preset_name, record=record)


def _unstarted(run_dir: Path) -> bool:
    """Whether `run_dir` holds our config.json (and TensorBoard events) but no checkpoint."""
    if not {p.name for p in run_dir.iterdir()} <= UNSTARTED_ENTRIES:
        return False
    try:
        return "hyperparams" in json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return False


def start(plan: RunPlan) -> None:
    """Create the run directory and its config.json; a path that cannot hold it is a usage
    error naming --out (not the temporary file the write failed on)."""
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(plan.run_dir / "tb", ignore_errors=True)  # an unstarted run's events
        atomic.write_text(plan.run_dir / CONFIG_FILE, json.dumps(plan.record, indent=2) + "\n")
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(f"--out {plan.run_dir}: cannot write a run there ({why})") from None


def discard_unstarted(run_dir: Path, existed: bool) -> None:
    """Remove what a new run wrote before its first checkpoint: without one it cannot be
    resumed, and left behind it would block --out. A directory given empty is kept empty."""
    if checkpoint.list_checkpoints(run_dir):
        return
    if not existed:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir() if run_dir.is_dir() else []:
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def resumed(cfg: TrainConfig) -> RunPlan:
    """Check the run can go on as asked; `record` is its config.json with the new --frames."""
    run_dir = Path(str(cfg.resume))
    if cfg.out is not None:
        raise UsageError(
            "--out and --resume cannot be combined: --resume continues the run in place"
        )
    extra = set(cfg.overrides()) - {"frames"} | ({"preset"} if cfg.preset is not None else set())
    if extra:
        raise UsageError(
            f"--resume keeps the run's settings; only --frames may change (got {sorted(extra)})"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--resume takes a run directory; {run_dir} is a file")
    record, hp = _read_config(run_dir)
    try:
        latest, state = checkpoint.load_latest(run_dir)
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    _check_agrees(run_dir / CONFIG_FILE, hp, latest, state)
    stopped = hp
    if cfg.frames is not None:
        hp = dataclasses.replace(hp, frames=cfg.frames)
        found = problems(hp)
        if found:
            raise UsageError(found[0])
    done = int(state["frames"])
    if done >= hp.frames:
        more = f"--frames {cfg.frames} adds none" if cfg.frames else f"it asked for {hp.frames}"
        raise UsageError(
            f"{run_dir} has already trained {done} frames ({more}); give --frames above {done} "
            "to train on, or evaluate or export it"
        )
    _check_logs(run_dir)
    record = {**record, "hyperparams": hp.to_dict()}
    note = _schedule_note(stopped, hp, done)
    return RunPlan(hp, run_dir, str(record.get("preset", "custom")), latest, record, note)


def _schedule_note(stopped: Hyperparams, resumed: Hyperparams, done: int) -> str | None:
    """A decay over "the whole run" (--lr-decay-frames 0) stretches with a new --frames, so the
    rate rises again where the run stopped. That is what the setting says, as SB3's schedules on
    a longer learn() do; pinning the old span instead would hold a decay-to-zero run at zero."""
    before = stopped.lr_scale(done / stopped.frames)
    after = resumed.lr_scale(done / resumed.frames)
    if abs(after - before) < 1e-6:
        return None
    return (
        f"the learning rate decays over the whole run (--lr-decay-frames 0), so --frames "
        f"{resumed.frames} stretches the decay: it goes on at {after:.3g}x the base rate, where "
        f"the run stopped at {before:.3g}x; a fixed --lr-decay-frames keeps a schedule across "
        "resumes"
    )


def _read_config(run_dir: Path) -> tuple[dict[str, Any], Hyperparams]:
    path = run_dir / CONFIG_FILE
    try:
        record = json.loads(path.read_text())
        hp = Hyperparams.from_dict(record["hyperparams"])
    except FileNotFoundError:
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is damaged or foreign: {exc}") from None
    found = problems(hp)
    if found:
        raise UsageError(f"{path} is damaged: {found[0]}")
    return record, hp


def _check_agrees(config: Path, hp: Hyperparams, latest: Path, state: dict[str, Any]) -> None:
    """The checkpoint must be of the run config.json describes (all but the frame budget)."""
    saved = state.get("hyperparams")
    if not isinstance(saved, dict):
        raise UsageError(f"{latest} records no hyperparameters")
    for name, value in hp.to_dict().items():
        if name != "frames" and saved.get(name) != value:
            raise UsageError(
                f"{config} and {latest} disagree on {name} ({value!r} against "
                f"{saved.get(name)!r}): restore the run's config.json"
            )


def _check_logs(run_dir: Path) -> None:
    from trainer.run_log import RunLogError, read_evals, read_metrics

    try:
        read_metrics(run_dir)
        read_evals(run_dir)
    except RunLogError as exc:
        raise UsageError(f"{exc}; fix or remove it to resume") from None
