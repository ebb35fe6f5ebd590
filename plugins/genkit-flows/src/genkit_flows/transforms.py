"""Flow layers as ``torch.distributions.Transform``: ``TransformedDistribution`` does the rest.

Both act on vectors (event dimension 1) and broadcast over any leading sample and
batch dimensions, so one set of flow parameters per example serves k samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from torch.nn.functional import softplus

VECTORS = constraints.independent(constraints.real, 1)


class PlanarTransform(Transform):
    """``f(z) = z + u' tanh(w.z + b)`` (Rezende & Mohamed, ICML 2015).

    ``u`` is replaced by ``u' = u + (m(w.u) - w.u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``,
    which keeps ``w.u' >= -1`` and so ``f`` invertible (paper, appendix A). The inverse
    has no closed form: ``log_prob`` works for values this transform produced (they are
    cached), which is what a posterior needs. Parameters are ``[..., D]``/``[...]`` and
    broadcast against ``z``.
    """

    domain = VECTORS
    codomain = VECTORS
    bijective = True

    def __init__(self, u: Tensor, w: Tensor, b: Tensor, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        wu = (w * u).sum(-1, keepdim=True)
        self.u = u + (softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
        self.w, self.b = w, b.unsqueeze(-1)

    def _call(self, z: Tensor) -> Tensor:
        return z + self.u * torch.tanh((z * self.w).sum(-1, keepdim=True) + self.b)

    def log_abs_det_jacobian(self, z: Tensor, y: Tensor) -> Tensor:
        activation = (z * self.w).sum(-1, keepdim=True) + self.b
        psi = (1 - torch.tanh(activation) ** 2) * self.w
        return torch.log((1 + (psi * self.u).sum(-1)).abs().clamp_min(1e-12))


class AffineCouplingTransform(Transform):
    """RealNVP affine coupling (Dinh et al., ICLR 2017): exact inverse and log-determinant.

    Elements where ``mask`` is 1 pass through and condition a scale and shift of the
    others: ``y = x * exp(s(x_m)) + t(x_m)``. The scale is squashed by tanh for stability.
    """

    domain = VECTORS
    codomain = VECTORS
    bijective = True

    def __init__(self, net: nn.Module, mask: Tensor, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        self.net, self.mask = net, mask

    def _scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self.net(x * self.mask).chunk(2, dim=-1)
        free = 1 - self.mask
        return torch.tanh(log_scale) * free, shift * free

    def _call(self, x: Tensor) -> Tensor:
        log_scale, shift = self._scale_shift(x)
        return x * log_scale.exp() + shift

    def _inverse(self, y: Tensor) -> Tensor:
        log_scale, shift = self._scale_shift(y)  # the masked half of y equals that of x
        return (y - shift) * (-log_scale).exp()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._scale_shift(x)[0].sum(-1)
