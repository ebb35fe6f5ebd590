"""Scoring a trained model on a data split: the bound, its parts, and the importance-weighted NLL."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genkit.checkpoint import model_from_checkpoint, read_checkpoint
from genkit.errors import DataError, UsageError
from genkit.model import ACTIVE_UNIT_THRESHOLD, VAE, posterior_mean

log = logging.getLogger(__name__)

COLUMNS = {"nelbo": "-ELBO", "rec": "rec", "kl": "KL", "nll": "NLL", "bpd": "bits/dim", "active_units": "active units"}


@torch.no_grad()
def evaluate(
    model: VAE, batches: Iterable[dict[str, Tensor]], k: int, max_decoded: int, device: torch.device
) -> dict[str, float]:
    """Exact means over all ``batches`` of -ELBO, rec, KL and the k-sample NLL, plus active units.

    Returns nats per example; ``bpd`` (from the NLL) for images.
    """
    model = model.to(device).eval()
    totals, count, moments = None, 0, None
    for batch in batches:
        x, mask = batch["x"].to(device), batch["mask"].to(device) if "mask" in batch else None
        terms = model.elbo_terms(x, mask)
        nll = -model.log_likelihood(x, k, mask, max_decoded)
        values = torch.stack([terms.nelbo.sum(), terms.rec.sum(), terms.kl.sum(), nll.sum()])
        mean = posterior_mean(terms)
        batch_moments = torch.stack([mean.sum(0), (mean * mean).sum(0)])
        totals = values if totals is None else totals + values
        moments = batch_moments if moments is None else moments + batch_moments
        count += len(x)
    if not count:
        raise DataError("the evaluation split is empty")
    metrics = dict(zip(("nelbo", "rec", "kl", "nll"), (totals / count).tolist()))
    mu, mu2 = moments / count
    metrics["active_units"] = float(((mu2 - mu * mu) > ACTIVE_UNIT_THRESHOLD).sum())
    if model.spec.modality == "image":
        metrics["bpd"] = metrics["nll"] / (model.spec.numel * math.log(2))
    return metrics


def table(split: str, metrics: dict[str, float], k: int) -> str:
    columns = [c for c in COLUMNS if c in metrics]
    head = "".join(f"{COLUMNS[c] + (f' (k={k})' if c == 'nll' else ''):>16}" for c in columns)
    return f"{'':8}{head}\n{split:<8}" + "".join(f"{metrics[c]:>16.4f}" for c in columns)


SPLITS = ("train", "val", "test")


def check_split(split: str) -> None:
    """Refuse a split name that data modules do not have."""
    if split not in SPLITS:
        raise UsageError(f"split must be train, val or test, got {split!r}")


def check_count(name: str, value: int, meaning: str) -> None:
    """Refuse a count below 1, saying what it counts."""
    if value < 1:
        raise UsageError(f"{name} must be at least 1 ({meaning}), got {value}")


def checkpoint_data(run_cfg: DictConfig, model: VAE, changes: dict | DictConfig) -> tuple[Any, str]:
    """The data module a checkpoint was trained with (``changes`` applied), set up and checked
    against the model's spec."""
    from genkit.compose import build_data

    run_cfg.data = OmegaConf.merge(run_cfg.data, changes)
    datamodule, data_name = build_data(run_cfg)
    if datamodule.spec.event_shape != model.spec.event_shape or datamodule.spec.modality != model.spec.modality:
        raise DataError(
            f"data {data_name!r} gives {datamodule.spec.describe()}, but the model was trained on "
            f"{model.spec.describe()}; point data.* at the data it was trained on"
        )
    datamodule.setup()
    return datamodule, data_name


def run(cfg: DictConfig) -> dict[str, Any]:
    """``genkit-eval``: score ``cfg.ckpt`` on ``cfg.split``; results also go beside the checkpoint."""
    check_split(cfg.split)
    k = int(cfg.nll.k)
    check_count("nll.k", k, "importance samples per example")
    torch.manual_seed(cfg.seed)
    checkpoint, run_cfg = read_checkpoint(cfg.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, cfg.ckpt)
    datamodule, data_name = checkpoint_data(run_cfg, model, cfg.get("data") or {})
    device = torch.device(
        "cuda" if cfg.device == "auto" and torch.cuda.is_available() else "cpu" if cfg.device == "auto" else cfg.device
    )
    batches = getattr(datamodule, f"{cfg.split}_dataloader")()
    metrics = evaluate(model, batches, k, int(cfg.nll.max_decoded), device)
    log.info("%s of %s (k=%d importance samples)\n%s", cfg.split, cfg.ckpt, k, table(cfg.split, metrics, k))
    ckpt = Path(cfg.ckpt)
    out = ckpt.with_name(f"{ckpt.stem}.{cfg.split}.eval.json")
    result = {"checkpoint": str(ckpt.resolve()), "split": cfg.split, "data": data_name, "nll_k": k, "metrics": metrics}
    out.write_text(json.dumps(result, indent=2))
    log.info("written to %s", out)
    return result
