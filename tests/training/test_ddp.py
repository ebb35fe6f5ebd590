"""Real multi-process training: DDP over gloo on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

import genkit
from conftest import FAST, TrainedRun, assert_same_final_state, run, script, shared_run
from genkit.data.images import Digits

DDP = ["trainer=ddp_cpu", *FAST]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, worker_id) -> TrainedRun:
    return shared_run("ddp", DDP, tmp_path_factory, worker_id)


def test_two_process_ddp_logs_exact_metrics_once(ddp_run):
    out = ddp_run.folder
    assert "distributed_backend=gloo" in ddp_run.log
    assert "All distributed processes registered. Starting with 2 processes" in ddp_run.log
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


def test_groups_of_batches_and_a_compiled_bound_under_ddp_train_exactly_as_single_batches(ddp_run, tmp_path, cli_env):
    """Each process steps once per batch of its groups, its gradients all-reduced at every step, also
    when its bound runs through torch.compile (compile=eager: TorchDynamo's capture, no code generation)."""
    out = tmp_path / "grouped"
    args = [*script("genkit-train"), *DDP, "trainer.steps_per_execution=2", "compile=eager", f"hydra.run.dir={out}"]
    result = run(args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_final_state(out, ddp_run.folder)
    ran = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["loops"]["fit_loop"][
            "epoch_loop.batch_progress"
        ]
        for run in (out, ddp_run.folder)
    ]
    # Five batches an epoch on each process: Lightning ran groups of two, two and one.
    assert [progress["total"]["completed"] for progress in ran] == [6, 10]
