"""The registered parts: a planar-flow posterior and a RealNVP prior, built on genkit's public API only."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

import genkit
from genkit_flows.transforms import AffineCouplingTransform, PlanarTransform

#: Log-variance clamp of the base Gaussian, as genkit's own Gaussian posterior.
LOGVAR_RANGE = (-30.0, 20.0)


@genkit.register_posterior("planar")
class PlanarFlowPosterior(genkit.Posterior):
    """q(z|x): a diagonal Gaussian pushed through ``flows`` planar flows (Rezende & Mohamed 2015).

    The flow parameters are amortised: the encoder features give each example its own
    ``u, w, b`` per flow (as in van den Berg et al. 2018), so the posterior can bend
    towards each example's true posterior. The KL has no closed form and is estimated
    by Monte Carlo; ``model.iwae_k`` tightens the bound further.

    Args:
        flows: number of planar layers K.
    """

    def __init__(self, in_features: int, latent_dim: int, *, flows: int = 8) -> None:
        super().__init__()
        if flows < 1:
            raise ValueError(f"posterior.flows must be at least 1 (posterior=gaussian has none), got {flows}")
        self.flows, self.latent_dim = flows, latent_dim
        self.gaussian = nn.Linear(in_features, 2 * latent_dim)
        self.flow_parameters = nn.Linear(in_features, flows * (2 * latent_dim + 1))

    def forward(self, features: torch.Tensor) -> Distribution:
        loc, log_var = self.gaussian(features).chunk(2, dim=-1)
        base = Independent(Normal(loc, torch.exp(0.5 * log_var.clamp(*LOGVAR_RANGE))), 1)
        params = self.flow_parameters(features).view(-1, self.flows, 2 * self.latent_dim + 1)
        u, w, b = params.split([self.latent_dim, self.latent_dim, 1], dim=-1)
        layers = [PlanarTransform(u[:, k], w[:, k], b[:, k, 0]) for k in range(self.flows)]
        return TransformedDistribution(base, layers)


@genkit.register_prior("realnvp")
class RealNVPPrior(genkit.Prior):
    """p(z): a standard normal pushed through RealNVP affine couplings (Dinh et al. 2017).

    A learnable prior with an exact density in both directions, so it can follow the
    aggregate posterior (the gap a standard normal prior leaves; Tomczak & Welling 2018).

    Args:
        layers: coupling layers; consecutive layers swap which half conditions the other.
        hidden: width of each coupling's two-layer network.
    """

    def __init__(self, latent_dim: int, *, layers: int = 4, hidden: int = 64) -> None:
        super().__init__()
        if latent_dim < 2:
            raise ValueError(
                f"prior=realnvp splits z into two halves and needs model.latent_dim >= 2, got {latent_dim}"
            )
        if layers < 1:
            raise ValueError(f"prior.layers must be at least 1, got {layers}")
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        first_half = (torch.arange(latent_dim) < latent_dim // 2).float()
        self.register_buffer(
            "masks", torch.stack([first_half if i % 2 == 0 else 1 - first_half for i in range(layers)])
        )
        self.couplings = nn.ModuleList(
            nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
            for _ in range(layers)
        )
        for coupling in self.couplings:  # start as the identity: the prior begins as N(0, I)
            nn.init.zeros_(coupling[-1].weight)
            nn.init.zeros_(coupling[-1].bias)

    def forward(self) -> Distribution:
        base = Independent(Normal(self.loc, self.scale), 1)
        return TransformedDistribution(
            base, [AffineCouplingTransform(net, mask) for net, mask in zip(self.couplings, self.masks)]
        )
