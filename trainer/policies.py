"""Policies to evaluate: a checkpoint's actor or an exported ONNX model, as batched functions.

Both expose the same two modes as the server: the mean action, or clip(mean + std * eps) with eps
from a seeded numpy generator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swingup import contract
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
    reason = contract_problem(session)
    if reason:
        raise checkpoint.CheckpointError(f"{path} does not follow the model contract: {reason}")

    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = session.run(None, {contract.INPUT_NAME: np.ascontiguousarray(obs, np.float32)})
        return np.asarray(mean), np.asarray(std)

    return run


def contract_problem(session: Any) -> str:
    """What the server would refuse in this model (server/runtime.py's graph and metadata
    checks; the trainer does not import the server), or "" if nothing."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != ([contract.INPUT_NAME], [contract.MEAN_NAME, contract.STD_NAME]):
        return (
            f"it takes {names[0]} and returns {names[1]}, not "
            f"{contract.INPUT_NAME} -> {contract.MEAN_NAME}, {contract.STD_NAME}"
        )
    if inputs[0].type != "tensor(float)" or list(inputs[0].shape[1:]) != [contract.OBS_DIM]:
        return f"its input is {inputs[0].type} {inputs[0].shape}, not float [batch, 3]"
    if [o.type for o in outputs] != ["tensor(float)"] * 2:
        return f"its outputs are {', '.join(o.type for o in outputs)}, not float"
    return _metadata_problem(session.get_modelmeta().custom_metadata_map)


def _metadata_problem(metadata: dict[str, str]) -> str:
    missing = [key for key in contract.REQUIRED_META if key not in metadata]
    if missing:
        return f"its metadata lacks {', '.join(missing)} (not a Swingup export)"
    version = metadata[contract.META_FORMAT_VERSION]
    if version != contract.FORMAT_VERSION:
        return f"format version {version!r}, not {contract.FORMAT_VERSION!r}"
    expected = {
        contract.META_OBS_SHAPE: [float(contract.OBS_DIM)],
        contract.META_ACTION_SHAPE: [float(contract.ACTION_DIM)],
        contract.META_ACTION_LOW: [contract.ACTION_LOW],
        contract.META_ACTION_HIGH: [contract.ACTION_HIGH],
    }
    for key, want in expected.items():
        if _numbers(metadata[key]) != want:
            return f"metadata {key}={metadata[key]!r}, the contract has {want}"
    return ""


def _numbers(text: str) -> list[float] | None:
    """A metadata value as numbers, as the server reads it: JSON ("[3]", "2.0") or separated
    ("3", "-1, -1, -8"); None if it is not numbers."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            return [float(t) for t in re.split(r"[\s,]+", text.strip(" ()[]")) if t]
        except ValueError:
            return None
    if isinstance(value, list):
        return [float(v) for v in value] if all(_is_number(v) for v in value) else None
    return [float(value)] if _is_number(value) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
