"""The metrics of a model, declared once: what each batch sums, in which order, and what the
per-example means and derived values (active units, bits/dim, perplexity) are. Training packs
the sums per batch on the device and reduces them over all ranks once per epoch; ``evaluate``
(genkit-eval) reads the same layout and adds the importance-weighted NLL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from genkit.console import progress
from genkit.errors import DataError
from genkit.training.objective import ELBOTerms, mutual_information, posterior_mean

if TYPE_CHECKING:
    from genkit.model import VAE

#: Burda et al. (2016): a latent unit is active when Cov_x(E_q[z_u]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01
SPLITS = ("train", "val", "test")
#: Sent to the loggers (W&B, the CSV log) every ``trainer.log_every_n_steps`` optimiser steps
#: (``VAE.log_step``): values at a step, not the epoch's, so kept out of the final metrics.
STEP_METRICS = ("train/loss_step", "train/beta")

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


@dataclass(frozen=True)
class MetricLayout:
    """The scalars one batch sums, in order, for a model; validation and test also sum E_q[z] and
    its square per latent dimension (for active units), after the scalars.

    Attributes:
        latent_dim: size of z.
        iwae: the k-sample bound is trained on, so summed too.
        tokens: the data is variable-length: real tokens are counted (for perplexity).
        distances: the modality's distances between each input and its reconstruction from the
            posterior mean (audio: ``mel_l1``, ``spectral_convergence``), summed in validation and test.
        numel: elements per example, for bits per dimension (images; 0: not reported).
    """

    latent_dim: int
    iwae: bool = False
    tokens: bool = False
    distances: tuple[str, ...] = ()
    numel: int = 0

    def scalars(self, split: str) -> tuple[str, ...]:
        """The summed scalars of ``split``, in order; ``loss`` (train) is the objective actually
        minimised, ``mi`` the batch estimate of I_q(x; z) times the batch size."""
        names = ("nelbo", "rec", "kl") + (("iwae",) if self.iwae else ()) + (("tokens",) if self.tokens else ())
        if split == "train":
            return names + ("loss",)
        return names + ("mi",) + self.distances

    def size(self, split: str) -> int:
        """Length of the packed vector of ``split``."""
        return len(self.scalars(split)) + (0 if split == "train" else 2 * self.latent_dim)

    @torch.no_grad()
    def pack(
        self,
        split: str,
        terms: ELBOTerms,
        loss: Tensor | None = None,
        mask: Tensor | None = None,
        distances: Tensor | None = None,
    ) -> Tensor:
        """One batch's sums in layout order (``distances``: ``[B, len(self.distances)]``). The per-example
        values are stacked and summed at once: in training, every step, two ops where a sum per term,
        a product and a stack took six."""
        batch = terms.kl.shape[0]
        rows = [terms.nelbo, terms.rec, terms.kl]
        if self.iwae:
            rows.append(terms.iwae)
        if self.tokens:
            rows.append(mask.sum(-1).to(terms.kl.dtype))
        if split == "train":
            rows.append(loss.expand(batch))  # the batch mean, once per example
            return torch.stack(rows).sum(1)
        rows.append(mutual_information(terms).expand(batch))
        mean = posterior_mean(terms)
        distance_columns = [distances] if self.distances else []
        return torch.cat([torch.stack(rows, 1), *distance_columns, mean, mean * mean], 1).sum(0)

    def rates(self, nats: Tensor, count: Tensor | int, tokens: Tensor | None) -> dict[str, Tensor]:
        """Bits per dimension (images) and perplexity per token (sequences, ``</s>`` counted) of a
        bound summed to ``nats`` over ``count`` examples holding ``tokens`` real tokens."""
        rates = {}
        if self.numel:
            rates["bpd"] = nats / count / (self.numel * math.log(2))
        if tokens is not None:
            rates["ppl"] = torch.exp(nats / tokens)
        return rates

    def summarize(self, split: str, total: Tensor, count: Tensor | int) -> dict[str, Tensor]:
        """Means per example of a split's summed vectors over ``count`` examples, and what derives
        from them: active units and MI (validation/test), bits/dim and perplexity of the -ELBO."""
        names = self.scalars(split)
        n = len(names)
        sums = dict(zip(names, total[:n]))
        tokens = sums.pop("tokens", None)
        means = {name: value / count for name, value in sums.items()}
        if split != "train":
            mu, mu2 = (total[n:] / count).chunk(2)
            means["active_units"] = ((mu2 - mu * mu) > ACTIVE_UNIT_THRESHOLD).sum().float()
            if not torch.isfinite(means["mi"]):  # the posterior cannot score other examples' z
                del means["mi"]
        means.update(self.rates(sums["nelbo"], count, tokens))
        if self.iwae and tokens is not None:
            means["iwae_ppl"] = self.rates(sums["iwae"], count, tokens)["ppl"]
        return means

    def epoch_metrics(self) -> list[str]:
        """The ``split/name`` metrics logged once per training and validation epoch (what a
        learning-rate schedule or the checkpoint can watch)."""
        names = []
        for split in ("train", "val"):
            scalars = [name for name in self.scalars(split) if name != "tokens"]
            scalars += ["active_units"] if split != "train" else []
            scalars += ["bpd"] if self.numel else []
            scalars += (["ppl"] + (["iwae_ppl"] if self.iwae else [])) if self.tokens else []
            names += [f"{split}/{name}" for name in scalars]
        return names


class EpochSums:
    """Sums of per-example metrics kept on the device; read once per epoch."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, values: Tensor, count: int) -> None:
        """``values``: a batch's packed sums over ``count`` examples."""
        self.total = values if self.total is None else self.total.to(values.device) + values
        self.count += count

    def reset(self) -> None:
        self.total, self.count = None, 0


@torch.no_grad()
def evaluate(
    model: VAE, batches: Iterable[dict[str, Tensor]], k: int, max_decoded_values: int, device: torch.device
) -> dict[str, float]:
    """Exact means over all ``batches`` of the metrics training logs and the k-sample NLL, in nats
    per example; bits/dim (images) and perplexity (sequences) of the NLL."""
    model = model.to(device).eval()
    layout = model.metrics
    totals, nll_total, count = None, 0.0, 0
    for batch in progress(batches, len(batches), f"-ELBO and NLL (k={k})"):
        x, mask = batch["x"].to(device), batch["mask"].to(device) if "mask" in batch else None
        values = model.batch_sums("test", x, model.elbo_terms(x, mask), mask=mask)
        totals = values if totals is None else totals + values
        nll_total += float(-model.log_likelihood(x, k, mask, max_decoded_values).sum())
        count += len(x)
    if not count:
        raise DataError("the evaluation split is empty")
    metrics = {name: float(value) for name, value in layout.summarize("test", totals, count).items()}
    metrics["nll"] = nll_total / count
    metrics.pop("iwae_ppl", None)
    tokens = totals[layout.scalars("test").index("tokens")].double() if layout.tokens else None
    nll = torch.tensor(nll_total, dtype=torch.float64)
    metrics.update({name: float(value) for name, value in layout.rates(nll, count, tokens).items()})
    return metrics


def summary_table(metrics: dict[str, float], weights: str = "best checkpoint") -> str:
    """Rows train/val/test, columns -ELBO, rec, KL (nats per example) and the rest present; ``weights``
    says which weights val and test measured."""
    columns = [c for c in METRIC_LABELS if any(f"{s}/{c}" in metrics for s in SPLITS)]
    lines = ["        " + "".join(f"{METRIC_LABELS[c]:>14}" for c in columns)]
    for split in SPLITS:
        cells = [f"{metrics[f'{split}/{c}']:>14.4f}" if f"{split}/{c}" in metrics else f"{'':>14}" for c in columns]
        lines.append(f"{split:<8}" + "".join(cells))
    return "\n".join(lines) + f"\n(nats per example; train: running mean over the last epoch; val/test: {weights})"


def eval_table(split: str, metrics: dict[str, float], k: int) -> str:
    """One split's row of genkit-eval's metrics, the NLL column naming its k."""
    columns = [c for c in METRIC_LABELS if c in metrics]
    head = "".join(f"{METRIC_LABELS[c] + (f' (k={k})' if c == 'nll' else ''):>16}" for c in columns)
    return f"{'':8}{head}\n{split:<8}" + "".join(f"{metrics[c]:>16.4f}" for c in columns)
