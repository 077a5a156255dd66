"""The actor the serving benchmark serves: the shipped model, or one of the same shape.

Speed depends on the graph's shape, not on its weights; when models/pendulum-a2c.onnx has not
been built (`make model`), a freshly initialised actor of the shipped preset's shape (`fast`:
one hidden layer of 128, softplus std, normalisation inside) is exported in its place.
"""

from __future__ import annotations

import json
from pathlib import Path

from swingup import contract

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / contract.SHIPPED_MODEL


def actor(work: Path) -> tuple[Path, str]:
    """A model file to serve and a phrase saying which it is."""
    if SHIPPED.is_file():
        return SHIPPED, f"the shipped model ({contract.SHIPPED_MODEL})"
    import torch

    from trainer.config import PRESETS
    from trainer.networks import Actor
    from trainer.onnx_graph import export_actor

    hp = PRESETS["fast"]
    torch.manual_seed(0)
    net = Actor(hidden=hp.hidden, layers=hp.layers, std_param=hp.std_param, min_std=hp.min_std)
    path = work / "actor.onnx"
    export_actor(net, path, _metadata("bench"))
    return path, (
        f"an untrained actor of the shipped shape (`fast`: {hp.layers} x {hp.hidden} hidden), "
        f"since {contract.SHIPPED_MODEL} is not built"
    )


def heavy(work: Path, hidden: int) -> Path:
    """An actor of two `hidden`-unit layers (1024: ~2 MFLOP an observation), whose model call,
    not gRPC, is what a server spends its time on, as on a real inference server: the shipped
    actor's call over 1024 observations is a tenth of what the call costs around it."""
    import torch

    from trainer.networks import Actor
    from trainer.onnx_graph import export_actor

    torch.manual_seed(0)
    path = work / f"heavy-{hidden}.onnx"
    export_actor(Actor(hidden=hidden, layers=2, std_param="softplus"), path, _metadata("heavy"))
    return path


def _metadata(preset: str) -> dict[str, str]:
    return {
        contract.META_FORMAT_VERSION: contract.FORMAT_VERSION,
        contract.META_ENV_ID: contract.ENV_ID,
        contract.META_OBS_SHAPE: json.dumps([contract.OBS_DIM]),
        contract.META_ACTION_SHAPE: json.dumps([contract.ACTION_DIM]),
        contract.META_ACTION_LOW: str(contract.ACTION_LOW),
        contract.META_ACTION_HIGH: str(contract.ACTION_HIGH),
        contract.META_PRESET: preset,
    }
