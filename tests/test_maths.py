"""The objective against closed forms and Monte Carlo: KL, likelihoods, IWAE, schedules, free bits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from genkit import DataSpec, build_model
from genkit.likelihoods import BernoulliLikelihood, BinaryCrossEntropyWithLogits, GaussianLikelihood
from genkit.model import analytic_kl
from genkit.priors import DiagonalGaussianMixture, MixturePrior, NormalPrior, mixture

SPEC = DataSpec("image", (1, 8, 8), "unit_interval")


def config(**overrides):
    """A composed-like config of registered parts (no Hydra needed)."""
    from genkit.registry import registry

    def node(kind, name, **params):
        return {"_target_": registry(kind).get(name).target, **params}

    cfg = {
        "seed": 0,
        "encoder": node("encoder", "mlp", hidden=[32]),
        "posterior": node("posterior", "gaussian"),
        "prior": node("prior", "normal"),
        "decoder": node("decoder", "mlp", hidden=[32]),
        "likelihood": node("likelihood", "bernoulli"),
        "model": {"latent_dim": 3},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and "_target_" not in value else value
    return OmegaConf.create(cfg)


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


def test_bernoulli_log_prob_is_minus_summed_bce():
    logits, x = torch.randn(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    log_p = BernoulliLikelihood(SPEC)(logits).log_prob(x)
    torch.testing.assert_close(log_p, -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3)))


def test_genkits_bce_matches_torchs_in_value_and_gradients_over_the_whole_logit_range():
    """Logits from -100 to 100 (exp overflows float32 beyond 88), binary and grey targets:
    float32 values within float32 rounding of torch's float64 BCE, both gradients too."""
    logits = torch.linspace(-100, 100, 4001).repeat(3, 1)
    target = torch.stack([torch.zeros(4001), torch.ones(4001), torch.full((4001,), 0.3)])
    ours_x, ours_y = logits.clone().requires_grad_(), target.clone().requires_grad_()
    upstream = torch.rand(3, 4001, dtype=torch.double) + 0.5  # the gradient flowing in
    ours = BinaryCrossEntropyWithLogits.apply(ours_x, ours_y)
    ours.backward(upstream.float())
    ref_x, ref_y = logits.double().requires_grad_(), target.double().requires_grad_()
    ref = F.binary_cross_entropy_with_logits(ref_x, ref_y, reduction="none")
    ref.backward(upstream)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_x.grad.double(), ref_x.grad, rtol=1e-6, atol=3e-7)  # float32 eps x upstream
    torch.testing.assert_close(ours_y.grad.double(), ref_y.grad, rtol=1e-6, atol=0)
    doubles = (torch.randn(3, 5, dtype=torch.double) * 4).requires_grad_(), torch.rand(3, 5, dtype=torch.double)
    assert torch.autograd.gradcheck(BinaryCrossEntropyWithLogits.apply, doubles)


def test_bernoulli_log_prob_broadcasts_and_sums_bfloat16_logits_in_float32():
    """One image of logits scored against a batch (broadcast), and bfloat16 logits (mixed
    precision) scored in float32 with a bfloat16 gradient, as torch's BCE does under autocast."""
    logits = torch.randn(1, 1, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    x = torch.rand(5, 1, 8, 8)
    log_p = BernoulliLikelihood(SPEC)(logits).log_prob(x)
    assert log_p.shape == (5,) and log_p.dtype == torch.float32
    expected = -F.binary_cross_entropy_with_logits(logits.float().expand(5, -1, -1, -1), x, reduction="none")
    torch.testing.assert_close(log_p, expected.sum((1, 2, 3)))
    log_p.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and logits.grad.shape == logits.shape


def test_gaussian_with_unit_sigma_is_half_squared_error_plus_constant():
    mean, x = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    log_p = GaussianLikelihood(SPEC)(mean).log_prob(x)
    expected = -0.5 * ((x - mean) ** 2).sum((1, 2, 3)) - 0.5 * 64 * math.log(2 * math.pi)
    torch.testing.assert_close(log_p, expected)


@pytest.mark.parametrize("mode", ["global", "per_dim", "predicted"])
def test_learned_sigma_modes_give_finite_gradients(mode):
    likelihood = GaussianLikelihood(SPEC, sigma_mode=mode, sigma=0.5)
    params = torch.randn(2, *likelihood.param_shape, requires_grad=True)
    likelihood(params).log_prob(torch.rand(2, 1, 8, 8)).sum().backward()
    assert torch.isfinite(params.grad).all()
    assert likelihood.param_shape == ((2, 8, 8) if mode == "predicted" else (1, 8, 8))


def test_iwae_with_one_sample_equals_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    model = build_model(config(), SPEC)
    x = torch.rand(64, 1, 8, 8)
    terms = model.elbo_terms(x, k=1)
    assert terms.iwae is None
    torch.manual_seed(1)
    one = model.elbo_terms(x, k=1)
    # k=1 weights: log w = log p(x|z) + log p(z) - log q(z|x), whose mean is the ELBO.
    log_w = one.log_px + model.prior().log_prob(one.z) - one.posterior.log_prob(one.z)
    torch.testing.assert_close((-log_w).mean(), one.nelbo.mean(), atol=0.5, rtol=0.05)
    bounds = []
    for k in (1, 10, 100):
        torch.manual_seed(2)
        t = model.elbo_terms(x, k=k)
        bounds.append((t.iwae if t.iwae is not None else t.nelbo).mean().item())
    assert bounds[0] >= bounds[1] >= bounds[2]


def test_kl_schedules():
    from genkit.model import kl_weight

    linear = [kl_weight(s, 2.0, "linear", 100, 4, 0.5, 1000) for s in (0, 50, 100, 500)]
    assert linear == [0.0, 1.0, 2.0, 2.0]
    cyclical = [kl_weight(s, 1.0, "cyclical", 0, 2, 0.5, 100) for s in (0, 10, 25, 49, 50, 60, 99)]
    assert cyclical == pytest.approx([0.0, 0.4, 1.0, 1.0, 0.0, 0.4, 1.0])
    assert kl_weight(7, 3.0, "constant", 0, 4, 0.5, 100) == 3.0
    model = build_model(
        config(model={"latent_dim": 3, "beta": 2.0, "kl_schedule": "linear", "kl_warmup_steps": 10}), SPEC
    )
    assert model.kl_weight(5) == 1.0


def test_free_bits_stop_penalising_small_kl():
    model = build_model(config(model={"latent_dim": 3, "free_bits": 0.5}), SPEC)
    terms = model.elbo_terms(torch.rand(8, 1, 8, 8))
    terms.kl_per_dim = torch.full((8, 3), 0.1)
    terms.kl = terms.kl_per_dim.sum(-1)
    assert model.loss(terms, 1.0).item() == pytest.approx(terms.rec.mean().item() + 1.5, rel=1e-5)


def test_slerp_follows_the_great_circle():
    from genkit.tools import slerp

    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), torch.full((5,), 3.0))  # linear would dip to 2.12 midway
    torch.testing.assert_close(slerp(a, 2 * a, t)[2], 1.5 * a)  # parallel latents: linear


def test_mutual_information_estimate_spans_zero_to_log_batch():
    from genkit.model import ELBOTerms, mutual_information

    def estimate(loc: torch.Tensor, scale: float) -> float:
        q = Independent(Normal(loc, torch.full_like(loc, scale)), 1)
        z = q.rsample((1,))
        return float(mutual_information(ELBOTerms(q, z, torch.zeros(1, len(loc)), torch.zeros(len(loc)), None, None)))

    torch.manual_seed(0)
    assert abs(estimate(torch.zeros(512, 2), 1.0)) < 0.15, "one posterior for every x: z says nothing about x"
    separated = estimate(torch.randn(512, 2) * 100, 0.01)
    assert separated == pytest.approx(math.log(512), abs=0.15), "disjoint posteriors: z identifies x among B"


def test_categorical_likelihood_counts_only_real_tokens():
    from genkit.likelihoods import TokenSequence

    logits = torch.randn(2, 4, 7)
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = x != 0
    expected = -(F.cross_entropy(logits.transpose(1, 2), x, reduction="none") * mask).sum(1)
    torch.testing.assert_close(TokenSequence(logits, mask).log_prob(x), expected)
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 7) * 10
    torch.testing.assert_close(TokenSequence(changed, mask).log_prob(x.masked_fill(~mask, 6)), expected)
