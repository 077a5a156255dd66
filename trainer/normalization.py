"""Running mean and variance of observations (Chan et al.'s parallel update, as in SB3)."""

from __future__ import annotations

import torch


class RunningMeanStd:
    """Mean and variance over every batch seen so far, in float64 for stable accumulation."""

    def __init__(self, dim: int, epsilon: float = 1e-4) -> None:
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.var = torch.ones(dim, dtype=torch.float64)
        self.count = epsilon

    def update(self, batch: torch.Tensor) -> None:
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        n = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    def std(self, floor: float = 1e-6) -> torch.Tensor:
        return torch.sqrt(self.var).clamp_min(floor)

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        mean, var, count = state["mean"], state["var"], state["count"]
        assert isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)
        self.mean, self.var, self.count = mean.clone(), var.clone(), float(count)
