"""``genkit anomaly``: score a split for anomalies; with anomalous labels known, the ROC AUC."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genkit.cli.trained import SplitOptions, Trained, check_count, check_split
from genkit.console import SUMMARY, progress
from genkit.errors import UsageError

SCORES = ("nll", "rec")


@dataclass
class AnomalyOptions(SplitOptions):
    """genkit anomaly ckpt=PATH [score=nll] [k=100] [split=test] [labels=[7]] [out=FILE] [data.KEY=VALUE ...]"""

    score: str = "nll"  # nll: importance-weighted -log p(x); rec: -log p(x | z = E_q[z]), the reconstruction error
    k: int = 100  # importance samples per example for score=nll
    labels: list[int] = field(default_factory=list)  # anomalous labels; default: data.exclude_labels of the run


@torch.no_grad()
def anomaly_scores(model: Any, batches: Any, score: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example anomaly scores (higher = more anomalous, nats) and labels over all ``batches``."""
    scores, labels = [], []
    for batch in progress(batches, len(batches), f"anomaly scores ({score})"):
        x = batch["x"].cpu()
        if score == "nll":
            scores.append(-model.log_likelihood(x, k))
        else:
            scores.append(-model.decode(model.embed(x)).log_prob(x))
        labels.append(batch["y"].cpu())
    return torch.cat(scores), torch.cat(labels)


def run(options: AnomalyOptions) -> Path:
    """Score a split for anomalies (higher: more anomalous); returns the JSON file of the results."""
    from sklearn.metrics import roc_auc_score

    if options.score not in SCORES:
        raise UsageError(f"score must be nll or rec, got {options.score!r}")
    check_count("k", options.k, "importance samples")
    check_split(options.split)
    trained = Trained.open(options.ckpt)
    anomalous = list(options.labels) or list(trained.config.data.get("exclude_labels") or [])
    datamodule, data_name = trained.data(options.data)
    torch.manual_seed(options.seed)
    batches = getattr(datamodule, f"{options.split}_dataloader")()
    scores, labels = anomaly_scores(trained.model, batches, options.score, options.k)
    per_label = {int(label): scores[labels == label].mean().item() for label in labels.unique()}
    result: dict[str, Any] = {
        "checkpoint": trained.source,
        "data": data_name,
        "split": options.split,
        "score": options.score,
        "k": options.k,
        "examples": len(scores),
        "mean_score_per_label": per_label,
    }
    if anomalous:
        is_anomaly = torch.isin(labels, torch.tensor(anomalous))
        if is_anomaly.all() or not is_anomaly.any():
            raise UsageError(f"the {options.split} split needs both normal examples and ones labelled {anomalous}")
        result.update(anomalous_labels=anomalous, roc_auc=float(roc_auc_score(is_anomaly.numpy(), scores.numpy())))
        SUMMARY.info(
            "ROC AUC %.4f for labels %s as anomalies (%s scores, %d examples)",
            result["roc_auc"],
            anomalous,
            options.score,
            len(scores),
        )
    out = trained.output(options.out, "anomaly", ".json")
    out.write_text(json.dumps(result, indent=2))
    SUMMARY.info("anomaly scores summary written to %s", out)
    return out
