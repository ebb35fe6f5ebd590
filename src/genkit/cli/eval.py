"""``genkit-eval``: score a checkpoint (``conf/eval.yaml``): the bound, its parts, and the
importance-weighted NLL, beside the checkpoint and in the W&B run that trained it."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genkit import config
from genkit.cli.app import CommandLine, run
from genkit.cli.process import console_script
from genkit.cli.trained import SplitOptions, Trained, check_count, check_split
from genkit.console import SUMMARY, be_quiet
from genkit.errors import UsageError
from genkit.training.metrics import eval_table, evaluate
from genkit.training.objective import MAX_DECODED_VALUES, NLL_SAMPLES
from genkit.training.tracking import record_in_run

log = logging.getLogger(__name__)


@dataclass
class NLLOptions:
    k: int = NLL_SAMPLES  # importance samples per example for the NLL estimate (Burda et al. 2016)
    max_decoded_values: int = (
        MAX_DECODED_VALUES  # decoder outputs held at once: bounds memory whatever k, batch, vocabulary
    )


@dataclass
class EvalOptions(SplitOptions):
    """genkit-eval ckpt=PATH [split=test] [nll.k=1000] [+data.KEY=VALUE] [out=FILE] [wandb=false]"""

    nll: NLLOptions = field(default_factory=NLLOptions)
    wandb: bool = True  # also add the results to the summary of the W&B run that trained the checkpoint (if recorded)
    device: str = "auto"  # auto (a GPU when there is one) | cpu | cuda | cuda:1 ...


def evaluation_device(name: str) -> torch.device:
    """The device ``device=`` names (``auto``: a GPU when there is one).

    Raises:
        UsageError: not a device name, or a device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device={name}: genkit-eval runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    return device


def evaluation(cfg: DictConfig | Any) -> dict[str, Any]:
    """Score ``cfg.ckpt`` on ``cfg.split``; the results go beside the checkpoint (or to ``cfg.out``)
    and, when its run folder recorded a W&B run, into that run's summary as ``eval/<split>/<metric>``."""
    if not cfg.verbose:
        be_quiet()
    check_split(cfg.split)
    k = int(cfg.nll.k)
    check_count("nll.k", k, "importance samples per example")
    device = evaluation_device(cfg.device)
    torch.manual_seed(cfg.seed)
    trained = Trained.open(cfg.ckpt)
    datamodule, data_name = trained.data(cfg.get("data") or {})
    batches = getattr(datamodule, f"{cfg.split}_dataloader")()
    metrics = evaluate(trained.model, batches, k, int(cfg.nll.max_decoded_values), device)
    SUMMARY.info("%s of %s (k=%d importance samples)\n%s", cfg.split, cfg.ckpt, k, eval_table(cfg.split, metrics, k))
    out = trained.output(cfg.get("out", ""), f"{cfg.split}.eval", ".json")
    result = {
        "checkpoint": trained.source,
        "split": cfg.split,
        "data": data_name,
        "nll_k": k,
        "metrics": metrics,
    }
    out.write_text(json.dumps(result, indent=2))
    SUMMARY.info("written to %s", out)
    wandb_options = (trained.config.get("logger") or {}).get("wandb")
    if cfg.wandb and wandb_options is not None:
        summary = {f"eval/{cfg.split}/{name}": value for name, value in metrics.items()}
        record_in_run(trained.path.resolve().parent.parent, wandb_options, {**summary, f"eval/{cfg.split}/nll_k": k})
    return result


def task(cfg: DictConfig) -> float:
    """One Hydra job: evaluate, return the NLL (so a sweep over checkpoints can compare them)."""
    return evaluation(cfg)["metrics"]["nll"]


def main() -> None:
    """Entry point of ``genkit-eval``."""
    config.store(None, "eval_options", OmegaConf.structured(EvalOptions))
    run(task, "eval", CommandLine.parse(sys.argv))


def script() -> None:
    """The ``genkit-eval`` console script: ``main``, then a quick exit (``genkit.cli.process``)."""
    console_script(main)


if __name__ == "__main__":
    script()
