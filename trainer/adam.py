"""Adam with a learning rate per parameter group, stepped through torch's fused kernel directly.

`torch.optim.Adam(fused=True).step()` spends most of its time, on the seed preset's 1.3k
parameters, in per-call bookkeeping (step hooks, profiler records, gathering the state and
regrouping it by device) rather than in the kernel. `GroupedAdam` keeps a torch Adam for its
state, state_dict and param_groups, lets it take the first step (which creates the state the
library's way) and afterwards calls the same fused kernel on lists gathered once. The arithmetic
is the library's: tests/test_gradients.py checks the parameters against `Adam.step()` bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class GroupedAdam:
    def __init__(self, groups: Sequence[Sequence[nn.Parameter]], lrs: Sequence[float], eps: float):
        self.optimizer = torch.optim.Adam(
            [{"params": list(p), "lr": lr} for p, lr in zip(groups, lrs, strict=True)],
            eps=eps,
            fused=True,
        )
        # Per group: params, exp_avgs, exp_avg_sqs, steps. None until the state exists.
        self._state: list[tuple[list[torch.Tensor], ...]] | None = None
        self._all_steps: list[torch.Tensor] = []

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def step(self) -> None:
        """One Adam step from the parameters' `.grad`."""
        if self._state is None:
            # The state is kept across updates: make it of ordinary tensors even when the caller
            # runs in inference mode (inference tensors refuse in-place updates outside it).
            with torch.inference_mode(False):
                self.optimizer.step()
            self._gather_state()
            return
        torch._foreach_add_(self._all_steps, 1)
        for group, (params, exp_avgs, exp_avg_sqs, steps) in zip(
            self.optimizer.param_groups, self._state, strict=True
        ):
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params,
                [p.grad for p in params],  # type: ignore[misc]
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def _gather_state(self) -> None:
        state = self.optimizer.state
        self._state = []
        for group in self.optimizer.param_groups:
            params = list(group["params"])
            self._state.append(
                (
                    params,
                    [state[p]["exp_avg"] for p in params],
                    [state[p]["exp_avg_sq"] for p in params],
                    [state[p]["step"] for p in params],
                )
            )
        self._all_steps = [s for group in self._state for s in group[3]]

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self._state = None  # loading replaced the state tensors: gather them again
