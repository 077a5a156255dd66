"""Adam with a learning rate per parameter group, stepped through torch's kernels directly.

`torch.optim.Adam.step()` spends most of its time, on the seed preset's 1.3k parameters, in
per-call bookkeeping (step hooks, profiler records, gathering the state and regrouping it by
device) rather than in the arithmetic. `GroupedAdam` keeps a torch Adam for its state,
state_dict and param_groups, lets it take the first step (which creates the state the library's
way) and afterwards runs the same arithmetic on lists gathered once, in one of torch's two forms:

- `fused=False`: `torch.optim.Adam`'s default on CPU (its for-each form, equal to the
  single-tensor loop to the bit), which is what the notebook's `optim.Adam(params, lr)` ran;
- `fused=True`: the fused kernel of `Adam(fused=True)`. The same algorithm, rounded differently
  in the last bits (its bias corrections and its order of operations are its own).

tests/test_gradients.py checks both against `Adam.step()` bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class GroupedAdam:
    def __init__(
        self,
        groups: Sequence[Sequence[nn.Parameter]],
        lrs: Sequence[float],
        eps: float,
        fused: bool = True,
    ):
        self.fused = fused
        self.optimizer = torch.optim.Adam(
            [{"params": list(p), "lr": lr} for p, lr in zip(groups, lrs, strict=True)],
            eps=eps,
            fused=self._torch_flags()[0],
            foreach=self._torch_flags()[1],
        )
        # Per group: params, exp_avgs, exp_avg_sqs, steps. None until the state exists.
        self._state: list[tuple[list[torch.Tensor], ...]] | None = None
        self._all_steps: list[torch.Tensor] = []
        self._flat: tuple[list[torch.Tensor], ...] = ()  # params, exp_avgs, exp_avg_sqs
        self._one = torch.tensor(1.0)
        self._bias_correction2_sqrt = torch.tensor(1.0)
        self._constants = (torch.tensor(0.0), torch.tensor(0.0))  # beta2, eps, as float32

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
        torch._foreach_add_(self._all_steps, self._one, alpha=1.0)  # torch's CPU form
        if self.fused:
            self._fused_step()
        else:
            self._foreach_step()

    def _fused_step(self) -> None:
        assert self._state is not None
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

    def _foreach_step(self) -> None:
        """torch.optim.adam._multi_tensor_adam without weight decay, amsgrad or capturable, op
        for op, on every group at once: their betas and eps are Adam's defaults, their lr is not,
        and every parameter has taken the same number of steps. A Python number is passed as a
        float32 0-d tensor where torch passes the number itself: the kernels round the number to
        float32 either way, and the tensor overloads skip ~12 us of wrapping per call."""
        assert self._state is not None
        groups = self.optimizer.param_groups
        beta1, beta2 = groups[0]["betas"]
        step = self._all_steps[0].item()
        step_sizes = [
            (group["lr"] / (1 - beta1**step)) * -1
            for group, (params, *_) in zip(groups, self._state, strict=True)
            for _ in params
        ]
        self._bias_correction2_sqrt.fill_((1 - beta2**step) ** 0.5)
        params, exp_avgs, exp_avg_sqs = self._flat
        grads: list[torch.Tensor] = [p.grad for p in params]  # type: ignore[misc]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, self._constants[0])
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, self._bias_correction2_sqrt)
        torch._foreach_add_(denom, self._constants[1], alpha=1.0)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)

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
        self._flat = tuple([t for group in self._state for t in group[i]] for i in range(3))
        group = self.optimizer.param_groups[0]
        with torch.inference_mode(False):  # ordinary tensors, usable outside an update too
            self._constants = (torch.tensor(group["betas"][1]), torch.tensor(group["eps"]))

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        # The saved groups bring their own kernel choice; the first step after loading is
        # torch's own, so keep it in this optimiser's arithmetic.
        for group in self.optimizer.param_groups:
            group["fused"], group["foreach"] = self._torch_flags()
        self._state = None  # loading replaced the state tensors: gather them again

    def _torch_flags(self) -> tuple[bool | None, bool | None]:
        """Adam's fused and foreach options for this optimiser's arithmetic."""
        return (True, None) if self.fused else (None, True)
