"""What a run writes as it goes: metrics.csv, evals.csv, training.png and TensorBoard events.

metrics.csv holds only what the seed determines (no clocks), so two runs of the same seed produce
identical files; wall-clock figures go to evals.csv and the progress bar.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from swingup import atomic

METRICS_FILE = "metrics.csv"
EVALS_FILE = "evals.csv"
PLOT_FILE = "training.png"


@dataclass
class MetricsRow:
    """One row per log interval: losses are averaged over the updates since the previous row."""

    frame: int
    episodes: int
    score: float  # mean return of the last 10 training episodes (the notebook's score)
    actor_loss: float
    critic_loss: float
    entropy: float
    std: float
    lr_scale: float


@dataclass
class EvalRow:
    frame: int
    train_wall_s: float
    eval_mean: float
    eval_std: float
    episodes: int


def _columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _rows_text(cls: type, rows: list[Any]) -> str:
    lines = [",".join(_columns(cls))]
    for row in rows:
        lines.append(",".join(repr(getattr(row, name)) for name in _columns(cls)))
    return "\n".join(lines) + "\n"


def read_metrics(run_dir: Path) -> list[MetricsRow]:
    return _read(run_dir / METRICS_FILE, MetricsRow)


def read_evals(run_dir: Path) -> list[EvalRow]:
    return _read(run_dir / EVALS_FILE, EvalRow)


class RunLogError(ValueError):
    """A metrics.csv or evals.csv that is not what this module wrote."""


def _read(path: Path, cls: type) -> list[Any]:
    if not path.exists():
        return []
    types = {f.name: f.type for f in fields(cls)}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != _columns(cls):
                raise ValueError(f"columns {reader.fieldnames}, expected {_columns(cls)}")
            return [
                cls(**{k: (int(v) if types[k] in ("int", int) else float(v)) for k, v in r.items()})
                for r in reader
            ]
    except (OSError, ValueError, TypeError, csv.Error) as exc:
        raise RunLogError(f"{path} is damaged ({exc})") from None


class RunLog:
    """Accumulates rows in memory and rewrites the files atomically at each flush."""

    def __init__(self, run_dir: Path, metrics: list[MetricsRow], evals: list[EvalRow]) -> None:
        self.run_dir = run_dir
        self.metrics = metrics
        self.evals = evals
        self._tb = _tensorboard(run_dir)

    def add_metrics(self, row: MetricsRow) -> None:
        self.metrics.append(row)
        if self._tb is not None:
            for name in ("score", "actor_loss", "critic_loss", "entropy", "std"):
                value = getattr(row, name)
                if not math.isnan(value):
                    group = "charts" if name in ("score", "std", "entropy") else "losses"
                    self._tb.add_scalar(f"{group}/{name}", value, row.frame)

    def add_eval(self, row: EvalRow) -> None:
        self.evals.append(row)
        if self._tb is not None:
            self._tb.add_scalar("eval/mean_return", row.eval_mean, row.frame)

    def flush(self, plot: bool = True) -> None:
        atomic.write_text(self.run_dir / METRICS_FILE, _rows_text(MetricsRow, self.metrics))
        if self.evals:
            atomic.write_text(self.run_dir / EVALS_FILE, _rows_text(EvalRow, self.evals))
        if plot and self.metrics:
            from trainer.plots import plot_training

            plot_training(self.run_dir / PLOT_FILE, self.metrics, self.evals)
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))
