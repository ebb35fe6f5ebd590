"""The importance-weighted NLL against a model whose marginal likelihood is known exactly.

A linear-Gaussian VAE is probabilistic PCA: z ~ N(0, I), x | z ~ N(W z + b, s^2 I), so
p(x) = N(b, W W^T + s^2 I). genkit's parts are set to that model, with a deliberately
imperfect posterior, and the estimator must recover the exact log p(x).
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import MultivariateNormal

from genkit import DataSpec, build_model
from genkit.registry import registry

D, LATENT, SIGMA = 6, 2, 0.5
SPEC = DataSpec("audio", (D,), "real")  # flat real vectors: the linear model's natural data


def node(kind: str, name: str, **params) -> dict:
    return {"_target_": registry(kind).get(name).target, **params}


@pytest.fixture(scope="module")
def ppca():
    """A genkit VAE that is exactly pPCA, with a posterior that is close to, not equal to, the true one."""
    torch.manual_seed(0)
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "encoder": node("encoder", "mlp", hidden=[]),
            "posterior": node("posterior", "gaussian"),
            "prior": node("prior", "normal"),
            "decoder": node("decoder", "mlp", hidden=[]),
            "likelihood": node("likelihood", "gaussian", sigma=SIGMA),
            "model": {"latent_dim": LATENT},
        }
    )
    model = build_model(cfg, SPEC).double().eval()
    w = torch.randn(D, LATENT, dtype=torch.float64)
    b = torch.randn(D, dtype=torch.float64)
    decoder = model.decoder.net[-1]
    decoder.weight.data.copy_(w)
    decoder.bias.data.copy_(b)
    # True posterior: N(M^-1 W^T (x - b), s^2 M^-1), M = W^T W + s^2 I (full covariance).
    m_inv = torch.linalg.inv(w.T @ w + SIGMA**2 * torch.eye(LATENT, dtype=torch.float64))
    head = model.posterior.head
    head.weight.data.zero_()
    head.bias.data.zero_()
    head.weight.data[:LATENT] = 0.9 * (m_inv @ w.T)  # a slightly shrunk mean ...
    head.bias.data[:LATENT] = -0.9 * (m_inv @ w.T @ b)
    head.bias.data[LATENT:] = torch.log(1.3 * SIGMA**2 * torch.diagonal(m_inv))  # ... and a wider, diagonal q
    marginal = MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    x = marginal.sample((64,))
    return model, x, marginal.log_prob(x)


def test_iwae_recovers_the_exact_marginal_likelihood(ppca):
    model, x, exact = ppca
    torch.manual_seed(1)
    estimate = model.log_likelihood(x, k=2000)
    assert (estimate - exact).abs().mean() < 0.02  # nats per example
    assert abs((estimate - exact).mean()) < 0.01


def test_iwae_is_between_the_elbo_and_the_truth_and_tightens_with_k(ppca):
    model, x, exact = ppca
    torch.manual_seed(2)
    elbo = -model.elbo_terms(x, k=500).nelbo  # reconstruction averaged over 500 z, analytic KL
    one_sample = torch.stack([model.log_likelihood(x, k=1) for _ in range(500)]).mean(0)
    assert one_sample.mean().item() == pytest.approx(elbo.mean().item(), abs=0.02)  # k=1 is the ELBO
    gaps = []
    for k in (1, 10, 100, 1000):
        torch.manual_seed(3)
        gaps.append((exact - model.log_likelihood(x, k=k)).mean().item())
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] > -0.01
    assert (exact - elbo).mean() > 0.05  # the posterior is imperfect, so the bound is not trivially tight


def test_chunking_bounds_memory_without_changing_the_estimate(ppca):
    model, x, _ = ppca
    torch.manual_seed(4)
    whole = model.log_likelihood(x, k=300)
    torch.manual_seed(4)
    per_example = math.prod(model.likelihood.param_shape)
    chunked = model.log_likelihood(x, k=300, max_decoded_values=64 * 7 * per_example)  # 7 samples per chunk, last short
    assert torch.allclose(whole, chunked, atol=0.05)
    assert math.isfinite(chunked.sum().item())
