"""The pieces of the variational objective, written once against ``torch.distributions``:
the terms of one batch's bound, the KL (analytic where torch registers it), the KL weight's
schedule, and the estimates that read a batch's posteriors (mutual information, posterior mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, kl_divergence

KL_SCHEDULES = ("constant", "linear", "cyclical")
#: Importance samples per example of the NLL estimate (Burda et al. 2016), unless asked otherwise.
NLL_SAMPLES = 1000
#: The most numbers the decoder outputs at once when estimating the NLL (256 MB in float32), whatever
#: k, the batch size and the vocabulary: the bound on the estimate's memory.
MAX_DECODED_VALUES = 1 << 26


@dataclass
class ELBOTerms:
    """One batch's pieces of the bound; per-example values in nats.

    Attributes:
        posterior: q(z|x), batch ``[B]``.
        z: samples ``[k, B, latent_dim]``.
        log_px: ``log p(x|z)`` ``[k, B]``.
        kl: KL(q || p) ``[B]`` (analytic, or averaged over the k samples).
        kl_per_dim: ``[B, latent_dim]`` when the KL factorises analytically, else None.
        log_w: importance log-weights ``log p(x,z) - log q(z|x)`` ``[k, B]``, or None for k=1.
    """

    posterior: Distribution
    z: Tensor
    log_px: Tensor
    kl: Tensor
    kl_per_dim: Tensor | None
    log_w: Tensor | None
    #: Reconstruction NLL ``-E_q log p(x|z)`` per example ``[B]``.
    rec: Tensor = field(init=False)
    #: -ELBO per example ``[B]``: the bound on -log p(x) that training minimises (beta=1).
    nelbo: Tensor = field(init=False)
    #: -log of the k-sample importance-weighted bound ``[B]`` (tighter than nelbo), with ``log_w``.
    iwae: Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        # Computed here, not as cached properties: every step reads them, and Python 3.11's
        # cached_property takes a lock on each first read (and breaks a compiled graph).
        log_px = self.log_px.squeeze(0) if len(self.log_px) == 1 else self.log_px.mean(0)  # squeeze: a view
        self.rec = -log_px
        self.nelbo = self.kl - log_px  # = rec + kl, one backward node fewer when the loss is the -ELBO
        log_w = self.log_w
        self.iwae = None if log_w is None else -(torch.logsumexp(log_w, 0) - math.log(log_w.shape[0]))


def analytic_kl(q: Distribution, p: Distribution) -> tuple[Tensor, Tensor | None] | None:
    """KL(q || p) ``[B]`` and, when both sides factorise, per dimension ``[B, D]``; None if unknown.

    Factorised pairs (``Independent`` over one dimension) are computed once, per
    dimension, and summed: the free-bits objective needs the per-dimension values.
    """
    if (
        isinstance(q, Independent)
        and isinstance(p, Independent)
        and q.reinterpreted_batch_ndims == p.reinterpreted_batch_ndims == 1
    ):
        try:
            per_dim = kl_divergence(q.base_dist, p.base_dist)
        except NotImplementedError:
            pass
        else:
            return per_dim.sum(-1), per_dim
    try:
        return kl_divergence(q, p), None
    except NotImplementedError:
        return None


def kl_weight(
    step: int, beta: float, schedule: str, warmup_steps: int, cycles: int, cycle_ratio: float, total_steps: int
) -> float:
    """The KL weight at ``step``: constant, a linear warm-up, or cyclical annealing (Fu et al. 2019).

    Cyclical: training is cut into ``cycles`` equal periods; in each, beta rises
    linearly from 0 over the first ``cycle_ratio`` of the period, then stays at beta.
    """
    if schedule == "linear":
        return beta * min(1.0, step / warmup_steps) if warmup_steps else beta
    if schedule == "cyclical":
        period = max(1, total_steps) / cycles
        return beta * min(1.0, (step % period) / period / cycle_ratio)
    return beta


def mutual_information(terms: ELBOTerms) -> Tensor:
    """Batch estimate of I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)] in nats (Hoffman & Johnson 2016),
    q(z) approximated by the batch's mixture of posteriors, as He et al. (2019) compute it.

    NaN when the posterior has no entropy or cannot score other examples' z (e.g. flows).
    """
    q, z = terms.posterior, terms.z[0]  # z: [B, D], one sample per example
    try:
        log_q_cross = q.log_prob(z[:, None, :])  # [B, B]: log q(z_i | x_j)
        entropy = q.entropy()
    except (NotImplementedError, ValueError, RuntimeError):
        return terms.kl.new_tensor(float("nan"))
    log_aggregate = torch.logsumexp(log_q_cross, 1) - math.log(len(z))
    return -entropy.mean() - log_aggregate.mean()


def posterior_mean(terms: ELBOTerms) -> Tensor:
    """E_q[z] ``[B, D]`` (the sample mean where the family has no closed form)."""
    try:
        return terms.posterior.mean
    except NotImplementedError:
        return terms.z.mean(0)
