"""Policies to evaluate: a checkpoint's actor or an exported ONNX model, as batched functions.

Both expose the same two modes as the server: the mean action, or clip(mean + std * eps) with eps
from a seeded numpy generator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swingup import contract, model_contract
from trainer import checkpoint
from trainer.config import Hyperparams
from trainer.networks import Actor, build_actor

MeanStd = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Policy = Callable[[np.ndarray], np.ndarray]


def actor_from_state(state: dict[str, Any]) -> Actor:
    """Rebuild the actor a checkpoint was trained with and load its weights."""
    try:
        hp = Hyperparams.from_dict(dict(state["hyperparams"]))
        actor = build_actor(hp)
        actor.load_state_dict(state["actor"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint does not hold a compatible actor: {exc}"
        ) from None
    return actor.eval()


def torch_mean_std(actor: Actor) -> MeanStd:
    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            mean, std = actor(torch.as_tensor(obs, dtype=torch.float32))
        return mean.numpy(), std.numpy()

    return run


def onnx_mean_std(path: Path) -> MeanStd:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reason = model_contract.problem(session)
    if reason:
        raise checkpoint.CheckpointError(f"{path} does not follow the model contract: {reason}")

    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = session.run(None, {contract.INPUT_NAME: np.ascontiguousarray(obs, np.float32)})
        return np.asarray(mean), np.asarray(std)

    return run


def as_policy(mean_std: MeanStd, sample: bool, seed: int) -> Policy:
    """Mean actions, or seeded samples clipped to the action bounds."""
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        mean, std = mean_std(obs)
        if not sample:
            return mean
        noise = rng.standard_normal(mean.shape).astype(np.float32)
        return np.clip(mean + std * noise, contract.ACTION_LOW, contract.ACTION_HIGH)

    return policy


def load_mean_std(path: Path) -> MeanStd:
    """A run directory, a checkpoint or an .onnx file, as a function obs -> (mean, std)."""
    if path.suffix == ".onnx":
        if not path.is_file():
            raise checkpoint.CheckpointError(f"no such model: {path}")
        try:
            return onnx_mean_std(path)
        except checkpoint.CheckpointError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise checkpoint.CheckpointError(
                f"{path} is not a loadable ONNX model ({exc})"
            ) from None
    _, state = checkpoint.load_source(path)
    return torch_mean_std(actor_from_state(state))
