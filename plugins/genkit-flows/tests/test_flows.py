"""genkit-flows: the maths of each flow, the genkit contract, and training with the parts."""

from __future__ import annotations

import pytest
import torch
from genkit_flows import AffineCouplingTransform, PlanarFlowPosterior, PlanarTransform, RealNVPPrior
from torch import nn
from torch.autograd.functional import jacobian

from genkit.testing import check_part


def log_det_by_autograd(f, z: torch.Tensor) -> torch.Tensor:
    """log|det df/dz| for each row of z, from the full Jacobian."""
    return torch.stack([torch.linalg.slogdet(jacobian(f, row))[1] for row in z])


def test_planar_log_det_matches_the_jacobian_and_stays_invertible():
    torch.manual_seed(0)
    d = 3
    u, w, b = torch.randn(d) * 3, torch.randn(d), torch.randn(())  # a large u: the constraint must kick in
    transform = PlanarTransform(u, w, b)
    z = torch.randn(5, d)
    assert (transform.w * transform.u).sum() >= -1  # the invertibility condition of the paper
    expected = log_det_by_autograd(transform, z)
    torch.testing.assert_close(transform.log_abs_det_jacobian(z, transform(z)), expected, rtol=1e-4, atol=1e-5)


def test_coupling_inverts_exactly_and_its_log_det_matches_the_jacobian():
    torch.manual_seed(0)
    d = 4
    net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 2 * d))
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    transform = AffineCouplingTransform(net, mask, cache_size=0)
    x = torch.randn(6, d)
    y = transform(x)
    torch.testing.assert_close(transform.inv(y), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        transform.log_abs_det_jacobian(x, y), log_det_by_autograd(transform, x), rtol=1e-4, atol=1e-5
    )


def test_realnvp_prior_is_a_normalised_density():
    """On a 2-D grid, exp(log p) integrates to 1 with couplings far from the identity."""
    torch.manual_seed(0)
    prior = RealNVPPrior(2, layers=4, hidden=16)
    for coupling in prior.couplings:
        nn.init.normal_(coupling[-1].weight, std=0.5)
    axis = torch.linspace(-20, 20, 1001)  # wide: the random couplings spread the mass
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = prior().log_prob(grid).exp()
    assert density.sum() * (axis[1] - axis[0]) ** 2 == pytest.approx(1.0, abs=5e-3)


def test_planar_posterior_density_of_k_samples_per_example():
    """log q(z|x) of [k, B] samples: each example's own flow, checked against autograd Jacobians."""
    torch.manual_seed(0)
    k, batch, d = 3, 2, 2
    posterior = PlanarFlowPosterior(5, d, flows=3)
    q = posterior(torch.randn(batch, 5))
    z = q.rsample((k,))
    log_q = q.log_prob(z)
    assert z.shape == (k, batch, d) and log_q.shape == (k, batch)
    x = q.base_dist.rsample((k,))
    y = q.transforms[0](x)
    for t in q.transforms[1:]:
        y = t(y)
    for i in range(batch):

        def flow(v, i=i):
            for t in q.transforms:
                v = v + t.u[i] * torch.tanh((v * t.w[i]).sum(-1, keepdim=True) + t.b[i])
            return v

        log_det = log_det_by_autograd(flow, x[:, i])
        expected = q.base_dist.log_prob(x)[:, i] - log_det
        torch.testing.assert_close(q.log_prob(y)[:, i], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kind", "name"), [("posterior", "planar"), ("prior", "realnvp")])
def test_parts_honour_the_genkit_contract(kind, name):
    check_part(kind, name, steps=3)


def test_flow_posterior_and_flow_prior_train_together():
    model = check_part("posterior", "planar", overrides=["prior=realnvp", "model.latent_dim=4"], steps=1)
    assert isinstance(model.prior, RealNVPPrior) and isinstance(model.posterior, PlanarFlowPosterior)


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="needs model.latent_dim >= 2"):
        RealNVPPrior(1)
    with pytest.raises(ValueError, match="posterior.flows must be at least 1"):
        PlanarFlowPosterior(4, 2, flows=0)
