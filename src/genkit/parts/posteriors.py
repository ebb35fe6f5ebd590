"""Posterior heads: encoder features -> q(z|x)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from genkit.parts.base import Posterior
from genkit.parts.layers import TORCH_INIT, initialise
from genkit.registry import register_posterior

#: Log-variance clamp: exp(±) stays finite in float16/bfloat16 as well as float32.
LOGVAR_RANGE = (-30.0, 20.0)


@register_posterior("gaussian")
class GaussianPosterior(Posterior):
    """Diagonal Gaussian ``Independent(Normal(mu, sigma), 1)`` from one linear layer.

    Args:
        scale: how the raw output becomes sigma: ``exp`` (of half a log-variance, as in
            Kingma & Welling 2014 and the Keras seed model) or ``softplus`` (smoother
            gradients for large latents).
        min_scale: floor added to sigma (softplus only).
        init: weight initialisation of the mean and scale heads, as for the encoders and decoders
            (each head drawn on its own, as Keras's separate z_mean and z_log_var layers are).
    """

    def __init__(
        self, in_features: int, latent_dim: int, *, scale: str = "exp", min_scale: float = 1e-4, init: str = TORCH_INIT
    ) -> None:
        super().__init__()
        if scale not in ("exp", "softplus"):
            raise ValueError(f"posterior.scale must be 'exp' or 'softplus', got {scale!r}")
        self.head = nn.Linear(in_features, 2 * latent_dim)
        initialise(self.head, init, stacked=2)
        self.scale = scale
        self.min_scale = min_scale

    def forward(self, features: Tensor) -> Distribution:
        loc, raw = self.head(features).chunk(2, dim=-1)
        if self.scale == "exp":
            # hardtanh is the clamp whose backward is one kernel (clamp's takes five ops); at the range's
            # two end points exactly it passes no gradient, where clamp's passes it.
            sigma = torch.exp(0.5 * nn.functional.hardtanh(raw, *LOGVAR_RANGE))
        else:
            sigma = nn.functional.softplus(raw) + self.min_scale
        return Independent(Normal(loc, sigma), 1)
