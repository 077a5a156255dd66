"""`make model`: retrain and export the shipped default policy, models/pendulum-a2c.onnx.

Runs the exact command recorded in models/README.md, exports the result, evaluates it on 100
random-start episodes and rewrites models/README.md with the table, the plot and the command.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from swingup import atomic, contract
from swingup.episodes import EVAL_SEED, run_episodes
from trainer.cli import main as cli
from trainer.policies import as_policy, onnx_mean_std

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / contract.SHIPPED_MODEL
# The shipped model: the default preset with a longer budget than its default.
TRAIN_ARGS = ["--preset", "fast", "--seed", "1", "--frames", "3000000"]


def train_and_export(work: Path) -> Path:
    run_dir = work / "run"
    if cli(["train", *TRAIN_ARGS, "--out", str(run_dir)]) != 0:
        raise SystemExit("training failed")
    exported = work / "pendulum-a2c.onnx"
    if cli(["export", str(run_dir), "--out", str(exported)]) != 0:
        raise SystemExit("export failed")
    return run_dir


def readme(run_dir: Path, returns: list[float], sampled: list[float]) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    command = (
        "swingup-train train " + " ".join(TRAIN_ARGS) + " --out RUN && swingup-train export RUN"
    )
    hp = config["hyperparams"]
    pct = np.percentile(returns, [5, 50, 95])
    return "\n".join(
        [
            "# The shipped default policy",
            "",
            "`pendulum-a2c.onnx` is the actor the server and `make demo` use by default: input",
            "`obs` float32 [batch, 3], outputs `action_mean` and `action_std` float32 [batch, 1],",
            "with the observation normalisation folded into the first layer's weights and the",
            "model's description in `metadata_props`.",
            "",
            "## Evaluation",
            "",
            f"100 random-start episodes of Pendulum-v1 (start seeds {EVAL_SEED}..{EVAL_SEED + 99},",
            "never used in training):",
            "",
            "| actions | mean return | std | 5th pct | median | 95th pct | worst |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| mean (test mode) | {np.mean(returns):.1f} | {np.std(returns):.1f} | {pct[0]:.1f} | "
            f"{pct[1]:.1f} | {pct[2]:.1f} | {min(returns):.1f} |",
            f"| sampled | {np.mean(sampled):.1f} | {np.std(sampled):.1f} | "
            f"{np.percentile(sampled, 5):.1f} | {np.median(sampled):.1f} | "
            f"{np.percentile(sampled, 95):.1f} | {min(sampled):.1f} |",
            "",
            "For scale: a policy of zero torque scores about -1200, SAC about -150; the optimum is",
            "near -140 on average because some start states need a long swing.",
            "",
            "## Training",
            "",
            f"Preset `{config['preset']}`, seed {hp['seed']}, {hp['frames']:,} frames",
            f"({hp['num_envs']} environments x {hp['n_steps']} steps per update).",
            "",
            "![training](training.png)",
            "",
            "## Reproduce",
            "",
            "```sh",
            "make model",
            f"# which runs: {command}",
            "```",
            "",
            "Same seed and machine give the same weights bit for bit; another CPU may differ in",
            "the last bits of float arithmetic and so in the trajectory.",
            "",
        ]
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="swingup-model-") as tmp:
        work = Path(tmp)
        run_dir = train_and_export(work)
        exported = work / "pendulum-a2c.onnx"
        mean_std = onnx_mean_std(exported)
        returns = run_episodes(as_policy(mean_std, False, 0), 100, seed=EVAL_SEED).returns
        sampled = run_episodes(as_policy(mean_std, True, 0), 100, seed=EVAL_SEED).returns
        MODEL.parent.mkdir(exist_ok=True)
        atomic.write_bytes(MODEL, exported.read_bytes())
        shutil.copyfile(run_dir / "training.png", MODEL.parent / "training.png")
        atomic.write_text(MODEL.parent / "README.md", readme(run_dir, returns, sampled))
    print(f"wrote {MODEL}: mean return {np.mean(returns):.1f} over 100 random starts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
