"""Priors p(z): standard normal, learnable mixture of Gaussians, VampPrior."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, register_kl

from genkit.parts.base import EncodeFn, Prior
from genkit.registry import register_prior
from genkit.spec import DataSpec


class DiagonalGaussianMixture(MixtureSameFamily):
    """A mixture of diagonal Gaussians whose ``log_prob`` scores N points against K components
    with matrix products (the expansion scikit-learn's GaussianMixture uses) instead of an
    ``[N, K, D]`` broadcast: the importance-weighted NLL scores millions of z against a
    500-component VampPrior, where the broadcast costs gigabytes and minutes. The expansion
    cancels digits for narrow components, so it runs in float64 (MPS, which has no float64,
    keeps the broadcast)."""

    def log_prob(self, value: Tensor) -> Tensor:
        if value.device.type == "mps":
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        normal = self.component_distribution.base_dist
        loc, scale, z = normal.loc.double(), normal.scale.double(), value.double()
        precision = scale.pow(-2)  # [K, D]
        scaled_loc = loc * precision
        squared = (z.pow(2) @ precision.T - 2 * z @ scaled_loc.T + (loc * scaled_loc).sum(-1)).clamp_min(0)
        log_components = -0.5 * squared - scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_weights = self.mixture_distribution.logits.double()
        return torch.logsumexp(log_components + log_weights, dim=-1).to(value.dtype)


def mixture(weights: Categorical, components: Distribution) -> MixtureSameFamily:
    """The mixture of ``components`` (batch ``[K]``); diagonal Gaussians get the fast ``log_prob``."""
    if (
        isinstance(components, Independent)
        and isinstance(components.base_dist, Normal)
        and components.reinterpreted_batch_ndims == 1
        and len(components.batch_shape) == 1
    ):
        return DiagonalGaussianMixture(weights, components)
    return MixtureSameFamily(weights, components)


@register_prior("normal")
class NormalPrior(Prior):
    """The standard normal N(0, I); the KL against a Gaussian posterior is analytic."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> Distribution:
        return Independent(StandardNormal(self.loc, self.scale), 1)


class StandardNormal(Normal):
    """A ``Normal`` known to be N(0, 1): built by ``NormalPrior`` from zeros and ones only.

    Knowing it, the KL from a Gaussian posterior is the closed form
    ``0.5 (mu^2 + sigma^2 - 1) - log sigma``: four ops where torch's Normal-Normal KL (which
    divides by a scale of one) takes ten, forward and backward, in every training step.
    """


@register_kl(Normal, StandardNormal)
def kl_normal_standard_normal(q: Normal, p: StandardNormal) -> Tensor:
    """KL(q || N(0, 1)) per dimension, as ``-0.5 - log sigma + 0.5 mu^2 + 0.5 sigma^2``: a log, a
    subtraction and two fused multiply-adds, and as many backward nodes."""
    loc, scale = q.loc, q.scale
    return torch.addcmul(torch.addcmul(-0.5 - scale.log(), loc, loc, value=0.5), scale, scale, value=0.5)


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
        return mixture(Categorical(logits=self.logits), components)


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
        return mixture(weights, components)
