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
from genkit.model import METRIC_LABELS, VAE
from genkit.tracking import record_in_run

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: VAE, batches: Iterable[dict[str, Tensor]], k: int, max_decoded_values: int, device: torch.device
) -> dict[str, float]:
    """Exact means over all ``batches`` of the metrics training logs (``VAE.summarize``) and the
    k-sample NLL, in nats per example; bits/dim (images) and perplexity (sequences) from the NLL.
    """
    model = model.to(device).eval()
    totals, nll_total, count = None, 0.0, 0
    for batch in batches:
        x, mask = batch["x"].to(device), batch["mask"].to(device) if "mask" in batch else None
        values = model.batch_sums("test", x, model.elbo_terms(x, mask), mask=mask)
        totals = values if totals is None else totals + values
        nll_total += float(-model.log_likelihood(x, k, mask, max_decoded_values).sum())
        count += len(x)
    if not count:
        raise DataError("the evaluation split is empty")
    metrics = {name: float(value) for name, value in model.summarize("test", totals, count).items()}
    metrics["nll"] = nll_total / count
    metrics.pop("iwae_ppl", None)
    if model.spec.modality == "image":
        metrics["bpd"] = metrics["nll"] / (model.spec.numel * math.log(2))
    if model.spec.variable_length:  # the real tokens batch_sums counted
        tokens = totals[model.metric_names("test").index("tokens")]
        metrics["ppl"] = math.exp(nll_total / float(tokens))
    return metrics


def table(split: str, metrics: dict[str, float], k: int) -> str:
    columns = [c for c in METRIC_LABELS if c in metrics]
    head = "".join(f"{METRIC_LABELS[c] + (f' (k={k})' if c == 'nll' else ''):>16}" for c in columns)
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
    if datamodule.spec.extra.get("tokenizer") != model.spec.extra.get("tokenizer"):
        raise DataError(
            f"data {data_name!r} builds another vocabulary than the model's (its tokenizer is fitted on the "
            "training split); point data.path at the corpus the model was trained on"
        )
    datamodule.setup()
    return datamodule, data_name


def run(cfg: DictConfig) -> dict[str, Any]:
    """``genkit-eval``: score ``cfg.ckpt`` on ``cfg.split``; results go beside the checkpoint and,
    when its run folder recorded a W&B run, into that run's summary as ``eval/<split>/<metric>``."""
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
    metrics = evaluate(model, batches, k, int(cfg.nll.max_decoded_values), device)
    log.info("%s of %s (k=%d importance samples)\n%s", cfg.split, cfg.ckpt, k, table(cfg.split, metrics, k))
    ckpt = Path(cfg.ckpt)
    out = ckpt.with_name(f"{ckpt.stem}.{cfg.split}.eval.json")
    result = {"checkpoint": str(ckpt.resolve()), "split": cfg.split, "data": data_name, "nll_k": k, "metrics": metrics}
    out.write_text(json.dumps(result, indent=2))
    log.info("written to %s", out)
    wandb_options = (run_cfg.get("logger") or {}).get("wandb")
    if cfg.wandb and wandb_options is not None:
        summary = {f"eval/{cfg.split}/{name}": value for name, value in metrics.items()}
        record_in_run(ckpt.resolve().parent.parent, wandb_options, {**summary, f"eval/{cfg.split}/nll_k": k})
    return result
