"""Hand-written gradients of the A2C losses: autograd's own formulas, op for op, without autograd.

The seed preset updates after every frame on a batch of one. There, recording the graph and
running autograd's engine costs several times the arithmetic itself; this module computes what
`loss.backward()` would, from the forward pass's intermediates, in a handful of tensor ops per
layer. Each backward below applies the formula autograd applies to the same forward op, in the
same order, so the gradients are equal bit for bit (tests/test_gradients.py checks it against
autograd on both presets and other shapes) and both presets keep their exact results.

Forward intermediates come from `_MLP.activations` and `Actor.heads` (trainer/networks.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from swingup import contract
from trainer.networks import Actor, ActorHeads, Critic

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_MEAN = 1  # torch's Reduction::Mean, the reduction of the critic losses
_ONE = torch.ones(())  # d loss / d loss

aten = torch.ops.aten


class GaussianLogProb(NamedTuple):
    """log N(actions | mean, std) summed over the action dimension, and its intermediates."""

    value: torch.Tensor  # [batch]
    diff: torch.Tensor  # actions - mean
    neg_square: torch.Tensor  # -(diff ** 2)
    two_var: torch.Tensor  # 2 * std ** 2
    std: torch.Tensor


def gaussian_log_prob(
    actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> GaussianLogProb:
    """torch.distributions.Normal.log_prob, unrolled so that its backward can be written out."""
    diff = actions - mean
    neg_square = -(diff**2)
    two_var = 2 * std**2
    per_dim = neg_square / two_var - torch.log(std) - LOG_SQRT_2PI
    return GaussianLogProb(per_dim.sum(dim=-1), diff, neg_square, two_var, std)


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    return (0.5 + LOG_SQRT_2PI + torch.log(std)).sum(dim=-1)


def gaussian_log_prob_backward(
    lp: GaussianLogProb, grad: torch.Tensor, grad_log_std: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """d/d(mean), d/d(std) of sum(grad * lp.value), plus `grad_log_std` * log(std) when given
    (the entropy's term, added where autograd adds it).

    Autograd's chain, with its negations and factors of 2 moved to the end of each product: both
    are exact in floating point (rounding is symmetric in sign and a power of two only shifts
    the exponent), so the result is the same to the bit with four fewer ops.
    """
    per_dim = grad.unsqueeze(-1)  # sum over the action dims: broadcast back
    grad_neg_square = per_dim / lp.two_var  # d(n / 2var)/dn
    # d(n / 2var)/d(2var) = -n / (2var)^2, through 2 * std**2: times 4 * std.
    from_var = (per_dim * ((lp.neg_square / lp.two_var) / lp.two_var)) * lp.std * -4.0
    from_log = -(per_dim / lp.std)  # - log(std)
    if grad_log_std is not None:  # autograd sums the two log(std) terms first
        from_log = from_log + grad_log_std / lp.std
    grad_mean = grad_neg_square * (2.0 * lp.diff)  # -(diff**2), diff = actions - mean: two signs
    return grad_mean, from_var + from_log


def critic_loss_grad(kind: str, values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d/d(values) of the critic's loss, smooth-L1 or squared error, averaged over the batch."""
    # The aten backward ops autograd runs for F.smooth_l1_loss and F.mse_loss.
    grad: torch.Tensor
    if kind == "smooth_l1":
        grad = aten.smooth_l1_loss_backward.default(_ONE, values, targets, _MEAN, 1.0)
    else:
        grad = aten.mse_loss_backward.default(_ONE, values, targets, _MEAN)
    return grad


def set_param_grads(layer: nn.Linear, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    """The weight and bias gradients of y = x W^T + b, given d/dy, written into `.grad`.

    Writing into the existing buffers skips an allocation and the `.grad` setter's checks, per
    parameter and per update; the buffers are made on first use (and again after anything set
    them to None, such as zero_grad or a deepcopy).
    """
    if layer.weight.grad is None or layer.bias.grad is None:
        with torch.inference_mode(False):  # ordinary tensors, as backward() would leave
            for param in (layer.weight, layer.bias):
                param.grad = torch.zeros_like(param)
    torch.mm(grad_out.t(), x, out=layer.weight.grad)
    torch.sum(grad_out, 0, out=layer.bias.grad)


def linear_backward(layer: nn.Linear, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Set the layer's parameter gradients and return d/dx."""
    set_param_grads(layer, x, grad_out)
    return grad_out.mm(layer.weight)


def trunk_backward(
    linears: list[nn.Linear], activations: list[torch.Tensor], grad: torch.Tensor
) -> None:
    """Backward through Linear + ReLU layers; activations[i] is layer i's input. The observations
    need no gradient, so the first layer stops at its parameters."""
    for i in range(len(linears) - 1, -1, -1):
        grad_pre = aten.threshold_backward.default(grad, activations[i + 1], 0)  # relu
        if i == 0:
            set_param_grads(linears[i], activations[i], grad_pre)
        else:
            grad = linear_backward(linears[i], activations[i], grad_pre)


def critic_backward(
    critic: Critic, activations: list[torch.Tensor], grad_value: torch.Tensor
) -> None:
    grad_hidden = linear_backward(critic.out, activations[-1], grad_value)
    trunk_backward(critic.linears, activations, grad_hidden)


def actor_backward(
    actor: Actor,
    activations: list[torch.Tensor],
    heads: ActorHeads,
    grad_mean: torch.Tensor,
    grad_std: torch.Tensor,
) -> None:
    grad_mean_pre = aten.tanh_backward.default(grad_mean * contract.ACTION_HIGH, heads.tanh)
    if actor.std_param == "exp_softplus":
        grad_std = grad_std * heads.std  # exp
    grad_std_pre = aten.softplus_backward.default(grad_std, heads.std_pre, 1.0, 20.0)
    hidden = activations[-1]
    from_mean = linear_backward(actor.mu_layer, hidden, grad_mean_pre)
    from_std = linear_backward(actor.log_std_layer, hidden, grad_std_pre)
    trunk_backward(actor.linears, activations, from_mean + from_std)
