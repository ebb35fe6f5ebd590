"""``VAE``: the one LightningModule. It holds five parts and knows none of them concretely.

The objective is written once against ``torch.distributions``: reconstruction
``log p(x|z)``, the KL (analytic where torch registers it, a Monte Carlo estimate
with the same z otherwise), beta with linear or cyclical warm-up (Fu et al. 2019),
free bits (Kingma et al. 2016) and the k-sample importance-weighted bound (Burda
et al. 2016). Metrics are summed on the device and logged once per epoch, exact
over the whole split on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ParallelStrategy
from torch import Tensor
from torch.distributions import Distribution, Independent, kl_divergence

from genkit.audio import AudioFeatures
from genkit.errors import NonFiniteLossError
from genkit.parts import Decoder, Encoder, Likelihood, Posterior, Prior
from genkit.spec import DataSpec

KL_SCHEDULES = ("constant", "linear", "cyclical")
#: Burda et al. (2016): a latent unit is active when Cov_x(E_q[z_u]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01

#: Column titles of metric keys in the console tables (training summary, genkit-eval), in table order.
METRIC_LABELS = {
    "nelbo": "-ELBO",
    "rec": "rec",
    "kl": "KL",
    "iwae": "-IWAE",
    "nll": "NLL",
    "bpd": "bits/dim",
    "ppl": "perplexity",
    "active_units": "active units",
    "mi": "MI",
    "mel_l1": "mel L1 (dB)",
    "spectral_convergence": "spec. conv.",
}

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class LearningRateSchedule:
    """A ``torch.optim.lr_scheduler`` class (as ``optimizer -> scheduler``) and when it steps.

    Attributes:
        factory: builds the scheduler for the model's optimiser.
        interval: ``epoch`` or ``step``.
        monitor: the logged metric ``ReduceLROnPlateau`` watches.
    """

    factory: Callable[[torch.optim.Optimizer], Any]
    interval: str = "epoch"
    monitor: str = "val/nelbo"


@dataclass(frozen=True)
class OptimizerSteps:
    """How training steps the optimiser: Lightning's Trainer arguments of the same names, applied
    by the model itself (``VAE.optimize``) because its manual optimisation does not take them.

    Attributes:
        gradient_clip_val: clip the gradients' norm (or values) to this; None or 0: no clipping.
        gradient_clip_algorithm: ``norm`` or ``value``.
        accumulate_grad_batches: add up the gradients of this many batches per optimiser step.
    """

    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1

    def __post_init__(self) -> None:
        if self.gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(
                f"trainer.gradient_clip_algorithm must be 'norm' or 'value', got {self.gradient_clip_algorithm!r}"
            )
        accumulate = self.accumulate_grad_batches
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"trainer.accumulate_grad_batches must be a whole number >= 1, got {accumulate!r}")
        clip = self.gradient_clip_val
        number = isinstance(clip, int | float) and not isinstance(clip, bool)
        if clip is not None and not (number and 0 <= clip < math.inf):
            raise ValueError(f"trainer.gradient_clip_val must be a finite number >= 0 (null: off), got {clip!r}")


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

    @cached_property
    def rec(self) -> Tensor:
        """Reconstruction NLL ``-E_q log p(x|z)`` per example ``[B]``."""
        return -(self.log_px[0] if len(self.log_px) == 1 else self.log_px.mean(0))

    @cached_property
    def nelbo(self) -> Tensor:
        """-ELBO per example ``[B]``: the bound on -log p(x) that training minimises (beta=1)."""
        return self.rec + self.kl

    @cached_property
    def iwae(self) -> Tensor | None:
        """-log of the k-sample importance-weighted bound ``[B]`` (tighter than nelbo)."""
        if self.log_w is None:
            return None
        return -(torch.logsumexp(self.log_w, 0) - math.log(self.log_w.shape[0]))


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


class EpochSums:
    """Sums of per-example metrics kept on the device; read once per epoch."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.total: Tensor | None = None
        self.count = 0

    def add(self, values: Tensor, count: int) -> None:
        """``values``: ``[len(names)]`` sums over a batch of ``count`` examples."""
        self.total = values if self.total is None else self.total.to(values.device) + values
        self.count += count

    def reset(self) -> None:
        self.total, self.count = None, 0


class VAE(L.LightningModule):
    """A variational autoencoder composed of registered parts.

    Args:
        encoder, posterior, prior, decoder, likelihood: the parts (built by ``genkit.compose``).
        spec: the data's spec.
        optimizer: ``params -> Optimizer`` (from the ``optim`` config group).
        schedule: the learning-rate schedule (the ``scheduler`` config group); None keeps it constant.
        latent_dim: size of z (the one place it is set; genkit wires it into the parts).
        beta: weight of the KL term (beta-VAE, Higgins et al. 2017); 1 gives the ELBO.
        kl_schedule: ``constant``, ``linear`` (beta ramps from 0 over ``kl_warmup_steps``)
            or ``cyclical`` (``kl_cycles`` ramps over training, each rising for
            ``kl_cycle_ratio`` of its cycle; Fu et al. 2019).
        kl_warmup_steps: length of the linear ramp, in optimiser steps.
        kl_cycles: number of cycles of the cyclical schedule.
        kl_cycle_ratio: share of each cycle spent rising.
        free_bits: minimum KL in nats per latent dimension (batch-averaged) below which
            the KL is not penalised (Kingma et al. 2016); 0 disables.
        iwae_k: importance samples; above 1 training maximises the IWAE bound
            (Burda et al. 2016) and beta/free bits do not apply.
    """

    def __init__(
        self,
        encoder: Encoder,
        posterior: Posterior,
        prior: Prior,
        decoder: Decoder,
        likelihood: Likelihood,
        spec: DataSpec,
        optimizer: OptimizerFactory | None = None,
        schedule: LearningRateSchedule | None = None,
        *,
        latent_dim: int = 16,
        beta: float = 1.0,
        kl_schedule: str = "constant",
        kl_warmup_steps: int = 0,
        kl_cycles: int = 4,
        kl_cycle_ratio: float = 0.5,
        free_bits: float = 0.0,
        iwae_k: int = 1,
    ) -> None:
        super().__init__()
        if kl_schedule not in KL_SCHEDULES:
            raise ValueError(f"model.kl_schedule must be one of {KL_SCHEDULES}, got {kl_schedule!r}")
        if iwae_k < 1:
            raise ValueError(f"model.iwae_k must be at least 1, got {iwae_k}")
        self.encoder, self.posterior, self.prior = encoder, posterior, prior
        self.decoder, self.likelihood = decoder, likelihood
        self.spec = spec
        #: Log-mel features of audio data (specs with genkit's audio settings), for its
        #: reconstruction distances and for listening.
        self.audio = AudioFeatures.of(spec) if "audio" in spec.extra else None
        self.optimizer_factory = optimizer
        self.schedule = schedule
        #: Clipping and accumulation (``genkit.train`` sets them from the trainer config).
        self.optimizer_steps = OptimizerSteps()
        # genkit steps the optimiser itself (``optimize``): Lightning's automatic loop builds a
        # closure and calls more hooks per step, ~0.16 ms a step on CPU (README: Performance).
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.beta, self.kl_schedule, self.kl_warmup_steps = beta, kl_schedule, kl_warmup_steps
        self.kl_cycles, self.kl_cycle_ratio = kl_cycles, kl_cycle_ratio
        self.free_bits, self.iwae_k = free_bits, iwae_k
        #: The resolved run configuration, stored in checkpoints (set by ``genkit.compose``).
        self.run_config: dict[str, Any] = {}
        self.sums = {split: EpochSums(self.metric_names(split)) for split in ("train", "val", "test")}
        self.nonfinite: Tensor | None = None
        self.resumed_rng: dict[str, Any] | None = None

    # ----------------------------------------------------------------- maths
    def encode(self, x: Tensor, mask: Tensor | None = None) -> Distribution:
        """q(z|x): ``x [B, *event_shape] -> Distribution`` with batch ``[B]``, event ``[latent_dim]``."""
        return self.posterior(self.encoder(x, mask))

    def decode(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Distribution:
        """p(x|z): ``z [B, latent_dim] -> Distribution`` with batch ``[B]``, event = the data's."""
        return self.likelihood(self.decoder(z, x, mask), mask)

    def elbo_terms(self, x: Tensor, mask: Tensor | None = None, k: int = 1, weights: bool = False) -> ELBOTerms:
        """Sample k latents per example and evaluate every term of the bound.

        Importance log-weights are computed when ``k > 1`` or ``weights`` is set.
        """
        q = self.encode(x, mask)
        p = self.prior()
        # log q(z|x) is taken of this very tensor: flow posteriors (TransformedDistribution)
        # find its pre-image in their cache instead of inverting the flow.
        z = q.rsample((k,))  # [k, B, D]
        flat = z.flatten(0, 1)  # [k * B, D]
        x_k = x.expand(k, *x.shape).reshape(-1, *x.shape[1:]) if k > 1 else x
        mask_k = None if mask is None else (mask.expand(k, *mask.shape).reshape(-1, *mask.shape[1:]) if k > 1 else mask)
        log_px = self.decode(flat, x_k, mask_k).log_prob(x_k).view(k, -1)
        analytic = analytic_kl(q, p)
        log_w = None
        if analytic is None or k > 1 or weights:
            log_qz, log_pz = q.log_prob(z), p.log_prob(z)
            if k > 1 or weights:
                log_w = log_px + log_pz - log_qz
        if analytic is None:
            kl, kl_per_dim = (log_qz - log_pz).mean(0), None
        else:
            kl, kl_per_dim = analytic
        return ELBOTerms(q, z, log_px, kl, kl_per_dim, log_w)

    def kl_weight(self, step: int) -> float:
        """beta at optimiser step ``step`` under the configured schedule."""
        if self.kl_schedule == "constant":
            return self.beta
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return kl_weight(
            step, self.beta, self.kl_schedule, self.kl_warmup_steps, self.kl_cycles, self.kl_cycle_ratio, total
        )

    def loss(self, terms: ELBOTerms, beta: float) -> Tensor:
        """The training objective (a batch mean, in nats per example)."""
        if terms.iwae is not None:
            return terms.iwae.mean()
        if self.free_bits > 0:
            if terms.kl_per_dim is not None:
                kl = terms.kl_per_dim.mean(0).clamp(min=self.free_bits).sum()
            else:
                kl = terms.kl.mean().clamp(min=self.free_bits * self.latent_dim)
            return terms.rec.mean() + beta * kl
        # At beta 1 the loss is the logged -ELBO itself: one tensor, fewer ops per step.
        return terms.nelbo.mean() if beta == 1 else (terms.rec + beta * terms.kl).mean()

    # ------------------------------------------------------------- training
    def metric_names(self, split: str) -> tuple[str, ...]:
        """Scalar metrics summed per batch (validation/test also sum E_q[z] and its square).

        ``tokens`` counts the real elements of variable-length data (for perplexity); ``mi``
        is the batch estimate of the mutual information I_q(x; z) times the batch size.
        """
        names = ("nelbo", "rec", "kl") + (("iwae",) if self.iwae_k > 1 else ())
        names += ("tokens",) if self.spec.variable_length else ()
        if split == "train":
            return names + ("loss",)
        return names + ("mi",) + (("mel_l1", "spectral_convergence") if self.audio is not None else ())

    @torch.no_grad()
    def batch_sums(
        self, split: str, x: Tensor, terms: ELBOTerms, loss: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """One vector of per-batch sums, in ``metric_names(split)`` order (no autograd bookkeeping).

        Audio validation/test also sums the distances between each input and its reconstruction
        from the posterior mean (mel L1 in dB, spectral convergence)."""
        batch = terms.kl.shape[0]
        values = [terms.nelbo.sum(), terms.rec.sum(), terms.kl.sum()]
        if terms.iwae is not None:
            values.append(terms.iwae.sum())
        if self.spec.variable_length:
            values.append(mask.sum().to(terms.kl.dtype))
        if split == "train":
            values.append(loss * batch)
            return torch.stack(values)
        values.append(mutual_information(terms) * batch)
        mean = posterior_mean(terms)
        if self.audio is not None:
            values += list(self.audio.distances(x, self.decode(mean).mean).sum(0))
        return torch.cat([torch.stack(values), mean.sum(0), (mean * mean).sum(0)])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        terms = self.elbo_terms(batch["x"], batch.get("mask"), self.iwae_k)
        beta = self.kl_weight(self.global_step)
        loss = self.loss(terms, beta)
        self.sums["train"].add(self.batch_sums("train", batch["x"], terms, loss, batch.get("mask")), len(batch["x"]))
        self.guard_finite(loss, batch_idx)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({"train/loss_step": loss.detach(), "train/beta": beta}, on_step=True, on_epoch=False)
        self.optimize(loss, batch_idx)

    def optimize(self, loss: Tensor, batch_idx: int) -> None:
        """Backward, then every ``accumulate_grad_batches`` batches (and at the epoch's last) one
        optimiser step and a step of a per-step learning-rate schedule: what Lightning's automatic
        loop does, without its per-step closure. Gradients are clipped in ``on_before_optimizer_step``,
        where mixed precision has unscaled them. Under DDP, batches that only accumulate skip the
        gradient all-reduce."""
        accumulate = self.optimizer_steps.accumulate_grad_batches
        stepping = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 >= self.trainer.num_training_batches
        strategy = self.trainer.strategy
        no_sync = not stepping and isinstance(strategy, ParallelStrategy)
        with strategy.block_backward_sync() if no_sync else nullcontext():
            self.manual_backward(loss / accumulate if accumulate > 1 else loss)
        if not stepping:
            return
        optimizer = self.optimizers()
        optimizer.step()
        optimizer.zero_grad()
        if self.schedule is not None and self.schedule.interval == "step":
            self.lr_schedulers().step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        steps = self.optimizer_steps
        if steps.gradient_clip_val:
            self.clip_gradients(optimizer, steps.gradient_clip_val, steps.gradient_clip_algorithm)

    def step_epoch_schedule(self, train_means: dict[str, Tensor]) -> None:
        """Step a per-epoch learning-rate schedule at the end of the training epoch (after its
        validation); ``ReduceLROnPlateau`` gets its monitored metric."""
        if self.schedule is None or self.schedule.interval != "epoch":
            return
        scheduler = self.lr_schedulers()
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
            return
        metrics = {**self.trainer.callback_metrics, **train_means}
        if self.schedule.monitor in metrics:  # absent in epochs that skip validation
            scheduler.step(float(metrics[self.schedule.monitor]))

    def guard_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Stop on a NaN/inf loss before the epoch's checkpoint is written, so the last one on disk is good.

        On the CPU reading the flag is free, so every step is checked. On an
        accelerator it would force a sync, so the flag stays on the device and is
        read every ``log_every_n_steps`` steps and at the end of each epoch.
        """
        bad = ~torch.isfinite(loss.detach())
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad
        due = (
            loss.device.type == "cpu"
            or self.global_step % self.trainer.log_every_n_steps == 0
            or batch_idx + 1 >= self.trainer.num_training_batches
        )
        if due and bool(self.nonfinite):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} by step {self.global_step} (epoch {self.current_epoch}); "
                "training stopped and the last checkpoint written before it is kept. Lower optim.lr, "
                "set trainer.gradient_clip_val=1, or use likelihood.min_sigma / a KL warm-up."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.eval_step("test", batch)

    def eval_step(self, split: str, batch: dict[str, Tensor]) -> None:
        terms = self.elbo_terms(batch["x"], batch.get("mask"), self.iwae_k)
        self.sums[split].add(self.batch_sums(split, batch["x"], terms, mask=batch.get("mask")), len(batch["x"]))

    def on_train_epoch_start(self) -> None:
        if self.schedule is not None:  # the rate this epoch trains with (epoch schedules step at its end)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.step_epoch_schedule(self.log_epoch("train"))

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def log_epoch(self, split: str) -> dict[str, Tensor]:
        """Reduce the epoch's sums over all ranks, log exact means over the whole split and return them."""
        sums = self.sums[split]
        n = len(sums.names)
        if sums.total is None:  # this rank saw no batch, but every rank must join the reduction
            size = n + (2 * self.latent_dim if split != "train" else 0)
            sums.total = torch.zeros(size, device=self.device)
        count = torch.tensor(float(sums.count), device=sums.total.device)
        packed = self.trainer.strategy.reduce(torch.cat([sums.total, count[None]]), reduce_op="sum")
        total, count = packed[:-1], packed[-1]
        sums.reset()
        if count == 0:
            return {}
        means = {f"{split}/{k}": v for k, v in self.summarize(split, total, count).items()}
        self.log_dict(means, prog_bar=split != "test", sync_dist=False)
        return means

    def summarize(self, split: str, total: Tensor, count: Tensor | int) -> dict[str, Tensor]:
        """Means per example of summed ``batch_sums`` over ``count`` examples, with the derived
        metrics: active units and MI (validation/test), bits/dim (images), perplexity (sequences)."""
        names = self.metric_names(split)
        n = len(names)
        means = dict(zip(names, total[:n] / count))
        if split != "train":
            mu, mu2 = (total[n:] / count).chunk(2)
            means["active_units"] = ((mu2 - mu * mu) > ACTIVE_UNIT_THRESHOLD).sum().float()
            if not torch.isfinite(means["mi"]):  # the posterior cannot score other examples' z
                del means["mi"]
        if self.spec.modality == "image":
            means["bpd"] = means["nelbo"] / (self.spec.numel * math.log(2))
        if "tokens" in means:  # per-token perplexity of the bound, end-of-sentence tokens included
            tokens = total[names.index("tokens")]
            means["ppl"] = torch.exp(total[0] / tokens)
            if "iwae" in means:
                means["iwae_ppl"] = torch.exp(total[names.index("iwae")] / tokens)
            del means["tokens"]
        return means

    def epoch_metrics(self) -> list[str]:
        """The ``split/name`` metrics logged once per training and validation epoch (what a
        learning-rate schedule can watch)."""
        names = []
        for split in ("train", "val"):
            size = len(self.metric_names(split)) + (2 * self.latent_dim if split != "train" else 0)
            names += [f"{split}/{name}" for name in self.summarize(split, torch.ones(size), 1)]
        return names

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        factory = self.optimizer_factory or (lambda params: torch.optim.Adam(params, lr=1e-3))
        optimizer = factory(self.parameters())
        if self.schedule is None:
            return optimizer
        scheduler = {"scheduler": self.schedule.factory(optimizer), "interval": self.schedule.interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from genkit import __version__

        checkpoint["genkit"] = {
            "config": self.run_config,
            "spec": self.spec.to_dict(),
            "version": __version__,
            "rng": rng_states(),
        }
        if self.saving_mid_epoch():  # an interrupted epoch: keep its partial training sums
            train = self.sums["train"]
            checkpoint["genkit"]["train_sums"] = {"total": train.total, "count": train.count}

    def saving_mid_epoch(self) -> bool:
        if self._trainer is None or not self.trainer.training:
            return False
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return 0 < done < self.trainer.num_training_batches

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("genkit", {})
        self.resumed_rng = meta.get("rng")
        if "train_sums" in meta:
            self.sums["train"].total = meta["train_sums"]["total"]
            self.sums["train"].count = meta["train_sums"]["count"]

    def on_train_start(self) -> None:
        """On resuming, restore the random state saved with the checkpoint (at an epoch's end,
        or mid-epoch on SIGTERM/Ctrl-C).

        Restored here rather than at load, so that what Lightning runs before training
        resumes (the sanity check) cannot shift the stream: the resumed run draws the same
        noise as one never interrupted.
        """
        if self.resumed_rng is not None:
            set_rng_states(self.resumed_rng)
            self.resumed_rng = None

    # ------------------------------------------------------------------ use
    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, **generation: Any) -> Tensor:
        """``n`` draws from the prior, decoded to the likelihood's mean ``[n, *event_shape]``, or,
        for an autoregressive decoder, generated token ids ``[n, L]`` (``generation``: the
        options of its ``generate``, e.g. ``method="sample", top_p=0.9``)."""
        z = self.prior().sample((n,))
        if temperature != 1.0:
            z = z * temperature
        return self.decode_output(z, **generation)

    def decode_output(self, z: Tensor, **generation: Any) -> Tensor:
        """What z decodes to: the likelihood's mean, or generated token ids for an autoregressive decoder."""
        if self.decoder.autoregressive:
            return self.decoder.generate(z, **generation)[0]
        return self.decode(z).mean

    @torch.no_grad()
    def log_likelihood(
        self, x: Tensor, k: int = 1000, mask: Tensor | None = None, max_decoded_values: int = 1 << 26
    ) -> Tensor:
        """Importance-weighted estimate of log p(x) per example ``[B]``, in nats (Burda et al. 2016).

        ``log (1/k) sum_i p(x, z_i) / q(z_i | x)`` with z_i ~ q(z|x): a lower bound that
        tightens as k grows. Samples are drawn in chunks so that the decoder never outputs more
        than ``max_decoded_values`` numbers at once (a sentence's logits count one per token and
        vocabulary entry), whatever k, the batch size and the vocabulary.
        """
        per_example = math.prod(self.likelihood.param_shape)
        if self.spec.variable_length:  # batches are cut to their longest sequence
            per_example = per_example * x.shape[1] // self.spec.event_shape[0]
        chunk = max(1, min(k, max_decoded_values // max(1, len(x) * per_example)))
        total = None
        for start in range(0, k, chunk):
            log_w = self.elbo_terms(x, mask, min(chunk, k - start), weights=True).log_w
            part = torch.logsumexp(log_w, 0)
            total = part if total is None else torch.logaddexp(total, part)
        return total - math.log(k)

    @torch.no_grad()
    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Each example's point in latent space ``[B, latent_dim]``: the posterior mean, or a sample
        where the posterior has no closed-form mean (flows)."""
        q = self.encode(x, mask)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, mask: Tensor | None = None, **generation: Any) -> Tensor:
        """What ``embed(x)`` decodes to (see ``decode_output``)."""
        return self.decode_output(self.embed(x, mask), **generation)


def rng_states() -> dict[str, Any]:
    """torch's CPU and CUDA generator states (tensors: checkpoints stay ``weights_only``-loadable)."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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
