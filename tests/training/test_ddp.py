"""Real multi-process training: DDP over gloo on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

import genkit
from conftest import FAST, run, script
from genkit.data.images import Digits


def test_two_process_ddp_logs_exact_metrics_once(tmp_path, cli_env):
    out = tmp_path / "run"
    result = run([*script("genkit-train"), "trainer=ddp_cpu", *FAST, f"hydra.run.dir={out}"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert "All distributed processes registered. Starting with 2 processes" in result.stdout + result.stderr
    assert len(list(out.glob("wandb/offline-run-*"))) == 1  # one W&B run, from rank zero
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch001.ckpt", "last.ckpt"]
    report = json.loads((out / "metrics.json").read_text())
    logged = report["metrics"]

    # The same weights, evaluated in one process over the whole validation split.
    model = genkit.load(report["best_checkpoint"])
    data = Digits()
    data.setup()
    with torch.no_grad():
        terms = model.elbo_terms(data.splits["val"]["x"])
    assert logged["val/kl"] == pytest.approx(terms.kl.mean().item(), rel=1e-5)  # analytic KL: exact
    rank_zero_shard = terms.kl[::2].mean().item()  # what logging rank 0's half alone would give
    assert logged["val/kl"] != pytest.approx(rank_zero_shard, rel=1e-5)
    assert logged["val/rec"] == pytest.approx(terms.rec.mean().item(), rel=0.02)  # one z per example
    mean = terms.posterior.mean
    assert logged["val/active_units"] == ((mean.pow(2).mean(0) - mean.mean(0).pow(2)) > 0.01).sum().item()
