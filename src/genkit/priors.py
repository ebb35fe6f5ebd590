"""Priors p(z): standard normal, learnable mixture of Gaussians, VampPrior."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from genkit.parts import EncodeFn, Prior
from genkit.registry import register_prior
from genkit.spec import DataSpec


@register_prior("normal")
class NormalPrior(Prior):
    """The standard normal N(0, I); the KL against a Gaussian posterior is analytic."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale), 1)


@register_prior("mog")
class MixturePrior(Prior):
    """A learnable mixture of diagonal Gaussians; the KL is estimated by Monte Carlo.

    Args:
        components: number of mixture components.
        init_spread: standard deviation of the initial component means.
        learn_weights: learn the mixture weights (else uniform).
    """

    def __init__(
        self, latent_dim: int, *, components: int = 10, init_spread: float = 1.0, learn_weights: bool = True
    ) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.randn(components, latent_dim) * init_spread)
        self.log_scale = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components), requires_grad=learn_weights)

    def forward(self) -> Distribution:
        components = Independent(Normal(self.loc, self.log_scale.exp()), 1)
        return MixtureSameFamily(Categorical(logits=self.logits), components)


@register_prior("vamp")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling, AISTATS 2018): p(z) = 1/K sum_k q(z | u_k).

    The pseudo-inputs u_k are learned in data space and pushed through the model's own
    encoder and posterior (the ``encode`` hook genkit wires in), so the prior follows
    the aggregate posterior. The KL is estimated by Monte Carlo.

    Args:
        pseudo_inputs: K, the number of pseudo-inputs (the paper uses 500 on MNIST).
        init_std: standard deviation of their initial (pre-squashing) values.
    """

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        reason = super().incompatibility(spec)
        if reason is None and spec.support == "categorical":
            reason = "learns pseudo-inputs by gradient, which discrete (token) data does not allow"
        return reason

    def __init__(
        self, latent_dim: int, spec: DataSpec, encode: EncodeFn, *, pseudo_inputs: int = 500, init_std: float = 0.5
    ) -> None:
        super().__init__()
        self.encode = encode
        self.squash = spec.support in ("binary", "unit_interval")
        self.raw_inputs = nn.Parameter(torch.randn(pseudo_inputs, *spec.event_shape) * init_std)

    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs in data space ``[K, *event_shape]`` (squashed to [0, 1] for such data)."""
        return torch.sigmoid(self.raw_inputs) if self.squash else self.raw_inputs

    def forward(self) -> Distribution:
        components = self.encode(self.pseudo_inputs())
        weights = Categorical(logits=torch.zeros(components.batch_shape, device=self.raw_inputs.device))
        return MixtureSameFamily(weights, components)
