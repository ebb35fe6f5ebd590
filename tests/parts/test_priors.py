"""Priors: the KL to the standard normal in closed form, the fast Gaussian-mixture density against
torch's, and the Monte Carlo KL where no closed form exists."""

from __future__ import annotations

import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from genkit.parts.priors import DiagonalGaussianMixture, MixturePrior, NormalPrior, mixture
from genkit.training.objective import analytic_kl


def test_kl_to_standard_normal_matches_closed_form():
    torch.manual_seed(0)
    mu, sigma = torch.randn(5, 3), torch.rand(5, 3) + 0.5
    q = Independent(Normal(mu, sigma), 1)
    kl, per_dim = analytic_kl(q, NormalPrior(3)())
    closed = 0.5 * (mu**2 + sigma**2 - 1 - 2 * sigma.log())
    torch.testing.assert_close(per_dim, closed)
    torch.testing.assert_close(kl, closed.sum(-1))
    torchs = kl_divergence(q.base_dist, Normal(torch.zeros(3), torch.ones(3)))  # the general Normal-Normal KL
    torch.testing.assert_close(per_dim, torchs)


def test_the_fast_gaussian_mixture_density_matches_torchs_mixture_and_its_gradients():
    """Scored by matrix products (no [N, K, D] broadcast): same values and gradients as
    MixtureSameFamily to float32 rounding, on z drawn from the mixture with component scales down to 0.02."""
    torch.manual_seed(0)
    loc = torch.randn(500, 40, requires_grad=True)
    scale = (torch.rand(500, 40) * 0.5 + 0.02).requires_grad_()
    weights = Categorical(logits=torch.randn(500))
    components = Independent(Normal(loc, scale), 1)
    fast, reference = mixture(weights, components), MixtureSameFamily(weights, components)
    assert isinstance(fast, DiagonalGaussianMixture)
    z = torch.cat([reference.sample((1000,)), torch.randn(1000, 40) * 2]).reshape(2, 1000, 40)
    fast_values, reference_values = fast.log_prob(z), reference.log_prob(z)
    assert fast_values.shape == (2, 1000)
    assert torch.allclose(fast_values, reference_values, atol=2e-3, rtol=1e-5)
    fast_grads = torch.autograd.grad(fast_values[0].sum(), (loc, scale))
    reference_grads = torch.autograd.grad(reference_values[0].sum(), (loc, scale))
    for got, expected in zip(fast_grads, reference_grads):
        assert torch.allclose(got, expected, atol=2e-3, rtol=1e-5)


def test_mixture_prior_has_no_analytic_kl_and_mc_estimate_is_unbiased():
    torch.manual_seed(0)
    prior = MixturePrior(2, components=1, init_spread=0.0)  # one component at 0 with scale 1: N(0, I)
    q = Independent(Normal(torch.tensor([[0.5, -1.0]]), torch.tensor([[0.7, 1.3]])), 1)
    assert analytic_kl(q, prior()) is None
    z = q.rsample((200_000,))
    mc = (q.log_prob(z) - prior().log_prob(z)).mean()
    exact = analytic_kl(q, NormalPrior(2)())[0]
    assert abs(mc - exact) < 0.01
