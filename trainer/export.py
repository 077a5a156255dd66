"""`swingup-train export`: a run's actor as a self-describing, verified ONNX model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import swingup
from swingup import contract
from swingup.episodes import EVAL_SEED, run_episodes
from trainer import checkpoint
from trainer.onnx_graph import ExportResult, export_actor
from trainer.policies import actor_from_state, as_policy, torch_mean_std

EVAL_EPISODES = 100


def default_output(source: Path) -> Path:
    """Where export writes without --out: a run's actor.onnx for a run directory or a checkpoint
    in its checkpoints/; beside any other .pt, under its name (loose.pt: loose.onnx)."""
    run_dir = checkpoint.run_dir_of(source)
    return run_dir / "actor.onnx" if run_dir is not None else source.with_suffix(".onnx")


def model_metadata(
    state: dict[str, Any], checkpoint_sha256: str, eval_mean: float, eval_std: float
) -> dict[str, str]:
    """Everything a server that never saw the trainer needs to know, as ONNX metadata_props."""

    def floats(values: tuple[float, ...]) -> str:
        return json.dumps(list(values))

    return {
        contract.META_FORMAT_VERSION: contract.FORMAT_VERSION,
        contract.META_ENV_ID: contract.ENV_ID,
        contract.META_OBS_SHAPE: json.dumps([contract.OBS_DIM]),
        contract.META_OBS_LOW: floats(contract.OBS_LOW),
        contract.META_OBS_HIGH: floats(contract.OBS_HIGH),
        contract.META_ACTION_SHAPE: json.dumps([contract.ACTION_DIM]),
        contract.META_ACTION_LOW: str(contract.ACTION_LOW),
        contract.META_ACTION_HIGH: str(contract.ACTION_HIGH),
        contract.META_PRESET: str(state.get("preset", "unknown")),
        contract.META_HYPERPARAMETERS: json.dumps(state["hyperparams"], sort_keys=True),
        contract.META_FRAMES: str(int(state["frames"])),
        contract.META_EVAL_MEAN: f"{eval_mean:.4f}",
        contract.META_EVAL_STD: f"{eval_std:.4f}",
        contract.META_EVAL_EPISODES: str(EVAL_EPISODES),
        contract.META_CHECKPOINT_SHA256: checkpoint_sha256,
        contract.META_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        contract.META_VERSION: swingup.__version__,
    }


def export(source: Path, out: Path | None = None) -> ExportResult:
    """Load the checkpoint `source` names, evaluate it, export it, check it, then write `out`.

    Raises CheckpointError for a bad source and ExportError for a failed check; in both cases an
    existing `out` is left as it was.
    """
    ckpt_path, state = checkpoint.load_source(source)
    actor = actor_from_state(state)
    report = run_episodes(as_policy(torch_mean_std(actor), False, 0), EVAL_EPISODES, seed=EVAL_SEED)
    metadata = model_metadata(state, checkpoint.sha256(ckpt_path), report.mean, report.std)
    return export_actor(actor, out or default_output(source), metadata)
