"""Likelihoods against closed forms: the Bernoulli's BCE (genkit's faster kernel against torch's),
the Gaussian's squared error, the categorical over real tokens only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import IMAGE_SPEC as SPEC
from genkit.parts.likelihoods import (
    BernoulliLikelihood,
    BinaryCrossEntropyWithLogits,
    GaussianLikelihood,
    TokenSequence,
)


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


def test_categorical_likelihood_counts_only_real_tokens():
    logits = torch.randn(2, 4, 7)
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = x != 0
    expected = -(F.cross_entropy(logits.transpose(1, 2), x, reduction="none") * mask).sum(1)
    torch.testing.assert_close(TokenSequence(logits, mask).log_prob(x), expected)
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 7) * 10
    torch.testing.assert_close(TokenSequence(changed, mask).log_prob(x.masked_fill(~mask, 6)), expected)
