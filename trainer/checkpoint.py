"""Checkpoints: everything a run needs to continue bit for bit, in a file torch loads with
`weights_only=True` (tensors and plain Python values only, never pickled objects).
"""

from __future__ import annotations

import hashlib
import sys
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


# torch.save writes a zip archive; anything else (an .onnx, a CSV) is not a checkpoint at all,
# and torch's own message for it ("Weights only load failed ... PyTorch 2.6") misleads.
ZIP_MAGIC = b"PK\x03\x04"


def load(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        what = "an empty file" if not head else "not a file torch.save wrote"
        raise CheckpointError(f"{path} is not a checkpoint ({what})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path} is damaged or cut short ({_reason(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Swingup A2C checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return state


def _reason(exc: Exception, limit: int = 200) -> str:
    """The first line of torch's message, whole sentences only: long ones end at a sentence."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if "Weights only load failed" in text:
        return "it holds objects other than tensors and plain values: not a Swingup checkpoint"
    if len(text) <= limit:
        return text
    cut = max(text.rfind(". ", 0, limit), text.rfind(": ", 0, limit))
    return text[:cut] if cut > 0 else text.split(". ")[0]


def load_latest(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of `run_dir` that loads. A damaged newer one (a full disk, a copy
    cut short) is skipped with a warning naming it; if none loads, the error names them all."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir} holds no checkpoint")
    failures: list[str] = []
    for path in reversed(found):
        try:
            state = load(path)
        except CheckpointError as exc:
            failures.append(str(exc))
            continue
        if failures:
            _warn(f"{'; '.join(failures)}; using the older {path.name}")
        return path, state
    raise CheckpointError("no checkpoint loads: " + "; ".join(failures))


def _warn(message: str) -> None:
    print(f"swingup-train: warning: {message}", file=sys.stderr)


def load_source(path: Path) -> tuple[Path, dict[str, Any]]:
    """A run directory means its newest loadable checkpoint; a file means itself."""
    if path.is_dir():
        return load_latest(path)
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {path}")
    return path, load(path)


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


def run_dir_of(path: Path) -> Path | None:
    """The run directory `path` is, or whose checkpoints/ holds it; None for a loose file."""
    if path.is_dir():
        return path
    run_dir = path.parent.parent
    if path.parent.name == CHECKPOINT_DIR and (run_dir / "config.json").is_file():
        return run_dir
    return None


def resolve(path: Path) -> Path:
    """A run directory means its latest checkpoint; a file means itself."""
    if path.is_dir():
        return latest(path)
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {path}")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
