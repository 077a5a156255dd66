"""The trainer's configuration: the algorithm's hyperparameters, the two presets, the CLI configs.

`Hyperparams` is everything the algorithm reads. A preset is a complete `Hyperparams`; a CLI flag
that is given replaces the preset's value, so `--preset seed --gamma 0.99` is the notebook with one
change, and config.json records the resolved result.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from swingup import contract
from swingup.cli import option

Preset = Literal["seed", "fast"]
CriticLoss = Literal["smooth_l1", "mse"]
StdParam = Literal["exp_softplus", "softplus"]
LrSchedule = Literal["constant", "linear"]


@dataclass(frozen=True)
class Hyperparams:
    """Everything the A2C algorithm reads. The presets below are the two documented settings."""

    frames: int
    seed: int
    num_envs: int
    n_steps: int
    gamma: float
    gae_lambda: float
    actor_lr: float
    critic_lr: float
    lr_schedule: LrSchedule
    # The linear schedule: decay from 1 to lr_end_scale (times the lr) over lr_decay_frames frames
    # (0: over the whole run), then hold. The notebook's "linear" is lr_end_scale 0 over the run.
    lr_end_scale: float
    lr_decay_frames: int
    adam_eps: float
    # Learning-rate multiplier of the actor's std head (1: the actor's lr).
    std_lr_scale: float
    # Orthogonal init (gain sqrt(2)) of the hidden layers instead of PyTorch's default.
    ortho_init: bool
    critic_hidden: int  # 0: same as hidden
    critic_layers: int  # 0: same as layers
    entropy_weight: float
    # The notebook's "entropy" term, -log_prob of the sampled action (zero in expectation),
    # instead of the distribution's entropy.
    entropy_from_log_prob: bool
    # The notebook's done = terminated or truncated: the bootstrap is cut at the time limit.
    cut_bootstrap_at_truncation: bool
    # The notebook resets every episode with the same seed: one start state for the whole run.
    fixed_start: bool
    critic_loss: CriticLoss
    std_param: StdParam
    min_std: float
    init_std: float  # 0: the notebook's head init decides
    hidden: int
    layers: int
    max_grad_norm: float  # 0 disables clipping
    normalize_obs: bool
    normalize_advantage: bool
    reward_scale: float
    log_interval: int  # frames between rows of metrics.csv
    checkpoint_interval: int  # frames between checkpoints
    eval_interval: int  # frames between evaluations during training, 0 for none
    eval_episodes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Hyperparams:
        """Rebuild from `to_dict()`'s output (a config.json, a checkpoint); ValueError names the
        first key that is missing, unknown or of the wrong type."""
        names = {f.name for f in dataclasses.fields(Hyperparams)}
        unknown = set(data) - names
        missing = names - set(data)
        if unknown or missing:
            raise ValueError(f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        for name, tp in typing.get_type_hints(Hyperparams).items():
            if not _has_type(data[name], tp):
                raise ValueError(f"{name} is {data[name]!r}, expected {_type_name(tp)}")
        return Hyperparams(**data)

    def lr_scale(self, fraction_done: float) -> float:
        """The learning-rate multiplier once `fraction_done` of the run's frames are done."""
        if self.lr_schedule != "linear":
            return 1.0
        if self.lr_decay_frames > 0:
            fraction_done = fraction_done * self.frames / self.lr_decay_frames
        fraction_done = min(max(fraction_done, 0.0), 1.0)
        return 1.0 - (1.0 - self.lr_end_scale) * fraction_done


def _has_type(value: object, tp: Any) -> bool:
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    # JSON writes 1.0 as 1.0 but a hand-edited file may say 1.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


# Bounds beyond which a run cannot be meant: a pendulum's policy does not need a wider network,
# and the numbers past them fail inside torch or numpy with a traceback instead of a message.
MAX_FRAMES = 10**12
MAX_SEED = 2**32 - 1  # numpy's and gymnasium's seeds are 32-bit
MAX_WIDTH = 4096
MAX_LAYERS = 8
MAX_ENVS = 1024
MAX_STEPS = 10_000
MAX_EPISODES = 100_000

# (lowest, highest) of each integer hyperparameter.
INT_RANGES: dict[str, tuple[int, int]] = {
    "frames": (1, MAX_FRAMES),
    "seed": (0, MAX_SEED),
    "num_envs": (1, MAX_ENVS),
    "n_steps": (1, MAX_STEPS),
    "lr_decay_frames": (0, MAX_FRAMES),
    "critic_hidden": (0, MAX_WIDTH),
    "critic_layers": (0, MAX_LAYERS),
    "hidden": (1, MAX_WIDTH),
    "layers": (1, MAX_LAYERS),
    "log_interval": (0, MAX_FRAMES),
    "checkpoint_interval": (0, MAX_FRAMES),
    "eval_interval": (0, MAX_FRAMES),
    "eval_episodes": (1, MAX_EPISODES),
}
_POSITIVE = ("a positive number", lambda v: v > 0)
_NOT_NEGATIVE = ("a number >= 0", lambda v: v >= 0)
_FRACTION = ("a number in [0, 1]", lambda v: 0 <= v <= 1)
# What each float hyperparameter must be (every one must also be finite).
FLOAT_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "gamma": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "gae_lambda": _FRACTION,
    "actor_lr": _POSITIVE,
    "critic_lr": _POSITIVE,
    "lr_end_scale": _FRACTION,
    "adam_eps": _POSITIVE,
    "std_lr_scale": _NOT_NEGATIVE,
    "entropy_weight": _NOT_NEGATIVE,
    "min_std": _NOT_NEGATIVE,
    "init_std": _NOT_NEGATIVE,
    "max_grad_norm": _NOT_NEGATIVE,
    "reward_scale": _POSITIVE,
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def problems(hp: Hyperparams) -> list[str]:
    """Each value no run can use, as a message naming its flag and the value."""
    found = []
    for name, (low, high) in INT_RANGES.items():
        value = getattr(hp, name)
        if not low <= value <= high:
            what = f"positive and at most {high}" if low == 1 else f"an integer in {low}..{high}"
            found.append(f"{flag(name)} must be {what}, got {value}")
    for name, (what, ok) in FLOAT_RULES.items():
        value = getattr(hp, name)
        if not (math.isfinite(value) and ok(value)):
            found.append(f"{flag(name)} must be {what}, got {value}")
    if not found and (reason := init_std_problem(hp)):
        found.append(reason)
    return found


def init_std_problem(hp: Hyperparams) -> str:
    """The std head cannot start at init_std unless it lies above the head's floor."""
    if hp.init_std == 0:
        return ""  # the notebook's init
    if hp.std_param == "softplus" and hp.init_std <= hp.min_std:
        return (
            f"--init-std {hp.init_std} is not reachable with --std-param softplus: it must "
            f"exceed --min-std ({hp.min_std}), or be 0 for the notebook's init"
        )
    if hp.std_param == "exp_softplus" and hp.init_std <= 1:
        return (
            f"--init-std {hp.init_std} is not reachable with --std-param exp_softplus: "
            "exp(softplus(x)) exceeds 1, so it must too (or be 0 for the notebook's init)"
        )
    return ""


DEFAULT_PRESET = "fast"
PRESETS: dict[str, Hyperparams] = {
    # The notebook, exactly: one update per frame on a batch of one.
    "seed": Hyperparams(
        frames=100_000,
        seed=777,
        num_envs=1,
        n_steps=1,
        gamma=0.9,
        gae_lambda=1.0,
        actor_lr=1e-4,
        critic_lr=1e-3,
        lr_schedule="constant",
        lr_end_scale=0.0,
        lr_decay_frames=0,
        adam_eps=1e-8,
        std_lr_scale=1.0,
        ortho_init=False,
        critic_hidden=0,
        critic_layers=0,
        entropy_weight=1e-2,
        entropy_from_log_prob=True,
        cut_bootstrap_at_truncation=True,
        fixed_start=True,
        critic_loss="smooth_l1",
        std_param="exp_softplus",
        min_std=0.0,
        init_std=0.0,
        hidden=128,
        layers=1,
        max_grad_norm=0.0,
        normalize_obs=False,
        normalize_advantage=False,
        reward_scale=1.0,
        log_interval=200,
        checkpoint_interval=10_000,
        eval_interval=0,
        eval_episodes=100,
    ),
    # The same actor/critic family and A2C update, vectorised, corrected and tuned. The std floor
    # of 0.5 keeps exploring (a learned std collapses to ~0.002 and the policy stalls near -1400);
    # the lr decays to 5% over the first 3M frames whatever the budget, then holds.
    "fast": Hyperparams(
        frames=3_000_000,
        seed=1,
        num_envs=16,
        n_steps=8,
        gamma=0.95,
        gae_lambda=0.95,
        actor_lr=1e-3,
        critic_lr=2e-3,
        lr_schedule="linear",
        lr_end_scale=0.05,
        lr_decay_frames=3_000_000,
        adam_eps=1e-8,
        std_lr_scale=1.0,
        ortho_init=False,
        critic_hidden=0,
        critic_layers=0,
        entropy_weight=0.0,
        entropy_from_log_prob=False,
        cut_bootstrap_at_truncation=False,
        fixed_start=False,
        critic_loss="mse",
        std_param="softplus",
        min_std=0.5,
        init_std=0.7,
        hidden=128,
        layers=1,
        max_grad_norm=0.5,
        normalize_obs=True,
        normalize_advantage=True,
        reward_scale=0.1,
        log_interval=4096,
        checkpoint_interval=100_000,
        eval_interval=0,
        eval_episodes=100,
    ),
}


def hyper(name: str, help: str) -> Any:
    """A hyperparameter's flag: unset, it takes the preset's value, which --help states."""
    seed, fast = (getattr(PRESETS[p], name) for p in ("seed", "fast"))
    return option(None, help, shown=f"preset's: seed {seed}, fast {fast}")


@dataclass
class TrainConfig:
    """swingup-train train: every hyperparameter is a flag; unset flags take the preset's value."""

    # None when not given, so that --resume can refuse it (a resumed run keeps its preset).
    preset: Preset | None = option(
        None, "fast (default, vectorised, tuned) or seed (the notebook)", shown=DEFAULT_PRESET
    )
    out: str | None = option(
        None, "run directory (default runs/<preset>-<seed>-<time>)", path=True, shown=""
    )
    resume: str | None = option(
        None, "continue the run in this directory from its last checkpoint", path=True, shown=""
    )
    json: bool = option(False, "print one JSON summary object on the last line of stdout")
    progress: bool = option(True, "show a progress bar on stderr")
    log_checkpoints: bool = option(False, "print a line on stderr for every checkpoint written")
    frames: int | None = hyper(
        "frames",
        "environment frames to train for (all envs together), rounded up to a multiple of "
        "num-envs x n-steps",
    )
    seed: int | None = hyper("seed", "random seed of torch and the environments")
    num_envs: int | None = hyper("num_envs", "parallel environments (gymnasium.vector)")
    n_steps: int | None = hyper("n_steps", "steps per environment between updates")
    gamma: float | None = hyper("gamma", "discount factor")
    gae_lambda: float | None = hyper("gae_lambda", "GAE lambda (1.0: n-step returns)")
    actor_lr: float | None = hyper("actor_lr", "actor Adam learning rate")
    critic_lr: float | None = hyper("critic_lr", "critic Adam learning rate")
    lr_schedule: LrSchedule | None = hyper(
        "lr_schedule", "constant, or linear decay to lr-end-scale x the lr over lr-decay-frames"
    )
    lr_end_scale: float | None = hyper(
        "lr_end_scale", "linear schedule: final lr as a fraction of the lr"
    )
    lr_decay_frames: int | None = hyper(
        "lr_decay_frames", "linear schedule: frames to decay over (0: the run)"
    )
    adam_eps: float | None = hyper("adam_eps", "Adam epsilon of both optimisers")
    std_lr_scale: float | None = hyper("std_lr_scale", "lr multiplier of the actor's std head")
    ortho_init: bool | None = hyper(
        "ortho_init", "orthogonal init (gain sqrt 2) of the hidden layers"
    )
    critic_hidden: int | None = hyper(
        "critic_hidden", "critic hidden units per layer (0: same as hidden)"
    )
    critic_layers: int | None = hyper("critic_layers", "critic hidden layers (0: same as layers)")
    entropy_weight: float | None = hyper("entropy_weight", "weight of the entropy bonus")
    entropy_from_log_prob: bool | None = hyper(
        "entropy_from_log_prob", "notebook quirk: -log_prob as entropy"
    )
    cut_bootstrap_at_truncation: bool | None = hyper(
        "cut_bootstrap_at_truncation", "notebook quirk: no bootstrap at 200"
    )
    fixed_start: bool | None = hyper(
        "fixed_start", "notebook quirk: every episode from one start state"
    )
    critic_loss: CriticLoss | None = hyper("critic_loss", "critic loss")
    std_param: StdParam | None = hyper(
        "std_param", "std head: exp(softplus(x)) or softplus(x)+min_std"
    )
    min_std: float | None = hyper("min_std", "lower bound of the std with std-param softplus")
    init_std: float | None = hyper(
        "init_std",
        "initial policy std (0: the notebook's init); must exceed --min-std with std-param "
        "softplus, and 1 with exp_softplus",
    )
    hidden: int | None = hyper("hidden", "hidden units per layer")
    layers: int | None = hyper("layers", "hidden layers")
    max_grad_norm: float | None = hyper("max_grad_norm", "gradient clipping norm (0: off)")
    normalize_obs: bool | None = hyper(
        "normalize_obs", "running observation normalisation (in the actor)"
    )
    normalize_advantage: bool | None = hyper(
        "normalize_advantage", "normalise advantages per batch"
    )
    reward_scale: float | None = hyper("reward_scale", "multiply rewards by this in the update")
    log_interval: int | None = hyper(
        "log_interval", "frames between rows of metrics.csv (0: one row, at the end)"
    )
    checkpoint_interval: int | None = hyper(
        "checkpoint_interval", "frames between checkpoints (0: only at the end and at Ctrl-C)"
    )
    eval_interval: int | None = hyper(
        "eval_interval", "frames between evaluations during training (0: none)"
    )
    eval_episodes: int | None = hyper("eval_episodes", "random-start episodes per evaluation")

    def overrides(self) -> dict[str, Any]:
        """The hyperparameters given on the command line."""
        names = {f.name for f in dataclasses.fields(Hyperparams)}
        return {k: v for k, v in dataclasses.asdict(self).items() if k in names and v is not None}

    def resolve(self) -> Hyperparams:
        return dataclasses.replace(PRESETS[self.preset_name], **self.overrides())

    @property
    def preset_name(self) -> str:
        return self.preset or DEFAULT_PRESET


@dataclass
class EvaluateConfig:
    """swingup-train evaluate: mean and std of the return over random-start episodes."""

    path: str = option(
        help="a run directory, a checkpoint (.pt) or an exported model (.onnx)",
        positional=True,
        path=True,
    )
    episodes: int = option(100, "random-start episodes")
    seed: int = option(1_000_000, "seed of the first episode's start state (episode i: seed + i)")
    sample: bool = option(False, "sample actions from the policy instead of its mean")
    gif: str | None = option(None, "render the first episode to this GIF file", path=True)
    json: bool = option(False, "print one JSON object on the last line of stdout")


@dataclass
class ExportConfig:
    """swingup-train export: the actor of a run or checkpoint as a checked ONNX model."""

    source: str = option(help="a run directory or a checkpoint (.pt)", positional=True, path=True)
    out: str | None = option(
        None,
        "output .onnx file (default: <run>/actor.onnx for a run directory or a checkpoint in "
        "its checkpoints/; for any other .pt, its name with .onnx beside it)",
        path=True,
    )
    triton_repo: str | None = option(
        None, "add the model as the next version in this Triton repository", path=True
    )
    model_name: str = option(contract.MODEL_NAME, "the model's name in the Triton repository")
    json: bool = option(False, "print one JSON object on the last line of stdout")
