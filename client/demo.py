"""`make demo`: serve the shipped model on a free port, drive pendulums through it, stop it.

Four pendulums run three episodes each through one Act call per step; pendulum 0's first
episode becomes demo-out/pendulum.gif. Until models/pendulum-a2c.onnx is shipped, the demo
serves an untrained stand-in actor exported on the spot, and says so.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from client.drive import drive, summary
from client.localserver import LocalServer
from client.policy_client import PolicyClient
from swingup import contract
from swingup.cli import UsageError, at_least_one, option, run

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DemoConfig:
    model: Path | None = option(None, f"model to serve (none: {contract.SHIPPED_MODEL})")
    out: Path = option(Path("demo-out"), "directory for the GIF (and a stand-in model)")
    pendulums: int = option(4, "pendulums stepped in lockstep")
    episodes: int = option(3, "episodes per pendulum")


def stand_in_model(path: Path) -> Path:
    """An untrained actor exported to `path`: lets the demo run before a model is shipped.

    The only place outside the trainer that touches torch, and only when no model exists.
    """
    import torch

    from trainer.networks import Actor
    from trainer.onnx_graph import export_actor

    torch.manual_seed(0)
    metadata = {
        contract.META_FORMAT_VERSION: contract.FORMAT_VERSION,
        contract.META_OBS_SHAPE: f"[{contract.OBS_DIM}]",
        contract.META_ACTION_SHAPE: f"[{contract.ACTION_DIM}]",
        contract.META_ACTION_LOW: str(contract.ACTION_LOW),
        contract.META_ACTION_HIGH: str(contract.ACTION_HIGH),
        contract.META_PRESET: "untrained-stand-in",
    }
    export_actor(Actor(), path, metadata)
    return path


def demo(config: DemoConfig) -> int:
    at_least_one(("--pendulums", config.pendulums), ("--episodes", config.episodes))
    try:  # before serving and driving, not after
        config.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {config.out}: {exc.strerror}") from None
    model = config.model or REPO_ROOT / contract.SHIPPED_MODEL
    if not model.is_file():
        if config.model is not None:
            raise UsageError(f"model file not found: {model}")
        stand_in = config.out / "stand-in.onnx"
        print(
            f"demo: {contract.SHIPPED_MODEL} is not shipped yet; serving an UNTRAINED stand-in "
            f"actor exported to {stand_in} (expect returns near a random policy's)",
            flush=True,
        )
        model = stand_in_model(stand_in)
    gif = config.out / "pendulum.gif"
    with LocalServer(["--model", str(model)], echo=True) as server:
        try:
            target = server.wait_listening()
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        with PolicyClient(target) as client:
            info = client.info()
            print(
                f"demo: serving {model} (version {info.model_version}) on {target} with "
                f"{info.execution_provider}",
                flush=True,
            )
            report = drive(client, config.pendulums, config.episodes, gif=gif)
        code = server.stop()
    figures = summary(report)
    for i, value in enumerate(report.returns):
        print(f"episode {i + 1} (pendulum {i % config.pendulums}): return {value:.1f}")
    print(
        f"mean return {figures['mean']:.1f} ± {figures['std']:.1f} over {figures['episodes']} "
        f"episodes; Act latency p50 {figures['latency_p50_ms']:.3f} ms, "
        f"p99 {figures['latency_p99_ms']:.3f} ms ({config.pendulums} pendulums per call)"
    )
    print(f"GIF of pendulum 0's first episode: {gif}")
    if code != 0:
        print(f"demo: the server exited with {code}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run("client.demo", __doc__ or "", {"": (DemoConfig, demo, "")}, argv, "SWINGUP_DEMO_")


if __name__ == "__main__":
    raise SystemExit(main())
