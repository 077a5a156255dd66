"""The actor and critic of the notebook, with observation normalisation folded into the modules.

The normalisation statistics are buffers of the actor itself, so the exported ONNX graph needs
nothing beside it (the CleanRL pitfall of statistics kept in an env wrapper).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from swingup import contract
from trainer.config import Hyperparams

StdParam = Literal["exp_softplus", "softplus"]


def initialize_uniformly(layer: nn.Linear, init_w: float = 3e-3) -> None:
    """The notebook's output-layer init: weights and bias uniform in [-init_w, init_w]."""
    nn.init.uniform_(layer.weight, -init_w, init_w)
    nn.init.uniform_(layer.bias, -init_w, init_w)


class ObsNormalizer(nn.Module):
    """(obs - mean) / std with statistics held as buffers; a no-op when disabled.

    Disabled (the seed preset) it adds no operations at all, rather than subtracting 0 and
    dividing by 1: the notebook's graph, and four fewer autograd nodes in every update.
    """

    obs_mean: torch.Tensor
    obs_std: torch.Tensor

    def __init__(self, obs_dim: int, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalize(obs)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """`forward`, without the cost of a module call (the update calls it three times)."""
        if not self.enabled:
            return obs
        return (obs - self.obs_mean) / self.obs_std


def _trunk(obs_dim: int, hidden: int, layers: int, ortho_init: bool = False) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = obs_dim
    for _ in range(layers):
        linear = nn.Linear(width, hidden)
        if ortho_init:
            nn.init.orthogonal_(linear.weight, gain=math.sqrt(2.0))
            nn.init.zeros_(linear.bias)
        modules += [linear, nn.ReLU()]
        width = hidden
    return nn.Sequential(*modules)


class _MLP(nn.Module):
    """Normalisation, then Linear + ReLU layers. `activations` keeps every layer's output, which
    the hand-written backward pass of the update (trainer/gradients.py) reads."""

    def __init__(
        self, obs_dim: int, hidden: int, layers: int, ortho_init: bool, normalize_obs: bool
    ) -> None:
        super().__init__()
        self.normalizer = ObsNormalizer(obs_dim, normalize_obs)
        self.trunk = _trunk(obs_dim, hidden, layers, ortho_init)
        self.linears = [m for m in self.trunk if isinstance(m, nn.Linear)]

    def activations(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """[normalised obs, hidden layer 1, ..., hidden layer L]: each layer's input and output."""
        # F.linear and relu on the layers' tensors: the modules' own arithmetic, without a
        # module call per layer (a measurable share of the seed preset's per-frame cost).
        out = [self.normalizer.normalize(obs)]
        for linear in self.linears:
            out.append(torch.relu(F.linear(out[-1], linear.weight, linear.bias)))
        return out


class ActorHeads(NamedTuple):
    """The actor's outputs and the intermediates its backward pass needs."""

    tanh: torch.Tensor  # tanh(mu_layer(h))
    mean: torch.Tensor  # ACTION_HIGH * tanh
    std_pre: torch.Tensor  # log_std_layer(h)
    std: torch.Tensor


def std_of(
    std_pre: torch.Tensor, std_param: StdParam, min_std: float | torch.Tensor
) -> torch.Tensor:
    """The std head's output from its pre-activation: exp(softplus(x)) or softplus(x) + min_std
    (the exported graph passes min_std as a [1, 1] tensor; the arithmetic is the same)."""
    raw = F.softplus(std_pre)
    return torch.exp(raw) if std_param == "exp_softplus" else raw + min_std


def _std_bias(init_std: float, std_param: StdParam, min_std: float) -> float:
    """The std head's bias that yields `init_std` when the weights are near zero."""
    target = math.log(init_std) if std_param == "exp_softplus" else init_std - min_std
    if target <= 0:
        raise ValueError(f"init_std {init_std} is not reachable with std_param {std_param}")
    return math.log(math.expm1(target))  # inverse softplus


class Actor(_MLP):
    """Gaussian policy: mean = 2 * tanh(.), std from its own head.

    `std_param="exp_softplus"` is the notebook's std = exp(softplus(x)), always > 1;
    `"softplus"` is softplus(x) + min_std, which can shrink as the policy becomes sure.
    """

    def __init__(
        self,
        obs_dim: int = contract.OBS_DIM,
        action_dim: int = contract.ACTION_DIM,
        hidden: int = 128,
        layers: int = 1,
        std_param: StdParam = "exp_softplus",
        min_std: float = 1e-3,
        head_init: float = 3e-3,
        init_std: float = 0.0,
        ortho_init: bool = False,
        normalize_obs: bool = True,
    ) -> None:
        super().__init__(obs_dim, hidden, layers, ortho_init, normalize_obs)
        self.std_param = std_param
        self.min_std = min_std
        self.mu_layer = nn.Linear(hidden, action_dim)
        self.log_std_layer = nn.Linear(hidden, action_dim)
        initialize_uniformly(self.mu_layer, head_init)
        initialize_uniformly(self.log_std_layer, head_init)
        if init_std > 0:
            # Start from a given exploration noise instead of softplus(0) = 0.69 (or e^0.69 = 2).
            with torch.no_grad():
                self.log_std_layer.bias.fill_(_std_bias(init_std, std_param, min_std))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (action_mean, action_std), each [batch, action_dim]."""
        heads = self.heads(self.activations(obs)[-1])
        return heads.mean, heads.std

    def heads(self, hidden: torch.Tensor) -> ActorHeads:
        tanh = torch.tanh(F.linear(hidden, self.mu_layer.weight, self.mu_layer.bias))
        std_pre = F.linear(hidden, self.log_std_layer.weight, self.log_std_layer.bias)
        std = std_of(std_pre, self.std_param, self.min_std)
        return ActorHeads(tanh, tanh * contract.ACTION_HIGH, std_pre, std)


class Critic(_MLP):
    """State value V(s): the notebook's Linear -> ReLU -> Linear, a small uniform output layer."""

    def __init__(
        self,
        obs_dim: int = contract.OBS_DIM,
        hidden: int = 128,
        layers: int = 1,
        head_init: float = 3e-3,
        ortho_init: bool = False,
        normalize_obs: bool = True,
    ) -> None:
        super().__init__(obs_dim, hidden, layers, ortho_init, normalize_obs)
        self.out = nn.Linear(hidden, 1)
        initialize_uniformly(self.out, head_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Return V(obs), [batch, 1]."""
        return self.value(self.activations(obs)[-1])

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.out.weight, self.out.bias)


def build_actor(hp: Hyperparams) -> Actor:
    """The actor a run with these hyperparameters trains (and a checkpoint of it holds)."""
    return Actor(
        hidden=hp.hidden,
        layers=hp.layers,
        std_param=hp.std_param,
        min_std=hp.min_std,
        init_std=hp.init_std,
        ortho_init=hp.ortho_init,
        normalize_obs=hp.normalize_obs,
    )


def build_critic(hp: Hyperparams) -> Critic:
    return Critic(
        hidden=hp.critic_hidden or hp.hidden,
        layers=hp.critic_layers or hp.layers,
        ortho_init=hp.ortho_init,
        normalize_obs=hp.normalize_obs,
    )
