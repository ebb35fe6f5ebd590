"""``VAE``: the one LightningModule. It wires five parts, computes the objective and answers
Lightning's hooks; it knows none of the parts concretely.

The objective is written once against ``torch.distributions`` (``genkit.training.objective``):
reconstruction ``log p(x|z)``, the KL (analytic where torch registers it, a Monte Carlo
estimate with the same z otherwise), beta with linear or cyclical warm-up (Fu et al. 2019),
free bits (Kingma et al. 2016) and the k-sample importance-weighted bound (Burda et al.
2016). What it logs is declared by its ``MetricLayout`` (summed on the device, reduced over
ranks once per epoch), how it steps by its ``Optimization``, what it shows by its modality.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.distributions import Distribution

from genkit.checkpoint import rng_states, set_rng_states
from genkit.data.groups import StepGroup, StepGroups
from genkit.modalities import modality_of
from genkit.parts.base import Decoder, Encoder, Likelihood, Posterior, Prior, verify
from genkit.registry import register_model
from genkit.spec import DataSpec
from genkit.training.metrics import METRIC_LABELS, SPLITS, STEP_METRICS, EpochSums, MetricLayout
from genkit.training.objective import (
    KL_SCHEDULES,
    MAX_DECODED_VALUES,
    NLL_SAMPLES,
    ELBOTerms,
    analytic_kl,
    kl_weight,
    posterior_mean,
)
from genkit.training.optimization import LearningRateSchedule, Optimization, OptimizerSteps, guard_finite
from genkit.version import __version__

__all__ = ["METRIC_LABELS", "VAE", "ELBOTerms", "LearningRateSchedule", "Optimization", "OptimizerSteps", "analytic_kl"]


class VAE(L.LightningModule):
    """A variational autoencoder composed of registered parts.

    Args:
        encoder: x -> features (the parts are built by ``genkit.compose``).
        posterior: features -> q(z|x).
        prior: p(z).
        decoder: z -> the likelihood's parameters.
        likelihood: parameters -> p(x|z).
        spec: the data's spec.
        optimization: the optimiser, its schedule and step settings (None: Adam at 1e-3).
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
        optimization: Optimization | None = None,
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
        #: What genkit shows of and measures on this data (None: nothing beyond the bound).
        self.modality = modality_of(spec)
        self.optimization = optimization or Optimization()
        # genkit steps the optimiser itself (``Optimization.step``): Lightning's automatic loop builds a
        # closure and calls more hooks per step (README: Performance).
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.beta, self.kl_schedule, self.kl_warmup_steps = beta, kl_schedule, kl_warmup_steps
        self.kl_cycles, self.kl_cycle_ratio = kl_cycles, kl_cycle_ratio
        self.free_bits, self.iwae_k = free_bits, iwae_k
        self.metrics = MetricLayout(
            latent_dim,
            iwae=iwae_k > 1,
            tokens=spec.variable_length,
            distances=self.modality.distance_names if self.modality is not None else (),
            numel=spec.numel if spec.modality == "image" else 0,
        )
        #: The resolved run configuration, stored in checkpoints (set by ``genkit.compose``).
        self.run_config: dict[str, Any] = {}
        self.sums = {split: EpochSums() for split in SPLITS}
        self.nonfinite: Tensor | None = None
        #: Whether this process has checked the parts on a batch of real data (``check_on_data``).
        self.checked_on_data = False
        self.resumed_rng: dict[str, Any] | None = None
        #: The random state just before the latest validation inside training began (see ``rewind_validation``).
        self.validation_start_rng: dict[str, Any] | None = None
        #: Set by ``rewind_validation``: the next checkpoint reruns the interrupted validation.
        self.rerun_validation = False

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name around every hook call, several times per step: a plain
        # string, set here without nn.Module's search of parameters, buffers and submodules (1.4 us).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ----------------------------------------------------------------- wiring and objective
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
        analytic = analytic_kl(q, p)
        scored = analytic is None or k > 1 or weights  # log q(z|x) and log p(z) of the samples needed
        if scored:
            # log q(z|x) is taken of this very tensor: flow posteriors (TransformedDistribution)
            # find its pre-image in their cache instead of inverting the flow.
            z = q.rsample((k,))  # [k, B, D]
            flat = z.flatten(0, 1)  # [k * B, D]
        else:  # the same draw without a sample dimension, whose broadcast backward would sum over it
            flat = q.rsample()
            z = flat[None]
        x_k = x.expand(k, *x.shape).reshape(-1, *x.shape[1:]) if k > 1 else x
        mask_k = None if mask is None else (mask.expand(k, *mask.shape).reshape(-1, *mask.shape[1:]) if k > 1 else mask)
        log_px = self.decode(flat, x_k, mask_k).log_prob(x_k).view(k, -1)
        log_w = None
        if scored:
            log_qz, log_pz = q.log_prob(z), p.log_prob(z)
            if k > 1 or weights:
                log_w = log_px + log_pz - log_qz
        if analytic is None:
            kl, kl_per_dim = (log_qz - log_pz).mean(0), None
        else:
            kl, kl_per_dim = analytic
        return ELBOTerms(q, z, log_px, kl, kl_per_dim, log_w)

    def compile_bound(self, backend: str) -> None:
        """Compile ``elbo_terms`` with ``torch.compile``: the encoder, the decoder and every term of the
        bound, the step's tensor maths, as one graph. Lightning's loop, the optimiser step and the metric
        sums stay eager (compiling them breaks the graph at every hook), and the module saved in
        checkpoints is this one, unwrapped."""
        self.elbo_terms = torch.compile(self.elbo_terms, backend=backend)

    def kl_weight(self, step: int) -> float:
        """beta at optimiser step ``step`` under the configured schedule."""
        if self.kl_schedule == "constant":
            return self.beta
        total = int(self.planned_batches()) if self._trainer is not None else 1
        return kl_weight(
            step, self.beta, self.kl_schedule, self.kl_warmup_steps, self.kl_cycles, self.kl_cycle_ratio, total
        )

    def planned_batches(self) -> float:
        """Training batches of the whole run: Lightning's ``estimated_stepping_batches``, each batch of a
        ``StepGroup`` counted."""
        trainer = self.trainer
        loader = trainer.train_dataloader
        if not isinstance(loader, StepGroups) or trainer.max_epochs == -1 or loader.batches == math.inf:
            return trainer.estimated_stepping_batches
        total = loader.batches * max(trainer.max_epochs, 1)
        return min(total, trainer.max_steps) if trainer.max_steps != -1 else total

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

    @torch.no_grad()
    def batch_sums(
        self, split: str, x: Tensor, terms: ELBOTerms, loss: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """One batch's packed sums (``metrics``' layout), with the modality's distances between each
        input and its reconstruction from the posterior mean in validation and test."""
        distances = None
        if split != "train" and self.metrics.distances:
            distances = self.modality.distances(x, self.decode(posterior_mean(terms)).mean)
        return self.metrics.pack(split, terms, loss, mask, distances)

    # ----------------------------------------------------------------- Lightning hooks
    def check_on_data(self, split: str, batch: dict[str, Tensor]) -> None:
        """The contract check on the first real batch this process sees."""
        if not self.checked_on_data:
            verify(self, batch, f"the first {split} batch")
            self.checked_on_data = True

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if not isinstance(batch, StepGroup):  # a group's batches are checked as each is readied
            self.check_on_data("training", batch)

    def on_validation_batch_start(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.check_on_data("validation", batch)

    def on_test_batch_start(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.check_on_data("test", batch)

    def training_step(self, batch: dict[str, Tensor] | StepGroup, batch_idx: int) -> None:
        if not isinstance(batch, StepGroup):
            self.train_on(batch, batch_idx, self.trainer.num_training_batches)
            return
        # One optimiser step per batch of the group, each batch readied right before its step, as
        # Lightning would have done had it run them one by one (genkit.data.groups).
        trainer, groups = self.trainer, self.trainer.train_dataloader
        loop = trainer.fit_loop.epoch_loop
        for position, one in enumerate(batch):
            if 0 <= trainer.max_steps <= self.global_step:
                break
            if position:  # Lightning counts the group's last batch itself, after the step
                loop._batches_that_stepped += 1
            groups.step = position
            one = trainer.datamodule.device_batch(one)
            self.check_on_data("training", one)
            self.train_on(one, batch_idx * groups.steps + position, groups.batches)
        groups.step = 0

    def train_on(self, batch: dict[str, Tensor], batch_idx: int, batches: float) -> None:
        """One optimiser step (or accumulation) on ``batch``, batch ``batch_idx`` of the epoch's ``batches``."""
        terms = self.elbo_terms(batch["x"], batch.get("mask"), self.iwae_k)
        beta = self.kl_weight(self.global_step)
        loss = self.loss(terms, beta)
        self.sums["train"].add(self.batch_sums("train", batch["x"], terms, loss, batch.get("mask")), len(batch["x"]))
        self.nonfinite = guard_finite(self, loss, self.nonfinite, batch_idx, batches)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_step(loss, beta)
        self.optimization.step(self, loss, batch_idx, batches)

    def log_step(self, loss: Tensor, beta: float) -> None:
        """Send ``STEP_METRICS`` of this step to the loggers, at this batch's step: straight to them, as
        Lightning's logger connector would (with the epoch), since it logs only when a batch it runs ends."""
        if not self.trainer.is_global_zero or not self.loggers:
            return
        values = {**dict(zip(STEP_METRICS, (float(loss.detach()), float(beta)))), "epoch": self.current_epoch}
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in self.loggers:
            logger.log_metrics(values, step=step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimization.clip(self, optimizer)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.eval_step("test", batch)

    def eval_step(self, split: str, batch: dict[str, Tensor]) -> None:
        terms = self.elbo_terms(batch["x"], batch.get("mask"), self.iwae_k)
        self.sums[split].add(self.batch_sums(split, batch["x"], terms, mask=batch.get("mask")), len(batch["x"]))

    def on_train_epoch_start(self) -> None:
        if self.optimization.schedule is not None:  # the rate this epoch trains with (epoch schedules step at its end)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.optimization.step_epoch_schedule(self, self.log_epoch("train"))

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def log_epoch(self, split: str) -> dict[str, Tensor]:
        """Reduce the epoch's sums over all ranks, log exact means over the whole split and return them."""
        sums = self.sums[split]
        if sums.total is None:  # this rank saw no batch, but every rank must join the reduction
            sums.total = torch.zeros(self.metrics.size(split), device=self.device)
        count = torch.tensor(float(sums.count), device=sums.total.device)
        packed = self.trainer.strategy.reduce(torch.cat([sums.total, count[None]]), reduce_op="sum")
        total, count = packed[:-1], packed[-1]
        sums.reset()
        if count == 0:
            return {}
        means = {f"{split}/{k}": v for k, v in self.metrics.summarize(split, total, count).items()}
        self.log_dict(means, prog_bar=split != "test", sync_dist=False)
        return means

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        return self.optimization.configure(self.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genkit"] = {
            "config": self.run_config,
            "spec": self.spec.to_dict(),
            "version": __version__,
            "rng": self.validation_start_rng if self.rerun_validation else rng_states(),
        }
        if self.saving_mid_epoch():  # keep the epoch's training sums, not logged yet
            train = self.sums["train"]
            checkpoint["genkit"]["train_sums"] = {"total": train.total, "count": train.count}
            # Lightning's position in the epoch counts groups of this many batches (genkit.data.groups)
            checkpoint["genkit"]["steps_per_execution"] = self.optimization.steps.steps_per_execution

    def saving_mid_epoch(self) -> bool:
        """Whether a checkpoint is saved before the running epoch's training sums are logged: mid-epoch
        (SIGTERM), or inside a validation run within training (Lightning runs it before the epoch ends)."""
        if self._trainer is None or self.trainer.state.fn != "fit" or self.trainer.sanity_checking:
            return False
        if self.trainer.validating:
            return True
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return self.trainer.training and 0 < done < self.trainer.num_training_batches

    def on_validation_model_zero_grad(self) -> None:
        """Lightning's call just before each validation inside training: keep the random state there.
        Gradients are left as they are: genkit's optimisation clears them after each step, and a
        validation between two accumulated batches must not drop the first one's."""
        self.validation_start_rng = rng_states()

    def rewind_validation(self) -> bool:
        """Make the next checkpoint rerun the running validation (inside training) from its first batch:
        Lightning reruns an evaluation its checkpoint shows started and not processed, and the
        checkpoint keeps the random state from just before the validation began, so the rerun draws
        the same noise as the interrupted one and training after it continues as if never stopped.
        False when that state is unknown (not inside a validation within training)."""
        if not (self.trainer.validating and self.trainer.state.fn == "fit") or self.validation_start_rng is None:
            return False
        progress = self.trainer.fit_loop.epoch_loop.val_loop.batch_progress
        done = progress.current.completed
        for tracker in (progress.total, progress.current):
            tracker.processed = tracker.completed = tracker.completed - done
            tracker.ready = tracker.started = tracker.completed + 1
        self.rerun_validation = True
        return True

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

    # ----------------------------------------------------------------- using a trained model
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
        self, x: Tensor, k: int = NLL_SAMPLES, mask: Tensor | None = None, max_decoded_values: int = MAX_DECODED_VALUES
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


# Registered once the class exists: the model kind's contract is this very class.
register_model("vae")(VAE)
