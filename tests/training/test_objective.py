"""The objective: the IWAE bound against the ELBO, KL-weight schedules, free bits, the mutual
information estimate."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from conftest import IMAGE_SPEC as SPEC
from conftest import parts_config as config
from genkit import build_model
from genkit.training.objective import ELBOTerms, kl_weight, mutual_information


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


def test_mutual_information_estimate_spans_zero_to_log_batch():
    def estimate(loc: torch.Tensor, scale: float) -> float:
        q = Independent(Normal(loc, torch.full_like(loc, scale)), 1)
        z = q.rsample((1,))
        return float(mutual_information(ELBOTerms(q, z, torch.zeros(1, len(loc)), torch.zeros(len(loc)), None, None)))

    torch.manual_seed(0)
    assert abs(estimate(torch.zeros(512, 2), 1.0)) < 0.15, "one posterior for every x: z says nothing about x"
    separated = estimate(torch.randn(512, 2) * 100, 0.01)
    assert separated == pytest.approx(math.log(512), abs=0.15), "disjoint posteriors: z identifies x among B"


@pytest.mark.parametrize(
    "parts",
    [
        {},
        {
            "prior": {"_target_": "genkit.parts.priors.VampPrior", "pseudo_inputs": 10},
            "likelihood": {"_target_": "genkit.parts.likelihoods.GaussianLikelihood", "sigma_mode": "predicted"},
        },
        {
            "encoder": {"_target_": "genkit.parts.encoders.ConvEncoder"},
            "decoder": {"_target_": "genkit.parts.decoders.ConvDecoder"},
            "prior": {"_target_": "genkit.parts.priors.MixturePrior"},
        },
    ],
    ids=["mlp", "vamp-gaussian", "conv-mog"],
)
def test_the_compiled_bound_is_one_graph_computing_the_same_terms(parts):
    """compile= compiles elbo_terms: the parts, torch's distributions and the KL must trace whole, since
    a graph break would split every training step in two. Building the model fills torch's KL dispatch
    cache (emptied here), whose first lookup would break the graph."""
    from torch._dynamo.utils import counters
    from torch.distributions.kl import _KL_MEMOIZE

    _KL_MEMOIZE.clear()
    model = build_model(config(**parts), SPEC)
    x = torch.rand(16, 1, 8, 8)
    torch._dynamo.reset()
    counters.clear()
    eager = model.elbo_terms
    model.compile_bound("eager")
    torch.manual_seed(0)
    compiled = model.elbo_terms(x)
    assert dict(counters["graph_break"]) == {} and counters["stats"]["unique_graphs"] == 1
    torch.manual_seed(0)
    torch.testing.assert_close(compiled.nelbo, eager(x).nelbo)


def test_the_bound_compiled_by_inductor_computes_the_same_terms_and_gradients(tmp_path, monkeypatch):
    """compile=inductor, which the README recommends for long runs of small models, generates its own
    kernels (C++ on the CPU): the bound and its gradients must match the eager ones to float rounding."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except RuntimeError as error:
        pytest.skip(f"inductor finds no C++ compiler here: {error}")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # compiled here, not read from a cache
    # inductor draws the posterior's noise with its own generator: torch's draws here, to compare the two
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    model = build_model(config(), SPEC)
    x = torch.rand(16, 1, 8, 8)

    def bound_and_gradients() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        loss = model.loss(model.elbo_terms(x), beta=1.0)
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    eager = bound_and_gradients()
    torch._dynamo.reset()
    model.compile_bound("inductor")
    compiled = bound_and_gradients()
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
