"""Checkpoints: everything a run needs to continue bit for bit, in a file torch loads with
`weights_only=True` (tensors and plain Python values only, never pickled objects).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from swingup import atomic

FORMAT = "swingup-a2c-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(Exception):
    """A checkpoint is missing, truncated or not one of ours."""


def checkpoint_path(run_dir: Path, frames: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"frame-{frames:010d}.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a crash leaves the previous checkpoints intact."""
    import torch  # here, not at the top: the CLI's --help and usage errors stay fast

    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    atomic.write_with(path, lambda tmp: torch.save(payload, tmp))


def load(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Swingup A2C checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CHECKPOINT_DIR).glob("frame-*.pt"))


def latest(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir} holds no checkpoint")
    return found[-1]


def prune(run_dir: Path, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def resolve(path: Path) -> Path:
    """A run directory means its latest checkpoint; a file means itself."""
    if path.is_dir():
        return latest(path)
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {path}")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
